//! The metric model: Prometheus' `io.prometheus.client` messages (client_model's
//! `io/prometheus/client/metrics.proto`, proto2), written out by hand as prost messages so that
//! no protoc and no build script is needed. Field numbers and wire types are the .proto's, cited
//! beside each field; `optional` fields are `Option`s, so presence is kept as proto2 keeps it (a
//! `COUNTER` type, which is 0, is still sent). Repeated scalars are unpacked, as proto2 declares
//! them; Prometheus reads either form.
//!
//! The `prometheus` crate's model stops before native histograms; this one has the native
//! histogram fields of `Histogram` (schema, zero bucket, spans and deltas).

/// `message LabelPair`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct LabelPair {
    /// `optional string name = 1`
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// `optional string value = 2`
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// `enum MetricType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Summary = 2,
    Untyped = 3,
    Histogram = 4,
    GaugeHistogram = 5,
}

/// `message Gauge`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Gauge {
    /// `optional double value = 1`
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

/// `message Counter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Counter {
    /// `optional double value = 1`
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
    /// `optional Exemplar exemplar = 2`
    #[prost(message, optional, tag = "2")]
    pub exemplar: Option<Exemplar>,
    /// `optional google.protobuf.Timestamp created_timestamp = 3`
    #[prost(message, optional, tag = "3")]
    pub created_timestamp: Option<Timestamp>,
}

/// `message Quantile`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Quantile {
    /// `optional double quantile = 1`
    #[prost(double, optional, tag = "1")]
    pub quantile: Option<f64>,
    /// `optional double value = 2`
    #[prost(double, optional, tag = "2")]
    pub value: Option<f64>,
}

/// `message Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// `optional uint64 sample_count = 1`
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    /// `optional double sample_sum = 2`
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    /// `repeated Quantile quantile = 3`
    #[prost(message, repeated, tag = "3")]
    pub quantile: Vec<Quantile>,
    /// `optional google.protobuf.Timestamp created_timestamp = 4`
    #[prost(message, optional, tag = "4")]
    pub created_timestamp: Option<Timestamp>,
}

/// `message Untyped`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Untyped {
    /// `optional double value = 1`
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

/// `message Histogram`: the classic buckets (`bucket`) and the native histogram (from
/// `schema` on) side by side; a scraper that reads protobuf takes the native part when present.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    /// `optional uint64 sample_count = 1`
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    /// `optional double sample_count_float = 4`: overrides `sample_count` if > 0.
    #[prost(double, optional, tag = "4")]
    pub sample_count_float: Option<f64>,
    /// `optional double sample_sum = 2`
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    /// `repeated Bucket bucket = 3`: the classic buckets, ascending `upper_bound`, `+Inf` optional.
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    /// `optional google.protobuf.Timestamp created_timestamp = 15`
    #[prost(message, optional, tag = "15")]
    pub created_timestamp: Option<Timestamp>,
    /// `optional sint32 schema = 5`: bucket boundaries grow by 2^(2^-schema), -4 ≤ schema ≤ 8.
    #[prost(sint32, optional, tag = "5")]
    pub schema: Option<i32>,
    /// `optional double zero_threshold = 6`: the zero bucket is [-zero_threshold, zero_threshold].
    #[prost(double, optional, tag = "6")]
    pub zero_threshold: Option<f64>,
    /// `optional uint64 zero_count = 7`
    #[prost(uint64, optional, tag = "7")]
    pub zero_count: Option<u64>,
    /// `optional double zero_count_float = 8`: overrides `zero_count` if > 0.
    #[prost(double, optional, tag = "8")]
    pub zero_count_float: Option<f64>,
    /// `repeated BucketSpan negative_span = 9`
    #[prost(message, repeated, tag = "9")]
    pub negative_span: Vec<BucketSpan>,
    /// `repeated sint64 negative_delta = 10`: each bucket's count minus the previous bucket's.
    #[prost(sint64, repeated, packed = "false", tag = "10")]
    pub negative_delta: Vec<i64>,
    /// `repeated double negative_count = 11`: absolute counts, for float histograms.
    #[prost(double, repeated, packed = "false", tag = "11")]
    pub negative_count: Vec<f64>,
    /// `repeated BucketSpan positive_span = 12`; one span `{0, 0}` marks a native histogram
    /// that has no observation yet and a zero threshold of 0.
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    /// `repeated sint64 positive_delta = 13`: each bucket's count minus the previous bucket's
    /// (the first one's minus 0), across spans.
    #[prost(sint64, repeated, packed = "false", tag = "13")]
    pub positive_delta: Vec<i64>,
    /// `repeated double positive_count = 14`: absolute counts, for float histograms.
    #[prost(double, repeated, packed = "false", tag = "14")]
    pub positive_count: Vec<f64>,
    /// `repeated Exemplar exemplars = 16`
    #[prost(message, repeated, tag = "16")]
    pub exemplars: Vec<Exemplar>,
}

