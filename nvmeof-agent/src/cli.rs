//! Command-line flags, named as node_exporter names them (`--web.listen-address`,
//! `--collector.NAME` / `--no-collector.NAME`, ...), parsed into a [`Config`] (`crate::config`).
//!
//! Per-collector flags come from the registry (`crate::collectors::registry`), so a new collector
//! gets its flags by being registered. Every invalid value is a clap error: a clear message and
//! exit code 2, never a panic.
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::collectors::Registration;
use crate::config::{parse_duration, parse_threshold, Config, ListenAddress};

impl Config {
    /// The defaults, as if no flag were given: for tests and tools.
    pub fn defaults() -> Config {
        parse_from(["nvmeof-exporter"]).expect("the defaults parse")
    }
}

fn parse_telemetry_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') || s == "/" || s == "/healthz" {
        return Err(format!(
            "{s:?}: must start with / and differ from / and /healthz"
        ));
    }
    Ok(s.to_owned())
}

fn parse_log_level(s: &str) -> Result<log::LevelFilter, String> {
    match s {
        "debug" | "info" | "warn" | "error" | "trace" => Ok(s.parse().expect("known level")),
        _ => Err(format!("{s:?}: one of error, warn, info, debug, trace")),
    }
}

fn flag(name: String, help: String) -> Arg {
    Arg::new(name.clone())
        .long(name)
        .action(ArgAction::SetTrue)
        .help(help)
}

/// A `--NAME[=BOOL]` flag, false by default, true when given alone.
fn bool_option(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .value_name("BOOL")
        .num_args(0..=1)
        .default_value("false")
        .default_missing_value("true")
        .value_parser(clap::value_parser!(bool))
        .help(help)
}

