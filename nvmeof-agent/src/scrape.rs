//! One scrape: every enabled collector at once, none allowed to hold the answer up.
//!
//! Each collector that reads the kernel ([`Reads::Kernel`]) runs in a blocking task (sysfs reads
//! can stall on a controller in error recovery) under the scrape's deadline: what the scraper allows
//! (`X-Prometheus-Scrape-Timeout-Seconds`, less a margin for encoding and sending, see
//! [`deadline_from_scrape_timeout`]), or `--collector.timeout` when it does not say, so that
//! data is served stale only when fresh data cannot be had in the time the scraper gives. A
//! collector that errors or misses the deadline contributes its last good output, marked by
//! `nvmeof_exporter_collector_stale`. At most one run per collector is in flight: a scrape that
//! finds one younger than its deadline waits for it (two Prometheus servers scraping at once
//! share a run); one that finds a run older than its deadline (stuck) does not wait at all, and
//! serves the cache. A run that finishes late still refreshes the cache, so the next scrape
//! serves its data. A collector that renders only what a background source published
//! ([`Reads::Memory`], the eBPF drain's snapshot) runs in line meanwhile and is never stale: a
//! busy node that makes the kernel readers late still gets its I/O counters fresh.
//!
//! A scrape may name controllers to show per hardware queue (`controller=`, [`Detail`]); what is
//! run, shared and cached must then never cross from one kind of scrape to the other. A kernel
//! collector has two classes of runs, each with its own run in flight and its own cache: per
//! controller (the default), and per queue for every controller, of which each scrape that names
//! controllers keeps the queues of those it names ([`Detail::keep_named`]); so at most two runs
//! per collector are in flight, and two outputs cached, whatever the scrapers ask. A collector
//! run in line renders the scrape's own detail, and its last good output is served stale only to
//! a scrape that asks for the same detail.
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::collector::{Collector, Detail, Named, Reads, Scrape, Sink};
use crate::collectors::exporter::{ExporterCollector, Outcome, SelfStats};
use crate::exposition::MetricFamily;

type Families = Arc<Vec<MetricFamily>>;

/// The shortest and longest deadlines a scraper's timeout may give.
const SCRAPER_DEADLINE_MIN: Duration = Duration::from_millis(10);
const SCRAPER_DEADLINE_MAX: Duration = Duration::from_secs(120);

/// The collectors' deadline within a scrape whose scraper gives up after `header` seconds (the
/// value of Prometheus' `X-Prometheus-Scrape-Timeout-Seconds`): that, less 10 % and at most
/// 0.5 s for encoding and sending the page, within 10 ms .. 120 s. `None` for a value that is
/// not a positive number of seconds.
pub fn deadline_from_scrape_timeout(header: &str) -> Option<Duration> {
    let secs: f64 = header.trim().parse().ok()?;
    if !secs.is_finite() || secs <= 0.0 {
        return None;
    }
    let margin = (secs * 0.1).min(0.5);
    let deadline = Duration::try_from_secs_f64(secs - margin).unwrap_or(SCRAPER_DEADLINE_MAX);
    Some(deadline.clamp(SCRAPER_DEADLINE_MIN, SCRAPER_DEADLINE_MAX))
}

#[derive(Clone)]
enum RunResult {
    Done(Families),
    Failed(String),
}

struct Running {
    started: Instant,
    done: watch::Receiver<Option<RunResult>>,
}

#[derive(Default)]
struct SlotState {
    /// The last good output, and the detail it shows.
    last_good: Option<(Detail, Families)>,
    running: Option<Running>,
}

impl SlotState {
    /// The last good output if it shows `detail`.
    fn cached(&self, detail: &Detail) -> Option<Families> {
        let (shows, families) = self.last_good.as_ref()?;
        (shows == detail).then(|| families.clone())
    }
}

/// A scrape's class of runs (see the module documentation): 0 per controller, 1 per queue.
fn class_of(detail: &Detail) -> usize {
    usize::from(*detail != Detail::PerController)
}

