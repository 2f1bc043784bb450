//! What `top` shows, computed from two scrapes: a [`Snapshot`] holds one scrape's counters per
//! controller and queue; [`rates`] turns two of them into per-second figures and latency
//! quantiles from the histogram buckets' deltas; [`sort`] orders the rows.
use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::parse::Sample;

/// The opclasses a hardware queue carries (admin and fabrics commands stay per controller).
const IO_CLASSES: [&str; 4] = ["read", "write", "flush", "other"];

/// The families a snapshot reads; the parser skips every other line unread.
pub fn wanted(name: &str) -> bool {
    matches!(
        name,
        "nvmeof_io_latency_seconds_bucket"
            | "nvmeof_io_latency_seconds_count"
            | "nvmeof_io_read_bytes_total"
            | "nvmeof_io_write_bytes_total"
            | "nvmeof_io_errors_total"
            | "nvmeof_queue_depth"
            | "nvmeof_queue_busy_seconds_total"
            | "nvmeof_subsystem_state"
            | "nvmeof_transport_type"
            | "nvmeof_reconnect_attempts_total"
    )
}

/// One queue's (or a controller's own, when the agent gave no queues) counters at one scrape.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counters {
    pub commands: f64,
    pub bytes: f64,
    /// Cumulative bucket counts by upper bound (`le`), summed over the I/O opclasses.
    pub buckets: BTreeMap<Bound, f64>,
    pub depth: f64,
    pub busy_seconds: f64,
}

/// A bucket's upper bound, ordered (`+Inf` last); `le` values are never NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound(pub f64);
impl Eq for Bound {}
impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bound {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Controller {
    pub state: Option<String>,
    pub transport: Option<String>,
    pub errors: f64,
    /// Absent without the kprobes (`nvmeof_exporter_state_source` `sysfs_poll`).
    pub reconnects: Option<f64>,
    /// Series without a `queue` label: an agent that did not split this controller.
    pub own: Counters,
    pub queues: BTreeMap<u32, Counters>,
}

/// One scrape, by controller name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    pub controllers: BTreeMap<String, Controller>,
}

impl Snapshot {
    pub fn from_samples(samples: &[Sample]) -> Snapshot {
        let mut snap = Snapshot::default();
        for s in samples {
            let Some(ctrl) = s.label("controller") else {
                continue;
            };
            // NaN or negative counts come from no agent of ours; they would poison the sums.
            if s.value.is_nan() || s.value < 0.0 {
                continue;
            }
            let c = snap.controllers.entry(ctrl.to_owned()).or_default();
            let io_class = s.label("opclass").is_none_or(|o| IO_CLASSES.contains(&o));
            let counters = match s.label("queue").map(str::parse::<u32>) {
                Some(Ok(q)) if q > 0 => c.queues.entry(q).or_default(),
                // The admin queue (0) carries no I/O: its busy time would only dilute the
                // controller's utilisation.
                Some(_) => continue,
                None => &mut c.own,
            };
            match s.name.as_str() {
                "nvmeof_io_latency_seconds_bucket" if io_class => {
                    let Some(le) = s.label("le").and_then(super::parse::number) else {
                        continue;
                    };
                    *counters.buckets.entry(Bound(le)).or_default() += s.value;
                }
                "nvmeof_io_latency_seconds_count" if io_class => counters.commands += s.value,
                "nvmeof_io_read_bytes_total" | "nvmeof_io_write_bytes_total" => {
                    counters.bytes += s.value
                }
                "nvmeof_queue_depth" => counters.depth += s.value,
                "nvmeof_queue_busy_seconds_total" => counters.busy_seconds += s.value,
                "nvmeof_io_errors_total" => c.errors += s.value,
                "nvmeof_reconnect_attempts_total" => {
                    *c.reconnects.get_or_insert(0.0) += s.value;
                }
                "nvmeof_subsystem_state" if s.value == 1.0 => {
                    c.state = s.label("state").map(str::to_owned)
                }
                "nvmeof_transport_type" if s.value == 1.0 => {
                    c.transport = s.label("transport").map(str::to_owned)
                }
                _ => {}
            }
        }
        snap
    }
}

