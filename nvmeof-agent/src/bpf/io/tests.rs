//! The maps' sizing against made-up sysfs trees, and `start` where the tracer cannot attach; the
//! options the `io` collector's tests start it with.
use super::*;

/// A made-up sysfs whose `devices/system/cpu/possible` holds `possible`.
fn sysfs_with_cpus(possible: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cpu = dir.path().join("devices/system/cpu");
    std::fs::create_dir_all(&cpu).unwrap();
    std::fs::write(cpu.join("possible"), possible).unwrap();
    dir
}

/// Writes `value` and a newline to `file` of controller `nvme{i}` under the sysfs at `root`.
fn write_ctrl(root: &std::path::Path, i: usize, file: &str, value: impl std::fmt::Display) {
    let c = root.join(format!("class/nvme/nvme{i}"));
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join(file), format!("{value}\n")).unwrap();
}

#[test]
fn possible_cpus_read_the_kernels_list() {
    for (text, want) in [
        ("0-255\n", Some(256)),
        ("0\n", Some(1)),
        ("0,2-5,7\n", Some(6)),
        ("5-3\n", None),
        ("x\n", None),
        ("\n", None),
    ] {
        let dir = sysfs_with_cpus(text);
        assert_eq!(possible_cpus(dir.path()), want, "{text:?}");
    }
}

/// The arrays' bounds from the node: flags win, else the controllers present and the CPUs.
#[test]
fn slot_layout_follows_the_node() {
    let dir = sysfs_with_cpus("0-255\n");
    let l = slot_layout(dir.path(), 0, 0);
    assert_eq!((l.controllers, l.queues), (16, 257));
    for (i, queues) in [(0, 65), (11, 300)] {
        write_ctrl(dir.path(), i, "queue_count", queues);
    }
    // nvme11 present: instances up to 23; a controller with 300 queues (write and poll
    // queues on top of the CPUs') raises the queues.
    let l = slot_layout(dir.path(), 0, 0);
    assert_eq!((l.controllers, l.queues), (24, 300));
    let l = slot_layout(dir.path(), 8, 9);
    assert_eq!((l.controllers, l.queues), (8, 9));
    // No sysfs at all: 16 controllers of one CPU's queues.
    let l = slot_layout(std::path::Path::new("/nonexistent"), 0, 0);
    assert_eq!((l.controllers, l.queues), (16, 2));
    // A controller claiming 9999 queues on 256 CPUs: three per CPU at most (I/O, write and
    // poll queues) plus the admin queue.
    write_ctrl(dir.path(), 11, "queue_count", 9999);
    let l = slot_layout(dir.path(), 0, 0);
    assert_eq!((l.controllers, l.queues), (24, 769));
}

/// Whatever sysfs claims, the sizing made without flags stays within its budget.
#[test]
fn slot_layout_from_odd_sysfs_stays_within_its_budget() {
    let dir = sysfs_with_cpus("0-65535\n");
    write_ctrl(dir.path(), 4000, "queue_count", 4294967295u32);
    let l = slot_layout(dir.path(), 0, 0);
    let bytes = u64::from(l.stats_slots()) * std::mem::size_of::<nvmeof_common::OpStats>() as u64;
    assert!(bytes <= AUTO_STATS_BUDGET, "{l:?}: {bytes} bytes");
    assert_eq!(l.queues, 3 * 8192 + 1);
    assert!(l.controllers >= 1);
}

/// The kernel memory of the maps at a node's size, as the kernel charges it (fdinfo
/// `memlock`), loading the real object with the arrays and the in-flight map sized as the
/// agent would size them. Skipped where BPF cannot be loaded here.
fn maps_at(controllers: u32, queues: u32, inflight: u32) -> Option<u64> {
    let sizes = load::MapSizes {
        inflight: Some(inflight),
        slots: Some(nvmeof_common::SlotLayout::new(controllers, queues)),
        ..Default::default()
    };
    let ebpf = match load::open(EBPF_OBJECT, &load::Layouts::default(), sizes) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("skipped: {}", loader::explain(&e));
            return None;
        }
    };
    let maps = loader::map_memory(&ebpf);
    let total = maps.iter().map(|(_, b)| b).sum();
    eprintln!(
        "{controllers} controllers × {queues} queues, in-flight {inflight}: {total} bytes {maps:?}"
    );
    Some(total)
}

/// The goals of the sizing: at most 8 MiB on the lab's node (2 CPUs: 3 queues, 16
/// controllers, the in-flight map at its least), at most 64 MiB at 256 CPUs with 16
/// controllers present (257 queues, 32 controllers' room, the in-flight map at its most).
#[test]
fn kernel_memory_fits_the_node() {
    const MIB: u64 = 1 << 20;
    if let Some(lab) = maps_at(16, 3, nvmeof_common::INFLIGHT_CAPACITY) {
        assert!(lab <= 8 * MIB, "lab node: {lab} bytes");
    }
    if let Some(mid) = maps_at(16, 129, INFLIGHT_CAPACITY_MAX) {
        assert!(mid <= 64 * MIB, "128 CPUs × 8 controllers: {mid} bytes");
    }
    if let Some(big) = maps_at(32, 257, INFLIGHT_CAPACITY_MAX) {
        assert!(big <= 64 * MIB, "256 CPUs × 16 controllers: {big} bytes");
    }
}

