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
//!   only when the controller goes), so a sum over queues is the per-controller count since start.
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use nvmeof_common::latency::{slot_native_index, OVERFLOW_SLOT};
use nvmeof_common::{
    ConnErrorKey, OpClass, OpKey, OpStats, ProgramCounter, QueueKey, QueueState, StatusKey,
    CONN_ERROR_KINDS, LATENCY_BUCKETS, PROGRAM_COUNTERS,
};

/// The powers of two of a second that bound the classic buckets (plus `+Inf`): 2^-17 s
/// (7.6 µs, below any fabric's round trip) to 2^5 s (32 s, past nvme_core's default I/O
/// timeout). Each is a native bucket boundary (index 16·e), so a classic bucket is an exact sum
/// of kernel buckets.
pub const CLASSIC_EXPONENTS: std::ops::RangeInclusive<i32> = -17..=5;
/// Classic buckets including `+Inf`.
pub const CLASSIC_SLOTS: usize = 24;

/// The classic upper bounds in seconds, ascending (without `+Inf`).
pub fn classic_bounds_seconds() -> impl Iterator<Item = f64> {
    CLASSIC_EXPONENTS.map(|e| nvmeof_common::latency::native_upper_seconds(16 * e))
}

/// Delta of a cumulative u64 counter; a smaller value means the counter restarted from zero.
pub fn delta_u64(prev: u64, cur: u64) -> u64 {
    if cur >= prev {
        cur - prev
    } else {
        cur
    }
}

/// Delta of a u32 bucket count, modulo 2^32.
pub fn delta_u32(prev: u32, cur: u32) -> u32 {
    cur.wrapping_sub(prev)
}

/// The classic bucket (index into [`classic_bounds_seconds`], or the last slot for `+Inf`) of a
/// kernel bucket: the first bound at or above all of it.
pub fn classic_slot(bucket: usize) -> usize {
    match slot_native_index(bucket) {
        // Native bucket i is at or under 2^e s exactly when i ≤ 16·e.
        Some(i) => CLASSIC_EXPONENTS
            .clone()
            .position(|e| i <= 16 * e)
            .unwrap_or(CLASSIC_SLOTS - 1),
        None if bucket == OVERFLOW_SLOT => CLASSIC_SLOTS - 1,
        None => 0,
    }
}

/// Calls `f(bucket, delta)` for every bucket whose count moved from `prev` to `cur`, ascending
/// by bucket, and leaves `prev` equal to `cur`. Compares 8 buckets (32 bytes) at a time and
/// touches only the chunks that moved: a drain interval of I/O moves a few dozen of the 450.
#[inline]
pub fn take_bucket_deltas(
    prev: &mut [u32; LATENCY_BUCKETS],
    cur: &[u32; LATENCY_BUCKETS],
    mut f: impl FnMut(u16, u32),
) {
    const CHUNK: usize = 8;
    let (p_chunks, p_rest) = prev.as_chunks_mut::<CHUNK>();
    let (c_chunks, c_rest) = cur.as_chunks::<CHUNK>();
    for (n, (p, c)) in p_chunks.iter_mut().zip(c_chunks).enumerate() {
        if p == c {
            continue;
        }
        for i in 0..CHUNK {
            let d = delta_u32(p[i], c[i]);
            if d != 0 {
                f((n * CHUNK + i) as u16, d);
            }
        }
        *p = *c;
    }
    let base = p_chunks.len() * CHUNK;
    for (i, (p, &c)) in p_rest.iter_mut().zip(c_rest).enumerate() {
        let d = delta_u32(*p, c);
        if d != 0 {
            f((base + i) as u16, d);
        }
        *p = c;
    }
}

/// Non-zero bucket deltas between two raw histograms, ascending by bucket.
pub fn bucket_deltas(
    prev: Option<&[u32; LATENCY_BUCKETS]>,
    cur: &[u32; LATENCY_BUCKETS],
) -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    let mut prev = prev.copied().unwrap_or([0; LATENCY_BUCKETS]);
    take_bucket_deltas(&mut prev, cur, |b, d| out.push((b, d as u64)));
    out
}

