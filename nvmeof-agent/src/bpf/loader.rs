//! The shared runtime of loading: an object's loader (refused when the build skipped the
//! objects, memlock raised), a program by name and kind, a map by name and a hash map's entries,
//! why a load failed in words, and what every loaded program and map costs (run statistics,
//! kernel memory). Each tracer loads and attaches its own object with these: `bpf::io::load`
//! (the I/O pair in the first attach mode that works), `bpf::state::load` (kprobes),
//! `bpf::aen::load` (a tracepoint and a kprobe).
use anyhow::{bail, Context as _};
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::{Program, ProgramError};
use aya::{Ebpf, EbpfLoader};

/// A loader for `object`: refused when the build skipped the objects (`AYA_BUILD_SKIP`), with
/// the memlock limit raised for the kernels that charge BPF memory to it.
pub(crate) fn object_loader(object: &[u8]) -> anyhow::Result<EbpfLoader<'static>> {
    if object.is_empty() {
        bail!("no eBPF object in this build (built with AYA_BUILD_SKIP)");
    }
    raise_memlock();
    Ok(EbpfLoader::new())
}

/// Program `name` of `ebpf` as the kind `P` it must be (a kprobe, a tracepoint, ...).
pub(crate) fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} missing from the object"))?
        .try_into()
        .with_context(|| format!("program {name} is not of the kind it is attached as"))
}

/// Map `name` of `ebpf`, or an error naming it.
pub(crate) fn map<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<&'a aya::maps::Map> {
    ebpf.map(name)
        .with_context(|| format!("map {name} missing from the object"))
}

/// Every entry of hash map `name`. Entries removed while iterating are skipped (the iteration
/// then reports them missing); other errors fail the read.
pub(crate) fn entries<K: aya::Pod, V: aya::Pod>(
    ebpf: &Ebpf,
    name: &str,
) -> anyhow::Result<Vec<(K, V)>> {
    let m: BpfHashMap<&MapData, K, V> =
        BpfHashMap::try_from(map(ebpf, name)?).with_context(|| format!("map {name}"))?;
    let mut out = Vec::new();
    for r in m.iter() {
        match r {
            Ok(kv) => out.push(kv),
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(e).with_context(|| format!("reading map {name}")),
        }
    }
    Ok(out)
}

/// One program's cumulative run time and count (`bpf_prog_info`; they only move while
/// `kernel.bpf_stats_enabled=1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramRun {
    pub name: &'static str,
    pub run_time_ns: u64,
    pub run_count: u64,
    /// Runs the kernel skipped (`bpf::io::load::Loaded::misses`).
    pub misses: u64,
}

/// `bpf_prog_info`'s run time (ns) and run count of program `name` of `ebpf`: they move while
/// `kernel.bpf_stats_enabled=1`.
pub fn run_stats(ebpf: &Ebpf, name: &str) -> anyhow::Result<(u64, u64)> {
    let info = ebpf
        .program(name)
        .with_context(|| format!("program {name}"))?
        .info()
        .with_context(|| format!("bpf_prog_info of {name}"))?;
    Ok((info.run_time().as_nanos() as u64, info.run_count()))
}

/// Why loading failed, in words for the one log line. Permission problems are recognised in the
/// error chain (EPERM / EACCES from `bpf()` or `perf_event_open()`).
pub fn explain(err: &anyhow::Error) -> String {
    // The verifier refuses a program with EACCES too: that is not a permission problem.
    let refused = err.chain().any(|e| {
        matches!(
            e.downcast_ref::<aya::programs::ProgramError>(),
            Some(aya::programs::ProgramError::LoadError { .. })
        )
    });
    let denied = !refused
        && err.chain().any(|e| {
            e.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
                .is_some_and(|c| c == libc::EPERM || c == libc::EACCES)
        });
    if denied {
        // The full chain goes to the debug log; the line says what to do.
        "no permission to load BPF programs (need CAP_BPF and CAP_PERFMON, or root)".to_owned()
    } else {
        format!("{err:#}")
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones to the cgroup, where a
/// failure to raise the limit does no harm.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a plain syscall on a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on 5.11 and later",
            std::io::Error::last_os_error()
        );
    }
}

/// What each map of a loaded object costs the kernel: `memlock` from the map's fdinfo (the
/// bytes the kernel charges for it), by map name, largest first. Maps whose fdinfo cannot be
/// read are left out.
pub fn map_memory(ebpf: &Ebpf) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = ebpf
        .maps()
        .filter_map(|(name, map)| {
            let fd = map_fd(map)?;
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
            let bytes = info
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))?
                .trim()
                .parse()
                .ok()?;
            Some((name.to_owned(), bytes))
        })
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// The file descriptor of a map of the kinds our objects hold; `None` for the others.
pub fn map_fd(map: &aya::maps::Map) -> Option<std::os::fd::RawFd> {
    use aya::maps::Map;
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let data = match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::RingBuf(d)
        | Map::PerfEventArray(d)
        | Map::Unsupported(d) => d,
        _ => return None,
    };
    Some(data.fd().as_fd().as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_are_named() {
        let io = std::io::Error::from_raw_os_error(libc::EPERM);
        let err = anyhow::Error::new(io).context("loading the eBPF object");
        let line = explain(&err);
        assert_eq!(
            line,
            "no permission to load BPF programs (need CAP_BPF and CAP_PERFMON, or root)"
        );
        let other = anyhow::anyhow!("program x missing from the object");
        assert_eq!(explain(&other), "program x missing from the object");
        // The verifier's refusal is EACCES as well, and must be reported as itself.
        let refused = aya::programs::ProgramError::LoadError {
            io_error: std::io::Error::from_raw_os_error(libc::EACCES),
            verifier_log: aya_obj::VerifierLog::new("R7 pointer arithmetic prohibited".into()),
        };
        let line = explain(&anyhow::Error::new(refused).context("verifying nvme_setup_cmd_raw"));
        assert!(line.starts_with("verifying nvme_setup_cmd_raw"), "{line}");
        assert!(line.contains("R7 pointer arithmetic prohibited"), "{line}");
    }
}