/// Per-second figures of one queue, or of a controller's queues together.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    pub iops: f64,
    /// 10^6 bytes a second, read and written.
    pub mbps: f64,
    /// Seconds; `None` without a completion in the interval.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// The upper bound of the highest bucket that moved: the agent exposes no maximum.
    pub max: Option<f64>,
    /// Commands in flight at the second scrape.
    pub inflight: f64,
    /// Busy time over the interval, 0..=1 (a controller's: the mean of its queues').
    pub util: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueRow {
    pub qid: u32,
    pub stats: Stats,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ControllerRow {
    pub name: String,
    pub state: Option<String>,
    pub transport: Option<String>,
    /// Totals since the agent started; `*_moved`: they grew in this interval.
    pub errors: f64,
    pub errors_moved: bool,
    pub reconnects: Option<f64>,
    pub reconnects_moved: bool,
    pub stats: Stats,
    pub queues: Vec<QueueRow>,
}

/// How much a counter grew; a counter that went down was reset (the agent restarted) and
/// counts from zero, as Prometheus' `rate()` takes it.
fn grew(before: f64, after: f64) -> f64 {
    if after >= before {
        after - before
    } else {
        after
    }
}

/// The rows of the interval from `before` to `after`, `seconds` apart. Controllers and queues
/// that appear only in `after` count from zero.
pub fn rates(before: &Snapshot, after: &Snapshot, seconds: f64) -> Vec<ControllerRow> {
    let seconds = seconds.max(1e-3);
    let empty_ctrl = Controller::default();
    let empty = Counters::default();
    after
        .controllers
        .iter()
        .map(|(name, a)| {
            let b = before.controllers.get(name).unwrap_or(&empty_ctrl);
            let queues: Vec<(QueueRow, Counters)> = a
                .queues
                .iter()
                .map(|(q, ac)| {
                    let d = delta(b.queues.get(q).unwrap_or(&empty), ac);
                    let row = QueueRow {
                        qid: *q,
                        stats: stats(&d, 1.0, seconds),
                    };
                    (row, d)
                })
                .collect();
            // The controller is its queues together; the agent's own per-controller series
            // when it did not split them.
            let (total, n) = match queues.is_empty() {
                true => (delta(&b.own, &a.own), 1.0),
                false => {
                    let mut t = Counters::default();
                    for (_, d) in &queues {
                        add(&mut t, d);
                    }
                    (t, queues.len() as f64)
                }
            };
            let reconnects_grew = match (b.reconnects, a.reconnects) {
                (Some(x), Some(y)) => grew(x, y) > 0.0,
                (None, Some(y)) => y > 0.0,
                _ => false,
            };
            ControllerRow {
                name: name.clone(),
                state: a.state.clone(),
                transport: a.transport.clone(),
                errors: a.errors,
                errors_moved: grew(b.errors, a.errors) > 0.0,
                reconnects: a.reconnects,
                reconnects_moved: reconnects_grew,
                stats: stats(&total, n, seconds),
                queues: queues.into_iter().map(|(r, _)| r).collect(),
            }
        })
        .collect()
}

/// The counters' growth from `b` to `a`; `depth` is `a`'s (a gauge).
fn delta(b: &Counters, a: &Counters) -> Counters {
    Counters {
        commands: grew(b.commands, a.commands),
        bytes: grew(b.bytes, a.bytes),
        buckets: a
            .buckets
            .iter()
            .map(|(le, n)| (*le, grew(b.buckets.get(le).copied().unwrap_or(0.0), *n)))
            .collect(),
        depth: a.depth,
        busy_seconds: grew(b.busy_seconds, a.busy_seconds),
    }
}

fn add(total: &mut Counters, d: &Counters) {
    total.commands += d.commands;
    total.bytes += d.bytes;
    for (le, n) in &d.buckets {
        *total.buckets.entry(*le).or_default() += n;
    }
    total.depth += d.depth;
    total.busy_seconds += d.busy_seconds;
}

fn stats(d: &Counters, queues: f64, seconds: f64) -> Stats {
    Stats {
        iops: d.commands / seconds,
        mbps: d.bytes / seconds / 1e6,
        p50: quantile(&d.buckets, 0.5),
        p99: quantile(&d.buckets, 0.99),
        max: highest(&d.buckets),
        inflight: d.depth,
        util: (d.busy_seconds / seconds / queues).clamp(0.0, 1.0),
    }
}

/// The `q`-quantile of cumulative bucket counts, as Prometheus' `histogram_quantile` finds it:
/// the bucket where the rank falls, interpolated linearly between its bounds (0 below the
/// first); a rank in the `+Inf` bucket gives the highest finite bound.
pub fn quantile(buckets: &BTreeMap<Bound, f64>, q: f64) -> Option<f64> {
    let total = buckets.last_key_value()?.1.max(0.0);
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, &cum) in buckets {
        if cum >= rank && cum > below {
            if le.0.is_infinite() {
                return Some(lower);
            }
            return Some(lower + (le.0 - lower) * (rank - below) / (cum - below));
        }
        lower = le.0;
        below = below.max(cum);
    }
    Some(lower)
}

