//! The I/O tracer, agent side: kernel maps → drain → model → a published [`IoState`], which
//! the `io` collector (`crate::collectors::io`) renders.
//!
//! Hooks: `nvme_setup_cmd` and `nvme_complete_rq` (programs in `nvmeof-ebpf`), as tp_btf, raw or
//! classic tracepoints: [`load`] picks the first that attaches.
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
pub mod load;
pub mod model;
pub mod namespaces;
pub mod request_btf;
mod sizing;
pub mod slow;
pub mod status;

pub use sizing::{
    command_timeouts, inflight_capacity, possible_cpus, slot_layout, MapLimits, AUTO_STATS_BUDGET,
    INFLIGHT_CAPACITY_MAX,
};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use crate::bpf::{btf, format, loader, tracefs, ProgramRun, EBPF_OBJECT};
use crate::worker::{Ticked, Trigger, Worker};
use load::{AttachMode, Layouts, Loaded, MapSizes, SlowSizes};

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
    pub attach_mode: Option<AttachMode>,
    /// The longest time between two drains when no scrape asks for one.
    pub drain_interval: Duration,
    /// Controllers and queues the arrays hold, entries of the request-keyed in-flight map.
    pub limits: MapLimits,
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
    let request = match request_btf::request_layout(
        opts.btf_root.as_deref().unwrap_or(btf::SYS_BTF.as_ref()),
    ) {
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
    let layouts = Layouts {
        tracepoint,
        request: request.map(|b| b.layout),
        module_tracepoints: request.and_then(|b| b.module_tracepoints),
        timeouts: command_timeouts(&opts.sysfs_root),
        slow: opts.slow.trace(),
        host_wait: host_wait.unwrap_or(nvmeof_common::host_wait::HostWait::OFF),
    };
    let limits = opts.limits;
    let slots = slot_layout(&opts.sysfs_root, limits.max_controllers, limits.max_queues);
    let inflight = match limits.max_inflight {
        0 => inflight_capacity(&opts.sysfs_root),
        n => n,
    };
    let sizes = MapSizes {
        inflight: Some(inflight),
        slots: Some(slots),
        // What a setup keeps for its completion, for as many commands as the in-flight map.
        slow: opts.slow.is_on().then_some(SlowSizes {
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
    let mut loaded = load::load(EBPF_OBJECT, &layouts, sizes, opts.attach_mode)?;
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
    match loaded.mode != AttachMode::Tracepoint {
        true => log::info!(
            "eBPF: in-flight array of {} slots (--ebpf.max-inflight), and an LRU map of {} \
             entries for the commands whose slot is taken",
            loaded.slots.inflight_slots(),
            nvmeof_common::INFLIGHT_CAPACITY
        ),
        // The classic programs keep to what every supported kernel's BPF has: the slots are
        // claimed with a compare-and-exchange (Linux 5.12), and classic is the mode of kernels
        // without nvme_core's BTF, Debian's 5.10 among them.
        false => log::info!(
            "eBPF: in-flight LRU map keyed by command id, {} entries (--ebpf.max-inflight sizes \
             the request-keyed modes' in-flight array only)",
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
    let drainer =
        drain::Drainer::new(loaded, opts.sysfs_root.clone())?.with_host_wait(host_wait_on);
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
fn start_slow_reader(loaded: &mut Loaded, opts: &slow::SlowOptions) -> anyhow::Result<Worker> {
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
pub(crate) mod tests;
