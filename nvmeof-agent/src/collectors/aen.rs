//! Collector `aen`: asynchronous events per controller by type and information, and ANA state
//! transitions per path.
//!
//! The AEN tracer (`crate::bpf::aen`) counts events in the kernel (`nvme:nvme_async_event`) and
//! ANA changes with a kprobe (or, without it, samples each path's `ana_state`); this collector
//! renders its snapshot, for the controllers its worker saw in sysfs: with the kprobe, a reading
//! the scrape asks for and waits on (as `io` waits for its drain); while sampling, the last one,
//! at most 100 ms old. `nvmeof_exporter_ana_source` says how ANA changes are caught: `kprobe`
//! (exact) or `sysfs_poll` (a lower bound).
use std::time::Duration;

use crate::bpf::aen::{AenSnapshot, AenSource};
use crate::collector::{families, Collector, Scrape, Sink};
use crate::sysfs::namespace::namespace_of_path;
use crate::worker::Ticked;

families! {
    EVENTS: counter("nvmeof_controller_async_events_total",
        "Asynchronous events the controller reported, by event type and information (counted in the kernel on nvme:nvme_async_event).");
    ANA_TRANSITIONS: counter("nvmeof_namespace_ana_transitions_total",
        "ANA state changes of one path to a namespace, by old and new state (kernel-side count; a lower bound when nvmeof_exporter_ana_source is sysfs_poll).");
    UP: gauge("nvmeof_exporter_aen_up",
        "1 when the nvme_async_event tracepoint program is attached (events are counted), else 0.");
    MAP_FULL: counter("nvmeof_exporter_aen_map_full_total",
        "Events the AEN programs could not count because their map was full: AEN_EVENTS (asynchronous events) or ANA_TRANSITIONS (raise --ebpf.count-map-entries).");
    ANA_SOURCE: gauge("nvmeof_exporter_ana_source",
        "How ANA state changes are caught: kprobe (exact) or sysfs_poll (sampled every 100 ms, a lower bound); always 1.");
}

/// How long a collection outside a scrape (no deadline) waits for the controllers' reading.
const REFRESH_OUTSIDE_A_SCRAPE: Duration = Duration::from_secs(1);

pub struct AenCollector {
    source: AenSource,
}

impl AenCollector {
    /// Renders what `source` counts.
    pub fn new(source: AenSource) -> AenCollector {
        AenCollector { source }
    }
}

impl Collector for AenCollector {
    fn collect(&self, scrape: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
        // The controllers as they are now (with the kprobe, read at the scrape, in three
        // quarters of its time): a reading that does not finish in time fails this run, and the
        // scrape serves the last good output, marked stale.
        let within = scrape.time_left(REFRESH_OUTSIDE_A_SCRAPE) * 3 / 4;
        if self.source.refresh(within) == Ticked::Late {
            anyhow::bail!("the controllers' subsystems were not read within {within:?}");
        }
        let AenSnapshot {
            up,
            ana_source,
            events,
            ana,
            controllers,
            map_full,
        } = self.source.snapshot()?;
        sink.gauge(&UP, &[], if up { 1.0 } else { 0.0 });
        for (map, n) in map_full {
            sink.counter(&MAP_FULL, &[("map", map)], n as f64);
        }
        sink.gauge(&ANA_SOURCE, &[("source", ana_source)], 1.0);
        // Only controllers sysfs showed at the last reading: one that went away leaves /metrics
        // with it.
        for (instance, subsystem) in &controllers {
            let name = format!("nvme{instance}");
            let ids = [
                ("subsystem", subsystem.as_str()),
                ("controller", name.as_str()),
            ];
            if let Some(counts) = events.get(instance) {
                for ((kind, info), n) in counts {
                    sink.counter(
                        &EVENTS,
                        &[ids[0], ids[1], ("type", kind), ("info", info)],
                        *n as f64,
                    );
                }
            }
            let paths = ana.iter().filter(|((i, _), _)| i == instance);
            for ((_, path), track) in paths {
                let namespace = namespace_of_path(path);
                for ((from, to), n) in &track.transitions {
                    let labels = [
                        ids[0],
                        ("namespace", namespace.as_str()),
                        ids[1],
                        ("path", path.as_str()),
                        ("from", from.as_str()),
                        ("to", to.as_str()),
                    ];
                    sink.counter(&ANA_TRANSITIONS, &labels, *n as f64);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{collect, family, Tree};

    /// Without the program (AYA_BUILD_SKIP, or no permission on the test host) the ANA poll still
    /// counts, and the collector says the events are not counted.
    #[test]
    fn ana_transitions_render_per_path_with_the_namespace() {
        let t = Tree::new();
        t.two_paths(["live", "live"]);
        t.multipath_namespace(0, 1, 1, &[0, 1], Some(&["optimized", "optimized"]));
        let root: std::path::PathBuf = t.root().into();
        let c = AenCollector::new(crate::bpf::aen::start(root, None, 0));
        std::thread::sleep(crate::bpf::aen::POLL_INTERVAL * 3);
        let state = t.root().join("class/nvme/nvme1/nvme0c1n1/ana_state");
        std::fs::write(&state, "inaccessible\n").unwrap();
        std::thread::sleep(crate::bpf::aen::POLL_INTERVAL * 3);
        let fams = collect(&c).into_families();
        let ana = family(&fams, ANA_TRANSITIONS.name);
        assert_eq!(ana.metric.len(), 1);
        let m = &ana.metric[0];
        let labels: Vec<(&str, &str)> = m.label.iter().map(|l| (l.name(), l.value())).collect();
        assert_eq!(
            labels,
            [
                ("subsystem", "nqn.test:a"),
                ("namespace", "nvme0n1"),
                ("controller", "nvme1"),
                ("path", "nvme0c1n1"),
                ("from", "optimized"),
                ("to", "inaccessible")
            ]
        );
        assert_eq!(m.value(), 1.0);
        assert!(fams.iter().any(|f| f.name() == UP.name));
    }
}
