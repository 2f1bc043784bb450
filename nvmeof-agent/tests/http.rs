//! The server on 127.0.0.1:0 over raw TCP: what each path answers, content negotiation, and that
//! a malformed request gets a 4xx while the server keeps serving.
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nvmeof_agent::collector::Named;
use nvmeof_agent::exposition::protobuf;
use nvmeof_agent::http::{self, App, PlainTcp};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
    _fixture: common::Fixture,
}

async fn start() -> Server {
    let fixture = common::sysfs_6_1();
    let scraper = common::scraper(&fixture.root, &["--collector.timeout=10s"]);
    let app = Arc::new(App::new(scraper, "/metrics".into()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(http::serve(listener, Arc::new(PlainTcp), app, async {
        let _ = rx.await;
    }));
    Server {
        addr,
        stop: Some(tx),
        done,
        _fixture: fixture,
    }
}

/// Sends raw bytes, reads the whole answer (the server closes after `Connection: close`).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let (answer, read) = common::send(TcpStream::connect(addr).await.unwrap(), request).await;
    read.unwrap();
    answer
}

/// Sends raw bytes and splits a binary answer (protobuf, gzip) into its head and its payload.
async fn raw_binary(addr: SocketAddr, request: &[u8]) -> (String, Vec<u8>) {
    let (answer, read) = common::send_bytes(TcpStream::connect(addr).await.unwrap(), request).await;
    read.unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(answer[..split].to_vec()).unwrap();
    (head, answer[split + 4..].to_vec())
}

async fn get(addr: SocketAddr, path: &str, headers: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}\r\n");
    raw(addr, req.as_bytes()).await
}

