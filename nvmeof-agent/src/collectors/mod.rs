//! One collector per concern (see `crate::collector::Collector`) and the registry that lists
//! them: the single place to add one. Its name gives the `--collector.NAME` flags and the
//! `collector` label of the self metrics; its families are what `docs/metrics.md` must list.
pub mod aen;
pub mod controller;
pub mod exporter;
pub mod fc;
pub mod io;
pub mod namespace;
pub mod rdma;
pub mod smart;
pub mod state;
pub mod subsystem;
pub mod tcp;

use crate::collector::{Collector, Family, Named, Reads};
use crate::config::Config;

/// How a registered collector comes to be.
pub enum Build {
    /// Built from the configuration at start; it reads the kernel at every scrape.
    Collector(fn(&Config) -> anyhow::Result<Box<dyn Collector>>),
    /// Built from the configuration at start; it renders only what a background source it
    /// starts publishes ([`Reads::Memory`]).
    Snapshot(fn(&Config) -> anyhow::Result<Box<dyn Collector>>),
    /// The self metrics: built by the scraper, which owns the figures they report.
    SelfMetrics,
}

pub struct Registration {
    pub name: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
    pub default_enabled: bool,
    /// No `--collector.NAME` flags: cannot be turned off.
    pub always_on: bool,
    /// Every family the collector may emit.
    pub families: &'static [Family],
    pub build: Build,
}

impl Registration {
    /// A collector on by default, which `--no-collector.NAME` turns off.
    fn new(
        name: &'static str,
        help: &'static str,
        families: &'static [Family],
        build: Build,
    ) -> Registration {
        Registration {
            name,
            help,
            default_enabled: true,
            always_on: false,
            families,
            build,
        }
    }
}

/// What a build function returns for a built collector.
fn boxed(collector: impl Collector + 'static) -> anyhow::Result<Box<dyn Collector>> {
    Ok(Box::new(collector))
}

/// Every collector this exporter knows, in the order their flags appear.
pub fn registry() -> Vec<Registration> {
    vec![
        Registration::new(
            "controller",
            "state, transport, address and timeouts of each NVMe controller (sysfs)",
            controller::FAMILIES,
            Build::Collector(|c| {
                boxed(
                    controller::ControllerCollector::new(c.sysfs.clone()).per_queue(c.per_queue),
                )
            }),
        ),
        Registration::new(
            "subsystem",
            "identity and live paths of each NVM subsystem (sysfs)",
            subsystem::FAMILIES,
            Build::Collector(|c| boxed(subsystem::SubsystemCollector::new(c.sysfs.clone()))),
        ),
        Registration::new(
            "namespace",
            "size, block size, ANA state and block I/O counters of each namespace (sysfs)",
            namespace::FAMILIES,
            Build::Collector(|c| boxed(namespace::NamespaceCollector::new(c.sysfs.clone()))),
        ),
        Registration::new(
            "state",
            "controller state transitions and reconnect attempts, counted by kprobes (sysfs polling without them)",
            state::FAMILIES,
            Build::Collector(|c| {
                boxed(state::StateCollector::new(
                    c.sysfs.clone(),
                    crate::bpf::state::start(c.sysfs.clone(), c.count_map_entries),
                ))
            }),
        ),
        Registration::new(
            "aen",
            "asynchronous events per controller (eBPF, nvme_async_event) and ANA state transitions per path (kprobe, or sysfs sampled without BTF)",
            aen::FAMILIES,
            Build::Snapshot(|c| {
                boxed(aen::AenCollector::new(crate::bpf::aen::start(
                    c.sysfs.clone(),
                    None,
                    c.count_map_entries,
                )))
            }),
        ),
        Registration::new(
            "io",
            "per-command latency, bytes, errors and queue use from the eBPF tracepoint programs",
            io::FAMILIES,
            Build::Snapshot(|c| {
                boxed(io::IoCollector::new(crate::bpf::io::start(
                    crate::bpf::io::IoOptions {
                        sysfs_root: c.sysfs.clone(),
                        tracefs_root: None,
                        btf_root: None,
                        attach_mode: c.attach_mode,
                        drain_interval: c.drain_interval,
                        limits: c.io_limits,
                        count_map_entries: c.count_map_entries,
                        host_wait: c.host_wait,
                        per_queue: c.per_queue,
                        wait_for_nvme: crate::bpf::io::WAIT_FOR_NVME,
                        slow: c.slow.clone(),
                    },
                )))
            }),
        ),
        Registration::new(
            "smart",
            "SMART / health log and identity of each controller, polled in the background by admin commands",
            smart::FAMILIES,
            Build::Collector(|c| {
                boxed(smart::SmartCollector::new(crate::smart::start(
                    crate::smart::SmartOptions {
                        sysfs_root: c.sysfs.clone(),
                        dev_root: c.dev.clone(),
                        interval: c.smart_interval,
                        timeout: c.smart_timeout,
                    },
                )))
            }),
        ),
        Registration::new(
            "rdma",
            "counters of the RDMA device port carrying each rdma controller (sysfs, rtnetlink)",
            rdma::FAMILIES,
            Build::Collector(|c| boxed(rdma::RdmaCollector::new(c.sysfs.clone()))),
        ),
        Registration::new(
            "tcp",
            "RTT, retransmissions and bytes of each tcp controller's connections (sock_diag)",
            tcp::FAMILIES,
            Build::Collector(|c| boxed(tcp::TcpCollector::new(c.sysfs.clone(), c.per_queue))),
        ),
        Registration::new(
            "fc",
            "fc_host and remote port statistics of each fc controller (sysfs)",
            fc::FAMILIES,
            Build::Collector(|c| boxed(fc::FcCollector::new(c.sysfs.clone()))),
        ),
        Registration {
            always_on: true,
            ..Registration::new(
                "exporter",
                "the exporter's own health: build, scrapes, each collector's outcome",
                exporter::FAMILIES,
                Build::SelfMetrics,
            )
        },
    ]
}

