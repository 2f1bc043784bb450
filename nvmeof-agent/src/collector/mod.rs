//! The one small trait every collector implements, and the sink it writes metric families into.
//!
//! Modelled on node_exporter: a collector reads its source, converts and emits; it never serves
//! HTTP and never blocks on the kernel. "No data" (no NVMe-oF on this node) is not an error: the
//! collector emits nothing and returns `Ok`.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::exposition::model::{
    Bucket, Counter, Exemplar, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
    Timestamp,
};
use crate::exposition::Native;
use crate::sysfs::{Controller, Parsed, Spelled};

/// What a metric family is: the documentation test compares the union of every collector's
/// families with `docs/metrics.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

impl Family {
    pub const fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Counter,
        }
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Gauge,
        }
    }

    pub const fn histogram(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Histogram,
        }
    }
}

/// Declares a collector's families: a constant for each, for its [`Sink`] calls, and
/// `FAMILIES`, the list its registration gives, in the order written. Each family is written
/// once, so one cannot be emitted without being declared:
///
/// ```text
/// families! {
///     pub UP: gauge("x_up", "1 when up.");
///     ERRORS: counter("x_errors_total", "Errors.");
/// }
/// ```
macro_rules! families {
    ($($vis:vis $id:ident: $kind:ident($name:literal, $help:literal);)+) => {
        $($vis const $id: $crate::collector::Family =
            $crate::collector::Family::$kind($name, $help);)+
        pub const FAMILIES: &[$crate::collector::Family] = &[$($id),+];
    };
}
pub(crate) use families;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// Which controllers a scrape shows per hardware queue: the `controller=` query parameters of
/// the metrics path. The default shows none (`--metrics.per-queue` shows every one, whatever the
/// scrape asks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Detail {
    #[default]
    PerController,
    /// `controller=all`.
    All,
    /// `controller=nvmeN`, repeated: the instance numbers named.
    Controllers(BTreeSet<u32>),
}

/// The labels that only series per queue (or per connection) carry: what a scrape that names
/// controllers keeps of a collector's output shown per queue for all of them
/// ([`Detail::keep_named`]).
pub const PER_QUEUE_LABELS: [&str; 2] = ["queue", "local_port"];

impl Detail {
    /// The detail `controller=` values ask for: `all`, or controller names as the kernel spells
    /// them (`nvme` and the instance number, no leading zero); an error naming the first value
    /// that is neither.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Detail, String> {
        let mut named = BTreeSet::new();
        let mut all = false;
        for v in values {
            let v = v.as_ref();
            if v == "all" {
                all = true;
                continue;
            }
            match controller_instance(v) {
                Some(n) => {
                    named.insert(n);
                }
                None => {
                    // A value is echoed only as far as it is short and printable.
                    let shown: String = v
                        .chars()
                        .take(32)
                        .map(|c| match c {
                            c if c.is_ascii_graphic() => c,
                            _ => '?',
                        })
                        .collect();
                    return Err(format!(
                        "invalid controller: {shown:?} (want nvmeN, N its instance number, or all)"
                    ));
                }
            }
        }
        Ok(match (all, named.is_empty()) {
            (true, _) => Detail::All,
            (false, true) => Detail::PerController,
            (false, false) => Detail::Controllers(named),
        })
    }

    /// Whether controller instance `n` is shown per queue.
    pub fn per_queue(&self, n: u32) -> bool {
        match self {
            Detail::PerController => false,
            Detail::All => true,
            Detail::Controllers(named) => named.contains(&n),
        }
    }

    /// Whether the controller named `name` (`nvmeN`) is shown per queue.
    pub fn per_queue_named(&self, name: &str) -> bool {
        match self {
            Detail::Controllers(_) => controller_instance(name).is_some_and(|n| self.per_queue(n)),
            d => d.per_queue(0),
        }
    }

    /// Families shown per queue for every controller, with the series per queue
    /// ([`PER_QUEUE_LABELS`]) of the controllers this detail does not name left out, and a
    /// family left empty by that left out too: what a collector shows for these controllers
    /// alone, when it adds its series per queue beside those per controller.
    pub fn keep_named(&self, families: &[MetricFamily]) -> Vec<MetricFamily> {
        let mut out = Vec::with_capacity(families.len());
        for f in families {
            let keep = |m: &Metric| {
                let per_queue = m.label.iter().any(|l| PER_QUEUE_LABELS.contains(&l.name()));
                let named = || {
                    m.label
                        .iter()
                        .find(|l| l.name() == "controller")
                        .is_some_and(|l| self.per_queue_named(l.value()))
                };
                !per_queue || named()
            };
            if f.metric.iter().all(keep) {
                out.push(f.clone());
                continue;
            }
            let metric: Vec<Metric> = f.metric.iter().filter(|m| keep(m)).cloned().collect();
            if !metric.is_empty() {
                out.push(MetricFamily {
                    name: f.name.clone(),
                    help: f.help.clone(),
                    r#type: f.r#type,
                    metric,
                    unit: f.unit.clone(),
                });
            }
        }
        out
    }
}