use common::status;

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_methods_formats_and_malformed_requests() {
    let mut server = start().await;
    let addr = server.addr;

    let metrics = get(addr, "/metrics", "").await;
    assert_eq!(status(&metrics), 200);
    assert_eq!(
        header(&metrics, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(body(&metrics).contains(
        "nvmeof_subsystem_state{subsystem=\"nqn.2026-11.io.nvmeof-exporter.lab:tcp\",controller=\"nvme0\",state=\"live\"} 1\n"
    ));

    let om = get(
        addr,
        "/metrics",
        "Accept: application/openmetrics-text; version=1.0.0\r\n",
    )
    .await;
    assert_eq!(status(&om), 200);
    assert!(header(&om, "content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(body(&om).ends_with("# EOF\n"));
    assert!(body(&om).contains("# TYPE nvmeof_exporter_scrapes counter\n"));
    assert!(body(&om).contains("nvmeof_exporter_scrapes_total 2\n"));

    let health = get(addr, "/healthz", "").await;
    assert_eq!((status(&health), body(&health)), (200, "ok"));

    let landing = get(addr, "/", "").await;
    assert_eq!(status(&landing), 200);
    assert!(body(&landing).contains("<a href=\"/metrics\">"));

    assert_eq!(status(&get(addr, "/nope", "").await), 404);

    let post = raw(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&post), 405);
    assert_eq!(header(&post, "allow"), Some("GET, HEAD"));

    let head = raw(
        addr,
        b"HEAD /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((status(&head), body(&head)), (200, ""));

    let garbage = raw(addr, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert_eq!(status(&garbage), 400, "{garbage:?}");
    let bad_uri = raw(addr, b"GET /a b c HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!((400..500).contains(&status(&bad_uri)), "{bad_uri:?}");
    let binary = raw(addr, &[0u8, 159, 146, 150, b'\r', b'\n', b'\r', b'\n']).await;
    assert_eq!(status(&binary), 400, "{binary:?}");

    // Still serving after all that.
    assert_eq!(status(&get(addr, "/healthz", "").await), 200);

    server.stop.take().unwrap().send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), &mut server.done).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "serve returns Ok on shutdown"
    );
}

/// What Prometheus 2.42 sends with `--enable-feature=native-histograms`.
const PROMETHEUS_NATIVE_ACCEPT: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_when_asked_text_when_the_header_is_odd() {
    let server = start().await;
    let addr = server.addr;
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\nAccept: {PROMETHEUS_NATIVE_ACCEPT}\r\n\r\n"
    );
    let (head, payload) = raw_binary(addr, req.as_bytes()).await;
    assert_eq!(status(&head), 200);
    assert_eq!(header(&head, "content-type"), Some(protobuf::CONTENT_TYPE));
    assert_eq!(
        protobuf::CONTENT_TYPE,
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
    );
    let families = protobuf::decode(&payload).unwrap();
    let state = nvmeof_agent::test_support::family(&families, "nvmeof_subsystem_state");
    let live = state
        .metric
        .iter()
        .find(|m| {
            let labels: Vec<_> = m.label.iter().map(|l| (l.name(), l.value())).collect();
            labels.contains(&("controller", "nvme0")) && labels.contains(&("state", "live"))
        })
        .unwrap();
    assert_eq!(live.value(), 1.0);
    // The same families as the text: every `# TYPE` line names one of them.
    let text = get(addr, "/metrics", "").await;
    let typed: Vec<&str> = body(&text)
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
    assert_eq!(names, typed);

    for accept in [
        "Accept: application/vnd.google.protobuf\r\n",
        "Accept: ;;q=x,,/\r\n",
        "Accept: application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.1,text/plain;q=0.2\r\n",
    ] {
        let answer = get(addr, "/metrics", accept).await;
        assert_eq!(
            header(&answer, "content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "{accept}"
        );
    }
}

#[tokio::test]
async fn bind_listen_addresses() {
    let any = http::bind(&":0".parse().unwrap()).await.unwrap();
    assert!(any.local_addr().unwrap().ip().is_unspecified());
    let v4 = http::bind(&"127.0.0.1:0".parse().unwrap()).await.unwrap();
    let taken = v4.local_addr().unwrap();
    assert!(taken.ip().is_loopback());
    let again = format!("127.0.0.1:{}", taken.port()).parse().unwrap();
    let err = http::bind(&again).await.unwrap_err();
    assert!(format!("{err:#}").contains(&format!("listening on 127.0.0.1:{}", taken.port())));
}

/// Collectors the limit tests control: one that waits at a gate, one that emits a large page.
mod fixtures {
    use std::sync::{mpsc, Mutex};
    use std::time::Duration;

    use nvmeof_agent::collector::{Collector, Family, Kind, Scrape, Sink};

    pub const VALUE: Family = Family {
        name: "test_value",
        help: "A value from a test collector.",
        kind: Kind::Gauge,
    };

    /// Says when it starts collecting, then waits (at most 10 s) to be let through.
    pub struct Gate {
        pub entered: Mutex<mpsc::Sender<()>>,
        pub release: Mutex<mpsc::Receiver<()>>,
    }

    impl Collector for Gate {
        fn collect(&self, _: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
            let _ = self.entered.lock().unwrap().send(());
            let _ = self
                .release
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
            sink.gauge(&VALUE, &[], 1.0);
            Ok(())
        }
    }

    /// `series` series with a label value of 1000 bytes each.
    pub struct Large {
        pub series: usize,
    }

    impl Collector for Large {
        fn collect(&self, _: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
            let pad = "x".repeat(1000);
            for i in 0..self.series {
                let i = i.to_string();
                sink.gauge(&VALUE, &[("i", &i), ("pad", &pad)], 1.0);
            }
            Ok(())
        }
    }
}

/// Serves `app` on 127.0.0.1 with `limits`; the server stops with the test's runtime.
async fn start_with(app: App, limits: http::Limits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let never = std::future::pending::<()>();
    tokio::spawn(http::serve_with(
        listener,
        Arc::new(PlainTcp),
        Arc::new(app),
        limits,
        never,
    ));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_past_max_requests_get_503() {
    use nvmeof_agent::scrape::Scraper;
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let gate = fixtures::Gate {
        entered: entered_tx.into(),
        release: release_rx.into(),
    };
    let scraper = Scraper::new(vec![Named::new("gate", gate)], Duration::from_secs(10));
    let app = App::new(scraper, "/metrics".into()).with_max_requests(1);
    let addr = start_with(app, http::Limits::default()).await;

    let first = tokio::spawn(async move { get(addr, "/metrics", "").await });
    tokio::task::spawn_blocking(move || entered.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the first scrape reaches the collector");
    let refused = get(addr, "/metrics", "").await;
    assert_eq!(status(&refused), 503, "{refused}");
    assert_eq!(
        body(&refused),
        "Limit of concurrent requests reached (1), try again later.\n"
    );
    // Other paths are not scrapes.
    assert_eq!(status(&get(addr, "/healthz", "").await), 200);
    release.send(()).unwrap();
    let first = first.await.unwrap();
    assert_eq!(status(&first), 200, "{first}");
    assert!(body(&first).contains("test_value 1\n"));
    // The slot is free again.
    release.send(()).unwrap();
    assert_eq!(status(&get(addr, "/metrics", "").await), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_for_a_free_slot() {
    let fixture = common::sysfs_6_1();
    let scraper = common::scraper(&fixture.root, &["--collector.timeout=10s"]);
    let limits = http::Limits {
        max_connections: 2,
        ..http::Limits::default()
    };
    let addr = start_with(App::new(scraper, "/metrics".into()), limits).await;
    // Two connections that send nothing hold both slots.
    let idle_a = TcpStream::connect(addr).await.unwrap();
    let _idle_b = TcpStream::connect(addr).await.unwrap();
    let third = tokio::spawn(async move {
        let req = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let (answer, read) = common::send(TcpStream::connect(addr).await.unwrap(), req).await;
        read.unwrap();
        answer
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "the third connection was served");
    drop(idle_a);
    let answer = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert_eq!(status(&answer), 200, "{answer}");
}

/// A client that asks for a large page and never reads it holds its connection for the write
/// timeout only: with one connection allowed, the next client is then served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_after_the_write_timeout() {
    use nvmeof_agent::scrape::Scraper;
    use tokio::io::AsyncWriteExt;
    // 12 MB: more than the kernel's largest send buffer (4 MB by default) and the client's
    // small receive buffer hold.
    let large = fixtures::Large { series: 12_000 };
    let scraper = Scraper::new(vec![Named::new("large", large)], Duration::from_secs(10));
    let limits = http::Limits {
        max_connections: 1,
        write_timeout: Duration::from_millis(500),
        ..http::Limits::default()
    };
    let addr = start_with(App::new(scraper, "/metrics".into()), limits).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(addr).await.unwrap();
    stuck
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(8), async {
        let req = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        common::send(TcpStream::connect(addr).await.unwrap(), req)
            .await
            .0
    })
    .await
    .expect("the next client is served once the stuck one is dropped");
    assert_eq!(status(&next), 200, "{next}");
    assert!(start.elapsed() >= Duration::from_millis(500));
    drop(stuck);
}

/// Lines of a page that stay the same from one scrape to the next (not the exporter's own
/// counters and durations).
fn stable_lines(page: &str) -> Vec<&str> {
    page.lines()
        .filter(|l| !l.contains("nvmeof_exporter_"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_when_the_client_accepts_it() {
    use std::io::Read as _;
    let server = start().await;
    let addr = server.addr;
    let plain = get(addr, "/metrics", "").await;
    assert_eq!(header(&plain, "content-encoding"), None);
    assert_eq!(header(&plain, "vary"), Some("Accept-Encoding"));

    let req = "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAccept-Encoding: gzip, deflate\r\n\r\n";
    let (head, payload) = raw_binary(addr, req.as_bytes()).await;
    assert_eq!(status(&head), 200);
    assert_eq!(header(&head, "content-encoding"), Some("gzip"));
    assert_eq!(header(&head, "vary"), Some("Accept-Encoding"));
    let compressed = &payload[..];
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(compressed)
        .read_to_string(&mut decoded)
        .unwrap();
    assert!(
        compressed.len() * 4 < decoded.len(),
        "{} bytes",
        compressed.len()
    );
    assert_eq!(stable_lines(&decoded), stable_lines(body(&plain)));
    assert!(decoded.contains("nvmeof_subsystem_paths{"));

    let refused = get(addr, "/metrics", "Accept-Encoding: gzip;q=0\r\n").await;
    assert_eq!(header(&refused, "content-encoding"), None);
    assert_eq!(stable_lines(body(&refused)), stable_lines(body(&plain)));
}

/// A collector that takes 300 ms, under a 50 ms `--collector.timeout`: stale without the
/// scraper's timeout header, fresh when the scraper says it waits 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrapers_timeout_header_sets_the_deadline() {
    use nvmeof_agent::scrape::Scraper;
    let (entered_tx, _entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    // A run waits at the gate until this thread opens it, every 300 ms.
    let gate = fixtures::Gate {
        entered: entered_tx.into(),
        release: release_rx.into(),
    };
    std::thread::spawn(move || {
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(300));
            if release.send(()).is_err() {
                break;
            }
        }
    });
    let scraper = Scraper::new(vec![Named::new("gate", gate)], Duration::from_millis(50));
    let addr = start_with(
        App::new(scraper, "/metrics".into()),
        http::Limits::default(),
    )
    .await;
    let success = "nvmeof_exporter_collector_success{collector=\"gate\"}";
    let quick = get(addr, "/metrics", "").await;
    assert!(body(&quick).contains(&format!("{success} 0\n")), "{quick}");
    // Wait for the late run to end, so the next scrape starts its own.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let start = std::time::Instant::now();
    let patient = get(
        addr,
        "/metrics",
        "X-Prometheus-Scrape-Timeout-Seconds: 5\r\n",
    )
    .await;
    assert!(
        body(&patient).contains(&format!("{success} 1\n")),
        "{patient}"
    );
    assert!(body(&patient).contains("test_value 1\n"));
    assert!(start.elapsed() < Duration::from_secs(4));
}

/// An HTTP/2 client that assumes prior knowledge sends the connection preface; Go's net/http
/// reads its first line as a request (`PRI *`) and its ServeMux answers `400 Bad Request` with
/// `Connection: close` in HTTP/1.1. The client learns it is not talking to HTTP/2 instead of
/// seeing the connection vanish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_preface_gets_an_http1_answer() {
    let server = start().await;
    // The preface, then an empty SETTINGS frame, as an HTTP/2 client sends them.
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let (answer, _) = common::send(TcpStream::connect(server.addr).await.unwrap(), &preface).await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer:?}"
    );
    assert_eq!(header(&answer, "connection"), Some("close"), "{answer:?}");
    // The server goes on serving.
    assert_eq!(status(&get(server.addr, "/healthz", "").await), 200);
}

/// A client may shut its writing side once its request is sent (`curl` does not, some scripts
/// and proxies do): it still gets the whole answer, as from Go's server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start().await;
    for request in [
        "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        "GET /metrics HTTP/1.0\r\n\r\n",
    ] {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        let answer = String::from_utf8_lossy(&out);
        assert_eq!(status(&answer), 200, "{request:?}: {answer:?}");
        assert!(
            answer.contains("nvmeof_subsystem_live_paths"),
            "{request:?}"
        );
    }
}

/// Paths are compared after percent-decoding, as Go's ServeMux compares `URL.Path`: an escaped
/// letter is the letter; an escape that is not one is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_compared_percent_decoded() {
    let server = start().await;
    for path in [
        "/metric%73",
        "/%6d%65%74%72%69%63%73",
        "/%6D%65%74%72%69%63%73?x=1",
    ] {
        let answer = get(server.addr, path, "").await;
        assert_eq!(status(&answer), 200, "{path}");
        assert!(answer.contains("nvmeof_subsystem_live_paths"), "{path}");
    }
    assert_eq!(status(&get(server.addr, "/health%7A", "").await), 200);
    assert_eq!(status(&get(server.addr, "/metrics%2F", "").await), 404);
    for bad in ["/metrics%zz", "/metrics%7", "/metrics%"] {
        assert_eq!(status(&get(server.addr, bad, "").await), 400, "{bad}");
    }
}

/// node_exporter's `collect[]` and `exclude[]` query parameters: only the named collectors run
/// (the self metrics always), a name the agent does not run or both kinds at once get node_exporter's 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_and_exclude_parameters_choose_the_collectors() {
    let server = start().await;
    let addr = server.addr;
    let has = |answer: &str, family: &str| body(answer).contains(&format!("\n{family}{{"));

    let all = get(addr, "/metrics", "").await;
    assert!(has(&all, "nvmeof_controller_cntlid") && has(&all, "nvmeof_subsystem_info"));

    // The brackets percent-encoded, as a URL builder writes them.
    let only = get(addr, "/metrics?collect%5B%5D=controller", "").await;
    assert_eq!(status(&only), 200, "{only}");
    assert!(has(&only, "nvmeof_controller_cntlid"), "{only}");
    assert!(!has(&only, "nvmeof_subsystem_info"), "{only}");
    assert!(body(&only).contains("nvmeof_exporter_scrapes_total"));

    let two = get(
        addr,
        "/metrics?collect[]=controller&collect[]=subsystem",
        "",
    )
    .await;
    assert!(has(&two, "nvmeof_controller_cntlid") && has(&two, "nvmeof_subsystem_info"));

    let except = get(addr, "/metrics?exclude[]=controller", "").await;
    assert!(!has(&except, "nvmeof_controller_cntlid"), "{except}");
    assert!(has(&except, "nvmeof_subsystem_info"), "{except}");

    for (query, why) in [
        ("collect[]=nope", "missing collector: nope"),
        (
            "collect[]=controller&exclude[]=subsystem",
            "cannot be used together",
        ),
    ] {
        let answer = get(addr, &format!("/metrics?{query}"), "").await;
        assert_eq!(status(&answer), 400, "{query}: {answer}");
        assert!(body(&answer).contains(why), "{query}: {answer}");
        assert!(body(&answer).starts_with("couldn't create filtered metrics handler"));
    }
}

/// The samples of a page that belong to `controller`, without the self metrics (whose
/// durations and counts move from scrape to scrape).
fn lines_of<'a>(answer: &'a str, controller: &str) -> Vec<&'a str> {
    let label = format!("controller=\"{controller}\"");
    body(answer)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("nvmeof_exporter_"))
        .filter(|l| l.contains(&label))
        .collect()
}

