//! The support matrix of `docs/support.md` (target × transport × kernel), generated from what the
//! lab ran. A lab test that proves a target over a transport on a kernel, or finds the kernel
//! without it, records so ([`record`]) in the cache; `cargo xtask support` folds those records
//! into `docs/support/runs.tsv`, which the repository keeps as the evidence, and renders the
//! matrix from that file between the page's markers. A unit test holds the page to the file, so
//! neither is edited without the other.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::kernel::Series;

/// A target implementation with a namespace backend, one row group of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The key in `runs.tsv`.
    pub id: &'static str,
    pub name: &'static str,
    pub backend: &'static str,
}

impl Target {
    const fn new(id: &'static str, name: &'static str, backend: &'static str) -> Target {
        Target { id, name, backend }
    }
}

pub const NVMET_NULL_BLK: Target =
    Target::new("nvmet-null_blk", "Linux nvmet", "null_blk (bdev backend)");
pub const NVMET_FILE: Target = Target::new(
    "nvmet-file",
    "Linux nvmet",
    "a file (file backend, buffered)",
);
pub const NVMET_LOOP_DEVICE: Target = Target::new(
    "nvmet-loop-device",
    "Linux nvmet",
    "a loop device (bdev backend on a file)",
);
pub const QEMU_PCIE: Target = Target::new("qemu-pcie", "QEMU's emulated NVMe", "QEMU's image");
pub const NVMET_PASSTHRU: Target = Target::new(
    "nvmet-passthru",
    "Linux nvmet passthru of QEMU's PCIe controller",
    "the real controller",
);
pub const NVMET_DHCHAP: Target =
    Target::new("nvmet-dhchap", "Linux nvmet with DH-HMAC-CHAP", "null_blk");
pub const NVMET_TLS: Target = Target::new(
    "nvmet-tls",
    "Linux nvmet with TLS 1.3 (PSK, tlshd)",
    "null_blk",
);
pub const NVMET_ANA: Target = Target::new(
    "nvmet-ana",
    "Linux nvmet, ANA groups on two ports",
    "null_blk",
);

/// The matrix's row order.
pub const TARGETS: [Target; 8] = [
    NVMET_NULL_BLK,
    NVMET_FILE,
    NVMET_LOOP_DEVICE,
    QEMU_PCIE,
    NVMET_PASSTHRU,
    NVMET_DHCHAP,
    NVMET_TLS,
    NVMET_ANA,
];
pub const TRANSPORTS: [&str; 5] = ["tcp", "rdma", "fc", "loop", "pcie"];
pub const SERIES: [Series; 4] = [Series::V5_10, Series::V6_1, Series::V6_12, Series::Sid];

/// What one test found on one kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its assertions passed.
    Proven,
    /// The kernel lacks what the row needs (the test checked that it does), and why.
    Absent(String),
    /// The lab could not set the row up on this kernel (not the kernel's doing), and why.
    NotRun(String),
}

/// One line of `runs.tsv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub series: Series,
    /// `uname -r` of the lab kernel.
    pub release: String,
    pub target: String,
    pub transport: String,
    pub test: String,
    pub outcome: Outcome,
    /// UTC, `YYYY-MM-DD`.
    pub date: String,
}

const HEADER: &str = "# series\trelease\ttarget\ttransport\ttest\toutcome\tdate";

impl Run {
    fn line(&self) -> String {
        let outcome = match &self.outcome {
            Outcome::Proven => "proven".to_owned(),
            Outcome::Absent(why) => format!("absent: {why}"),
            Outcome::NotRun(why) => format!("not run: {why}"),
        };
        [
            self.series.name(),
            &self.release,
            &self.target,
            &self.transport,
            &self.test,
            &outcome,
            &self.date,
        ]
        .map(|f| f.replace(['\t', '\n'], " "))
        .join("\t")
    }

    fn parse(line: &str) -> Result<Run> {
        let f: Vec<&str> = line.split('\t').collect();
        let [series, release, target, transport, test, outcome, date] = f[..] else {
            bail!("{line:?}: not 7 tab-separated fields");
        };
        let outcome = match (
            outcome.strip_prefix("absent: "),
            outcome.strip_prefix("not run: "),
        ) {
            (Some(why), _) => Outcome::Absent(why.to_owned()),
            (_, Some(why)) => Outcome::NotRun(why.to_owned()),
            _ if outcome == "proven" => Outcome::Proven,
            _ => bail!("{line:?}: outcome {outcome:?}"),
        };
        if !TARGETS.iter().any(|t| t.id == target) || !TRANSPORTS.contains(&transport) {
            bail!("{line:?}: unknown target or transport");
        }
        Ok(Run {
            series: Series::parse(series)?,
            release: release.to_owned(),
            target: target.to_owned(),
            transport: transport.to_owned(),
            test: test.to_owned(),
            outcome,
            date: date.to_owned(),
        })
    }
}

