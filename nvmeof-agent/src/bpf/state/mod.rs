//! The state tracer, agent side: every controller state transition, every reconnect attempt, when
//! the last transition happened and how long a controller has not been live, as a
//! [`StateSnapshot`] the `state` collector (`crate::collectors::state`) renders.
//!
//! Hooks: kprobes on `nvme_change_ctrl_state` (entry and return) and `nvmf_should_reconnect`
//! (programs in `nvmeof-ebpf/src/state.rs`), loaded at start with `struct nvme_ctrl`'s offsets
//! from BTF ([`ctrl_btf`]). The kernel counts each transition as it happens, so one that lasts a
//! microsecond between two scrapes is counted. The two small maps are read when a snapshot is
//! asked for (at scrape time), so the counts are the kernel's at that moment.
//!
//! When the programs cannot be loaded (no permission, no BTF, no kprobes, nvme_core absent) a
//! worker polls each controller's sysfs `state` every [`POLL_INTERVAL`] instead ([`poll`]):
//! transitions shorter than that are missed, so the counts are a lower bound, and reconnect
//! attempts are not known. [`StateSnapshot::source`] says which one runs.
pub mod ctrl_btf;
pub mod load;
pub mod poll;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aya::Ebpf;
use nvmeof_common::count_maps::CountMap;
use nvmeof_common::state::{self, maps, ConnectFailure, ConnectFailureKey};
use nvmeof_common::{Reconnects, TransitionKey, TransitionStats};

use crate::bpf::count_maps::{self, FullLog};
use crate::bpf::{loader, STATE_OBJECT};
use crate::worker::Worker;
use poll::PollState;

/// How often the fallback reads every controller's state.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What the tracer knows of one controller, whichever the source.
#[derive(Debug, Default, PartialEq)]
pub struct Track {
    /// (from, to) state names → count.
    pub transitions: BTreeMap<(String, String), u64>,
    /// `None` where the source cannot know (the sysfs poll).
    pub reconnects: Option<u64>,
    /// Wall-clock seconds of the last transition.
    pub last_transition: Option<f64>,
    /// Seconds since the controller last left live.
    pub left_live_ago: Option<f64>,
}

/// Failed connects of one (subsystem, queue kind, reason).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnectFailures {
    /// The subsystem NQN the controller was created for, cleaned as a label value.
    pub subsystem: String,
    /// `admin` or `io`.
    pub queue_type: &'static str,
    pub reason: ConnectFailure,
    pub count: u64,
}

/// One reading of every controller the tracer has seen, by controller instance.
#[derive(Debug, Default)]
pub struct StateSnapshot {
    /// `kprobe` (exact) or `sysfs_poll` (a lower bound).
    pub source: &'static str,
    pub tracks: BTreeMap<u32, Track>,
    /// Per counting map of the kprobes (empty while polling), the events it could not count.
    pub map_full: Vec<(&'static str, u64)>,
    /// Failed connects, kept when the kernel removes the controller; `None` when they are not
    /// counted (polling, or `nvme_fabrics` absent when the programs were attached).
    pub connect_failures: Option<Vec<ConnectFailures>>,
}

enum Source {
    Kprobe {
        ebpf: Mutex<Ebpf>,
        /// `enum nvme_ctrl_state` value → sysfs name.
        states: Vec<(u32, String)>,
        count_map_entries: u32,
        told_full: FullLog,
        /// Whether the connect programs are attached.
        connects: bool,
    },
    Poll {
        tracks: Arc<Mutex<PollState>>,
        _worker: Option<Worker>,
    },
}

/// The running tracer: the loaded kprobes, or the poll's worker, which stops when this is dropped.
pub struct StateSource {
    source: Source,
}

/// Loads the kprobes, or falls back to polling with one log line saying why.
/// `count_map_entries` sizes the kprobes' counting maps (`--ebpf.count-map-entries`, 0 keeps
/// theirs).
pub fn start(sysfs: PathBuf, count_map_entries: u32) -> StateSource {
    match try_kprobes(&sysfs, count_map_entries) {
        Ok(source) => StateSource { source },
        Err(e) => {
            log::warn!(
                "state transitions: kprobes off ({}); polling sysfs every {:?}, counts are a lower bound",
                loader::explain(&e),
                POLL_INTERVAL
            );
            StateSource::polling(sysfs)
        }
    }
}

impl StateSource {
    /// The fallback: a worker reads every controller's `state` under `sysfs` every
    /// [`POLL_INTERVAL`].
    pub fn polling(sysfs: PathBuf) -> StateSource {
        let tracks = Arc::new(Mutex::new(PollState::default()));
        let shared = tracks.clone();
        let worker = Worker::every("state-poll", POLL_INTERVAL, move || {
            poll::poll_once(&sysfs, &shared)
        });
        let worker = match worker {
            Ok(w) => Some(w),
            Err(e) => {
                log::error!(
                    "state transitions: cannot start the sysfs poll, none are counted: {e}"
                );
                None
            }
        };
        StateSource {
            source: Source::Poll {
                tracks,
                _worker: worker,
            },
        }
    }

