//! The state tracer's fallback without kprobes: each controller's sysfs `state`, read by the
//! tracer's worker, and the transitions seen between two readings. [`PollState`] is generic over
//! what it tracks, so the `aen` tracer counts each path's ANA state changes with it too.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use super::{wall_now, Track};
use crate::sysfs;

/// The fallback's memory: per tracked item (a controller instance here, a path in the `aen`
/// tracer), the state last read and what changed.
#[derive(Debug)]
pub struct PollState<K = u32> {
    ctrls: BTreeMap<K, Polled>,
}

impl<K> Default for PollState<K> {
    fn default() -> Self {
        PollState {
            ctrls: BTreeMap::new(),
        }
    }
}

#[derive(Debug)]
struct Polled {
    /// With the instance, what tells this controller from a later one that reuses its number
    /// (the kernel hands a deleted controller's instance to the next one created).
    subsysnqn: String,
    state: String,
    transitions: BTreeMap<(String, String), u64>,
    last_transition: Option<f64>,
    left_live: Option<Instant>,
}

impl<K: Ord + Clone> PollState<K> {
    /// Folds in one reading of every item's state: (key, subsystem NQN, state). An item not in
    /// `seen` is forgotten. An empty state is no state (the kernel always prints a name; a file
    /// caught while being rewritten, as a test tree's is, reads empty): the item keeps what it had.
    pub(crate) fn update(&mut self, seen: Vec<(K, String, String)>, wall: f64, now: Instant) {
        let mut next = BTreeMap::new();
        for (instance, subsysnqn, state) in seen {
            if state.is_empty() {
                if let Some(p) = self.ctrls.remove(&instance) {
                    next.insert(instance, p);
                }
                continue;
            }
            let mut p = match self.ctrls.remove(&instance) {
                // The same instance of the same subsystem: the same controller, as far as
                // polling can tell.
                Some(p) if p.subsysnqn == subsysnqn => p,
                _ => Polled {
                    subsysnqn,
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

    pub(crate) fn snapshot(&self) -> BTreeMap<K, Track> {
        self.ctrls
            .iter()
            .map(|(i, p)| {
                (
                    i.clone(),
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

/// One pass of the fallback: only the `state` and `subsysnqn` files of each controller, so it
/// stays cheap.
pub(super) fn poll_once(root: &Path, shared: &Mutex<PollState>) {
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
        if let Some(s) = sysfs::read_trim(&e.path().join("state")) {
            let nqn = sysfs::read_trim(&e.path().join("subsysnqn")).unwrap_or_default();
            seen.push((instance, nqn, s));
        }
    }
    let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
    st.update(seen, wall_now(), Instant::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(list: &[(u32, &str)]) -> Vec<(u32, String, String)> {
        list.iter()
            .map(|(i, s)| (*i, format!("nqn.{i}"), s.to_string()))
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

    /// A reading caught empty between two others changes nothing: no transition to or from "".
    #[test]
    fn an_empty_reading_is_no_state() {
        let mut st = PollState::default();
        let t0 = Instant::now();
        st.update(seen(&[(0, "optimized"), (1, "live")]), 100.0, t0);
        st.update(seen(&[(0, ""), (1, "live")]), 101.0, t0);
        st.update(seen(&[(0, "inaccessible"), (1, "live")]), 102.0, t0);
        assert_eq!(
            st.snapshot()[&0].transitions,
            BTreeMap::from([(("optimized".into(), "inaccessible".into()), 1)])
        );
        // Nor does an item first read empty start from "".
        st.update(
            seen(&[(0, "inaccessible"), (1, "live"), (2, "")]),
            103.0,
            t0,
        );
        st.update(
            seen(&[(0, "inaccessible"), (1, "live"), (2, "live")]),
            104.0,
            t0,
        );
        assert_eq!(st.snapshot()[&2], Track::default());
    }

    /// Between two readings nvme0 is deleted and a controller of another subsystem gets its
    /// instance: it does not inherit the counts. The same subsystem's controller does.
    #[test]
    fn a_reused_instance_of_another_subsystem_starts_from_nothing() {
        let mut st = PollState::default();
        let t0 = Instant::now();
        let one = |nqn: &str, state: &str| vec![(0, nqn.to_owned(), state.to_owned())];
        st.update(one("nqn.a", "live"), 100.0, t0);
        st.update(one("nqn.a", "resetting"), 101.0, t0);
        assert_eq!(st.snapshot()[&0].transitions.len(), 1);
        st.update(one("nqn.b", "live"), 102.0, t0);
        assert_eq!(st.snapshot()[&0], Track::default());
        st.update(one("nqn.b", "connecting"), 103.0, t0);
        st.update(one("nqn.b", "live"), 104.0, t0);
        assert_eq!(st.snapshot()[&0].transitions.len(), 2);
    }
}
