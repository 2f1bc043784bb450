//! The sink collectors write metric families into: one scrape's families, merged by name and
//! sorted, with histograms (classic and native buckets, exemplars) built from kernel counts.
use std::collections::BTreeMap;

use super::{Family, Kind};
use crate::exposition::model::{
    Bucket, Counter, Exemplar, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
    Timestamp,
};
use crate::exposition::Native;
use crate::sysfs::Spelled;

/// The label value of a sysfs attribute that may be absent: empty, which Prometheus reads as no
/// label at all.
pub fn label(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
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

    const UP: Family = Family::gauge("x_up", "Up.");
    const A: Family = Family::counter("a_total", "A.");

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
