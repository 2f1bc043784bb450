//! The server on 127.0.0.1:0 over raw TCP: what each path answers, content negotiation, and that
//! a malformed request gets a 4xx while the server keeps serving.
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
    let (answer, read) =
        common::send_bytes(TcpStream::connect(addr).await.unwrap(), req.as_bytes()).await;
    read.unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(answer[..split].to_vec()).unwrap();
    assert_eq!(status(&head), 200);
    assert_eq!(header(&head, "content-type"), Some(protobuf::CONTENT_TYPE));
    assert_eq!(
        protobuf::CONTENT_TYPE,
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
    );
    let families = protobuf::decode(&answer[split + 4..]).unwrap();
    let state = families
        .iter()
        .find(|f| f.name() == "nvmeof_subsystem_state")
        .unwrap();
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
