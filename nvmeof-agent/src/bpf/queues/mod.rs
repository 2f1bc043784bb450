//! Which TCP connection carries each NVMe/TCP queue (`nvmeof_common::queues`): the `iter/tcp`
//! program of the `nvmeof-queues` object, read when a scrape asks for a controller's queues.
//!
//! Nothing runs per command: the iterator walks the kernel's TCP sockets once per reading. The
//! object is loaded at the first reading that finds `nvme_tcp` loaded (its BTF holds the queue's
//! and the controller's layouts), and not tried again after a failure there (logged once).
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context as _};
use aya::programs::Iter;
use aya::{Ebpf, EbpfLoader};
use nvmeof_common::queues::{
    programs, TcpQueueLayout, TcpQueueRecord, TCP_ITER_TARGET, TCP_QUEUE_LAYOUT_GLOBAL,
};

use super::btf::Btf;
use super::{loader, QUEUES_OBJECT};

/// The most a reading takes from the iterator: 16 bytes a queue, for 16 controllers of 8193.
const MAX_BYTES: u64 = 16 * 16 * 8193;

/// Offsets from vmlinux's BTF and nvme_tcp's (split on it) under `dir`.
pub fn tcp_layout(dir: &Path) -> anyhow::Result<TcpQueueLayout> {
    // Checked first: vmlinux's BTF is megabytes to parse.
    let module = dir.join("nvme_tcp");
    if !module.exists() {
        bail!("nvme_tcp is not loaded (no {})", module.display());
    }
    let vmlinux = Btf::read(&dir.join("vmlinux"), None)?;
    let sock = |s: &str, m: &str, size: u32| vmlinux.member_offset(s, m, size);
    let (sock_user_data, skc_num, skc_dport, socket_sk) = (
        sock("sock", "sk_user_data", 8)?,
        sock("sock_common", "skc_num", 2)?,
        sock("sock_common", "skc_dport", 2)?,
        sock("socket", "sk", 8)?,
    );
    let btf = Btf::read(&module, Some(vmlinux))?;
    let at = |s: &str, m: &str, size: u32| btf.member_offset(s, m, size);
    Ok(TcpQueueLayout {
        sock_user_data,
        skc_num,
        skc_dport,
        socket_sk,
        queue_sock: at("nvme_tcp_queue", "sock", 8)?,
        queue_ctrl: at("nvme_tcp_queue", "ctrl", 8)?,
        queue_size: btf.struct_size("nvme_tcp_queue")?,
        ctrl_queues: at("nvme_tcp_ctrl", "queues", 8)?,
        ctrl_instance: btf.member("nvme_tcp_ctrl", "ctrl")?.offset
            + at("nvme_ctrl", "instance", 4)?,
        valid: 1,
    })
}

enum State {
    /// Not loaded yet: nvme_tcp was not there at the last try.
    Waiting,
    Loaded(Ebpf),
    /// Failed with nvme_tcp loaded: not tried again.
    Failed,
}

/// The iterator, loaded at the first reading that can.
pub struct TcpQueues {
    btf_dir: PathBuf,
    state: Mutex<State>,
}

impl TcpQueues {
    /// Nothing loads here: `read` loads at its first call where nvme_tcp is loaded.
    pub fn new(btf_dir: PathBuf) -> TcpQueues {
        TcpQueues {
            btf_dir,
            state: Mutex::new(State::Waiting),
        }
    }

    /// Every NVMe/TCP queue's connection now; empty while nvme_tcp is not loaded or when the
    /// iterator cannot run here (said once in the log).
    pub fn read(&self) -> Vec<TcpQueueRecord> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*st, State::Waiting) {
            match load(&self.btf_dir) {
                Ok(ebpf) => {
                    log::info!("tcp: queue connections read by an iter/tcp program");
                    *st = State::Loaded(ebpf);
                }
                Err(e) if !self.btf_dir.join("nvme_tcp").exists() => {
                    log::debug!("tcp: queue connections not read yet: {e:#}");
                }
                Err(e) => {
                    log::warn!(
                        "tcp: which connection carries which queue is not read ({}); \
                         nvmeof_tcp_queue_info is absent",
                        loader::explain(&e)
                    );
                    *st = State::Failed;
                }
            }
        }
        let State::Loaded(ebpf) = &mut *st else {
            return Vec::new();
        };
        match read_iter(ebpf) {
            Ok(v) => v,
            Err(e) => {
                log::debug!("tcp: reading the queue iterator: {e:#}");
                Vec::new()
            }
        }
    }
}