/// One entry per request struct of the controllers at start, within the bounds.
#[test]
fn inflight_capacity_follows_the_controllers_queues() {
    let sysfs = |ctrls: &[(u32, u32)]| {
        let dir = tempfile::tempdir().unwrap();
        for (i, (queues, sqsize)) in ctrls.iter().enumerate() {
            write_ctrl(dir.path(), i, "queue_count", queues);
            write_ctrl(dir.path(), i, "sqsize", sqsize);
        }
        dir
    };
    let none = sysfs(&[]);
    assert_eq!(inflight_capacity(none.path()), 16384);
    // The lab's size: a few controllers of 2 or 3 queues of 128.
    let lab = sysfs(&[(3, 127), (3, 127), (2, 127)]);
    assert_eq!(inflight_capacity(lab.path()), 16384);
    // 4 controllers × 65 queues × 128 = 33280 request structs.
    let mid = sysfs(&[(65, 127); 4]);
    assert_eq!(inflight_capacity(mid.path()), 65536);
    // 8 × 129 × 128 = 132096: capped.
    let big = sysfs(&[(129, 127); 8]);
    assert_eq!(inflight_capacity(big.path()), INFLIGHT_CAPACITY_MAX);
    assert_eq!(
        inflight_capacity(std::path::Path::new("/nonexistent")),
        16384
    );
}

/// Options with tracefs at `tracefs` and nothing else the tracer could find.
fn options_on(tracefs: &std::path::Path, per_queue: bool) -> IoOptions {
    IoOptions {
        sysfs_root: PathBuf::from("/nonexistent"),
        tracefs_root: Some(tracefs.to_owned()),
        btf_root: Some(PathBuf::from("/nonexistent")),
        attach_mode: None,
        drain_interval: Duration::from_secs(1),
        limits: MapLimits::default(),
        count_map_entries: 0,
        host_wait: false,
        per_queue,
        wait_for_nvme: WAIT_FOR_NVME,
        slow: Default::default(),
    }
}

/// Options over a tracefs without the nvme events (this is what a host without nvme_core
/// looks like); the directory lives as long as the first half.
pub(crate) fn without_nvme_tracepoints() -> (tempfile::TempDir, IoOptions) {
    let tracefs = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tracefs.path().join("events/sched")).unwrap();
    let opts = options_on(tracefs.path(), false);
    (tracefs, opts)
}

/// Options over a tracefs with the nvme events' format files and no tracepoints behind them;
/// `None` on a host with NVMe, which attaches for real (the lab tests cover it).
pub(crate) fn with_formats_but_no_tracepoints() -> Option<(tempfile::TempDir, IoOptions)> {
    if std::path::Path::new("/sys/kernel/tracing/events/nvme").exists() {
        return None;
    }
    let tracefs = tempfile::tempdir().unwrap();
    for (e, text) in [
        ("nvme_setup_cmd", format::tests::SETUP_6_1),
        ("nvme_complete_rq", format::tests::COMPLETE_6_1),
    ] {
        let d = tracefs.path().join("events/nvme").join(e);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("format"), text).unwrap();
    }
    let opts = options_on(tracefs.path(), true);
    Some((tracefs, opts))
}

/// Without the nvme events `start` still returns a source, and it says down (the `io`
/// collector's tests render it).
#[test]
fn start_without_nvme_tracepoints_reports_down() {
    let (_tracefs, opts) = without_nvme_tracepoints();
    assert!(!start(opts).read().up);
}

/// With format files present the failure moves on to the loader; whatever stops it here
/// (no object, no permission, no such tracepoint on this kernel), the answer is down.
#[test]
fn start_with_formats_but_no_tracepoints_reports_down() {
    let Some((_tracefs, opts)) = with_formats_but_no_tracepoints() else {
        return;
    };
    // The programs must pass this kernel's verifier: loading may only stop for lack of an
    // object or of permission, or at attach (no nvme tracepoints here), where the completion
    // program goes first (`load::attach`).
    let state = Arc::new(RwLock::new(IoState::default()));
    let why = loader::explain(&try_start(&opts, &state, &Trigger::default()).err().unwrap());
    assert!(
        why.contains("no eBPF object")
            || why.starts_with("no permission")
            || why.contains("attaching nvme_complete_rq to nvme:nvme_complete_rq"),
        "{why}"
    );
    assert!(!start(opts).read().up);
}

/// Started before `nvme_core` is loaded, the tracer says it waits, and tries once the
/// module appears (here it then fails for lack of the nvme events, and says down).
#[test]
fn a_tracer_started_before_nvme_core_waits_for_it() {
    let (_tracefs, mut opts) = without_nvme_tracepoints();
    let sysfs = tempfile::tempdir().unwrap();
    opts.sysfs_root = sysfs.path().to_owned();
    opts.wait_for_nvme = Duration::from_millis(20);
    let source = start(opts);
    assert!(!source.read().up);
    assert!(source.read().waiting_for_nvme);
    std::thread::sleep(Duration::from_millis(100));
    assert!(source.read().waiting_for_nvme, "tried without the module");
    std::fs::create_dir_all(sysfs.path().join("module/nvme_core")).unwrap();
    let started = std::time::Instant::now();
    while source.read().waiting_for_nvme {
        assert!(started.elapsed() < Duration::from_secs(10), "never tried");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!source.read().up);
}

/// With `nvme_core` loaded, a tracer that cannot start does not wait.
#[test]
fn a_tracer_that_fails_with_nvme_core_loaded_does_not_wait() {
    let (_tracefs, mut opts) = without_nvme_tracepoints();
    let sysfs = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(sysfs.path().join("module/nvme_core")).unwrap();
    opts.sysfs_root = sysfs.path().to_owned();
    let source = start(opts);
    assert!(!source.read().up && !source.read().waiting_for_nvme);
}
