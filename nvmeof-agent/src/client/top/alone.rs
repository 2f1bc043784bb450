//! `top` on a node where no agent runs: the collectors it reads (`io`, `controller`, `state`)
//! built in this process, as the agent builds them, and scraped into the same text the agent
//! would serve, so that one parser and one model serve both ways. The eBPF programs are then
//! this process's own (CAP_BPF and CAP_PERFMON, or root) and count from its start; they go
//! with it.
use std::net::ToSocketAddrs as _;

use anyhow::{bail, Context as _};

use crate::{cli, collectors, exposition, scrape::Scraper};

/// The agent's flags for what `top` shows: every controller per queue, and a deadline that a
/// drain under load keeps (the agent's 50 ms default is for a scrape that must not wait).
const FLAGS: &[&str] = &[
    "nvmeof-exporter",
    "--collector.disable-defaults",
    "--collector.io",
    "--collector.controller",
    "--collector.state",
    "--metrics.per-queue",
    "--collector.timeout=5s",
];

pub struct Alone {
    scraper: Scraper,
}

impl Alone {
    /// Loads and attaches the programs and starts the collectors; an error when the programs
    /// cannot be loaded here (rights, or a kernel without the nvme tracepoints).
    pub fn start(runtime: &tokio::runtime::Runtime) -> anyhow::Result<Alone> {
        let config = cli::parse_from(FLAGS).context("the in-process collectors' flags")?;
        // Collectors may start tasks of their own: they need the runtime at hand.
        let _in = runtime.enter();
        let built = collectors::build_enabled(&config)?;
        let alone = Alone {
            scraper: Scraper::new(built, config.collector_timeout).with_per_queue(config.per_queue),
        };
        let text = alone.text(runtime);
        let (up, _) = super::parse::parse(&text, |n| n == "nvmeof_exporter_ebpf_up");
        if !up.iter().any(|s| s.value == 1.0) {
            bail!(
                "the eBPF programs did not load in this process (they need CAP_BPF and \
                 CAP_PERFMON, or root, and the nvme tracepoints)"
            );
        }
        Ok(alone)
    }

    /// One scrape of the in-process collectors, as the agent's `/metrics` text: the io
    /// collector drains the maps as it runs, as in the agent.
    pub fn text(&self, runtime: &tokio::runtime::Runtime) -> String {
        exposition::text::encode(&runtime.block_on(self.scraper.scrape()))
    }
}

/// Whether a failed scrape of `agent` means that no agent runs on this node: the connection was
/// refused at a loopback address. Anything else (a timeout, a remote host, an error answer) is
/// an agent's problem to report, not a reason to load programs here.
pub fn no_local_agent(agent: &str, e: &anyhow::Error) -> bool {
    let refused = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    let local = agent
        .to_socket_addrs()
        .is_ok_and(|mut a| a.all(|a| a.ip().is_loopback()));
    refused && local
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refused_loopback_agent_means_none_runs() {
        let refused = || {
            anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
                .context("connecting to the agent")
        };
        assert!(no_local_agent("127.0.0.1:9856", &refused()));
        assert!(no_local_agent("[::1]:9856", &refused()));
        assert!(!no_local_agent("192.0.2.1:9856", &refused()));
        let timeout = anyhow::anyhow!("no answer within 5s");
        assert!(!no_local_agent("127.0.0.1:9856", &timeout));
    }

    #[test]
    fn the_flags_are_the_agents() {
        let c = cli::parse_from(FLAGS).unwrap();
        assert!(c.per_queue);
        for name in ["io", "controller", "state"] {
            assert!(c.collectors.contains(&name), "{:?}", c.collectors);
        }
        // Nothing that polls devices or sockets for what top does not show.
        for name in ["smart", "tcp", "rdma", "namespace"] {
            assert!(!c.collectors.contains(&name), "{:?}", c.collectors);
        }
    }
}