/// The command with every flag, per-collector flags generated from `registry`.
pub fn command(registry: &[Registration]) -> Command {
    let mut cmd = Command::new("nvmeof-exporter")
        .version(env!("CARGO_PKG_VERSION"))
        // A flag given twice takes its last value, as node_exporter's flags do: a wrapper or a
        // DaemonSet's extra args can override what a base command line set.
        .args_override_self(true)
        .about("Prometheus exporter for NVMe over Fabrics hosts: fabric state from sysfs, per-queue latency from eBPF.")
        .arg(
            Arg::new("web.listen-address")
                .long("web.listen-address")
                .value_name("ADDR")
                .default_value(crate::config::DEFAULT_LISTEN)
                .value_parser(ListenAddress::from_str)
                .help("Address to listen on: :PORT, HOST:PORT or [IPv6]:PORT."),
        )
        .arg(
            Arg::new("web.telemetry-path")
                .long("web.telemetry-path")
                .value_name("PATH")
                .default_value("/metrics")
                .value_parser(parse_telemetry_path)
                .help("Path under which to expose metrics."),
        )
        .arg(
            Arg::new("web.config.file")
                .long("web.config.file")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Configuration file for TLS and basic auth, in exporter-toolkit's format (tls_server_config, basic_auth_users)."),
        )
        .arg(
            Arg::new("web.max-requests")
                .long("web.max-requests")
                .value_name("N")
                .default_value("40")
                .value_parser(clap::value_parser!(u32))
                .help("Maximum number of scrapes served at once; past it the metrics path answers 503. 0 means no limit."),
        )
        .arg(
            Arg::new("web.max-connections")
                .long("web.max-connections")
                .value_name("N")
                .default_value("1000")
                .value_parser(clap::value_parser!(u32))
                .help("Maximum number of open connections; past it new connections wait in the listen backlog until one closes. Lowered to fit the open-file limit. 0 means no limit."),
        )
        .arg(
            Arg::new("path.sysfs")
                .long("path.sysfs")
                .value_name("DIR")
                .default_value("/sys")
                .value_parser(clap::value_parser!(PathBuf))
                .help("sysfs mountpoint."),
        )
        .arg(
            Arg::new("path.dev")
                .long("path.dev")
                .value_name("PATH")
                .default_value("/dev")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Where the NVMe controllers' character devices are (admin commands for SMART)."),
        )
        .arg(
            Arg::new("log.level")
                .long("log.level")
                .value_name("LEVEL")
                .default_value("info")
                .value_parser(parse_log_level)
                .help("Only log messages with the given severity or above: error, warn, info, debug, trace."),
        )
        .arg(
            Arg::new("collector.timeout")
                .long("collector.timeout")
                .value_name("DURATION")
                .default_value("50ms")
                .value_parser(parse_duration)
                .help("Deadline of each collector within a scrape; a late collector serves its last good output, marked stale."),
        )
        .arg(flag(
            "collector.disable-defaults".into(),
            "Disable every collector not enabled explicitly by --collector.NAME.".into(),
        ))
        .arg(bool_option(
            "metrics.per-queue",
            "Export per-queue series from the eBPF side (8 controllers x 64 queues multiply the series count).",
        ))
        .arg(bool_option(
            "metrics.native-only",
            "In protobuf scrapes, send histograms that have native buckets without their classic buckets (text scrapes are unchanged).",
        ))
        .arg(
            Arg::new("ebpf.drain-interval")
                .long("ebpf.drain-interval")
                .value_name("DURATION")
                .default_value("30s")
                .value_parser(parse_duration)
                .help("Every scrape drains the eBPF maps; this is the longest time between two drains when nobody scrapes (controllers that are gone are forgotten then)."),
        )
        .arg(
            Arg::new("ebpf.max-controllers")
                .long("ebpf.max-controllers")
                .value_name("N")
                .default_value("0")
                .value_parser(clap::value_parser!(u32).range(0..=4096))
                .help("Controller instances (nvme0 .. nvmeN-1) the eBPF arrays hold; 0: twice the highest present, at least 16. Commands past it are counted as slot_out_of_range, not timed."),
        )
        .arg(
            Arg::new("ebpf.max-queues")
                .long("ebpf.max-queues")
                .value_name("N")
                .default_value("0")
                .value_parser(clap::value_parser!(u32).range(0..=65536))
                .help("Queue ids (0 = admin .. N-1) per controller the eBPF arrays hold; 0: the possible CPUs plus one, or more if a present controller has more. Commands past it are counted as slot_out_of_range, not timed."),
        )
        .arg(
            Arg::new("ebpf.max-inflight")
                .long("ebpf.max-inflight")
                .value_name("N")
                .default_value("0")
                .value_parser(clap::value_parser!(u32).range(0..=(1 << 22)))
                .help("Slots of the eBPF in-flight array (40 bytes each, rounded up to a power of two), which commands in flight share by a hash of their key; 0: the requests of the controllers present at start (queues x queue size), between 16384 and 262144. A command whose slot another holds costs a hash lookup in an LRU map beside it: counted as inflight_collision, and logged once past 1% of commands."),
        )
        .arg(
            Arg::new("ebpf.count-map-entries")
                .long("ebpf.count-map-entries")
                .value_name("N")
                .default_value("0")
                .value_parser(clap::value_parser!(u32).range(0..=(1 << 20)))
                .help("Entries of each eBPF map that counts by key (STATUSES, CONN_ERRORS, TRANSITIONS, RECONNECTS, AEN_EVENTS, ANA_TRANSITIONS); 0: each map's own (1024 or 4096). An event whose new key finds its map full is not counted there: counted per map in nvmeof_exporter_*_map_full_total, and logged once."),
        )
        .arg(
            Arg::new("ebpf.host-wait")
                .long("ebpf.host-wait")
                .action(ArgAction::SetTrue)
                .help("Also measure each command's wait in the host, from its bio's submission (block:block_bio_queue) to nvme_setup_cmd: the path choice, a full queue's wait for a tag, the scheduler (nvmeof_io_host_wait_seconds). Costs every bio of every block device an LRU map update (BENCHMARKS.md); tp_btf and raw_tracepoint modes only."),
        )
        .arg(
            Arg::new("trace.slower-than")
                .long("trace.slower-than")
                .value_name("DURATION")
                .default_value("0s")
                .value_parser(parse_threshold)
                .help("Commands this slow or slower are traced one by one (namespace, LBA, command id, submitting task) and listed at /debug/slow; 0s: off. On, every command's setup also keeps its identity (BENCHMARKS.md prices it)."),
        )
        .arg(
            Arg::new("trace.slow-per-cpu")
                .long("trace.slow-per-cpu")
                .value_name("N")
                .default_value("100")
                .value_parser(clap::value_parser!(u32).range(1..=100_000))
                .help("Most slow commands one CPU sends a second; the rest are counted (nvmeof_exporter_ebpf_events_total{event=\"slow_rate_limited\"})."),
        )
        .arg(
            Arg::new("ebpf.attach-mode")
                .long("ebpf.attach-mode")
                .value_name("MODE")
                .default_value("auto")
                .value_parser(["auto", "tp_btf", "raw_tracepoint", "tracepoint"])
                .help("How the eBPF programs are hooked: auto tries tp_btf, raw_tracepoint, then tracepoint (which misses nvme-tcp writes larger than the inline data)."),
        )
        .arg(
            Arg::new("smart.interval")
                .long("smart.interval")
                .value_name("DURATION")
                .default_value("60s")
                .value_parser(parse_duration)
                .help("Time between two SMART / health polls of one controller (in the background)."),
        )
        .arg(
            Arg::new("smart.timeout")
                .long("smart.timeout")
                .value_name("DURATION")
                .default_value("10s")
                .value_parser(parse_duration)
                .help("Timeout of each admin command; the kernel recovers a controller whose command times out, so keep it well above the fabric's latency."),
        );
    for r in registry.iter().filter(|r| !r.always_on) {
        let on = format!("collector.{}", r.name);
        let off = format!("no-collector.{}", r.name);
        let default = if r.default_enabled {
            "enabled"
        } else {
            "disabled"
        };
        cmd = cmd
            .arg(
                flag(
                    on.clone(),
                    format!(
                        "Enable the {} collector: {} (default: {default}).",
                        r.name, r.help
                    ),
                )
                .overrides_with(off.clone()),
            )
            .arg(
                flag(off, format!("Disable the {} collector.", r.name))
                    .overrides_with(on)
                    .hide(true),
            );
    }
    cmd
}

