//! OpenMetrics 1.0 text exposition of the same metric families the Prometheus 0.0.4 encoder
//! writes, for scrapers that ask for `application/openmetrics-text`.
//!
//! Differences from 0.0.4 that matter here: a counter family is named without `_total` and its
//! sample carries it; a gauge named `*_info` whose values are all 1 is an `info` family; `# UNIT`
//! is given when the family name ends in a base unit; help text escapes quotes; `# EOF` ends.
use std::fmt::Write as _;

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Units OpenMetrics and Prometheus naming use; a family name ending in `_<unit>` declares it.
const UNITS: &[&str] = &[
    "seconds", "bytes", "ratio", "celsius", "joules", "volts", "amperes", "meters", "grams",
];

/// Whether an `Accept` header prefers OpenMetrics over the 0.0.4 text format (q-values honoured).
pub fn wants_openmetrics(accept: &str) -> bool {
    let mut om = 0.0f32;
    let mut text = 0.0f32;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    om > 0.0 && om >= text
}

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn sample(out: &mut String, name: &str, labels: &[LabelPair], extra: Option<(&str, &str)>, v: f64) {
    out.push_str(name);
    let mut pairs: Vec<(&str, &str)> = labels.iter().map(|l| (l.name(), l.value())).collect();
    pairs.extend(extra);
    if !pairs.is_empty() {
        out.push('{');
        for (i, (k, val)) in pairs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape(val, out);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&value(v));
    out.push('\n');
}

fn is_info(mf: &MetricFamily) -> bool {
    mf.get_field_type() == MetricType::GAUGE
        && mf.name().ends_with("_info")
        && mf
            .get_metric()
            .iter()
            .all(|m| m.get_gauge().get_value() == 1.0)
}

/// Encodes families (sorted and unique by name, as `Sink` gives them) into OpenMetrics text.
pub fn encode(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for mf in families.iter().filter(|f| !f.get_metric().is_empty()) {
        let name = mf.name();
        let (family, kind) = match mf.get_field_type() {
            MetricType::COUNTER => (name.strip_suffix("_total").unwrap_or(name), "counter"),
            MetricType::GAUGE if is_info(mf) => {
                (name.strip_suffix("_info").unwrap_or(name), "info")
            }
            MetricType::GAUGE => (name, "gauge"),
            MetricType::HISTOGRAM => (name, "histogram"),
            MetricType::SUMMARY => (name, "summary"),
            MetricType::UNTYPED => (name, "unknown"),
        };
        let _ = writeln!(out, "# TYPE {family} {kind}");
        if let Some(unit) = UNITS.iter().find(|u| family.ends_with(&format!("_{u}"))) {
            let _ = writeln!(out, "# UNIT {family} {unit}");
        }
        if !mf.help().is_empty() {
            let _ = write!(out, "# HELP {family} ");
            escape(mf.help(), &mut out);
            out.push('\n');
        }
        for m in mf.get_metric() {
            metric(&mut out, family, kind, m);
        }
    }
    out.push_str("# EOF\n");
    out
}

fn metric(out: &mut String, family: &str, kind: &str, m: &Metric) {
    let labels = m.get_label();
    match kind {
        "counter" => sample(
            out,
            &format!("{family}_total"),
            labels,
            None,
            m.get_counter().get_value(),
        ),
        "info" => sample(out, &format!("{family}_info"), labels, None, 1.0),
        "gauge" => sample(out, family, labels, None, m.get_gauge().get_value()),
        // Nothing here builds untyped families; other producers' would read through this.
        #[allow(deprecated)]
        "unknown" => sample(out, family, labels, None, m.get_untyped().get_value()),
        "histogram" => {
            let h = m.get_histogram();
            let bucket = format!("{family}_bucket");
            let mut inf = false;
            for b in h.get_bucket() {
                inf |= b.upper_bound() == f64::INFINITY;
                let le = value(b.upper_bound());
                sample(
                    out,
                    &bucket,
                    labels,
                    Some(("le", &le)),
                    b.cumulative_count() as f64,
                );
            }
            if !inf {
                sample(
                    out,
                    &bucket,
                    labels,
                    Some(("le", "+Inf")),
                    h.get_sample_count() as f64,
                );
            }
            sample(
                out,
                &format!("{family}_count"),
                labels,
                None,
                h.get_sample_count() as f64,
            );
            sample(
                out,
                &format!("{family}_sum"),
                labels,
                None,
                h.get_sample_sum(),
            );
        }
        _ => {
            let s = m.get_summary();
            for q in s.get_quantile() {
                let quantile = value(q.quantile());
                sample(
                    out,
                    family,
                    labels,
                    Some(("quantile", &quantile)),
                    q.value(),
                );
            }
            sample(
                out,
                &format!("{family}_count"),
                labels,
                None,
                s.sample_count() as f64,
            );
            sample(out, &format!("{family}_sum"), labels, None, s.sample_sum());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::{Family, Kind, Sink};
    use prometheus::proto::{Bucket, Histogram};

    const READS: Family = Family {
        name: "x_read_bytes_total",
        help: "Bytes \"read\".",
        kind: Kind::Counter,
    };
    const INFO: Family = Family {
        name: "x_build_info",
        help: "Build.",
        kind: Kind::Gauge,
    };
    const LAT: Family = Family {
        name: "x_latency_seconds",
        help: "Latency.",
        kind: Kind::Histogram,
    };

    #[test]
    fn counters_infos_units_histograms_and_eof() {
        let mut sink = Sink::new();
        sink.counter(&READS, &[("ns", "a\"b")], 4096.0);
        sink.gauge(&INFO, &[("version", "0.1.0")], 1.0);
        let mut h = Histogram::default();
        let mut b = Bucket::default();
        b.set_upper_bound(0.001);
        b.set_cumulative_count(3);
        h.set_bucket(vec![b]);
        h.set_sample_count(4);
        h.set_sample_sum(0.5);
        let mut m = Metric::default();
        m.set_histogram(h);
        sink.push(&LAT, m, &[]);
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

    #[test]
    fn negotiation_honours_q_values() {
        assert!(wants_openmetrics(
            "application/openmetrics-text; version=1.0.0"
        ));
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        ));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics(
            "application/openmetrics-text;q=0.2,text/plain"
        ));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
        assert!(!wants_openmetrics(""));
    }
}