/// `message Bucket`: one classic bucket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Bucket {
    /// `optional uint64 cumulative_count = 1`
    #[prost(uint64, optional, tag = "1")]
    pub cumulative_count: Option<u64>,
    /// `optional double cumulative_count_float = 4`: overrides `cumulative_count` if > 0.
    #[prost(double, optional, tag = "4")]
    pub cumulative_count_float: Option<f64>,
    /// `optional double upper_bound = 2`: inclusive.
    #[prost(double, optional, tag = "2")]
    pub upper_bound: Option<f64>,
    /// `optional Exemplar exemplar = 3`
    #[prost(message, optional, tag = "3")]
    pub exemplar: Option<Exemplar>,
}

/// `message BucketSpan`: `length` consecutive native buckets, `offset` buckets after the end of
/// the previous span (for the first span: its first bucket's index, which may be negative).
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct BucketSpan {
    /// `optional sint32 offset = 1`
    #[prost(sint32, optional, tag = "1")]
    pub offset: Option<i32>,
    /// `optional uint32 length = 2`
    #[prost(uint32, optional, tag = "2")]
    pub length: Option<u32>,
}

/// `message Exemplar`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    /// `repeated LabelPair label = 1`
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    /// `optional double value = 2`
    #[prost(double, optional, tag = "2")]
    pub value: Option<f64>,
    /// `optional google.protobuf.Timestamp timestamp = 3`
    #[prost(message, optional, tag = "3")]
    pub timestamp: Option<Timestamp>,
}

/// `google.protobuf.Timestamp` (a proto3 message: `int64 seconds = 1; int32 nanos = 2`).
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `message Metric`: one series (its labels) and its value, by type.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// `repeated LabelPair label = 1`
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    /// `optional Gauge gauge = 2`
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Gauge>,
    /// `optional Counter counter = 3`
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    /// `optional Summary summary = 4`
    #[prost(message, optional, tag = "4")]
    pub summary: Option<Summary>,
    /// `optional Untyped untyped = 5`
    #[prost(message, optional, tag = "5")]
    pub untyped: Option<Untyped>,
    /// `optional Histogram histogram = 7`
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
    /// `optional int64 timestamp_ms = 6`
    #[prost(int64, optional, tag = "6")]
    pub timestamp_ms: Option<i64>,
}

/// `message MetricFamily`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricFamily {
    /// `optional string name = 1`
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// `optional string help = 2`
    #[prost(string, optional, tag = "2")]
    pub help: Option<String>,
    /// `optional MetricType type = 3`
    #[prost(enumeration = "MetricType", optional, tag = "3")]
    pub r#type: Option<i32>,
    /// `repeated Metric metric = 4`
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
    /// `optional string unit = 5`
    #[prost(string, optional, tag = "5")]
    pub unit: Option<String>,
}

impl Metric {
    /// The one value of a counter, gauge or untyped sample (0 for histograms and summaries).
    pub fn value(&self) -> f64 {
        self.counter
            .as_ref()
            .map(Counter::value)
            .or_else(|| self.gauge.as_ref().map(Gauge::value))
            .or_else(|| self.untyped.as_ref().map(Untyped::value))
            .unwrap_or(0.0)
    }
}

impl Histogram {
    /// Whether this histogram carries native buckets (a schema), beside or instead of classic ones.
    pub fn is_native(&self) -> bool {
        self.schema.is_some()
    }
}
