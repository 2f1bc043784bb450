//! Shared helpers for the end-to-end tests: one lab VM per kernel per test process, booted on
//! first use with every transport connected and the agent running, then shared by the tests (a
//! boot costs seconds under TCG; scenarios that change the topology restore it).
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use xtask::kernel::Series;
use xtask::lab::{Lab, LabOptions};

pub mod trace;

/// The kernels to test on: `NVMEOF_LAB_KERNELS` (comma separated), 6.1 by default.
pub fn kernels() -> Vec<Series> {
    let list = std::env::var("NVMEOF_LAB_KERNELS").unwrap_or_else(|_| "6.1".into());
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| Series::parse(s.trim()).expect("NVMEOF_LAB_KERNELS"))
        .collect()
}

/// The agent binary under test: `NVMEOF_AGENT_BIN`, which `cargo xtask test` sets after building.
pub fn agent_bin() -> PathBuf {
    let p = std::env::var_os("NVMEOF_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            xtask::cache::workspace()
                .join("target")
                .join(xtask::bootstrap::STATIC_TARGET)
                .join("release/nvmeof-exporter")
        });
    assert!(
        p.is_file(),
        "no agent binary at {}: run the lab tests through `cargo xtask test`",
        p.display()
    );
    p
}

/// Flags of the agent the lab tests start (see [`Shared::ensure_agent`]): the lab's own.
pub use xtask::lab::LAB_AGENT_ARGS;
pub use xtask::support;

/// A booted lab with its topology: the transports the kernel could not set up, with why.
pub struct Shared {
    pub lab: Lab,
    pub topology: String,
    agent_started: bool,
}

impl Shared {
    /// Records for the support matrix (`xtask::support`) what the running test found for
    /// `target` over `transport` on this lab's kernel; called once its assertions passed.
    pub fn support(&self, target: support::Target, transport: &str, outcome: support::Outcome) {
        let k = &self.lab.kernel;
        support::record(k.series, &k.release, target, transport, outcome);
    }

    /// Starts the agent in the guest once; later calls find it running.
    pub fn ensure_agent(&mut self) {
        if !self.agent_started {
            // Under TCG on a loaded host a collector can miss the default 50 ms deadline (seen:
            // sysfs and io collectors, with three lab VMs on a 2-core host), and then serves its last
            // output, stale, which would make before/after comparisons wrong: the lab's agent gets
            // 1 s. One scrape inside the guest warms the collectors' caches.
            let out = self
                .lab
                .sh(&format!(
                    "agent_start {LAB_AGENT_ARGS} && {{ scrape > /dev/null; sleep 1; }}"
                ))
                .expect("starting the agent");
            assert_eq!(out.rc, 0, "the agent did not come up:\n{}", out.out);
            self.agent_started = true;
            self.warm_up();
        }
    }

    /// Restarts the agent with other flags on top of [`LAB_AGENT_ARGS`] (`""`: the lab's agent as
    /// `ensure_agent` starts it) and waits for it as above.
    pub fn restart_agent(&mut self, args: &str) {
        let out = self
            .lab
            .sh(&format!("agent_stop; agent_start {LAB_AGENT_ARGS} {args}"))
            .expect("restarting the agent");
        assert_eq!(
            out.rc, 0,
            "the agent did not come up ({args}):\n{}",
            out.out
        );
        self.agent_started = true;
        self.warm_up();
    }