    /// What the tracer knows now: the kernel maps read at this moment, or the poll's last state.
    pub fn snapshot(&self) -> anyhow::Result<StateSnapshot> {
        Ok(match &self.source {
            Source::Kprobe {
                ebpf,
                states,
                count_map_entries,
                told_full,
                connects,
            } => {
                let ebpf = ebpf.lock().unwrap_or_else(|p| p.into_inner());
                let full = count_maps::read(&ebpf)?;
                told_full.observe(&full, &CountMap::STATE, *count_map_entries);
                StateSnapshot {
                    source: "kprobe",
                    tracks: read_kernel(&ebpf, states)?,
                    map_full: count_maps::of(&full, &CountMap::STATE),
                    connect_failures: match connects {
                        true => Some(read_connect_failures(&ebpf)?),
                        false => None,
                    },
                }
            }
            Source::Poll { tracks, .. } => {
                let t = tracks.lock().unwrap_or_else(|p| p.into_inner());
                StateSnapshot {
                    source: "sysfs_poll",
                    tracks: t.snapshot(),
                    map_full: vec![],
                    connect_failures: None,
                }
            }
        })
    }
}

fn try_kprobes(sysfs: &Path, count_map_entries: u32) -> anyhow::Result<Source> {
    let ctrl = ctrl_btf::read(&sysfs.join("kernel/btf"))?;
    let loaded = load::load_state(STATE_OBJECT, &ctrl.layout, count_map_entries)?;
    log::info!(
        "state transitions: kprobes {} (nvme_ctrl offsets from BTF: state {}, instance {}, nr_reconnects {})",
        loaded.attached.join(", "),
        ctrl.layout.state,
        ctrl.layout.instance,
        ctrl.layout.nr_reconnects
    );
    let connects = loaded
        .attached
        .contains(&state::programs::CONNECT_ADMIN_RET);
    Ok(Source::Kprobe {
        ebpf: Mutex::new(loaded.ebpf),
        states: ctrl.states,
        count_map_entries,
        told_full: FullLog::default(),
        connects,
    })
}

/// Reads `CONNECT_FAILURES`, sorted.
fn read_connect_failures(ebpf: &Ebpf) -> anyhow::Result<Vec<ConnectFailures>> {
    let mut out = Vec::new();
    for (k, count) in loader::entries::<ConnectFailureKey, u64>(ebpf, maps::CONNECT_FAILURES)? {
        let Some(reason) = ConnectFailure::from_repr(k.reason) else {
            continue;
        };
        let nqn = k.subsysnqn.split(|b| *b == 0).next().unwrap_or_default();
        let (subsystem, _) = crate::sysfs::clean_text(nqn, crate::sysfs::MAX_LABEL_BYTES);
        out.push(ConnectFailures {
            subsystem,
            queue_type: if k.io_queue == 0 { "admin" } else { "io" },
            reason,
            count,
        });
    }
    out.sort();
    Ok(out)
}

fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a plain syscall writing into a valid struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub(crate) fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The name of a state value in a (value, name) table from BTF (`state N` for one the kernel's
/// enum does not name); the `aen` tracer names ANA states with it too.
pub(crate) fn state_name(states: &[(u32, String)], v: u8) -> String {
    states
        .iter()
        .find(|(s, _)| *s == u32::from(v))
        .map(|(_, n)| n.clone())
        .unwrap_or_else(|| format!("state {v}"))
}

/// Reads both maps into per-instance tracks.
fn read_kernel(ebpf: &Ebpf, states: &[(u32, String)]) -> anyhow::Result<BTreeMap<u32, Track>> {
    let (mono, wall) = (monotonic_now_ns(), wall_now());
    let ago = |ns: u64| mono.saturating_sub(ns) as f64 / 1e9;
    let mut out: BTreeMap<u32, Track> = BTreeMap::new();
    let mut left_live: HashMap<u32, u64> = HashMap::new();
    let mut last: HashMap<u32, u64> = HashMap::new();
    for (k, v) in loader::entries::<TransitionKey, TransitionStats>(ebpf, maps::TRANSITIONS)? {
        let (from, to) = (state_name(states, k.from), state_name(states, k.to));
        if from == "live" {
            let e = left_live.entry(k.instance).or_default();
            *e = (*e).max(v.last_ns);
        }
        let e = last.entry(k.instance).or_default();
        *e = (*e).max(v.last_ns);
        *out.entry(k.instance)
            .or_default()
            .transitions
            .entry((from, to))
            .or_default() += v.count;
    }
    for (i, ns) in last {
        out.entry(i).or_default().last_transition = Some(wall - ago(ns));
    }
    for (i, ns) in left_live {
        out.entry(i).or_default().left_live_ago = Some(ago(ns));
    }
    for (i, r) in loader::entries::<u32, Reconnects>(ebpf, maps::RECONNECTS)? {
        out.entry(i).or_default().reconnects = Some(r.attempts);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_come_from_btf_values() {
        let states = vec![(0, "new".to_owned()), (1, "live".to_owned())];
        assert_eq!(state_name(&states, 1), "live");
        assert_eq!(state_name(&states, 7), "state 7");
    }
}
