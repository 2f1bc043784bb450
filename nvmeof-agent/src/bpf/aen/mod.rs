//! The AEN tracer, agent side: asynchronous events per controller and each path's ANA state
//! transitions, as an [`AenSnapshot`] the `aen` collector (`crate::collectors::aen`) renders.
//!
//! Hooks (programs in `nvmeof-ebpf/src/aen.rs`): the classic tracepoint `nvme:nvme_async_event`,
//! whose record layout is read from its tracefs `format` file at start ([`layout_from_format`]),
//! and a kprobe on `nvme_update_ns_ana_state`, with struct offsets from BTF ([`ns_btf`]). The
//! kernel counts every event as it completes, by (controller, raw result), and every change of a
//! path's ANA state, by (path, old, new); the agent turns results into bounded type and
//! information labels ([`event_labels`]) and state values into sysfs' names when a snapshot is
//! asked for.
//!
//! Without the kprobe (no BTF for nvme_core, as on Debian's 5.10; the function inlined, as on
//! Debian's 6.12; no kprobes) ANA states are sampled instead: a worker reads every path's sysfs
//! `ana_state` every [`POLL_INTERVAL`] and counts the changes between two readings (the state
//! tracer's [`PollState`]); a state that lasts less than that is missed, so those counts are a
//! lower bound ([`AenSnapshot::ana_source`] says which). The same worker clears the counts of a controller instance that went away or now
//! belongs to another subsystem (the kernel hands a deleted controller's number to the next
//! one; with the kprobe it reads only that, when a scrape asks ([`AenSource::refresh`]) and
//! every [`OWNER_INTERVAL`] without one), and, while `nvme_core` is
//! not loaded, tries the programs again every [`WAIT_FOR_NVME`](crate::bpf::io::WAIT_FOR_NVME).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aya::{maps::HashMap as BpfHashMap, Ebpf};
use nvmeof_common::aen::{maps, programs, AenKey, AenLayout, AnaKey};
use nvmeof_common::count_maps::CountMap;

pub mod load;
pub mod ns_btf;

use super::state::{poll::PollState, state_name, wall_now, Track};
use crate::bpf::count_maps::{self, FullLog};
use crate::bpf::{format, loader, tracefs, AEN_OBJECT};
use crate::sysfs::namespace::path_ana_states;
use crate::worker::{Ticked, Trigger, Worker};

/// How often every path's `ana_state` is read without the kprobe.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// When the kprobe counts ANA changes, the controllers' subsystems alone are read (to clear the
/// counts of a controller number handed to another subsystem) at every scrape, before it renders,
/// and every this long without one: an idle agent then wakes twice a minute, not every second.
pub const OWNER_INTERVAL: Duration = Duration::from_secs(30);

/// A path: its controller instance and its name (`nvmeScCnN`).
pub type PathKey = (u32, String);