fn load(btf_dir: &Path) -> anyhow::Result<Ebpf> {
    let layout = tcp_layout(btf_dir)?;
    if QUEUES_OBJECT.is_empty() {
        bail!("no eBPF object in this build (built with AYA_BUILD_SKIP)");
    }
    let mut ebpf = EbpfLoader::new()
        .override_global(TCP_QUEUE_LAYOUT_GLOBAL, &layout, true)
        .load(QUEUES_OBJECT)
        .context("loading the queues eBPF object")?;
    let btf = aya::Btf::from_sys_fs().context("reading the kernel's BTF")?;
    let p: &mut Iter = ebpf
        .program_mut(programs::TCP_QUEUES)
        .context("program tcp_queues missing from the object")?
        .try_into()?;
    p.load(TCP_ITER_TARGET, &btf)
        .context("verifying tcp_queues for iter/tcp")?;
    Ok(ebpf)
}

/// One pass of the iterator: a link, its file read to the end (bounded), the link dropped.
fn read_iter(ebpf: &mut Ebpf) -> anyhow::Result<Vec<TcpQueueRecord>> {
    let p: &mut Iter = ebpf
        .program_mut(programs::TCP_QUEUES)
        .context("program tcp_queues")?
        .try_into()?;
    let id = p.attach().context("attaching tcp_queues")?;
    let link = p.take_link(id)?;
    let mut bytes = Vec::new();
    link.into_file()
        .context("creating the iterator")?
        .take(MAX_BYTES)
        .read_to_end(&mut bytes)
        .context("reading the iterator")?;
    Ok(parse(&bytes))
}

/// The records in `bytes` (a partial one at the end is dropped).
pub fn parse(bytes: &[u8]) -> Vec<TcpQueueRecord> {
    bytes
        .chunks_exact(std::mem::size_of::<TcpQueueRecord>())
        .map(|c| TcpQueueRecord {
            ctrl_instance: u32::from_ne_bytes([c[0], c[1], c[2], c[3]]),
            qid: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            local_port: u16::from_ne_bytes([c[8], c[9]]),
            remote_port: u16::from_ne_bytes([c[10], c[11]]),
            _pad: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_a_partial_one_is_dropped() {
        let mut b = Vec::new();
        for (i, q, l, r) in [(3u32, 0u32, 40000u16, 4420u16), (3, 2, 40002, 4420)] {
            b.extend(i.to_ne_bytes());
            b.extend(q.to_ne_bytes());
            b.extend(l.to_ne_bytes());
            b.extend(r.to_ne_bytes());
            b.extend(0u32.to_ne_bytes());
        }
        b.extend([1, 2, 3]);
        let v = parse(&b);
        assert_eq!(v.len(), 2);
        assert_eq!(
            (
                v[1].ctrl_instance,
                v[1].qid,
                v[1].local_port,
                v[1].remote_port
            ),
            (3, 2, 40002, 4420)
        );
    }

    /// This machine's vmlinux BTF has the socket offsets (the kernel's truth, where it has BTF).
    #[test]
    fn this_kernels_sockets_have_the_offsets() {
        let dir = Path::new(super::super::btf::SYS_BTF);
        let Ok(vmlinux) = Btf::read(&dir.join("vmlinux"), None) else {
            eprintln!("skipped: no vmlinux BTF here");
            return;
        };
        // skc_dport and skc_num share a 32-bit port pair, the remote port first.
        let dport = vmlinux
            .member_offset("sock_common", "skc_dport", 2)
            .unwrap();
        let num = vmlinux.member_offset("sock_common", "skc_num", 2).unwrap();
        assert_eq!(num, dport + 2);
    }
}