/// `controller=nvmeN` (repeated, or `all`): the named controllers' I/O series and queue CPUs
/// come per queue, exactly as `--metrics.per-queue` shows them, and every other controller as
/// by default; the default page is the same before and after; a name that is not a
/// controller's name is node_exporter's 400, a controller that is not there is no data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_parameters_show_the_named_controllers_per_queue() {
    let fixture = common::sysfs_6_1();
    let io = || {
        nvmeof_agent::test_support::drained_io_state(&[
            (0, "nqn.2026-11.io.nvmeof-exporter.lab:tcp"),
            (3, "nqn.2026-11.io.nvmeof-exporter.lab:fc"),
        ])
    };
    let flags = ["--collector.timeout=10s"];
    let scraper = common::scraper_with_io(&fixture.root, &flags, io());
    let addr = start_with(
        App::new(scraper, "/metrics".into()),
        http::Limits::default(),
    )
    .await;
    // The same node with --metrics.per-queue: what a named controller must look like.
    let flags = ["--collector.timeout=10s", "--metrics.per-queue"];
    let per_queue = common::scraper_with_io(&fixture.root, &flags, io());
    let flagged = start_with(
        App::new(per_queue, "/metrics".into()),
        http::Limits::default(),
    )
    .await;

    let default = get(addr, "/metrics", "").await;
    assert_eq!(status(&default), 200);
    assert!(!body(&default).contains("queue=\""), "{default}");
    assert!(!body(&default).contains("local_port=\""), "{default}");
    assert!(body(&default).contains(
        "nvmeof_io_read_bytes_total{subsystem=\"nqn.2026-11.io.nvmeof-exporter.lab:fc\",controller=\"nvme3\"} 12288\n"
    ));
    let everything = get(flagged, "/metrics", "").await;

    let named = get(addr, "/metrics?controller=nvme3", "").await;
    assert_eq!(status(&named), 200, "{named}");
    // nvme3 as the flag shows it, nvme0 (and every other controller) as by default.
    assert_eq!(lines_of(&named, "nvme3"), lines_of(&everything, "nvme3"));
    for other in ["nvme0", "nvme1", "nvme2", "nvme4"] {
        assert_eq!(
            lines_of(&named, other),
            lines_of(&default, other),
            "{other}"
        );
    }
    for line in [
        "nvmeof_io_read_bytes_total{subsystem=\"nqn.2026-11.io.nvmeof-exporter.lab:fc\",controller=\"nvme3\",queue=\"1\"} 4096",
        "nvmeof_io_read_bytes_total{subsystem=\"nqn.2026-11.io.nvmeof-exporter.lab:fc\",controller=\"nvme3\",queue=\"2\"} 8192",
        "nvmeof_io_latency_seconds_count{subsystem=\"nqn.2026-11.io.nvmeof-exporter.lab:fc\",controller=\"nvme3\",queue=\"2\",opclass=\"read\"} 2",
        "nvmeof_queue_depth{subsystem=\"nqn.2026-11.io.nvmeof-exporter.lab:fc\",controller=\"nvme3\",queue=\"2\"} 2",
        "nvmeof_queue_busy_seconds_total{subsystem=\"nqn.2026-11.io.nvmeof-exporter.lab:fc\",controller=\"nvme3\",queue=\"1\"} 0.001",
        // The captured tree's 2 vCPUs: one per I/O queue.
        "nvmeof_queue_cpus_info{subsystem=\"nqn.2026-11.io.nvmeof-exporter.lab:fc\",controller=\"nvme3\",queue=\"1\",cpus=\"0\"} 1",
        // Admin and fabrics classes and per-controller counters stay per controller.
        "nvmeof_io_commands_total{subsystem=\"nqn.2026-11.io.nvmeof-exporter.lab:fc\",controller=\"nvme3\",opclass=\"read\"} 3",
        // nvme0 summed over its queues.
        "nvmeof_io_latency_seconds_count{subsystem=\"nqn.2026-11.io.nvmeof-exporter.lab:tcp\",controller=\"nvme0\",opclass=\"read\"} 3",
        "nvmeof_queue_busy_seconds_total{subsystem=\"nqn.2026-11.io.nvmeof-exporter.lab:tcp\",controller=\"nvme0\"} 0.003",
    ] {
        assert!(body(&named).lines().any(|l| l == line), "missing {line:?} in\n{named}");
    }
    let queue_cpus = body(&named).matches("\nnvmeof_queue_cpus_info{").count();
    assert_eq!(queue_cpus, 2, "nvme3's two I/O queues alone:\n{named}");

    // Repeated, with collect[]: two controllers per queue, the io collector alone.
    let two = get(
        addr,
        "/metrics?collect[]=io&controller=nvme0&controller=nvme3",
        "",
    )
    .await;
    assert_eq!(status(&two), 200, "{two}");
    let everything_io = get(flagged, "/metrics?collect[]=io", "").await;
    for c in ["nvme0", "nvme3"] {
        assert_eq!(lines_of(&two, c), lines_of(&everything_io, c), "{c}");
    }
    assert!(!body(&two).contains("nvmeof_controller_cntlid"), "{two}");

    // all: every controller as the flag shows it.
    let all = get(addr, "/metrics?controller=all", "").await;
    for c in ["nvme0", "nvme1", "nvme2", "nvme3", "nvme4"] {
        assert_eq!(lines_of(&all, c), lines_of(&everything, c), "{c}");
    }

    // A controller that is not there (gone since the scrape config was written): no data.
    let absent = get(addr, "/metrics?controller=nvme42", "").await;
    assert_eq!(status(&absent), 200, "{absent}");
    assert!(!body(&absent).contains("queue=\""), "{absent}");

    // Not a controller's name: node_exporter's 400, naming the value.
    for (query, shown) in [
        ("controller=nvme03", "\"nvme03\""),
        ("controller=nvme3n1", "\"nvme3n1\""),
        ("controller=", "\"\""),
        ("controller=sda", "\"sda\""),
        ("controller=nvme99999999999", "\"nvme99999999999\""),
        ("controller=nvme3&controller=%0a%1b", "\"??\""),
    ] {
        let answer = get(addr, &format!("/metrics?{query}"), "").await;
        assert_eq!(status(&answer), 400, "{query}: {answer}");
        let want = format!("couldn't create filtered metrics handler: invalid controller: {shown}");
        assert!(body(&answer).starts_with(&want), "{query}: {answer}");
    }

    // Nothing a detailed scrape did shows in the default page.
    let again = get(addr, "/metrics", "").await;
    for c in ["nvme0", "nvme1", "nvme2", "nvme3", "nvme4"] {
        assert_eq!(lines_of(&again, c), lines_of(&default, c), "{c}");
    }
    // With the flag every controller is per queue already: a name changes nothing.
    let flagged_named = get(flagged, "/metrics?controller=nvme3", "").await;
    for c in ["nvme0", "nvme3"] {
        assert_eq!(lines_of(&flagged_named, c), lines_of(&everything, c), "{c}");
    }
}

