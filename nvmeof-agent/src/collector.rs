//! The one small trait every collector implements, and the sink it writes metric families into.
//!
//! Modelled on node_exporter: a collector reads its source, converts and emits; it never serves
//! HTTP and never blocks on the kernel. "No data" (no NVMe-oF on this node) is not an error: the
//! collector emits nothing and returns `Ok`.
use std::collections::BTreeMap;

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

/// What a metric family is: the documentation test compares the union of every collector's
/// families with `docs/metrics.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

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

pub trait Collector: Send + Sync {
    /// The name used in `--collector.<name>` flags, logs and `nvmeof_exporter_collector_*` labels.
    fn name(&self) -> &'static str;
    /// Every family this collector may emit.
    fn families(&self) -> &'static [Family];
    /// Reads, converts, emits. An error fails this collector for this scrape only: the scrape
    /// serves its last good output instead, marked stale. Values skipped as missing or odd go to
    /// [`Sink::skipped`], not to an error.
    fn collect(&self, sink: &mut Sink) -> anyhow::Result<()>;
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
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

/// A Prometheus histogram: `cumulative[i]` observations at or under `bounds[i]` (the `+Inf`
/// bucket is `count`), `sum` of all observed values.
pub fn histogram(bounds: &[f64], cumulative: &[u64], count: u64, sum: f64) -> Metric {
    let mut h = Histogram::default();
    h.set_sample_count(count);
    h.set_sample_sum(sum);
    h.set_bucket(
        bounds
            .iter()
            .zip(cumulative)
            .map(|(&le, &c)| {
                let mut b = Bucket::default();
                b.set_upper_bound(le);
                b.set_cumulative_count(c);
                b
            })
            .collect(),
    );
    let mut m = Metric::default();
    m.set_histogram(h);
    m
}

impl Sink {
    pub fn new() -> Self {
        Self::default()
    }

    fn family(&mut self, f: &Family, t: MetricType) -> &mut MetricFamily {
        self.families.entry(f.name.to_owned()).or_insert_with(|| {
            let mut mf = MetricFamily::default();
            mf.set_name(f.name.to_owned());
            mf.set_help(f.help.to_owned());
            mf.set_field_type(t);
            mf
        })
    }

    /// Adds a fully built metric (histograms and summaries build their own).
    pub fn push(&mut self, f: &Family, mut m: Metric, pairs: &[(&str, &str)]) {
        let t = match f.kind {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
            Kind::Histogram => MetricType::HISTOGRAM,
            Kind::Summary => MetricType::SUMMARY,
        };
        m.set_label(labels(pairs));
        self.family(f, t).mut_metric().push(m);
    }

    pub fn gauge(&mut self, f: &Family, pairs: &[(&str, &str)], value: f64) {
        debug_assert_eq!(f.kind, Kind::Gauge, "{} is not a gauge", f.name);
        let mut g = Gauge::default();
        g.set_value(value);
        let mut m = Metric::default();
        m.set_gauge(g);
        self.push(f, m, pairs);
    }

    pub fn counter(&mut self, f: &Family, pairs: &[(&str, &str)], value: f64) {
        debug_assert_eq!(f.kind, Kind::Counter, "{} is not a counter", f.name);
        let mut c = Counter::default();
        c.set_value(value);
        let mut m = Metric::default();
        m.set_counter(c);
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
        for mut mf in families {
            match self.families.get_mut(mf.name()) {
                Some(have) => have.mut_metric().extend(mf.take_metric()),
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
        assert_eq!(fams[1].get_metric().len(), 2);
        assert_eq!(fams[0].get_field_type(), MetricType::COUNTER);
    }
}
