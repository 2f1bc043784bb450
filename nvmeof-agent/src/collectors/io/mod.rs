//! Collector `io`: command latency, throughput, errors and queue state from the eBPF tracer, plus
//! the tracer's own health. Asks the tracer's drain thread for a drain and renders what it
//! published (`crate::bpf::io::IoState`, through the tracer's `IoSource`); the scrape itself
//! never touches the kernel, and waits for the drain at most until its deadline.
//!
//! Labels: `subsystem` (NQN) and `controller` (`nvmeN`) on every I/O series, `queue` (the hardware
//! queue id, 0 = admin) only with per-queue series, `opclass` where commands are split by class.
use std::collections::HashMap;
use std::time::Duration;

use nvmeof_common::latency::{NATIVE_SCHEMA, ZERO_THRESHOLD_SECONDS};
use nvmeof_common::{ConnErrorKind, OpClass, ProgramCounter, CONN_ERROR_KINDS};

use crate::bpf::io::model::{classic_bounds_seconds, OpView, SeriesKey};
use crate::bpf::io::slow::{Slow, LOG_CAPACITY};
use crate::bpf::io::status::status_label;
use crate::bpf::io::{IoSource, IoState};
use crate::collector::{families, Collector, ExemplarData, HistogramData, Scrape, Sink};
use crate::exposition::Native;
use crate::worker::Ticked;

families! {
    pub READ_BYTES: counter("nvmeof_io_read_bytes_total",
        "Bytes read by completed read commands: the request's byte count (with classic tracepoints, the command's block count times the namespace's LBA size).");
    pub WRITE_BYTES: counter("nvmeof_io_write_bytes_total",
        "Bytes written by completed write commands: the request's byte count (with classic tracepoints, the command's block count times the namespace's LBA size).");
    pub COMMANDS: counter("nvmeof_io_commands_total",
        "Completed commands by class (read, write, flush, other, admin, fabrics), timed from setup to completion.");
    pub ERRORS: counter("nvmeof_io_errors_total",
        "Completions with a non-zero NVMe status, by class and status (name from the NVMe status code, or hex).");
    pub CONNECTION_ERRORS: counter("nvmeof_connection_errors_total",
        "Connection errors by kind: error completions by status class (path_error, host_path_error, abort, transport_error, command_error), keep_alive_failure, connect_failure (fabrics commands), and timeout (completed after the command timeout), counted by the completion program.");
    pub REMOVED_CONNECTION_ERRORS: counter("nvmeof_removed_controllers_connection_errors_total",
        "Connection errors (kinds as nvmeof_connection_errors_total) of controllers that no longer exist: a controller whose Connect the target refused never appears, the others' counts leave with their series.");
    pub LATENCY: histogram("nvmeof_io_latency_seconds",
        "Command latency from nvme_setup_cmd to nvme_complete_rq since start. Native buckets (schema 4, protobuf) are the kernel's own; classic le buckets at powers of two of a second are exact sums of them.");
    pub INFLIGHT_SECONDS: counter("nvmeof_io_inflight_seconds_total",
        "Integral of the number of commands in flight over time (sum of latencies); its rate is the average queue depth.");
    pub QUEUE_DEPTH: gauge("nvmeof_queue_depth",
        "Commands set up and not yet completed at the last drain.");
    pub QUEUE_BUSY: counter("nvmeof_queue_busy_seconds_total",
        "Time with at least one command in flight, summed over queues; per queue its rate is the utilisation.");
    pub IO_QUEUES: gauge("nvmeof_io_queues",
        "I/O queues (qid > 0) of the controller that have carried a command since the tracer started.");
    pub EBPF_UP: gauge("nvmeof_exporter_ebpf_up",
        "1 when the eBPF programs are loaded and attached, 0 when the exporter runs without them (see its log).");
    pub EBPF_WAITING: gauge("nvmeof_exporter_ebpf_waiting_for_nvme_core",
        "1 while the eBPF programs wait for nvme_core to load (the agent started first); they attach when it does, without a restart.");
    pub PROGRAMS_ATTACHED: gauge("nvmeof_exporter_ebpf_programs_attached",
        "1 for each eBPF program attached to its tracepoint.");
    pub ATTACH_MODE: gauge("nvmeof_exporter_ebpf_attach_mode",
        "1 for the way the programs are hooked: tp_btf or raw_tracepoint (commands keyed by request), or tracepoint (keyed by command id; misses nvme-tcp writes larger than the inline data).");
    pub EVICTIONS: counter("nvmeof_exporter_ebpf_inflight_evictions_total",
        "In-flight entries replaced by a new command on the same queue tag: the earlier command's completion was never seen.");
    pub EVENTS: counter("nvmeof_exporter_ebpf_events_total",
        "Events counted by the eBPF programs themselves, by event.");
    pub HOST_WAIT: histogram("nvmeof_io_host_wait_seconds",
        "Time a command spent in the host before the driver built it: from its bio's submission (block_bio_queue) to nvme_setup_cmd (path choice, waiting for a free tag, the scheduler). Only with --ebpf.host-wait.");
    pub MAP_FULL: counter("nvmeof_exporter_ebpf_map_full_total",
        "Errors the eBPF programs could not count by status (STATUSES) or by kind (CONN_ERRORS) because that map was full (raise --ebpf.count-map-entries).");
    pub DRAIN_DURATION: gauge("nvmeof_exporter_ebpf_drain_duration_seconds",
        "How long the last drain of the eBPF maps took.");
    pub PROGRAM_RUN_SECONDS: counter("nvmeof_exporter_ebpf_program_run_seconds_total",
        "Time spent in each eBPF program (kernel bpf_prog_info; only moves while kernel.bpf_stats_enabled=1).");
    pub PROGRAM_RUNS: counter("nvmeof_exporter_ebpf_program_runs_total",
        "Runs of each eBPF program (kernel bpf_prog_info; only moves while kernel.bpf_stats_enabled=1).");
    pub PROGRAM_MISSES: counter("nvmeof_exporter_ebpf_program_misses_total",
        "Events each eBPF program did not see: the kernel skipped it because it was already running on that CPU (bpf_prog_info recursion_misses, Linux 5.12; always counted).");
}

