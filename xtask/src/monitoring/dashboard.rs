//! The Grafana dashboard: rows of panels, each with a description, a unit and thresholds, over
//! selectors built from the variables (`$cluster`, `$job`, `$instance`, `$subsystem`).
//!
//! Rules the panels keep (the deploy tests check them on the rendering):
//! - every aggregation keeps the cluster label, `job` and `instance` ([`KEEP`]): two nodes'
//!   `nvme0` stay two lines;
//! - a stat shows 0, not "No data", when healthy: `... or on() vector(0)`, whose empty `on()`
//!   adds the 0 only when the left side is empty (a bare `or vector(0)` adds a label-less 0
//!   beside per-instance values);
//! - RDMA and FC counters are per port, copied onto every controller the port carries: `max`
//!   over the controllers, never `sum`.
use serde_json::{json, Value};

use super::alerts::RDMA_HW_ERRORS;
use super::Config;

pub const PATH: &str = "dashboards/nvmeof-exporter.json";

/// The labels every aggregation keeps; `CLUSTER` stands for the configured cluster label.
pub const KEEP: &str = "CLUSTER, job, instance";

/// A query: its expression, its legend, and whether it is an instant table query.
struct Q {
    expr: String,
    legend: &'static str,
}

fn q(expr: impl Into<String>, legend: &'static str) -> Q {
    Q {
        expr: expr.into(),
        legend,
    }
}

struct Panel {
    kind: &'static str,
    title: &'static str,
    description: &'static str,
    unit: &'static str,
    /// Threshold steps after the base (green): (value, colour).
    thresholds: &'static [(f64, &'static str)],
    queries: Vec<Q>,
    /// Panel width in grid units (24 a row).
    width: u32,
}

fn panel(
    kind: &'static str,
    title: &'static str,
    unit: &'static str,
    description: &'static str,
    queries: Vec<Q>,
) -> Panel {
    Panel {
        kind,
        title,
        description,
        unit,
        thresholds: &[],
        queries,
        width: if kind == "stat" { 6 } else { 8 },
    }
}

impl Panel {
    fn thresholds(mut self, t: &'static [(f64, &'static str)]) -> Panel {
        self.thresholds = t;
        self
    }
    fn width(mut self, w: u32) -> Panel {
        self.width = w;
        self
    }
}

/// A stat of one count per node: `series` summed over the node, and 0 where it has none (the
/// rule above: `or on() vector(0)`, not a bare `or vector(0)`), so a healthy node shows 0.
fn node_stat(
    title: &'static str,
    description: &'static str,
    series: &str,
    thresholds: &'static [(f64, &'static str)],
) -> Panel {
    let expr = format!("sum by (KEEP) ({series}) or on() vector(0)");
    panel(
        "stat",
        title,
        "short",
        description,
        vec![q(expr, "{{instance}}")],
    )
    .thresholds(thresholds)
}

/// The selectors: `S` for series with a subsystem, `B` for node-wide ones.
const S: &str = "{BASE,subsystem=~\"$subsystem\"";
const B: &str = "{BASE";

/// The `p`-quantile of `histogram{selector}` over `window`, per `by` (and `KEEP`): from the native
/// buckets where Prometheus ingests them, `or` from the classic `_bucket` series where it does not.
fn native_or_classic_quantile(
    p: &str,
    by: &str,
    histogram: &str,
    selector: &str,
    window: &str,
) -> String {
    format!(
        "histogram_quantile({p}, sum by (KEEP, {by}) (rate({histogram}{selector}[{window}])))\nor\nhistogram_quantile({p}, sum by (KEEP, {by}, le) (rate({histogram}_bucket{selector}[{window}])))"
    )
}

/// p-quantile of read and write latency per controller, native buckets or classic ones.
fn quantile(p: &str) -> String {
    native_or_classic_quantile(
        p,
        "subsystem, controller, opclass",
        "nvmeof_io_latency_seconds",
        &format!("{S},opclass=~\"read|write\"}}"),
        "$__rate_interval",
    )
}