/// `/debug/slow`: 404 with the flag to set while tracing is off; the log's latest as JSON with
/// `since` and `limit` when on, bounded whatever they ask (the lab runs `nvmeof-exporter trace`
/// against it).
#[tokio::test]
async fn slow_commands_are_listed_past_a_sequence_number() {
    use nvmeof_agent::bpf::io::slow::{SlowJson, SlowLog, LOG_CAPACITY};
    use nvmeof_common::slow::SlowCommand;
    let off = start().await;
    let a = get(off.addr, "/debug/slow", "").await;
    assert_eq!(status(&a), 404, "{a}");
    assert!(body(&a).contains("--trace.slower-than"), "{a}");

    let log = Arc::new(SlowLog::default());
    for i in 0..(LOG_CAPACITY as u64 + 5) {
        log.push(
            SlowCommand {
                latency_ns: 10_000_000 + i,
                ctrl_id: 2,
                ..Default::default()
            },
            std::time::UNIX_EPOCH,
        );
    }
    let scraper = nvmeof_agent::scrape::Scraper::new(vec![], Duration::from_secs(1));
    let app = App::new(scraper, "/metrics".into()).with_slow_log(Some(log.clone()));
    let on = start_with(app, http::Limits::default()).await;
    let list = |path: &'static str| async move {
        let a = get(on, path, "").await;
        assert_eq!(status(&a), 200, "{a}");
        assert_eq!(header(&a, "content-type"), Some("application/json"));
        serde_json::from_str::<Vec<SlowJson>>(body(&a)).unwrap()
    };
    // 100 by default, the latest, oldest first.
    let latest = list("/debug/slow").await;
    assert_eq!(latest.len(), 100);
    assert_eq!(latest.last().unwrap().seq, LOG_CAPACITY as u64 + 5);
    assert_eq!(latest[0].controller, "nvme2");
    let seqs = |v: Vec<SlowJson>| v.iter().map(|c| c.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(list("/debug/slow?since=1027&limit=2").await),
        [1028, 1029]
    );
    assert_eq!(list("/debug/slow?since=1029").await.len(), 0);
    // A limit past the log's capacity gets the log; junk keeps the defaults.
    assert_eq!(list("/debug/slow?limit=99999999").await.len(), LOG_CAPACITY);
    assert_eq!(list("/debug/slow?since=x&limit=-1").await.len(), 100);
}
