//! The drained model: cumulative kernel counters in, series for `/metrics` out. Pure functions of
//! the raw map contents, so every figure is testable without BPF.
//!
//! - Counters are cumulative in the kernel; the model keeps the previous raw value per key and
//!   accumulates deltas (u64 fields: a smaller value means the key was re-created, the new value is
//!   the delta; u32 bucket counts: modulo 2^32, since the agent drains far more often than a
//!   bucket can wrap).
//! - Latency is kept as the kernel's own buckets, which are Prometheus native-histogram buckets
//!   (schema 4, `nvmeof_common::latency`): never re-quantised. Per series the model keeps the
//!   cumulative count of every slot that has seen a command; the classic `le` buckets are sums of
//!   slots ([`classic_bounds_seconds`] are slot boundaries), the native buckets are the slots.
//!   Quantiles are the reader's: `histogram_quantile` over the native buckets.
//! - A raw key that disappears (its controller is gone) drops the series it fed once no other key
//!   feeds it.
//! - The model keeps every queue apart, whatever a scrape shows: the latency histograms of reads
//!   and writes are per queue (their counts and sums give commands and in-flight time per queue,
//!   so the command and in-flight counters stay per controller); the other classes stay per
//!   controller, as the kernel counts them (`nvmeof_common::SlotLayout`): admin commands and
//!   connects (one per I/O queue) would cost series for no insight, flushes and the rest are rare.
//!   Queue-state series (depth, busy) are per queue for every queue, the admin queue included.
//!   Which controllers a scrape shows per queue is the scrape's choice (`--metrics.per-queue`, or
//!   `controller=` on `/metrics`): [`IoView::ops_at`] and [`IoView::queues_at`] sum the queues of
//!   the others. A queue's series lives as long as its controller (the kernel's slots are zeroed
use std::collections::{BTreeMap, HashMap};

use nvmeof_common::{
    OpClass, OpKey, OpStats, QueueKey, QueueState, StatusKey, CONN_ERROR_KINDS, PROGRAM_COUNTERS,
};

mod buckets;
mod view;

pub use buckets::{
    bucket_deltas, classic_bounds_seconds, classic_slot, delta_u32, delta_u64, take_bucket_deltas,
    CLASSIC_EXPONENTS, CLASSIC_SLOTS,
};
pub use view::{Events, IoView, OpView, QueueSeriesKey, QueueView, RawMaps, SeriesKey};

use buckets::{add_to_bucket, Cursor};
use view::OpSeries;

/// The last raw value of one key, and where its deltas go.
struct KeyState {
    key: OpKey,
    prev: OpStats,
    /// The last drain that read it or named it unread.
    seen: u64,
    /// Index of its series in [`Model::series`].
    series: usize,
}

/// Previous raw values and accumulated series.
pub struct Model {
    /// Drains applied so far: keys and series touched by the current one carry its number, so the
    /// ones no key fed any more are found without a set per drain.
    drains: u64,
    /// Every key's last raw value, in the order keys first came (the arrays' slot order), so a
    /// drain walks them mostly in memory order; `key_index` finds one.
    keys: Vec<KeyState>,
    key_index: HashMap<OpKey, usize>,
    /// The command series, in the order they came; `series_index` finds one and gives the
    /// published order.
    series: Vec<OpSeries>,
    series_index: BTreeMap<SeriesKey, usize>,
    /// Each queue's counts at the last drain, ascending by key.
    prev_queues: Vec<(QueueKey, QueueState)>,
    prev_statuses: HashMap<StatusKey, u64>,
    prev_counters: [u64; PROGRAM_COUNTERS as usize],
    counters: [u64; PROGRAM_COUNTERS as usize],
    events: Events,
    /// Busy time accumulated per queue series, ascending by key.
    busy: Vec<(QueueSeriesKey, u64)>,
    /// Per controller: the in-flight time and the last drain that fed it.
    inflight: BTreeMap<u32, (u64, u64)>,
    statuses: BTreeMap<StatusKey, u64>,
    /// The bucket vectors of the view published before this one ([`Model::recycle`]), filled
    /// again by the next: per queue a view has thousands of series, and each drain would
    /// otherwise allocate them all afresh and free the old ones.
    spare_buckets: Vec<Vec<(u16, u64)>>,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    pub fn new() -> Self {
        Model {
            drains: 0,
            keys: Vec::new(),
            key_index: HashMap::new(),
            series: Vec::new(),
            series_index: BTreeMap::new(),
            prev_queues: Vec::new(),
            prev_statuses: HashMap::new(),
            prev_counters: [0; PROGRAM_COUNTERS as usize],
            counters: [0; PROGRAM_COUNTERS as usize],
            events: Events::default(),
            busy: Vec::new(),
            inflight: BTreeMap::new(),
            statuses: BTreeMap::new(),
            spare_buckets: Vec::new(),
        }
    }

