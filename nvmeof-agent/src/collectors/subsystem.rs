//! Collector `subsystem`: what each NVM subsystem is and how many of its paths (controllers) are
//! live, from `/sys/class/nvme-subsystem` (parsed by `crate::sysfs::subsystem`), and which paths
//! the kernel gave up on.
//!
//! "Is the fabric connected" is `nvmeof_subsystem_live_paths > 0`; redundancy lost is
//! `nvmeof_subsystem_live_paths < nvmeof_subsystem_paths + nvmeof_subsystem_lost_paths`.
//!
//! Why the lost paths: when `ctrl_loss_tmo` runs out the kernel deletes the controller, and with
//! it every sysfs trace of the path, so `paths` drops with `live_paths` and an alert on their
//! difference resolves just when the path is gone for good; the subsystem's last path takes the
//! subsystem itself with it. So the collector remembers, from one scrape to the next, each
//! controller's subsystem, address and state: a controller that disappears while it was not live
//! (resetting, connecting, dead: the kernel was still trying) is a lost path, kept until a
//! controller to the same subsystem at the same address comes back. One removed while live or
//! deleting is a deliberate `nvme disconnect` and is forgotten. A subsystem left with lost paths
//! only keeps its `paths` and `live_paths` series at 0. The memory is capped at
//! [`MAX_LOST_PATHS`]; past it the oldest is forgotten and counted.
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::collector::{families, label, Collector, Scrape, Sink};
use crate::sysfs::{self, Address, CtrlState};

families! {
    INFO: gauge("nvmeof_subsystem_info",
        "Identity of an NVM subsystem and its multipath I/O policy; always 1.");
    PATHS: gauge("nvmeof_subsystem_paths",
        "Controllers (paths) the host has to the subsystem, whatever their state.");
    LIVE_PATHS: gauge("nvmeof_subsystem_live_paths",
        "Controllers (paths) to the subsystem in state live.");
    LOST_PATHS: gauge("nvmeof_subsystem_lost_paths",
        "Paths to the subsystem whose controller the kernel removed while not live (ctrl_loss_tmo ran out), not reconnected since.");
    LOST_FORGOTTEN: counter("nvmeof_subsystem_lost_paths_forgotten_total",
        "Lost paths dropped from the agent's memory because it held the most it keeps.");
}

/// Lost paths remembered at most, over all subsystems: a few hundred bytes each, so the memory
/// stays under a megabyte whatever the fabric does (a host has tens of paths, not thousands).
pub const MAX_LOST_PATHS: usize = 1024;

/// A path as it survives a reconnect: the subsystem and where the controller connects to and
/// from. The controller's `nvmeN` does not survive (a reconnect after deletion gets a new one),
/// nor does TCP's `src_addr` (a new source port).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct PathKey {
    subsystem: String,
    /// Transport and address, as `transport traddr trsvcid host_traddr host_iface`.
    address: String,
}

fn address_key(transport: Option<&str>, a: Option<&Address>) -> String {
    let a = a.cloned().unwrap_or_default();
    [
        transport,
        a.traddr.as_deref(),
        a.trsvcid.as_deref(),
        a.host_traddr.as_deref(),
        a.host_iface.as_deref(),
    ]
    .map(|p| p.unwrap_or("-"))
    .join(" ")
}

/// What the collector carries from one scrape to the next.
#[derive(Default)]
struct Memory {
    /// Every controller the last scrape saw, by `nvmeN`: its path and state.
    last_seen: HashMap<String, (PathKey, Option<CtrlState>)>,
    /// Lost paths, each with the sequence number of its loss (oldest forgotten first).
    lost: BTreeMap<PathKey, u64>,
    next_seq: u64,
    forgotten: u64,
}

/// The kernel was still trying to reach the target: `resetting` and `connecting` between
/// reconnect attempts, `dead` after a failed reset. `new` is a first connect that failed (the
/// administrator's `nvme connect` says so), `deleting` a removal under way.
fn was_trying(state: &Option<CtrlState>) -> bool {
    matches!(
        state,
        Some(CtrlState::Resetting | CtrlState::Connecting | CtrlState::Dead)
    )
}