/// The `event` label of a program counter; `None` for the one with its own family.
pub fn event_label(c: ProgramCounter) -> Option<&'static str> {
    Some(match c {
        ProgramCounter::InflightReplaced => return None,
        ProgramCounter::InflightFull => "inflight_full",
        ProgramCounter::CompletionUnmatched => "completion_unmatched",
        ProgramCounter::SlotOutOfRange => "slot_out_of_range",
        ProgramCounter::LbaSizeUnknown => "lba_size_unknown",
        ProgramCounter::ReadFailed => "read_failed",
        ProgramCounter::InflightNewKey => "inflight_new_key",
        ProgramCounter::SlowRateLimited => "slow_rate_limited",
        ProgramCounter::SlowRingFull => "slow_ring_full",
        ProgramCounter::HostWaitUnmatched => "host_wait_unmatched",
        ProgramCounter::InflightCollision => "inflight_collision",
        ProgramCounter::InflightExpired => "inflight_expired",
    })
}

pub struct IoCollector {
    /// Dropping the collector drops the source, which stops the drain and detaches.
    source: IoSource,
}

impl IoCollector {
    /// Renders what `source` publishes (`crate::bpf::io::start`).
    pub fn new(source: IoSource) -> Self {
        IoCollector { source }
    }

    /// A collector over a fixed state (tests, golden files).
    pub fn from_state(state: IoState) -> Self {
        IoCollector::new(IoSource::fixed(state))
    }
}

/// Nanoseconds to seconds; a division, so that round figures print round.
fn secs(ns: f64) -> f64 {
    ns / 1e9
}

/// Label values of one series: subsystem, controller and, per queue, the queue.
struct Labels {
    subsystem: String,
    controller: String,
    queue: Option<String>,
}

impl Labels {
    fn new(state: &IoState, ctrl_id: u32, qid: Option<u16>) -> Self {
        Labels {
            subsystem: state.subsystems.get(&ctrl_id).cloned().unwrap_or_default(),
            controller: format!("nvme{ctrl_id}"),
            queue: qid.map(|q| q.to_string()),
        }
    }

    /// The pairs, with `extra` appended.
    fn with<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut v = vec![
            ("subsystem", self.subsystem.as_str()),
            ("controller", self.controller.as_str()),
        ];
        if let Some(q) = &self.queue {
            v.push(("queue", q.as_str()));
        }
        v.extend_from_slice(extra);
        v
    }
}