/// The instance number of a controller named as the kernel names it (`nvme3`: 3); `None` for
/// anything else (`nvme03`, `nvme`, `nvme3n1`, a number past u32).
pub fn controller_instance(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("nvme")?;
    let n: u32 = digits.parse().ok()?;
    (digits.bytes().all(|b| b.is_ascii_digit()) && n.to_string() == digits).then_some(n)
}

/// What the collectors of one scrape share: the reads several of them need, made once. Five
/// collectors need the controllers; reading them once per scrape instead of five times saves
/// most of a scrape's syscalls, which are most of its cost. A collector run outside a scrape
/// (unit tests) gets a fresh one.
#[derive(Default)]
pub struct Scrape {
    /// Held while reading, so that the collectors of one scrape wait for one read instead of
    /// each making its own; only a successful read is kept.
    controllers: Mutex<Option<(PathBuf, Parsed<Controller>)>>,
    /// When the scraper stops waiting for the collectors; `None` outside a scrape.
    deadline: Option<Instant>,
    /// Which controllers the collectors show per queue.
    detail: Detail,
}

impl Scrape {
    pub fn new() -> Self {
        Self::default()
    }

    /// A scrape whose collectors must be done by `deadline`.
    pub fn until(deadline: Instant) -> Self {
        Scrape {
            deadline: Some(deadline),
            ..Self::default()
        }
    }

    /// The same scrape showing the controllers `detail` names per queue.
    pub fn with_detail(mut self, detail: Detail) -> Self {
        self.detail = detail;
        self
    }

    /// Which controllers this scrape shows per queue (beside `--metrics.per-queue`, which
    /// the collectors know themselves).
    pub fn detail(&self) -> &Detail {
        &self.detail
    }

    /// How long the collectors have left; `otherwise` outside a scrape.
    pub fn time_left(&self, otherwise: Duration) -> Duration {
        self.deadline
            .map_or(otherwise, |d| d.saturating_duration_since(Instant::now()))
    }

    /// Every controller under `root/class/nvme` (`crate::sysfs::controllers`), read once in
    /// this scrape.
    pub fn controllers(&self, root: &Path) -> anyhow::Result<Parsed<Controller>> {
        let mut cached = self.controllers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((r, parsed)) = cached.as_ref() {
            if r == root {
                return Ok(parsed.clone());
            }
        }
        let parsed = crate::sysfs::controllers(root)?;
        *cached = Some((root.to_path_buf(), parsed.clone()));
        Ok(parsed)
    }

