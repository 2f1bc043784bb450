//! Protobuf exposition: each `io.prometheus.client.MetricFamily` as a varint length then the
//! message, one after the other, as client_golang's `expfmt` writes `encoding=delimited`. The one
//! format that carries native histogram buckets; with `native_only` the classic buckets of a
//! histogram that has native ones are left out (a native histogram needs none, and they are
//! most of the bytes), other histograms keep theirs.
use prost::Message as _;

use super::model::MetricFamily;

pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Encodes families, each length-delimited; families without metrics are left out.
pub fn encode(families: &[MetricFamily], native_only: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for mf in families.iter().filter(|f| !f.metric.is_empty()) {
        let has_native = |mf: &MetricFamily| {
            mf.metric
                .iter()
                .any(|m| m.histogram.as_ref().is_some_and(|h| h.is_native()))
        };
        if native_only && has_native(mf) {
            let mut mf = mf.clone();
            for h in mf.metric.iter_mut().filter_map(|m| m.histogram.as_mut()) {
                if h.is_native() {
                    h.bucket.clear();
                }
            }
            mf.encode_length_delimited(&mut out)
        } else {
            mf.encode_length_delimited(&mut out)
        }
        .expect("a Vec grows as needed");
    }
    out
}

/// Reads back what [`encode`] wrote (for tests and tools).
pub fn decode(mut bytes: &[u8]) -> Result<Vec<MetricFamily>, prost::DecodeError> {
    let mut families = Vec::new();
    while !bytes.is_empty() {
        families.push(MetricFamily::decode_length_delimited(&mut bytes)?);
    }
    Ok(families)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::{Family, HistogramData, Sink};
    use crate::exposition::model::{
        Bucket, BucketSpan, Counter, Histogram, LabelPair, Metric, MetricType,
    };
    use crate::exposition::Native;

    const LAT: Family = Family::histogram("x_latency_seconds", "Latency.");
    const CMDS: Family = Family::counter("x_commands_total", "Commands.");
    const DURATION: Family = Family::histogram("x_duration_seconds", "Classic only.");

    fn label(name: &str, value: &str) -> LabelPair {
        LabelPair {
            name: Some(name.into()),
            value: Some(value.into()),
        }
    }

    fn sink() -> Sink {
        let mut sink = Sink::new();
        sink.counter(&CMDS, &[("queue", "1")], 7.0);
        sink.histogram(
            &LAT,
            &[("queue", "1")],
            HistogramData {
                count: 7,
                sum: 0.0035,
                classic: &[(0.0001, 2), (0.001, 6)],
                native: Some(Native {
                    schema: 4,
                    zero_threshold: 1e-9,
                    zero_count: 1,
                    // 2 at index -212, 3 at -209 (2 empty buckets between), 1 at -150.
                    positive: vec![(-212, 2), (-209, 3), (-150, 1)],
                }),
                exemplars: &[],
            },
        );
        sink.histogram(
            &DURATION,
            &[],
            HistogramData {
                count: 1,
                sum: 0.5,
                classic: &[(1.0, 1)],
                native: None,
                exemplars: &[],
            },
        );
        sink
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let families = sink().into_families();
        let bytes = encode(&families, false);
        // The first family's length prefix is one varint byte (it is shorter than 128 bytes).
        assert_eq!(bytes[0] as usize, families[0].encoded_len());
        let back = decode(&bytes).unwrap();
        assert_eq!(back, families);

        let names: Vec<&str> = back.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "x_commands_total",
                "x_duration_seconds",
                "x_latency_seconds"
            ]
        );
        assert_eq!(back[0].r#type(), MetricType::Counter);
        assert_eq!(
            back[0].metric,
            [Metric {
                label: vec![label("queue", "1")],
                counter: Some(Counter {
                    value: Some(7.0),
                    ..Counter::default()
                }),
                ..Metric::default()
            }]
        );
        assert!(!back[1].metric[0].histogram.as_ref().unwrap().is_native());

        let lat = &back[2];
        assert_eq!(
            (lat.help(), lat.r#type()),
            ("Latency.", MetricType::Histogram)
        );
        let span = |offset, length| BucketSpan {
            offset: Some(offset),
            length: Some(length),
        };
        let bucket = |le, n| Bucket {
            cumulative_count: Some(n),
            upper_bound: Some(le),
            ..Bucket::default()
        };
        assert_eq!(
            lat.metric[0],
            Metric {
                label: vec![label("queue", "1")],
                histogram: Some(Histogram {
                    sample_count: Some(7),
                    sample_sum: Some(0.0035),
                    bucket: vec![bucket(0.0001, 2), bucket(0.001, 6)],
                    schema: Some(4),
                    zero_threshold: Some(1e-9),
                    zero_count: Some(1),
                    positive_span: vec![span(-212, 4), span(58, 1)],
                    positive_delta: vec![2, -2, 0, 3, -2],
                    ..Histogram::default()
                }),
                ..Metric::default()
            }
        );
    }

    #[test]
    fn native_only_drops_the_classic_buckets_of_native_histograms_alone() {
        let families = sink().into_families();
        let both = encode(&families, false);
        let native = encode(&families, true);
        assert!(native.len() < both.len());
        let back = decode(&native).unwrap();
        let lat = back[2].metric[0].histogram.as_ref().unwrap();
        assert!(lat.bucket.is_empty());
        assert_eq!(lat.positive_delta, [2, -2, 0, 3, -2]);
        assert_eq!(lat.sample_count, Some(7));
        // The classic-only histogram keeps its buckets.
        assert_eq!(
            back[1].metric[0].histogram.as_ref().unwrap().bucket.len(),
            1
        );
        assert_eq!(back[0], families[0]);
    }

    #[test]
    fn known_bytes_of_a_small_family() {
        let mut sink = Sink::new();
        sink.counter(&CMDS, &[], 1.0);
        let bytes = encode(&sink.into_families(), false);
        let mut want = vec![
            0x2c, // 44 bytes follow
            0x0a, 0x10, // name: field 1, length-delimited, 16 bytes
        ];
        want.extend(b"x_commands_total");
        want.extend([0x12, 0x09]); // help: field 2, 9 bytes
        want.extend(b"Commands.");
        want.extend([0x18, 0x00]); // type: field 3, varint COUNTER (present though 0)
        want.extend([0x22, 0x0b, 0x1a, 0x09, 0x09]); // metric { counter { value: double
        want.extend(1.0f64.to_le_bytes());
        assert_eq!(bytes, want);
    }
}
