//! The I/O tracer, agent side: kernel maps → drain → model → a published [`IoState`], which
//! the `io` collector (`crate::collectors::io`) renders.
//!
//! Hooks: `nvme_setup_cmd` and `nvme_complete_rq` (programs in `nvmeof-ebpf`), as tp_btf, raw or
//! classic tracepoints: the shared loader (`crate::bpf::loader`) picks the first that attaches.
//! At start: read the struct offsets the request-keyed programs need from the kernel's BTF
//! (`crate::bpf::btf`), find tracefs and read the two records' layout from their `format` files
//! (`crate::bpf::tracefs`, `crate::bpf::format`) for the classic ones, load the object with both
//! and attach. Then a worker drains the maps ([`drain`]) into the [`model`], which keeps
//! per-series counters and Prometheus buckets, and publishes the result in the [`IoSource`]. It
//! drains when a scrape asks ([`IoSource::refresh`]), and on its own only when no scrape asked for
//! `drain_interval` (to forget controllers that are gone): an agent nobody scrapes reads no map,
//! and a scrape sees every command completed before it. Draining every second for nobody was most
//! of an idle agent's CPU (BENCHMARKS.md, weight).
//!
//! [`start`] never fails: without BPF permission, tracepoints or a usable layout it logs one line
//! and returns a source whose state says `up: false` (`nvmeof_exporter_ebpf_up 0`). When the
//! cause is that `nvme_core` is not loaded yet (a DaemonSet starts before anyone runs `nvme
//! connect`, which loads it), the source watches for the module (a `stat` every
//! [`IoOptions::wait_for_nvme`]) and starts the tracer when it appears, without a restart.
pub mod arrays;
pub mod drain;
pub mod host_wait;
pub mod model;
pub mod namespaces;
pub mod slow;
pub mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use crate::bpf::{btf, format, loader, tracefs, ProgramRun, EBPF_OBJECT};
use crate::worker::{Ticked, Trigger, Worker};

/// How the tracer runs; filled from the command line.
#[derive(Clone, Debug)]
pub struct IoOptions {
    /// Root of sysfs (`/sys`): namespaces' LBA sizes and controllers' subsystem NQNs.
    pub sysfs_root: PathBuf,
    /// Root of tracefs; `None` finds it (and mounts it if needed).
    pub tracefs_root: Option<PathBuf>,
    /// Where the kernel's BTF is; `None` is `/sys/kernel/btf`.
    pub btf_root: Option<PathBuf>,
    /// Only this attach mode; `None` tries them in order.
    pub attach_mode: Option<loader::AttachMode>,
    /// The longest time between two drains when no scrape asks for one.
    pub drain_interval: Duration,
    /// Controller instances the arrays hold; 0: see [`slot_layout`].
    pub max_controllers: u32,
    /// Queue ids per controller the arrays hold; 0: see [`slot_layout`].
    pub max_queues: u32,
    /// Entries of the request-keyed in-flight map; 0: see [`inflight_capacity`].
    pub max_inflight: u32,
    /// `--ebpf.count-map-entries`: `STATUSES` and `CONN_ERRORS`; 0 keeps theirs.
    pub count_map_entries: u32,
    /// `--ebpf.host-wait`: measure each command's wait in the host (`host_wait`).
    pub host_wait: bool,
    /// Every controller's series per hardware queue (`--metrics.per-queue`), as if every scrape
    /// named every controller: a rendering choice, handed to the collector in [`IoState`].
    pub per_queue: bool,
    /// How often a tracer that could not start because `nvme_core` was not loaded looks for it
    /// again.
    pub wait_for_nvme: Duration,
    /// Slow-command tracing.
    pub slow: slow::SlowOptions,
}

/// [`IoOptions::wait_for_nvme`] in the agent.
pub const WAIT_FOR_NVME: Duration = Duration::from_secs(5);