    /// The controllers on `transport` (`tcp`, `rdma`, `fc`, `loop`, `pcie`), from
    /// [`Scrape::controllers`]: what a transport's collector reads.
    pub fn controllers_on(&self, root: &Path, transport: &str) -> anyhow::Result<Vec<Controller>> {
        let parsed = self.controllers(root)?;
        let on = |c: &Controller| c.transport.as_deref() == Some(transport);
        Ok(parsed.items.into_iter().filter(on).collect())
    }
}

/// What a collector does; its name and families are its registration's
/// (`crate::collectors::registry`), written once.
pub trait Collector: Send + Sync {
    /// Reads, converts, emits. An error fails this collector for this scrape only: the scrape
    /// serves its last good output instead, marked stale. Values skipped as missing or odd go to
    /// [`Sink::skipped`], not to an error.
    fn collect(&self, scrape: &Scrape, sink: &mut Sink) -> anyhow::Result<()>;
}

/// What a collector reads, which decides how a scrape runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// The kernel (sysfs, ioctls, netlink), where a read can block: the scrape runs it on a
    /// blocking thread under its deadline and serves its last good output, marked stale, past it.
    Kernel,
    /// What a background source publishes (the eBPF drain's snapshot): the scrape runs it in
    /// line (a blocking thread would only add a hop); the collector may wait, bounded by the
    /// scrape's deadline, for its source to publish afresh.
    Memory,
}

/// A built collector with the name it was registered under: the name of its
/// `--collector.<name>` flags, its log lines and its `collector` label.
pub struct Named {
    pub name: &'static str,
    pub collector: Box<dyn Collector>,
    pub reads: Reads,
}

impl Named {
    pub fn new(name: &'static str, collector: impl Collector + 'static) -> Named {
        Named {
            name,
            collector: Box::new(collector),
            reads: Reads::Kernel,
        }
    }
}

/// Collects metric families for one scrape, keyed by name so that several collectors may add to
/// one family and the output is sorted.
#[derive(Default)]
pub struct Sink {
    families: BTreeMap<String, MetricFamily>,
    skipped: u64,
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| LabelPair {
            name: Some((*k).to_owned()),
            value: Some((*v).to_owned()),
        })
        .collect()
}

/// One histogram series for [`Sink::histogram`].
#[derive(Clone, Debug, Default)]
pub struct HistogramData<'a> {
    /// Observations in all.
    pub count: u64,
    /// The sum of the observed values.
    pub sum: f64,
    /// Classic buckets: `(upper_bound, cumulative_count)`, ascending; the `+Inf` bucket may be
    /// left out (it is `count`).
    pub classic: &'a [(f64, u64)],
    /// Native buckets, served to protobuf scrapers only.
    pub native: Option<Native>,
    /// Observations to point at from their buckets (OpenMetrics and protobuf exemplars), oldest
    /// first: a classic bucket keeps the last one it holds.
    pub exemplars: &'a [ExemplarData],
}

/// The most exemplars a native histogram carries, the latest (client_golang's default for
/// `NativeHistogramMaxExemplars`): a series with a thousand slow commands must not send them all
/// in every scrape. Classic buckets keep one each.
pub const NATIVE_EXEMPLARS: usize = 10;

/// One observation a histogram counted, with labels that find it elsewhere (a slow command's
/// sequence number at `/debug/slow`).
#[derive(Clone, Debug, PartialEq)]
pub struct ExemplarData {
    pub value: f64,
    pub labels: Vec<(&'static str, String)>,
    pub timestamp: std::time::SystemTime,
}

impl ExemplarData {
    fn to_model(&self) -> Exemplar {
        let since = self
            .timestamp
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Exemplar {
            label: self
                .labels
                .iter()
                .map(|(k, v)| LabelPair {
                    name: Some((*k).to_owned()),
                    value: Some(v.clone()),
                })
                .collect(),
            value: Some(self.value),
            timestamp: Some(Timestamp {
                seconds: since.as_secs() as i64,
                nanos: since.subsec_nanos() as i32,
            }),
        }
    }
}

impl Sink {
    pub fn new() -> Self {
        Self::default()
    }