/// A series' latency: classic buckets at powers of two of a second (exact sums of kernel
/// buckets) and the native buckets, which are the kernel's own.
fn latency_histogram(o: &OpView) -> (Vec<(f64, u64)>, Native) {
    let classic = classic_bounds_seconds()
        .zip(o.classic_cumulative())
        .collect();
    let (zero_count, positive) = o.native_buckets();
    let native = Native {
        schema: NATIVE_SCHEMA,
        zero_threshold: ZERO_THRESHOLD_SECONDS,
        zero_count,
        positive,
    };
    (classic, native)
}

/// The slow commands each latency series points at, by (controller, class): the latest of the
/// log, oldest first.
struct SlowExemplars(HashMap<(u32, OpClass), Vec<Slow>>);

impl SlowExemplars {
    fn new(state: &IoState) -> Self {
        let mut by = HashMap::<_, Vec<Slow>>::new();
        let recent = state.slow.as_ref().map(|log| log.recent(0, LOG_CAPACITY));
        for e in recent.into_iter().flatten() {
            if let Some(class) = OpClass::from_repr(e.cmd.opclass) {
                by.entry((e.cmd.ctrl_id, class)).or_default().push(e);
            }
        }
        SlowExemplars(by)
    }

    /// The exemplars of the series of `key`: its controller's and class's slow commands, of its
    /// queue when it has one. Labels: the command's sequence number at `/debug/slow` and its
    /// submitting task; timestamp: its completion.
    fn of(&self, key: &SeriesKey) -> Vec<ExemplarData> {
        let Some(slow) = self.0.get(&(key.ctrl_id, key.class)) else {
            return Vec::new();
        };
        slow.iter()
            .filter(|e| key.qid.is_none_or(|q| q == e.cmd.qid))
            .map(|e| ExemplarData {
                value: secs(e.cmd.latency_ns as f64),
                labels: vec![
                    ("seq", e.seq.to_string()),
                    ("pid", e.cmd.ctx.pid.to_string()),
                    ("comm", e.comm()),
                ],
                timestamp: e.started + Duration::from_nanos(e.cmd.latency_ns),
            })
            .collect()
    }
}

/// The I/O series; the controllers for which `per_queue` says so per queue, the others summed
/// over their queues.
fn collect_io(state: &IoState, per_queue: &dyn Fn(u32) -> bool, sink: &mut Sink) {
    let exemplars = SlowExemplars::new(state);
    for o in state.view.ops_at(per_queue) {
        let l = Labels::new(state, o.key.ctrl_id, o.key.qid);
        let class = o.key.class.as_str();
        match o.key.class {
            OpClass::Read => sink.counter(&READ_BYTES, &l.with(&[]), o.bytes as f64),
            OpClass::Write => sink.counter(&WRITE_BYTES, &l.with(&[]), o.bytes as f64),
            _ => {}
        }
        let with_class = l.with(&[("opclass", class)]);
        let (classic, native) = latency_histogram(&o);
        let data = HistogramData {
            count: o.commands,
            sum: secs(o.latency_sum_ns as f64),
            classic: &classic,
            native: Some(native),
            exemplars: &exemplars.of(&o.key),
        };
        sink.histogram(&LATENCY, &with_class, data);
    }
    for o in &state.host_wait {
        let l = Labels::new(state, o.key.ctrl_id, None);
        let (classic, native) = latency_histogram(o);
        let data = HistogramData {
            count: o.commands,
            sum: secs(o.latency_sum_ns as f64),
            classic: &classic,
            native: Some(native),
            exemplars: &[],
        };
        sink.histogram(&HOST_WAIT, &l.with(&[]), data);
    }
    for &((ctrl_id, class), n) in &state.view.commands {
        let l = Labels::new(state, ctrl_id, None);
        sink.counter(&COMMANDS, &l.with(&[("opclass", class.as_str())]), n as f64);
    }
    for &(ctrl_id, ns) in &state.view.inflight_ns {
        let l = Labels::new(state, ctrl_id, None);
        sink.counter(&INFLIGHT_SECONDS, &l.with(&[]), secs(ns as f64));
    }
    for (k, q) in &state.view.queues_at(per_queue) {
        let l = Labels::new(state, k.ctrl_id, k.qid);
        sink.gauge(&QUEUE_DEPTH, &l.with(&[]), q.depth as f64);
        sink.counter(&QUEUE_BUSY, &l.with(&[]), secs(q.busy_ns as f64));
    }
    for &(ctrl_id, n) in &state.view.io_queues {
        let l = Labels::new(state, ctrl_id, None);
        sink.gauge(&IO_QUEUES, &l.with(&[]), n as f64);
    }
    // Every kind of every controller, from 0: a missing series would hide the first error.
    let mut conn: std::collections::BTreeMap<u32, [u64; CONN_ERROR_KINDS]> = state
        .subsystems
        .keys()
        .map(|&c| (c, [0; CONN_ERROR_KINDS]))
        .collect();
    for (k, count) in &state.view.conn_errors {
        if let Some(kind) = ConnErrorKind::from_repr(k.kind) {
            conn.entry(k.ctrl_id).or_default()[kind as usize] = *count;
        }
    }
    for kind in ConnErrorKind::ALL {
        sink.counter(
            &REMOVED_CONNECTION_ERRORS,
            &[("kind", kind.as_str())],
            state.view.removed_conn_errors[kind as usize] as f64,
        );
    }
    for (ctrl_id, counts) in conn {
        let l = Labels::new(state, ctrl_id, None);
        for kind in ConnErrorKind::ALL {
            sink.counter(
                &CONNECTION_ERRORS,
                &l.with(&[("kind", kind.as_str())]),
                counts[kind as usize] as f64,
            );
        }
    }
    for (k, count) in &state.view.statuses {
        let Some(class) = OpClass::from_repr(k.opclass) else {
            continue;
        };
        let l = Labels::new(state, k.ctrl_id, None);
        let status = status_label(k.status, class);
        sink.counter(
            &ERRORS,
            &l.with(&[("opclass", class.as_str()), ("status", &status)]),
            *count as f64,
        );
    }
}