/// The shortest drain interval accepted: draining reads every map entry.
pub const MIN_DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// What the drain publishes and the `io` collector reads.
#[derive(Clone, Debug, Default)]
pub struct IoState {
    pub up: bool,
    /// Not up because `nvme_core` is not loaded yet: the tracer starts when it is.
    pub waiting_for_nvme: bool,
    /// Render every controller per queue (`--metrics.per-queue`); without it a scrape chooses.
    pub per_queue: bool,
    pub attached: Vec<&'static str>,
    /// The attach mode's label value (`tp_btf`, `raw_tracepoint`, `tracepoint`).
    pub mode: Option<&'static str>,
    pub view: model::IoView,
    /// Controller instance → subsystem NQN, read at the last drain.
    pub subsystems: BTreeMap<u32, String>,
    pub programs: Vec<ProgramRun>,
    /// How long the last drain took; `None` before the first.
    pub drain_seconds: Option<f64>,
    /// Per counting map, the events it could not count (full).
    pub map_full: Vec<(&'static str, u64)>,
    /// Per controller, host wait (`--ebpf.host-wait`), as latency series; empty while off.
    pub host_wait: Vec<model::OpView>,
    /// The slow commands traced (`--trace.slower-than`), which the latency histograms point at
    /// with exemplars; `None` while tracing is off.
    pub slow: Option<Arc<slow::SlowLog>>,
}

/// `nvme_core`'s command timeouts (module parameters, in seconds), for the `timeout` kind of
/// connection errors. A parameter that cannot be read turns that half off (0). Queues created
/// after a change of the parameter use the new value; the programs keep the one read at start.
pub fn command_timeouts(sysfs_root: &std::path::Path) -> nvmeof_common::ErrorTimeouts {
    let secs = |name: &str| -> u64 {
        let path = sysfs_root.join("module/nvme_core/parameters").join(name);
        crate::sysfs::read_trim(&path)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    nvmeof_common::ErrorTimeouts {
        io_ns: secs("io_timeout").saturating_mul(1_000_000_000),
        admin_ns: secs("admin_timeout").saturating_mul(1_000_000_000),
    }
}

/// Most in-flight entries the request-keyed map is given (131072 × 96 bytes: 12 MiB).
pub const INFLIGHT_CAPACITY_MAX: u32 = 1 << 17;

/// The request-keyed in-flight map's capacity: one entry per request struct of the controllers
/// present at start (each has `queue_count × (sqsize + 1)`: the blk-mq tags of its queues; at a
/// low queue depth only some of them carry commands, at a high one all can), rounded up to a power of
/// two, at least [`nvmeof_common::INFLIGHT_CAPACITY`] (room for controllers that connect later),
/// at most [`INFLIGHT_CAPACITY_MAX`]. Past that the map's LRU evicts the entries touched least
/// recently, and `inflight_new_key` events keep counting.
pub fn inflight_capacity(sysfs_root: &std::path::Path) -> u32 {
    let requests: u64 = crate::sysfs::controller::controllers(sysfs_root)
        .map(|p| {
            p.items
                .iter()
                .map(|c| {
                    u64::from(c.queue_count.unwrap_or(1)) * (u64::from(c.sqsize.unwrap_or(0)) + 1)
                })
                .sum()
        })
        .unwrap_or(0);
    requests
        .max(u64::from(nvmeof_common::INFLIGHT_CAPACITY))
        .next_power_of_two()
        .min(u64::from(INFLIGHT_CAPACITY_MAX)) as u32
}

/// The node's possible CPUs (`devices/system/cpu/possible`, a list such as `0-255` or `0,2-5`):
/// nvme-tcp and nvme-rdma open one I/O queue per CPU unless told otherwise.
pub fn possible_cpus(sysfs_root: &std::path::Path) -> Option<u32> {
    let text = crate::sysfs::read_trim(&sysfs_root.join("devices/system/cpu/possible"))?;
    let mut n = 0u32;
    // A sane bound on what a sysfs file may claim, whatever it says.
    for part in text.trim().split(',').filter(|p| !p.is_empty()).take(4096) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        n = n.checked_add(hi.checked_sub(lo)?.checked_add(1)?)?;
    }
    (n > 0).then_some(n.min(1 << 16))
}

/// The most `OPS` may take when the node sizes it (no flag): 128 MiB, which holds 32
/// controllers of 1024 queues, or 142 of 257. An odd sysfs (an instance or a queue count no node
/// has) must not make the agent ask the kernel for gigabytes.
pub const AUTO_STATS_BUDGET: u64 = 128 << 20;

/// Linux's largest `CONFIG_NR_CPUS`: a `possible` list claiming more is not a real node's.
const MAX_CPUS: u32 = 8192;

/// The bounds of the `QUEUES` and `OPS` arrays: controller instances 0 .. `controllers` and
/// queue ids 0 .. `queues`.
/// - Queues: `max_queues`, or (0) the possible CPUs plus the admin queue, or the most any present
///   controller has if that is more, up to three per CPU plus the admin queue (I/O, write and
///   poll queues, each at most one per CPU).
/// - Controllers: `max_controllers`, or (0) twice the highest instance present plus one, at least
///   16 (the kernel hands instances out lowest-free, so they stay below the most controllers the
///   node has at once), as many as [`AUTO_STATS_BUDGET`] holds at that many queues.
///
/// A command past either bound is counted (`slot_out_of_range`) and not timed.
pub fn slot_layout(
    sysfs_root: &std::path::Path,
    max_controllers: u32,
    max_queues: u32,
) -> nvmeof_common::SlotLayout {
    let present = crate::sysfs::controller::controllers(sysfs_root)
        .map(|p| p.items)
        .unwrap_or_default();
    let cpus = possible_cpus(sysfs_root).unwrap_or(1).min(MAX_CPUS);
    let queues = match max_queues {
        0 => present
            .iter()
            .filter_map(|c| c.queue_count)
            .max()
            .unwrap_or(0)
            .min(3 * cpus + 1)
            .max(cpus + 1),
        n => n.min(1 << 16),
    };
    let controllers = match max_controllers {
        0 => {
            let wanted = present
                .iter()
                .map(|c| 2 * (c.instance.min(2047) + 1))
                .max()
                .unwrap_or(0)
                .max(16);
            let per = u64::from(nvmeof_common::SlotLayout::new(1, queues).stats_slots())
                * std::mem::size_of::<nvmeof_common::OpStats>() as u64;
            let fits = (AUTO_STATS_BUDGET / per.max(1)).max(1) as u32;
            if wanted > fits {
                log::warn!(
                    "eBPF: arrays for {fits} controllers of {queues} queues, not {wanted}: more \
                     would pass {AUTO_STATS_BUDGET} bytes; --ebpf.max-controllers sets it"
                );
            }
            wanted.min(fits)
        }
        n => n,
    };
    nvmeof_common::SlotLayout::new(controllers, queues)
}

/// What the tracer publishes: the state of the last drain, behind a lock the drain writes and
/// scrapes read; dropping it stops the drain, which drops the object and so detaches the programs.
pub struct IoSource {
    state: Arc<RwLock<IoState>>,
    /// Asks the drain for a drain now.
    drain: Trigger,
    _worker: Option<Worker>,
}

impl IoSource {
    /// The tracer is off: a state that says `up: false`.
    pub fn down() -> Self {
        IoSource::fixed(IoState::default())
    }

