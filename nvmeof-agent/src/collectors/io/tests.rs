//! The collector over drained states built by hand, and over a tracer that could not start.
use super::*;
use crate::bpf::io::model::{Events, IoView, QueueSeriesKey, QueueView, SeriesKey};
use crate::bpf::ProgramRun;
use crate::test_support as support;
use nvmeof_common::{latency_bucket, StatusKey, PROGRAM_COUNTERS};

/// A drained state (the model keeps reads and writes per queue, always), rendered per queue
/// for every controller with `per_queue` (`--metrics.per-queue`).
fn state(per_queue: bool) -> IoState {
    let qid = Some(1);
    // 3 reads of 100 µs, one of 200 µs.
    let buckets = vec![
        (latency_bucket(100_000) as u16, 3),
        (latency_bucket(200_000) as u16, 1),
    ];
    let mut counters = [0u64; PROGRAM_COUNTERS as usize];
    counters[ProgramCounter::InflightReplaced as usize] = 2;
    IoState {
        up: true,
        waiting_for_nvme: false,
        per_queue,
        attached: vec!["nvme_setup_cmd", "nvme_complete_rq"],
        mode: Some("tracepoint"),
        view: IoView {
            ops: vec![OpView {
                key: SeriesKey {
                    ctrl_id: 0,
                    qid,
                    class: OpClass::Read,
                },
                commands: 4,
                bytes: 16384,
                errors: 1,
                latency_sum_ns: 500_000,
                buckets,
            }],
            queues: vec![(
                QueueSeriesKey { ctrl_id: 0, qid },
                QueueView {
                    depth: 2,
                    busy_ns: 1_500_000_000,
                },
            )],
            inflight_ns: vec![(0, 500_000)],
            commands: vec![((0, OpClass::Read), 4)],
            statuses: vec![(
                StatusKey {
                    ctrl_id: 0,
                    status: 0x281,
                    opclass: OpClass::Read as u8,
                    _pad: 0,
                },
                1,
            )],
            io_queues: vec![(0, 2)],
            conn_errors: vec![(
                nvmeof_common::ConnErrorKey {
                    ctrl_id: 0,
                    kind: ConnErrorKind::Abort as u8,
                    _pad: [0; 3],
                },
                7,
            )],
            // A refused connect of a controller that never appeared.
            removed_conn_errors: {
                let mut r = [0; CONN_ERROR_KINDS];
                r[ConnErrorKind::ConnectFailure as usize] = 1;
                r
            },
            counters,
            events: Events {
                setups: 10,
                completions: 9,
            },
        },
        subsystems: [(0, "nqn.2026-01.io.example:disk1".to_owned())].into(),
        programs: vec![ProgramRun {
            name: "nvme_setup_cmd",
            run_time_ns: 2_000_000,
            run_count: 10,
            misses: 1,
        }],
        drain_seconds: Some(0.002),
        map_full: vec![("STATUSES", 0), ("CONN_ERRORS", 3)],
        host_wait: vec![],
        slow: None,
    }
}

fn collect(s: IoState) -> String {
    support::render(&IoCollector::from_state(s))
}

