//! Prometheus text format 0.0.4, as the `prometheus` crate's `TextEncoder` wrote it (the golden
//! tests hold it to the byte): `# HELP` (when there is help) then `# TYPE`, histograms as their
//! classic buckets (a `+Inf` bucket added when missing), `_sum`, `_count`; summaries as quantiles,
//! `_sum`, `_count`. Native histogram buckets have no place in this format and are left out.
//! One difference: infinite values are written `+Inf` and `-Inf` (the crate wrote Rust's `inf`).
use super::model::{MetricFamily, MetricType};
use super::{classic_buckets, escape, label_value, sample};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encodes families (sorted and unique by name, as `Sink` gives them); a family without
/// metrics is left out.
pub fn encode(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for mf in families.iter().filter(|f| !f.metric.is_empty()) {
        let name = mf.name();
        if !mf.help().is_empty() {
            out.push_str("# HELP ");
            out.push_str(name);
            out.push(' ');
            escape(mf.help(), false, &mut out);
            out.push('\n');
        }
        let kind = match mf.r#type() {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
            MetricType::Histogram | MetricType::GaugeHistogram => "histogram",
        };
        out.push_str("# TYPE ");
        out.push_str(name);
        out.push(' ');
        out.push_str(kind);
        out.push('\n');
        for m in &mf.metric {
            let labels = &m.label;
            if let Some(h) = &m.histogram {
                classic_buckets(&mut out, name, labels, h, false);
                let count = h.sample_count() as f64;
                sample(&mut out, name, "_sum", labels, None, h.sample_sum());
                sample(&mut out, name, "_count", labels, None, count);
            } else if let Some(s) = &m.summary {
                for q in &s.quantile {
                    let quantile = label_value(q.quantile());
                    let extra = Some(("quantile", quantile.as_str()));
                    sample(&mut out, name, "", labels, extra, q.value());
                }
                sample(&mut out, name, "_sum", labels, None, s.sample_sum());
                let count = s.sample_count() as f64;
                sample(&mut out, name, "_count", labels, None, count);
            } else {
                sample(&mut out, name, "", labels, None, m.value());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::{Family, Sink};
    use crate::test_support::two_bucket_histogram;

    const LAT: Family = Family::histogram(
        "x_latency_seconds",
        "Latency \\ in \"seconds\"\nper command.",
    );
    const UP: Family = Family::gauge("x_up", "");

    #[test]
    fn histograms_print_classic_buckets_and_help_escapes() {
        let mut sink = Sink::new();
        // The native buckets are for protobuf scrapers: the text carries the classic ones only.
        sink.histogram(&LAT, &[("queue", "a\"b\\c\nd")], two_bucket_histogram());
        sink.gauge(&UP, &[], f64::INFINITY);
        let want = "\
# HELP x_latency_seconds Latency \\\\ in \"seconds\"\\nper command.
# TYPE x_latency_seconds histogram
x_latency_seconds_bucket{queue=\"a\\\"b\\\\c\\nd\",le=\"0.001\"} 4
x_latency_seconds_bucket{queue=\"a\\\"b\\\\c\\nd\",le=\"0.002\"} 4
x_latency_seconds_bucket{queue=\"a\\\"b\\\\c\\nd\",le=\"+Inf\"} 10
x_latency_seconds_sum{queue=\"a\\\"b\\\\c\\nd\"} 0.017
x_latency_seconds_count{queue=\"a\\\"b\\\\c\\nd\"} 10
# TYPE x_up gauge
x_up +Inf
";
        assert_eq!(encode(&sink.into_families()), want);
    }

    /// The format as `promtool check metrics` (Debian's `prometheus` package) reads it, when
    /// promtool is installed; says so and passes when it is not.
    #[test]
    fn promtool_accepts_the_text() {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        let mut sink = Sink::new();
        sink.histogram(&LAT, &[("queue", "1")], two_bucket_histogram());
        const BUILD: Family = Family::gauge("x_build_info", "Build.");
        sink.gauge(&BUILD, &[("version", "0.1.0")], 1.0);
        let text = encode(&sink.into_families());
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("skipped: promtool not found (Debian package `prometheus`)");
            return;
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "promtool: {said}\n{text}");
        assert_eq!(said.trim(), "", "promtool lint: {said}");
    }
}
