//! The SMART source: media health of every NVMe controller (fabrics and PCIe) from the SMART /
//! Health log and Identify Controller, read with admin commands on `/dev/nvmeN` in the
//! background, as `bpf/`'s tracers read their maps. [`start`] returns a [`SmartSource`] whose
//! [`snapshot`](SmartSource::snapshot) the `smart` collector (`crate::collectors::smart`) renders.
//!
//! Polling runs on its own interval and timeout ([`poller`]), one thread per poll and at most one
//! poll per controller; a snapshot only lists `class/nvme` (so that a controller gone since the
//! last poll is gone from it) and copies the cache, so a hung controller costs a scrape nothing
//! but a stale mark.
pub mod poller;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::worker::Worker;
use poller::{AdminBackend, CtrlView, DevBackend, Discovered, Poller};

pub struct SmartOptions {
    /// Where sysfs is mounted (`/sys`); controllers are found under `class/nvme`.
    pub sysfs_root: PathBuf,
    /// Where the controllers' character devices are (`/dev`).
    pub dev_root: PathBuf,
    /// Time between two polls of one controller.
    pub interval: Duration,
    /// Per-command timeout handed to the kernel (`timeout_ms`); 0 keeps the kernel's 60 s.
    pub timeout: Duration,
}

impl Default for SmartOptions {
    fn default() -> Self {
        Self {
            sysfs_root: PathBuf::from("/sys"),
            dev_root: PathBuf::from("/dev"),
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The poller started on the device backend.
pub fn start(opts: SmartOptions) -> SmartSource {
    let backend = Arc::new(DevBackend {
        dev_root: opts.dev_root.clone(),
    });
    SmartSource::start(&opts, backend)
}

/// The running poller and its scheduling thread, which stops when this is dropped.
pub struct SmartSource {
    poller: Arc<Poller>,
    /// `None` when the thread could not be started (logged) or the caller ticks the poller.
    _scheduler: Option<Worker>,
}

impl SmartSource {
    /// Starts the scheduling thread: a pass now, then every few seconds (so that new, vanished
    /// and non-live controllers are seen quickly) while each controller is polled per `interval`.
    pub fn start(opts: &SmartOptions, backend: Arc<dyn AdminBackend>) -> Self {
        let poller = Poller::new(
            opts.sysfs_root.clone(),
            opts.interval,
            opts.timeout,
            backend,
        );
        let period = opts
            .interval
            .clamp(Duration::from_millis(10), Duration::from_secs(5));
        let p = Arc::clone(&poller);
        let scheduler = Worker::every("smart-scheduler", period, move || p.tick())
            .map_err(|e| {
                log::error!("smart: cannot start the polling thread, SMART metrics stay empty: {e}")
            })
            .ok();
        Self {
            poller,
            _scheduler: scheduler,
        }
    }

    /// A source over a poller driven by the caller (tests tick it by hand).
    pub fn with_poller(poller: Arc<Poller>) -> Self {
        Self {
            poller,
            _scheduler: None,
        }
    }

    /// The cache as of now, by controller name, for the controllers sysfs shows now
    /// ([`Poller::snapshot`]): never waits on a device.
    pub fn snapshot(&self) -> Vec<(String, CtrlView)> {
        self.poller.snapshot()
    }

    /// The cache for the controllers a scrape read (`found`), which also serve as the
    /// scheduler's pass ([`Poller::observe`]): never waits on a device.
    pub fn observe(&self, found: &[Discovered]) -> Vec<(String, CtrlView)> {
        self.poller.observe(found)
    }

    /// The sysfs root the poller reads.
    pub fn sysfs_root(&self) -> &Path {
        self.poller.sysfs_root()
    }
}
