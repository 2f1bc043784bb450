//! The drain: when a scrape asks (or `drain_interval` after the last drain) the tracer's worker
//! reads the kernel maps, writes the namespaces' LBA sizes, forgets controllers that are gone,
//! runs the [`Model`] and publishes the result. Scrapes only read what was published; this runs
//! on the worker's thread, never on a scrape's.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::Context as _;
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::Ebpf;
use nvmeof_common::count_maps::CountMap;
use nvmeof_common::{
    maps, ConnErrorKey, Inflight, InflightKey, NamespaceKey, ProgramCounter, StatusKey,
    CONN_ERROR_KINDS, PROGRAM_COUNTERS,
};

use super::arrays::Arrays;
use super::host_wait::HostWaitTotals;
use super::load::{AttachMode, Loaded};
use super::model::{Model, RawMaps};
use super::namespaces::{controller_subsystems, namespace_lba_sizes};
use super::IoState;
use crate::bpf::count_maps::{self, FullLog};
use crate::bpf::loader::entries;

/// Everything the drain thread owns; the loaded object lives (and stays attached) as long as it.
pub struct Drainer {
    loaded: Loaded,
    /// `QUEUES` and `OPS`, mapped.
    arrays: Arrays,
    model: Model,
    sysfs_root: PathBuf,
    /// What the NAMESPACES map holds, so unchanged entries are not rewritten.
    namespaces: HashMap<NamespaceKey, u32>,
    /// Controller instance → NQN at the last drain: an instance number reused by a controller of
    /// another subsystem must not continue the old one's series.
    subsystems: BTreeMap<u32, String>,
    /// Connection errors of controllers whose series were dropped (gone, or their instance
    /// reused), by kind: a controller whose Connect the target refused never shows in sysfs,
    /// and its failure must not vanish with it.
    removed_conn_errors: [u64; CONN_ERROR_KINDS],
    /// Whether commands past the arrays' bounds have been reported in the log (once).
    told_out_of_range: bool,
    /// Whether slow commands the kernel could not send were logged.
    told_slow_dropped: bool,
    /// Whether an in-flight map too small for the requests taking turns has been reported.
    told_inflight_small: bool,
    /// Whether in-flight slots too few for the commands in flight have been reported.
    told_slots_crowded: bool,
    /// Which counting maps have been reported full.
    told_full: FullLog,
    /// Host wait's totals, when its program is attached.
    host_wait: Option<HostWaitTotals>,
}

/// Removes from hash map `name` the entries of `read` (what was read of it) whose controller is
/// gone; `ctrl` finds an entry's controller, in its key or its value. Best effort: what cannot
/// be removed stays.
fn remove_gone<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    read: &[(K, V)],
    gone: &HashSet<u32>,
    ctrl: impl Fn(&K, &V) -> u32,
) {
    let Some(m) = ebpf.map_mut(name) else {
        return;
    };
    let Ok(mut m) = BpfHashMap::<&mut MapData, K, V>::try_from(m) else {
        return;
    };
    for (k, v) in read {
        if gone.contains(&ctrl(k, v)) {
            let _ = m.remove(k);
        }
    }
}

impl Drainer {
    pub fn new(loaded: Loaded, sysfs_root: PathBuf) -> anyhow::Result<Self> {
        Ok(Drainer {
            arrays: Arrays::new(&loaded.ebpf, loaded.slots)?,
            loaded,
            model: Model::new(),
            sysfs_root,
            namespaces: HashMap::new(),
            subsystems: BTreeMap::new(),
            removed_conn_errors: [0; CONN_ERROR_KINDS],
            told_out_of_range: false,
            told_slow_dropped: false,
            told_inflight_small: false,
            told_slots_crowded: false,
            told_full: FullLog::default(),
            host_wait: None,
        })
    }

    /// Reads host wait at every drain (its program is attached).
    pub fn with_host_wait(mut self, on: bool) -> Self {
        self.host_wait = on.then(HostWaitTotals::default);
        self
    }

    /// `OPS` slots read at the last drain (the others had not moved).
    pub fn last_stats_reads(&self) -> usize {
        self.arrays.last_reads
    }

    /// The loaded object, for benchmarks that write the maps between drains.
    pub fn loaded_mut(&mut self) -> &mut Loaded {
        &mut self.loaded
    }