    /// Scrapes until every collector has answered once within its deadline (at most 10 s). A
    /// collector contributes nothing before its first success, and under TCG on a busy host the
    /// first runs after a start (cold sysfs, first map drain) can miss the 50 ms deadline.
    fn warm_up(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let (m, _) = self.scrape();
            let all = m
                .select("nvmeof_exporter_collector_success", &[])
                .all(|s| s.value == 1.0);
            if all && m.has_family("nvmeof_exporter_collector_success") {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }

    /// Scrapes `/metrics` through the forwarded port: the body, and how long the answer took.
    pub fn scrape(&mut self) -> (Metrics, std::time::Duration) {
        self.scrape_path("/metrics")
    }

    /// Scrapes `path` (the metrics path with a query, `/metrics?controller=nvme0`), which must
    /// answer 200, as [`Shared::scrape`].
    pub fn scrape_path(&mut self, path: &str) -> (Metrics, std::time::Duration) {
        self.ensure_agent();
        let (status, body, took) = self.lab.http_get(path).expect("scraping the agent");
        assert_eq!(status, 200, "{path}: {body}");
        (Metrics::parse(&body), took)
    }

    /// A scrape of `path` in which the collectors the I/O tests read (`io`, `controller`,
    /// `subsystem`) answered within their deadline. Under TCG on a loaded machine one sometimes
    /// misses its 50 ms deadline and serves its previous output (`collector_stale 1`): a delta
    /// taken across such a scrape would read zero.
    pub fn fresh_scrape_of(&mut self, path: &str) -> (Metrics, std::time::Duration) {
        let mut last = String::new();
        for _ in 0..20 {
            let (m, took) = self.scrape_path(path);
            let fresh = ["io", "controller", "subsystem"]
                .iter()
                .all(|c| m.sum("nvmeof_exporter_collector_success", &[("collector", c)]) == 1.0);
            if fresh {
                return (m, took);
            }
            last = m.text;
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        panic!("no scrape with every collector on time in 20 tries; the last:\n{last}");
    }

    /// [`Shared::fresh_scrape_of`] `/metrics`, at once: the scrape drains the maps itself, so it
    /// counts every command completed before it (no wait for a periodic drain).
    pub fn scrape_now(&mut self) -> Metrics {
        self.fresh_scrape_of("/metrics").0
    }

    /// The output of `script` in the guest, trimmed; a failure panics with the kernel's release
    /// and the script.
    pub fn sh_out(&mut self, script: &str) -> String {
        self.lab
            .sh_ok(script)
            .unwrap_or_else(|e| panic!("{}: {script}: {e:#}", self.lab.kernel.release))
            .trim()
            .to_owned()
    }

    /// The transports this kernel is expected to carry: all four, less those its limits name.
    /// The fabrics the lab could not set up on this kernel, with why (a module it could not
    /// build).
    pub fn missing_transports(&self) -> Vec<(&'static str, String)> {
        let limit = |module: &str| {
            self.lab
                .kernel
                .limits
                .iter()
                .find(|l| l.starts_with(module))
        };
        [("fc", "nvme-fcloop"), ("loop", "nvme-loop")]
            .into_iter()
            .filter_map(|(t, module)| limit(module).map(|l| (t, l.clone())))
            .collect()
    }

    pub fn expected_transports(&self) -> Vec<&'static str> {
        let limited = |module: &str| self.lab.kernel.limits.iter().any(|l| l.starts_with(module));
        let mut t = vec!["tcp", "rdma"];
        if !limited("nvme-fcloop") {
            t.push("fc");
        }
        if !limited("nvme-loop") {
            t.push("loop");
        }
        t
    }

    /// The names of the controllers of `transport` in the guest.
    pub fn controllers_on(&mut self, transport: &str) -> Vec<String> {
        self.controllers()
            .into_iter()
            .filter(|(_, t, _, _)| t == transport)
            .map(|(name, ..)| name)
            .collect()
    }

    /// `controllers` in the guest, parsed: (name, transport, state, subsysnqn).
    pub fn controllers(&mut self) -> Vec<(String, String, String, String)> {
        let out = self.lab.sh_ok("controllers").expect("listing controllers");
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 4).then(|| {
                    (
                        f[0].into(),
                        f[1].into(),
                        f[2..f.len() - 1].join(" "),
                        f[f.len() - 1].into(),
                    )
                })
            })
            .collect()
    }
}

type Slot = Arc<Mutex<Option<Shared>>>;

fn slot(series: Series) -> Slot {
    static LABS: OnceLock<Mutex<BTreeMap<&'static str, Slot>>> = OnceLock::new();
    let mut labs = LABS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    labs.entry(series.name()).or_default().clone()
}

/// One scrape of a lab of the test's own (not the shared one), which must answer 200.
pub fn scrape_lab(lab: &Lab) -> Metrics {
    let (status, body, _) = lab.http_get("/metrics").expect("scraping the agent");
    assert_eq!(status, 200, "{body}");
    Metrics::parse(&body)
}

/// The NQN the lab gives the subsystem of transport `t` (`tcp`, `rdma`, `fc`, `loop`).
pub fn nqn(t: &str) -> String {
    format!("nqn.2026-11.io.nvmeof-exporter.lab:{t}")
}

