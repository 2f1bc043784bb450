//! Loading the object and attaching its programs: the one place that knows every program and how
//! it is hooked. The layout parsed from tracefs goes into the `LAYOUT` global before load, the
//! command timeouts into `ERROR_TIMEOUTS`.
use anyhow::{bail, Context as _};
use aya::{programs::TracePoint, Ebpf, EbpfLoader};
use nvmeof_common::{
    maps, programs, ErrorTimeouts, TracepointLayout, ERROR_TIMEOUTS_GLOBAL, LAYOUT_GLOBAL,
};

/// Every program of the object with its tracepoint (category `nvme`).
pub const PROGRAMS: [&str; 2] = [programs::NVME_SETUP_CMD, programs::NVME_COMPLETE_RQ];

/// Optional map capacities, for nodes with more controllers or queues than the defaults cover.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapSizes {
    pub inflight: Option<u32>,
    pub ops: Option<u32>,
    pub queues: Option<u32>,
}

/// The loaded object; dropping it detaches the programs and frees the maps.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub attached: Vec<&'static str>,
}

/// Why loading failed, in words for the one log line. Permission problems are recognised in the
/// error chain (EPERM / EACCES from `bpf()` or `perf_event_open()`).
pub fn explain(err: &anyhow::Error) -> String {
    let denied = err.chain().any(|e| {
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

/// Loads `object` with `layout` into the kernel: maps created, nothing verified or attached yet.
pub fn open(
    object: &[u8],
    layout: &TracepointLayout,
    timeouts: &ErrorTimeouts,
    sizes: MapSizes,
) -> anyhow::Result<Ebpf> {
    if object.is_empty() {
        bail!("no eBPF object in this build (built with AYA_BUILD_SKIP)");
    }
    raise_memlock();
    let mut loader = EbpfLoader::new();
    loader.override_global(LAYOUT_GLOBAL, layout, true);
    loader.override_global(ERROR_TIMEOUTS_GLOBAL, timeouts, true);
    if let Some(n) = sizes.inflight {
        loader.map_max_entries(maps::INFLIGHT, n);
    }
    if let Some(n) = sizes.ops {
        loader.map_max_entries(maps::OPS, n);
    }
    if let Some(n) = sizes.queues {
        loader.map_max_entries(maps::QUEUES, n);
    }
    loader.load(object).context("loading the eBPF object")
}

/// Loads `object` with `layout`, then verifies and attaches every program.
pub fn load(
    object: &[u8],
    layout: &TracepointLayout,
    timeouts: &ErrorTimeouts,
    sizes: MapSizes,
) -> anyhow::Result<Loaded> {
    let mut ebpf = open(object, layout, timeouts, sizes)?;
    let mut attached = Vec::new();
    for name in PROGRAMS {
        let prog: &mut TracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the object"))?
            .try_into()
            .with_context(|| format!("program {name} is not a tracepoint program"))?;
        prog.load().with_context(|| format!("verifying {name}"))?;
        prog.attach("nvme", name)
            .with_context(|| format!("attaching {name} to nvme:{name}"))?;
        attached.push(name);
    }
    Ok(Loaded { ebpf, attached })
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
    }

    #[test]
    fn empty_object_is_refused() {
        let err = load(
            &[],
            &TracepointLayout::default(),
            &ErrorTimeouts::default(),
            MapSizes::default(),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("no eBPF object"), "{err}");
    }
}