/// The upper bound of the highest bucket that holds a command (`+Inf` when only the overflow
/// bucket does).
pub fn highest(buckets: &BTreeMap<Bound, f64>) -> Option<f64> {
    let mut below = 0.0;
    let mut found = None;
    for (le, &cum) in buckets {
        if cum > below {
            found = Some(le.0);
            below = cum;
        }
    }
    found
}

/// The column rows are ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    Iops,
    Mbps,
    P50,
    P99,
    Max,
    Inflight,
    Util,
    Errors,
}

impl SortKey {
    /// In the order `s` and Tab step through them.
    pub const ALL: [SortKey; 9] = [
        SortKey::Iops,
        SortKey::Mbps,
        SortKey::P50,
        SortKey::P99,
        SortKey::Max,
        SortKey::Inflight,
        SortKey::Util,
        SortKey::Errors,
        SortKey::Name,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::Iops => "iops",
            SortKey::Mbps => "mbps",
            SortKey::P50 => "p50",
            SortKey::P99 => "p99",
            SortKey::Max => "max",
            SortKey::Inflight => "inflight",
            SortKey::Util => "util",
            SortKey::Errors => "errors",
        }
    }

    pub fn parse(s: &str) -> Result<SortKey, String> {
        SortKey::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = SortKey::ALL.iter().map(|k| k.name()).collect();
                format!("{s:?}: one of {}", names.join(", "))
            })
    }

    /// The next (`step` 1) or previous (`step` -1) key.
    pub fn step(self, step: isize) -> SortKey {
        let n = SortKey::ALL.len() as isize;
        let i = SortKey::ALL.iter().position(|k| *k == self).unwrap_or(0) as isize;
        SortKey::ALL[(i + step).rem_euclid(n) as usize]
    }

    /// The busiest or slowest first; names from a to z.
    fn descending(self) -> bool {
        self != SortKey::Name
    }

    fn value(self, s: &Stats, errors: f64) -> f64 {
        match self {
            SortKey::Name => 0.0,
            SortKey::Iops => s.iops,
            SortKey::Mbps => s.mbps,
            SortKey::P50 => s.p50.unwrap_or(-1.0),
            SortKey::P99 => s.p99.unwrap_or(-1.0),
            SortKey::Max => s.max.unwrap_or(-1.0),
            SortKey::Inflight => s.inflight,
            SortKey::Util => s.util,
            SortKey::Errors => errors,
        }
    }
}

/// Orders controllers, and each one's queues, by `key` (reversed when `reverse`); ties by
/// name and queue id, so that equal rows keep their place from one refresh to the next.
pub fn sort(rows: &mut [ControllerRow], key: SortKey, reverse: bool) {
    let flip = |o: Ordering| match key.descending() != reverse {
        true => o.reverse(),
        false => o,
    };
    rows.sort_by(|a, b| {
        let by = match key {
            SortKey::Name => natural(&a.name).cmp(&natural(&b.name)),
            k => k
                .value(&a.stats, a.errors)
                .total_cmp(&k.value(&b.stats, b.errors)),
        };
        flip(by).then_with(|| natural(&a.name).cmp(&natural(&b.name)))
    });
    for r in rows {
        r.queues.sort_by(|a, b| {
            let by = match key {
                // Queues have no errors of their own (`nvmeof_io_errors_total` is per
                // controller): they stay in queue order.
                SortKey::Name | SortKey::Errors => a.qid.cmp(&b.qid),
                k => k.value(&a.stats, 0.0).total_cmp(&k.value(&b.stats, 0.0)),
            };
            flip(by).then(a.qid.cmp(&b.qid))
        });
    }
}

/// `nvme10` after `nvme9`: the name's prefix, then its number.
fn natural(name: &str) -> (&str, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (prefix, number) = name.split_at(name.len() - digits);
    (prefix, number.parse().unwrap_or(0))
}