/// How much the series of `name` matching `by` and `extra` moved from `before` to `after`.
pub fn moved(
    before: &Metrics,
    after: &Metrics,
    by: &[(&str, &str)],
    name: &str,
    extra: &[(&str, &str)],
) -> f64 {
    let want: Vec<(&str, &str)> = by.iter().chain(extra).copied().collect();
    after.moved_from(before, name, &want)
}

/// The lines of a guest script's output that start with `tag`, without it: how the lab tests
/// tell what they echo apart from the rest.
pub fn tagged<'a>(out: &'a str, tag: &str) -> Vec<&'a str> {
    out.lines().filter_map(|l| l.strip_prefix(tag)).collect()
}

/// The first line of `out` that starts with `tag`, without it; none panics with `out`.
pub fn one<'a>(out: &'a str, tag: &str) -> &'a str {
    tagged(out, tag)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no {tag} line:\n{out}"))
}

/// Writes of 64 KiB and of 4 KiB, then reads of each, with `dd` on one namespace, direct so
/// that each block is one command: what the I/O tests count exactly, each with its own counts.
#[derive(Clone, Copy)]
pub struct DdMix {
    pub w64: usize,
    pub w4: usize,
    pub r64: usize,
    pub r4: usize,
}

impl DdMix {
    /// The shell lines on the device in `$d`, the first failure ending them; a count of zero
    /// runs no `dd`. The 4 KiB writes start past the 64 KiB ones' first MiB.
    pub fn script(&self) -> String {
        let DdMix { w64, w4, r64, r4 } = *self;
        [
            (
                w64,
                format!("dd if=/dev/zero of=$d bs=64k count={w64} oflag=direct 2>/dev/null"),
            ),
            (
                w4,
                format!("dd if=/dev/zero of=$d bs=4k count={w4} seek=256 oflag=direct 2>/dev/null"),
            ),
            (
                r64,
                format!("dd if=$d of=/dev/null bs=64k count={r64} iflag=direct 2>/dev/null"),
            ),
            (
                r4,
                format!("dd if=$d of=/dev/null bs=4k count={r4} iflag=direct 2>/dev/null"),
            ),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(_, line)| line)
        .collect::<Vec<_>>()
        .join(" &&\n")
    }

    pub fn writes(&self) -> usize {
        self.w64 + self.w4
    }

    /// Every byte and command of the mix counted exactly on subsystem `sub` between two scrapes.
    pub fn assert_counted(&self, before: &Metrics, after: &Metrics, sub: &str, ctx: &str) {
        let bytes = self.w64 * 65536 + self.w4 * 4096;
        assert_direction(before, after, sub, "write", bytes, self.writes(), ctx);
        self.assert_reads_counted(before, after, sub, ctx);
    }

    /// The reads' bytes and commands alone counted exactly (where writes may go unmatched).
    pub fn assert_reads_counted(&self, before: &Metrics, after: &Metrics, sub: &str, ctx: &str) {
        let bytes = self.r64 * 65536 + self.r4 * 4096;
        assert_direction(before, after, sub, "read", bytes, self.r64 + self.r4, ctx);
    }
}

/// The bytes and commands of one direction (`opclass` `read` or `write`) on subsystem `sub`
/// counted exactly between two scrapes.
fn assert_direction(
    before: &Metrics,
    after: &Metrics,
    sub: &str,
    opclass: &str,
    bytes: usize,
    commands: usize,
    ctx: &str,
) {
    let by = [("subsystem", sub)];
    let delta = |name: &str, extra: &[(&str, &str)]| moved(before, after, &by, name, extra);
    assert_eq!(
        delta(&format!("nvmeof_io_{opclass}_bytes_total"), &[]),
        bytes as f64,
        "{ctx}: {opclass} bytes"
    );
    assert_eq!(
        delta("nvmeof_io_commands_total", &[("opclass", opclass)]),
        commands as f64,
        "{ctx}: {opclass}s"
    );
}

/// Runs `f` in the shared lab of every kernel under test (`NVMEOF_LAB_KERNELS`), with that
/// kernel's release for messages: the loop every lab test starts with.
pub fn on_each_lab(mut f: impl FnMut(&mut Shared, &str)) {
    for k in kernels() {
        with_lab(k, |s| {
            let release = s.lab.kernel.release.clone();
            f(s, &release)
        });
    }
}

