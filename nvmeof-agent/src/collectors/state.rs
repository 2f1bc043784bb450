//! Collector `state`: every controller state transition, every reconnect attempt, when the last
//! transition happened and how long a controller has not been live.
//!
//! Hooks: kprobes on `nvme_change_ctrl_state` (entry and return) and `nvmf_should_reconnect`
//! (programs in `nvmeof-ebpf/src/state.rs`), loaded at start with `struct nvme_ctrl`'s offsets
//! from BTF (`crate::bpf::ctrl_btf`). The kernel counts each transition as it happens, so one that
//! lasts a microsecond between two scrapes is counted. Scrapes read the two small maps directly.
//!
//! When the programs cannot be loaded (no permission, no BTF, no kprobes, nvme_core absent) a
//! thread polls each controller's sysfs `state` every [`POLL_INTERVAL`] instead: transitions
//! shorter than that are missed, so the counts are a lower bound, and reconnect attempts are not
//! exported. `nvmeof_exporter_state_source` says which one runs.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aya::{maps::HashMap as BpfHashMap, Ebpf};
use nvmeof_common::state::maps;
use nvmeof_common::{Reconnects, TransitionKey, TransitionStats};

use crate::bpf::{ctrl_btf, loader};
use crate::collector::{Collector, Family, Kind, Sink};
use crate::sysfs::{self, CtrlState};

const TRANSITIONS: Family = Family {
    name: "nvmeof_controller_state_transitions_total",
    help: "Controller state transitions by old and new state (kernel-side count; a lower bound when nvmeof_exporter_state_source is sysfs_poll).",
    kind: Kind::Counter,
};
const RECONNECTS: Family = Family {
    name: "nvmeof_reconnect_attempts_total",
    help:
        "Reconnect attempts the kernel made for the controller (increments of its nr_reconnects).",
    kind: Kind::Counter,
};
const LAST_TRANSITION: Family = Family {
    name: "nvmeof_controller_last_transition_timestamp_seconds",
    help: "Wall-clock time of the controller's last state transition.",
    kind: Kind::Gauge,
};
const SINCE_LIVE: Family = Family {
    name: "nvmeof_controller_since_live_seconds",
    help: "Time since the controller was last live: 0 while live, else since it left live.",
    kind: Kind::Gauge,
};
const SOURCE: Family = Family {
    name: "nvmeof_exporter_state_source",
    help:
        "How state transitions are caught: kprobe (exact) or sysfs_poll (a lower bound); always 1.",
    kind: Kind::Gauge,
};

pub const FAMILIES: &[Family] = &[TRANSITIONS, RECONNECTS, LAST_TRANSITION, SINCE_LIVE, SOURCE];

/// How often the fallback reads every controller's state.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What the collector knows of one controller, whichever the source.
#[derive(Debug, Default, PartialEq)]
struct Track {
    transitions: BTreeMap<(String, String), u64>,
    reconnects: Option<u64>,
    /// Wall-clock seconds of the last transition.
    last_transition: Option<f64>,
    /// Seconds since the controller last left live.
    left_live_ago: Option<f64>,
}

enum Source {
    Kprobe {
        ebpf: Mutex<Ebpf>,
        /// `enum nvme_ctrl_state` value → sysfs name.
        states: Vec<(u32, String)>,
    },
    Poll {
        tracks: Arc<Mutex<PollState>>,
        _stop: mpsc::Sender<()>,
    },
}

pub struct StateCollector {
    sysfs: PathBuf,
    source: Source,
}

impl StateCollector {
    /// Loads the kprobes, or falls back to polling with one log line saying why.
    pub fn start(sysfs: PathBuf) -> StateCollector {
        match try_kprobes(&sysfs) {
            Ok(source) => StateCollector { sysfs, source },
            Err(e) => {
                log::warn!(
                    "state transitions: kprobes off ({}); polling sysfs every {:?}, counts are a lower bound",
                    loader::explain(&e),
                    POLL_INTERVAL
                );
                StateCollector::polling(sysfs)
            }
        }
    }

    pub fn polling(sysfs: PathBuf) -> StateCollector {
        let tracks = Arc::new(Mutex::new(PollState::default()));
        let (stop, stop_rx) = mpsc::channel();
        let (shared, root) = (tracks.clone(), sysfs.clone());
        std::thread::Builder::new()
            .name("state-poll".into())
            .spawn(move || loop {
                poll_once(&root, &shared);
                match stop_rx.recv_timeout(POLL_INTERVAL) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            })
            .expect("spawning the state poller");
        StateCollector {
            sysfs,
            source: Source::Poll {
                tracks,
                _stop: stop,
            },
        }
    }
}

