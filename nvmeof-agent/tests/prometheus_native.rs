//! Debian's real Prometheus (2.42, `--enable-feature=native-histograms`) scrapes the agent's
//! HTTP app serving one native histogram: it must ask for protobuf, get it, and ingest the
//! native buckets, which `histogram_count` and `histogram_quantile` then read. Skipped, with the
//! reason printed, where no `prometheus` binary is installed.
use std::sync::Arc;
use std::time::Duration;

use nvmeof_agent::collector::{Collector, Family, HistogramData, Kind, Named, Scrape, Sink};
use nvmeof_agent::exposition::Native;
use nvmeof_agent::http::{self, App, PlainTcp};
use nvmeof_agent::scrape::Scraper;
use tokio::net::TcpListener;
use xtask::prometheus::{self, Prometheus};

const LATENCY: Family = Family {
    name: "test_latency_seconds",
    help: "A native histogram at schema 3.",
    kind: Kind::Histogram,
};

/// 4 observations in bucket -80 of schema 3, (2^(-81/8), 2^(-80/8)] s, and 6 in bucket -70,
/// (2^(-71/8), 2^(-70/8)] s: the median is in the second.
struct Fixed;

impl Collector for Fixed {
    fn collect(&self, _: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
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
                exemplars: &[],
            },
        );
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_ingests_the_native_histogram() {
    if !prometheus::installed_or_say_skipped() {
        return;
    }
    let scraper = Scraper::new(vec![Named::new("fixed", Fixed)], Duration::from_secs(5));
    let app = Arc::new(App::new(scraper, "/metrics".into()).with_native_only(true));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(http::serve(
        listener,
        Arc::new(PlainTcp),
        app,
        std::future::pending(),
    ));

    // The server answers on the runtime's workers; Prometheus and its queries block, elsewhere.
    tokio::task::spawn_blocking(move || {
        let p = Prometheus::start(target.port()).expect("starting Prometheus");
        let count_expr = "histogram_count(test_latency_seconds)";
        p.wait_for("the native histogram", Duration::from_secs(60), |p| {
            Ok(!p.query(count_expr)?.is_empty())
        })
        .unwrap();
        assert_eq!(p.value(count_expr).unwrap(), 10.0);
        let median = p
            .value("histogram_quantile(0.5, test_latency_seconds)")
            .unwrap();
        let (low, high) = (2f64.powf(-71.0 / 8.0), 2f64.powf(-70.0 / 8.0));
        assert!(
            (low..=high).contains(&median),
            "median {median} outside bucket -70 ({low}, {high}]"
        );
        // The classic buckets were not sent (native only): no `_bucket` series exists.
        let classic = p.query("test_latency_seconds_bucket").unwrap();
        assert!(classic.is_empty(), "{classic:?}");
    })
    .await
    .unwrap();
}