/// Runs `f` on the shared lab of a kernel, booting it first if needed.
///
/// A guest kernel that stops under `f` is no finding of the test: under TCG on a busy host one
/// vCPU's timer once stopped and the other spun on it (a 6.1 lab, 36 s after boot), and every
/// test of the process after it timed out on its first command. When `f` fails and the guest
/// has both said so on its console and stopped answering ([`Lab::stopped_since`]), the lab is
/// replaced and `f` runs once more on a fresh one, said on the test's stderr whether it then
/// passes or not. A guest that stops twice fails the test; one that still answers never reruns it.
pub fn with_lab<R>(series: Series, mut f: impl FnMut(&mut Shared) -> R) -> R {
    let slot = slot(series);
    let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
    let mut rerun = false;
    loop {
        let shared = guard.get_or_insert_with(|| boot_shared(series));
        let mark = shared.lab.console_mark();
        let failure = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(shared))) {
            Ok(r) => return r,
            Err(failure) => failure,
        };
        let release = shared.lab.kernel.release.clone();
        let Some(why) = shared.lab.stopped_since(mark) else {
            std::panic::resume_unwind(failure)
        };
        // The tests after this one get a fresh lab either way.
        *guard = None;
        let next = if rerun {
            "it stopped twice, so the test fails"
        } else {
            "running the test once more on a fresh lab"
        };
        // Past libtest's capture: the rerun is said even when it passes.
        let _ = writeln!(
            std::io::stderr(),
            "lab {release}: the guest kernel stopped and no longer answers ({why}); {next}"
        );
        if rerun {
            std::panic::resume_unwind(failure)
        }
        rerun = true;
    }
}

fn boot_shared(series: Series) -> Shared {
    let mut opts = LabOptions::standard(series);
    opts.agent = Some(agent_bin());
    let mut lab = Lab::boot(&opts).expect("booting the lab");
    let topology = lab
        .sh("topology; controllers")
        .expect("setting up the topology")
        .out;
    eprintln!("lab {}: topology\n{topology}", lab.kernel.release);
    Shared {
        lab,
        topology,
        agent_started: false,
    }
}

/// One sample of the Prometheus text format.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed `/metrics` page (the text format the agent writes; enough for assertions).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                None => (series, Vec::new()),
            };
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        Metrics {
            samples,
            text: text.to_owned(),
        }
    }

    /// Samples of a name whose labels include all of `want`.
    pub fn select<'a>(
        &'a self,
        name: &'a str,
        want: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && want.iter().all(|(k, v)| s.label(k) == Some(*v)))
    }

    /// The sum of the samples `select` finds (0 when none).
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.select(name, want).map(|s| s.value).sum()
    }

    /// How much the samples `select` finds moved since `before`: counters' increase.
    pub fn moved_from(&self, before: &Metrics, name: &str, want: &[(&str, &str)]) -> f64 {
        self.sum(name, want) - before.sum(name, want)
    }

    /// How much each finite classic bucket of histogram `name` moved since `before`, summed over
    /// the series with all of `want`: (bound in seconds, count), by bound.
    pub fn buckets_moved_from(
        &self,
        before: &Metrics,
        name: &str,
        want: &[(&str, &str)],
    ) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut by_le: BTreeMap<String, f64> = BTreeMap::new();
        for (m, sign) in [(self, 1.0), (before, -1.0)] {
            for s in m.select(&bucket, want) {
                if let Some(le) = s.label("le") {
                    *by_le.entry(le.to_owned()).or_default() += sign * s.value;
                }
            }
        }
        let mut v: Vec<(f64, f64)> = by_le
            .into_iter()
            .filter_map(|(le, n)| Some((le.parse::<f64>().ok()?, n)))
            .filter(|(le, _)| le.is_finite())
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    }

    pub fn has_family(&self, name: &str) -> bool {
        self.text
            .lines()
            .any(|l| l.starts_with(&format!("# TYPE {name} ")))
    }
}