/// Adds `delta` to `bucket` of a series' buckets (ascending by bucket, zero counts left out),
/// searching from `*from` on: deltas come ascending, so each search starts where the last ended.
#[inline]
fn add_to_bucket(buckets: &mut Vec<(u16, u64)>, from: &mut usize, bucket: u16, delta: u64) {
    // Linear: a drain's deltas are a few buckets apart, closer than a binary search converges.
    let mut at = *from;
    while buckets.get(at).is_some_and(|&(b, _)| b < bucket) {
        at += 1;
    }
    match buckets.get_mut(at) {
        Some((b, c)) if *b == bucket => *c += delta,
        _ => buckets.insert(at, (bucket, delta)),
    }
    *from = at;
}

/// Looks values up in a list ascending by key, for keys that mostly come in the same order:
/// each is tried at the place after the last one found before a binary search.
struct Cursor<'a, K, V> {
    list: &'a [(K, V)],
    next: usize,
}

impl<'a, K: Ord, V: Copy> Cursor<'a, K, V> {
    fn new(list: &'a [(K, V)]) -> Self {
        Cursor { list, next: 0 }
    }

    fn find(&mut self, key: &K) -> Option<V> {
        let at = match self.list.get(self.next) {
            Some((k, _)) if k == key => self.next,
            _ => self.list.binary_search_by(|(k, _)| k.cmp(key)).ok()?,
        };
        self.next = at + 1;
        Some(self.list[at].1)
    }
}

/// One read of the kernel maps.
#[derive(Clone, Debug, Default)]
pub struct RawMaps {
    /// The statistics of the keys read this drain, cumulative. (The drain does not collect
    /// them: it hands each over as it reads it, [`Model::apply_reading`].)
    pub ops: Vec<(OpKey, OpStats)>,
    /// Keys that hold counts but were not re-read because their queue did not move: unchanged
    /// since the model's last value of them. Together with `ops`, every key that exists.
    pub ops_unread: Vec<OpKey>,
    pub queues: Vec<(QueueKey, QueueState)>,
    pub statuses: Vec<(StatusKey, u64)>,
    /// `CONN_ERRORS`: cumulative since load, kept by the kernel until the controller goes.
    pub conn_errors: Vec<(ConnErrorKey, u64)>,
    /// `COUNTERS`, summed over CPUs.
    pub counters: [u64; PROGRAM_COUNTERS as usize],
}

/// A latency/throughput series: a controller (reads and writes: one of its queues) and a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub ctrl_id: u32,
    pub qid: Option<u16>,
    pub class: OpClass,
}

/// A queue-state series: one queue of a controller (`qid: None` once summed per controller).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueSeriesKey {
    pub ctrl_id: u32,
    pub qid: Option<u16>,
}

#[derive(Clone, Debug)]
struct OpSeries {
    key: SeriesKey,
    commands: u64,
    bytes: u64,
    errors: u64,
    latency_sum_ns: u64,
    /// Observations per kernel bucket (slot) since start, ascending by slot, for the slots that
    /// saw any: the shape [`OpView::buckets`] publishes.
    buckets: Vec<(u16, u64)>,
    /// The last drain that fed this series ([`Model::drains`]).
    fed: u64,
}

/// What the `io` collector shows for one [`SeriesKey`].
#[derive(Clone, Debug, PartialEq)]
pub struct OpView {
    pub key: SeriesKey,
    pub commands: u64,
    pub bytes: u64,
    pub errors: u64,
    pub latency_sum_ns: u64,
    /// Observations per kernel bucket since start, ascending by slot, zero counts left out:
    /// the native histogram's buckets as they are.
    pub buckets: Vec<(u16, u64)>,
}

impl OpView {
    /// Cumulative counts at each classic bound ([`classic_bounds_seconds`]); the last slot is
    /// `+Inf`, the histogram's count.
    pub fn classic_cumulative(&self) -> [u64; CLASSIC_SLOTS] {
        let mut out = [0; CLASSIC_SLOTS];
        for &(b, c) in &self.buckets {
            out[classic_slot(b as usize)] += c;
        }
        for i in 1..CLASSIC_SLOTS {
            out[i] += out[i - 1];
        }
        out
    }