impl Memory {
    /// Takes this scrape's controllers; forgets the lost paths that came back and remembers the
    /// ones lost since the last scrape.
    fn update(&mut self, now: HashMap<String, (PathKey, Option<CtrlState>)>) {
        for (path, _) in now.values() {
            self.lost.remove(path);
        }
        let present: std::collections::HashSet<&PathKey> = now.values().map(|(p, _)| p).collect();
        let mut gone: Vec<(&String, &PathKey)> = self
            .last_seen
            .iter()
            .filter(|(name, (path, state))| {
                // The same nvmeN now on another path is a new controller: the old one is gone.
                now.get(*name).map(|(p, _)| p) != Some(path) && was_trying(state)
            })
            .map(|(name, (path, _))| (name, path))
            .collect();
        // Sequence numbers in name order, so that the same scrape gives the same memory.
        gone.sort();
        for (_, path) in gone {
            if present.contains(path) || self.lost.contains_key(path) {
                continue;
            }
            if self.lost.len() >= MAX_LOST_PATHS {
                let oldest = self
                    .lost
                    .iter()
                    .min_by_key(|(_, seq)| **seq)
                    .map(|(p, _)| p.clone());
                if let Some(oldest) = oldest {
                    self.lost.remove(&oldest);
                    self.forgotten += 1;
                }
            }
            self.lost.insert(path.clone(), self.next_seq);
            self.next_seq += 1;
        }
        self.last_seen = now;
    }

    fn lost_of(&self, subsystem: &str) -> usize {
        self.lost
            .keys()
            .filter(|p| p.subsystem == subsystem)
            .count()
    }
}

pub struct SubsystemCollector {
    sysfs: PathBuf,
    memory: Mutex<Memory>,
}

impl SubsystemCollector {
    pub fn new(sysfs: PathBuf) -> Self {
        SubsystemCollector {
            sysfs,
            memory: Mutex::default(),
        }
    }
}

/// A subsystem's paths and live paths as sysfs shows them, and its lost paths as remembered:
/// the three series an alert on lost redundancy compares.
fn path_counts(sink: &mut Sink, nqn: &str, paths: usize, live: usize, memory: &Memory) {
    let labels = [("subsystem", nqn)];
    sink.gauge(&PATHS, &labels, paths as f64);
    sink.gauge(&LIVE_PATHS, &labels, live as f64);
    sink.gauge(&LOST_PATHS, &labels, memory.lost_of(nqn) as f64);
}

