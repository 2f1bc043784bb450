//! What the tests share, in one place: fixture sysfs trees (hand-made ones for odd and edge
//! cases, copies of the trees the lab captured from real kernels), and a collector's output as
//! text and values. Compiled for the unit tests and, through the `test-support` feature, for
//! the integration tests; never in the shipped binary.
pub mod btf;
mod tree;

use std::path::{Path, PathBuf};

pub use tree::{FixtureTree, Tree};

use crate::collector::{Collector, HistogramData, Scrape, Sink};
use crate::exposition::model::MetricFamily;
use crate::exposition::Native;

/// What the lab captured from real kernels (`cargo xtask capture`), a folder per kernel.
fn captured() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The sysfs tree the lab captured from a real 6.1 host with every transport connected (TCP over
/// two paths, RDMA, FC, loop), read in place: `cargo xtask capture` rewrites it.
pub fn captured_6_1() -> PathBuf {
    captured().join("6.1/sys")
}

/// Each kernel the lab captured tracepoint formats from, as its fixture folder's name beside its
/// `tracepoints` folder (`<event>/format` in it), sorted by name. None fails the test, so that a
/// test looping over them cannot pass on nothing.
pub fn captured_tracepoints() -> Vec<(String, PathBuf)> {
    let root = captured();
    let mut kernels: Vec<(String, PathBuf)> = std::fs::read_dir(&root)
        .expect("tests/fixtures")
        .flatten()
        .map(|k| {
            (
                k.file_name().to_string_lossy().into_owned(),
                k.path().join("tracepoints"),
            )
        })
        .filter(|(_, dir)| dir.is_dir())
        .collect();
    kernels.sort();
    assert!(
        !kernels.is_empty(),
        "no captured tracepoint formats under {}",
        root.display()
    );
    kernels
}

/// A copy of a sysfs tree that a test may change, kept alive as long as the value.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

/// [`captured_6_1`] copied, so a test may change it: the one place that decides where the
/// golden and HTTP tests' sysfs comes from.
pub fn sysfs_6_1() -> Fixture {
    let captured = captured_6_1();
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&captured)
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(status.success(), "copying {}", captured.display());
    let root = dir.path().join("sys");
    Fixture { _dir: dir, root }
}

/// What one scrape of `c` alone emits; a collector error fails the test.
pub fn collect(c: &dyn Collector) -> Sink {
    let mut sink = Sink::new();
    c.collect(&Scrape::new(), &mut sink).expect("collect");
    sink
}

/// What a sink holds, in the Prometheus text format.
pub fn text(sink: Sink) -> String {
    crate::exposition::text::encode(&sink.into_families())
}

/// One scrape of `c` alone in the Prometheus text format.
pub fn render(c: &dyn Collector) -> String {
    text(collect(c))
}

/// The family `name` in `fams`; a failed test, naming it, where there is none.
pub fn family<'a>(fams: &'a [MetricFamily], name: &str) -> &'a MetricFamily {
    fams.iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("no family {name}"))
}

/// Each series of `family` as the values of `labels`, in that order, beside the series' value,
/// sorted by those values: the order a collector emits its series in is not what a test checks.
/// A series without one of `labels` fails the test.
pub fn series(family: &MetricFamily, labels: &[&str]) -> Vec<(Vec<String>, f64)> {
    let mut got: Vec<(Vec<String>, f64)> = family
        .metric
        .iter()
        .map(|m| {
            let values = labels.iter().map(|&k| {
                let l = m.label.iter().find(|l| l.name() == k);
                let l = l.unwrap_or_else(|| panic!("{} without label {k}", family.name()));
                l.value().to_owned()
            });
            (values.collect(), m.value())
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    got
}

/// One latency histogram that every format can carry, for the exposition tests: 10
/// observations, 4 in native bucket -80 of schema 3, (2^(-81/8), 2^(-80/8)] s ≈ (0.90, 0.98] ms,
/// and 6 in bucket -70, ≈ (2.1, 2.3] ms, so the median is in the second. The classic buckets at
/// 1 ms and 2 ms count the same observations: the 6 slower ones are above both, so `+Inf` (the
/// count) differs from the last bound's bucket, and a `+Inf` written from the wrong one shows.
pub fn two_bucket_histogram() -> HistogramData<'static> {
    HistogramData {
        count: 10,
        sum: 0.017,
        classic: &[(0.001, 4), (0.002, 4)],
        native: Some(Native {
            schema: 3,
            zero_threshold: 0.0,
            zero_count: 0,
            positive: vec![(-80, 4), (-70, 6)],
        }),
        exemplars: &[],
    }
}

/// The value of the one series whose line in `text` starts with `prefix` (name and labels);
/// `None` when none does, a failed test when several do.
pub fn value(text: &str, prefix: &str) -> Option<f64> {
    let mut hits = text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap());
    let v = hits.next();
    assert!(hits.next().is_none(), "{prefix} matches several series");
    v
}

/// The `io` tracer's state after one drain in which each of `controllers` (instance, subsystem
/// NQN) completed, on I/O queue q (1 and 2), q reads of 4 KiB at q × 100 µs and one write of
/// 8 KiB on queue 1 at 50 µs, with q commands still in flight on queue q: the shape the model
/// publishes (reads and writes per queue), for rendering tests.
pub fn drained_io_state(controllers: &[(u32, &str)]) -> crate::bpf::io::IoState {
    use crate::bpf::io::model::{Model, RawMaps};
    use nvmeof_common::{latency_bucket, OpClass, OpKey, OpStats, QueueKey, QueueState};
    let stats = |n: u64, bytes: u64, ns: u64| {
        let mut s = OpStats {
            bytes: n * bytes,
            latency_sum_ns: n * ns,
            ..Default::default()
        };
        s.buckets[latency_bucket(ns)] = n as u32;
        s
    };
    let key = |ctrl_id, qid, class: OpClass| OpKey {
        ctrl_id,
        qid,
        opclass: class as u8,
        _pad: 0,
    };
    let mut raw = RawMaps::default();
    for &(c, _) in controllers {
        for q in 1..=2u16 {
            let n = u64::from(q);
            raw.ops
                .push((key(c, q, OpClass::Read), stats(n, 4096, n * 100_000)));
            let state = QueueState {
                submitted: 2 * n + 1,
                completed: n + 1,
                busy_ns: n * 1_000_000,
                last_event_ns: 0,
                ..Default::default()
            };
            raw.queues.push((
                QueueKey {
                    ctrl_id: c,
                    qid: q,
                    _pad: 0,
                },
                state,
            ));
        }
        raw.ops
            .push((key(c, 1, OpClass::Write), stats(1, 8192, 50_000)));
    }
    crate::bpf::io::IoState {
        up: true,
        view: Model::new().apply(raw),
        subsystems: controllers
            .iter()
            .map(|&(c, s)| (c, s.to_owned()))
            .collect(),
        ..Default::default()
    }
}