/// Which collectors one scrape runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Selection {
    #[default]
    All,
    Only(Vec<String>),
    Except(Vec<String>),
}

impl Selection {
    fn runs(&self, name: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Only(names) => names.iter().any(|n| n == name),
            Selection::Except(names) => !names.iter().any(|n| n == name),
        }
    }
}

struct Slot {
    name: &'static str,
    collector: Arc<dyn Collector>,
    reads: Reads,
    /// Per class of runs ([`class_of`]).
    states: [Arc<Mutex<SlotState>>; 2],
}

fn lock(state: &Mutex<SlotState>) -> MutexGuard<'_, SlotState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Scraper {
    slots: Vec<Slot>,
    timeout: Duration,
    stats: Arc<SelfStats>,
    exporter: ExporterCollector,
    /// `--metrics.per-queue`: every controller per queue already, whatever a scrape names.
    per_queue: bool,
}

impl Scraper {
    pub fn new(collectors: Vec<Named>, timeout: Duration) -> Self {
        let names: Vec<&'static str> = collectors.iter().map(|c| c.name).collect();
        let stats = Arc::new(SelfStats::new(&names));
        Scraper {
            slots: collectors
                .into_iter()
                .map(|c| Slot {
                    name: c.name,
                    collector: Arc::from(c.collector),
                    reads: c.reads,
                    states: Default::default(),
                })
                .collect(),
            timeout,
            exporter: ExporterCollector::new(stats.clone()),
            stats,
            per_queue: false,
        }
    }

    /// With `--metrics.per-queue`: the collectors show every controller per queue on their own,
    /// and a scrape's `controller=` values are checked but change nothing.
    pub fn with_per_queue(mut self, per_queue: bool) -> Self {
        self.per_queue = per_queue;
        self
    }

    pub fn stats(&self) -> &SelfStats {
        &self.stats
    }

    /// `--collector.timeout`: the deadline of a scrape whose scraper does not give its own.
    pub fn default_deadline(&self) -> Duration {
        self.timeout
    }

    /// Runs every collector under `--collector.timeout` and returns the families of this scrape,
    /// sorted by name.
    pub async fn scrape(&self) -> Vec<MetricFamily> {
        self.scrape_within(self.timeout).await
    }

    /// [`Scraper::scrape`] with the collectors' deadline `timeout` (a run already in flight
    /// counts from its own start).
    pub async fn scrape_within(&self, timeout: Duration) -> Vec<MetricFamily> {
        self.scrape_selected(timeout, &Selection::All).await
    }

    /// The [`Selection`] that node_exporter's query parameters name (`collect[]=NAME` runs only
    /// those, `exclude[]=NAME` all but those); an error for a collector this agent does not run
    /// or for both kinds at once.
    pub fn selection(
        &self,
        collect: Vec<String>,
        exclude: Vec<String>,
    ) -> Result<Selection, String> {
        for name in collect.iter().chain(&exclude) {
            if !self.slots.iter().any(|s| s.name == name) {
                return Err(format!("missing collector: {name}"));
            }
        }
        match (collect.is_empty(), exclude.is_empty()) {
            (true, true) => Ok(Selection::All),
            (false, true) => Ok(Selection::Only(collect)),
            (true, false) => Ok(Selection::Except(exclude)),
            (false, false) => Err("collect[] and exclude[] cannot be used together".into()),
        }
    }

    /// The [`Detail`] that `controller=` query parameters ask for (see [`Detail::parse`]);
    /// with `--metrics.per-queue` the default one, every controller being per queue already.
    pub fn detail<S: AsRef<str>>(&self, controllers: &[S]) -> Result<Detail, String> {
        let detail = Detail::parse(controllers)?;
        Ok(if self.per_queue {
            Detail::PerController
        } else {
            detail
        })
    }