    /// Every map but `OPS`, which [`Arrays::read_ops`] reads once the gone controllers are known.
    fn read_raw(&mut self) -> anyhow::Result<RawMaps> {
        let ebpf = &self.loaded.ebpf;
        let sums = count_maps::per_cpu_sums::<{ PROGRAM_COUNTERS as usize }>(ebpf, maps::COUNTERS)?;
        let mut raw = RawMaps {
            statuses: entries::<StatusKey, u64>(ebpf, maps::STATUSES)?,
            conn_errors: entries::<ConnErrorKey, u64>(ebpf, maps::CONN_ERRORS)?,
            counters: sums,
            ..Default::default()
        };
        self.arrays.read_queues(&mut raw);
        Ok(raw)
    }

    /// Writes log2 of every namespace's LBA size and removes namespaces that are gone.
    fn refresh_namespaces(&mut self) -> anyhow::Result<()> {
        let want: HashMap<NamespaceKey, u32> = namespace_lba_sizes(&self.sysfs_root)
            .into_iter()
            .filter(|n| n.logical_block_size.is_power_of_two())
            .map(|n| {
                let key = NamespaceKey {
                    ctrl_id: n.ctrl_instance,
                    nsid: n.nsid,
                };
                (key, n.logical_block_size.trailing_zeros())
            })
            .collect();
        if want == self.namespaces {
            return Ok(());
        }
        let m = self
            .loaded
            .ebpf
            .map_mut(maps::NAMESPACES)
            .context("map NAMESPACES missing from the object")?;
        let mut m = BpfHashMap::<&mut MapData, NamespaceKey, u32>::try_from(m)?;
        for k in self.namespaces.keys().filter(|k| !want.contains_key(k)) {
            let _ = m.remove(k);
        }
        for (k, v) in &want {
            if self.namespaces.get(k) != Some(v) {
                m.insert(k, v, 0).context("writing map NAMESPACES")?;
            }
        }
        self.namespaces = want;
        Ok(())
    }

    /// Deletes the kernel's entries of controllers that no longer exist, or whose instance number
    /// now belongs to another subsystem, so their series go and their slots are free. Only when
    /// `class/nvme` is there at all: a wrong sysfs root must not wipe live data.
    /// Returns the controllers dropped.
    fn forget_gone(&mut self, raw: &mut RawMaps, live: &BTreeMap<u32, String>) -> HashSet<u32> {
        let previous = std::mem::replace(&mut self.subsystems, live.clone());
        if !self.sysfs_root.join("class/nvme").is_dir() {
            return HashSet::new();
        }
        let replaced = |c: &u32| match (previous.get(c), live.get(c)) {
            (Some(old), Some(new)) => !old.is_empty() && !new.is_empty() && old != new,
            _ => false,
        };
        // Each controller once: a busy node has thousands of keys, from a few controllers. A
        // statistics slot counts a command after its queue does, so the controllers with
        // statistics are among those with queues; the counted ones are added all the same.
        let mut seen: Vec<u32> = raw
            .queues
            .iter()
            .map(|(k, _)| k.ctrl_id)
            .chain(self.arrays.counted_controllers())
            .chain(raw.statuses.iter().map(|(k, _)| k.ctrl_id))
            .chain(raw.conn_errors.iter().map(|(k, _)| k.ctrl_id))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        let gone: HashSet<u32> = seen
            .into_iter()
            .filter(|c| !live.contains_key(c) || replaced(c))
            .collect();
        if gone.is_empty() {
            return gone;
        }
        log::info!("controllers gone or replaced, dropping their series: {gone:?}");
        let ebpf = &mut self.loaded.ebpf;
        if let Err(e) = self.arrays.forget(ebpf, &gone) {
            log::warn!("eBPF: the gone controllers' queues and statistics not zeroed: {e:#}");
        }
        remove_gone(ebpf, maps::STATUSES, &raw.statuses, &gone, |k, _| k.ctrl_id);
        remove_gone(ebpf, maps::CONN_ERRORS, &raw.conn_errors, &gone, |k, _| {
            k.ctrl_id
        });
        for (k, n) in raw
            .conn_errors
            .iter()
            .filter(|(k, _)| gone.contains(&k.ctrl_id))
        {
            if let Some(total) = self.removed_conn_errors.get_mut(k.kind as usize) {
                *total += n;
            }
        }
        if let Ok(inflight) = entries::<InflightKey, Inflight>(ebpf, maps::INFLIGHT) {
            remove_gone(ebpf, maps::INFLIGHT, &inflight, &gone, |k, _| k.ctrl_id);
        }
        if let Ok(inflight) = entries::<u64, Inflight>(ebpf, maps::INFLIGHT_RQ) {
            remove_gone(ebpf, maps::INFLIGHT_RQ, &inflight, &gone, |_, v| v.ctrl_id);
        }
        raw.queues.retain(|(k, _)| !gone.contains(&k.ctrl_id));
        raw.statuses.retain(|(k, _)| !gone.contains(&k.ctrl_id));
        raw.conn_errors.retain(|(k, _)| !gone.contains(&k.ctrl_id));
        gone
    }

