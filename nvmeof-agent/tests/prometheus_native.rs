//! Debian's real Prometheus (2.42, `--enable-feature=native-histograms`) scrapes the agent's
//! HTTP app serving one native histogram: it must ask for protobuf, get it, and ingest the
//! native buckets, which `histogram_count` and `histogram_quantile` then read. Skipped, with the
//! reason printed, where no `prometheus` binary is installed.
use std::sync::Arc;
use std::time::Duration;

use nvmeof_agent::collector::{Collector, Family, Kind, Named, Scrape, Sink};
use nvmeof_agent::http::{self, App, PlainTcp};
use nvmeof_agent::scrape::Scraper;
use nvmeof_agent::test_support::two_bucket_histogram;
use tokio::net::TcpListener;
use xtask::prometheus::{self, Prometheus};

const LATENCY: Family = Family {
    name: "test_latency_seconds",
    help: "A native histogram at schema 3.",
    kind: Kind::Histogram,
};

/// Serves [`two_bucket_histogram`]: its median is in native bucket -70.
struct Fixed;

impl Collector for Fixed {
    fn collect(&self, _: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
        sink.histogram(&LATENCY, &[("queue", "1")], two_bucket_histogram());
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
