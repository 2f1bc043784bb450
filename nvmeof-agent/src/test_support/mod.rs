//! What the tests share, in one place: fixture sysfs trees (hand-made ones for odd and edge
//! cases, copies of the trees the lab captured from real kernels), and a collector's output as
//! text and values. Compiled for the unit tests and, through the `test-support` feature, for
//! the integration tests; never in the shipped binary.
pub mod btf;
mod tree;

use std::path::{Path, PathBuf};

pub use tree::{FixtureTree, Tree};

use crate::collector::{Collector, Scrape, Sink};

/// The sysfs tree the lab captured from a real 6.1 host with every transport connected (TCP over
/// two paths, RDMA, FC, loop), read in place: `cargo xtask capture` rewrites it.
pub fn captured_6_1() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/6.1/sys")
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