fn rows() -> Vec<(&'static str, Vec<Panel>)> {
    const RED_AT_1: &[(f64, &str)] = &[(1.0, "red")];
    vec![
        (
            "Fabric",
            vec![
                node_stat("Controllers not live",
                    "Controllers out of the live state now, per node (resetting, connecting, deleting, dead). 0 when all are live.",
                    &format!("nvmeof_subsystem_state{S},state=\"live\"}} == bool 0"), RED_AT_1),
                node_stat("Subsystems without a live path",
                    "Subsystems whose every path is down or was removed by the kernel after ctrl_loss_tmo (their I/O is stalled), per node.",
                    &format!("nvmeof_subsystem_live_paths{S}}} == bool 0"), RED_AT_1),
                node_stat("Lost paths",
                    "Paths whose controller the kernel deleted when ctrl_loss_tmo ran out, not reconnected since (nvmeof_subsystem_lost_paths), per node.",
                    &format!("nvmeof_subsystem_lost_paths{S}}}"), RED_AT_1),
                node_stat("Reconnect attempts (range)",
                    "Reconnect attempts the kernel made in the dashboard's time range, per node.",
                    &format!("increase(nvmeof_reconnect_attempts_total{S}}}[$__range])"), &[(1.0, "orange")]),
                panel("timeseries", "Live paths / expected paths", "short",
                    "Per subsystem: live paths against all paths plus the lost ones; a gap is lost redundancy.",
                    vec![
                        q(format!("nvmeof_subsystem_live_paths{S}}}"), "{{instance}} {{subsystem}} live"),
                        q(format!("nvmeof_subsystem_paths{S}}} + nvmeof_subsystem_lost_paths{S}}}"), "{{instance}} {{subsystem}} expected"),
                    ]),
                panel("timeseries", "Reconnect attempts", "ops",
                    "Reconnect attempts per second by controller: the kernel retries every reconnect_delay until ctrl_loss_tmo.",
                    vec![q(format!("sum by (KEEP, subsystem, controller) (rate(nvmeof_reconnect_attempts_total{S}}}[$__rate_interval]))"), "{{instance}} {{controller}}")])
                    .thresholds(&[(0.01, "orange")]),
                panel("table", "Controller state", "short",
                    "The current state of every controller, one row each.",
                    vec![q(format!("nvmeof_subsystem_state{S}}} == 1"), "")])
                    .width(12),
                panel("timeseries", "Failed connects", "ops",
                    "Connects of a queue that failed per second, by subsystem and reason: rejected by the subsystem, authentication (DH-HMAC-CHAP keys that do not match), other (the transport under the Connect); kept when the kernel removes the controller.",
                    vec![q(format!("sum by (KEEP, subsystem, reason) (rate(nvmeof_connect_failures_total{S}}}[$__rate_interval]))"), "{{instance}} {{subsystem}} {{reason}}")])
                    .thresholds(&[(0.01, "orange")])
                    .width(12),
                panel("table", "DH-HMAC-CHAP keys", "short",
                    "Per fabrics controller, whether a host key and a controller key are configured (1) or not (0); none where the kernel has no host authentication.",
                    vec![q(format!("nvmeof_controller_dhchap_key_configured{S}}}"), "")])
                    .width(12),
                panel("table", "State transitions (range)", "short",
                    "State transitions per controller in the dashboard's time range, by old and new state.",
                    vec![q(format!("sum by (KEEP, subsystem, controller, from, to) (increase(nvmeof_controller_state_transitions_total{S}}}[$__range]))"), "")])
                    .width(12),
            ],
        ),
        (
            "I/O",
            vec![
                panel("timeseries", "IOPS by class", "iops",
                    "Completed commands per second by controller and class (read, write, flush, other, admin, fabrics).",
                    vec![q(format!("sum by (KEEP, subsystem, controller, opclass) (rate(nvmeof_io_commands_total{S}}}[$__rate_interval]))"), "{{instance}} {{controller}} {{opclass}}")]),
                panel("timeseries", "Throughput", "Bps",
                    "Bytes per second read and written by controller (summed over its queues).",
                    vec![
                        q(format!("sum by (KEEP, subsystem, controller) (rate(nvmeof_io_read_bytes_total{S}}}[$__rate_interval]))"), "{{instance}} {{controller}} read"),
                        q(format!("sum by (KEEP, subsystem, controller) (rate(nvmeof_io_write_bytes_total{S}}}[$__rate_interval]))"), "{{instance}} {{controller}} write"),
                    ]),
                panel("timeseries", "Latency p99", "s",
                    "99th percentile of read and write completion time (submission to completion, timed in the kernel). NvmeofHighReadLatency fires above 50 ms, NvmeofHighWriteLatency above 100 ms.",
                    vec![q(quantile("0.99"), "{{instance}} {{controller}} {{opclass}}")])
                    .thresholds(&[(0.05, "orange"), (0.1, "red")]),
                panel("timeseries", "Latency p50", "s",
                    "Median read and write completion time per controller.",
                    vec![q(quantile("0.5"), "{{instance}} {{controller}} {{opclass}}")])
                    .thresholds(&[(0.01, "orange"), (0.05, "red")]),
                panel("timeseries", "Latency p99.9", "s",
                    "99.9th percentile of read and write completion time per controller: the tail that timeouts start from.",
                    vec![q(quantile("0.999"), "{{instance}} {{controller}} {{opclass}}")])
                    .thresholds(&[(0.1, "orange"), (1.0, "red")]),
                panel("timeseries", "Reads and writes slower than 32 ms", "ops",
                    "Per second, per controller, the reads and writes that took over 32 ms (native histograms: count times the fraction past 32 ms; classic: the +Inf bucket less the 2^-5 s one). Which commands they were: the agent's /debug/slow, or `nvmeof-exporter trace --slower-than=32ms` on the node, with --trace.slower-than on; the latency heatmap shows them as exemplars.",
                    vec![q(format!("histogram_count(sum by (KEEP, subsystem, controller) (rate(nvmeof_io_latency_seconds{S},opclass=~\"read|write\"}}[$__rate_interval])))\n* histogram_fraction(0.03125, +Inf, sum by (KEEP, subsystem, controller) (rate(nvmeof_io_latency_seconds{S},opclass=~\"read|write\"}}[$__rate_interval])))\nor\nsum by (KEEP, subsystem, controller) (rate(nvmeof_io_latency_seconds_bucket{S},opclass=~\"read|write\",le=\"+Inf\"}}[$__rate_interval]))\n- sum by (KEEP, subsystem, controller) (rate(nvmeof_io_latency_seconds_bucket{S},opclass=~\"read|write\",le=\"0.03125\"}}[$__rate_interval]))"), "{{instance}} {{controller}}")])
                    .thresholds(&[(1.0, "orange"), (10.0, "red")]),
                panel("timeseries", "Host wait p99 against latency p99", "s",
                    "Where a read's time goes, per controller: the 99th percentile of its wait in the host before the driver built it (bio submitted to nvme_setup_cmd: path choice, a full queue's wait for a tag, the scheduler) and of its latency after (the fabric and the device). Host wait needs the agent's --ebpf.host-wait.",
                    vec![
                        q(native_or_classic_quantile("0.99", "subsystem, controller", "nvmeof_io_host_wait_seconds", &format!("{S}}}"), "$__rate_interval"), "{{instance}} {{controller}} host wait"),
                        q(native_or_classic_quantile("0.99", "subsystem, controller", "nvmeof_io_latency_seconds", &format!("{S},opclass=\"read\"}}"), "$__rate_interval"), "{{instance}} {{controller}} read latency"),
                    ])
                    .thresholds(&[(0.01, "orange"), (0.05, "red")]),
                panel("timeseries", "Queue utilisation (mean per controller)", "percentunit",
                    "Share of time the controller's mean I/O queue had a command in flight: busy time summed over queues (per-queue mode too) over nvmeof_io_queues. NvmeofQueuesSaturated fires above 90%.",
                    vec![q(format!("sum by (KEEP, subsystem, controller) (rate(nvmeof_queue_busy_seconds_total{S}}}[$__rate_interval]))\n/ on (KEEP, subsystem, controller)\nnvmeof_io_queues{S}}}"), "{{instance}} {{controller}}")])
                    .thresholds(&[(0.7, "orange"), (0.9, "red")]),
                panel("timeseries", "Average queue depth", "short",
                    "Commands in flight on average per controller (the in-flight time integral's rate).",
                    vec![q(format!("sum by (KEEP, subsystem, controller) (rate(nvmeof_io_inflight_seconds_total{S}}}[$__rate_interval]))"), "{{instance}} {{controller}}")]),
                panel("timeseries", "In flight at last drain", "short",
                    "Commands submitted and not completed at the agent's last drain, per controller.",
                    vec![q(format!("sum by (KEEP, subsystem, controller) (nvmeof_queue_depth{S}}})"), "{{instance}} {{controller}}")]),
                panel("timeseries", "I/O queues in use", "short",
                    "I/O queues per controller that carried a command.",
                    vec![q(format!("nvmeof_io_queues{S}}}"), "{{instance}} {{controller}}")]),
            ],
        ),
        (
            "Queues (--metrics.per-queue, or controller= on the scrape)",
            vec![
                // The native histogram where Prometheus ingests it (then it stores no classic
                // buckets: 2.42 with native histograms on), else the classic buckets; `or on`
                // the node, so one node never shows both.
                panel("heatmap", "Latency distribution ($instance)", "s",
                    "Read and write completion times over time from the latency histogram (native buckets, or the classic ones where Prometheus does not ingest native histograms), one heatmap per node (repeated over $instance). With the agent's --trace.slower-than and Prometheus' exemplar storage on, the slow commands show as exemplars (seq, pid, comm: the command at /debug/slow).",
                    vec![
                        q(format!("sum by (KEEP) (increase(nvmeof_io_latency_seconds{S},opclass=~\"read|write\"}}[$__rate_interval]))\nor on (KEEP)\nsum by (KEEP, le) (increase(nvmeof_io_latency_seconds_bucket{S},opclass=~\"read|write\"}}[$__rate_interval]))"), "{{le}}"),
                    ])
                    .width(12),
                panel("table", "Slowest queues (p99 over the range, top 10)", "s",
                    "The 10 queues with the highest 99th percentile of read and write latency over the dashboard's time range; needs the queue label: the agent's --metrics.per-queue, or a scrape job with the controller= parameter for the controllers it names.",
                    // The quantile's lines indented inside topk's parentheses.
                    vec![q(format!("topk(10,\n  {}\n)", native_or_classic_quantile("0.99", "subsystem, controller, queue", "nvmeof_io_latency_seconds", &format!("{S},opclass=~\"read|write\",queue!=\"\"}}"), "$__range").replace('\n', "\n  ")), "")])
                    .thresholds(&[(0.05, "orange"), (0.1, "red")])
                    .width(12),
                panel("timeseries", "Busiest queues (top 10)", "percentunit",
                    "The 10 busiest queues: share of time each had a command in flight; needs the queue label (--metrics.per-queue, or controller= on the scrape).",
                    vec![q(format!("topk(10, sum by (KEEP, subsystem, controller, queue) (rate(nvmeof_queue_busy_seconds_total{S},queue!=\"\"}}[$__rate_interval])))"), "{{instance}} {{controller}} q{{queue}}")])
                    .thresholds(&[(0.7, "orange"), (0.9, "red")])
                    .width(12),
                panel("timeseries", "Deepest queues at last drain (top 10)", "short",
                    "The 10 queues with most commands in flight at the agent's last drain; needs the queue label (--metrics.per-queue, or controller= on the scrape).",
                    vec![q(format!("topk(10, sum by (KEEP, subsystem, controller, queue) (nvmeof_queue_depth{S},queue!=\"\"}}))"), "{{instance}} {{controller}} q{{queue}}")])
                    .width(12),
            ],
        ),
        (
            "Errors",
            vec![
                panel("timeseries", "Connection errors by kind", "ops",
                    "Errors per second by controller and kind (path, abort, transport, keep-alive, connect, timeout), and those of controllers since removed.",
                    vec![
                        q(format!("sum by (KEEP, subsystem, controller, kind) (rate(nvmeof_connection_errors_total{S}}}[$__rate_interval]))"), "{{instance}} {{controller}} {{kind}}"),
                        q(format!("sum by (KEEP, kind) (rate(nvmeof_removed_controllers_connection_errors_total{B}}}[$__rate_interval]))"), "{{instance}} removed {{kind}}"),
                    ])
                    .thresholds(&[(0.01, "orange")]),
                panel("timeseries", "Error completions by status", "ops",
                    "Completions with a non-zero NVMe status per second, by controller, class and status.",
                    vec![q(format!("sum by (KEEP, subsystem, controller, opclass, status) (rate(nvmeof_io_errors_total{S}}}[$__rate_interval]))"), "{{instance}} {{controller}} {{opclass}} {{status}}")])
                    .thresholds(&[(0.01, "orange")]),
                panel("timeseries", "TCP retransmitted segments", "ops",
                    "Segments per second retransmitted on NVMe/TCP controllers' connections. NvmeofTcpRetransmissions fires above 10/s.",
                    vec![q(format!("sum by (KEEP, subsystem, controller) (rate(nvmeof_tcp_retransmitted_segments_total{S}}}[$__rate_interval]))"), "{{instance}} {{controller}}")])
                    .thresholds(&[(1.0, "orange"), (10.0, "red")]),
                panel("timeseries", "TCP RTT", "s",
                    "Smoothed round-trip time, the largest over each NVMe/TCP controller's connections.",
                    vec![q(format!("max by (KEEP, subsystem, controller) (nvmeof_tcp_rtt_seconds{S}}})"), "{{instance}} {{controller}}")])
                    .thresholds(&[(0.001, "orange"), (0.01, "red")]),
                panel("timeseries", "RDMA error counters", "ops",
                    "Error counters of the RDMA ports per second (rxe and mlx5 hw_counters); a port's counters are copied onto each controller it carries, so the panel takes the max, never the sum.",
                    vec![q(format!("max by (KEEP, device, port, counter) (rate(nvmeof_rdma_hw_counters_total{S},counter=~\"{RDMA_HW_ERRORS}\"}}[$__rate_interval]))"), "{{instance}} {{device}}/{{port}} {{counter}}")])
                    .thresholds(&[(0.01, "orange")]),
                panel("timeseries", "RDMA traffic", "pps",
                    "Packets per second sent and received by the RDMA ports (max over the controllers each carries).",
                    vec![q(format!("max by (KEEP, device, port, counter) (rate(nvmeof_rdma_hw_counters_total{S},counter=~\"sent_pkts|rcvd_pkts\"}}[$__rate_interval]))"), "{{instance}} {{device}}/{{port}} {{counter}}")]),
                panel("timeseries", "FC link statistics", "ops",
                    "FC host statistics per second (link failures, loss of sync or signal, CRC errors, ...); one host's counters are copied onto each controller on it, so the panel takes the max.",
                    vec![q(format!("max by (KEEP, fc_host, statistic) (rate(nvmeof_fc_host_statistics_total{S}}}[$__rate_interval]))"), "{{instance}} {{fc_host}} {{statistic}}")]),
                panel("timeseries", "FC remote port statistics", "ops",
                    "FC remote port statistics per second (FPIN notifications on 5.13+), max over the controllers each remote port carries.",
                    vec![q(format!("max by (KEEP, rport, statistic) (rate(nvmeof_fc_remote_port_statistics_total{S}}}[$__rate_interval]))"), "{{instance}} {{rport}} {{statistic}}")]),
            ],
        ),
        (
            "Media (SMART)",
            vec![
                node_stat("Critical warning bits set",
                    "SMART critical warning bits set now, per node (spare, temperature, reliability, read-only, backup). 0 when healthy.",
                    &format!("nvmeof_smart_critical_warning{B}}}"), RED_AT_1),
                node_stat("Stale SMART pollers",
                    "Controllers whose SMART poller has no fresh answer (failed, hung or skipped polls), per node.",
                    &format!("nvmeof_smart_stale{B}}}"), &[(1.0, "orange")]),
                panel("timeseries", "Composite temperature", "celsius",
                    "The controller's composite temperature from its SMART / health log.",
                    vec![q(format!("nvmeof_smart_temperature_celsius{B},sensor=\"composite\"}}"), "{{instance}} {{controller}}")])
                    .thresholds(&[(70.0, "orange"), (80.0, "red")]),
                panel("timeseries", "Available spare vs threshold", "percentunit",
                    "Spare capacity left and the vendor's threshold under which NvmeofSmartSpareLow fires.",
                    vec![
                        q(format!("nvmeof_smart_available_spare_ratio{B}}}"), "{{instance}} {{controller}} spare"),
                        q(format!("nvmeof_smart_available_spare_threshold_ratio{B}}}"), "{{instance}} {{controller}} threshold"),
                    ]),
                panel("timeseries", "Endurance used", "percentunit",
                    "Percentage Used of the rated endurance; NvmeofSmartEnduranceUsed fires above 90%.",
                    vec![q(format!("nvmeof_smart_endurance_used_ratio{B}}}"), "{{instance}} {{controller}}")])
                    .thresholds(&[(0.8, "orange"), (0.9, "red")]),
                panel("timeseries", "Media errors (range)", "short",
                    "New unrecovered media errors in the dashboard's time range.",
                    vec![q(format!("increase(nvmeof_smart_media_errors_total{B}}}[$__range])"), "{{instance}} {{controller}}")])
                    .thresholds(RED_AT_1),
                panel("timeseries", "SMART data age", "s",
                    "Time since each controller's last good SMART poll; past twice the poll interval the poller counts as stale.",
                    vec![q(format!("time() - nvmeof_smart_last_success_timestamp_seconds{B}}}"), "{{instance}} {{controller}}")])
                    .thresholds(&[(120.0, "orange"), (900.0, "red")]),
            ],
        ),
        (
            "Exporter",
            vec![
                node_stat("Targets down",
                    "Exporters Prometheus cannot scrape now (up == 0), per target.",
                    "up{BASE} == bool 0", RED_AT_1),
                node_stat("eBPF not attached",
                    "1 where the eBPF programs are not attached (no latency; see the exporter's log), per node.",
                    &format!("nvmeof_exporter_ebpf_up{B}}} == bool 0"), &[(1.0, "orange")]),
                node_stat("Collectors stale",
                    "Collectors serving their last good output (failed, late or stuck), per node.",
                    &format!("nvmeof_exporter_collector_stale{B}}}"), &[(1.0, "orange")]),
                node_stat("Lost paths forgotten",
                    "Lost paths the agent dropped from its memory (over 1024): those no longer alert.",
                    &format!("nvmeof_subsystem_lost_paths_forgotten_total{B}}}"), &[(1.0, "orange")]),
                panel("timeseries", "Scrape time (p99)", "s",
                    "99th percentile of the exporter's own scrape time.",
                    vec![q(format!("histogram_quantile(0.99, sum by (KEEP, le) (rate(nvmeof_exporter_scrape_duration_seconds_bucket{B}}}[$__rate_interval])))"), "{{instance}}")])
                    .thresholds(&[(1.0, "orange"), (5.0, "red")]),
                panel("timeseries", "Collector wait per scrape", "s",
                    "How long the last scrape waited for each collector.",
                    vec![q(format!("nvmeof_exporter_collector_duration_seconds{B}}}"), "{{instance}} {{collector}}")]),
                panel("timeseries", "Drain time", "s",
                    "Time the last drain of the eBPF maps took.",
                    vec![q(format!("nvmeof_exporter_ebpf_drain_duration_seconds{B}}}"), "{{instance}}")]),
                panel("timeseries", "eBPF commands lost or untimed", "ops",
                    "Per second: completions without an in-flight entry, in-flight evictions, commands refused or out of the arrays' bounds, and slow commands not sent to /debug/slow (rate-limited, or the ring full), and events a full counting map could not count (by map). NvmeofExporterEbpfMapDrops, NvmeofExporterEbpfCommandsNotTimed, NvmeofExporterSlowCommandsNotListed and NvmeofExporterKernelMapFull fire on them.",
                    vec![
                        q(format!("sum by (KEEP, event) (rate(nvmeof_exporter_ebpf_events_total{B},event=~\"completion_unmatched|inflight_full|slot_out_of_range|read_failed|slow_rate_limited|slow_ring_full\"}}[$__rate_interval]))"), "{{instance}} {{event}}"),
                        q(format!("sum by (KEEP) (rate(nvmeof_exporter_ebpf_inflight_evictions_total{B}}}[$__rate_interval]))"), "{{instance}} evictions"),
                        q(format!("sum by (KEEP, map) (rate(nvmeof_exporter_ebpf_map_full_total{B}}}[$__rate_interval])) or sum by (KEEP, map) (rate(nvmeof_exporter_state_map_full_total{B}}}[$__rate_interval])) or sum by (KEEP, map) (rate(nvmeof_exporter_aen_map_full_total{B}}}[$__rate_interval]))"), "{{instance}} {{map}} full"),
                    ])
                    .thresholds(&[(0.01, "orange")]),
            ],
        ),
    ]
}