/// Builds every collector the configuration enables, except the self metrics (the scraper's).
///
/// A `--path.sysfs` that is not a directory stops the start, saying so, as node_exporter's does
/// (procfs' `sysfs.NewFS` refuses a root it cannot stat, and node_exporter panics on the
/// collector error): a mistyped root would otherwise serve empty pages, looking like a node
/// without NVMe, for as long as nobody notices. Within an existing root a missing class
/// directory stays "no data", not an error.
pub fn build_enabled(config: &Config) -> anyhow::Result<Vec<Named>> {
    use anyhow::Context as _;
    match std::fs::metadata(&config.sysfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => anyhow::bail!("--path.sysfs {}: not a directory", config.sysfs.display()),
        Err(e) => anyhow::bail!("--path.sysfs {}: {e}", config.sysfs.display()),
    }
    let mut out = Vec::new();
    for r in registry() {
        if !config.collectors.contains(&r.name) {
            continue;
        }
        let (build, reads) = match r.build {
            Build::Collector(build) => (build, Reads::Kernel),
            Build::Snapshot(build) => (build, Reads::Memory),
            Build::SelfMetrics => continue,
        };
        let collector = build(config).with_context(|| format!("starting collector {}", r.name))?;
        out.push(Named {
            name: r.name,
            collector,
            reads,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sysfs_root_that_does_not_exist_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let build = |root: &std::path::Path| {
            let args = [
                "nvmeof-exporter",
                "--no-collector.io",
                "--no-collector.smart",
            ];
            let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            args.push(format!("--path.sysfs={}", root.display()));
            build_enabled(&crate::cli::parse_from(args).unwrap())
        };
        let missing = dir.path().join("sys");
        let e = build(&missing)
            .err()
            .expect("a missing root builds")
            .to_string();
        assert!(
            e.contains("--path.sysfs") && e.contains("No such file"),
            "{e}"
        );
        std::fs::write(&missing, "").unwrap();
        let e = build(&missing)
            .err()
            .expect("a file as root builds")
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
        // An empty root is a node without NVMe: no error.
        assert!(build(dir.path()).is_ok());
    }

    #[test]
    fn names_are_unique_and_families_belong_to_one_collector() {
        let reg = registry();
        let mut names: Vec<_> = reg.iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), reg.len());
        let mut fams: Vec<_> = reg
            .iter()
            .flat_map(|r| r.families)
            .map(|f| f.name)
            .collect();
        let all = fams.len();
        fams.sort();
        fams.dedup();
        assert_eq!(fams.len(), all);
    }
}
