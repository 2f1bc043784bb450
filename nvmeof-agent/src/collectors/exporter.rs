//! Collector `exporter`, always on: the exporter's own health. The scraper records each
//! collector's outcome into [`SelfStats`]; this collector turns those figures into metrics at
//! the end of the same scrape.
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::collector::{families, Collector, HistogramData, Scrape, Sink};

families! {
    BUILD_INFO: gauge("nvmeof_exporter_build_info",
        "The exporter's version; always 1.");
    SUCCESS: gauge("nvmeof_exporter_collector_success",
        "1 when the collector finished within its deadline without error in this scrape.");
    DURATION: gauge("nvmeof_exporter_collector_duration_seconds",
        "Time this scrape waited for the collector (at most the scrape's deadline: what the scraper's X-Prometheus-Scrape-Timeout-Seconds allows, or --collector.timeout).");
    STALE: gauge("nvmeof_exporter_collector_stale",
        "1 when the collector failed or missed its deadline and its last good output is served instead.");
    ERRORS: counter("nvmeof_exporter_collect_errors_total",
        "Values skipped as missing or odd, failed runs, and scrapes in which the collector missed its deadline.");
    SCRAPES: counter("nvmeof_exporter_scrapes_total",
        "Scrapes served.");
    SCRAPE_DURATION: histogram("nvmeof_exporter_scrape_duration_seconds",
        "Time the exporter took to answer earlier scrapes, from the request to the encoded page.");
}

/// Upper bounds of the scrape-duration buckets: fine around the collector deadline (50 ms by
/// default) and the 100 ms a scrape must stay under, coarse beyond.
pub const SCRAPE_BOUNDS_SECONDS: [f64; 10] =
    [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5];

/// How one collector fared in one scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Outcome {
    pub success: bool,
    pub stale: bool,
    pub duration: Duration,
}

/// Cumulative durations of answered scrapes, as a Prometheus histogram keeps them.
#[derive(Default)]
struct Served {
    /// Per bound of [`SCRAPE_BOUNDS_SECONDS`]: scrapes at or under it (non-cumulative here).
    buckets: [u64; SCRAPE_BOUNDS_SECONDS.len()],
    count: u64,
    sum_seconds: f64,
}

#[derive(Default)]
struct Inner {
    scrapes: u64,
    served: Served,
    last: BTreeMap<&'static str, Outcome>,
    errors: BTreeMap<&'static str, u64>,
}

/// The figures behind the self metrics, shared by the scraper (writer) and the collector.
#[derive(Default)]
pub struct SelfStats {
    inner: Mutex<Inner>,
}

impl SelfStats {
    /// Stats for these collectors, their error counters at 0 so they exist from the start.
    pub fn new(collectors: &[&'static str]) -> Self {
        let mut inner = Inner::default();
        for c in collectors {
            inner.errors.insert(c, 0);
        }
        SelfStats {
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain numbers behind: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn scrape_started(&self) {
        self.lock().scrapes += 1;
    }

    /// Records how long answering one scrape took (the request handler calls it once the page
    /// is encoded, so a scrape's own time shows from the next scrape on).
    pub fn scrape_served(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let mut inner = self.lock();
        let served = &mut inner.served;
        if let Some(i) = SCRAPE_BOUNDS_SECONDS.iter().position(|&le| secs <= le) {
            served.buckets[i] += 1;
        }
        served.count += 1;
        served.sum_seconds += secs;
    }

    pub fn add_errors(&self, collector: &'static str, n: u64) {
        *self.lock().errors.entry(collector).or_default() += n;
    }

    pub fn record(&self, collector: &'static str, outcome: Outcome) {
        self.lock().last.insert(collector, outcome);
    }

    pub fn errors(&self, collector: &str) -> u64 {
        self.lock().errors.get(collector).copied().unwrap_or(0)
    }
}

pub struct ExporterCollector {
    stats: std::sync::Arc<SelfStats>,
}

impl ExporterCollector {
    pub fn new(stats: std::sync::Arc<SelfStats>) -> Self {
        ExporterCollector { stats }
    }
}

impl Collector for ExporterCollector {
    fn collect(&self, _: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
        let inner = self.stats.lock();
        sink.gauge(&BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        for (name, o) in &inner.last {
            let l = [("collector", *name)];
            sink.gauge(&SUCCESS, &l, f64::from(u8::from(o.success)));
            sink.gauge(&DURATION, &l, o.duration.as_secs_f64());
            sink.gauge(&STALE, &l, f64::from(u8::from(o.stale)));
        }
        for (name, n) in &inner.errors {
            sink.counter(&ERRORS, &[("collector", *name)], *n as f64);
        }
        sink.counter(&SCRAPES, &[], inner.scrapes as f64);
        let classic: Vec<(f64, u64)> = SCRAPE_BOUNDS_SECONDS
            .iter()
            .zip(&inner.served.buckets)
            .scan(0, |total, (&le, n)| {
                *total += n;
                Some((le, *total))
            })
            .collect();
        let data = HistogramData {
            count: inner.served.count,
            sum: inner.served.sum_seconds,
            classic: &classic,
            native: None,
            exemplars: &[],
        };
        sink.histogram(&SCRAPE_DURATION, &[], data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::render;

    fn page(stats: std::sync::Arc<SelfStats>) -> String {
        render(&ExporterCollector::new(stats))
    }

    #[test]
    fn scrape_durations_fill_cumulative_buckets() {
        let stats = std::sync::Arc::new(SelfStats::new(&["io"]));
        for ms in [3, 60, 100, 3000] {
            stats.scrape_served(Duration::from_millis(ms));
        }
        let text = page(stats);
        for (le, n) in [
            ("0.005", 1),
            ("0.05", 1),
            ("0.075", 2),
            // A bound is inclusive: 100 ms is within 0.1.
            ("0.1", 3),
            ("2.5", 3),
            ("+Inf", 4),
        ] {
            let line =
                format!("nvmeof_exporter_scrape_duration_seconds_bucket{{le=\"{le}\"}} {n}\n");
            assert!(text.contains(&line), "{line} not in\n{text}");
        }
        assert!(text.contains("nvmeof_exporter_scrape_duration_seconds_count 4\n"));
        assert!(text.contains("nvmeof_exporter_scrape_duration_seconds_sum 3.163\n"));
    }
}
