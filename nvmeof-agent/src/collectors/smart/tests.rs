//! The `smart` collector against a temporary sysfs tree and a scripted admin backend: golden
//! output, hangs, permission errors, non-live and vanishing controllers.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::*;
use crate::nvme::{NvmeError, SMART_LOG_LEN};
use crate::smart::poller::{discover, AdminBackend, Poller};
use crate::smart::{SmartOptions, SmartSource};
use crate::test_support::{collect, render, value};

const INTERVAL: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_millis(20);

#[derive(Clone)]
enum Script {
    Pages(Vec<u8>, Box<[u8; SMART_LOG_LEN]>),
    PermissionDenied,
    /// The SMART command completes with this NVMe status.
    Status(u16),
    /// Blocks in `smart_log` until the test sends on (or drops) the paired sender.
    Hang(Arc<Mutex<mpsc::Receiver<()>>>),
}

#[derive(Default)]
struct FakeBackend {
    scripts: Mutex<HashMap<String, Script>>,
    calls: Mutex<HashMap<String, usize>>,
    identifies: Mutex<HashMap<String, usize>>,
    running: AtomicUsize,
}

impl FakeBackend {
    fn set(&self, ctrl: &str, s: Script) {
        self.scripts.lock().unwrap().insert(ctrl.into(), s);
    }
    /// SMART log reads of `ctrl`: one per poll that got that far.
    fn calls(&self, ctrl: &str) -> usize {
        *self.calls.lock().unwrap().get(ctrl).unwrap_or(&0)
    }
    fn identifies(&self, ctrl: &str) -> usize {
        *self.identifies.lock().unwrap().get(ctrl).unwrap_or(&0)
    }
    fn script(&self, ctrl: &str) -> Script {
        self.scripts.lock().unwrap()[ctrl].clone()
    }
}

impl AdminBackend for FakeBackend {
    fn identify(&self, ctrl: &str, _: Duration) -> Result<Vec<u8>, NvmeError> {
        *self
            .identifies
            .lock()
            .unwrap()
            .entry(ctrl.into())
            .or_default() += 1;
        match self.script(ctrl) {
            Script::Pages(id, _) => Ok(id),
            Script::PermissionDenied => Err(NvmeError::PermissionDenied {
                dev: Path::new("/dev").join(ctrl),
                op: "open",
            }),
            Script::Hang(_) | Script::Status(_) => Ok(crate::nvme::identify::tests::full_page()),
        }
    }

    fn smart_log(
        &self,
        ctrl: &str,
        _rae: bool,
        timeout: Duration,
    ) -> Result<[u8; SMART_LOG_LEN], NvmeError> {
        *self.calls.lock().unwrap().entry(ctrl.into()).or_default() += 1;
        match self.script(ctrl) {
            Script::Pages(_, smart) => Ok(*smart),
            Script::PermissionDenied => unreachable!("identify fails first"),
            Script::Status(status) => Err(NvmeError::Status {
                dev: Path::new("/dev").join(ctrl),
                op: "Get Log Page",
                status,
            }),
            Script::Hang(rx) => {
                self.running.fetch_add(1, Ordering::SeqCst);
                let _ = rx.lock().unwrap().recv();
                self.running.fetch_sub(1, Ordering::SeqCst);
                // What the kernel returns when its timeout finally cancels the command.
                Err(NvmeError::Timeout {
                    dev: Path::new("/dev").join(ctrl),
                    op: "Get Log Page",
                    timeout,
                })
            }
        }
    }
}

fn add_ctrl(sys: &Path, name: &str, state: &str) {
    let d = sys.join("class/nvme").join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("state"), format!("{state}\n")).unwrap();
    std::fs::write(
        d.join("subsysnqn"),
        format!("nqn.2014-08.org.example:{name}\n"),
    )
    .unwrap();
    // The revision of the backend's Identify page, padded as the kernel prints it.
    std::fs::write(d.join("firmware_rev"), "9.1.0   \n").unwrap();
}

