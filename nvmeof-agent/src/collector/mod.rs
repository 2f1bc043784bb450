//! The one small trait every collector implements, and the sink it writes metric families into.
//!
//! Modelled on node_exporter: a collector reads its source, converts and emits; it never serves
//! HTTP and never blocks on the kernel. "No data" (no NVMe-oF on this node) is not an error: the
//! collector emits nothing and returns `Ok`.
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sysfs::{Controller, Parsed};

mod detail;
mod sink;

pub use detail::{controller_instance, Detail, PER_QUEUE_LABELS};
pub use sink::{label, ExemplarData, HistogramData, Sink, NATIVE_EXEMPLARS};

/// What a metric family is: the documentation test compares the union of every collector's
/// families with `docs/metrics.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

impl Family {
    pub const fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Counter,
        }
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Gauge,
        }
    }

    pub const fn histogram(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Histogram,
        }
    }
}

/// Declares a collector's families: a constant for each, for its [`Sink`] calls, and
/// `FAMILIES`, the list its registration gives, in the order written. Each family is written
/// once, so one cannot be emitted without being declared:
///
/// ```text
/// families! {
///     pub UP: gauge("x_up", "1 when up.");
///     ERRORS: counter("x_errors_total", "Errors.");
/// }
/// ```
macro_rules! families {
    ($($vis:vis $id:ident: $kind:ident($name:literal, $help:literal);)+) => {
        $($vis const $id: $crate::collector::Family =
            $crate::collector::Family::$kind($name, $help);)+
        pub const FAMILIES: &[$crate::collector::Family] = &[$($id),+];
    };
}
pub(crate) use families;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// What the collectors of one scrape share: the reads several of them need, made once. Five
/// collectors need the controllers; reading them once per scrape instead of five times saves
/// most of a scrape's syscalls, which are most of its cost. A collector run outside a scrape
/// (unit tests) gets a fresh one.
#[derive(Default)]
pub struct Scrape {
    /// Held while reading, so that the collectors of one scrape wait for one read instead of
    /// each making its own; only a successful read is kept.
    controllers: Mutex<Option<(PathBuf, Parsed<Controller>)>>,
    /// When the scraper stops waiting for the collectors; `None` outside a scrape.
    deadline: Option<Instant>,
    /// Which controllers the collectors show per queue.
    detail: Detail,
}

impl Scrape {
    pub fn new() -> Self {
        Self::default()
    }

    /// A scrape whose collectors must be done by `deadline`.
    pub fn until(deadline: Instant) -> Self {
        Scrape {
            deadline: Some(deadline),
            ..Self::default()
        }
    }

    /// The same scrape showing the controllers `detail` names per queue.
    pub fn with_detail(mut self, detail: Detail) -> Self {
        self.detail = detail;
        self
    }

    /// Which controllers this scrape shows per queue (beside `--metrics.per-queue`, which
    /// the collectors know themselves).
    pub fn detail(&self) -> &Detail {
        &self.detail
    }

    /// How long the collectors have left; `otherwise` outside a scrape.
    pub fn time_left(&self, otherwise: Duration) -> Duration {
        self.deadline
            .map_or(otherwise, |d| d.saturating_duration_since(Instant::now()))
    }

    /// Every controller under `root/class/nvme` (`crate::sysfs::controllers`), read once in
    /// this scrape.
    pub fn controllers(&self, root: &Path) -> anyhow::Result<Parsed<Controller>> {
        let mut cached = self.controllers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((r, parsed)) = cached.as_ref() {
            if r == root {
                return Ok(parsed.clone());
            }
        }
        let parsed = crate::sysfs::controllers(root)?;
        *cached = Some((root.to_path_buf(), parsed.clone()));
        Ok(parsed)
    }

    /// The controllers on `transport` (`tcp`, `rdma`, `fc`, `loop`, `pcie`), from
    /// [`Scrape::controllers`]: what a transport's collector reads.
    pub fn controllers_on(&self, root: &Path, transport: &str) -> anyhow::Result<Vec<Controller>> {
        let parsed = self.controllers(root)?;
        let on = |c: &Controller| c.transport.as_deref() == Some(transport);
        Ok(parsed.items.into_iter().filter(on).collect())
    }
}

/// What a collector does; its name and families are its registration's
/// (`crate::collectors::registry`), written once.
pub trait Collector: Send + Sync {
    /// Reads, converts, emits. An error fails this collector for this scrape only: the scrape
    /// serves its last good output instead, marked stale. Values skipped as missing or odd go to
    /// [`Sink::skipped`], not to an error.
    fn collect(&self, scrape: &Scrape, sink: &mut Sink) -> anyhow::Result<()>;
}

/// What a collector reads, which decides how a scrape runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// The kernel (sysfs, ioctls, netlink), where a read can block: the scrape runs it on a
    /// blocking thread under its deadline and serves its last good output, marked stale, past it.
    Kernel,
    /// What a background source publishes (the eBPF drain's snapshot): the scrape runs it in
    /// line (a blocking thread would only add a hop); the collector may wait, bounded by the
    /// scrape's deadline, for its source to publish afresh.
    Memory,
}

/// A built collector with the name it was registered under: the name of its
/// `--collector.<name>` flags, its log lines and its `collector` label.
pub struct Named {
    pub name: &'static str,
    pub collector: Box<dyn Collector>,
    pub reads: Reads,
}

impl Named {
    pub fn new(name: &'static str, collector: impl Collector + 'static) -> Named {
        Named {
            name,
            collector: Box::new(collector),
            reads: Reads::Kernel,
        }
    }
}
