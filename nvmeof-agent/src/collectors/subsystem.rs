//! Collector `subsystem`: what each NVM subsystem is and how many of its paths (controllers) are
//! live, from `/sys/class/nvme-subsystem` (parsed by `crate::sysfs::subsystem`).
//!
//! "Is the fabric connected" is `nvmeof_subsystem_live_paths > 0`; redundancy lost is
//! `nvmeof_subsystem_live_paths < nvmeof_subsystem_paths`.
use std::path::PathBuf;

use crate::collector::{Collector, Family, Scrape, Sink};
use crate::sysfs::{self, CtrlState};

const INFO: Family = Family::gauge(
    "nvmeof_subsystem_info",
    "Identity of an NVM subsystem and its multipath I/O policy; always 1.",
);
const PATHS: Family = Family::gauge(
    "nvmeof_subsystem_paths",
    "Controllers (paths) the host has to the subsystem, whatever their state.",
);
const LIVE_PATHS: Family = Family::gauge(
    "nvmeof_subsystem_live_paths",
    "Controllers (paths) to the subsystem in state live.",
);

pub const FAMILIES: &[Family] = &[INFO, PATHS, LIVE_PATHS];

pub struct SubsystemCollector {
    sysfs: PathBuf,
}

impl SubsystemCollector {
    pub fn new(sysfs: PathBuf) -> Self {
        SubsystemCollector { sysfs }
    }
}

fn text(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

impl Collector for SubsystemCollector {
    fn collect(&self, _: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
        let parsed = sysfs::subsystems(&self.sysfs)?;
        sink.skipped(parsed.skipped.len());
        for s in &parsed.items {
            let nqn = ("subsystem", text(&s.subsysnqn));
            sink.gauge(
                &INFO,
                &[
                    nqn,
                    ("name", s.name.as_str()),
                    ("model", text(&s.model)),
                    ("serial", text(&s.serial)),
                    ("firmware_rev", text(&s.firmware_rev)),
                    ("iopolicy", text(&s.iopolicy)),
                    ("type", text(&s.subsystype)),
                ],
                1.0,
            );
            let live = s
                .controllers
                .iter()
                .filter(|c| c.state == Some(CtrlState::Live))
                .count();
            sink.gauge(&PATHS, &[nqn], s.controllers.len() as f64);
            sink.gauge(&LIVE_PATHS, &[nqn], live as f64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::testtree::Tree;

    #[test]
    fn one_of_two_paths_live() {
        let t = Tree::new();
        t.tcp_controller(0, "nqn.test:a", "live");
        t.tcp_controller(1, "nqn.test:a", "resetting");
        t.subsystem(0, "nqn.test:a", &[0, 1]);
        let mut sink = Sink::new();
        SubsystemCollector::new(t.root().into())
            .collect(&Scrape::new(), &mut sink)
            .unwrap();
        let fams = sink.into_families();
        let get = |name: &str| fams.iter().find(|f| f.name() == name).unwrap().metric[0].value();
        assert_eq!((get(PATHS.name), get(LIVE_PATHS.name)), (2.0, 1.0));
    }
}