    fn family(&mut self, f: &Family, t: MetricType) -> &mut MetricFamily {
        self.families
            .entry(f.name.to_owned())
            .or_insert_with(|| MetricFamily {
                name: Some(f.name.to_owned()),
                help: Some(f.help.to_owned()),
                r#type: Some(t as i32),
                ..MetricFamily::default()
            })
    }

    /// Adds a fully built metric (summaries build their own).
    pub fn push(&mut self, f: &Family, mut m: Metric, pairs: &[(&str, &str)]) {
        let t = match f.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
            Kind::Summary => MetricType::Summary,
        };
        m.label = labels(pairs);
        self.family(f, t).metric.push(m);
    }

    pub fn gauge(&mut self, f: &Family, pairs: &[(&str, &str)], value: f64) {
        debug_assert_eq!(f.kind, Kind::Gauge, "{} is not a gauge", f.name);
        let m = Metric {
            gauge: Some(Gauge { value: Some(value) }),
            ..Metric::default()
        };
        self.push(f, m, pairs);
    }

    /// One series per state the kernel knows, labelled `state` after `pairs`: 1 for `state`, 0
    /// for the others; a state this exporter does not know gets a series of its own, at 1.
    pub fn one_hot<S: Spelled>(&mut self, f: &Family, pairs: &[(&str, &str)], state: &S) {
        let mut labels = pairs.to_vec();
        labels.push(("state", ""));
        let last = labels.len() - 1;
        for known in S::KNOWN {
            labels[last].1 = known.as_str();
            self.gauge(f, &labels, f64::from(u8::from(state == known)));
        }
        if !S::KNOWN.contains(state) {
            labels[last].1 = state.as_str();
            self.gauge(f, &labels, 1.0);
        }
    }

    pub fn counter(&mut self, f: &Family, pairs: &[(&str, &str)], value: f64) {
        debug_assert_eq!(f.kind, Kind::Counter, "{} is not a counter", f.name);
        let m = Metric {
            counter: Some(Counter {
                value: Some(value),
                ..Counter::default()
            }),
            ..Metric::default()
        };
        self.push(f, m, pairs);
    }

    /// Adds one histogram series: classic buckets for every format, native buckets (when
    /// given) for protobuf scrapes.
    pub fn histogram(&mut self, f: &Family, pairs: &[(&str, &str)], data: HistogramData<'_>) {
        debug_assert_eq!(f.kind, Kind::Histogram, "{} is not a histogram", f.name);
        let mut h = Histogram {
            sample_count: Some(data.count),
            sample_sum: Some(data.sum),
            bucket: data
                .classic
                .iter()
                .map(|&(le, n)| Bucket {
                    cumulative_count: Some(n),
                    upper_bound: Some(le),
                    ..Bucket::default()
                })
                .collect(),
            ..Histogram::default()
        };
        let native_from = data.exemplars.len().saturating_sub(NATIVE_EXEMPLARS);
        for (i, e) in data.exemplars.iter().enumerate() {
            let ex = e.to_model();
            if let Some(b) = h.bucket.iter_mut().find(|b| e.value <= b.upper_bound()) {
                b.exemplar = Some(ex.clone());
            }
            if data.native.is_some() && i >= native_from {
                h.exemplars.push(ex);
            }
        }
        if let Some(native) = data.native {
            native.fill(&mut h);
        }
        let m = Metric {
            histogram: Some(h),
            ..Metric::default()
        };
        self.push(f, m, pairs);
    }

    /// Notes source values the collector skipped (missing, unparsable, unknown): they count in
    /// `nvmeof_exporter_collect_errors_total` without failing the collect.
    pub fn skipped(&mut self, n: usize) {
        self.skipped += n as u64;
    }

    pub fn skipped_count(&self) -> u64 {
        self.skipped
    }