    /// One drain: maps → model → the new state's parts.
    pub fn drain_once(&mut self, state: &RwLock<IoState>) -> anyhow::Result<()> {
        let started = Instant::now();
        // Only the classic programs read a command's bytes from its block count and the
        // namespace's LBA size; the others take them from the request, and the scan of every
        // namespace each second would be the drain's largest cost on a small node.
        if self.loaded.mode == AttachMode::Tracepoint {
            if let Err(e) = self.refresh_namespaces() {
                log::warn!("eBPF: LBA sizes not updated: {e:#}");
            }
        }
        // Maps first, sysfs after: a controller whose keys were read existed before the read.
        // `OPS` last, for the controllers whose queues moved at the read of `QUEUES` (a command
        // counts on its queue before its statistics) and that are not gone.
        let mut raw = self.read_raw()?;
        let subsystems = controller_subsystems(&self.sysfs_root);
        let gone = self.forget_gone(&mut raw, &subsystems);
        let arrays = &mut self.arrays;
        let mut view = self
            .model
            .apply_reading(&raw, |op| arrays.read_ops(&gone, op));
        let untimed = view.counters[ProgramCounter::SlotOutOfRange as usize];
        if untimed > 0 && !self.told_out_of_range {
            let s = self.loaded.slots;
            log::warn!(
                "eBPF: {untimed} commands of controllers or queues past the arrays' bounds \
                 (instances below {}, queue ids below {}) were not timed; raise \
                 --ebpf.max-controllers or --ebpf.max-queues (counted as \
                 nvmeof_exporter_ebpf_events_total{{event=\"slot_out_of_range\"}})",
                s.controllers,
                s.queues
            );
            self.told_out_of_range = true;
        }
        let new_keys = view.counters[ProgramCounter::InflightNewKey as usize];
        if !self.told_inflight_small && inflight_map_too_small(new_keys) {
            log::warn!(
                "eBPF: {new_keys} commands whose in-flight slot was taken found no entry for their \
                 key in the LRU map beside it, more than its {} entries: the entries touched \
                 least recently are evicted and those commands' completions go untimed \
                 (completion_unmatched); raise --ebpf.max-inflight, which sizes the slots \
                 (counted as nvmeof_exporter_ebpf_events_total{{event=\"inflight_new_key\"}})",
                nvmeof_common::INFLIGHT_CAPACITY
            );
            self.told_inflight_small = true;
        }
        let collisions = view.counters[ProgramCounter::InflightCollision as usize];
        if !self.told_slots_crowded && inflight_slots_crowded(collisions, view.events.setups) {
            log::warn!(
                "eBPF: {collisions} of {} commands found their in-flight slot held by another \
                 command in flight and cost a hash lookup at setup and completion: the {} slots \
                 are few for the commands in flight; raise --ebpf.max-inflight (counted as \
                 nvmeof_exporter_ebpf_events_total{{event=\"inflight_collision\"}})",
                view.events.setups,
                self.loaded.slots.inflight_slots()
            );
            self.told_slots_crowded = true;
        }
        let limited = view.counters[ProgramCounter::SlowRateLimited as usize];
        let ring_full = view.counters[ProgramCounter::SlowRingFull as usize];
        if limited + ring_full > 0 && !self.told_slow_dropped {
            log::warn!(
                "eBPF: {limited} slow commands over their CPU's share of the second and \
                 {ring_full} that found the ring full were not listed at /debug/slow; raise \
                 --trace.slow-per-cpu or --trace.slower-than (counted as \
                 nvmeof_exporter_ebpf_events_total{{event=~\"slow_rate_limited|slow_ring_full\"}})"
            );
            self.told_slow_dropped = true;
        }
        let full = count_maps::read(&self.loaded.ebpf)?;
        let host_wait = match &mut self.host_wait {
            Some(totals) => {
                totals.read(&self.loaded.ebpf, &subsystems)?;
                totals
                    .views()
                    .into_iter()
                    .filter(|v| subsystems.contains_key(&v.key.ctrl_id))
                    .collect()
            }
            None => Vec::new(),
        };
        self.told_full
            .observe(&full, &CountMap::IO, self.loaded.count_map_entries);
        view.removed_conn_errors = self.removed_conn_errors;
        let programs = self.loaded.program_runs();
        let took = started.elapsed();
        let mut s = state.write().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut s.view, view);
        s.subsystems = subsystems;
        s.programs = programs;
        s.drain_seconds = Some(took.as_secs_f64());
        s.map_full = count_maps::of(&full, &CountMap::IO);
        s.host_wait = host_wait;
        drop(s);
        self.model.recycle(old);
        Ok(())
    }
}

