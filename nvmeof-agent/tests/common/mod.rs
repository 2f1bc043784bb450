//! What the integration tests share: the sysfs tree they run against and a scraper over it.
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};

use nvmeof_agent::cli::parse_from;
use nvmeof_agent::collectors::build_enabled;
use nvmeof_agent::scrape::Scraper;

/// A sysfs root for the tests, kept alive as long as the value.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

/// The tree of a 6.1 NVMe-oF host: the one place that decides where the golden and HTTP tests'
/// sysfs comes from. Built in code (`sysfs::fixture::lab_6_1`) until the lab's captured trees
/// sit in `tests/fixtures/sysfs/<kernel>/`; then point `root` there.
pub fn sysfs_6_1() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    nvmeof_agent::sysfs::fixture::lab_6_1(dir.path());
    let root = dir.path().to_owned();
    Fixture { _dir: dir, root }
}

/// A scraper with the default collectors over `sysfs`, as the binary would build it.
pub fn scraper(sysfs: &Path, extra_flags: &[&str]) -> Scraper {
    let mut args = vec![
        "nvmeof-exporter".to_owned(),
        format!("--path.sysfs={}", sysfs.display()),
    ];
    args.extend(extra_flags.iter().map(|s| s.to_string()));
    let config = parse_from(args).expect("flags parse");
    Scraper::new(
        build_enabled(&config).expect("collectors build"),
        config.collector_timeout,
    )
}

/// Masks what changes from run to run (collector durations) so whole outputs compare.
pub fn normalize(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("nvmeof_exporter_collector_duration_seconds{") {
                let (series, _) = l.rsplit_once(' ').unwrap_or((l, ""));
                format!("{series} <duration>")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