    /// Adds families another collector produced (a cached output), merging by name.
    pub fn extend(&mut self, families: impl IntoIterator<Item = MetricFamily>) {
        for mf in families {
            match self.families.get_mut(mf.name()) {
                Some(have) => have.metric.extend(mf.metric),
                None => {
                    self.families.insert(mf.name().to_owned(), mf);
                }
            }
        }
    }

    pub fn into_families(self) -> Vec<MetricFamily> {
        self.families.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: Family = Family {
        name: "x_up",
        help: "Up.",
        kind: Kind::Gauge,
    };
    const A: Family = Family {
        name: "a_total",
        help: "A.",
        kind: Kind::Counter,
    };

    #[test]
    fn controller_names_are_the_kernels_spelling() {
        assert_eq!(controller_instance("nvme0"), Some(0));
        assert_eq!(controller_instance("nvme42"), Some(42));
        assert_eq!(controller_instance("nvme4294967295"), Some(u32::MAX));
        for bad in [
            "",
            "nvme",
            "nvme03",
            "nvme+3",
            "nvme-1",
            "nvme3n1",
            "nvme4294967296",
            "NVME3",
            " nvme3",
        ] {
            assert_eq!(controller_instance(bad), None, "{bad:?}");
        }
        assert_eq!(Detail::parse::<&str>(&[]), Ok(Detail::PerController));
        assert_eq!(Detail::parse(&["nvme3", "all"]), Ok(Detail::All));
        assert_eq!(
            Detail::parse(&["nvme3", "nvme1", "nvme3"]),
            Ok(Detail::Controllers([1, 3].into()))
        );
        let long = format!("nvme{}", "9".repeat(200));
        let e = Detail::parse(&[long]).unwrap_err();
        assert!(e.len() < 120, "echoes a bounded value: {e}");
    }

    /// What a scrape naming controllers keeps of an output per queue for every controller.
    #[test]
    fn keep_named_keeps_the_named_controllers_queues() {
        const CPUS: Family = Family::gauge("q_info", "Per queue only.");
        let mut sink = Sink::new();
        for c in ["nvme1", "nvme2"] {
            sink.gauge(&UP, &[("controller", c)], 1.0);
            sink.gauge(&UP, &[("controller", c), ("local_port", "4000")], 1.0);
            sink.gauge(&CPUS, &[("controller", c), ("queue", "1")], 1.0);
        }
        let all = sink.into_families();
        let series = |fams: &[MetricFamily]| -> usize { fams.iter().map(|f| f.metric.len()).sum() };
        assert_eq!(series(&Detail::All.keep_named(&all)), 6);
        let kept = Detail::Controllers([2].into()).keep_named(&all);
        assert_eq!(series(&kept), 4);
        assert!(kept
            .iter()
            .flat_map(|f| &f.metric)
            .all(|m| { m.label.len() == 1 || m.label.iter().any(|l| l.value() == "nvme2") }));
        // A family left empty goes: the page shows none of it, as without the queues.
        let none = Detail::Controllers([7].into()).keep_named(&all);
        assert_eq!(none.iter().map(|f| f.name()).collect::<Vec<_>>(), ["x_up"]);
        assert_eq!(series(&none), 2);
    }

    #[test]
    fn families_merge_by_name_and_come_out_sorted() {
        let mut first = Sink::new();
        first.gauge(&UP, &[("c", "1")], 1.0);
        first.skipped(2);
        assert_eq!(first.skipped_count(), 2);
        let mut second = Sink::new();
        second.gauge(&UP, &[("c", "2")], 0.0);
        second.counter(&A, &[], 3.0);
        second.extend(first.into_families());
        let fams = second.into_families();
        let names: Vec<_> = fams.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["a_total", "x_up"]);
        assert_eq!(fams[1].metric.len(), 2);
        assert_eq!(fams[0].r#type(), MetricType::Counter);
    }
}
