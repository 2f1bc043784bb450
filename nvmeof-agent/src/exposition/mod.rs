//! Exposition: the metric model collectors fill (Prometheus' client_model messages, with native
//! histograms), the three formats it is served in, and which one a scraper gets.
//!
//! - [`text`]: Prometheus text 0.0.4, classic histogram buckets only; the default.
//! - [`openmetrics`]: OpenMetrics 1.0 text, classic buckets only.
//! - [`protobuf`]: length-delimited `io.prometheus.client.MetricFamily` messages, the only
//!   format that carries native histogram buckets ([`native`]).
//!
//! [`negotiate`] picks the format from the `Accept` header, q-values honoured.
pub mod model;
pub mod native;
pub mod openmetrics;
pub mod protobuf;
pub mod text;

pub use model::MetricFamily;
pub use native::Native;

/// A format a scrape may be answered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
    Protobuf,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => text::CONTENT_TYPE,
            Format::OpenMetrics => openmetrics::CONTENT_TYPE,
            Format::Protobuf => protobuf::CONTENT_TYPE,
        }
    }
}

/// The format an `Accept` header asks for: the media range with the highest q-value that names
/// a format served here (the first listed among equals). Text 0.0.4 for `text/plain`, `text/*`,
/// `*/*`, and when nothing matches (no header, a malformed one, only q=0); protobuf only with
/// `proto=io.prometheus.client.MetricFamily` and `encoding=delimited`, as client_golang asks.
pub fn negotiate(accept: &str) -> Format {
    let mut best: Option<(f32, Format)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = Some(1.0f32);
        let (mut proto, mut encoding) = (None, None);
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "q" => q = value.parse().ok().filter(|q: &f32| (0.0..=1.0).contains(q)),
                "proto" => proto = Some(value.to_owned()),
                "encoding" => encoding = Some(value.to_ascii_lowercase()),
                _ => {}
            }
        }
        let format = match media.as_str() {
            "text/plain" | "text/*" | "*/*" => Format::Text,
            "application/openmetrics-text" => Format::OpenMetrics,
            "application/vnd.google.protobuf"
                if proto.as_deref() == Some("io.prometheus.client.MetricFamily")
                    && encoding.as_deref() == Some("delimited") =>
            {
                Format::Protobuf
            }
            _ => continue,
        };
        // A q-value that does not parse makes the range malformed: it counts for nothing.
        let Some(q) = q.filter(|&q| q > 0.0) else {
            continue;
        };
        if best.is_none_or(|(b, _)| q > b) {
            best = Some((q, format));
        }
    }
    best.map_or(Format::Text, |(_, f)| f)
}

/// Writes `s` escaped for the text formats: backslash and newline always, the double quote in
/// label values (`quote`).
fn escape(s: &str, quote: bool, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// A sample value or a bound as the text formats write it: Rust's shortest round-trip decimal
/// (`0.00005`, `3.163`, `4096`), and `+Inf`, `-Inf`, `NaN`.
fn value(v: f64, out: &mut String) {
    use std::fmt::Write as _;
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// One sample line: `name{labels,extra="v"} value\n`.
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[model::LabelPair],
    extra: Option<(&str, &str)>,
    v: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || extra.is_some() {
        let mut sep = '{';
        let pairs = labels.iter().map(|l| (l.name(), l.value())).chain(extra);
        for (k, val) in pairs {
            out.push(sep);
            out.push_str(k);
            out.push_str("=\"");
            escape(val, true, out);
            out.push('"');
            sep = ',';
        }
        out.push('}');
    }
    out.push(' ');
    value(v, out);
    out.push('\n');
}

/// The classic buckets of `h` as `_bucket` lines, a `+Inf` bucket (the count) added when missing;
/// with `exemplars` (OpenMetrics), a bucket's exemplar after its value.
fn classic_buckets(
    out: &mut String,
    name: &str,
    labels: &[model::LabelPair],
    h: &model::Histogram,
    exemplars: bool,
) {
    let mut inf = false;
    for b in &h.bucket {
        inf |= b.upper_bound() == f64::INFINITY;
        let le = label_value(b.upper_bound());
        let count = b.cumulative_count() as f64;
        sample(out, name, "_bucket", labels, Some(("le", &le)), count);
        if let Some(e) = b.exemplar.as_ref().filter(|_| exemplars) {
            out.pop();
            exemplar(out, e);
            out.push('\n');
        }
    }
    if !inf {
        let count = h.sample_count() as f64;
        sample(out, name, "_bucket", labels, Some(("le", "+Inf")), count);
    }
}

/// ` # {labels} value timestamp`: an OpenMetrics exemplar, after the sample it belongs to.
fn exemplar(out: &mut String, e: &model::Exemplar) {
    out.push_str(" # {");
    for (i, l) in e.label.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(l.name());
        out.push_str("=\"");
        escape(l.value(), true, out);
        out.push('"');
    }
    out.push_str("} ");
    value(e.value(), out);
    if let Some(t) = e.timestamp {
        out.push(' ');
        out.push_str(&format!("{}.{:03}", t.seconds, t.nanos / 1_000_000));
    }
}

/// A bound or a quantile as a label value.
fn label_value(v: f64) -> String {
    let mut s = String::new();
    value(v, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMETHEUS_NATIVE: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";

    #[test]
    fn prometheus_with_native_histograms_gets_protobuf() {
        assert_eq!(negotiate(PROMETHEUS_NATIVE), Format::Protobuf);
        assert_eq!(
            negotiate("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"),
            Format::Protobuf
        );
    }

    #[test]
    fn prometheus_without_them_gets_openmetrics() {
        assert_eq!(
            negotiate("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate("application/openmetrics-text; version=1.0.0"),
            Format::OpenMetrics
        );
    }

    #[test]
    fn q_values_decide() {
        assert_eq!(
            negotiate("application/openmetrics-text;q=0.2,text/plain"),
            Format::Text
        );
        assert_eq!(
            negotiate("text/plain;q=0.3,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.9"),
            Format::Protobuf
        );
        // Equal q: the first listed.
        assert_eq!(
            negotiate("application/openmetrics-text;q=0.5,text/plain;q=0.5"),
            Format::OpenMetrics
        );
        assert_eq!(negotiate("application/openmetrics-text;q=0"), Format::Text);
    }

    #[test]
    fn protobuf_needs_the_message_and_the_delimited_encoding() {
        for accept in [
            "application/vnd.google.protobuf",
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily",
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text",
            "application/vnd.google.protobuf;proto=other.Message;encoding=delimited",
        ] {
            assert_eq!(negotiate(accept), Format::Text, "{accept}");
        }
    }

    #[test]
    fn absent_or_malformed_headers_get_text() {
        for accept in [
            "",
            ",,,",
            "garbage",
            "application/json",
            "application/openmetrics-text;q=high",
            "application/openmetrics-text;q=2",
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=-1",
            ";;;=;q=",
            "\u{1F600}/\u{1F600}",
        ] {
            assert_eq!(negotiate(accept), Format::Text, "{accept:?}");
        }
    }

    #[test]
    fn values_and_escapes() {
        let mut s = String::new();
        for v in [
            0.00005,
            3.163,
            4096.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ] {
            value(v, &mut s);
            s.push(' ');
        }
        assert_eq!(s, "0.00005 3.163 4096 +Inf -Inf NaN ");
        let mut e = String::new();
        escape("a\\b\n\"c\"", false, &mut e);
        escape("\"", true, &mut e);
        assert_eq!(e, "a\\\\b\\n\"c\"\\\"");
    }
}
