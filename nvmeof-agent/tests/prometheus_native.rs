//! Debian's real Prometheus (2.42, `--enable-feature=native-histograms`) scrapes the agent's
//! HTTP app serving one native histogram: it must ask for protobuf, get it, and ingest the
//! native buckets, which `histogram_count` and `histogram_quantile` then read. Skipped, with the
//! reason printed, where no `prometheus` binary is installed.
mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nvmeof_agent::collector::{Collector, Family, HistogramData, Kind, Sink};
use nvmeof_agent::exposition::Native;
use nvmeof_agent::http::{self, App, PlainTcp};
use nvmeof_agent::scrape::Scraper;
use tokio::net::{TcpListener, TcpStream};

const LATENCY: Family = Family {
    name: "test_latency_seconds",
    help: "A native histogram at schema 3.",
    kind: Kind::Histogram,
};

/// 4 observations in bucket -80 of schema 3, (2^(-81/8), 2^(-80/8)] s, and 6 in bucket -70,
/// (2^(-71/8), 2^(-70/8)] s: the median is in the second.
struct Fixed;

impl Collector for Fixed {
    fn name(&self) -> &'static str {
        "fixed"
    }
    fn families(&self) -> &'static [Family] {
        &[LATENCY]
    }
    fn collect(&self, sink: &mut Sink) -> anyhow::Result<()> {
        sink.histogram(
            &LATENCY,
            &[("queue", "1")],
            HistogramData {
                count: 10,
                sum: 0.017,
                classic: &[(0.001, 4), (0.01, 10)],
                native: Some(Native {
                    schema: 3,
                    zero_threshold: 0.0,
                    zero_count: 0,
                    positive: vec![(-80, 4), (-70, 6)],
                }),
            },
        );
        Ok(())
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `data.result` of an instant query, or `None` while Prometheus is not answering yet.
async fn query(addr: SocketAddr, q: &str) -> Option<Vec<serde_json::Value>> {
    let mut encoded = String::new();
    for b in q.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => encoded.push(b as char),
            _ => encoded.push_str(&format!("%{b:02X}")),
        }
    }
    let req = format!(
        "GET /api/v1/query?query={encoded} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    );
    let stream = TcpStream::connect(addr).await.ok()?;
    let (answer, _) = common::send(stream, req.as_bytes()).await;
    let body = answer.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["data"]["result"].as_array().cloned()
}

fn scalar(result: &[serde_json::Value]) -> Option<f64> {
    result.first()?["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_ingests_the_native_histogram() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no prometheus binary (Debian package `prometheus`)");
        return;
    }
    let scraper = Scraper::new(vec![Box::new(Fixed)], Duration::from_secs(5));
    let app = Arc::new(App::new(scraper, "/metrics".into()).with_native_only(true));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(http::serve(
        listener,
        Arc::new(PlainTcp),
        app,
        std::future::pending(),
    ));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: agent\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let web = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .arg("--enable-feature=native-histograms")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let count = loop {
        let got = query(web, "histogram_count(test_latency_seconds)").await;
        if let Some(v) = got.as_deref().and_then(scalar) {
            break v;
        }
        let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "no native histogram after 60 s; Prometheus said:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(count, 10.0);
    let median = query(web, "histogram_quantile(0.5, test_latency_seconds)")
        .await
        .as_deref()
        .and_then(scalar)
        .expect("a median");
    let (low, high) = (2f64.powf(-71.0 / 8.0), 2f64.powf(-70.0 / 8.0));
    assert!(
        (low..=high).contains(&median),
        "median {median} outside bucket -70 ({low}, {high}]"
    );
    // The classic buckets were not sent (native only): no `_bucket` series exists.
    let classic = query(web, "test_latency_seconds_bucket").await.unwrap();
    assert!(classic.is_empty(), "{classic:?}");
}
