//! The alerting rules: one [`Rule`] per alert. `%S` in an expression stands for the job
//! selector ([`super::Config::job_selector`]); every selector carries it, so that another
//! job's series (a second exporter, a test) never feed these rules. Aggregations keep `job`
//! and `instance`: two nodes' `nvme0` stay two alerts.
use super::{quoted, Config};

pub const PATH: &str = "deploy/prometheus/alerts.yml";

pub struct Rule {
    pub group: &'static str,
    pub alert: &'static str,
    pub expr: &'static str,
    pub for_: Option<&'static str>,
    pub severity: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
}

/// The RDMA driver counters that count errors: rxe's (`drivers/infiniband/sw/rxe/rxe_hw_counters.c`:
/// `*_err`, `out_of_seq_request`, `duplicate_request`, `link_downed`) and mlx5's (`*_err`,
/// `*_error`, `out_of_sequence`, `out_of_buffer`, `duplicate_request`, `local_ack_timeout_err`).
pub const RDMA_HW_ERRORS: &str =
    ".*_err|.*_error|.*_errors|out_of_seq.*|out_of_buffer|duplicate_request|link_downed";
/// The IB port counters (`ports/N/counters`) that count errors.
pub const RDMA_PORT_ERRORS: &str =
    ".*_errors?|symbol_error|link_downed|link_error_recovery|port_xmit_discards|VL15_dropped";

