//! Collector `state`: every controller state transition, every reconnect attempt, when the last
//! transition happened and how long a controller has not been live.
//!
//! The state tracer (`crate::bpf::state`: kprobes, or a sysfs poll without them) counts; this
//! collector renders its snapshot for the controllers sysfs shows now.
//! `nvmeof_exporter_state_source` says which source runs: `kprobe` (exact) or `sysfs_poll` (a
//! lower bound, without reconnect attempts).
use std::path::PathBuf;

use crate::bpf::state::{ConnectFailures, StateSnapshot, StateSource};
use crate::collector::{families, label, Collector, Scrape, Sink};
use crate::sysfs::CtrlState;
use nvmeof_common::state::ConnectFailure;

families! {
    TRANSITIONS: counter("nvmeof_controller_state_transitions_total",
        "Controller state transitions by old and new state (kernel-side count; a lower bound when nvmeof_exporter_state_source is sysfs_poll).");
    RECONNECTS: counter("nvmeof_reconnect_attempts_total",
        "Reconnect attempts the kernel made for the controller (increments of its nr_reconnects).");
    LAST_TRANSITION: gauge("nvmeof_controller_last_transition_timestamp_seconds",
        "Wall-clock time of the controller's last state transition.");
    SINCE_LIVE: gauge("nvmeof_controller_since_live_seconds",
        "Time since the controller was last live: 0 while live, else since it left live.");
    CONNECT_FAILURES: counter("nvmeof_connect_failures_total",
        "Connects of a queue that failed, by the subsystem NQN the host asked for, queue_type (admin or io) and reason: rejected (the subsystem answered Connect with an error status), authentication (in-band DH-HMAC-CHAP failed), other (the transport failed under it). Kept after the kernel removes the controller; zeros for the subsystems of present fabrics controllers.");
    MAP_FULL: counter("nvmeof_exporter_state_map_full_total",
        "State transitions (TRANSITIONS), reconnect attempts (RECONNECTS) or failed connects (CONNECT_FAILURES) the kprobes could not count because that map was full (raise --ebpf.count-map-entries).");
    SOURCE: gauge("nvmeof_exporter_state_source",
        "How state transitions are caught: kprobe (exact) or sysfs_poll (a lower bound); always 1.");
}

pub struct StateCollector {
    sysfs: PathBuf,
    source: StateSource,
}

impl StateCollector {
    /// Renders what `source` counts, for the controllers under `sysfs`.
    pub fn new(sysfs: PathBuf, source: StateSource) -> StateCollector {
        StateCollector { sysfs, source }
    }
}

impl Collector for StateCollector {
    fn collect(&self, scrape: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
        let parsed = scrape.controllers(&self.sysfs)?;
        let StateSnapshot {
            source,
            mut tracks,
            map_full,
            connect_failures,
        } = self.source.snapshot()?;
        sink.gauge(&SOURCE, &[("source", source)], 1.0);
        for (map, n) in map_full {
            sink.counter(&MAP_FULL, &[("map", map)], n as f64);
        }
        if let Some(failures) = connect_failures {
            emit_connect_failures(sink, &parsed.items, failures);
        }
        // Only controllers sysfs shows now: one that went away leaves /metrics with it.
        for c in &parsed.items {
            let track = tracks.remove(&c.instance).unwrap_or_default();
            let subsystem = label(&c.subsysnqn);
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

/// The failed connects the kernel counted, and zeros for every (queue_type, reason) of the subsystems
/// of the fabrics controllers present (those with a host NQN), so that the first failure is an
/// increase an alert sees.
fn emit_connect_failures(
    sink: &mut Sink,
    present: &[crate::sysfs::Controller],
    failures: Vec<ConnectFailures>,
) {
    use std::collections::BTreeMap;
    let mut all: BTreeMap<(String, &'static str, &'static str), u64> = BTreeMap::new();
    let fabrics = present.iter().filter(|c| c.hostnqn.is_some());
    for nqn in fabrics.filter_map(|c| c.subsysnqn.clone()) {
        for queue_type in ["admin", "io"] {
            for reason in ConnectFailure::ALL {
                all.insert((nqn.clone(), queue_type, reason.as_str()), 0);
            }
        }
    }
    for f in failures {
        *all.entry((f.subsystem, f.queue_type, f.reason.as_str()))
            .or_default() += f.count;
    }
    for ((subsystem, queue_type, reason), n) in &all {
        sink.counter(
            &CONNECT_FAILURES,
            &[
                ("subsystem", subsystem.as_str()),
                ("queue_type", queue_type),
                ("reason", reason),
            ],
            *n as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::state::POLL_INTERVAL;
    use crate::test_support::{collect, family, Tree};

    #[test]
    fn fallback_reports_its_source_and_only_present_controllers() {
        let t = Tree::new();
        t.tcp_controller(0, "nqn.test:a", "connecting");
        let root: PathBuf = t.root().into();
        let c = StateCollector::new(root.clone(), StateSource::polling(root));
        std::thread::sleep(POLL_INTERVAL * 3);
        let sink = collect(&c);
        let fams = sink.into_families();
        let source = family(&fams, SOURCE.name);
        assert_eq!(source.metric[0].label[0].value(), "sysfs_poll");
        // Never seen live: no since-live series; no reconnect counts from polling.
        assert!(fams.iter().all(|f| f.name() != SINCE_LIVE.name));
        assert!(fams.iter().all(|f| f.name() != RECONNECTS.name));
    }
}