fn config(m: &ArgMatches, registry: &[Registration]) -> Config {
    let disable_defaults = m.get_flag("collector.disable-defaults");
    let collectors = registry
        .iter()
        .filter(|r| {
            r.always_on
                || m.get_flag(&format!("collector.{}", r.name))
                || (r.default_enabled
                    && !disable_defaults
                    && !m.get_flag(&format!("no-collector.{}", r.name)))
        })
        .map(|r| r.name)
        .collect();
    Config {
        listen: defaulted(m, "web.listen-address"),
        telemetry_path: defaulted(m, "web.telemetry-path"),
        web_config: m.get_one::<PathBuf>("web.config.file").cloned(),
        max_requests: defaulted::<u32>(m, "web.max-requests") as usize,
        max_connections: defaulted::<u32>(m, "web.max-connections") as usize,
        sysfs: defaulted(m, "path.sysfs"),
        dev: defaulted(m, "path.dev"),
        log_level: defaulted(m, "log.level"),
        collectors,
        collector_timeout: defaulted(m, "collector.timeout"),
        per_queue: defaulted(m, "metrics.per-queue"),
        native_only: defaulted(m, "metrics.native-only"),
        drain_interval: defaulted(m, "ebpf.drain-interval"),
        io_limits: crate::bpf::io::MapLimits {
            max_controllers: defaulted(m, "ebpf.max-controllers"),
            max_queues: defaulted(m, "ebpf.max-queues"),
            max_inflight: defaulted(m, "ebpf.max-inflight"),
        },
        count_map_entries: defaulted(m, "ebpf.count-map-entries"),
        host_wait: m.get_flag("ebpf.host-wait"),
        attach_mode: crate::config::attach_mode(&defaulted::<String>(m, "ebpf.attach-mode")),
        smart_interval: defaulted(m, "smart.interval"),
        smart_timeout: defaulted(m, "smart.timeout"),
        slow: crate::bpf::io::slow::SlowOptions {
            threshold: defaulted(m, "trace.slower-than"),
            per_cpu_per_second: defaulted(m, "trace.slow-per-cpu"),
            log: Default::default(),
        },
    }
}

/// The value of flag `id`, which has a default: clap fills it in when the flag is not given, so
/// only a flag declared without one (or as another type) can fail here, on every run alike.
fn defaulted<T: Clone + Send + Sync + 'static>(m: &ArgMatches, id: &str) -> T {
    m.get_one::<T>(id)
        .unwrap_or_else(|| panic!("--{id} is declared with a default"))
        .clone()
}

/// Parses `args` (the program name first). `--help` and `--version` come back as errors of
/// their own kind, which `Error::exit` prints with exit code 0.
pub fn parse_from<I, T>(args: I) -> Result<Config, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let registry = crate::collectors::registry();
    let m = command(&registry).try_get_matches_from(args)?;
    Ok(config(&m, &registry))
}

