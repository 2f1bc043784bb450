//! What the model reads (the raw maps) and what it publishes: series keys and views.
use std::borrow::Cow;
use std::collections::BTreeMap;

use nvmeof_common::latency::{slot_native_index, OVERFLOW_SLOT};
use nvmeof_common::{
    ConnErrorKey, OpClass, OpKey, OpStats, ProgramCounter, QueueKey, QueueState, StatusKey,
    CONN_ERROR_KINDS, LATENCY_BUCKETS, PROGRAM_COUNTERS,
};

use super::buckets::{classic_slot, CLASSIC_SLOTS};

/// One read of the kernel maps.
#[derive(Clone, Debug, Default)]
pub struct RawMaps {
    /// The statistics of the keys read this drain, cumulative. (The drain does not collect
    /// them: it hands each over as it reads it, [`Model::apply_reading`](super::Model::apply_reading).)
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
pub(super) struct OpSeries {
    pub(super) key: SeriesKey,
    pub(super) commands: u64,
    pub(super) bytes: u64,
    pub(super) errors: u64,
    pub(super) latency_sum_ns: u64,
    /// Observations per kernel bucket (slot) since start, ascending by slot, for the slots that
    /// saw any: the shape [`OpView::buckets`] publishes.
    pub(super) buckets: Vec<(u16, u64)>,
    /// The last drain that fed this series ([`Model::drains`](super::Model::drains)).
    pub(super) fed: u64,
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
    /// Cumulative counts at each classic bound ([`classic_bounds_seconds`](super::classic_bounds_seconds)); the last slot is
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
    pub(super) fn add(&mut self, queues: &QueueState, counted: &[u64; PROGRAM_COUNTERS as usize]) {
        let c = |p: ProgramCounter| counted[p as usize];
        self.setups +=
            queues.submitted + c(ProgramCounter::SlotOutOfRange) + c(ProgramCounter::InflightFull);
        self.completions += queues
            .completed
            .saturating_sub(c(ProgramCounter::InflightReplaced))
            + c(ProgramCounter::CompletionUnmatched);
    }
}