fn try_kprobes(sysfs: &Path) -> anyhow::Result<Source> {
    let ctrl = ctrl_btf::read(&sysfs.join("kernel/btf"))?;
    let loaded = loader::load_state(crate::bpf::STATE_OBJECT, &ctrl.layout)?;
    log::info!(
        "state transitions: kprobes {} (nvme_ctrl offsets from BTF: state {}, instance {}, nr_reconnects {})",
        loaded.attached.join(", "),
        ctrl.layout.state,
        ctrl.layout.instance,
        ctrl.layout.nr_reconnects
    );
    Ok(Source::Kprobe {
        ebpf: Mutex::new(loaded.ebpf),
        states: ctrl.states,
    })
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

fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn state_name(states: &[(u32, String)], v: u8) -> String {
    states
        .iter()
        .find(|(s, _)| *s == u32::from(v))
        .map(|(_, n)| n.clone())
        .unwrap_or_else(|| format!("state {v}"))
}

/// Reads both maps into per-instance tracks.
fn read_kernel(ebpf: &Ebpf, states: &[(u32, String)]) -> anyhow::Result<BTreeMap<u32, Track>> {
    use anyhow::Context as _;
    let (mono, wall) = (monotonic_now_ns(), wall_now());
    let ago = |ns: u64| mono.saturating_sub(ns) as f64 / 1e9;
    let mut out: BTreeMap<u32, Track> = BTreeMap::new();
    let map = ebpf
        .map(maps::TRANSITIONS)
        .context("map TRANSITIONS missing")?;
    let transitions: BpfHashMap<_, TransitionKey, TransitionStats> =
        BpfHashMap::try_from(map).context("map TRANSITIONS")?;
    let mut left_live: HashMap<u32, u64> = HashMap::new();
    let mut last: HashMap<u32, u64> = HashMap::new();
    for item in transitions.iter() {
        let (k, v) = item.context("reading TRANSITIONS")?;
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
    let map = ebpf
        .map(maps::RECONNECTS)
        .context("map RECONNECTS missing")?;
    let reconnects: BpfHashMap<_, u32, Reconnects> =
        BpfHashMap::try_from(map).context("map RECONNECTS")?;
    for item in reconnects.iter() {
        let (i, r) = item.context("reading RECONNECTS")?;
        out.entry(i).or_default().reconnects = Some(r.attempts);
    }
    Ok(out)
}

impl Collector for StateCollector {
    fn name(&self) -> &'static str {
        "state"
    }

    fn families(&self) -> &'static [Family] {
        FAMILIES
    }

    fn collect(&self, sink: &mut Sink) -> anyhow::Result<()> {
        let parsed = sysfs::controllers(&self.sysfs)?;
        let (source, mut tracks) = match &self.source {
            Source::Kprobe { ebpf, states } => {
                let ebpf = ebpf.lock().unwrap_or_else(|p| p.into_inner());
                ("kprobe", read_kernel(&ebpf, states)?)
            }
            Source::Poll { tracks, .. } => {
                let t = tracks.lock().unwrap_or_else(|p| p.into_inner());
                ("sysfs_poll", t.snapshot())
            }
        };
        sink.gauge(&SOURCE, &[("source", source)], 1.0);
        // Only controllers sysfs shows now: one that went away leaves /metrics with it.
        for c in &parsed.items {
            let track = tracks.remove(&c.instance).unwrap_or_default();
            let subsystem = c.subsysnqn.as_deref().unwrap_or("");
            let ids = [("subsystem", subsystem), ("controller", c.name.as_str())];
            for ((from, to), n) in &track.transitions {
                sink.counter(
                    &TRANSITIONS,
                    &[ids[0], ids[1], ("from", from), ("to", to)],
                    *n as f64,
                );
            }
            if let Some(n) = track.reconnects {
                sink.counter(&RECONNECTS, &ids, n as f64);
            } else if source == "kprobe" {
                sink.counter(&RECONNECTS, &ids, 0.0);
            }
            if let Some(t) = track.last_transition {
                sink.gauge(&LAST_TRANSITION, &ids, t);
            }
            if c.state == Some(CtrlState::Live) {
                sink.gauge(&SINCE_LIVE, &ids, 0.0);
            } else if let Some(ago) = track.left_live_ago {
                sink.gauge(&SINCE_LIVE, &ids, ago);
            }
        }
        Ok(())
    }
}

/// The fallback's memory: per controller instance, the state last read and what changed.
#[derive(Debug, Default)]
pub struct PollState {
    ctrls: BTreeMap<u32, Polled>,
}