    /// Takes back a view that is no longer published, to reuse its memory.
    pub fn recycle(&mut self, old: IoView) {
        self.spare_buckets = old.ops.into_iter().map(|o| o.buckets).collect();
    }

    /// The queue of a command series: reads and writes only (see the module documentation).
    fn op_qid(qid: u16, class: OpClass) -> Option<u16> {
        class.moves_data().then_some(qid)
    }

    /// Takes one read of the maps and returns the view to publish.
    pub fn apply(&mut self, raw: RawMaps) -> IoView {
        let (ops, unread) = (&raw.ops, &raw.ops_unread);
        self.apply_reading(&raw, |op| {
            for (k, v) in ops {
                op(k, Some(v));
            }
            for k in unread {
                op(k, None);
            }
        })
    }

    /// As [`Self::apply`], with the statistics given by `read_ops` instead of `raw.ops` and
    /// `raw.ops_unread`: it calls its argument once for every key, with the value read or `None`
    /// for unread, so the drain hands each slot over as it reads it from the mapping.
    pub fn apply_reading(
        &mut self,
        raw: &RawMaps,
        read_ops: impl FnOnce(&mut dyn FnMut(&OpKey, Option<&OpStats>)),
    ) -> IoView {
        self.apply_ops(read_ops);
        let (queues, moved) = self.apply_queues(&raw.queues);
        self.apply_statuses(&raw.statuses);
        let mut counted = [0u64; PROGRAM_COUNTERS as usize];
        for (i, &c) in raw.counters.iter().enumerate() {
            counted[i] = delta_u64(self.prev_counters[i], c);
            self.counters[i] += counted[i];
        }
        self.prev_counters = raw.counters;
        self.events.add(&moved, &counted);

        let mut io_queues: BTreeMap<u32, u32> = BTreeMap::new();
        for (k, _) in &raw.queues {
            if k.qid > 0 {
                *io_queues.entry(k.ctrl_id).or_default() += 1;
            }
        }
        IoView {
            ops: self.op_views(),
            queues,
            inflight_ns: self.inflight.iter().map(|(k, (v, _))| (*k, *v)).collect(),
            commands: self.commands_per_controller(),
            statuses: self.statuses.iter().map(|(k, v)| (*k, *v)).collect(),
            io_queues: io_queues.into_iter().collect(),
            conn_errors: {
                let mut v = raw.conn_errors.clone();
                v.sort();
                v
            },
            removed_conn_errors: [0; CONN_ERROR_KINDS],
            counters: self.counters,
            events: self.events,
        }
    }

    fn apply_ops(&mut self, read_ops: impl FnOnce(&mut dyn FnMut(&OpKey, Option<&OpStats>))) {
        self.drains += 1;
        let drain = self.drains;
        // In-flight time per controller, added up over a run of keys of one controller (the
        // arrays give a controller's slots together).
        let mut run: Option<(u32, u64)> = None;
        read_ops(&mut |k, cur| self.apply_op(k, cur, drain, &mut run));
        if let Some((ctrl_id, sum)) = run {
            self.add_inflight(ctrl_id, sum, drain);
        }
        self.inflight.retain(|_, (_, fed)| *fed == drain);
        self.drop_unseen(drain);
    }