/// The `"key" : number` pairs of a JSON text, at any depth, first occurrence of a key kept:
/// enough to read `nvme smart-log -o json` (whose shape varies across nvme-cli versions)
/// without a JSON library. Strings, booleans, arrays and nested keys' parents are skipped.
pub fn json_numbers(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end] != b'"' {
            end += if b[end] == b'\\' { 2 } else { 1 };
        }
        let key = &text[start..end.min(b.len())];
        let mut j = end + 1;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j < b.len() && b[j] == b':' {
            j += 1;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let v0 = j;
            // nvme-cli 2.x prints 128-bit counters as strings of digits: "4".
            let quoted = j < b.len() && b[j] == b'"';
            let n0 = if quoted { j + 1 } else { j };
            j = n0;
            while j < b.len() && matches!(b[j], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                j += 1;
            }
            let closed = !quoted || (j < b.len() && b[j] == b'"');
            if let (true, Ok(v)) = (closed, text[n0..j].parse::<f64>()) {
                out.entry(key.to_owned()).or_insert(v);
                i = if quoted { j + 1 } else { j };
            } else {
                i = v0;
            }
        } else {
            i = end + 1;
        }
    }
    out
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut v = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        v.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => v.push(c),
            }
        }
        out.push((k.trim_start_matches(',').trim().to_owned(), v));
        rest = &after[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_out_of_json_at_any_depth() {
        let m = json_numbers(
            "{\n  \"critical_warning\" : 5,\n  \"temperature\":323,\"s\" : \"a:1\",\n  \
             \"o\" : { \"value\" : 7 }, \"n\" : -1.5e3, \"u\":\"12\" }",
        );
        assert_eq!(m.get("critical_warning"), Some(&5.0));
        assert_eq!(m.get("temperature"), Some(&323.0));
        assert_eq!(m.get("value"), Some(&7.0));
        assert_eq!(m.get("n"), Some(&-1500.0));
        assert_eq!(m.get("u"), Some(&12.0));
        assert_eq!(m.len(), 5, "{m:?}");
    }

    #[test]
    fn parses_samples_with_escaped_labels() {
        let m = Metrics::parse(
            "# TYPE a counter\na_total{x=\"1\",y=\"q\\\"z,\"} 3\nb 2.5\nc{le=\"+Inf\"} +Inf\n",
        );
        assert_eq!(m.samples.len(), 3);
        assert_eq!(m.samples[0].label("y"), Some("q\"z,"));
        assert_eq!(m.sum("a_total", &[("x", "1")]), 3.0);
        assert_eq!(m.sum("b", &[]), 2.5);
        assert!(m.has_family("a"));
        assert_eq!(m.select("c", &[]).next().unwrap().value, f64::INFINITY);
    }
}

/// What the agent's own scrape-duration histogram (`nvmeof_exporter_scrape_duration_seconds`)
/// says about the scrapes answered between two pages: how many, how many over 100 ms, and the
/// smallest bucket bound that holds them all.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ServedBetween {
    pub scrapes: f64,
    pub over_100ms: f64,
    pub max_le: f64,
}

impl std::fmt::Display for ServedBetween {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the agent's own time: {} of {} over 100 ms, all within {} s",
            self.over_100ms, self.scrapes, self.max_le
        )
    }
}

impl Metrics {
    /// (le, cumulative count) of the scrape-duration histogram, in bound order.
    fn served_buckets(&self) -> Vec<(f64, f64)> {
        self.select("nvmeof_exporter_scrape_duration_seconds_bucket", &[])
            .filter_map(|b| {
                let le = match b.label("le")? {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().ok()?,
                };
                Some((le, b.value))
            })
            .collect()
    }

    /// The scrapes answered after `earlier` was served and before this page (neither page's own
    /// scrape: each page shows the scrapes before it).
    pub fn served_since(&self, earlier: &Metrics) -> ServedBetween {
        let (b0, b1) = (earlier.served_buckets(), self.served_buckets());
        let delta: Vec<(f64, f64)> = b1
            .iter()
            .zip(&b0)
            .map(|((le, n1), (_, n0))| (*le, n1 - n0))
            .collect();
        let scrapes = delta.last().map_or(0.0, |(_, n)| *n);
        let within = delta
            .iter()
            .find(|(le, _)| (*le - 0.1).abs() < 1e-9)
            .map(|(_, n)| *n)
            .expect("a 0.1 s bucket");
        ServedBetween {
            scrapes,
            over_100ms: scrapes - within,
            max_le: delta
                .iter()
                .find(|(_, n)| *n == scrapes)
                .map_or(f64::INFINITY, |(le, _)| *le),
        }
    }
}