    /// [`Scraper::scrape_within`] running only the collectors `selection` names (the self
    /// metrics always).
    pub async fn scrape_selected(
        &self,
        timeout: Duration,
        selection: &Selection,
    ) -> Vec<MetricFamily> {
        self.scrape_for(timeout, selection, &Detail::PerController)
            .await
    }

    /// [`Scraper::scrape_selected`] showing the controllers `detail` names per queue.
    pub async fn scrape_for(
        &self,
        timeout: Duration,
        selection: &Selection,
        detail: &Detail,
    ) -> Vec<MetricFamily> {
        self.stats.scrape_started();
        let deadline = Instant::now() + timeout;
        let class = class_of(detail);
        // The reads the kernel collectors of this scrape share, their deadline, and the detail
        // of their class: per queue, every controller.
        let widened = [Detail::PerController, Detail::All][class].clone();
        let scrape = Arc::new(Scrape::until(deadline).with_detail(widened));
        let mut runs = tokio::task::JoinSet::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if !selection.runs(slot.name) || slot.reads == Reads::Memory {
                continue;
            }
            let (name, collector) = (slot.name, slot.collector.clone());
            let state = slot.states[class].clone();
            let stats = self.stats.clone();
            let scrape = scrape.clone();
            runs.spawn(async move {
                (
                    i,
                    run_one(name, collector, state, stats, timeout, scrape).await,
                )
            });
        }
        let mut outputs: Vec<Option<Families>> = vec![None; self.slots.len()];
        // The memory-only collectors while the others read the kernel, at this scrape's own
        // detail.
        let inline = Scrape::until(deadline).with_detail(detail.clone());
        for (i, slot) in self.slots.iter().enumerate() {
            if selection.runs(slot.name) && slot.reads == Reads::Memory {
                let (families, outcome) = run_inline(slot, class, &self.stats, &inline);
                self.stats.record(slot.name, outcome);
                outputs[i] = families;
            }
        }
        while let Some(joined) = runs.join_next().await {
            // run_one catches the collector's panics; a join error means the runtime is
            // shutting down, and the slot then serves nothing this time.
            if let Ok((i, (families, outcome))) = joined {
                self.stats.record(self.slots[i].name, outcome);
                // Per queue for every controller: the queues of the named ones only.
                outputs[i] = match (families, detail) {
                    (Some(f), Detail::Controllers(_)) => Some(Arc::new(detail.keep_named(&f))),
                    (f, _) => f,
                };
            }
        }
        let mut sink = Sink::new();
        for families in outputs.into_iter().flatten() {
            sink.extend(families.iter().cloned());
        }
        // The self metrics read figures only: no I/O, no deadline needed.
        if let Err(e) = self.exporter.collect(&scrape, &mut sink) {
            log::warn!("collector exporter: {e:#}");
        }
        sink.into_families()
    }
}

async fn run_one(
    name: &'static str,
    collector: Arc<dyn Collector>,
    state: Arc<Mutex<SlotState>>,
    stats: Arc<SelfStats>,
    timeout: Duration,
    scrape: Arc<Scrape>,
) -> (Option<Families>, Outcome) {
    let start = Instant::now();
    let detail = scrape.detail().clone();
    let stale = |state: &Mutex<SlotState>, start: Instant| {
        let cached = lock(state).cached(&detail);
        let outcome = Outcome {
            success: false,
            stale: cached.is_some(),
            duration: start.elapsed(),
        };
        (cached, outcome)
    };
    let (mut done, deadline) = {
        let mut st = lock(&state);
        match &st.running {
            Some(r) if r.started.elapsed() >= timeout => {
                drop(st);
                log::warn!("collector {name}: previous run still stuck; serving its cache");
                stats.add_errors(name, 1);
                return stale(&state, start);
            }
            Some(r) => (r.done.clone(), r.started + timeout),
            None => {
                let (tx, rx) = watch::channel(None);
                st.running = Some(Running {
                    started: start,
                    done: rx.clone(),
                });
                drop(st);
                let (c, s, st) = (collector.clone(), state.clone(), stats.clone());
                tokio::task::spawn_blocking(move || run_blocking(name, c, s, st, tx, scrape));
                (rx, start + timeout)
            }
        }
    };
    let waited = tokio::time::timeout_at(deadline.into(), done.wait_for(|r| r.is_some())).await;
    let result = match waited {
        Ok(Ok(r)) => r.clone(),
        Ok(Err(_)) => {
            log::warn!("collector {name}: its run ended without a result");
            Some(RunResult::Failed(String::new()))
        }
        Err(_) => None,
    };
    match result {
        Some(RunResult::Done(families)) => {
            let outcome = Outcome {
                success: true,
                stale: false,
                duration: start.elapsed(),
            };
            (Some(families), outcome)
        }
        // The run logged its failure once, for all the scrapes that shared it.
        Some(RunResult::Failed(_)) => stale(&state, start),
        None => {
            log::warn!("collector {name} missed its deadline of {timeout:?}");
            stats.add_errors(name, 1);
            stale(&state, start)
        }
    }
}