/// A slow command of a series is its latency histogram's exemplar in OpenMetrics, on the
/// bucket that counts it, with its sequence number at /debug/slow; text has none.
#[test]
fn slow_commands_are_exemplars_of_their_series() {
    use crate::bpf::io::slow::SlowLog;
    use nvmeof_common::slow::SlowCommand;
    let log = std::sync::Arc::new(SlowLog::default());
    let mut cmd = SlowCommand {
        latency_ns: 200_000,
        ctrl_id: 0,
        qid: 1,
        opclass: OpClass::Read as u8,
        ..Default::default()
    };
    cmd.ctx.pid = 42;
    cmd.ctx.comm[..3].copy_from_slice(b"fio");
    log.push(cmd, std::time::UNIX_EPOCH + Duration::from_secs(1_000));
    // Another controller's, and a write: not this series'.
    log.push(SlowCommand { ctrl_id: 1, ..cmd }, std::time::UNIX_EPOCH);
    log.push(
        SlowCommand {
            opclass: OpClass::Write as u8,
            ..cmd
        },
        std::time::UNIX_EPOCH,
    );
    for per_queue in [false, true] {
        let mut s = state(per_queue);
        s.slow = Some(log.clone());
        let families = support::collect(&IoCollector::from_state(s)).into_families();
        let om = crate::exposition::openmetrics::encode(&families);
        let with: Vec<&str> = om.lines().filter(|l| l.contains(" # {")).collect();
        let queue = if per_queue { ",queue=\"1\"" } else { "" };
        assert_eq!(
            with,
            [format!(
                "nvmeof_io_latency_seconds_bucket{{subsystem=\"nqn.2026-01.io.example:disk1\",\
                 controller=\"nvme0\"{queue},opclass=\"read\",le=\"0.000244140625\"}} 4 \
                 # {{seq=\"1\",pid=\"42\",comm=\"fio\"}} 0.0002 1000.000"
            )],
            "{om}"
        );
        assert!(!crate::exposition::text::encode(&families).contains(" # {"));
    }
    // Native histograms carry the latest few, not every slow command of the series.
    for _ in 0..50 {
        log.push(cmd, std::time::UNIX_EPOCH);
    }
    let mut s = state(false);
    s.slow = Some(log.clone());
    let families = support::collect(&IoCollector::from_state(s)).into_families();
    let latency = support::family(&families, "nvmeof_io_latency_seconds");
    let h = latency.metric[0].histogram.as_ref().unwrap();
    assert_eq!(h.exemplars.len(), crate::collector::NATIVE_EXEMPLARS);
    assert_eq!(
        h.exemplars.last().unwrap().label[0].value(),
        (log.received()).to_string()
    );
}

#[test]
fn host_wait_is_a_histogram_per_controller() {
    let mut s = state(false);
    s.host_wait = vec![OpView {
        key: SeriesKey {
            ctrl_id: 0,
            qid: None,
            class: OpClass::OtherIo,
        },
        commands: 3,
        bytes: 0,
        errors: 0,
        latency_sum_ns: 3_000_000,
        buckets: vec![(latency_bucket(1_000_000) as u16, 3)],
    }];
    let text = collect(s);
    let l = r#"subsystem="nqn.2026-01.io.example:disk1",controller="nvme0""#;
    assert!(
        text.contains(&format!("nvmeof_io_host_wait_seconds_count{{{l}}} 3")),
        "{text}"
    );
    assert!(
        text.contains(&format!("nvmeof_io_host_wait_seconds_sum{{{l}}} 0.003")),
        "{text}"
    );
    // 1 ms lies under the classic bound 2^-9 s (1.95 ms), not under 2^-10 s (0.98 ms).
    assert!(
        text.contains(&format!(
            "nvmeof_io_host_wait_seconds_bucket{{{l},le=\"0.001953125\"}} 3"
        )),
        "{text}"
    );
}

