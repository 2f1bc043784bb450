//! The scraper against collectors that hang, fail and panic.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use super::*;
use crate::collector::{Family, Scrape};

const VALUE: Family = Family::gauge("test_value", "The call number of the run that produced it.");

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Hang,
    Fail,
    Panic,
    /// Takes 100 ms, well within a 2 s deadline.
    Slow,
    /// Hangs until released, then fails.
    HangThenFail,
}

/// Emits its call number; from call `switch_at` on, behaves as `then`.
struct Test {
    name: &'static str,
    calls: AtomicUsize,
    switch_at: usize,
    then: Mode,
    release: Mutex<mpsc::Receiver<()>>,
}

fn test(name: &'static str, switch_at: usize, then: Mode) -> (Arc<Test>, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel();
    let t = Test {
        name,
        calls: AtomicUsize::new(0),
        switch_at,
        then,
        release: Mutex::new(rx),
    };
    (Arc::new(t), tx)
}

impl Collector for Arc<Test> {
    fn collect(&self, _: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mode = if call >= self.switch_at {
            self.then
        } else {
            Mode::Ok
        };
        match mode {
            Mode::Ok => {}
            Mode::Hang => {
                let rx = self.release.lock().unwrap();
                let _ = rx.recv_timeout(Duration::from_secs(10));
            }
            Mode::Fail => anyhow::bail!("sysfs went away"),
            Mode::Panic => panic!("a bug in a collector"),
            Mode::Slow => std::thread::sleep(Duration::from_millis(100)),
            Mode::HangThenFail => {
                let rx = self.release.lock().unwrap();
                let _ = rx.recv_timeout(Duration::from_secs(10));
                anyhow::bail!("the controller went away while it was read");
            }
        }
        sink.gauge(&VALUE, &[("from", self.name)], call as f64);
        Ok(())
    }
}

fn gauge(fams: &[MetricFamily], name: &str, label: (&str, &str)) -> Option<f64> {
    let f = fams.iter().find(|f| f.name() == name)?;
    f.metric
        .iter()
        .find(|m| m.label.iter().any(|l| (l.name(), l.value()) == label))
        .map(|m| m.value())
}

/// A test collector registered under its own name.
fn named(t: &Arc<Test>) -> Named {
    Named::new(t.name, t.clone())
}

fn scraper(collectors: Vec<Named>) -> Scraper {
    Scraper::new(collectors, Duration::from_millis(50))
}

const STALE: &str = "nvmeof_exporter_collector_stale";
const SUCCESS: &str = "nvmeof_exporter_collector_success";
/// What "within the deadline" allows on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(250);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_collector_serves_its_cache_within_the_deadline() {
    let (t, release) = test("hangs", 2, Mode::Hang);
    let (ok, _r) = test("healthy", usize::MAX, Mode::Ok);
    // Long enough that "did not wait for the deadline" is told apart from load on the machine.
    let deadline = Duration::from_millis(300);
    let s = Scraper::new(vec![named(&t), named(&ok)], deadline);

    let first = s.scrape().await;
    assert_eq!(gauge(&first, "test_value", ("from", "hangs")), Some(1.0));
    assert_eq!(gauge(&first, STALE, ("collector", "hangs")), Some(0.0));

    let start = Instant::now();
    let second = s.scrape().await;
    assert!(start.elapsed() >= deadline, "{:?}", start.elapsed());
    assert!(start.elapsed() < deadline + MARGIN, "{:?}", start.elapsed());
    assert_eq!(
        gauge(&second, "test_value", ("from", "hangs")),
        Some(1.0),
        "cached"
    );
    assert_eq!(gauge(&second, STALE, ("collector", "hangs")), Some(1.0));
    assert_eq!(gauge(&second, SUCCESS, ("collector", "hangs")), Some(0.0));
    assert_eq!(gauge(&second, SUCCESS, ("collector", "healthy")), Some(1.0));
    assert_eq!(gauge(&second, "test_value", ("from", "healthy")), Some(2.0));

    // Still stuck: the next scrape neither waits nor starts a second run.
    let start = Instant::now();
    let third = s.scrape().await;
    assert!(start.elapsed() < deadline, "{:?}", start.elapsed());
    assert_eq!(
        t.calls.load(Ordering::SeqCst),
        2,
        "one run in flight at most"
    );
    assert_eq!(gauge(&third, STALE, ("collector", "hangs")), Some(1.0));
    assert_eq!(s.stats().errors("hangs"), 2);

    // Released, the late run refreshes the cache for the next scrape.
    release.send(()).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while lock(&s.slots[0].states[0]).running.is_some() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        lock(&s.slots[0].states[0])
            .last_good
            .as_ref()
            .map(|(_, f)| gauge(f, "test_value", ("from", "hangs"))),
        Some(Some(2.0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_that_hangs_serves_nothing_and_is_not_stale() {
    let (t, release) = test("hangs", 1, Mode::Hang);
    let s = scraper(vec![named(&t)]);
    let out = s.scrape().await;
    assert_eq!(gauge(&out, "test_value", ("from", "hangs")), None);
    assert_eq!(gauge(&out, STALE, ("collector", "hangs")), Some(0.0));
    assert_eq!(gauge(&out, SUCCESS, ("collector", "hangs")), Some(0.0));
    release.send(()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_collector_serves_its_last_good_output_and_counts() {
    let (t, _r) = test("fails", 2, Mode::Fail);
    let s = scraper(vec![named(&t)]);
    s.scrape().await;
    let out = s.scrape().await;
    assert_eq!(gauge(&out, "test_value", ("from", "fails")), Some(1.0));
    assert_eq!(gauge(&out, STALE, ("collector", "fails")), Some(1.0));
    let errors = crate::test_support::family(&out, "nvmeof_exporter_collect_errors_total");
    assert_eq!(errors.metric[0].value(), 1.0);
}

/// The warnings the agent logs while these tests run (no other test of this binary sets a logger).
fn warnings() -> &'static Mutex<Vec<String>> {
    struct Capture(Mutex<Vec<String>>);
    impl log::Log for Capture {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::Level::Warn
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                self.0.lock().unwrap().push(r.args().to_string());
            }
        }
        fn flush(&self) {}
    }
    static CAPTURE: std::sync::OnceLock<&'static Capture> = std::sync::OnceLock::new();
    let c = CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(c).expect("no other logger in the unit tests");
        log::set_max_level(log::LevelFilter::Warn);
        c
    });
    &c.0
}

