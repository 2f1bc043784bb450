//! The generated dashboard's queries on Debian's real Prometheus (2.42) scraping two agents,
//! each over its own copy of the captured 6.1 tree (two `instance` labels, the same controller
//! names on both, as two nodes of one fleet): every query parses and runs; a query answers for
//! both instances or for neither (two nodes' `nvme0` never merge into one line); the panels the
//! sysfs collectors feed answer for both; a stat answers one value per instance, or one 0 when
//! its series do not exist (never "No data", never a label-less 0 beside per-instance values).
//! The eBPF and SMART panels need the lab's kernel and devices and answer for neither here.
//! Skipped, with the reason printed, where no `prometheus` binary is installed.
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use nvmeof_agent::http::{self, App, PlainTcp};
use tokio::net::TcpListener;
use xtask::monitoring::dashboard::{self, Vars};
use xtask::monitoring::Config;
use xtask::prometheus::{self, Prometheus};

/// Panels the sysfs collectors feed on the captured tree: each must answer for both nodes.
/// Reconnects and state transitions are not due: the tree holds still, and the state
/// collector's sysfs poll (no kprobes outside the lab) counts no reconnect attempts.
const DUE: &[&str] = &[
    "Controllers not live",
    "Subsystems without a live path",
    "Lost paths",
    "Live paths / expected paths",
    "Controller state",
    "RDMA error counters",
    "RDMA traffic",
    "Targets down",
    "Collectors stale",
    "Lost paths forgotten",
    "Scrape time (p99)",
    "Collector wait per scrape",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_answers_per_instance_on_a_real_prometheus() {
    if !prometheus::installed_or_say_skipped() {
        return;
    }
    let mut fixtures = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..2 {
        let fixture = common::sysfs_6_1();
        let scraper = common::scraper(&fixture.root, &["--collector.timeout=10s"]);
        let app = Arc::new(App::new(scraper, "/metrics".into()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        ports.push(listener.local_addr().unwrap().port());
        tokio::spawn(http::serve(
            listener,
            Arc::new(PlainTcp),
            app,
            std::future::pending(),
        ));
        fixtures.push(fixture);
    }
    let instances: BTreeSet<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let board = dashboard::dashboard(&Config::default());
    // Grafana's own substitutions: the interval and range as durations, the variables' "All"
    // (the job's too, which matches only the job the dashboard is for).
    let vars = Vars {
        job: "nvmeof-exporter".into(),
        ..Vars::all("1m", "5m")
    };
    tokio::task::spawn_blocking(move || {
        let p = Prometheus::start_scraping("nvmeof-exporter", &ports).expect("starting Prometheus");
        // Enough scrapes for rate() over 1m: both targets up, and 5 samples each.
        p.wait_for(
            "five scrapes of both agents",
            Duration::from_secs(90),
            |p| {
                Ok(
                    p.query("count_over_time(up{job=\"nvmeof-exporter\"}[1m]) >= 5")?
                        .len()
                        == 2,
                )
            },
        )
        .unwrap();
        let mut problems = Vec::new();
        let mut answered = BTreeSet::new();
        let answers = p.answer_panels(&board, &vars, &mut problems);
        for a in &answers {
            let (title, samples) = (a.title, &a.samples);
            let seen: BTreeSet<String> = samples
                .iter()
                .filter_map(|s| s.labels.get("instance")?.as_str().map(str::to_owned))
                .collect();
            let unlabelled = samples
                .iter()
                .filter(|s| !s.labels.contains_key("instance"))
                .count();
            if a.stat {
                let per_instance = seen == instances && unlabelled == 0 && samples.len() == 2;
                let zero = samples.len() == 1 && unlabelled == 1 && samples[0].value == 0.0;
                if !(per_instance || zero) {
                    problems.push(format!("{title}: stat answered {samples:?}"));
                }
            } else if unlabelled > 0 || !(seen.is_empty() || seen == instances) {
                problems.push(format!(
                    "{title}: instances {seen:?}, {unlabelled} without: {}",
                    a.expr
                ));
            }
            if seen == instances {
                answered.insert(title.to_owned());
            }
        }
        let queries = answers.len();
        for due in DUE {
            if !answered.contains(*due) {
                problems.push(format!("{due}: no answer for both instances"));
            }
        }
        assert!(problems.is_empty(), "{}\n{}", problems.join("\n"), p.log());
        assert!(queries >= 45, "{queries} queries");
        eprintln!(
            "{queries} queries; answered for both instances: {}",
            answered.len()
        );
    })
    .await
    .unwrap();
    drop(fixtures);
}