/// A memory-only collector's run, in line: no deadline, so never stale; an error or a panic
/// serves its last good output, marked stale, as for the others.
fn run_inline(
    slot: &Slot,
    class: usize,
    stats: &SelfStats,
    scrape: &Scrape,
) -> (Option<Families>, Outcome) {
    let start = Instant::now();
    let state = &slot.states[class];
    let mut sink = Sink::new();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
        slot.collector.collect(scrape, &mut sink)
    }));
    let skipped = sink.skipped_count();
    let failure = match r {
        Ok(Ok(())) => {
            stats.add_errors(slot.name, skipped);
            let families = Arc::new(sink.into_families());
            lock(state).last_good = Some((scrape.detail().clone(), families.clone()));
            let outcome = Outcome {
                success: true,
                stale: false,
                duration: start.elapsed(),
            };
            return (Some(families), outcome);
        }
        Ok(Err(e)) => format!("{e:#}"),
        Err(_) => "collector panicked".to_owned(),
    };
    stats.add_errors(slot.name, skipped + 1);
    log::warn!("collector {} failed: {failure}", slot.name);
    let cached = lock(state).cached(scrape.detail());
    let outcome = Outcome {
        success: false,
        stale: cached.is_some(),
        duration: start.elapsed(),
    };
    (cached, outcome)
}

/// The collector's run proper, on a blocking thread. Whatever happens (error, panic, lateness)
/// it clears the in-flight mark, so a collector never stays blocked out.
fn run_blocking(
    name: &'static str,
    collector: Arc<dyn Collector>,
    state: Arc<Mutex<SlotState>>,
    stats: Arc<SelfStats>,
    done: watch::Sender<Option<RunResult>>,
    scrape: Arc<Scrape>,
) {
    let mut sink = Sink::new();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| collector.collect(&scrape, &mut sink)));
    let skipped = sink.skipped_count();
    let result = match r {
        Ok(Ok(())) => {
            stats.add_errors(name, skipped);
            RunResult::Done(Arc::new(sink.into_families()))
        }
        Ok(Err(e)) => {
            stats.add_errors(name, skipped + 1);
            RunResult::Failed(format!("{e:#}"))
        }
        Err(_) => {
            stats.add_errors(name, skipped + 1);
            RunResult::Failed("collector panicked".into())
        }
    };
    // Logged here, once per run as it is counted once, whether one scrape waits for the run,
    // several share it, or all gave up waiting (then the failure, caused perhaps by something
    // gone since, such as a removed controller, still has its line).
    if let RunResult::Failed(e) = &result {
        log::warn!("collector {name} failed: {e}");
    }
    let mut st = lock(&state);
    if let RunResult::Done(f) = &result {
        st.last_good = Some((scrape.detail().clone(), f.clone()));
    }
    st.running = None;
    drop(st);
    // No receiver left means every scrape gave up waiting, each logging the miss it counted.
    let _ = done.send(Some(result));
}

#[cfg(test)]
mod tests;
