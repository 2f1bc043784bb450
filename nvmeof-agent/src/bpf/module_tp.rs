//! tp_btf programs on a module's tracepoints, loaded and attached with `bpf()` directly.
//!
//! A tp_btf program names its tracepoint by a BTF type id at load. For a tracepoint of a module
//! (nvme_core on Debian's kernels) that id is in the module's split BTF, and the load must also
//! pass that BTF object's fd (`attach_btf_obj_fd`); aya 0.14 looks the id up in vmlinux only
//! and has no way to pass the fd. So the two nvme programs are loaded here: their instructions
//! come from the same object through aya's object reader (`aya_obj`), their map references are
//! pointed at the maps aya already created (so the drain reads what these programs write), and
//! the load and the attach are the two `bpf()` commands aya would make.
//!
//! Why bother: a tp_btf program reads the request's fields with plain loads, checked by the
//! verifier against BTF, where a raw tracepoint program needs a `bpf_probe_read_kernel` call for
//! each (BENCHMARKS.md prices both).
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

use anyhow::{bail, Context as _};
use aya::Ebpf;
use aya_obj::generated::{
    bpf_attach_type, bpf_attr, bpf_btf_info, bpf_cmd, bpf_insn, bpf_prog_info, bpf_prog_type,
};

/// `bpf(cmd, attr)`: the kernel's non-negative answer, or its error.
fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid bpf_attr, zero-initialised by the caller apart from cmd's fields;
    // the kernel reads and writes at most size_of::<bpf_attr>() bytes of it, and writes only
    // through pointers in it that the caller made valid for their stated lengths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// A `bpf()` command that returns a new fd.
fn sys_bpf_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    let fd = sys_bpf(cmd, attr)?;
    // SAFETY: a successful command of this kind returns a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The `bpf_prog_info` of the program behind `fd`.
pub fn prog_info(fd: RawFd) -> io::Result<bpf_prog_info> {
    // SAFETY: zeroed is a valid bpf_prog_info.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    object_info(fd, &mut info)?;
    Ok(info)
}

/// `BPF_OBJ_GET_INFO_BY_FD` into `info`.
fn object_info<T>(fd: RawFd, info: &mut T) -> io::Result<()> {
    // SAFETY: zeroed is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = fd as u32;
    attr.info.info_len = std::mem::size_of::<T>() as u32;
    attr.info.info = info as *mut T as u64;
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(drop)
}

/// The fd of the kernel's BTF object of `module` (as listed in `/sys/kernel/btf`), found by
/// walking the loaded BTF objects' ids.
pub fn module_btf(module: &str) -> anyhow::Result<OwnedFd> {
    let mut id = 0u32;
    loop {
        // SAFETY: zeroed is a valid bpf_attr.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.__bindgen_anon_6.__bindgen_anon_1.start_id = id;
        if let Err(e) = sys_bpf(bpf_cmd::BPF_BTF_GET_NEXT_ID, &mut attr) {
            match e.raw_os_error() {
                Some(libc::ENOENT) => bail!("no BTF object of module {module} is loaded"),
                // Said in words, not as EPERM: the loader would read EPERM as "no BPF at all",
                // while the raw tracepoints need only CAP_BPF and CAP_PERFMON.
                Some(libc::EPERM) => {
                    bail!("finding {module}'s BTF object needs CAP_SYS_ADMIN (BPF_BTF_GET_NEXT_ID)")
                }
                _ => return Err(e).context("BPF_BTF_GET_NEXT_ID"),
            }
        }
        // SAFETY: the kernel filled next_id.
        id = unsafe { attr.__bindgen_anon_6.next_id };
        // SAFETY: zeroed is a valid bpf_attr.
        let mut get: bpf_attr = unsafe { std::mem::zeroed() };
        get.__bindgen_anon_6.__bindgen_anon_1.btf_id = id;
        let fd = match sys_bpf_fd(bpf_cmd::BPF_BTF_GET_FD_BY_ID, &mut get) {
            Ok(fd) => fd,
            // Gone between the two calls (a BTF object of a program just unloaded).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e).context("BPF_BTF_GET_FD_BY_ID"),
        };
        let mut name = [0u8; 64];
        // SAFETY: zeroed is a valid bpf_btf_info.
        let mut info: bpf_btf_info = unsafe { std::mem::zeroed() };
        info.name = name.as_mut_ptr() as u64;
        info.name_len = name.len() as u32;
        object_info(fd.as_raw_fd(), &mut info).context("BPF_OBJ_GET_INFO_BY_FD on a BTF")?;
        let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
        if info.kernel_btf != 0 && &name[..len] == module.as_bytes() {
            return Ok(fd);
        }
    }
}

/// The object's instructions per program, with their map references pointing at `ebpf`'s maps.
pub struct Instructions {
    programs: HashMap<String, (Vec<bpf_insn>, CString)>,
}