impl Collector for SubsystemCollector {
    fn collect(&self, scrape: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
        let parsed = sysfs::subsystems(&self.sysfs)?;
        let controllers = scrape.controllers(&self.sysfs)?;
        sink.skipped(parsed.skipped.len());
        let addresses: HashMap<&str, String> = controllers
            .items
            .iter()
            .map(|c| {
                let key = address_key(c.transport.as_deref(), c.address.as_ref());
                (c.name.as_str(), key)
            })
            .collect();
        let mut now = HashMap::new();
        let mut see = |name: &String, subsystem: &Option<String>, state: &Option<CtrlState>| {
            // A controller the class listing missed (added or removed in between) is keyed by
            // its name: it cannot match a remembered path, which is the safe side.
            let address = addresses
                .get(name.as_str())
                .cloned()
                .unwrap_or_else(|| name.clone());
            let path = PathKey {
                subsystem: label(subsystem).to_owned(),
                address,
            };
            now.insert(name.clone(), (path, state.clone()));
        };
        // A controller the class listing shows is not gone, whatever its subsystem's reading
        // said (a subsystem skipped as unreadable must not make its paths "lost"); where the
        // subsystems list it, what they say replaces this.
        for c in &controllers.items {
            see(&c.name, &c.subsysnqn, &c.state);
        }
        for s in &parsed.items {
            for c in &s.controllers {
                see(&c.name, &s.subsysnqn, &c.state);
            }
        }
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.update(now);
        let mut shown = std::collections::HashSet::new();
        for s in &parsed.items {
            let nqn = ("subsystem", label(&s.subsysnqn));
            shown.insert(nqn.1);
            sink.gauge(
                &INFO,
                &[
                    nqn,
                    ("name", s.name.as_str()),
                    ("model", label(&s.model)),
                    ("serial", label(&s.serial)),
                    ("firmware_rev", label(&s.firmware_rev)),
                    ("iopolicy", label(&s.iopolicy)),
                    ("type", label(&s.subsystype)),
                ],
                1.0,
            );
            let live = s
                .controllers
                .iter()
                .filter(|c| c.state == Some(CtrlState::Live))
                .count();
            path_counts(sink, nqn.1, s.controllers.len(), live, &memory);
        }
        // Subsystems that went away with their last path lost: still there for the alerts.
        let mut gone: Vec<&str> = memory
            .lost
            .keys()
            .map(|p| p.subsystem.as_str())
            .filter(|s| !shown.contains(s))
            .collect();
        gone.dedup();
        for nqn in gone {
            path_counts(sink, nqn, 0, 0, &memory);
        }
        sink.counter(&LOST_FORGOTTEN, &[], memory.forgotten as f64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Family;
    use crate::test_support::{collect, Tree};

    /// `(paths, live_paths, lost_paths)` of `nqn` and the forgotten count, from one scrape.
    fn scrape(c: &SubsystemCollector, nqn: &str) -> (Option<[f64; 3]>, f64) {
        let sink = collect(c);
        let fams = sink.into_families();
        let get = |f: &Family| {
            fams.iter()
                .find(|m| m.name() == f.name)?
                .metric
                .iter()
                .find(|m| m.label.iter().any(|l| l.value() == nqn))
                .map(|m| m.value())
        };
        let forgotten = fams
            .iter()
            .find(|m| m.name() == LOST_FORGOTTEN.name)
            .unwrap()
            .metric[0]
            .value();
        let v = match (get(&PATHS), get(&LIVE_PATHS), get(&LOST_PATHS)) {
            (Some(p), Some(l), Some(x)) => Some([p, l, x]),
            (None, None, None) => None,
            other => panic!("{nqn}: some of the three families only: {other:?}"),
        };
        (v, forgotten)
    }

    /// What the kernel does when it deletes a controller: its class link, its link under the
    /// subsystem and its device directory go.
    fn remove_controller(t: &Tree, instance: u32, subsys: u32) {
        std::fs::remove_file(t.root().join(format!("class/nvme/nvme{instance}"))).unwrap();
        std::fs::remove_file(t.subsys_dir(subsys).join(format!("nvme{instance}"))).unwrap();
        std::fs::remove_dir_all(t.ctrl_dir(instance)).unwrap();
    }

    fn set_state(t: &Tree, instance: u32, state: &str) {
        std::fs::write(t.ctrl_dir(instance).join("state"), format!("{state}\n")).unwrap();
    }

    /// Two live paths to `nqn.test:a` (nvme0 and nvme1, the second over TCP) and a collector
    /// reading them.
    fn two_paths() -> (Tree, SubsystemCollector) {
        let t = Tree::new();
        t.two_paths(["live", "live"]);
        t.set_transport(1, "tcp", "traddr=10.0.0.2,trsvcid=4420,src_addr=10.0.0.1");
        let c = SubsystemCollector::new(t.root().into());
        (t, c)
    }

    /// The last path gone: the kernel removes the subsystem too.
    fn remove_last_path(t: &Tree, instance: u32, subsys: u32) {
        remove_controller(t, instance, subsys);
        let name = format!("class/nvme-subsystem/nvme-subsys{subsys}");
        std::fs::remove_file(t.root().join(name)).unwrap();
    }

    #[test]
    fn one_of_two_paths_live() {
        let t = Tree::new();
        t.two_paths(["live", "resetting"]);
        let c = SubsystemCollector::new(t.root().into());
        assert_eq!(scrape(&c, "nqn.test:a"), (Some([2.0, 1.0, 0.0]), 0.0));
    }

    /// ctrl_loss_tmo running out on one of two paths: paths drops to 1 with live_paths, and
    /// the lost path keeps the difference (live 1 < 1 + 1); its last path lost too, the
    /// subsystem stays at 0 live paths instead of leaving /metrics; a reconnect to the same
    /// address (under a new nvmeN) clears it.
    #[test]
    fn paths_removed_while_reconnecting_stay_lost_until_they_come_back() {
        let (t, c) = two_paths();
        assert_eq!(scrape(&c, "nqn.test:a"), (Some([2.0, 2.0, 0.0]), 0.0));
        set_state(&t, 1, "connecting");
        assert_eq!(scrape(&c, "nqn.test:a"), (Some([2.0, 1.0, 0.0]), 0.0));
        remove_controller(&t, 1, 0);
        assert_eq!(scrape(&c, "nqn.test:a"), (Some([1.0, 1.0, 1.0]), 0.0));

        set_state(&t, 0, "resetting");
        assert_eq!(scrape(&c, "nqn.test:a"), (Some([1.0, 0.0, 1.0]), 0.0));
        remove_last_path(&t, 0, 0);
        std::fs::remove_dir_all(t.subsys_dir(0)).unwrap();
        assert_eq!(scrape(&c, "nqn.test:a"), (Some([0.0, 0.0, 2.0]), 0.0));
        // Still there a scrape later: nothing but a reconnect clears it.
        assert_eq!(scrape(&c, "nqn.test:a"), (Some([0.0, 0.0, 2.0]), 0.0));

        // The second path comes back as nvme5 (a new controller, the same address).
        t.tcp_controller(5, "nqn.test:a", "live");
        t.set_transport(5, "tcp", "traddr=10.0.0.2,trsvcid=4420,src_addr=10.0.0.1");
        t.subsystem(1, "nqn.test:a", &[5]);
        assert_eq!(scrape(&c, "nqn.test:a"), (Some([1.0, 1.0, 1.0]), 0.0));
    }

    /// `nvme disconnect` removes live controllers: nothing is lost and the subsystem leaves
    /// /metrics with its last path, as before.
    #[test]
    fn paths_removed_while_live_are_not_lost() {
        let (t, c) = two_paths();
        scrape(&c, "nqn.test:a");
        remove_controller(&t, 1, 0);
        assert_eq!(scrape(&c, "nqn.test:a"), (Some([1.0, 1.0, 0.0]), 0.0));
        set_state(&t, 0, "deleting");
        scrape(&c, "nqn.test:a");
        remove_last_path(&t, 0, 0);
        assert_eq!(scrape(&c, "nqn.test:a"), (None, 0.0));
    }

    /// A controller number reused by another subsystem between two scrapes: the old controller
    /// is gone (lost, it was connecting), the new one is not mistaken for it.
    #[test]
    fn a_reused_controller_name_is_another_path() {
        let (t, c) = two_paths();
        set_state(&t, 1, "connecting");
        scrape(&c, "nqn.test:a");
        remove_controller(&t, 1, 0);
        t.tcp_controller(1, "nqn.test:b", "live");
        t.subsystem(1, "nqn.test:b", &[1]);
        assert_eq!(scrape(&c, "nqn.test:a"), (Some([1.0, 1.0, 1.0]), 0.0));
        assert_eq!(scrape(&c, "nqn.test:b"), (Some([1.0, 1.0, 0.0]), 0.0));
    }

    /// The memory holds MAX_LOST_PATHS: one more loss forgets the oldest and counts it.
    #[test]
    fn memory_is_capped_and_forgetting_is_counted() {
        let mut m = Memory::default();
        let path = |i: usize| PathKey {
            subsystem: format!("nqn.test:{i}"),
            address: "tcp 10.0.0.2 4420 - -".into(),
        };
        for i in 0..=MAX_LOST_PATHS {
            let seen =
                HashMap::from([(format!("nvme{i}"), (path(i), Some(CtrlState::Connecting)))]);
            m.update(seen);
        }
        m.update(HashMap::new());
        assert_eq!((m.lost.len(), m.forgotten), (MAX_LOST_PATHS, 1));
        // The first lost was forgotten, the last kept.
        assert_eq!(m.lost_of("nqn.test:0"), 0);
        assert_eq!(m.lost_of(&format!("nqn.test:{MAX_LOST_PATHS}")), 1);
    }
}