    /// One key of one drain: its value read, or `None` when not re-read (unchanged).
    fn apply_op(
        &mut self,
        k: &OpKey,
        cur: Option<&OpStats>,
        drain: u64,
        run: &mut Option<(u32, u64)>,
    ) {
        let Some(class) = OpClass::from_repr(k.opclass) else {
            return;
        };
        let i = match (self.key_index.get(k), cur) {
            (Some(&i), _) => i,
            // A key the model has no value of has nothing to continue.
            (None, None) => return,
            // A key seen for the first time counts from zero.
            (None, Some(_)) => {
                let series = self.series_of(SeriesKey {
                    ctrl_id: k.ctrl_id,
                    qid: Self::op_qid(k.qid, class),
                    class,
                });
                self.key_index.insert(*k, self.keys.len());
                self.keys.push(KeyState {
                    key: *k,
                    prev: OpStats::default(),
                    seen: 0,
                    series,
                });
                self.keys.len() - 1
            }
        };
        let state = &mut self.keys[i];
        state.seen = drain;
        // Several keys feed one series and one controller; what no key feeds this drain goes.
        let s = &mut self.series[state.series];
        s.fed = drain;
        let latency = match cur {
            Some(cur) => {
                let prev = &mut state.prev;
                s.bytes += delta_u64(prev.bytes, cur.bytes);
                s.errors += delta_u64(prev.errors, cur.errors);
                let latency = delta_u64(prev.latency_sum_ns, cur.latency_sum_ns);
                s.latency_sum_ns += latency;
                (prev.bytes, prev.errors, prev.latency_sum_ns) =
                    (cur.bytes, cur.errors, cur.latency_sum_ns);
                let mut from = 0;
                take_bucket_deltas(&mut prev.buckets, &cur.buckets, |b, d| {
                    // The kernel keeps no command count: each completion is in exactly one
                    // bucket.
                    s.commands += d as u64;
                    add_to_bucket(&mut s.buckets, &mut from, b, d as u64);
                });
                latency
            }
            // Unread: unchanged since its last read.
            None => 0,
        };
        match run {
            Some((ctrl_id, sum)) if *ctrl_id == k.ctrl_id => *sum += latency,
            _ => {
                if let Some((ctrl_id, sum)) = run.replace((k.ctrl_id, latency)) {
                    self.add_inflight(ctrl_id, sum, drain);
                }
            }
        }
    }

    /// The index of a command series, created empty if new.
    fn series_of(&mut self, key: SeriesKey) -> usize {
        *self.series_index.entry(key).or_insert_with(|| {
            self.series.push(OpSeries {
                key,
                commands: 0,
                bytes: 0,
                errors: 0,
                latency_sum_ns: 0,
                buckets: Vec::new(),
                fed: 0,
            });
            self.series.len() - 1
        })
    }

    fn add_inflight(&mut self, ctrl_id: u32, ns: u64, drain: u64) {
        let e = self.inflight.entry(ctrl_id).or_default();
        e.0 += ns;
        e.1 = drain;
    }

    /// Forgets the keys this drain neither read nor named, and the series no key fed. Rare (a
    /// controller went), so the indexes are simply rebuilt then.
    fn drop_unseen(&mut self, drain: u64) {
        let keys_gone = self.keys.iter().any(|k| k.seen != drain);
        let series_gone = self.series.iter().any(|s| s.fed != drain);
        if !keys_gone && !series_gone {
            return;
        }
        self.keys.retain(|k| k.seen == drain);
        // Where each kept series moves to; a seen key fed its series this drain, so its series
        // is kept.
        let mut moved_to = vec![usize::MAX; self.series.len()];
        let mut n = 0;
        for (i, s) in self.series.iter().enumerate() {
            if s.fed == drain {
                moved_to[i] = n;
                n += 1;
            }
        }
        self.series.retain(|s| s.fed == drain);
        self.series_index = (self.series.iter().enumerate())
            .map(|(i, s)| (s.key, i))
            .collect();
        self.key_index.clear();
        for (i, k) in self.keys.iter_mut().enumerate() {
            self.key_index.insert(k.key, i);
            k.series = moved_to[k.series];
        }
    }