pub fn rules() -> Vec<Rule> {
    let r = |group, alert, expr, for_, severity, summary, description| Rule {
        group,
        alert,
        expr,
        for_,
        severity,
        summary,
        description,
    };
    vec![
        r(
            "nvmeof-fabric",
            "NvmeofControllerNotLive",
            r#"nvmeof_subsystem_state{%S,state="live"} == 0"#,
            Some("1m"),
            "critical",
            "NVMe-oF controller {{ $labels.controller }} on {{ $labels.instance }} is not live",
            "Subsystem {{ $labels.subsystem }}: the controller has been out of the live state for a minute (resetting, connecting, deleting or dead); its I/O waits or goes to other paths.",
        ),
        r(
            "nvmeof-fabric",
            "NvmeofSubsystemNoLivePath",
            // Lost paths count: a subsystem whose last path the kernel removed after
            // ctrl_loss_tmo stays at 0 live paths instead of leaving /metrics.
            "nvmeof_subsystem_live_paths{%S} == 0\nand on (job, instance, subsystem)\n(nvmeof_subsystem_paths{%S} + nvmeof_subsystem_lost_paths{%S}) > 0",
            Some("30s"),
            "critical",
            "No live path to {{ $labels.subsystem }} on {{ $labels.instance }}",
            "Every path of the subsystem is down or was removed by the kernel after ctrl_loss_tmo: I/O to its namespaces is queued or failing.",
        ),
        r(
            "nvmeof-fabric",
            "NvmeofSubsystemPathDown",
            // paths alone drops with a path the kernel removed, and the difference would
            // resolve just when the path is gone for good: lost paths keep it.
            "nvmeof_subsystem_live_paths{%S}\n< on (job, instance, subsystem)\n(nvmeof_subsystem_paths{%S} + nvmeof_subsystem_lost_paths{%S})",
            Some("2m"),
            "warning",
            "{{ $labels.subsystem }} on {{ $labels.instance }} runs on fewer paths than it has",
            "Multipath redundancy is reduced: {{ $value }} live path(s); paths out of live and paths the kernel removed (nvmeof_subsystem_lost_paths) count as down.",
        ),
        r(
            "nvmeof-fabric",
            "NvmeofPathLost",
            "nvmeof_subsystem_lost_paths{%S} > 0",
            None,
            "warning",
            "{{ $value }} path(s) to {{ $labels.subsystem }} on {{ $labels.instance }} removed by the kernel",
            "A controller stayed out of live until ctrl_loss_tmo ran out and the kernel deleted it: the path does not come back by itself. Reconnect it once the target answers; the alert resolves when a controller to the same address is back.",
        ),
        r(
            "nvmeof-fabric",
            "NvmeofReconnecting",
            "increase(nvmeof_reconnect_attempts_total{%S}[10m]) > 0",
            None,
            "warning",
            "{{ $labels.controller }} on {{ $labels.instance }} is reconnecting",
            "The kernel made reconnect attempts to {{ $labels.subsystem }} in the last 10 minutes: the controller lost its connection and is retried every reconnect_delay until ctrl_loss_tmo.",
        ),
        r(
            "nvmeof-fabric",
            "NvmeofControllerFlapping",
            r#"sum by (job, instance, subsystem, controller) (increase(nvmeof_controller_state_transitions_total{%S,from="live"}[30m])) > 3"#,
            None,
            "warning",
            "{{ $labels.controller }} on {{ $labels.instance }} keeps leaving live",
            "More than 3 departures from live in 30 minutes on {{ $labels.subsystem }}: an unstable link, target or keep-alive.",
        ),
        r(
            "nvmeof-errors",
            "NvmeofCommandTimeouts",
            r#"increase(nvmeof_connection_errors_total{%S,kind="timeout"}[10m]) > 0"#,
            None,
            "critical",
            "Commands timed out on {{ $labels.controller }} ({{ $labels.instance }})",
            "Commands to {{ $labels.subsystem }} outlived nvme_core's io_timeout in the last 10 minutes: the kernel aborted them and reset the controller.",
        ),
        r(
            "nvmeof-errors",
            "NvmeofConnectionErrors",
            r#"sum by (job, instance, subsystem, controller, kind) (rate(nvmeof_connection_errors_total{%S,kind!="timeout"}[5m])) > 0"#,
            Some("5m"),
            "warning",
            "{{ $labels.kind }} errors on {{ $labels.controller }} ({{ $labels.instance }})",
            "Errors of kind {{ $labels.kind }} on {{ $labels.subsystem }} for 5 minutes; docs/metrics.md says what each kind counts.",
        ),
        r(
            "nvmeof-errors",
            "NvmeofAuthenticationFailures",
            // A failed `nvme connect` to a subsystem never connected before makes a new series
            // at 1, which increase() cannot see: the second half catches it.
            "sum by (job, instance, subsystem) (increase(nvmeof_connect_failures_total{%S,reason=\"authentication\"}[10m])) > 0\nor\nsum by (job, instance, subsystem) (nvmeof_connect_failures_total{%S,reason=\"authentication\"} unless nvmeof_connect_failures_total{%S,reason=\"authentication\"} offset 10m) > 0",
            None,
            "warning",
            "Authentication to {{ $labels.subsystem }} failing on {{ $labels.instance }}",
            "In-band authentication (DH-HMAC-CHAP) of a Connect to {{ $labels.subsystem }} failed in the last 10 minutes: the host's and the subsystem's keys do not match (a key rotated on one side only), or one side lacks a key the other requires. The kernel does not retry such a controller.",
        ),
        r(
            "nvmeof-errors",
            "NvmeofConnectFailures",
            r#"increase(nvmeof_removed_controllers_connection_errors_total{%S,kind="connect_failure"}[10m]) > 0"#,
            None,
            "warning",
            "Connect attempts refused on {{ $labels.instance }}",
            "A target refused a controller's Connect in the last 10 minutes (wrong host NQN, subsystem no longer offered on the port, ...).",
        ),
        r(
            "nvmeof-errors",
            "NvmeofTcpRetransmissions",
            "sum by (job, instance, subsystem, controller) (rate(nvmeof_tcp_retransmitted_segments_total{%S}[5m])) > 10",
            Some("10m"),
            "warning",
            "NVMe/TCP retransmissions on {{ $labels.controller }} ({{ $labels.instance }})",
            "More than 10 segments per second retransmitted for 10 minutes on {{ $labels.subsystem }}: packet loss on the path.",
        ),
        r(
            "nvmeof-errors",
            "NvmeofRdmaTransportErrors",
            // max, not sum: a port's counters are copied onto every controller it carries.
            "max by (job, instance, device, port, counter) (increase(nvmeof_rdma_hw_counters_total{%S,counter=~\"RDMA_HW\"}[10m])) > 0\nor\nmax by (job, instance, device, port, counter) (increase(nvmeof_rdma_port_counters_total{%S,counter=~\"RDMA_PORT\"}[10m])) > 0",
            None,
            "warning",
            "RDMA {{ $labels.counter }} on {{ $labels.device }} port {{ $labels.port }} ({{ $labels.instance }})",
            "The RDMA port's error counter {{ $labels.counter }} grew in the last 10 minutes: retries, sequence errors or drops on the fabric.",
        ),
        r(
            "nvmeof-performance",
            "NvmeofHighReadLatency",
            // Native buckets where Prometheus ingests them (--enable-feature=native-histograms),
            // the classic le buckets otherwise: the same p99 either way.
            "(\n  histogram_quantile(0.99, sum by (job, instance, subsystem, controller) (rate(nvmeof_io_latency_seconds{%S,opclass=\"read\"}[5m])))\n  or\n  histogram_quantile(0.99, sum by (job, instance, subsystem, controller, le) (rate(nvmeof_io_latency_seconds_bucket{%S,opclass=\"read\"}[5m])))\n) > 0.05",
            Some("10m"),
            "warning",
            "p99 read latency above 50 ms on {{ $labels.controller }} ({{ $labels.instance }})",
            "The 99th percentile of read completion time over 5 minutes has stayed above 50 ms for 10 minutes on {{ $labels.subsystem }}.",
        ),
        r(
            "nvmeof-performance",
            "NvmeofHighWriteLatency",
            "(\n  histogram_quantile(0.99, sum by (job, instance, subsystem, controller) (rate(nvmeof_io_latency_seconds{%S,opclass=\"write\"}[5m])))\n  or\n  histogram_quantile(0.99, sum by (job, instance, subsystem, controller, le) (rate(nvmeof_io_latency_seconds_bucket{%S,opclass=\"write\"}[5m])))\n) > 0.1",
            Some("10m"),
            "warning",
            "p99 write latency above 100 ms on {{ $labels.controller }} ({{ $labels.instance }})",
            "The 99th percentile of write completion time over 5 minutes has stayed above 100 ms for 10 minutes on {{ $labels.subsystem }}.",
        ),
        r(
            "nvmeof-performance",
            "NvmeofQueuesSaturated",
            // Summed per controller first: with --metrics.per-queue the busy time carries a
            // queue label that nvmeof_io_queues has not, and a plain division matched nothing.
            "sum by (job, instance, subsystem, controller) (rate(nvmeof_queue_busy_seconds_total{%S}[5m]))\n/ on (job, instance, subsystem, controller)\nnvmeof_io_queues{%S} > 0.9",
            Some("15m"),
            "warning",
            "{{ $labels.controller }}'s I/O queues busy over 90% of the time ({{ $labels.instance }})",
            "The mean I/O queue of {{ $labels.subsystem }} has had a command in flight over 90% of the time for 15 minutes: the controller is the bottleneck.",
        ),
        r(
            "nvmeof-media",
            "NvmeofSmartCriticalWarning",
            "nvmeof_smart_critical_warning{%S} == 1",
            None,
            "critical",
            "SMART critical warning {{ $labels.bit }} on {{ $labels.controller }} ({{ $labels.instance }})",
            "The controller's SMART / health log sets critical warning bit {{ $labels.bit }}.",
        ),
        r(
            "nvmeof-media",
            "NvmeofSmartMediaErrors",
            "increase(nvmeof_smart_media_errors_total{%S}[1h]) > 0",
            None,
            "warning",
            "New media errors on {{ $labels.controller }} ({{ $labels.instance }})",
            "The controller reported unrecovered data integrity errors in the last hour.",
        ),
        r(
            "nvmeof-media",
            "NvmeofSmartSpareLow",
            // Below, as the NVMe critical warning's bit 0 says, not at: Linux's nvmet and
            // QEMU's controller report 0% spare with a 0% threshold (the lab saw both), and
            // `<=` fired on every one of them.
            "nvmeof_smart_available_spare_ratio{%S} < nvmeof_smart_available_spare_threshold_ratio{%S}",
            None,
            "critical",
            "Available spare below its threshold on {{ $labels.controller }} ({{ $labels.instance }})",
            "The spare capacity left for worn-out blocks has fallen below the vendor's threshold: plan the replacement.",
        ),
        r(
            "nvmeof-media",
            "NvmeofSmartEnduranceUsed",
            "nvmeof_smart_endurance_used_ratio{%S} > 0.9",
            None,
            "warning",
            "{{ $labels.controller }} has used {{ $value | humanizePercentage }} of its rated endurance",
            "Percentage Used of the SMART / health log is past 90% on {{ $labels.instance }}.",
        ),
        r(
            "nvmeof-media",
            "NvmeofSmartStale",
            // Not for a controller that is not live: its polls are skipped by design and
            // NvmeofControllerNotLive says so already.
            "nvmeof_smart_stale{%S} == 1\nunless on (job, instance, controller)\nnvmeof_subsystem_state{%S,state=\"live\"} == 0",
            Some("15m"),
            "warning",
            "SMART poller of {{ $labels.controller }} ({{ $labels.instance }}) is stale",
            "Polls fail, hang or are skipped while the controller is live (permission, timeout, device gone): see nvmeof_smart_poll_errors_total and the exporter's log.",
        ),
        r(
            "nvmeof-exporter",
            "NvmeofExporterDown",
            "up{%S} == 0",
            Some("5m"),
            "warning",
            "nvmeof-exporter on {{ $labels.instance }} does not answer",
            "Prometheus could not scrape the exporter for 5 minutes: every other NVMe-oF alert of this node is blind.",
        ),
        r(
            "nvmeof-exporter",
            "NvmeofExporterEbpfDown",
            // Not while the agent waits for nvme_core: a node nobody has connected yet has
            // nothing to time.
            "nvmeof_exporter_ebpf_up{%S} == 0\nunless on (job, instance)\nnvmeof_exporter_ebpf_waiting_for_nvme_core{%S} == 1",
            Some("10m"),
            "warning",
            "No eBPF latency on {{ $labels.instance }}: the exporter serves sysfs metrics only",
            "See the exporter's log for why (permission, BTF, tracepoints); state transitions are then polled and counted as a lower bound.",
        ),
        r(
            "nvmeof-exporter",
            "NvmeofExporterEbpfCommandsNotTimed",
            r#"sum by (job, instance, event) (increase(nvmeof_exporter_ebpf_events_total{%S,event=~"slot_out_of_range|inflight_full|read_failed"}[10m])) > 0"#,
            None,
            "warning",
            "{{ $labels.event }} on {{ $labels.instance }}: commands go untimed",
            "slot_out_of_range: a controller instance or queue id past the eBPF arrays' bounds (the exporter's log names them): raise --ebpf.max-controllers or --ebpf.max-queues. inflight_full: the in-flight map refused a command. read_failed: a kernel field could not be read (see the log).",
        ),
        r(
            "nvmeof-exporter",
            "NvmeofExporterSlowCommandsNotListed",
            r#"sum by (job, instance, event) (increase(nvmeof_exporter_ebpf_events_total{%S,event=~"slow_rate_limited|slow_ring_full"}[10m])) > 0"#,
            None,
            "warning",
            "{{ $labels.event }} on {{ $labels.instance }}: slow commands go unlisted",
            "Slow-command tracing (--trace.slower-than) sent fewer commands than passed the threshold. slow_rate_limited: a CPU reached --trace.slow-per-cpu in a second (raise it, or the threshold). slow_ring_full: the exporter read the ring too slowly (see its log).",
        ),
        r(
            "nvmeof-exporter",
            "NvmeofExporterKernelMapFull",
            "sum by (job, instance, map) (increase(nvmeof_exporter_ebpf_map_full_total{%S}[10m])) > 0\nor\nsum by (job, instance, map) (increase(nvmeof_exporter_state_map_full_total{%S}[10m])) > 0\nor\nsum by (job, instance, map) (increase(nvmeof_exporter_aen_map_full_total{%S}[10m])) > 0",
            None,
            "warning",
            "eBPF map {{ $labels.map }} is full on {{ $labels.instance }}: events go uncounted",
            "A kernel map that counts by key refused a new key, so those events (errors by status or kind, state transitions, reconnects, asynchronous events or ANA transitions) are counted as lost instead. Raise --ebpf.count-map-entries; the exporter's log says what the map lost.",
        ),
        r(
            "nvmeof-exporter",
            "NvmeofExporterEbpfMapDrops",
            // Ratios, not any increase: the start sees unmatched completions of commands
            // issued before the programs attached.
            "sum by (job, instance) (rate(nvmeof_exporter_ebpf_events_total{%S,event=\"completion_unmatched\"}[10m]))\n/ sum by (job, instance) (rate(nvmeof_exporter_ebpf_events_total{%S,event=\"complete\"}[10m])) > 0.01\nor\nsum by (job, instance) (rate(nvmeof_exporter_ebpf_inflight_evictions_total{%S}[10m]))\n/ sum by (job, instance) (rate(nvmeof_exporter_ebpf_events_total{%S,event=\"setup\"}[10m])) > 0.01",
            Some("15m"),
            "warning",
            "The eBPF in-flight map loses commands on {{ $labels.instance }}",
            "For 15 minutes over 1% of completions found no in-flight entry, or over 1% of setups evicted one: those commands are not timed. Classic tracepoint mode on NVMe/TCP writes larger than the inline data (a documented gap), or more commands in flight than the map holds.",
        ),
        r(
            "nvmeof-exporter",
            "NvmeofExporterCollectorStale",
            "nvmeof_exporter_collector_stale{%S} == 1",
            Some("10m"),
            "warning",
            "Collector {{ $labels.collector }} on {{ $labels.instance }} serves stale output",
            "The collector failed, missed its deadline or is stuck: its last good output is served. The exporter's log says why.",
        ),
    ]
}

