//! What the command line decides, as plain values: `crate::cli` fills a [`Config`], `main`, the
//! collectors' registry (`crate::collectors`) and the server (`crate::http`) read it. It belongs
//! to none of them, so each depends on it and none on another through it.
//!
//! A tracer's or a collector's own options live beside it (`crate::bpf::io::IoOptions`,
//! `crate::smart::SmartOptions`); the registry builds them from this.
mod values;

use std::path::PathBuf;
use std::time::Duration;

use crate::bpf::io::load::AttachMode;

pub use values::{parse_duration, parse_threshold, ListenAddress};

/// The agent's port, written once for the two defaults below (`concat!` takes only literals).
macro_rules! default_port {
    () => {
        "9856"
    };
}

/// `--web.listen-address`'s default: every address, the agent's port.
pub const DEFAULT_LISTEN: &str = concat!(":", default_port!());

/// The tools' `--agent` default: the agent on this node at its default address.
pub const DEFAULT_AGENT: &str = concat!("127.0.0.1:", default_port!());

/// Everything the flags decide.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: ListenAddress,
    pub telemetry_path: String,
    /// `--web.config.file`: TLS and basic auth.
    pub web_config: Option<PathBuf>,
    /// `--web.max-requests`: scrapes served at once, 0 for no limit.
    pub max_requests: usize,
    /// `--web.max-connections`: connections open at once, 0 for no limit.
    pub max_connections: usize,
    pub sysfs: PathBuf,
    /// Where the controllers' character devices are.
    pub dev: PathBuf,
    pub log_level: log::LevelFilter,
    /// Names of the enabled collectors, in registry order (always-on ones included).
    pub collectors: Vec<&'static str>,
    /// Each collector's deadline within a scrape.
    pub collector_timeout: Duration,
    /// Per-queue series from the eBPF side.
    pub per_queue: bool,
    /// Protobuf scrapes get native histogram buckets only (no classic ones where native exist).
    pub native_only: bool,
    pub drain_interval: Duration,
    /// `--ebpf.max-controllers`, `--ebpf.max-queues`, `--ebpf.max-inflight`.
    pub io_limits: crate::bpf::io::MapLimits,
    /// `--ebpf.count-map-entries`, 0 for each counting map's own size.
    pub count_map_entries: u32,
    /// `--ebpf.host-wait`.
    pub host_wait: bool,
    /// The eBPF attach mode to use; `None` tries them in order.
    pub attach_mode: Option<AttachMode>,
    pub smart_interval: Duration,
    pub smart_timeout: Duration,
    /// `--trace.*`, with the one thing the flags make that two parts share: the log of slow
    /// commands, which the `io` tracer fills and the server lists.
    pub slow: crate::bpf::io::slow::SlowOptions,
}

/// `--ebpf.attach-mode`'s value as a mode: one of [`AttachMode::as_str`], or `None` for `auto`
/// (the first that attaches).
pub fn attach_mode(flag: &str) -> Option<AttachMode> {
    AttachMode::ALL.into_iter().find(|a| a.as_str() == flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_mode_names() {
        assert_eq!(attach_mode("auto"), None);
        for mode in AttachMode::ALL {
            assert_eq!(attach_mode(mode.as_str()), Some(mode));
        }
    }
}