fn setup() -> (tempfile::TempDir, Arc<FakeBackend>, Arc<Poller>) {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FakeBackend::default());
    let poller = Poller::new(dir.path().to_owned(), INTERVAL, TIMEOUT, backend.clone());
    (dir, backend, poller)
}

/// A poller over controllers (name, sysfs state, what the backend answers for it).
fn with_ctrls(
    ctrls: Vec<(&str, &str, Script)>,
) -> (tempfile::TempDir, Arc<FakeBackend>, Arc<Poller>) {
    let (dir, backend, poller) = setup();
    for (name, state, script) in ctrls {
        add_ctrl(dir.path(), name, state);
        backend.set(name, script);
    }
    (dir, backend, poller)
}

fn wait_idle(p: &Poller) {
    let t = Instant::now();
    while p.busy() {
        assert!(t.elapsed() < Duration::from_secs(5), "poll never finished");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The collector over a poller the test ticks by hand.
fn over(poller: Arc<Poller>) -> SmartCollector {
    SmartCollector::new(SmartSource::with_poller(poller))
}

fn pages() -> Script {
    Script::Pages(
        crate::nvme::identify::tests::full_page(),
        Box::new(crate::nvme::smart_log::tests::full_page()),
    )
}

#[test]
fn golden_output() {
    let (dir, backend, poller) = setup();
    add_ctrl(dir.path(), "nvme0", "live");
    add_ctrl(dir.path(), "nvme1", "live");
    backend.set("nvme0", pages());
    // An nvmet fabrics target: identify filled in, SMART all zeros (no temperature at all).
    backend.set(
        "nvme1",
        Script::Pages(
            crate::nvme::identify::tests::full_page(),
            Box::new([0; SMART_LOG_LEN]),
        ),
    );
    poller.tick();
    wait_idle(&poller);
    let at = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
    poller.set_last_success("nvme0", at);
    poller.set_last_success("nvme1", at);
    let text = render(&over(poller));

    let golden =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smart/metrics.prom");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &text).unwrap();
    }
    let want = std::fs::read_to_string(&golden).expect("golden file; UPDATE_GOLDEN=1 writes it");
    assert_eq!(text, want, "output differs from {}", golden.display());

    // A few figures checked by hand, so the golden file cannot drift into nonsense.
    let l = r#"{controller="nvme0",subsystem="nqn.2014-08.org.example:nvme0""#;
    let v = |name: &str, extra: &str| value(&text, &format!("{name}{l}{extra}"));
    assert_eq!(v("nvmeof_smart_critical_warning_raw", "}"), Some(63.0));
    assert_eq!(
        v("nvmeof_smart_critical_warning", r#",bit="read_only"}"#),
        Some(1.0)
    );
    let t = v(
        "nvmeof_smart_temperature_celsius",
        r#",sensor="composite"}"#,
    )
    .unwrap();
    assert!((t - 49.85).abs() < 1e-9);
    assert_eq!(
        v("nvmeof_smart_temperature_celsius", r#",sensor="4"}"#),
        None
    );
    assert_eq!(
        v("nvmeof_smart_data_written_bytes_total", "}"),
        Some(1.024e9)
    );
    assert_eq!(
        v("nvmeof_smart_power_on_seconds_total", "}"),
        Some(77.0 * 3600.0)
    );
    assert_eq!(
        v("nvmeof_smart_controller_busy_seconds_total", "}"),
        Some(3300.0)
    );
    assert_eq!(v("nvmeof_smart_available_spare_ratio", "}"), Some(0.97));
    assert_eq!(v("nvmeof_smart_stale", "}"), Some(0.0));
    assert_eq!(
        v("nvmeof_smart_last_success_timestamp_seconds", "}"),
        Some(1_764_000_000.0)
    );
    assert!(text.contains(
        r#"nvmeof_smart_info{controller="nvme0",subsystem="nqn.2014-08.org.example:nvme0",model="QEMU NVMe Ctrl",serial="SN-0001",firmware="9.1.0"} 1"#
    ));
    assert!(!text.contains(r#"nvmeof_smart_temperature_celsius{controller="nvme1""#));
}

#[test]
fn every_emitted_family_is_declared_and_every_declared_one_emitted() {
    let (_dir, _backend, poller) = with_ctrls(vec![("nvme0", "live", pages())]);
    poller.tick();
    wait_idle(&poller);
    let c = over(poller);
    let sink = collect(&c);
    let emitted: Vec<String> = sink
        .into_families()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    let mut declared: Vec<String> = FAMILIES.iter().map(|f| f.name.to_owned()).collect();
    declared.sort();
    assert_eq!(emitted, declared);
}

#[test]
fn a_scrape_during_a_hang_returns_at_once_and_says_stale() {
    let (_dir, backend, poller) =
        with_ctrls(vec![("nvme0", "live", pages()), ("nvme1", "live", pages())]);
    poller.tick();
    wait_idle(&poller);
    let c = over(poller.clone());
    assert_eq!(
        value(&render(&c), r#"nvmeof_smart_stale{controller="nvme0""#),
        Some(0.0)
    );

    let (release, rx) = mpsc::channel();
    backend.set("nvme0", Script::Hang(Arc::new(Mutex::new(rx))));
    let later = Instant::now() + INTERVAL;
    poller.tick_at(later);
    let t = Instant::now();
    while backend.running.load(Ordering::SeqCst) == 0 || poller.polling("nvme1") {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "polls did not start or end"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Wait past the poll's budget (2 commands × timeout).
    std::thread::sleep(TIMEOUT * 3);
    let t = Instant::now();
    let text = render(&c);
    // The hang lasts until released, so any wait would show; the bound only absorbs a busy CI.
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "scrape waited on the hang"
    );
    let stale =
        |text: &str, ctrl: &str| value(text, &format!("nvmeof_smart_stale{{controller=\"{ctrl}\""));
    assert_eq!(stale(&text, "nvme0"), Some(1.0));
    assert_eq!(
        stale(&text, "nvme1"),
        Some(0.0),
        "other controllers are unaffected"
    );
    // The last good page stays visible, flagged stale.
    assert_eq!(
        value(
            &text,
            r#"nvmeof_smart_media_errors_total{controller="nvme0""#
        ),
        Some(99.0)
    );

    // Further passes start no second poll behind the stuck one, count the timeout once, and
    // keep polling the healthy controller.
    let calls = backend.calls("nvme0");
    poller.tick_at(later + INTERVAL);
    poller.tick_at(later + INTERVAL * 2);
    assert_eq!(backend.calls("nvme0"), calls);
    assert_eq!(backend.running.load(Ordering::SeqCst), 1);
    let timeouts = r#"nvmeof_smart_poll_errors_total{controller="nvme0",subsystem="nqn.2014-08.org.example:nvme0",reason="timeout"}"#;
    assert_eq!(value(&render(&c), timeouts), Some(1.0));
    let t = Instant::now();
    // At least one more poll of nvme1 after the hang began (a pass that finds nvme1's previous
    // poll still running skips it, so the exact count depends on scheduling: 3 or 4).
    while backend.calls("nvme1") < 3 {
        assert!(t.elapsed() < Duration::from_secs(5), "nvme1 not polled");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(backend.calls("nvme1") <= 4, "{}", backend.calls("nvme1"));

    // The kernel finally cancels the command: still one timeout, still stale.
    release.send(()).unwrap();
    wait_idle(&poller);
    let text = render(&c);
    assert_eq!(value(&text, timeouts), Some(1.0));
    assert_eq!(stale(&text, "nvme0"), Some(1.0));

    // The next good poll clears it.
    backend.set("nvme0", pages());
    poller.tick_at(later + INTERVAL * 3);
    wait_idle(&poller);
    assert_eq!(stale(&render(&c), "nvme0"), Some(0.0));
}

#[test]
fn permission_errors_are_counted_and_leave_no_smart_series() {
    let (_dir, _backend, poller) = with_ctrls(vec![("nvme0", "live", Script::PermissionDenied)]);
    let now = Instant::now();
    poller.tick_at(now);
    wait_idle(&poller);
    poller.tick_at(now + INTERVAL);
    wait_idle(&poller);
    let text = render(&over(poller));
    let l = r#"{controller="nvme0",subsystem="nqn.2014-08.org.example:nvme0""#;
    assert_eq!(
        value(
            &text,
            &format!(r#"nvmeof_smart_poll_errors_total{l},reason="permission_denied"}}"#)
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"nvmeof_smart_poll_errors_total{l},reason="timeout"}}"#)
        ),
        Some(0.0)
    );
    assert_eq!(value(&text, "nvmeof_smart_stale"), Some(1.0));
    assert!(!text.contains("nvmeof_smart_info{"));
    assert!(!text.contains("nvmeof_smart_media_errors_total{"));
}

#[test]
fn non_live_controllers_are_skipped_and_vanished_ones_dropped() {
    let (dir, backend, poller) = with_ctrls(vec![
        ("nvme0", "live", pages()),
        ("nvme1", "resetting", pages()),
    ]);
    let now = Instant::now();
    poller.tick_at(now);
    wait_idle(&poller);
    assert_eq!((backend.calls("nvme0"), backend.calls("nvme1")), (1, 0));
    let c = over(poller.clone());
    let text = render(&c);
    assert_eq!(
        value(
            &text,
            r#"nvmeof_smart_poll_errors_total{controller="nvme1",subsystem="nqn.2014-08.org.example:nvme1",reason="not_live"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"nvmeof_smart_stale{controller="nvme1""#),
        Some(1.0)
    );

    // Not due yet while still resetting; live again: polled on the very next pass.
    poller.tick_at(now + INTERVAL / 2);
    assert_eq!(
        value(
            &render(&c),
            r#"nvmeof_smart_poll_errors_total{controller="nvme1",subsystem="nqn.2014-08.org.example:nvme1",reason="not_live"}"#
        ),
        Some(1.0)
    );
    add_ctrl(dir.path(), "nvme1", "live");
    poller.tick_at(now + INTERVAL / 2);
    wait_idle(&poller);
    assert_eq!(backend.calls("nvme1"), 1);
    assert_eq!(
        value(&render(&c), r#"nvmeof_smart_stale{controller="nvme1""#),
        Some(0.0)
    );

    // Gone: every series of nvme1 goes with it.
    std::fs::remove_dir_all(dir.path().join("class/nvme/nvme1")).unwrap();
    poller.tick_at(now + INTERVAL);
    let text = render(&c);
    assert!(!text.contains(r#"controller="nvme1""#), "{text}");
    assert!(text.contains(r#"controller="nvme0""#));
}

#[test]
fn a_controller_that_comes_back_during_a_stuck_poll_gets_no_second_poll() {
    let (dir, backend, poller) = setup();
    add_ctrl(dir.path(), "nvme0", "live");
    let (release, rx) = mpsc::channel::<()>();
    backend.set("nvme0", Script::Hang(Arc::new(Mutex::new(rx))));
    let now = Instant::now();
    poller.tick_at(now);
    while backend.running.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::fs::remove_dir_all(dir.path().join("class/nvme/nvme0")).unwrap();
    poller.tick_at(now);
    add_ctrl(dir.path(), "nvme0", "live");
    std::thread::sleep(TIMEOUT * 3);
    poller.tick_at(now + INTERVAL);
    assert_eq!(backend.calls("nvme0"), 1);
    drop(release);
    wait_idle(&poller);
    // The stuck poll's late result belongs to the old controller and is not shown.
    let text = render(&over(poller));
    assert!(text.contains(
        r#"nvmeof_smart_stale{controller="nvme0",subsystem="nqn.2014-08.org.example:nvme0"} 1"#
    ));
    // The new controller waited behind it past the budget: one timeout, counted on it.
    assert!(text.contains(r#"reason="timeout"} 1"#));
}

#[test]
fn discovery_reads_only_controllers() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        discover(dir.path()).is_empty(),
        "no class/nvme: no data, no error"
    );
    add_ctrl(dir.path(), "nvme10", "live");
    add_ctrl(dir.path(), "nvme2", "connecting");
    std::fs::create_dir_all(dir.path().join("class/nvme/nvme-subsys0")).unwrap();
    std::fs::create_dir_all(dir.path().join("class/nvme/nvme")).unwrap();
    let found = discover(dir.path());
    let names: Vec<_> = found.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["nvme10", "nvme2"]);
    assert_eq!(found[1].state, "connecting");
    assert_eq!(found[0].subsysnqn, "nqn.2014-08.org.example:nvme10");
}

#[test]
fn the_scheduler_polls_in_the_background_and_stops_with_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    add_ctrl(dir.path(), "nvme0", "live");
    let backend = Arc::new(FakeBackend::default());
    backend.set("nvme0", pages());
    let opts = SmartOptions {
        sysfs_root: dir.path().to_owned(),
        dev_root: dir.path().join("dev"),
        interval: Duration::from_millis(20),
        timeout: TIMEOUT,
    };
    let c = SmartCollector::new(SmartSource::start(&opts, backend.clone()));
    let t = Instant::now();
    while backend.calls("nvme0") < 3 {
        assert!(t.elapsed() < Duration::from_secs(5), "no background polls");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(render(&c).contains("nvmeof_smart_media_errors_total{"));
    drop(c);
    std::thread::sleep(Duration::from_millis(60));
    let after = backend.calls("nvme0");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(backend.calls("nvme0"), after, "polling went on after drop");
}

#[test]
fn status_and_decode_errors_are_counted_by_reason() {
    let (dir, backend, poller) = setup();
    add_ctrl(dir.path(), "nvme0", "live");
    add_ctrl(dir.path(), "nvme1", "live");
    backend.set("nvme0", Script::Status(0x4109));
    // A controller answering Identify with a cut page.
    backend.set(
        "nvme1",
        Script::Pages(vec![0; 100], Box::new([0; SMART_LOG_LEN])),
    );
    poller.tick();
    wait_idle(&poller);
    let text = render(&over(poller));
    let errors = |ctrl: &str, reason: &str| {
        value(
            &text,
            &format!(
                "nvmeof_smart_poll_errors_total{{controller=\"{ctrl}\",subsystem=\"nqn.2014-08.org.example:{ctrl}\",reason=\"{reason}\"}}"
            ),
        )
    };
    assert_eq!(errors("nvme0", "nvme_status"), Some(1.0));
    assert_eq!(errors("nvme0", "decode"), Some(0.0));
    assert_eq!(errors("nvme1", "decode"), Some(1.0));
    assert_eq!(errors("nvme1", "nvme_status"), Some(0.0));
    assert!(!text.contains("nvmeof_smart_info{"));
}

#[test]
fn a_zero_timeout_waits_for_the_kernel_default() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(FakeBackend::default());
    let p = Poller::new(dir.path().to_owned(), INTERVAL, Duration::ZERO, b.clone());
    assert_eq!(p.budget(), Duration::from_secs(120));
    let p = Poller::new(dir.path().to_owned(), INTERVAL, TIMEOUT, b);
    assert_eq!(p.budget(), TIMEOUT * 2);
}

#[test]
fn the_device_backend_reports_what_it_meets() {
    // Production wiring: `crate::smart::start` on the real ioctl path. Here `nvme0` is a regular
    // file (the ioctl fails with ENOTTY) and `nvme1` has no device node at all.
    let dir = tempfile::tempdir().unwrap();
    add_ctrl(dir.path(), "nvme0", "live");
    add_ctrl(dir.path(), "nvme1", "live");
    let dev = dir.path().join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("nvme0"), b"").unwrap();
    let c = SmartCollector::new(crate::smart::start(SmartOptions {
        sysfs_root: dir.path().to_owned(),
        dev_root: dev,
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(1),
    }));
    let errors = |text: &str, ctrl: &str, reason: &str| {
        value(
            text,
            &format!(
                "nvmeof_smart_poll_errors_total{{controller=\"{ctrl}\",subsystem=\"nqn.2014-08.org.example:{ctrl}\",reason=\"{reason}\"}}"
            ),
        )
    };
    let t = Instant::now();
    let text = loop {
        let text = render(&c);
        if errors(&text, "nvme0", "io") == Some(1.0)
            && errors(&text, "nvme1", "no_device") == Some(1.0)
        {
            break text;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{text}");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(
        value(&text, r#"nvmeof_smart_stale{controller="nvme0""#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"nvmeof_smart_stale{controller="nvme1""#),
        Some(1.0)
    );
}

/// A sysfs root whose `class/nvme` links to the controllers of the lab-captured 6.1 tree (TCP
/// twice, RDMA, FC, loop), so that one can be taken away as the kernel does on deletion; returns
/// the controllers' names too.
fn captured_root() -> (tempfile::TempDir, Vec<String>) {
    let captured = crate::test_support::captured_6_1().join("class/nvme");
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("class/nvme");
    std::fs::create_dir_all(&class).unwrap();
    let mut names = Vec::new();
    for e in std::fs::read_dir(&captured).unwrap().flatten() {
        let target = std::fs::canonicalize(e.path()).unwrap();
        std::os::unix::fs::symlink(target, class.join(e.file_name())).unwrap();
        names.push(e.file_name().into_string().unwrap());
    }
    names.sort();
    (dir, names)
}

/// The controllers with an `nvmeof_smart_info` series, sorted.
fn polled(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("nvmeof_smart_info{controller=\""))
        .filter_map(|l| l.split('"').next())
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

#[test]
fn a_deleted_controller_leaves_no_series_at_the_next_scrape() {
    let (dir, names) = captured_root();
    assert_eq!(names, ["nvme0", "nvme1", "nvme2", "nvme3", "nvme4"]);
    let backend = Arc::new(FakeBackend::default());
    for n in &names {
        backend.set(n, pages());
    }
    let poller = Poller::new(dir.path().to_owned(), INTERVAL, TIMEOUT, backend.clone());
    poller.tick();
    wait_idle(&poller);
    let c = over(poller.clone());
    assert_eq!(polled(&render(&c)), names);

    // The RDMA controller is deleted; no scheduling pass runs before the scrape.
    let link = dir.path().join("class/nvme/nvme2");
    let target = std::fs::read_link(&link).unwrap();
    std::fs::remove_file(&link).unwrap();
    let text = render(&c);
    assert!(!text.contains(r#"controller="nvme2""#), "{text}");
    assert_eq!(polled(&text), ["nvme0", "nvme1", "nvme3", "nvme4"]);

    // Dropped from the cache, not hidden: the same name back (a new controller to the same
    // subsystem) shows nothing of the old one until it has been polled itself.
    // Its first poll fails, so that a page under its name could only be the old one's.
    backend.set("nvme2", Script::Status(0x4002));
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(!render(&c).contains(r#"nvmeof_smart_media_errors_total{controller="nvme2""#));
    // The scrape that saw it started its poll.
    wait_idle(&poller);
    assert_eq!(backend.calls("nvme2"), 2);
    backend.set("nvme2", pages());
    poller.tick_at(Instant::now() + INTERVAL);
    wait_idle(&poller);
    assert_eq!(polled(&render(&c)), names);
}

#[test]
fn a_name_taken_by_another_subsystem_shows_nothing_of_its_predecessor() {
    let (dir, backend, poller) =
        with_ctrls(vec![("nvme0", "live", pages()), ("nvme1", "live", pages())]);
    let now = Instant::now();
    poller.tick_at(now);
    wait_idle(&poller);
    let c = over(poller.clone());
    assert_eq!(polled(&render(&c)), ["nvme0", "nvme1"]);

    // nvme1 deleted and its instance number reused by a controller of another subsystem before
    // the next pass: its predecessor's pages must not appear under the new subsystem's label.
    // The newcomer's own first poll fails, so that any page under its name would be the
    // predecessor's.
    backend.set("nvme1", Script::Status(0x4002));
    std::fs::write(
        dir.path().join("class/nvme/nvme1/subsysnqn"),
        "nqn.2014-08.org.example:other\n",
    )
    .unwrap();
    let text = render(&c);
    assert!(
        !text.contains(r#"subsystem="nqn.2014-08.org.example:nvme1""#),
        "{text}"
    );
    assert!(
        !text.contains(r#"nvmeof_smart_media_errors_total{controller="nvme1""#),
        "{text}"
    );
    // Within the interval, yet the newcomer is polled at once: by the scrape that saw it.
    wait_idle(&poller);
    assert_eq!(backend.calls("nvme1"), 2);
    assert!(!render(&c).contains(r#"nvmeof_smart_media_errors_total{controller="nvme1""#));
    backend.set("nvme1", pages());
    poller.tick_at(Instant::now() + INTERVAL);
    wait_idle(&poller);
    assert_eq!(backend.calls("nvme1"), 3);
    let text = render(&c);
    assert_eq!(
        value(
            &text,
            r#"nvmeof_smart_stale{controller="nvme1",subsystem="nqn.2014-08.org.example:other"}"#
        ),
        Some(0.0)
    );
    assert!(!text.contains(r#"controller="nvme1",subsystem="nqn.2014-08.org.example:nvme1""#));
}

/// A scrape's controllers serve as the scheduler's pass: while scrapes come, the scheduler
/// reads nothing (a controller that appears is left to the next scrape), and the scrape starts
/// the polls that are due. A poller no scrape has fed rescans on its own (the tests above).
#[test]
fn scrapes_feed_the_scheduler_which_then_reads_nothing() {
    let (dir, backend, poller) = with_ctrls(vec![("nvme0", "live", pages())]);
    let c = over(poller.clone());
    render(&c);
    wait_idle(&poller);
    assert_eq!(backend.calls("nvme0"), 1, "the scrape started the due poll");
    add_ctrl(dir.path(), "nvme1", "live");
    backend.set("nvme1", pages());
    poller.tick();
    wait_idle(&poller);
    assert_eq!(
        backend.calls("nvme1"),
        0,
        "the scheduler rescanned while fed"
    );
    render(&c);
    wait_idle(&poller);
    assert_eq!(backend.calls("nvme1"), 1);
    assert_eq!(polled(&render(&c)), ["nvme0", "nvme1"]);
}

#[test]
fn identify_is_read_again_only_after_a_firmware_change_or_a_reset() {
    let (dir, backend, poller) = with_ctrls(vec![("nvme0", "live", pages())]);
    let ctrl = dir.path().join("class/nvme/nvme0");
    let t0 = Instant::now();
    let mut polls = 0u32;
    let mut poll = |p: &Arc<Poller>| {
        p.tick_at(t0 + INTERVAL * polls);
        polls += 1;
        wait_idle(p);
    };
    let counts = |b: &FakeBackend| (b.identifies("nvme0"), b.calls("nvme0"));

    poll(&poller);
    poll(&poller);
    poll(&poller);
    assert_eq!(counts(&backend), (1, 3), "(identify, smart) after 3 polls");

    // A firmware activation: the kernel's firmware_rev changes, and so does Identify's.
    let mut page = crate::nvme::identify::tests::full_page();
    page[64..72].copy_from_slice(b"9.2.0   ");
    backend.set(
        "nvme0",
        Script::Pages(page, Box::new(crate::nvme::smart_log::tests::full_page())),
    );
    std::fs::write(ctrl.join("firmware_rev"), "9.2.0   \n").unwrap();
    poll(&poller);
    poll(&poller);
    assert_eq!(counts(&backend), (2, 5), "after the firmware changed");
    let out = render(&over(poller.clone()));
    assert!(out.contains("firmware=\"9.2.0\""), "{out}");

    // A reset: not live for a pass, then live again.
    std::fs::write(ctrl.join("state"), "resetting\n").unwrap();
    poll(&poller);
    std::fs::write(ctrl.join("state"), "live\n").unwrap();
    poll(&poller);
    poll(&poller);
    assert_eq!(counts(&backend), (3, 7), "after a reset");

    // No firmware_rev to compare with: Identify every poll, as before there was a cache.
    std::fs::remove_file(ctrl.join("firmware_rev")).unwrap();
    poll(&poller);
    poll(&poller);
    assert_eq!(counts(&backend), (5, 9), "without firmware_rev");
}