/// What the tracer knows now.
#[derive(Debug, Default)]
pub struct AenSnapshot {
    /// The tracepoint program is attached.
    pub up: bool,
    /// `kprobe` (every ANA change, counted in the kernel) or `sysfs_poll` (sampled, a lower
    /// bound).
    pub ana_source: &'static str,
    /// Controller instance → (type, information) → events.
    pub events: BTreeMap<u32, BTreeMap<(&'static str, &'static str), u64>>,
    /// Each path's ANA state transitions.
    pub ana: BTreeMap<PathKey, Track>,
    /// The controllers at the worker's last reading: instance → subsystem NQN.
    pub controllers: BTreeMap<u32, String>,
    /// Per counting map (empty before the programs load), the events it could not count.
    pub map_full: Vec<(&'static str, u64)>,
}

/// The `type` and `info` labels of an event from its completion dword 0 (NVMe base
/// specification, Asynchronous Event Request completion): type in bits 2:0, information in bits
/// 15:8. Values the specification does not name are `other`, so the labels stay bounded.
pub fn event_labels(result: u32) -> (&'static str, &'static str) {
    let info = (result >> 8) & 0xff;
    match result & 0x7 {
        0 => (
            "error",
            match info {
                0x00 => "invalid_doorbell_register",
                0x01 => "invalid_doorbell_value",
                0x02 => "diagnostic_failure",
                0x03 => "persistent_internal_error",
                0x04 => "transient_internal_error",
                0x05 => "firmware_image_load_error",
                _ => "other",
            },
        ),
        1 => (
            "smart",
            match info {
                0x00 => "reliability",
                0x01 => "temperature_threshold",
                0x02 => "spare_below_threshold",
                _ => "other",
            },
        ),
        2 => (
            "notice",
            match info {
                0x00 => "namespace_attribute_changed",
                0x01 => "firmware_activation_starting",
                0x02 => "telemetry_log_changed",
                0x03 => "ana_change",
                0x04 => "predictable_latency_event",
                0x05 => "lba_status_alert",
                0x06 => "endurance_group_event",
                0xf0 => "discovery_log_changed",
                _ => "other",
            },
        ),
        6 => (
            "io_command_set",
            match info {
                0x00 => "reservation_log_available",
                0x01 => "sanitize_completed",
                0x02 => "sanitize_completed_unexpected_deallocation",
                _ => "other",
            },
        ),
        7 => ("vendor", "other"),
        _ => ("other", "other"),
    }
}

/// The program's layout from the text of `nvme:nvme_async_event`'s `format` file.
pub fn layout_from_format(text: &str) -> anyhow::Result<AenLayout> {
    let event = programs::NVME_ASYNC_EVENT;
    let f = format::parse_format(text)
        .with_context(|| format!("tracepoint nvme:{event}: bad format"))?;
    Ok(AenLayout {
        ctrl_id: format::locate(event, &f, "ctrl_id", None)?,
        result: format::locate(event, &f, "result", None)?,
        valid: 1,
    })
}

/// Reads the layout under a tracefs root.
fn read_layout(tracefs: &Path) -> anyhow::Result<AenLayout> {
    let path = tracefs
        .join("events/nvme")
        .join(programs::NVME_ASYNC_EVENT)
        .join("format");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    layout_from_format(&text)
}

/// What a loaded object counts with.
struct Kernel {
    ebpf: Ebpf,
    /// The ANA kprobe's state values → names; `None` when it is not attached.
    ana_states: Option<Vec<(u32, String)>>,
}

/// Finds tracefs, reads the record layout and, from BTF under `sysfs`, the ANA kprobe's offsets,
/// then loads and attaches the programs (the kprobe only where its offsets were found).
fn load(sysfs: &Path, tracefs_root: Option<&Path>, entries: u32) -> anyhow::Result<Kernel> {
    let root = tracefs::locate(tracefs_root)?;
    let layout = read_layout(&root)?;
    let ana = ns_btf::read(&sysfs.join("kernel/btf"))
        .map_err(|e| log::info!("ANA: no kprobe ({e:#}); sampling sysfs"))
        .ok();
    let loaded = load::load_aen(
        AEN_OBJECT,
        &layout,
        ana.as_ref().map(|a| &a.layout),
        entries,
    )?;
    Ok(Kernel {
        ebpf: loaded.ebpf,
        ana_states: ana.filter(|_| loaded.ana).map(|a| a.states),
    })
}

/// The one log line of a load.
fn attached(k: &Kernel, what: &str) {
    let ana = if k.ana_states.is_some() {
        "ANA changes counted by a kprobe on nvme_update_ns_ana_state"
    } else {
        "ANA changes sampled from sysfs every 100 ms"
    };
    log::info!("asynchronous events: {what}tracepoint nvme:nvme_async_event attached; {ana}");
}

/// The tracepoint is missing because nvme_core is not loaded (yet).
fn nvme_core_absent(tracefs_root: Option<&Path>) -> bool {
    tracefs::locate(tracefs_root)
        .map(|r| !r.join("events/nvme").is_dir())
        .unwrap_or(false)
}

struct Shared {
    kernel: Option<Kernel>,
    ana: PollState<PathKey>,
    /// Controller instance → subsystem NQN at the last reading.
    owners: BTreeMap<u32, String>,
    /// `--ebpf.count-map-entries`, for the log of a full map.
    count_map_entries: u32,
    told_full: FullLog,
}

/// The running tracer; its worker stops and its program detaches when this is dropped.
pub struct AenSource {
    shared: Arc<Mutex<Shared>>,
    /// Asks the worker for a reading now (with the kprobe; sampling, it reads every 100 ms).
    refresh: Trigger,
    _worker: Option<Worker>,
}

/// Loads the program (or logs one line saying why not) and starts the ANA poll.
/// `count_map_entries` sizes the counting maps (`--ebpf.count-map-entries`, 0 keeps theirs).
pub fn start(sysfs: PathBuf, tracefs_root: Option<PathBuf>, count_map_entries: u32) -> AenSource {
    let kernel = match load(&sysfs, tracefs_root.as_deref(), count_map_entries) {
        Ok(k) => {
            attached(&k, "");
            Some(k)
        }
        Err(e) => {
            log::warn!(
                "asynchronous events: not counted ({}); ANA transitions are still sampled",
                loader::explain(&e)
            );
            None
        }
    };
    let retry = kernel.is_none() && nvme_core_absent(tracefs_root.as_deref());
    let shared = Arc::new(Mutex::new(Shared {
        kernel,
        ana: PollState::default(),
        owners: BTreeMap::new(),
        count_map_entries,
        told_full: FullLog::default(),
    }));
    let kprobe = lock(&shared)
        .kernel
        .as_ref()
        .is_some_and(|k| k.ana_states.is_some());
    let interval = if kprobe {
        OWNER_INTERVAL
    } else {
        POLL_INTERVAL
    };
    let s = shared.clone();
    let mut waiting = retry.then(Instant::now);
    let refresh = Trigger::default();
    let trigger = if kprobe {
        refresh.clone()
    } else {
        Trigger::default()
    };
    let worker = Worker::triggered("aen-poll", interval, &trigger, move || {
        if let Some(since) = waiting {
            if since.elapsed() >= crate::bpf::io::WAIT_FOR_NVME {
                waiting = attach_late(&s, &sysfs, tracefs_root.as_deref(), count_map_entries);
            }
        }
        poll_once(&sysfs, &s);
    });
    let worker = worker
        .map_err(|e| log::error!("asynchronous events: cannot start the ANA poll: {e}"))
        .ok();
    AenSource {
        shared,
        refresh,
        _worker: worker,
    }
}

/// One more try while nvme_core was absent: `None` once attached or failed for another reason.
fn attach_late(
    shared: &Mutex<Shared>,
    sysfs: &Path,
    tracefs_root: Option<&Path>,
    count_map_entries: u32,
) -> Option<Instant> {
    if nvme_core_absent(tracefs_root) {
        return Some(Instant::now());
    }
    match load(sysfs, tracefs_root, count_map_entries) {
        Ok(k) => {
            attached(&k, "nvme_core loaded, ");
            lock(shared).kernel = Some(k);
        }
        Err(e) => log::warn!("asynchronous events: not counted ({})", loader::explain(&e)),
    }
    None
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// One reading of every controller's subsystem and, without the kprobe, of every path's ANA
/// state; the counts of controllers replaced are cleared.
fn poll_once(sysfs: &Path, shared: &Mutex<Shared>) {
    let kprobe = lock(shared)
        .kernel
        .as_ref()
        .is_some_and(|k| k.ana_states.is_some());
    let (ctrls, paths) = path_ana_states(sysfs, !kprobe);
    let seen = paths
        .into_iter()
        .map(|p| ((p.ctrl_instance, p.path), p.subsysnqn, p.state))
        .collect();
    let owners: BTreeMap<u32, String> = ctrls.into_iter().collect();
    let mut s = lock(shared);
    if !kprobe {
        s.ana.update(seen, wall_now(), Instant::now());
    }
    let gone: BTreeSet<u32> = s
        .owners
        .iter()
        .filter(|(i, nqn)| owners.get(*i) != Some(*nqn))
        .map(|(i, _)| *i)
        .collect();
    s.owners = owners;
    if let (false, Some(k)) = (gone.is_empty(), s.kernel.as_mut()) {
        if let Err(e) = forget(&mut k.ebpf, &gone) {
            log::debug!("asynchronous events: clearing {gone:?}: {e:#}");
        }
    }
}

/// Removes the counts of controller instances `gone` from both maps.
fn forget(ebpf: &mut Ebpf, gone: &BTreeSet<u32>) -> anyhow::Result<()> {
    forget_in::<AenKey>(ebpf, maps::AEN_EVENTS, |k| gone.contains(&k.ctrl_id))?;
    forget_in::<AnaKey>(ebpf, maps::ANA_TRANSITIONS, |k| {
        gone.contains(&k.ctrl_instance)
    })
}

fn forget_in<K: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    gone: impl Fn(&K) -> bool,
) -> anyhow::Result<()> {
    let map = ebpf
        .map_mut(name)
        .with_context(|| format!("map {name} missing"))?;
    let mut counts: BpfHashMap<_, K, u64> =
        BpfHashMap::try_from(map).with_context(|| format!("map {name}"))?;
    let keys: Vec<K> = counts
        .keys()
        .filter_map(Result::ok)
        .filter(|k| gone(k))
        .collect();
    for k in keys {
        counts.remove(&k)?;
    }
    Ok(())
}

/// The kprobe's counts as per-path tracks (transitions only: the kernel keeps no times).
fn read_ana(ebpf: &Ebpf, states: &[(u32, String)]) -> anyhow::Result<BTreeMap<PathKey, Track>> {
    let mut out: BTreeMap<PathKey, Track> = BTreeMap::new();
    for (k, n) in loader::entries::<AnaKey, u64>(ebpf, maps::ANA_TRANSITIONS)? {
        let path = format!(
            "nvme{}c{}n{}",
            k.subsys_instance, k.ctrl_instance, k.head_instance
        );
        let pair = (state_name(states, k.from), state_name(states, k.to));
        *out.entry((k.ctrl_instance, path))
            .or_default()
            .transitions
            .entry(pair)
            .or_default() += n;
    }
    Ok(out)
}

impl AenSource {
    /// With the kprobe, reads the controllers' subsystems now and waits at most `within` for it;
    /// [`Ticked::NoWorker`] while sampling (its last reading is at most 100 ms old).
    pub fn refresh(&self, within: Duration) -> Ticked {
        self.refresh.tick_within(within)
    }