#[test]
fn per_controller_series() {
    let text = collect(state(false));
    let l = r#"subsystem="nqn.2026-01.io.example:disk1",controller="nvme0""#;
    for line in [
        format!("nvmeof_io_read_bytes_total{{{l}}} 16384"),
        format!("nvmeof_io_commands_total{{{l},opclass=\"read\"}} 4"),
        format!("nvmeof_io_latency_seconds_sum{{{l},opclass=\"read\"}} 0.0005"),
        format!("nvmeof_io_latency_seconds_count{{{l},opclass=\"read\"}} 4"),
        format!(
            "nvmeof_io_latency_seconds_bucket{{{l},opclass=\"read\",le=\"0.00006103515625\"}} 0"
        ),
        format!(
            "nvmeof_io_latency_seconds_bucket{{{l},opclass=\"read\",le=\"0.0001220703125\"}} 3"
        ),
        format!("nvmeof_io_latency_seconds_bucket{{{l},opclass=\"read\",le=\"0.000244140625\"}} 4"),
        format!("nvmeof_io_latency_seconds_bucket{{{l},opclass=\"read\",le=\"32\"}} 4"),
        format!("nvmeof_io_latency_seconds_bucket{{{l},opclass=\"read\",le=\"+Inf\"}} 4"),
        format!("nvmeof_io_inflight_seconds_total{{{l}}} 0.0005"),
        format!("nvmeof_queue_depth{{{l}}} 2"),
        format!("nvmeof_queue_busy_seconds_total{{{l}}} 1.5"),
        format!("nvmeof_io_queues{{{l}}} 2"),
        format!("nvmeof_io_errors_total{{{l},opclass=\"read\",status=\"read_error\"}} 1"),
        format!("nvmeof_connection_errors_total{{{l},kind=\"abort\"}} 7"),
        format!("nvmeof_connection_errors_total{{{l},kind=\"timeout\"}} 0"),
        "nvmeof_removed_controllers_connection_errors_total{kind=\"connect_failure\"} 1".to_owned(),
        "nvmeof_removed_controllers_connection_errors_total{kind=\"abort\"} 0".to_owned(),
        "nvmeof_exporter_ebpf_up 1".to_owned(),
        "nvmeof_exporter_ebpf_programs_attached{program=\"nvme_complete_rq\"} 1".to_owned(),
        "nvmeof_exporter_ebpf_attach_mode{mode=\"tracepoint\"} 1".to_owned(),
        "nvmeof_exporter_ebpf_inflight_evictions_total 2".to_owned(),
        "nvmeof_exporter_ebpf_events_total{event=\"setup\"} 10".to_owned(),
        "nvmeof_exporter_ebpf_events_total{event=\"slot_out_of_range\"} 0".to_owned(),
        "nvmeof_exporter_ebpf_drain_duration_seconds 0.002".to_owned(),
        "nvmeof_exporter_ebpf_program_run_seconds_total{program=\"nvme_setup_cmd\"} 0.002"
            .to_owned(),
        "nvmeof_exporter_ebpf_program_runs_total{program=\"nvme_setup_cmd\"} 10".to_owned(),
        "nvmeof_exporter_ebpf_program_misses_total{program=\"nvme_setup_cmd\"} 1".to_owned(),
        "# TYPE nvmeof_io_latency_seconds histogram".to_owned(),
    ] {
        assert!(
            text.lines().any(|t| t == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(!text.contains("queue=\""), "{text}");
    assert!(!text.contains("nvmeof_io_write_bytes_total{"), "{text}");
    // Every kind of the one controller, from 0.
    assert_eq!(text.matches("nvmeof_connection_errors_total{").count(), 8);
    // 23 bounds (2^-17 s .. 2^5 s) plus +Inf.
    assert_eq!(
        text.matches("nvmeof_io_latency_seconds_bucket{").count(),
        24
    );
}

/// The protobuf side: the kernel's buckets as native ones, beside the classic ones.
#[test]
fn latency_carries_the_kernel_buckets_as_native_ones() {
    let sink = support::collect(&IoCollector::from_state(state(false)));
    let families = sink.into_families();
    let f = support::family(&families, "nvmeof_io_latency_seconds");
    let h = f.metric[0].histogram.as_ref().unwrap();
    assert_eq!((h.sample_count, h.sample_sum), (Some(4), Some(0.0005)));
    assert_eq!(h.schema, Some(4));
    assert_eq!(h.zero_threshold, Some(1.0 / 1_048_576.0));
    assert_eq!(h.zero_count, Some(0));
    // ceil(16·log2(t / 1 s)): 100 µs is in bucket -212, 200 µs in -196; 15 empty between.
    let spans: Vec<(i32, u32)> = h
        .positive_span
        .iter()
        .map(|s| (s.offset.unwrap(), s.length.unwrap()))
        .collect();
    assert_eq!(spans, vec![(-212, 1), (15, 1)]);
    assert_eq!(h.positive_delta, vec![3, -2]);
    assert_eq!(h.bucket.len(), 23, "the classic buckets too");
}

#[test]
fn per_queue_series_carry_the_queue() {
    let text = collect(state(true));
    let l = r#"subsystem="nqn.2026-01.io.example:disk1",controller="nvme0",queue="1""#;
    for line in [
        format!("nvmeof_io_read_bytes_total{{{l}}} 16384"),
        format!("nvmeof_queue_busy_seconds_total{{{l}}} 1.5"),
        format!("nvmeof_io_latency_seconds_count{{{l},opclass=\"read\"}} 4"),
        // Errors, the queue count, commands and in-flight time stay per controller (the
        // per-queue histogram's count and sum carry them per queue).
        r#"nvmeof_io_commands_total{subsystem="nqn.2026-01.io.example:disk1",controller="nvme0",opclass="read"} 4"#.to_owned(),
        r#"nvmeof_io_inflight_seconds_total{subsystem="nqn.2026-01.io.example:disk1",controller="nvme0"} 0.0005"#.to_owned(),
        r#"nvmeof_io_errors_total{subsystem="nqn.2026-01.io.example:disk1",controller="nvme0",opclass="read",status="read_error"} 1"#.to_owned(),
        r#"nvmeof_io_queues{subsystem="nqn.2026-01.io.example:disk1",controller="nvme0"} 2"#.to_owned(),
    ] {
        assert!(text.lines().any(|t| t == line), "missing {line:?} in\n{text}");
    }
}

/// Down, the collector says up 0 and whether it waits for nvme_core, and nothing else.
#[test]
fn down_is_only_up_zero_and_whether_it_waits() {
    let samples = |state: IoState| -> Vec<String> {
        collect(state)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        samples(IoState::default()),
        [
            "nvmeof_exporter_ebpf_up 0",
            "nvmeof_exporter_ebpf_waiting_for_nvme_core 0"
        ]
    );
    let waiting = IoState {
        waiting_for_nvme: true,
        ..Default::default()
    };
    assert_eq!(
        samples(waiting),
        [
            "nvmeof_exporter_ebpf_up 0",
            "nvmeof_exporter_ebpf_waiting_for_nvme_core 1"
        ]
    );
}

#[test]
fn every_emitted_family_is_declared() {
    let text = collect(state(true));
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(
            FAMILIES.iter().any(|f| f.name == name),
            "{name} not declared"
        );
    }
    // No write bytes, and no host wait (off).
    assert_eq!(text.matches("# TYPE ").count(), FAMILIES.len() - 2);
}

/// A tracer that could not start (a tracefs without the nvme events: what a host without
/// nvme_core looks like) still gives a collector, and it says `ebpf_up 0`.
#[test]
fn start_without_nvme_tracepoints_reports_down() {
    let (_tracefs, opts) = crate::bpf::io::tests::without_nvme_tracepoints();
    let c = IoCollector::new(crate::bpf::io::start(opts));
    let text = support::render(&c);
    assert!(text.contains("\nnvmeof_exporter_ebpf_up 0\n"), "{text}");
    assert!(!text.contains("nvmeof_io_"), "{text}");
}

/// With format files present the failure moves on to the loader; whatever stops it here
/// (no object, no permission, no such tracepoint on this kernel), the answer is `up 0`.
#[test]
fn start_with_formats_but_no_tracepoints_reports_down() {
    let Some((_tracefs, opts)) = crate::bpf::io::tests::with_formats_but_no_tracepoints() else {
        return;
    };
    let c = IoCollector::new(crate::bpf::io::start(opts));
    let text = support::render(&c);
    assert!(text.contains("\nnvmeof_exporter_ebpf_up 0\n"), "{text}");
}
