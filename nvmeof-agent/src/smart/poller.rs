//! The SMART source's poller: finds controllers in sysfs, polls each live one on its own thread
//! with at most one poll in flight, and keeps the latest pages in a cache that scrapes read
//! without ever waiting on a device.
//!
//! Why threads and not a timeout around the ioctl: a passthrough command cannot be cancelled
//! from user space. A controller that stops answering keeps its polling thread in the kernel
//! until the kernel's own timeout and recovery end it; meanwhile that controller gets no second
//! thread (it is skipped, then marked stale) and the others are polled as usual.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::nvme::{self, IdentifyController, NvmeError, SmartLog, SMART_LOG_LEN};

/// Every `reason` label value of `nvmeof_smart_poll_errors_total`, exported from 0 so that
/// `rate()` sees the first error.
pub const POLL_ERROR_REASONS: [&str; 7] = [
    "decode",
    "io",
    "no_device",
    "not_live",
    "nvme_status",
    "permission_denied",
    "timeout",
];

/// How the poller issues admin commands; the device one in production, a scripted one in tests
/// (hangs, permission errors, hand-made pages).
pub trait AdminBackend: Send + Sync + 'static {
    /// The raw Identify Controller page of controller `ctrl` (`nvmeN`).
    fn identify(&self, ctrl: &str, timeout: Duration) -> Result<Vec<u8>, NvmeError>;
    /// The raw controller-wide SMART / Health log of `ctrl`.
    fn smart_log(
        &self,
        ctrl: &str,
        rae: bool,
        timeout: Duration,
    ) -> Result<[u8; SMART_LOG_LEN], NvmeError>;
}

/// Admin commands on `<dev_root>/nvmeN`.
pub struct DevBackend {
    pub dev_root: PathBuf,
}

impl AdminBackend for DevBackend {
    fn identify(&self, ctrl: &str, timeout: Duration) -> Result<Vec<u8>, NvmeError> {
        nvme::read_identify_raw(&self.dev_root.join(ctrl), timeout)
    }
    fn smart_log(
        &self,
        ctrl: &str,
        rae: bool,
        timeout: Duration,
    ) -> Result<[u8; SMART_LOG_LEN], NvmeError> {
        nvme::ioctl::read_smart_raw_with(&self.dev_root.join(ctrl), rae, timeout)
    }
}

/// A controller as sysfs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    pub name: String,
    pub state: String,
    pub subsysnqn: String,
}