impl Instructions {
    /// Reads `object` again and relocates it against the maps `ebpf` created from it.
    pub fn relocated(object: &[u8], ebpf: &Ebpf) -> anyhow::Result<Instructions> {
        let mut obj = aya_obj::Object::parse(object).context("reading the eBPF object")?;
        let mut fds: HashMap<&str, RawFd> = HashMap::new();
        for (name, map) in ebpf.maps() {
            let fd = super::loader::map_fd(map)
                .with_context(|| format!("map {name}: a kind this loader does not relocate"))?;
            fds.insert(name, fd);
        }
        // Owned copies of the map descriptions: relocate_maps borrows obj mutably.
        let maps: Vec<(String, RawFd, aya_obj::Map)> = obj
            .maps
            .iter()
            .map(|(name, m)| {
                let fd = *fds
                    .get(name.as_str())
                    .with_context(|| format!("map {name} was not created"))?;
                Ok((name.clone(), fd, m.clone()))
            })
            .collect::<anyhow::Result<_>>()?;
        let text: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
        obj.relocate_maps(maps.iter().map(|(n, fd, m)| (n.as_str(), *fd, m)), &text)
            .context("relocating map references")?;
        obj.relocate_calls(&text)
            .context("relocating function calls")?;
        let programs = obj
            .programs
            .iter()
            .map(|(name, p)| {
                let f = &obj.functions[&p.function_key()];
                (name.clone(), (f.instructions.clone(), p.license.clone()))
            })
            .collect();
        Ok(Instructions { programs })
    }
}

/// A tp_btf program loaded for one module tracepoint; attached while its link lives.
pub struct ModuleProgram {
    pub name: &'static str,
    prog: OwnedFd,
    link: Option<OwnedFd>,
}

