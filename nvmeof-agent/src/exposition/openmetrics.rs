//! OpenMetrics 1.0 text exposition of the same metric families the Prometheus 0.0.4 encoder
//! writes, for scrapers that ask for `application/openmetrics-text`.
//!
//! Differences from 0.0.4 that matter here: a counter family is named without `_total` and its
//! sample carries it; a gauge named `*_info` whose values are all 1 is an `info` family; `# UNIT`
//! is given when the family name ends in a base unit; help text escapes quotes; `# EOF` ends.
use super::model::{Metric, MetricFamily, MetricType};
use super::{classic_buckets, escape, label_value, sample};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Units OpenMetrics and Prometheus naming use; a family name ending in `_<unit>` declares it.
const UNITS: &[&str] = &[
    "seconds", "bytes", "ratio", "celsius", "joules", "volts", "amperes", "meters", "grams",
];

fn is_info(mf: &MetricFamily) -> bool {
    mf.r#type() == MetricType::Gauge
        && mf.name().ends_with("_info")
        && mf.metric.iter().all(|m| m.value() == 1.0)
}

/// Encodes families (sorted and unique by name, as `Sink` gives them) into OpenMetrics text.
/// Native histogram buckets have no place in OpenMetrics 1.0 text and are left out.
pub fn encode(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for mf in families.iter().filter(|f| !f.metric.is_empty()) {
        let name = mf.name();
        let (family, kind) = match mf.r#type() {
            MetricType::Counter => (name.strip_suffix("_total").unwrap_or(name), "counter"),
            MetricType::Gauge if is_info(mf) => {
                (name.strip_suffix("_info").unwrap_or(name), "info")
            }
            MetricType::Gauge => (name, "gauge"),
            MetricType::Histogram => (name, "histogram"),
            MetricType::GaugeHistogram => (name, "gaugehistogram"),
            MetricType::Summary => (name, "summary"),
            MetricType::Untyped => (name, "unknown"),
        };
        for line in ["# TYPE ", family, " ", kind, "\n"] {
            out.push_str(line);
        }
        if let Some(unit) = UNITS.iter().find(|u| family.ends_with(&format!("_{u}"))) {
            for line in ["# UNIT ", family, " ", unit, "\n"] {
                out.push_str(line);
            }
        }
        if !mf.help().is_empty() {
            for line in ["# HELP ", family, " "] {
                out.push_str(line);
            }
            escape(mf.help(), true, &mut out);
            out.push('\n');
        }
        for m in &mf.metric {
            metric(&mut out, family, kind, m);
        }
    }
    out.push_str("# EOF\n");
    out
}

fn metric(out: &mut String, family: &str, kind: &str, m: &Metric) {
    let labels = &m.label;
    match (kind, &m.histogram, &m.summary) {
        ("counter", ..) => sample(out, family, "_total", labels, None, m.value()),
        ("info", ..) => sample(out, family, "_info", labels, None, 1.0),
        (_, Some(h), _) => {
            classic_buckets(out, family, labels, h, true);
            let count = h.sample_count() as f64;
            let gauge = kind == "gaugehistogram";
            let (count_suffix, sum_suffix) = if gauge {
                ("_gcount", "_gsum")
            } else {
                ("_count", "_sum")
            };
            sample(out, family, count_suffix, labels, None, count);
            sample(out, family, sum_suffix, labels, None, h.sample_sum());
        }
        (_, _, Some(s)) => {
            for q in &s.quantile {
                let quantile = label_value(q.quantile());
                let extra = Some(("quantile", quantile.as_str()));
                sample(out, family, "", labels, extra, q.value());
            }
            sample(out, family, "_count", labels, None, s.sample_count() as f64);
            sample(out, family, "_sum", labels, None, s.sample_sum());
        }
        // Gauges, and untyped families (`unknown`) other producers might build.
        _ => sample(out, family, "", labels, None, m.value()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::{Family, HistogramData, Sink};

    const READS: Family = Family::counter("x_read_bytes_total", "Bytes \"read\".");
    const INFO: Family = Family::gauge("x_build_info", "Build.");
    const LAT: Family = Family::histogram("x_latency_seconds", "Latency.");

    #[test]
    fn counters_infos_units_histograms_and_eof() {
        let mut sink = Sink::new();
        sink.counter(&READS, &[("ns", "a\"b")], 4096.0);
        sink.gauge(&INFO, &[("version", "0.1.0")], 1.0);
        sink.histogram(
            &LAT,
            &[],
            HistogramData {
                count: 4,
                sum: 0.5,
                classic: &[(0.001, 3)],
                native: None,
                exemplars: &[],
            },
        );
        let text = encode(&sink.into_families());
        let expected = "\
# TYPE x_build info
# HELP x_build Build.
x_build_info{version=\"0.1.0\"} 1
# TYPE x_latency_seconds histogram
# UNIT x_latency_seconds seconds
# HELP x_latency_seconds Latency.
x_latency_seconds_bucket{le=\"0.001\"} 3
x_latency_seconds_bucket{le=\"+Inf\"} 4
x_latency_seconds_count 4
x_latency_seconds_sum 0.5
# TYPE x_read_bytes counter
# UNIT x_read_bytes bytes
# HELP x_read_bytes Bytes \\\"read\\\".
x_read_bytes_total{ns=\"a\\\"b\"} 4096
# EOF
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_gauge_named_info_with_other_values_stays_a_gauge() {
        let mut sink = Sink::new();
        sink.gauge(&INFO, &[], 2.0);
        assert!(encode(&sink.into_families()).starts_with("# TYPE x_build_info gauge\n"));
    }
}