    /// The kernel's counts at this moment and the poll's last reading.
    pub fn snapshot(&self) -> anyhow::Result<AenSnapshot> {
        let s = lock(&self.shared);
        let mut out = AenSnapshot {
            up: s.kernel.is_some(),
            ana_source: "sysfs_poll",
            events: BTreeMap::new(),
            ana: s.ana.snapshot(),
            controllers: s.owners.clone(),
            map_full: vec![],
        };
        let Some(Kernel { ebpf, ana_states }) = s.kernel.as_ref() else {
            return Ok(out);
        };
        let full = count_maps::read(ebpf)?;
        s.told_full
            .observe(&full, &CountMap::AEN, s.count_map_entries);
        out.map_full = count_maps::of(&full, &CountMap::AEN);
        if let Some(states) = ana_states {
            out.ana_source = "kprobe";
            out.ana = read_ana(ebpf, states)?;
        }
        for (k, n) in loader::entries::<AenKey, u64>(ebpf, maps::AEN_EVENTS)? {
            *out.events
                .entry(k.ctrl_id)
                .or_default()
                .entry(event_labels(k.result))
                .or_default() += n;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_decode_into_bounded_labels() {
        // nvmet's ANA change notice as the lab's kernels trace it: log page 0Ch, info 03h, notice.
        assert_eq!(event_labels(0x0c0302), ("notice", "ana_change"));
        assert_eq!(event_labels(0x70f002), ("notice", "discovery_log_changed"));
        assert_eq!(
            event_labels(0x040002),
            ("notice", "namespace_attribute_changed")
        );
        assert_eq!(event_labels(0x020101), ("smart", "temperature_threshold"));
        assert_eq!(
            event_labels(0x010300),
            ("error", "persistent_internal_error")
        );
        assert_eq!(
            event_labels(0x000006),
            ("io_command_set", "reservation_log_available")
        );
        assert_eq!(event_labels(0xc0ab07), ("vendor", "other"));
        assert_eq!(event_labels(0x0c7702), ("notice", "other"));
        assert_eq!(event_labels(0x000003), ("other", "other"));
        // Every result maps into a small fixed set of label pairs.
        let mut all = BTreeSet::new();
        for t in 0..8u32 {
            for info in 0..=255u32 {
                all.insert(event_labels(info << 8 | t));
            }
        }
        assert_eq!(all.len(), 6 + 3 + 8 + 3 + 1 + 1 + 4, "{all:?}");
    }

    /// The format files the lab captured from each kernel (`cargo xtask capture`).
    #[test]
    fn captured_formats_give_the_layout() {
        let kernels = crate::test_support::captured_tracepoints();
        assert!(kernels.len() >= 4, "{kernels:?}");
        for (_, dir) in kernels {
            let f = dir.join("nvme_async_event/format");
            let text =
                std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let l = layout_from_format(&text).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
            let at = |x: nvmeof_common::FieldLoc| (x.offset, x.size);
            assert_eq!(
                (at(l.ctrl_id), at(l.result)),
                ((8, 4), (12, 4)),
                "{}",
                f.display()
            );
        }
    }

    #[test]
    fn a_format_without_result_is_named() {
        let err = layout_from_format(
            "name: nvme_async_event\nformat:\n\tfield:int ctrl_id;\toffset:8;\tsize:4;\tsigned:1;\n",
        )
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("nvme:nvme_async_event") && err.contains("`result`"),
            "{err}"
        );
    }

    #[test]
    fn ana_changes_between_polls_are_counted_per_path() {
        let t = crate::test_support::Tree::new();
        t.two_paths(["live", "live"]);
        t.multipath_namespace(0, 1, 1, &[0, 1], Some(&["optimized", "optimized"]));
        let shared = Mutex::new(Shared {
            kernel: None,
            ana: PollState::default(),
            owners: BTreeMap::new(),
            count_map_entries: 0,
            told_full: FullLog::default(),
        });
        poll_once(t.root(), &shared);
        let state = t.root().join("class/nvme/nvme1/nvme0c1n1/ana_state");
        for s in ["inaccessible", "optimized", "change", "non-optimized"] {
            std::fs::write(&state, format!("{s}\n")).unwrap();
            poll_once(t.root(), &shared);
        }
        let snap = lock(&shared).ana.snapshot();
        let moved = &snap[&(1, "nvme0c1n1".to_owned())].transitions;
        let pairs: Vec<(&str, &str, u64)> = moved
            .iter()
            .map(|((f, to), n)| (f.as_str(), to.as_str(), *n))
            .collect();
        assert_eq!(
            pairs,
            [
                ("change", "non-optimized", 1),
                ("inaccessible", "optimized", 1),
                ("optimized", "change", 1),
                ("optimized", "inaccessible", 1)
            ]
        );
        assert!(snap[&(0, "nvme0c0n1".to_owned())].transitions.is_empty());
    }
}