    /// The queue views, and what the queues' submitted and completed counts moved by since the
    /// last drain, all queues together.
    fn apply_queues(
        &mut self,
        raw: &[(QueueKey, QueueState)],
    ) -> (Vec<(QueueSeriesKey, QueueView)>, QueueState) {
        // Per queue: its series, depth and busy time since the last drain. The arrays give
        // queues in key order, so each previous value is found by a step, not a search.
        let mut prev = Cursor::new(&self.prev_queues);
        let mut moved = QueueState::default();
        let mut rows: Vec<(QueueSeriesKey, u64, u64)> = raw
            .iter()
            .map(|(k, cur)| {
                let key = QueueSeriesKey {
                    ctrl_id: k.ctrl_id,
                    qid: Some(k.qid),
                };
                let before = prev.find(k).unwrap_or_default();
                let busy = delta_u64(before.busy_ns, cur.busy_ns);
                moved.submitted += delta_u64(before.submitted, cur.submitted);
                moved.completed += delta_u64(before.completed, cur.completed);
                // Counters read without a lock: a completion may land between them, so clamp.
                (key, cur.depth().max(0) as u64, busy)
            })
            .collect();
        // Stable, and linear on rows already in order: the last read of a key wins below.
        let mut next_prev: Vec<(QueueKey, QueueState)> = raw.to_vec();
        next_prev.sort_by_key(|&(k, _)| k);
        next_prev.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                *kept = *later;
            }
            same
        });
        self.prev_queues = next_prev;

        rows.sort_by_key(|&(k, _, _)| k);
        let mut views: Vec<(QueueSeriesKey, QueueView)> = Vec::new();
        for (key, depth, busy) in rows {
            match views.last_mut() {
                Some((k, v)) if *k == key => {
                    v.depth += depth;
                    v.busy_ns += busy;
                }
                _ => views.push((
                    key,
                    QueueView {
                        depth,
                        busy_ns: busy,
                    },
                )),
            }
        }
        // Series that still have a queue keep their busy time; the others go.
        let mut before = Cursor::new(&self.busy);
        for (k, v) in views.iter_mut() {
            v.busy_ns += before.find(k).unwrap_or(0);
        }
        self.busy = views.iter().map(|(k, v)| (*k, v.busy_ns)).collect();
        (views, moved)
    }

    fn apply_statuses(&mut self, raw: &[(StatusKey, u64)]) {
        let mut next_prev = HashMap::with_capacity(raw.len());
        for &(k, cur) in raw {
            let prev = self.prev_statuses.get(&k).copied().unwrap_or(0);
            *self.statuses.entry(k).or_default() += delta_u64(prev, cur);
            next_prev.insert(k, cur);
        }
        self.statuses.retain(|k, _| next_prev.contains_key(k));
        self.prev_statuses = next_prev;
    }

    fn commands_per_controller(&self) -> Vec<((u32, OpClass), u64)> {
        let mut out: BTreeMap<(u32, OpClass), u64> = BTreeMap::new();
        for (k, &i) in &self.series_index {
            *out.entry((k.ctrl_id, k.class)).or_default() += self.series[i].commands;
        }
        out.into_iter().collect()
    }

    fn op_views(&mut self) -> Vec<OpView> {
        let mut spare = std::mem::take(&mut self.spare_buckets).into_iter();
        self.series_index
            .values()
            .map(|&i| {
                let s = &self.series[i];
                let mut buckets = spare.next().unwrap_or_default();
                buckets.clone_from(&s.buckets);
                OpView {
                    key: s.key,
                    commands: s.commands,
                    bytes: s.bytes,
                    errors: s.errors,
                    latency_sum_ns: s.latency_sum_ns,
                    buckets,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