impl ModuleProgram {
    /// Verifies program `name` of `insns` for the tracepoint whose typedef is `btf_id` in the
    /// module BTF `module_btf`.
    pub fn load(
        insns: &Instructions,
        name: &'static str,
        module_btf: &OwnedFd,
        btf_id: u32,
    ) -> anyhow::Result<ModuleProgram> {
        let (code, license) = insns
            .programs
            .get(name)
            .with_context(|| format!("program {name} missing from the object"))?;
        let mut log = vec![0u8; 1 << 16];
        let prog = match load_tracing(name, code, license, module_btf, btf_id, &mut []) {
            Ok(fd) => fd,
            Err(first) => {
                // Again with the verifier's log, for the error message only.
                let _ = load_tracing(name, code, license, module_btf, btf_id, &mut log);
                let end = log.iter().position(|&c| c == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                let tail: Vec<&str> = text.lines().rev().take(8).collect();
                // In words, not as an io::Error: the verifier's refusal is EACCES, which the
                // loader would otherwise read as "no permission".
                bail!(
                    "verifying {name} for tp_btf (BTF id {btf_id}): {first}: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                );
            }
        };
        Ok(ModuleProgram {
            name,
            prog,
            link: None,
        })
    }

    /// Attaches the program to its tracepoint (`BPF_RAW_TRACEPOINT_OPEN` without a name: the
    /// target is the one given at load).
    pub fn attach(&mut self) -> anyhow::Result<()> {
        // SAFETY: zeroed is a valid bpf_attr.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.raw_tracepoint.name = 0;
        attr.raw_tracepoint.prog_fd = self.prog.as_raw_fd() as u32;
        let link = sys_bpf_fd(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr)
            .with_context(|| format!("attaching {}", self.name))?;
        self.link = Some(link);
        Ok(())
    }

    /// Detaches the program (it stays loaded).
    pub fn detach(&mut self) {
        self.link = None;
    }

    /// `bpf_prog_info`'s run time (ns) and run count: they move while
    /// `kernel.bpf_stats_enabled=1`.
    pub fn run_stats(&self) -> io::Result<(u64, u64)> {
        let info = prog_info(self.prog.as_raw_fd())?;
        Ok((info.run_time_ns, info.run_cnt))
    }

    /// The runs the kernel skipped (`recursion_misses`).
    pub fn misses(&self) -> io::Result<u64> {
        Ok(prog_info(self.prog.as_raw_fd())?.recursion_misses)
    }
}

fn load_tracing(
    name: &str,
    code: &[bpf_insn],
    license: &CString,
    module_btf: &OwnedFd,
    btf_id: u32,
    log: &mut [u8],
) -> io::Result<OwnedFd> {
    // SAFETY: zeroed is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: the prog-load member of the union, all of it zeroed above.
    let u = unsafe { &mut attr.__bindgen_anon_3 };
    u.prog_type = bpf_prog_type::BPF_PROG_TYPE_TRACING as u32;
    u.expected_attach_type = bpf_attach_type::BPF_TRACE_RAW_TP as u32;
    u.insns = code.as_ptr() as u64;
    u.insn_cnt = code.len() as u32;
    u.license = license.as_ptr() as u64;
    u.attach_btf_id = btf_id;
    u.__bindgen_anon_1.attach_btf_obj_fd = module_btf.as_raw_fd() as u32;
    let short = &name.as_bytes()[..name.len().min(u.prog_name.len() - 1)];
    for (d, s) in u.prog_name.iter_mut().zip(short) {
        *d = *s as libc::c_char;
    }
    if !log.is_empty() {
        u.log_level = 1;
        u.log_buf = log.as_mut_ptr() as u64;
        u.log_size = log.len() as u32;
    }
    sys_bpf_fd(bpf_cmd::BPF_PROG_LOAD, &mut attr)
}

/// Loads and attaches the two nvme tp_btf programs of `object` (already opened as `ebpf`) on
/// nvme_core's tracepoints, named by `btf_ids` in its BTF: both loaded first, then attached in
/// reverse order (the completion program before the setup one, see `io::load::attach`).
pub fn attach_pair(
    object: &[u8],
    ebpf: &Ebpf,
    programs: [&'static str; 2],
    btf_ids: [u32; 2],
) -> anyhow::Result<Vec<ModuleProgram>> {
    let btf = module_btf("nvme_core")?;
    let insns = Instructions::relocated(object, ebpf)?;
    let mut out = Vec::with_capacity(2);
    for (name, id) in programs.into_iter().zip(btf_ids) {
        out.push(ModuleProgram::load(&insns, name, &btf, id)?);
    }
    for p in out.iter_mut().rev() {
        p.attach()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::btf::{Btf, SYS_BTF};
    use crate::bpf::io::load::{open, Layouts, MapSizes};
    use crate::bpf::loader;
    use nvmeof_common::{bench, programs, RequestLayout};

    /// The benchmark object, for a tp_btf program that any tracepoint accepts (its clock
    /// program reads no argument). Only this test and the `ebpf_bench` example embed it.
    static BENCH_OBJECT: &[u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nvmeof-bench"));

    /// The object opened as the agent opens it, or `None` (and why) without BPF permission.
    fn opened() -> Option<Ebpf> {
        let layouts = Layouts {
            request: Some(RequestLayout {
                request_size: 296,
                valid: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        match open(crate::bpf::EBPF_OBJECT, &layouts, MapSizes::default()) {
            Ok(e) => Some(e),
            Err(e) => {
                eprintln!("skipped: {}", loader::explain(&e));
                None
            }
        }
    }

    /// The whole path on this host's kernel, which has no nvme_core: the BTF object walk finds
    /// vmlinux's and names a missing module, and a tp_btf program of the object, relocated
    /// against aya's maps, loads for a vmlinux tracepoint through the explicit BTF object fd,
    /// attaches, runs and detaches.
    #[test]
    fn loads_and_attaches_through_a_kernel_btf_object() {
        let Some(ebpf) = opened() else { return };
        let err = module_btf("no_such_module").expect_err("no such module");
        assert!(
            format!("{err:#}").contains("no BTF object of module no_such_module"),
            "{err:#}"
        );
        let vmlinux = module_btf("vmlinux").expect("vmlinux's BTF object");
        let insns = Instructions::relocated(crate::bpf::EBPF_OBJECT, &ebpf).unwrap();
        for name in [programs::NVME_SETUP_CMD_BTF, programs::NVME_COMPLETE_RQ_BTF] {
            assert!(
                insns.programs.contains_key(name),
                "{name} not in the object"
            );
        }
        let bench_ebpf = aya::EbpfLoader::new()
            .load(BENCH_OBJECT)
            .expect("loading the benchmark object");
        let bench_insns = Instructions::relocated(BENCH_OBJECT, &bench_ebpf).unwrap();
        // sched_switch fires all the time, unlike the block tracepoints on an idle host.
        let btf = Btf::read(&std::path::Path::new(SYS_BTF).join("vmlinux"), None).unwrap();
        let Some(id) = btf.own_typedef_id("btf_trace_sched_switch") else {
            eprintln!("skipped: no btf_trace_sched_switch in this kernel's BTF");
            return;
        };
        let mut p =
            ModuleProgram::load(&bench_insns, bench::programs::BENCH_BTF_CLOCK, &vmlinux, id)
                .unwrap();
        let stats = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").is_ok();
        p.attach().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        p.detach();
        let (_, runs) = p.run_stats().unwrap();
        // Runs are counted only while bpf_stats is on.
        if stats {
            assert!(runs > 0, "attached for 50 ms to sched_switch and never ran");
        }
        // The nvme program reads its first argument as a `struct request *`; sched_switch's is a
        // bool: the verifier's refusal comes back as an error naming the program and quoting
        // the verifier, not a panic.
        let err = ModuleProgram::load(&insns, programs::NVME_SETUP_CMD_BTF, &vmlinux, id)
            .err()
            .expect("the verifier refuses the nvme program on sched_switch");
        let e = format!("{err:#}");
        assert!(e.contains("verifying nvme_setup_cmd_btf for tp_btf"), "{e}");
        eprintln!("refused as expected: {e}");
    }
}