/// Parses the process's arguments; on an invalid flag prints the error and exits with code 2.
pub fn parse() -> Config {
    parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every collector on by default, in registry order.
    const DEFAULT_COLLECTORS: [&str; 11] = [
        "controller",
        "subsystem",
        "namespace",
        "state",
        "aen",
        "io",
        "smart",
        "rdma",
        "tcp",
        "fc",
        "exporter",
    ];

    /// The config `flags` give, after a program name; a failed test, naming them, where they are
    /// refused.
    fn parsed(flags: &[&str]) -> Config {
        parse_from(std::iter::once("nvmeof-exporter").chain(flags.iter().copied()))
            .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
    }

    #[test]
    fn defaults() {
        let c = Config::defaults();
        assert_eq!(
            c.listen,
            ListenAddress {
                host: None,
                port: 9856
            }
        );
        assert_eq!(c.telemetry_path, "/metrics");
        assert_eq!(c.sysfs, PathBuf::from("/sys"));
        assert_eq!(c.collector_timeout, Duration::from_millis(50));
        assert_eq!((c.max_requests, c.max_connections), (40, 1000));
        assert_eq!(c.drain_interval, Duration::from_secs(30));
        assert_eq!(c.io_limits, crate::bpf::io::MapLimits::default());
        assert_eq!(c.attach_mode, None);
        assert!(!c.per_queue);
        assert!(!c.native_only);
        assert_eq!(c.log_level, log::LevelFilter::Info);
        assert_eq!(c.collectors, DEFAULT_COLLECTORS);
        assert_eq!(c.dev, PathBuf::from("/dev"));
        assert_eq!(c.smart_interval, Duration::from_secs(60));
        assert_eq!(c.smart_timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_flag_given_twice_takes_its_last_value() {
        let c = parsed(&["--collector.timeout=1s", "--collector.timeout=50ms"]);
        assert_eq!(c.collector_timeout, Duration::from_millis(50));
    }

    #[test]
    fn collector_flags_last_one_wins() {
        let c = parsed(&[
            "--no-collector.namespace",
            "--collector.namespace",
            "--no-collector.controller",
        ]);
        assert_eq!(c.collectors, DEFAULT_COLLECTORS[1..]);
        let only = parsed(&["--collector.disable-defaults", "--collector.subsystem"]);
        assert_eq!(only.collectors, ["subsystem", "exporter"]);
    }

    #[test]
    fn invalid_flags_are_usage_errors_with_exit_code_2() {
        for args in [
            &["x", "--collector.timeout", "fast"][..],
            &["x", "--web.listen-address", "nowhere"],
            &["x", "--web.telemetry-path", "metrics"],
            &["x", "--log.level", "loud"],
            &["x", "--collector.nosuch"],
            &["x", "--no-collector.exporter"],
            &["x", "--metrics.per-queue=maybe"],
            &["x", "--web.max-requests=-1"],
            &["x", "--web.max-connections=many"],
        ] {
            let e = parse_from(args.iter().copied()).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
        let help = parse_from(["x", "--help"]).unwrap_err();
        assert_eq!(help.exit_code(), 0);
        assert!(help.to_string().contains("--collector.controller"));
    }

    #[test]
    fn ebpf_flags() {
        let c = parsed(&[
            "--metrics.per-queue",
            "--metrics.native-only",
            "--ebpf.drain-interval=250ms",
            "--ebpf.max-controllers=64",
            "--ebpf.max-queues=257",
            "--ebpf.max-inflight=524288",
        ]);
        assert!(c.per_queue);
        assert!(c.native_only);
        assert_eq!(c.drain_interval, Duration::from_millis(250));
        let l = c.io_limits;
        assert_eq!((l.max_controllers, l.max_queues), (64, 257));
        assert_eq!(l.max_inflight, 524288);
        assert_eq!(c.attach_mode, None);
    }

    #[test]
    fn trace_flags() {
        let off = Config::defaults();
        assert!(!off.slow.is_on());
        assert_eq!(off.slow.per_cpu_per_second, 100);
        let c = parsed(&["--trace.slower-than=10ms", "--trace.slow-per-cpu=5"]);
        assert_eq!(c.slow.trace().threshold_ns, 10_000_000);
        assert_eq!(c.slow.per_cpu_per_second, 5);
        for bad in ["--trace.slow-per-cpu=0", "--trace.slower-than=soon"] {
            assert!(parse_from(["x", bad]).is_err(), "{bad}");
        }
    }
}