/// The runs of a `runs.tsv` text; comment lines skipped.
pub fn parse(text: &str) -> Result<Vec<Run>> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(Run::parse)
        .collect()
}

/// The file the lab's tests append to: in the cache, never in the repository.
pub fn records() -> Result<PathBuf> {
    Ok(crate::cache::dir("support")?.join("runs.tsv"))
}

/// Records what the running test (its thread's name, as the test harness sets it) found for
/// `target` over `transport` on `series`'s kernel `release`. One short append per line, so the
/// tests' threads do not interleave within one. A failure to record is the test's failure.
pub fn record(series: Series, release: &str, target: Target, transport: &str, outcome: Outcome) {
    let thread = std::thread::current();
    let run = Run {
        series,
        release: release.to_owned(),
        target: target.id.to_owned(),
        transport: transport.to_owned(),
        test: thread.name().unwrap_or("unnamed").to_owned(),
        outcome,
        date: today(),
    };
    let write = || -> Result<()> {
        let path = records()?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.write_all(format!("{}\n", run.line()).as_bytes())?;
        Ok(())
    };
    if let Err(e) = write() {
        panic!("recording {run:?} for the support matrix: {e:#}");
    }
}

/// Today's UTC date, from the system clock (days since the epoch, civil calendar).
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil(secs / 86_400);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Howard Hinnant's `civil_from_days`.
fn civil(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `old` with `new` laid over it: per (kernel series, target, transport, test), the latest run.
pub fn merge(old: Vec<Run>, new: Vec<Run>) -> Vec<Run> {
    let mut by: BTreeMap<(usize, String, String, String), Run> = BTreeMap::new();
    for r in old.into_iter().chain(new) {
        let series = SERIES.iter().position(|s| *s == r.series).unwrap_or(0);
        let key = (
            series,
            r.target.clone(),
            r.transport.clone(),
            r.test.clone(),
        );
        match by.get(&key) {
            Some(have) if have.date > r.date => {}
            _ => {
                by.insert(key, r);
            }
        }
    }
    by.into_values().collect()
}

/// `runs.tsv`'s text for `runs`.
pub fn runs_file(runs: &[Run]) -> String {
    let mut out = format!("{HEADER}\n");
    for r in runs {
        out.push_str(&r.line());
        out.push('\n');
    }
    out
}

/// The matrix: a row per (target, transport) that some run names, a column per kernel series.
/// A cell says ✓ where a test passed on that kernel, "absent" (and why) where the test found the
/// kernel without it, and "not run" where the lab could not set it up (and why) or no run is on
/// record: only what ran is claimed.
pub fn render(runs: &[Run]) -> String {
    let mut out = String::from("| target | namespace backend | transport |");
    for s in SERIES {
        out.push_str(&format!(" {} |", s.name()));
    }
    out.push_str(" proven by |\n| --- | --- | --- |");
    out.push_str(&" --- |".repeat(SERIES.len()));
    out.push_str(" --- |\n");
    for t in TARGETS {
        for transport in TRANSPORTS {
            let row: Vec<&Run> = runs
                .iter()
                .filter(|r| r.target == t.id && r.transport == transport)
                .collect();
            if row.is_empty() {
                continue;
            }
            out.push_str(&format!("| {} | {} | {} |", t.name, t.backend, transport));
            for s in SERIES {
                let on: Vec<&&Run> = row.iter().filter(|r| r.series == s).collect();
                let cell = if on.iter().any(|r| r.outcome == Outcome::Proven) {
                    let release = on
                        .iter()
                        .find(|r| r.outcome == Outcome::Proven)
                        .map(|r| r.release.as_str())
                        .unwrap_or_default();
                    format!("✓ `{release}`")
                } else {
                    match on.first().map(|r| &r.outcome) {
                        Some(Outcome::Absent(why)) => format!("absent: {why}"),
                        Some(Outcome::NotRun(why)) => format!("not run: {why}"),
                        _ => "not run".to_owned(),
                    }
                };
                out.push_str(&format!(" {cell} |"));
            }
            let mut tests: Vec<&str> = row.iter().map(|r| r.test.as_str()).collect();
            tests.sort_unstable();
            tests.dedup();
            let tests: Vec<String> = tests.iter().map(|t| format!("`{t}`")).collect();
            out.push_str(&format!(" {} |\n", tests.join(", ")));
        }
    }
    let mut dates: Vec<&str> = runs.iter().map(|r| r.date.as_str()).collect();
    dates.sort_unstable();
    if let (Some(first), Some(last)) = (dates.first(), dates.last()) {
        out.push_str(&format!(
            "\nFrom {} lab runs on record, {first} to {last} (`docs/support/runs.tsv`).\n",
            runs.len()
        ));
    }
    out
}

const BEGIN: &str =
    "<!-- support matrix: generated by `cargo xtask support` from docs/support/runs.tsv -->";
const END: &str = "<!-- end of the support matrix -->";

/// `page` with the text between its markers replaced by `matrix`.
pub fn splice(page: &str, matrix: &str) -> Result<String> {
    let (Some(b), Some(e)) = (page.find(BEGIN), page.find(END)) else {
        bail!("docs/support.md lacks the markers {BEGIN:?} and {END:?}");
    };
    if e < b {
        bail!("docs/support.md: the end marker comes before the beginning");
    }
    Ok(format!("{}{BEGIN}\n\n{matrix}\n{}", &page[..b], &page[e..]))
}

fn docs(ws: &Path) -> (PathBuf, PathBuf) {
    (ws.join("docs/support.md"), ws.join("docs/support/runs.tsv"))
}

/// The runs of a file; none if there is no such file.
fn read_runs(path: &Path) -> Result<Vec<Run>> {
    match std::fs::read_to_string(path) {
        Ok(t) => parse(&t).with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `cargo xtask support`: folds the cache's records into `runs.tsv` and renders the page.
pub fn update(ws: &Path) -> Result<()> {
    let (page_path, runs_path) = docs(ws);
    let old = read_runs(&runs_path)?;
    let recorded = records()?;
    let new = read_runs(&recorded)?;
    let n = new.len();
    let runs = merge(old, new);
    if let Some(dir) = runs_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&runs_path, runs_file(&runs))?;
    let page = std::fs::read_to_string(&page_path)?;
    std::fs::write(&page_path, splice(&page, &render(&runs))?)?;
    println!(
        "support: {n} records from {} folded into {} ({} runs), {} rendered",
        recorded.display(),
        runs_path.display(),
        runs.len(),
        page_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(series: Series, target: Target, transport: &str, outcome: Outcome, date: &str) -> Run {
        Run {
            series,
            release: format!("{}-lab", series.name()),
            target: target.id.to_owned(),
            transport: transport.to_owned(),
            test: "a_test".to_owned(),
            outcome,
            date: date.to_owned(),
        }
    }

    /// The passthru row over TCP: absent on 5.10, proven on sid a day later.
    fn passthru_runs() -> Vec<Run> {
        vec![
            run(
                Series::V5_10,
                NVMET_PASSTHRU,
                "tcp",
                Outcome::Absent("not built".into()),
                "2026-12-06",
            ),
            run(
                Series::Sid,
                NVMET_PASSTHRU,
                "tcp",
                Outcome::Proven,
                "2026-12-07",
            ),
        ]
    }

    #[test]
    fn runs_survive_their_file() {
        let mut runs = passthru_runs();
        runs.push(run(
            Series::Sid,
            NVMET_NULL_BLK,
            "fc",
            Outcome::NotRun("no module".into()),
            "2026-12-07",
        ));
        assert_eq!(parse(&runs_file(&runs)).unwrap(), runs);
        assert!(parse("6.1\tr\tnope\ttcp\tt\tproven\td").is_err());
        assert!(parse("6.1\tr\tnvmet-ana\ttcp\tt\tmaybe\td").is_err());
        assert!(parse("6.1\tr\tnvmet-ana\ttcp").is_err());
    }

    /// The latest run of a test on a kernel wins; other kernels and tests stay.
    #[test]
    fn a_newer_run_replaces_the_older_only() {
        let old = vec![
            run(
                Series::V6_1,
                NVMET_ANA,
                "tcp",
                Outcome::Absent("x".into()),
                "2026-12-01",
            ),
            run(
                Series::V6_12,
                NVMET_ANA,
                "tcp",
                Outcome::Proven,
                "2026-12-01",
            ),
        ];
        let new = vec![run(
            Series::V6_1,
            NVMET_ANA,
            "tcp",
            Outcome::Proven,
            "2026-12-07",
        )];
        let merged = merge(old, new);
        assert_eq!(merged.len(), 2);
        assert!(merged.iter().all(|r| r.outcome == Outcome::Proven));
    }

    #[test]
    fn the_matrix_claims_only_what_ran() {
        let m = render(&passthru_runs());
        let row = m.lines().find(|l| l.contains("passthru")).unwrap();
        assert_eq!(
            row,
            "| Linux nvmet passthru of QEMU's PCIe controller | the real controller | tcp | \
             absent: not built | not run | not run | ✓ `sid-lab` | `a_test` |"
        );
        assert_eq!(m.lines().filter(|l| l.starts_with("| Linux")).count(), 1);
        assert!(m.contains("From 2 lab runs on record, 2026-12-06 to 2026-12-07"));
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_430), (2025, 12, 8));
    }

    /// The page's matrix is the rendering of the runs file kept beside it.
    #[test]
    fn the_page_is_the_runs_file_rendered() {
        let (page, runs) = docs(&crate::cache::workspace());
        let page = std::fs::read_to_string(page).unwrap();
        let runs = parse(&std::fs::read_to_string(runs).unwrap()).unwrap();
        assert!(!runs.is_empty());
        assert_eq!(
            page,
            splice(&page, &render(&runs)).unwrap(),
            "docs/support.md is not docs/support/runs.tsv rendered: run `cargo xtask support`"
        );
    }
}