/// The expression with the configured labels and selectors in place.
fn finish(expr: &str, config: &Config) -> String {
    let base = format!(
        "{}=~\"$cluster\",job=~\"$job\",instance=~\"$instance\"",
        config.cluster_label
    );
    expr.replace("KEEP", &KEEP.replace("CLUSTER", &config.cluster_label))
        .replace("BASE", &base)
}

fn var(name: &str, label: &str, query: String, all: bool) -> Value {
    let mut v = json!({
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "includeAll": all,
        "multi": all,
    });
    if all {
        // .* rather than Grafana's list of values: matches series without the label too, so
        // the cluster variable is optional.
        v["allValue"] = json!(".*");
        v["current"] = json!({"text": "All", "value": "$__all"});
    }
    v
}

pub fn dashboard(config: &Config) -> Value {
    let c = &config.cluster_label;
    let mut panels = Vec::new();
    let mut id = 1;
    let mut y = 0;
    for (title, row) in rows() {
        panels.push(json!({
            "id": id, "type": "row", "title": title, "collapsed": false,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": [],
        }));
        id += 1;
        y += 1;
        let mut x = 0;
        for p in row {
            if x + p.width > 24 {
                x = 0;
                y += 8;
            }
            let mut steps = vec![json!({"color": "green", "value": null})];
            steps.extend(
                p.thresholds
                    .iter()
                    .map(|(v, c)| json!({"color": c, "value": v})),
            );
            let table = p.kind == "table";
            let targets: Vec<Value> = p
                .queries
                .iter()
                .zip('A'..)
                .map(|(q, r)| {
                    let mut t = json!({
                        "refId": r.to_string(),
                        "datasource": {"type": "prometheus", "uid": "${datasource}"},
                        "expr": finish(&q.expr, config),
                        "legendFormat": q.legend,
                    });
                    if table {
                        t["instant"] = json!(true);
                        t["format"] = json!("table");
                    }
                    if p.kind == "heatmap" {
                        t["format"] = json!("heatmap");
                        // The slow commands the agent traced, where Prometheus stores exemplars.
                        t["exemplar"] = json!(true);
                    }
                    t
                })
                .collect();
            let mut v = json!({
                "id": id,
                "type": p.kind,
                "title": p.title,
                "description": p.description,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": p.width, "x": x, "y": y},
                "fieldConfig": {
                    "defaults": {
                        "unit": p.unit,
                        "thresholds": {"mode": "absolute", "steps": steps},
                    },
                    "overrides": [],
                },
                "targets": targets,
            });
            match p.kind {
                "stat" => {
                    v["fieldConfig"]["defaults"]["color"] = json!({"mode": "thresholds"});
                    v["options"] = json!({
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
                        "colorMode": "background",
                        "graphMode": "none",
                        "textMode": "value_and_name",
                    });
                }
                "timeseries" if !p.thresholds.is_empty() => {
                    v["fieldConfig"]["defaults"]["custom"] =
                        json!({"thresholdsStyle": {"mode": "line+area"}});
                }
                "heatmap" => {
                    v["repeat"] = json!("instance");
                    v["repeatDirection"] = json!("h");
                    v["maxPerRow"] = json!(2);
                    v["options"] = json!({
                        "calculate": false,
                        "yAxis": {"unit": "s"},
                        "cellGap": 1,
                        "color": {"mode": "scheme", "scheme": "Oranges"},
                        "exemplars": {"color": "rgba(255,0,255,0.7)"},
                    });
                }
                _ => {}
            }
            panels.push(v);
            id += 1;
            x += p.width;
        }
        y += 8;
    }
    let build_info = format!("nvmeof_exporter_build_info{{{c}=~\"$cluster\"}}");
    json!({
        "title": "NVMe over Fabrics (nvmeof-exporter)",
        "description": "Generated by `cargo xtask render-deploy` from xtask/src/monitoring/dashboard.rs: edit that, not this file.",
        "uid": "nvmeof-exporter",
        "tags": ["nvme", "nvme-of", "storage"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"},
            var("cluster", "Cluster", format!("label_values(nvmeof_exporter_build_info, {c})"), true),
            var("job", "Job", format!("label_values({build_info}, job)"), true),
            var("instance", "Node", format!("label_values(nvmeof_exporter_build_info{{{c}=~\"$cluster\",job=~\"$job\"}}, instance)"), true),
            var("subsystem", "Subsystem", format!("label_values(nvmeof_subsystem_paths{{{c}=~\"$cluster\",job=~\"$job\",instance=~\"$instance\"}}, subsystem)"), true),
        ]},
        "panels": panels,
    })
}