/// A run that fails after its scrape stopped waiting counts the miss and the failure, and the
/// log has a line for each: an error counted without its line could hide what caused it (the
/// lab's removal test tells its expected errors apart by their lines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_failing_after_its_deadline_is_counted_and_logged() {
    let lines = warnings();
    let (t, release) = test("fails-late", 1, Mode::HangThenFail);
    let s = scraper(vec![named(&t)]);
    let out = s.scrape().await;
    assert_eq!(gauge(&out, SUCCESS, ("collector", "fails-late")), Some(0.0));
    release.send(()).unwrap();
    let logged = |what: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("collector fails-late") && l.contains(what))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while logged("failed: the controller went away") == 0 {
        assert!(
            Instant::now() < deadline,
            "the late failure was never logged"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(logged("missed its deadline"), 1);
    assert_eq!(s.stats().errors("fails-late"), 2);
}

/// Scrapes that share a failed run (both waiting when it fails) serve the same failure: it is
/// counted once and logged once, not once per scrape that waited for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_shared_by_two_scrapes_is_counted_and_logged_once() {
    let lines = warnings();
    let (t, release) = test("shared-failure", 1, Mode::HangThenFail);
    let s = Scraper::new(vec![named(&t)], Duration::from_secs(5));
    let release_later = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        release.send(()).unwrap();
    };
    let (a, b, ()) = tokio::join!(s.scrape(), s.scrape(), release_later);
    for out in [&a, &b] {
        assert_eq!(
            gauge(out, SUCCESS, ("collector", "shared-failure")),
            Some(0.0)
        );
    }
    assert_eq!(
        t.calls.load(Ordering::SeqCst),
        1,
        "one run for both scrapes"
    );
    assert_eq!(s.stats().errors("shared-failure"), 1);
    let logged = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("collector shared-failure failed"))
        .count();
    assert_eq!(logged, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_collector_is_run_again_next_time() {
    let (t, _r) = test("panics", 2, Mode::Panic);
    // Printing a panic's backtrace can take longer than 50 ms.
    let s = Scraper::new(vec![named(&t)], Duration::from_secs(5));
    s.scrape().await;
    let out = s.scrape().await;
    assert_eq!(gauge(&out, STALE, ("collector", "panics")), Some(1.0));
    s.scrape().await;
    assert_eq!(t.calls.load(Ordering::SeqCst), 3);
    assert_eq!(s.stats().errors("panics"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scrapes_share_one_run() {
    let (t, _r) = test("shared", 1, Mode::Slow);
    let s = Scraper::new(vec![named(&t)], Duration::from_secs(2));
    let (a, b) = tokio::join!(s.scrape(), s.scrape());
    assert_eq!(gauge(&a, STALE, ("collector", "shared")), Some(0.0));
    assert_eq!(gauge(&b, STALE, ("collector", "shared")), Some(0.0));
    assert_eq!(t.calls.load(Ordering::SeqCst), 1);
    assert_eq!(gauge(&b, "test_value", ("from", "shared")), Some(1.0));
    let scrapes = a
        .iter()
        .chain(&b)
        .filter(|f| f.name() == "nvmeof_exporter_scrapes_total")
        .map(|f| f.metric[0].value())
        .fold(0.0, f64::max);
    assert_eq!(scrapes, 2.0);
}

#[test]
fn the_scrapers_timeout_less_a_margin_within_bounds() {
    let d = |h: &str| deadline_from_scrape_timeout(h);
    // Prometheus' default 10 s: 0.5 s kept for encoding and sending.
    assert_eq!(d("10"), Some(Duration::from_millis(9500)));
    assert_eq!(d(" 10.000000 "), Some(Duration::from_millis(9500)));
    // Short timeouts keep 10 %.
    assert_eq!(d("1"), Some(Duration::from_millis(900)));
    assert_eq!(d("0.2"), Some(Duration::from_millis(180)));
    // Bounded.
    assert_eq!(d("0.001"), Some(Duration::from_millis(10)));
    assert_eq!(d("86400"), Some(Duration::from_secs(120)));
    assert_eq!(d("1e300"), Some(Duration::from_secs(120)));
    for bad in ["", "soon", "0", "-5", "NaN", "inf"] {
        assert_eq!(d(bad), None, "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scraper_that_gives_more_time_gets_fresh_data() {
    // 100 ms per run against the 50 ms of --collector.timeout.
    let (t, _r) = test("slow", 1, Mode::Slow);
    let s = scraper(vec![named(&t)]);
    let first = s.scrape().await;
    assert_eq!(gauge(&first, SUCCESS, ("collector", "slow")), Some(0.0));
    // Let the late run finish and fill the cache.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stale = s.scrape().await;
    assert_eq!(gauge(&stale, STALE, ("collector", "slow")), Some(1.0));
    assert_eq!(gauge(&stale, "test_value", ("from", "slow")), Some(1.0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A scraper that waits 2 s: the run has the time to finish, and its data is served.
    let fresh = s
        .scrape_within(deadline_from_scrape_timeout("2").unwrap())
        .await;
    assert_eq!(gauge(&fresh, SUCCESS, ("collector", "slow")), Some(1.0));
    assert_eq!(gauge(&fresh, STALE, ("collector", "slow")), Some(0.0));
    assert_eq!(gauge(&fresh, "test_value", ("from", "slow")), Some(3.0));
}

/// A collector that reads only memory is run in line: slower than the deadline (as a starved
/// node makes everything), its output is this scrape's, never the cache, while a kernel reader
/// as slow is served stale. A failure still falls back to its cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_only_collector_is_never_served_stale() {
    let (mem, _r1) = test("memory", 2, Mode::Slow);
    let (kernel, _r2) = test("kernel", 2, Mode::Slow);
    let (failing, _r3) = test("failing", 3, Mode::Fail);
    let memory_only = |t: &Arc<Test>| Named {
        reads: Reads::Memory,
        ..named(t)
    };
    // 20 ms: the slow runs take 100.
    let s = Scraper::new(
        vec![memory_only(&mem), named(&kernel), memory_only(&failing)],
        Duration::from_millis(20),
    );
    let _first = s.scrape().await;
    let second = s.scrape().await;
    assert_eq!(gauge(&second, "test_value", ("from", "memory")), Some(2.0));
    assert_eq!(gauge(&second, STALE, ("collector", "memory")), Some(0.0));
    assert_eq!(gauge(&second, SUCCESS, ("collector", "memory")), Some(1.0));
    assert_eq!(gauge(&second, "test_value", ("from", "kernel")), Some(1.0));
    assert_eq!(gauge(&second, STALE, ("collector", "kernel")), Some(1.0));
    let third = s.scrape().await;
    assert_eq!(gauge(&third, "test_value", ("from", "failing")), Some(2.0));
    assert_eq!(gauge(&third, STALE, ("collector", "failing")), Some(1.0));
    assert_eq!(gauge(&third, SUCCESS, ("collector", "failing")), Some(0.0));
}

/// Shows controllers nvme1 and nvme2, each with a series per queue when the scrape shows it per
/// queue; fails from call `fail_from` on.
struct Detailed {
    calls: AtomicUsize,
    fail_from: usize,
}

impl Collector for Arc<Detailed> {
    fn collect(&self, scrape: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call >= self.fail_from {
            anyhow::bail!("sysfs went away");
        }
        for c in ["nvme1", "nvme2"] {
            sink.gauge(&VALUE, &[("controller", c)], call as f64);
            if scrape.detail().per_queue_named(c) {
                sink.gauge(&VALUE, &[("controller", c), ("queue", "1")], call as f64);
            }
        }
        Ok(())
    }
}

/// The test values of a scrape: (controller, queue or "-", call).
fn detailed_values(fams: &[MetricFamily]) -> Vec<(String, String, f64)> {
    let Some(f) = fams.iter().find(|f| f.name() == "test_value") else {
        return Vec::new();
    };
    let label = |m: &crate::exposition::model::Metric, k: &str| {
        (m.label.iter())
            .find(|l| l.name() == k)
            .map_or("-".to_owned(), |l| l.value().to_owned())
    };
    (f.metric.iter())
        .map(|m| (label(m, "controller"), label(m, "queue"), m.value()))
        .collect()
}

fn values(v: &[(&str, &str, f64)]) -> Vec<(String, String, f64)> {
    v.iter()
        .map(|&(c, q, n)| (c.to_owned(), q.to_owned(), n))
        .collect()
}

async fn scrape_at(s: &Scraper, detail: Detail) -> Vec<MetricFamily> {
    (s.scrape_for(Duration::from_secs(5), &Selection::All, &detail)).await
}

/// The second call of [`Detailed`], naming nvme1.
fn nvme1_per_queue() -> Vec<(String, String, f64)> {
    values(&[
        ("nvme1", "-", 2.0),
        ("nvme1", "1", 2.0),
        ("nvme2", "-", 2.0),
    ])
}

fn naming(controllers: &[u32]) -> Detail {
    Detail::Controllers(controllers.iter().copied().collect())
}

/// A kernel collector's runs and caches are kept apart per class: a scrape that names
/// controllers is never served an output per controller, nor the reverse, even stale; the
/// scrapes naming different controllers share one run per queue for every controller and each
/// keeps the queues it named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_per_queue_is_never_served_per_controller_nor_the_reverse() {
    let t = Arc::new(Detailed {
        calls: AtomicUsize::new(0),
        fail_from: 3,
    });
    let s = scraper(vec![Named::new("detailed", t.clone())]);
    let scrape = |d: Detail| scrape_at(&s, d);
    let first = scrape(Detail::PerController).await;
    let per_controller = values(&[("nvme1", "-", 1.0), ("nvme2", "-", 1.0)]);
    assert_eq!(detailed_values(&first), per_controller);
    let named = scrape(naming(&[1])).await;
    let nvme1 = nvme1_per_queue();
    assert_eq!(detailed_values(&named), nvme1);

    // Failing now: each class serves its own last output, marked stale.
    let stale = scrape(Detail::PerController).await;
    assert_eq!(detailed_values(&stale), per_controller);
    assert_eq!(gauge(&stale, STALE, ("collector", "detailed")), Some(1.0));
    let other = scrape(naming(&[2])).await;
    let nvme2 = values(&[
        ("nvme1", "-", 2.0),
        ("nvme2", "-", 2.0),
        ("nvme2", "1", 2.0),
    ]);
    assert_eq!(
        detailed_values(&other),
        nvme2,
        "the queues it names, of the run per queue"
    );
    assert_eq!(gauge(&other, STALE, ("collector", "detailed")), Some(1.0));
    let all = scrape(Detail::All).await;
    assert_eq!(detailed_values(&all).len(), 4);
    assert_eq!(t.calls.load(Ordering::SeqCst), 5);
}

/// A collector run in line renders the scrape's own detail, and its last good output is served
/// stale only to a scrape that asks for the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_collector_serves_its_cache_only_to_the_same_detail() {
    let t = Arc::new(Detailed {
        calls: AtomicUsize::new(0),
        fail_from: 3,
    });
    let s = scraper(vec![Named {
        name: "detailed",
        collector: Box::new(t.clone()),
        reads: Reads::Memory,
    }]);
    let scrape = |d: Detail| scrape_at(&s, d);
    scrape(Detail::PerController).await;
    let named = scrape(naming(&[1])).await;
    let nvme1 = nvme1_per_queue();
    assert_eq!(detailed_values(&named), nvme1);

    // Failing now.
    let other = scrape(naming(&[2])).await;
    assert_eq!(
        detailed_values(&other),
        vec![],
        "no output shows nvme2's queues"
    );
    assert_eq!(gauge(&other, STALE, ("collector", "detailed")), Some(0.0));
    let same = scrape(naming(&[1])).await;
    assert_eq!(detailed_values(&same), nvme1);
    assert_eq!(gauge(&same, STALE, ("collector", "detailed")), Some(1.0));
    let default = scrape(Detail::PerController).await;
    let per_controller = values(&[("nvme1", "-", 1.0), ("nvme2", "-", 1.0)]);
    assert_eq!(detailed_values(&default), per_controller);
}