fn collect_self(state: &IoState, sink: &mut Sink) {
    for name in &state.attached {
        sink.gauge(&PROGRAMS_ATTACHED, &[("program", name)], 1.0);
    }
    if let Some(mode) = state.mode {
        sink.gauge(&ATTACH_MODE, &[("mode", mode)], 1.0);
    }
    let counters = &state.view.counters;
    sink.counter(
        &EVICTIONS,
        &[],
        counters[ProgramCounter::InflightReplaced as usize] as f64,
    );
    let events = &state.view.events;
    sink.counter(&EVENTS, &[("event", "setup")], events.setups as f64);
    sink.counter(&EVENTS, &[("event", "complete")], events.completions as f64);
    for c in ProgramCounter::ALL {
        if let Some(event) = event_label(c) {
            sink.counter(&EVENTS, &[("event", event)], counters[c as usize] as f64);
        }
    }
    if let Some(s) = state.drain_seconds {
        sink.gauge(&DRAIN_DURATION, &[], s);
    }
    for (map, n) in &state.map_full {
        sink.counter(&MAP_FULL, &[("map", map)], *n as f64);
    }
    for p in &state.programs {
        sink.counter(
            &PROGRAM_RUN_SECONDS,
            &[("program", p.name)],
            secs(p.run_time_ns as f64),
        );
        sink.counter(&PROGRAM_RUNS, &[("program", p.name)], p.run_count as f64);
        sink.counter(&PROGRAM_MISSES, &[("program", p.name)], p.misses as f64);
    }
}

/// How long a collection outside a scrape (no deadline) waits for the drain.
const REFRESH_OUTSIDE_A_SCRAPE: Duration = Duration::from_secs(1);

impl Collector for IoCollector {
    fn collect(&self, scrape: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
        // Drain now, for this scrape, in three quarters of its time (the rest renders). A drain
        // that does not finish in time fails this run: the scrape then serves the last good
        // output, marked stale, as for a collector that missed its deadline.
        let within = scrape.time_left(REFRESH_OUTSIDE_A_SCRAPE) * 3 / 4;
        if self.source.refresh(within) == Ticked::Late {
            anyhow::bail!(
                "the eBPF maps' drain did not finish within {within:?} (raise --collector.timeout, \
                 or the scraper's timeout)"
            );
        }
        let state = self.source.read();
        sink.gauge(&EBPF_UP, &[], if state.up { 1.0 } else { 0.0 });
        sink.gauge(
            &EBPF_WAITING,
            &[],
            if state.waiting_for_nvme { 1.0 } else { 0.0 },
        );
        if state.up {
            let detail = scrape.detail();
            let per_queue = |ctrl_id| state.per_queue || detail.per_queue(ctrl_id);
            collect_io(&state, &per_queue, sink);
            collect_self(&state, sink);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