    /// A source over a fixed state (tests, golden files).
    pub fn fixed(state: IoState) -> Self {
        IoSource::shared(Arc::new(RwLock::new(state)))
    }

    /// A source over a state that someone else drains into (benchmarks drain by hand).
    pub fn shared(state: Arc<RwLock<IoState>>) -> Self {
        IoSource {
            state,
            drain: Trigger::default(),
            _worker: None,
        }
    }

    /// Drains the maps now and waits at most `within` for it; [`Ticked::NoWorker`] when nothing
    /// drains (the tracer is off, or the state is fixed).
    pub fn refresh(&self, within: Duration) -> Ticked {
        self.drain.tick_within(within)
    }

    /// The state the last drain published.
    pub fn read(&self) -> RwLockReadGuard<'_, IoState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Starts the tracer; see the module documentation.
pub fn start(opts: IoOptions) -> IoSource {
    let state = Arc::new(RwLock::new(IoState::default()));
    let drain = Trigger::default();
    let nvme_loaded = nvme_core_loaded(&opts.sysfs_root);
    let e = match try_start(&opts, &state, &drain) {
        Ok(worker) => {
            return IoSource {
                state,
                drain,
                _worker: Some(worker),
            }
        }
        Err(e) => e,
    };
    log::debug!("eBPF start failure in full: {e:?}");
    if nvme_loaded {
        log::warn!(
            "eBPF latency tracer off: {}; serving sysfs metrics only",
            loader::explain(&e)
        );
        return IoSource::shared(state);
    }
    log::warn!(
        "eBPF latency tracer waiting: nvme_core is not loaded ({}); it starts when the module \
         loads (`nvme connect` loads it), serving sysfs metrics until then",
        loader::explain(&e)
    );
    state
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .waiting_for_nvme = true;
    let watch = wait_for_nvme_core(opts, state.clone(), drain.clone());
    IoSource {
        state,
        drain,
        _worker: watch,
    }
}

/// Whether `nvme_core` is loaded (or built in): `module/nvme_core` in sysfs.
fn nvme_core_loaded(sysfs_root: &std::path::Path) -> bool {
    sysfs_root.join("module/nvme_core").is_dir()
}

/// A worker that looks for `nvme_core` every [`IoOptions::wait_for_nvme`] and, once it is
/// there, starts the tracer into `state` once: the tracer's own worker then lives in this one's
/// closure, so dropping the source still stops both. A start that fails with the module loaded
/// is logged and not tried again (the cause is then not the module).
fn wait_for_nvme_core(
    opts: IoOptions,
    state: Arc<RwLock<IoState>>,
    drain_trigger: Trigger,
) -> Option<Worker> {
    // The drain's worker once started: owned by this closure, dropped with it.
    let mut drain: Option<Worker> = None;
    let mut done = false;
    let interval = opts.wait_for_nvme;
    let tick = move || {
        if done || !nvme_core_loaded(&opts.sysfs_root) {
            return;
        }
        done = true;
        state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .waiting_for_nvme = false;
        match try_start(&opts, &state, &drain_trigger) {
            Ok(worker) => {
                log::info!("eBPF latency tracer started: nvme_core is loaded");
                drain.get_or_insert(worker);
            }
            Err(e) => {
                log::warn!(
                    "eBPF latency tracer off: nvme_core is loaded but {}; serving sysfs metrics only",
                    loader::explain(&e)
                );
                log::debug!("eBPF start failure in full: {e:?}");
            }
        }
    };
    Worker::every("ebpf-wait-nvme", interval, tick)
        .map_err(|e| log::warn!("eBPF: cannot watch for nvme_core, not starting later: {e}"))
        .ok()
}

/// Loads, attaches and starts the drain, which publishes into `state` and drains when `trigger`
/// asks.
fn try_start(
    opts: &IoOptions,
    state: &Arc<RwLock<IoState>>,
    trigger: &Trigger,
) -> anyhow::Result<Worker> {
    // The request-keyed modes need the struct offsets from BTF; the classic one the record
    // layout from tracefs. Either may be missing; the loader skips the modes it cannot serve.
    let request =
        match btf::request_layout(opts.btf_root.as_deref().unwrap_or(btf::SYS_BTF.as_ref())) {
            Ok(b) => Some(b),
            Err(e) => {
                log::info!("eBPF: no struct offsets from BTF ({e:#}); request-keyed modes off");
                None
            }
        };
    let tracepoint =
        match tracefs::locate(opts.tracefs_root.as_deref()).and_then(|t| format::read_layout(&t)) {
            Ok(l) => Some(l),
            Err(e) if request.is_none() => return Err(e),
            Err(e) => {
                log::info!("eBPF: no tracepoint record layout ({e:#}); classic mode off");
                None
            }
        };
    let host_wait = match (opts.host_wait, request.and_then(|b| b.host_wait)) {
        (false, _) => None,
        (true, Some(h)) => Some(h),
        (true, None) => {
            log::warn!(
                "eBPF: --ebpf.host-wait needs the request-keyed modes and block_bio_queue's \
                 arguments in vmlinux's BTF; host wait is not measured"
            );
            None
        }
    };
    let layouts = loader::Layouts {
        tracepoint,
        request: request.map(|b| b.layout),
        module_tracepoints: request.and_then(|b| b.module_tracepoints),
        timeouts: command_timeouts(&opts.sysfs_root),
        slow: opts.slow.trace(),
        host_wait: host_wait.unwrap_or(nvmeof_common::host_wait::HostWait::OFF),
    };
    let slots = slot_layout(&opts.sysfs_root, opts.max_controllers, opts.max_queues);
    let inflight = match opts.max_inflight {
        0 => inflight_capacity(&opts.sysfs_root),
        n => n,
    };
    let sizes = loader::MapSizes {
        inflight: Some(inflight),
        slots: Some(slots),
        // What a setup keeps for its completion, for as many commands as the in-flight map.
        slow: opts.slow.is_on().then_some(loader::SlowSizes {
            context: inflight.max(nvmeof_common::INFLIGHT_CAPACITY),
            ring_bytes: slow::RING_BYTES,
        }),
        count_map_entries: opts.count_map_entries,
        // Bios submitted and not yet set up, on every block device: as many as commands.
        host_wait: host_wait.map(|_| inflight.max(nvmeof_common::INFLIGHT_CAPACITY)),
    };
    log::info!(
        "eBPF: arrays for {} controllers × {} queues ({} statistics slots, {} bytes)",
        slots.controllers,
        slots.queues,
        slots.stats_slots(),
        u64::from(slots.stats_slots()) * std::mem::size_of::<nvmeof_common::OpStats>() as u64
    );
    let mut loaded = loader::load(EBPF_OBJECT, &layouts, sizes, opts.attach_mode)?;
    let slow_reader = match opts.slow.is_on() {
        true => Some(start_slow_reader(&mut loaded, &opts.slow)?),
        false => None,
    };
    log::info!(
        "eBPF: attach mode {}: attached {}",
        loaded.mode.as_str(),
        loaded.attached.join(", ")
    );
    let interval = opts.drain_interval.max(MIN_DRAIN_INTERVAL);
    let attached = loaded.attached.clone();
    let mode = Some(loaded.mode.as_str());
    // The flag sizes the request-keyed map; the classic mode's (keyed by command id, which a
    // queue reuses) keeps its fixed size, and its evictions are counted and alerted on alone.
    let request_keyed = (loaded.mode != loader::AttachMode::Tracepoint).then_some(inflight);
    match request_keyed {
        Some(n) => log::info!("eBPF: in-flight map of {n} entries (--ebpf.max-inflight)"),
        None => log::info!(
            "eBPF: in-flight map keyed by command id, {} entries (--ebpf.max-inflight sizes the \
             request-keyed modes' only)",
            nvmeof_common::INFLIGHT_CAPACITY
        ),
    }
    let host_wait_on = {
        use nvmeof_common::host_wait::programs::{BLOCK_BIO_QUEUE_BTF, BLOCK_BIO_QUEUE_RAW};
        (loaded.attached.iter()).any(|p| [BLOCK_BIO_QUEUE_BTF, BLOCK_BIO_QUEUE_RAW].contains(p))
    };
    if host_wait_on {
        log::info!("eBPF: host wait measured (block_bio_queue → nvme_setup_cmd, --ebpf.host-wait)");
    }
    let drainer = drain::Drainer::new(loaded, opts.sysfs_root.clone())?
        .with_inflight_capacity(request_keyed)
        .with_host_wait(host_wait_on);
    *state.write().unwrap_or_else(|e| e.into_inner()) = IoState {
        up: true,
        per_queue: opts.per_queue,
        attached,
        mode,
        slow: opts.slow.is_on().then(|| opts.slow.log.clone()),
        ..Default::default()
    };
    let mut drain = drain::ticks(drainer, state.clone());
    Worker::triggered("ebpf-drain", interval, trigger, move || {
        // The slow-command reader lives and stops with the drain.
        let _ = &slow_reader;
        drain()
    })
    .map_err(|e| {
        *state.write().unwrap_or_else(|e| e.into_inner()) = IoState::default();
        e.into()
    })
}

/// Starts reading the slow-command ring of `loaded` into the options' log.
fn start_slow_reader(
    loaded: &mut loader::Loaded,
    opts: &slow::SlowOptions,
) -> anyhow::Result<Worker> {
    use anyhow::Context as _;
    let map = loaded
        .ebpf
        .take_map(nvmeof_common::slow::maps::SLOW_EVENTS)
        .context("the object has no slow-command ring")?;
    let ring = aya::maps::RingBuf::try_from(map).context("the slow-command ring")?;
    log::info!(
        "eBPF: tracing commands of {} or more, at most {} a second per CPU (/debug/slow)",
        humantime::format_duration(opts.threshold),
        opts.per_cpu_per_second
    );
    slow::start_reader(ring, opts.log.clone())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn possible_cpus_read_the_kernels_list() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = dir.path().join("devices/system/cpu");
        std::fs::create_dir_all(&cpu).unwrap();
        for (text, want) in [
            ("0-255\n", Some(256)),
            ("0\n", Some(1)),
            ("0,2-5,7\n", Some(6)),
            ("5-3\n", None),
            ("x\n", None),
            ("\n", None),
        ] {
            std::fs::write(cpu.join("possible"), text).unwrap();
            assert_eq!(possible_cpus(dir.path()), want, "{text:?}");
        }
    }