#[derive(Debug)]
struct Polled {
    name: String,
    state: String,
    transitions: BTreeMap<(String, String), u64>,
    last_transition: Option<f64>,
    left_live: Option<Instant>,
}

impl PollState {
    /// Folds in one reading of every controller's state: (instance, name, state).
    fn update(&mut self, seen: Vec<(u32, String, String)>, wall: f64, now: Instant) {
        let mut next = BTreeMap::new();
        for (instance, name, state) in seen {
            let mut p = match self.ctrls.remove(&instance) {
                // The same instance under the same name: the same controller, as far as polling
                // can tell.
                Some(p) if p.name == name => p,
                _ => Polled {
                    name,
                    state: state.clone(),
                    transitions: BTreeMap::new(),
                    last_transition: None,
                    left_live: None,
                },
            };
            if p.state != state {
                *p.transitions
                    .entry((p.state.clone(), state.clone()))
                    .or_default() += 1;
                p.last_transition = Some(wall);
                if p.state == "live" {
                    p.left_live = Some(now);
                }
                p.state = state;
            }
            next.insert(instance, p);
        }
        self.ctrls = next;
    }

    fn snapshot(&self) -> BTreeMap<u32, Track> {
        self.ctrls
            .iter()
            .map(|(i, p)| {
                (
                    *i,
                    Track {
                        transitions: p.transitions.clone(),
                        reconnects: None,
                        last_transition: p.last_transition,
                        left_live_ago: p.left_live.map(|t| t.elapsed().as_secs_f64()),
                    },
                )
            })
            .collect()
    }
}

/// One pass of the fallback: only the `state` file of each controller, so it stays cheap.
fn poll_once(root: &Path, shared: &Mutex<PollState>) {
    let class = root.join("class/nvme");
    let Ok(dir) = std::fs::read_dir(&class) else {
        return;
    };
    let mut seen = Vec::new();
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(instance) = sysfs::controller::ctrl_instance(&name) else {
            continue;
        };
        if let Ok(s) = std::fs::read_to_string(e.path().join("state")) {
            seen.push((instance, name, s.trim().to_owned()));
        }
    }
    let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
    st.update(seen, wall_now(), Instant::now());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::testtree::Tree;

    fn seen(list: &[(u32, &str)]) -> Vec<(u32, String, String)> {
        list.iter()
            .map(|(i, s)| (*i, format!("nvme{i}"), s.to_string()))
            .collect()
    }

    #[test]
    fn polling_counts_changes_and_forgets_vanished_controllers() {
        let mut st = PollState::default();
        let t0 = Instant::now();
        st.update(seen(&[(0, "live"), (1, "live")]), 100.0, t0);
        st.update(seen(&[(0, "connecting"), (1, "live")]), 101.0, t0);
        st.update(seen(&[(0, "live"), (1, "live")]), 102.0, t0);
        let snap = st.snapshot();
        let t = &snap[&0];
        assert_eq!(
            t.transitions,
            BTreeMap::from([
                (("connecting".into(), "live".into()), 1),
                (("live".into(), "connecting".into()), 1)
            ])
        );
        assert_eq!(t.last_transition, Some(102.0));
        assert!(t.left_live_ago.is_some());
        assert_eq!(snap[&1], Track::default());
        // nvme1 goes away and a new nvme1 comes: it starts from nothing.
        st.update(seen(&[(0, "live")]), 103.0, t0);
        assert!(!st.snapshot().contains_key(&1));
    }

    #[test]
    fn fallback_reports_its_source_and_only_present_controllers() {
        let t = Tree::new();
        t.tcp_controller(0, "nqn.test:a", "connecting");
        let c = StateCollector::polling(t.root().into());
        std::thread::sleep(POLL_INTERVAL * 3);
        let mut sink = Sink::new();
        c.collect(&mut sink).unwrap();
        let fams = sink.into_families();
        let source = fams.iter().find(|f| f.name() == SOURCE.name).unwrap();
        assert_eq!(source.metric[0].label[0].value(), "sysfs_poll");
        // Never seen live: no since-live series; no reconnect counts from polling.
        assert!(fams.iter().all(|f| f.name() != SINCE_LIVE.name));
        assert!(fams.iter().all(|f| f.name() != RECONNECTS.name));
    }

    #[test]
    fn state_names_come_from_btf_values() {
        let states = vec![(0, "new".to_owned()), (1, "live".to_owned())];
        assert_eq!(state_name(&states, 1), "live");
        assert_eq!(state_name(&states, 7), "state 7");
    }
}