/// The `nvmeN` controllers under `<sysfs_root>/class/nvme`, sorted by name: their identities and
/// states alone (`sysfs::controller::identities`: two attributes each, where the full parse
/// reads twenty; the scheduler asks every few seconds). A missing class directory means no NVMe
/// here: an empty list, not an error.
pub fn discover(sysfs_root: &Path) -> Vec<Discovered> {
    let Ok(found) = crate::sysfs::controller::identities(sysfs_root) else {
        return Vec::new();
    };
    let mut found: Vec<Discovered> = found
        .into_iter()
        .map(|c| Discovered {
            state: c.state,
            subsysnqn: c.subsysnqn,
            name: c.name,
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// Drops the cache entries of controllers that are gone. A name that came back on another
/// subsystem is another controller (the kernel reuses instance numbers): its predecessor's pages
/// must not be shown under the newcomer's labels, so that entry goes too and the next pass
/// starts a fresh one.
fn retain_present(ctrls: &mut BTreeMap<String, Ctrl>, found: &[Discovered]) {
    ctrls.retain(|name, c| {
        found
            .iter()
            .any(|d| &d.name == name && d.subsysnqn == c.view.subsystem)
    });
}

/// What the cache holds for one controller; scrapes copy from it.
#[derive(Clone, Debug, Default)]
pub struct CtrlView {
    pub subsystem: String,
    pub identify: Option<IdentifyController>,
    pub smart: Option<SmartLog>,
    /// Wall-clock time of the last successful poll.
    pub last_success: Option<SystemTime>,
    pub stale: bool,
    pub errors: BTreeMap<&'static str, u64>,
}

struct Ctrl {
    /// Tells a finished poll whether this is still the controller it was started for (a name can
    /// vanish and come back while a poll is stuck).
    generation: u64,
    view: CtrlView,
    last_success_at: Option<Instant>,
    last_failed: bool,
    /// Whether the last pass found the controller `live`: a controller that comes back from a
    /// reset or reconnect is polled at once instead of an interval later.
    was_live: bool,
    /// Whether the next poll reads Identify again instead of reusing `view.identify`: after a
    /// reset or reconnect (what answers may be another controller behind the same name).
    reidentify: bool,
    next_due: Instant,
}

struct Flight {
    generation: u64,
    started: Instant,
    timeout_counted: bool,
}

#[derive(Default)]
struct State {
    ctrls: BTreeMap<String, Ctrl>,
    /// Polls under way, by controller name; kept apart from `ctrls` so that a stuck poll of a
    /// vanished controller still blocks a second one if the name comes back.
    in_flight: BTreeMap<String, Flight>,
    next_generation: u64,
}

pub struct Poller {
    sysfs_root: PathBuf,
    /// When a scrape last handed the poller its controllers ([`Poller::observe`]).
    fed_at: Mutex<Option<Instant>>,
    interval: Duration,
    timeout: Duration,
    backend: Arc<dyn AdminBackend>,
    state: Mutex<State>,
    permission_logged: AtomicBool,
}

/// Commands per poll (Identify, then SMART): a poll is overdue once it has run longer than
/// that many command timeouts.
const COMMANDS_PER_POLL: u32 = 2;

/// How long after a scrape's [`Poller::observe`] the scheduler leaves the passes to scrapes:
/// longer than a fleet's usual scrape interval (15 to 30 s), so that at a steady cadence the
/// scheduler reads nothing, and short enough that polls stay due on time without scrapes.
const FED_BY_SCRAPES: Duration = Duration::from_secs(30);

/// The kernel's default admin command timeout (`nvme_core.admin_timeout`).
const KERNEL_ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

impl Poller {
    pub fn new(
        sysfs_root: PathBuf,
        interval: Duration,
        timeout: Duration,
        backend: Arc<dyn AdminBackend>,
    ) -> Arc<Self> {
        Arc::new(Self {
            sysfs_root,
            fed_at: Mutex::new(None),
            interval,
            timeout,
            backend,
            state: Mutex::new(State::default()),
            permission_logged: AtomicBool::new(false),
        })
    }

    pub fn sysfs_root(&self) -> &Path {
        &self.sysfs_root
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in one poll must not stop the exporter: the state stays consistent because
        // every update below is a plain assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a poll may run before it counts as stuck.
    pub(crate) fn budget(&self) -> Duration {
        // A zero timeout leaves the kernel's own admin timeout in force.
        let per_command = if self.timeout.is_zero() {
            KERNEL_ADMIN_TIMEOUT
        } else {
            self.timeout
        };
        per_command * COMMANDS_PER_POLL
    }

    fn overdue(&self, f: &Flight, now: Instant) -> bool {
        now.duration_since(f.started) > self.budget()
    }

    /// The scheduler's pass: rescan sysfs, drop vanished controllers, start the polls that are
    /// due; skipped while scrapes feed the poller ([`Poller::observe`]), which read the
    /// controllers anyway. Under TCG the rescan every 5 s was most of an idle agent's CPU.
    pub fn tick(self: &Arc<Self>) {
        let fed = *self.fed_at.lock().unwrap_or_else(|e| e.into_inner());
        if fed.is_some_and(|at| at.elapsed() < FED_BY_SCRAPES) {
            return;
        }
        self.tick_at(Instant::now());
    }

    /// A scrape's pass over the controllers it read (`found`, as [`discover`] would return
    /// them): the scheduler's work, then the cache for those controllers. Polls due start here
    /// (on their own threads) as they would at the scheduler's next pass.
    pub fn observe(self: &Arc<Self>, found: &[Discovered]) -> Vec<(String, CtrlView)> {
        *self.fed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.tick_found(Instant::now(), found);
        self.snapshot_of(found)
    }

    /// `now` decides which polls are due (tests move it forward to skip an interval); how long a
    /// poll has been running is always measured on the real clock.
    pub(crate) fn tick_at(self: &Arc<Self>, now: Instant) {
        self.tick_found(now, &discover(&self.sysfs_root));
    }

    fn tick_found(self: &Arc<Self>, now: Instant, found: &[Discovered]) {
        let real_now = Instant::now();
        let mut to_start = Vec::new();
        {
            let mut st = self.lock();
            retain_present(&mut st.ctrls, found);
            for d in found {
                if !st.ctrls.contains_key(&d.name) {
                    st.next_generation += 1;
                    let generation = st.next_generation;
                    st.ctrls.insert(
                        d.name.clone(),
                        Ctrl {
                            generation,
                            view: CtrlView {
                                errors: POLL_ERROR_REASONS.iter().map(|&r| (r, 0)).collect(),
                                ..Default::default()
                            },
                            last_success_at: None,
                            last_failed: false,
                            was_live: true,
                            reidentify: true,
                            next_due: now,
                        },
                    );
                }
                let State {
                    ctrls, in_flight, ..
                } = &mut *st;
                let c = ctrls.get_mut(&d.name).expect("inserted above");
                c.view.subsystem.clone_from(&d.subsysnqn);
                if let Some(f) = in_flight.get_mut(&d.name) {
                    if !f.timeout_counted && self.overdue(f, real_now) {
                        f.timeout_counted = true;
                        c.last_failed = true;
                        *c.view.errors.entry("timeout").or_default() += 1;
                        log::warn!(
                            "smart: {}: poll still running after {} ms; controller marked stale, \
                             no new poll until it returns",
                            d.name,
                            self.budget().as_millis()
                        );
                    }
                    continue;
                }
                let live = d.state == "live";
                if live && !c.was_live {
                    c.next_due = now;
                    c.reidentify = true;
                }
                c.was_live = live;
                if now < c.next_due {
                    continue;
                }
                c.next_due = now + self.interval;
                if !live {
                    // Resetting, connecting or deleting: a command now would wait behind the
                    // recovery, so skip this round rather than queue.
                    c.last_failed = true;
                    *c.view.errors.entry("not_live").or_default() += 1;
                    log::debug!("smart: {}: skipped, state {:?}", d.name, d.state);
                    continue;
                }
                in_flight.insert(
                    d.name.clone(),
                    Flight {
                        generation: c.generation,
                        started: real_now,
                        timeout_counted: false,
                    },
                );
                let known = c.view.identify.clone().filter(|_| !c.reidentify);
                to_start.push((d.name.clone(), c.generation, known));
            }
        }
        for (name, generation, known) in to_start {
            let me = Arc::clone(self);
            let n = name.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("smart-{name}"))
                .spawn(move || me.poll(&n, generation, known));
            if let Err(e) = spawned {
                log::warn!("smart: {name}: cannot start a polling thread: {e}");
                let mut st = self.lock();
                st.in_flight.remove(&name);
                if let Some(c) = st.ctrls.get_mut(&name) {
                    c.last_failed = true;
                    *c.view.errors.entry("io").or_default() += 1;
                }
            }
        }
    }

    fn poll(&self, name: &str, generation: u64, known: Option<IdentifyController>) {
        let result = self.fetch(name, known);
        let mut st = self.lock();
        let timeout_counted = match st.in_flight.get(name) {
            Some(f) if f.generation == generation => {
                let counted = f.timeout_counted;
                st.in_flight.remove(name);
                counted
            }
            _ => false,
        };
        let Some(c) = st
            .ctrls
            .get_mut(name)
            .filter(|c| c.generation == generation)
        else {
            return; // The controller vanished meanwhile: its series are gone, keep them gone.
        };
        match result {
            Ok((id, smart)) => {
                if c.last_failed {
                    log::info!("smart: {name}: polling again");
                }
                c.view.identify = Some(id);
                c.reidentify = false;
                c.view.smart = Some(smart);
                c.view.last_success = Some(SystemTime::now());
                c.last_success_at = Some(Instant::now());
                c.last_failed = false;
            }
            Err(e) => {
                let first = !c.last_failed;
                c.last_failed = true;
                // A stuck poll was counted as a timeout when it became overdue.
                if !(timeout_counted && e.reason() == "timeout") {
                    *c.view.errors.entry(e.reason()).or_default() += 1;
                }
                if let NvmeError::PermissionDenied { .. } = e {
                    if !self.permission_logged.swap(true, Ordering::Relaxed) {
                        log::error!(
                            "smart: {e}; SMART metrics stay empty and further permission errors \
                             are only counted in nvmeof_smart_poll_errors_total"
                        );
                    }
                } else if first {
                    log::warn!("smart: {e}");
                } else {
                    log::debug!("smart: {e}");
                }
            }
        }
    }

    /// The controller's Identify page and SMART log. Identify is read again only when `known`
    /// (the last poll's) may be out of date: none yet, a reset since, or a firmware revision
    /// that no longer matches the kernel's `firmware_rev` (updated on a firmware activation,
    /// which needs no reset); the rest of what the exporter uses of it (model, serial, log page
    /// support) is fixed for a controller. One admin command per poll instead of two.
    fn fetch(
        &self,
        name: &str,
        known: Option<IdentifyController>,
    ) -> Result<(IdentifyController, SmartLog), NvmeError> {
        let decode_err = |source| NvmeError::Decode {
            dev: PathBuf::from(name),
            source,
        };
        let firmware = || {
            let attr = self
                .sysfs_root
                .join("class/nvme")
                .join(name)
                .join("firmware_rev");
            crate::sysfs::read_trim(&attr)
        };
        let id = match known.filter(|id| firmware().is_some_and(|fw| fw == id.firmware)) {
            Some(id) => id,
            None => {
                let raw = self.backend.identify(name, self.timeout)?;
                IdentifyController::decode(&raw).map_err(decode_err)?
            }
        };
        let raw = self.backend.smart_log(name, id.knows_rae(), self.timeout)?;
        let smart = SmartLog::decode(&raw).map_err(decode_err)?;
        Ok((id, smart))
    }

    /// The cache as of now, by controller name, for the controllers sysfs shows now: never waits
    /// on a device. A controller deleted or given up on (ctrl_loss_tmo) since the last pass is
    /// dropped here rather than at the next pass, seconds later: its series must not outlive it
    /// by a scrape. Costs a directory listing and two small reads per controller.
    pub fn snapshot(&self) -> Vec<(String, CtrlView)> {
        self.snapshot_of(&discover(&self.sysfs_root))
    }

    /// The cache for the controllers in `found`.
    fn snapshot_of(&self, found: &[Discovered]) -> Vec<(String, CtrlView)> {
        let now = Instant::now();
        let mut st = self.lock();
        retain_present(&mut st.ctrls, found);
        st.ctrls
            .iter()
            .map(|(name, c)| {
                let old = c
                    .last_success_at
                    .is_none_or(|t| now.duration_since(t) > self.interval * 2);
                let stuck = st
                    .in_flight
                    .get(name)
                    .is_some_and(|f| f.generation == c.generation && self.overdue(f, now));
                let mut v = c.view.clone();
                v.stale = old || c.last_failed || stuck;
                (name.clone(), v)
            })
            .collect()
    }

    /// Whether any poll is under way (tests wait on it).
    pub fn busy(&self) -> bool {
        !self.lock().in_flight.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn polling(&self, name: &str) -> bool {
        self.lock().in_flight.contains_key(name)
    }

    #[cfg(test)]
    pub(crate) fn set_last_success(&self, name: &str, at: SystemTime) {
        if let Some(c) = self.lock().ctrls.get_mut(name) {
            c.view.last_success = Some(at);
        }
    }
}