    /// The native histogram: the zero bucket's count and the (index, count) of every native
    /// bucket that saw a command, ascending. The overflow slot (over 256 s) is given the index
    /// after the last kernel bucket, (256 s, 271 s]: a quantile read there means "over 256 s".
    pub fn native_buckets(&self) -> (u64, Vec<(i32, u64)>) {
        let mut zero = 0;
        let mut positive = Vec::with_capacity(self.buckets.len());
        for &(b, c) in &self.buckets {
            match slot_native_index(b as usize) {
                Some(i) => positive.push((i, c)),
                None if b as usize == OVERFLOW_SLOT => {
                    positive.push((nvmeof_common::latency::NATIVE_INDEX_MAX + 1, c))
                }
                None => zero += c,
            }
        }
        (zero, positive)
    }
}

/// What the `io` collector shows for one [`QueueSeriesKey`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueView {
    pub depth: u64,
    pub busy_ns: u64,
}

/// The model's output after a drain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IoView {
    pub ops: Vec<OpView>,
    pub queues: Vec<(QueueSeriesKey, QueueView)>,
    /// Sum of latencies of all classes per controller: the integral of the in-flight count.
    pub inflight_ns: Vec<(u32, u64)>,
    /// Completed commands per controller and class. With per-queue series the split by queue is
    /// in each queue's latency histogram (its count), so these stay per controller.
    pub commands: Vec<((u32, OpClass), u64)>,
    pub statuses: Vec<(StatusKey, u64)>,
    /// Connection errors per controller and kind, as the kernel counted them (sorted).
    pub conn_errors: Vec<(ConnErrorKey, u64)>,
    /// Connection errors of controllers no longer present, by kind (the drain folds them in
    /// when it drops their series).
    pub removed_conn_errors: [u64; CONN_ERROR_KINDS],
    /// I/O queues (qid > 0) per controller that have carried a command.
    pub io_queues: Vec<(u32, u32)>,
    pub counters: [u64; PROGRAM_COUNTERS as usize],
    pub events: Events,
}

impl IoView {
    /// The command series as a scrape shows them: those of the controllers for which
    /// `per_queue` says so as the model keeps them (reads and writes per queue), each other
    /// controller's reads and writes summed over its queues (one series per class, `qid: None`),
    /// ascending by key as [`IoView::ops`].
    pub fn ops_at(&self, per_queue: impl Fn(u32) -> bool) -> Vec<Cow<'_, OpView>> {
        let mut out: Vec<Cow<'_, OpView>> = Vec::with_capacity(self.ops.len());
        // Per (controller, class): the sums, with dense buckets (450 slots: a few KB for a few
        // series, and every queue's buckets are added without a search).
        let mut summed: BTreeMap<(u32, OpClass), (OpView, Vec<u64>)> = BTreeMap::new();
        for o in &self.ops {
            if o.key.qid.is_none() || per_queue(o.key.ctrl_id) {
                out.push(Cow::Borrowed(o));
                continue;
            }
            let (sum, dense) = summed
                .entry((o.key.ctrl_id, o.key.class))
                .or_insert_with(|| {
                    // The controller's series: this queue's key without the queue, from zero.
                    let mut zero = o.clone();
                    zero.key.qid = None;
                    (zero.commands, zero.bytes, zero.errors) = (0, 0, 0);
                    zero.latency_sum_ns = 0;
                    zero.buckets.clear();
                    (zero, vec![0; LATENCY_BUCKETS])
                });
            sum.commands += o.commands;
            sum.bytes += o.bytes;
            sum.errors += o.errors;
            sum.latency_sum_ns += o.latency_sum_ns;
            for &(b, c) in &o.buckets {
                dense[b as usize] += c;
            }
        }
        if summed.is_empty() {
            return out;
        }
        for (_, (mut sum, dense)) in summed {
            sum.buckets = (dense.iter().enumerate())
                .filter(|(_, &c)| c > 0)
                .map(|(b, &c)| (b as u16, c))
                .collect();
            out.push(Cow::Owned(sum));
        }
        out.sort_by_key(|o| o.key);
        out
    }

    /// The queue-state series as a scrape shows them: per queue for the controllers for which
    /// `per_queue` says so, summed per controller (`qid: None`) for the others, ascending by key.
    pub fn queues_at(&self, per_queue: impl Fn(u32) -> bool) -> Vec<(QueueSeriesKey, QueueView)> {
        let mut out: Vec<(QueueSeriesKey, QueueView)> = Vec::with_capacity(self.queues.len());
        // The view is ascending by (controller, queue): a controller's queues come together.
        for (k, q) in &self.queues {
            if k.qid.is_none() || per_queue(k.ctrl_id) {
                out.push((*k, q.clone()));
                continue;
            }
            let key = QueueSeriesKey {
                ctrl_id: k.ctrl_id,
                qid: None,
            };
            match out.last_mut() {
                Some((last, sum)) if *last == key => {
                    sum.depth += q.depth;
                    sum.busy_ns += q.busy_ns;
                }
                _ => out.push((key, q.clone())),
            }
        }
        out
    }
}