pub fn render(config: &Config) -> String {
    serde_json::to_string_pretty(&dashboard(config)).expect("JSON") + "\n"
}

/// The values Grafana puts into a panel's query for the dashboard's variables and intervals:
/// the tests send every query as Grafana would.
#[derive(Clone, Debug)]
pub struct Vars {
    pub rate_interval: String,
    pub range: String,
    pub cluster: String,
    pub job: String,
    pub instance: String,
    pub subsystem: String,
}

impl Vars {
    /// Every variable at All, whose `allValue` is `.*`.
    pub fn all(rate_interval: &str, range: &str) -> Vars {
        let all = ".*".to_owned();
        Vars {
            rate_interval: rate_interval.to_owned(),
            range: range.to_owned(),
            cluster: all.clone(),
            job: all.clone(),
            instance: all.clone(),
            subsystem: all,
        }
    }

    /// `expr` with the variables and intervals substituted.
    pub fn apply(&self, expr: &str) -> String {
        expr.replace("$__rate_interval", &self.rate_interval)
            .replace("$__range", &self.range)
            .replace("$cluster", &self.cluster)
            .replace("$job", &self.job)
            .replace("$instance", &self.instance)
            .replace("$subsystem", &self.subsystem)
    }
}

/// A value as Grafana puts a multi-value or All-able variable into a regex matcher
/// (`prometheusRegularEscape`): regex metacharacters escaped, the backslash doubled for PromQL.
pub fn grafana_escape(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if "\\$^*{}[]'+?.()|".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_sent_as_grafana_substitutes_them() {
        let vars = Vars {
            instance: grafana_escape("10.0.0.1:9856"),
            ..Vars::all("1m", "300s")
        };
        assert_eq!(vars.instance, r"10\\.0\\.0\\.1:9856");
        assert_eq!(
            vars.apply(r#"rate(x{job=~"$job",instance=~"$instance"}[$__rate_interval])[$__range]"#),
            r#"rate(x{job=~".*",instance=~"10\\.0\\.0\\.1:9856"}[1m])[300s]"#
        );
    }
}