    /// The arrays' bounds from the node: flags win, else the controllers present and the CPUs.
    #[test]
    fn slot_layout_follows_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = dir.path().join("devices/system/cpu");
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::write(cpu.join("possible"), "0-255\n").unwrap();
        let l = slot_layout(dir.path(), 0, 0);
        assert_eq!((l.controllers, l.queues), (16, 257));
        for (i, queues) in [(0, 65), (11, 300)] {
            let c = dir.path().join(format!("class/nvme/nvme{i}"));
            std::fs::create_dir_all(&c).unwrap();
            std::fs::write(c.join("queue_count"), format!("{queues}\n")).unwrap();
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
        std::fs::write(dir.path().join("class/nvme/nvme11/queue_count"), "9999\n").unwrap();
        let l = slot_layout(dir.path(), 0, 0);
        assert_eq!((l.controllers, l.queues), (24, 769));
    }

    /// Whatever sysfs claims, the sizing made without flags stays within its budget.
    #[test]
    fn slot_layout_from_odd_sysfs_stays_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = dir.path().join("devices/system/cpu");
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::write(cpu.join("possible"), "0-65535\n").unwrap();
        let c = dir.path().join("class/nvme/nvme4000");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("queue_count"), "4294967295\n").unwrap();
        let l = slot_layout(dir.path(), 0, 0);
        let bytes =
            u64::from(l.stats_slots()) * std::mem::size_of::<nvmeof_common::OpStats>() as u64;
        assert!(bytes <= AUTO_STATS_BUDGET, "{l:?}: {bytes} bytes");
        assert_eq!(l.queues, 3 * 8192 + 1);
        assert!(l.controllers >= 1);
    }

    /// The kernel memory of the maps at a node's size, as the kernel charges it (fdinfo
    /// `memlock`), loading the real object with the arrays and the in-flight map sized as the
    /// agent would size them. Skipped where BPF cannot be loaded here.
    fn maps_at(controllers: u32, queues: u32, inflight: u32) -> Option<u64> {
        let sizes = loader::MapSizes {
            inflight: Some(inflight),
            slots: Some(nvmeof_common::SlotLayout::new(controllers, queues)),
            ..Default::default()
        };
        let ebpf = match loader::open(EBPF_OBJECT, &loader::Layouts::default(), sizes) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("skipped: {}", loader::explain(&e));
                return None;
            }
        };
        let maps = loader::map_memory(&ebpf);
        let total = maps.iter().map(|(_, b)| b).sum();
        eprintln!("{controllers} controllers × {queues} queues, in-flight {inflight}: {total} bytes {maps:?}");
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
                let c = dir.path().join(format!("class/nvme/nvme{i}"));
                std::fs::create_dir_all(&c).unwrap();
                std::fs::write(c.join("queue_count"), format!("{queues}\n")).unwrap();
                std::fs::write(c.join("sqsize"), format!("{sqsize}\n")).unwrap();
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
            max_controllers: 0,
            max_queues: 0,
            max_inflight: 0,
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
        // object or of permission, or at attach (no nvme tracepoints here).
        let state = Arc::new(RwLock::new(IoState::default()));
        let why = loader::explain(&try_start(&opts, &state, &Trigger::default()).err().unwrap());
        assert!(
            why.contains("no eBPF object")
                || why.starts_with("no permission")
                || why.contains("attaching nvme_setup_cmd to nvme:nvme_setup_cmd"),
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
}