/// Whether the in-flight LRU map holds fewer entries than the keys that take turns in it: each
/// key whose slot was taken finds no entry once (its first time there), so more such commands
/// than entries means entries were evicted and made again.
fn inflight_map_too_small(new_keys: u64) -> bool {
    new_keys > u64::from(nvmeof_common::INFLIGHT_CAPACITY)
}

/// Whether more than 1 % of the commands (and at least 100) found their in-flight slot taken:
/// each of those costs two hash lookups, what the slots are there to save.
fn inflight_slots_crowded(collisions: u64, setups: u64) -> bool {
    collisions >= 100 && collisions.saturating_mul(100) > setups
}

/// The drain as the tracer's worker runs it: one drain per tick into `state`, a failure logged
/// once until it changes. The drainer (and so the loaded object) lives as long as the closure.
pub fn ticks(mut drainer: Drainer, state: Arc<RwLock<IoState>>) -> impl FnMut() + Send {
    let mut last_error = String::new();
    move || match drainer.drain_once(&state) {
        Ok(()) => last_error.clear(),
        Err(e) => {
            let msg = format!("{e:#}");
            if msg != last_error {
                log::warn!("eBPF drain failed: {msg}");
                last_error = msg;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::io::load::{self, MapSizes};
    use crate::bpf::io::namespaces::tests::fake_sysfs;
    use crate::bpf::loader;
    use crate::bpf::EBPF_OBJECT;
    use aya::maps::Array;
    use nvmeof_common::{latency_bucket, OpClass, OpStats, QueueState};

    /// Each request struct finds no entry once: as many first commands as entries fit; more
    /// mean evictions. No size known (classic mode), nothing to say.
    #[test]
    fn an_inflight_map_is_too_small_once_more_requests_take_turns_than_it_holds() {
        assert!(!inflight_map_too_small(16384));
        assert!(inflight_map_too_small(16385));
    }

    #[test]
    fn inflight_slots_are_crowded_past_one_command_in_a_hundred() {
        assert!(!inflight_slots_crowded(99, 100));
        assert!(!inflight_slots_crowded(100, 10_000));
        assert!(inflight_slots_crowded(101, 10_000));
        assert!(inflight_slots_crowded(u64::MAX, 1_000_000));
    }

    /// The real object's maps, loaded but not attached (no nvme tracepoints needed): the agent
    /// writes what the programs would have, and the drain must read it back with the same types.
    /// Skipped where BPF cannot be loaded (no permission, or a build without the object).
    #[test]
    fn drains_the_real_maps() {
        let mut ebpf = match load::open(EBPF_OBJECT, &load::Layouts::default(), MapSizes::default())
        {
            Ok(e) => e,
            Err(e) => {
                eprintln!("skipped: {}", loader::explain(&e));
                return;
            }
        };
        let slots = MapSizes::default().slots();
        let read_slot = slots.stats_slot(0, 1, OpClass::Read);
        let gone_slot = slots.stats_slot(5, 1, OpClass::Write);
        {
            let mut ops =
                Array::<&mut MapData, OpStats>::try_from(ebpf.map_mut(maps::OPS).unwrap()).unwrap();
            let mut s = OpStats {
                bytes: 3 * 4096,
                latency_sum_ns: 300_000,
                ..Default::default()
            };
            s.buckets[latency_bucket(100_000)] = 3;
            ops.set(read_slot, s, 0).unwrap();
            // Controller 5 has no sysfs directory: gone.
            ops.set(gone_slot, s, 0).unwrap();
            let mut queues =
                Array::<&mut MapData, QueueState>::try_from(ebpf.map_mut(maps::QUEUES).unwrap())
                    .unwrap();
            let q = QueueState {
                submitted: 5,
                completed: 3,
                busy_ns: 2_000,
                last_event_ns: 1,
                ..Default::default()
            };
            for ctrl_id in [0, 5] {
                queues
                    .set(slots.queue_slot(ctrl_id, 1).unwrap(), q, 0)
                    .unwrap();
            }
            // Request-keyed in-flight entries of a live and of a gone controller.
            let mut rq = BpfHashMap::<&mut MapData, u64, Inflight>::try_from(
                ebpf.map_mut(maps::INFLIGHT_RQ).unwrap(),
            )
            .unwrap();
            for (req, ctrl_id) in [(0xffff_8880_0000_1000u64, 0), (0xffff_8880_0000_2000, 5)] {
                let v = Inflight {
                    ctrl_id,
                    qid: 1,
                    ..Default::default()
                };
                rq.insert(req, v, 0).unwrap();
            }
        }
        let sysfs = fake_sysfs(&[(0, "nqn.test", &[("nvme0n1", 1, 4096)])]);
        let loaded = Loaded::detached(ebpf, load::AttachMode::RawTracepoint, MapSizes::default());
        let mut d = Drainer::new(loaded, sysfs.path().to_owned()).unwrap();
        let state = RwLock::new(IoState::default());
        d.drain_once(&state).unwrap();
        let left: Vec<u64> = entries::<u64, Inflight>(&d.loaded.ebpf, maps::INFLIGHT_RQ)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            left,
            vec![0xffff_8880_0000_1000],
            "gone controller's entry kept"
        );

        let s = state.read().unwrap();
        assert_eq!(s.view.ops.len(), 1, "{:?}", s.view.ops);
        let o = &s.view.ops[0];
        assert_eq!(
            (o.key.ctrl_id, o.key.class, o.commands, o.bytes),
            (0, OpClass::Read, 3, 12288)
        );
        assert_eq!(o.buckets, vec![(latency_bucket(100_000) as u16, 3)]);
        assert_eq!(s.view.queues[0].1.depth, 2);
        assert_eq!(s.view.io_queues, vec![(0, 1)]);
        assert_eq!(s.subsystems.get(&0).map(String::as_str), Some("nqn.test"));
        assert!(s.drain_seconds.is_some());
        drop(s);

        // The gone controller's slots were zeroed.
        let ebpf = &d.loaded.ebpf;
        let ops = Array::<&MapData, OpStats>::try_from(ebpf.map(maps::OPS).unwrap()).unwrap();
        assert_eq!(ops.get(&gone_slot, 0).unwrap(), OpStats::default());
        assert_ne!(ops.get(&read_slot, 0).unwrap(), OpStats::default());
        let queues =
            Array::<&MapData, QueueState>::try_from(ebpf.map(maps::QUEUES).unwrap()).unwrap();
        assert_eq!(
            queues.get(&slots.queue_slot(5, 1).unwrap(), 0).unwrap(),
            QueueState::default()
        );
        // The raw programs take a command's bytes from its request: no namespace scan.
        let ns: Vec<(NamespaceKey, u32)> = entries(ebpf, maps::NAMESPACES).unwrap();
        assert_eq!(ns, vec![]);
        // The classic ones need the LBA sizes: the drain writes them.
        d.loaded.mode = load::AttachMode::Tracepoint;
        d.drain_once(&state).unwrap();
        let ns: Vec<(NamespaceKey, u32)> = entries(&d.loaded.ebpf, maps::NAMESPACES).unwrap();
        assert_eq!(
            ns,
            vec![(
                NamespaceKey {
                    ctrl_id: 0,
                    nsid: 1
                },
                12
            )]
        );
        let counters: aya::maps::PerCpuArray<&MapData, u64> =
            aya::maps::PerCpuArray::try_from(d.loaded.ebpf.map(maps::COUNTERS).unwrap()).unwrap();
        assert_eq!(counters.len(), PROGRAM_COUNTERS);

        // nvme0 now belongs to another subsystem: the old series must not continue under it.
        std::fs::write(
            sysfs.path().join("class/nvme/nvme0/subsysnqn"),
            "nqn.other\n",
        )
        .unwrap();
        d.drain_once(&state).unwrap();
        assert!(state.read().unwrap().view.ops.is_empty());
        let ops =
            Array::<&MapData, OpStats>::try_from(d.loaded.ebpf.map(maps::OPS).unwrap()).unwrap();
        assert_eq!(ops.get(&read_slot, 0).unwrap(), OpStats::default());
    }
}