/// The anchor of a rule's section in docs/runbook.md: the heading `## NvmeofFoo` as GitHub
/// and most Markdown renderers spell it.
pub fn anchor(alert: &str) -> String {
    alert.to_lowercase()
}

/// The expression with the selector in place.
pub fn expr(rule: &Rule, config: &Config) -> String {
    rule.expr
        .replace("%S", &config.job_selector)
        .replace("RDMA_HW", RDMA_HW_ERRORS)
        .replace("RDMA_PORT", RDMA_PORT_ERRORS)
}

pub fn render(config: &Config) -> String {
    let mut out = String::from(
        "# Alerting rules for nvmeof-exporter: is the fabric connected, is anything reconnecting or\n\
         # failing, is a queue slow or saturated, is the media healthy, and is the exporter itself whole.\n\
         # GENERATED by `cargo xtask render-deploy` from xtask/src/monitoring/alerts.rs: edit that.\n\
         # Every selector carries the job selector below; the Helm chart replaces it with\n\
         # prometheusRule.jobSelector, and runbook_url's base with prometheusRule.runbookUrl.\n",
    );
    out += &format!("# Job selector: {}\ngroups:\n", config.job_selector);
    let rules = rules();
    let mut groups: Vec<&str> = rules.iter().map(|r| r.group).collect();
    groups.dedup();
    for group in groups {
        out += &format!("  - name: {group}\n    rules:\n");
        for rule in rules.iter().filter(|r| r.group == group) {
            out += &format!("      - alert: {}\n        expr: |-\n", rule.alert);
            for line in expr(rule, config).lines() {
                out += &format!("          {line}\n");
            }
            if let Some(f) = rule.for_ {
                out += &format!("        for: {f}\n");
            }
            out += &format!(
                "        labels:\n          severity: {}\n        annotations:\n",
                rule.severity
            );
            out += &format!("          summary: {}\n", quoted(rule.summary));
            out += &format!("          description: {}\n", quoted(rule.description));
            let url = format!("{}#{}", config.runbook_url, anchor(rule.alert));
            out += &format!("          runbook_url: {}\n", quoted(&url));
        }
    }
    out
}