/// The setups and completions the programs saw, cumulative. The programs do not count them (a
/// per-command cost): every setup ends in exactly one of a submitted count on its queue, a
/// `slot_out_of_range` or an `inflight_full` event, and every completion in a completed count or
/// an `completion_unmatched` event, except that a setup which replaced a lost command also counts
/// that command as completed (`InflightReplaced`). Setups and completions whose kernel reads
/// failed count only as `read_failed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    pub setups: u64,
    pub completions: u64,
}

impl Events {
    /// Adds one drain's moves: the queues' counts and the program counters' deltas.
    fn add(&mut self, queues: &QueueState, counted: &[u64; PROGRAM_COUNTERS as usize]) {
        let c = |p: ProgramCounter| counted[p as usize];
        self.setups +=
            queues.submitted + c(ProgramCounter::SlotOutOfRange) + c(ProgramCounter::InflightFull);
        self.completions += queues
            .completed
            .saturating_sub(c(ProgramCounter::InflightReplaced))
            + c(ProgramCounter::CompletionUnmatched);
    }
}

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
        let Some(class) = OpClass::from_u8(k.opclass) else {
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
                // Two counters read without a lock: a completion may land between them, so clamp.
                (key, cur.submitted.saturating_sub(cur.completed), busy)
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
mod tests {
    use super::*;
    use nvmeof_common::latency_bucket;

    fn op_key(ctrl_id: u32, qid: u16, class: OpClass) -> OpKey {
        OpKey {
            ctrl_id,
            qid,
            opclass: class as u8,
            _pad: 0,
        }
    }

    /// Raw stats holding the given latencies (ns), each moving `bytes`.
    fn stats(latencies: &[u64], bytes: u64) -> OpStats {
        let mut s = OpStats::default();
        for &l in latencies {
            s.bytes += bytes;
            s.latency_sum_ns += l;
            s.buckets[latency_bucket(l)] += 1;
        }
        s
    }

    #[test]
    fn deltas_wrap_and_reset() {
        assert_eq!(delta_u64(10, 15), 5);
        assert_eq!(delta_u64(10, 3), 3);
        assert_eq!(delta_u32(u32::MAX - 1, 3), 5);
        assert_eq!(delta_u32(7, 7), 0);
    }

    #[test]
    fn bucket_deltas_are_sparse_and_wrap() {
        let mut prev = [0u32; LATENCY_BUCKETS];
        let mut cur = [0u32; LATENCY_BUCKETS];
        prev[5] = u32::MAX;
        cur[5] = 1;
        cur[9] = 4;
        assert_eq!(bucket_deltas(Some(&prev), &cur), vec![(5, 2), (9, 4)]);
        assert_eq!(bucket_deltas(None, &cur), vec![(5, 1), (9, 4)]);
    }

    #[test]
    fn classic_slots_are_powers_of_two_of_a_second() {
        let bounds: Vec<f64> = classic_bounds_seconds().collect();
        assert_eq!(bounds.len() + 1, CLASSIC_SLOTS);
        assert_eq!(bounds[0], 1.0 / 131072.0);
        assert_eq!(bounds[17], 1.0);
        assert_eq!(bounds[22], 32.0);
        // 2^-17 s is 7629.39 ns: 7629 ns is at or under it, 7630 ns is not.
        assert_eq!(classic_slot(latency_bucket(7_629)), 0);
        assert_eq!(classic_slot(latency_bucket(7_630)), 1);
        // 100 µs ≤ 2^-13 s (122 µs); 200 µs ≤ 2^-12 s (244 µs); 1 ms ≤ 2^-9 s (1.95 ms).
        assert_eq!(classic_slot(latency_bucket(100_000)), 4);
        assert_eq!(classic_slot(latency_bucket(200_000)), 5);
        assert_eq!(classic_slot(latency_bucket(1_000_000)), 8);
        // 1 s is a bound and closes its bucket; 32 s too; past it only +Inf.
        assert_eq!(classic_slot(latency_bucket(1_000_000_000)), 17);
        assert_eq!(classic_slot(latency_bucket(1_000_000_001)), 18);
        assert_eq!(classic_slot(latency_bucket(32_000_000_000)), 22);
        assert_eq!(classic_slot(latency_bucket(32_000_000_001)), 23);
        assert_eq!(classic_slot(OVERFLOW_SLOT), CLASSIC_SLOTS - 1);
        assert_eq!(classic_slot(0), 0);
    }

    #[test]
    fn native_buckets_are_the_kernel_slots() {
        let mut s = stats(&[500, 100_000, 100_000, 1_000_000_000, 300_000_000_000], 0);
        s.buckets[latency_bucket(2_000)] += 2;
        let mut m = Model::new();
        let v = m.apply(RawMaps {
            ops: vec![(op_key(0, 1, OpClass::Read), s)],
            ..Default::default()
        });
        let (zero, positive) = v.ops[0].native_buckets();
        assert_eq!(zero, 1);
        // ceil(16·log2(t / 1 s)): 2 µs → -302, 100 µs → -212, 1 s → 0, over 256 s → 129.
        assert_eq!(positive, vec![(-302, 2), (-212, 2), (0, 1), (129, 1)]);
        let classic = v.ops[0].classic_cumulative();
        assert_eq!((classic[0], classic[4], classic[17]), (3, 5, 6));
        assert_eq!((classic[22], classic[23]), (6, 7));
    }

    /// The model keeps each queue; a scrape that shows a controller per controller gets its
    /// queues summed, every figure and bucket an exact sum.
    #[test]
    fn queues_sum_per_controller_and_take_deltas() {
        let mut m = Model::new();
        let k1 = op_key(0, 1, OpClass::Read);
        let k2 = op_key(0, 2, OpClass::Read);
        let raw = RawMaps {
            ops: vec![
                (k1, stats(&[100_000; 3], 4096)),
                (k2, stats(&[200_000], 4096)),
            ],
            ..Default::default()
        };
        let v = m.apply(raw);
        let per_queue: Vec<(Option<u16>, u64)> =
            v.ops.iter().map(|o| (o.key.qid, o.commands)).collect();
        assert_eq!(per_queue, vec![(Some(1), 3), (Some(2), 1)]);
        assert_eq!(v.ops_at(|_| true).len(), 2);
        let summed = v.ops_at(|_| false);
        assert_eq!(summed.len(), 1);
        let o = &summed[0];
        assert_eq!(
            o.key,
            SeriesKey {
                ctrl_id: 0,
                qid: None,
                class: OpClass::Read
            }
        );
        assert_eq!((o.commands, o.bytes, o.latency_sum_ns), (4, 16384, 500_000));
        // 100 µs is under 2^-13 s (slot 4), 200 µs under 2^-12 s (slot 5).
        let classic = o.classic_cumulative();
        assert_eq!(&classic[3..7], &[0, 3, 4, 4]);
        assert_eq!(classic[CLASSIC_SLOTS - 1], 4);

        // Second drain: queue 1 gets 2 more commands at 1 ms.
        let mut s1 = stats(&[100_000; 3], 4096);
        let more = stats(&[1_000_000; 2], 4096);
        s1.bytes += more.bytes;
        s1.latency_sum_ns += more.latency_sum_ns;
        s1.buckets[latency_bucket(1_000_000)] += 2;
        let v = m.apply(RawMaps {
            ops: vec![(k1, s1), (k2, stats(&[200_000], 4096))],
            ..Default::default()
        });
        let summed = v.ops_at(|_| false);
        let o = &summed[0];
        assert_eq!(
            (o.commands, o.bytes, o.latency_sum_ns),
            (6, 24576, 2_500_000)
        );
        assert_eq!(o.classic_cumulative()[CLASSIC_SLOTS - 1], 6);
        // Every kernel bucket's count since start, the queues added up.
        let b = |ns| latency_bucket(ns) as u16;
        let since_start = vec![(b(100_000), 3), (b(200_000), 1), (b(1_000_000), 2)];
        assert_eq!(o.buckets, since_start);

        // Third drain, nothing new: nothing moves.
        let v = m.apply(RawMaps {
            ops: vec![(k1, s1), (k2, stats(&[200_000], 4096))],
            ..Default::default()
        });
        let summed = v.ops_at(|_| false);
        assert_eq!(summed[0].buckets, since_start);
        assert_eq!(summed[0].commands, 6);

        // The controller goes away: its series go too.
        let v = m.apply(RawMaps::default());
        assert!(v.ops.is_empty());
    }

    /// One controller per queue, the other summed: the series come ascending by key, the sums
    /// among the per-controller classes of their controller.
    #[test]
    fn a_scrape_chooses_the_controllers_it_shows_per_queue() {
        let mut m = Model::new();
        // (controller, queue, class, commands of 100 µs, bytes each)
        let ops = [
            (1, 0, OpClass::Flush, 1, 0),
            (1, 1, OpClass::Read, 1, 512),
            (1, 1, OpClass::Write, 1, 4096),
            (1, 2, OpClass::Read, 2, 512),
            (3, 0, OpClass::Admin, 1, 0),
            (3, 1, OpClass::Read, 1, 512),
            (3, 2, OpClass::Read, 1, 512),
        ];
        let v = m.apply(RawMaps {
            ops: (ops.iter())
                .map(|&(c, q, class, n, bytes)| {
                    (op_key(c, q, class), stats(&vec![100_000; n], bytes))
                })
                .collect(),
            queues: [(1, 1), (1, 2), (3, 0), (3, 1), (3, 2)]
                .map(|(ctrl_id, qid)| {
                    let state = QueueState {
                        submitted: 5,
                        completed: 4,
                        busy_ns: 100 * u64::from(qid + 1),
                        last_event_ns: 0,
                    };
                    (
                        QueueKey {
                            ctrl_id,
                            qid,
                            _pad: 0,
                        },
                        state,
                    )
                })
                .to_vec(),
            ..Default::default()
        });
        let ops: Vec<(u32, Option<u16>, OpClass, u64, u64)> = v
            .ops_at(|c| c == 3)
            .iter()
            .map(|o| (o.key.ctrl_id, o.key.qid, o.key.class, o.commands, o.bytes))
            .collect();
        assert_eq!(
            ops,
            vec![
                (1, None, OpClass::Read, 3, 1536),
                (1, None, OpClass::Write, 1, 4096),
                (1, None, OpClass::Flush, 1, 0),
                (3, None, OpClass::Admin, 1, 0),
                (3, Some(1), OpClass::Read, 1, 512),
                (3, Some(2), OpClass::Read, 1, 512),
            ]
        );
        let queues: Vec<(u32, Option<u16>, u64, u64)> = v
            .queues_at(|c| c == 3)
            .iter()
            .map(|(k, q)| (k.ctrl_id, k.qid, q.depth, q.busy_ns))
            .collect();
        assert_eq!(
            queues,
            vec![
                (1, None, 2, 500),
                (3, Some(0), 1, 100),
                (3, Some(1), 1, 200),
                (3, Some(2), 1, 300),
            ]
        );
        // Every controller per queue: the model's own series.
        assert_eq!(v.ops_at(|_| true).len(), v.ops.len());
        assert_eq!(v.queues_at(|_| true), v.queues);
    }

    /// Keys not re-read (their queue did not move) keep their series and their last value: the
    /// next read takes its deltas from the value of the last read, however long ago.
    #[test]
    fn unread_keys_continue_from_their_last_read() {
        let mut m = Model::new();
        let k1 = op_key(0, 1, OpClass::Read);
        let k2 = op_key(0, 2, OpClass::Read);
        let first = stats(&[100_000; 2], 4096);
        m.apply(RawMaps {
            ops: vec![(k1, first), (k2, stats(&[50_000], 512))],
            ..Default::default()
        });
        // Two drains where queue 1 did not move; a key the model never saw is no series.
        for _ in 0..2 {
            let v = m.apply(RawMaps {
                ops: vec![(k2, stats(&[50_000], 512))],
                ops_unread: vec![k1, op_key(3, 1, OpClass::Write)],
                ..Default::default()
            });
            let got: Vec<(Option<u16>, u64, u64)> = v
                .ops
                .iter()
                .map(|o| (o.key.qid, o.commands, o.bytes))
                .collect();
            assert_eq!(got, vec![(Some(1), 2, 8192), (Some(2), 1, 512)]);
        }
        let mut more = first;
        more.bytes += 4096;
        more.latency_sum_ns += 1_000_000;
        more.buckets[latency_bucket(1_000_000)] += 1;
        let v = m.apply(RawMaps {
            ops: vec![(k1, more)],
            ops_unread: vec![k2],
            ..Default::default()
        });
        let o = &v.ops[0];
        assert_eq!(
            (o.commands, o.bytes, o.latency_sum_ns),
            (3, 12288, 1_200_000)
        );
        assert_eq!(v.inflight_ns, vec![(0, 1_250_000)]);
        // Neither read nor named: gone.
        let v = m.apply(RawMaps {
            ops_unread: vec![k2],
            ..Default::default()
        });
        assert_eq!(v.ops.len(), 1);
        assert_eq!(v.ops[0].key.qid, Some(2));
    }

    #[test]
    fn model_per_queue_and_bucket_wrap() {
        let mut m = Model::new();
        let k = op_key(2, 3, OpClass::Write);
        let mut s = OpStats::default();
        let b = latency_bucket(50_000);
        s.buckets[b] = u32::MAX;
        m.apply(RawMaps {
            ops: vec![(k, s)],
            ..Default::default()
        });
        // Wrapped: 10 more. The commands follow the bucket, not the raw sum (9).
        s.buckets[b] = 9;
        let v = m.apply(RawMaps {
            ops: vec![(k, s)],
            ..Default::default()
        });
        let o = &v.ops[0];
        assert_eq!(o.key.qid, Some(3));
        assert_eq!(o.commands, u32::MAX as u64 + 10);
        assert_eq!(
            o.classic_cumulative()[CLASSIC_SLOTS - 1],
            u32::MAX as u64 + 10
        );
    }

    #[test]
    fn per_queue_keeps_control_commands_per_controller() {
        let mut m = Model::new();
        let v = m.apply(RawMaps {
            ops: vec![
                (op_key(0, 0, OpClass::Admin), stats(&[30_000], 0)),
                (op_key(0, 0, OpClass::Fabrics), stats(&[20_000], 0)),
                (op_key(0, 1, OpClass::Fabrics), stats(&[40_000], 0)),
                (op_key(0, 1, OpClass::Read), stats(&[100_000; 2], 512)),
                // A flush, counted per controller by the kernel (queue 0 in its key).
                (op_key(0, 0, OpClass::Flush), stats(&[10_000], 0)),
            ],
            ..Default::default()
        });
        let keys: Vec<(Option<u16>, OpClass, u64)> = v
            .ops
            .iter()
            .map(|o| (o.key.qid, o.key.class, o.commands))
            .collect();
        assert_eq!(
            keys,
            vec![
                (None, OpClass::Flush, 1),
                (None, OpClass::Admin, 1),
                (None, OpClass::Fabrics, 2),
                (Some(1), OpClass::Read, 2),
            ]
        );
        // Per controller: the admin queue's 50 µs, queue 1's 240 µs, the flush's 10 µs.
        assert_eq!(v.inflight_ns, vec![(0, 300_000)]);
        assert_eq!(
            v.commands,
            vec![
                ((0, OpClass::Read), 2),
                ((0, OpClass::Flush), 1),
                ((0, OpClass::Admin), 1),
                ((0, OpClass::Fabrics), 2),
            ]
        );
    }

    #[test]
    fn queues_statuses_and_counters() {
        let mut m = Model::new();
        let q = |qid, submitted, completed, busy_ns| {
            (
                QueueKey {
                    ctrl_id: 1,
                    qid,
                    _pad: 0,
                },
                QueueState {
                    submitted,
                    completed,
                    busy_ns,
                    last_event_ns: 0,
                },
            )
        };
        let sk = StatusKey {
            ctrl_id: 1,
            status: 0x371,
            opclass: 0,
            _pad: 0,
        };
        let mut counters = [0; PROGRAM_COUNTERS as usize];
        counters[0] = 5;
        let v = m.apply(RawMaps {
            queues: vec![q(0, 10, 10, 100), q(1, 50, 47, 1_000), q(2, 9, 8, 2_000)],
            statuses: vec![(sk, 2)],
            counters,
            ..Default::default()
        });
        let key = QueueSeriesKey {
            ctrl_id: 1,
            qid: None,
        };
        assert_eq!(
            v.queues_at(|_| false),
            vec![(
                key,
                QueueView {
                    depth: 4,
                    busy_ns: 3_100
                }
            )]
        );
        assert_eq!(v.io_queues, vec![(1, 2)]);
        assert_eq!(v.statuses, vec![(sk, 2)]);
        assert_eq!(v.counters[0], 5);
        // 69 submitted; 65 completed, of which 5 were lost commands that a setup replaced.
        let events = |setups, completions| Events {
            setups,
            completions,
        };
        assert_eq!(v.events, events(69, 60));
        counters[0] = 7;
        counters[ProgramCounter::SlotOutOfRange as usize] = 3;
        counters[ProgramCounter::CompletionUnmatched as usize] = 1;
        let v = m.apply(RawMaps {
            queues: vec![q(0, 10, 10, 100), q(1, 50, 50, 1_500), q(2, 9, 9, 2_000)],
            statuses: vec![(sk, 5)],
            counters,
            ..Default::default()
        });
        assert_eq!(
            v.queues_at(|_| false),
            vec![(
                key,
                QueueView {
                    depth: 0,
                    busy_ns: 3_600
                }
            )]
        );
        assert_eq!(v.statuses, vec![(sk, 5)]);
        // 3 setups past the arrays' bounds; 4 completed, 2 of them replaced, 1 unmatched.
        assert_eq!(v.events, events(72, 63));
        assert_eq!(v.counters[0], 7);
    }

    /// Queues in any order, one gone: each queue's busy time continues from its own last value,
    /// and a series without queues goes.
    #[test]
    fn queue_series_follow_their_keys_in_any_order() {
        let mut m = Model::new();
        let q = |ctrl_id, qid, busy_ns| {
            (
                QueueKey {
                    ctrl_id,
                    qid,
                    _pad: 0,
                },
                QueueState {
                    submitted: 3,
                    completed: 1,
                    busy_ns,
                    last_event_ns: 0,
                },
            )
        };
        let series = |v: &IoView| -> Vec<(u32, Option<u16>, u64, u64)> {
            v.queues
                .iter()
                .map(|(k, q)| (k.ctrl_id, k.qid, q.depth, q.busy_ns))
                .collect()
        };
        let v = m.apply(RawMaps {
            queues: vec![q(1, 2, 100), q(0, 1, 10), q(1, 1, 1_000)],
            ..Default::default()
        });
        assert_eq!(
            series(&v),
            vec![
                (0, Some(1), 2, 10),
                (1, Some(1), 2, 1_000),
                (1, Some(2), 2, 100)
            ]
        );
        let v = m.apply(RawMaps {
            queues: vec![q(1, 1, 1_500), q(1, 2, 150)],
            ..Default::default()
        });
        assert_eq!(
            series(&v),
            vec![(1, Some(1), 2, 1_500), (1, Some(2), 2, 150)]
        );
        // Queue 0/1 is back: it starts from its new raw value, its old series was dropped.
        let v = m.apply(RawMaps {
            queues: vec![q(1, 2, 160), q(0, 1, 30), q(1, 1, 1_500)],
            ..Default::default()
        });
        assert_eq!(
            series(&v),
            vec![
                (0, Some(1), 2, 30),
                (1, Some(1), 2, 1_500),
                (1, Some(2), 2, 160)
            ]
        );
    }
}
