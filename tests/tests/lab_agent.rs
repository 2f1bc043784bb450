//! The real agent, with its real eBPF programs, in the lab: what it serves through the forwarded
//! port on host loopback, and whether its I/O counters match what `dd` moved.
#![cfg(feature = "lab")]

use std::time::Duration;

use nvmeof_tests::{on_each_lab, trace, Metrics, Shared, LAB_AGENT_ARGS};
use xtask::prometheus::Prometheus;

/// Every family the agent may expose, from the registry: a live page must stay inside it.
fn declared_families() -> Vec<&'static str> {
    nvmeof_agent::collectors::registry()
        .iter()
        .flat_map(|r| r.families.iter().map(|f| f.name))
        .collect()
}

fn nqn(t: &str) -> String {
    format!("nqn.2026-11.io.nvmeof-exporter.lab:{t}")
}

/// A scrape in which the collectors these tests read answered within their deadline. Under TCG
/// on a loaded machine one sometimes misses its 50 ms deadline and serves its previous output
/// (`collector_stale 1`): a delta taken across such a scrape would read zero.
fn fresh_scrape(s: &mut Shared) -> (Metrics, Duration) {
    fresh_scrape_of(s, "/metrics")
}

/// [`fresh_scrape`] of `path` (the metrics path with a query).
fn fresh_scrape_of(s: &mut Shared, path: &str) -> (Metrics, Duration) {
    let mut last = String::new();
    for _ in 0..20 {
        let (m, took) = s.scrape_path(path);
        let fresh = ["io", "controller", "subsystem"]
            .iter()
            .all(|c| m.sum("nvmeof_exporter_collector_success", &[("collector", c)]) == 1.0);
        if fresh {
            return (m, took);
        }
        last = m.text;
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("no scrape with every collector on time in 20 tries; the last:\n{last}");
}

/// Scrapes at once, every collector on time: the scrape drains the maps itself, so it counts
/// every command completed before it (no wait for a periodic drain).
fn scrape_now(s: &mut Shared) -> Metrics {
    fresh_scrape(s).0
}

/// How much the series of `name` matching `by` and `extra` moved from `before` to `after`.
fn moved(
    before: &Metrics,
    after: &Metrics,
    by: &[(&str, &str)],
    name: &str,
    extra: &[(&str, &str)],
) -> f64 {
    let want: Vec<(&str, &str)> = by.iter().chain(extra).copied().collect();
    after.moved_from(before, name, &want)
}

/// Completions that found no in-flight entry from `before` to `after`, over the whole node.
fn unmatched_between(before: &Metrics, after: &Metrics) -> f64 {
    moved(
        before,
        after,
        &[],
        "nvmeof_exporter_ebpf_events_total",
        &[("event", "completion_unmatched")],
    )
}

#[test]
fn agent_serves_real_metrics_on_host_loopback() {
    let declared = declared_families();
    on_each_lab(|s, release| {
        // The first scrapes after start can find the sysfs collectors past their deadline
        // (cold caches under TCG): they then serve nothing yet. Wait for one that finished.
        let (mut m, mut took) = s.scrape();
        for _ in 0..10 {
            let fresh = ["controller", "subsystem", "io"]
                .iter()
                .all(|c| m.sum("nvmeof_exporter_collector_success", &[("collector", c)]) == 1.0);
            if fresh {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
            (m, took) = s.scrape();
        }
        assert_eq!(
            m.sum("nvmeof_exporter_ebpf_up", &[]),
            1.0,
            "{release}: eBPF is off:\n{}",
            s.lab.sh("cat /tmp/agent.log").unwrap().out
        );
        assert!(
            took < Duration::from_secs(2),
            "{release}: scrape took {took:?}"
        );
        for t in s.expected_transports() {
            let want = if t == "tcp" { 2.0 } else { 1.0 };
            let live = m.sum(
                "nvmeof_subsystem_state",
                &[("subsystem", &nqn(t)), ("state", "live")],
            );
            assert_eq!(live, want, "{release}: live {t} controllers");
            let typed = m.sum(
                "nvmeof_transport_type",
                &[("subsystem", &nqn(t)), ("transport", t)],
            );
            assert_eq!(typed, want, "{release}: transport type of {t}");
        }
        // Every family on the page is declared (and so documented: see metrics_doc).
        for line in m.text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let name = line.split_whitespace().next().unwrap();
            assert!(
                declared.contains(&name),
                "{release}: undeclared family {name}"
            );
        }
    });
}

#[test]
fn dd_bytes_and_commands_show_up_exactly_in_the_io_counters() {
    on_each_lab(|s, release| {
        s.ensure_agent();
        for t in s.expected_transports() {
            let sub = nqn(t);
            let by = [("subsystem", sub.as_str())];
            let before = scrape_now(s);
            // 256 writes then 128 reads of 4 KiB, direct, so each is exactly one command.
            s.lab
                .sh_ok(&format!(
                    "d=$(dev_of {t}) || exit 9
                     dd if=/dev/zero of=$d bs=4k count=256 oflag=direct 2>/dev/null &&
                     dd if=$d of=/dev/null bs=4k count=128 iflag=direct 2>/dev/null"
                ))
                .unwrap_or_else(|e| panic!("{release} {t}: {e:#}"));
            let after = scrape_now(s);
            let delta =
                |name: &str, extra: &[(&str, &str)]| moved(&before, &after, &by, name, extra);
            assert_eq!(
                delta("nvmeof_io_write_bytes_total", &[]),
                1_048_576.0,
                "{release} {t}: write bytes"
            );
            assert_eq!(
                delta("nvmeof_io_read_bytes_total", &[]),
                524_288.0,
                "{release} {t}: read bytes"
            );
            assert_eq!(
                delta("nvmeof_io_commands_total", &[("opclass", "write")]),
                256.0,
                "{release} {t}: writes"
            );
            assert_eq!(
                delta("nvmeof_io_commands_total", &[("opclass", "read")]),
                128.0,
                "{release} {t}: reads"
            );
            // The histogram counts every command the counters count.
            let hist_count = delta("nvmeof_io_latency_seconds_count", &[("opclass", "write")]);
            assert_eq!(
                hist_count, 256.0,
                "{release} {t}: histogram count of writes"
            );
        }
    });
}

/// Writes traced by the quantile test, one command each (4 KiB, direct).
const TRACED_WRITES: usize = 2000;
/// The program and ftrace read the clock at different points of the same tracepoint call. The
/// trace is enabled before the agent starts, so ftrace's probe runs first at both tracepoints and
/// the gaps (ftrace's record, perf's record, the program's prologue) mostly cancel: -0.5 µs per
/// command on 6.12. But under TCG on a loaded host a vCPU can be descheduled between the two
/// reads, for milliseconds, and then that one command differs by that much (5.10: p99 off by
/// 4.5 % with the mean offset only +4.9 µs). So the reference allows a few commands to be shifted
/// arbitrarily: if at most k commands differ by more than [`TRACE_SLACK_NS`], the agent's value
/// of rank r lies between the exact values of ranks r - k and r + k.
const SHIFTED_COMMANDS: usize = TRACED_WRITES / 100;
/// The bounds in ns of the schema-4 native bucket that holds `ns`: (2^((i−1)/16), 2^(i/16)] s
/// with i = ceil(16·log2(ns / 10^9)), from the definition (not from the agent's code).
fn schema4_bucket_ns(ns: f64) -> (f64, f64) {
    let i = (16.0 * (ns.max(1.0) / 1e9).log2()).ceil();
    (1e9 * ((i - 1.0) / 16.0).exp2(), 1e9 * (i / 16.0).exp2())
}
/// What every other command may differ by: tracefs prints whole microseconds (1 µs), plus the
/// residual gap between the two probes.
const TRACE_SLACK_NS: f64 = 3_000.0;
/// The mean difference (from the exact latency sums) stays within this: the per-command slack
/// plus the few shifted commands' share (2 ms each at most, seen).
const MAX_MEAN_OFFSET_NS: f64 = 20_000.0;

/// The agent's latency histogram, read by a real Prometheus, against exact latencies from the
/// kernel's own trace timestamps.
///
/// Debian's Prometheus runs on the host with native histograms on and scrapes the agent every
/// second through the lab's forwarded port: it asks for protobuf and ingests the kernel's buckets
/// as a native histogram (the test checks that no classic `_bucket` series was stored, so the
/// answers come from the native buckets). A trace instance on the `mono` clock (the clock of
/// `bpf_ktime_get_ns`) and then a fresh agent (new maps) see the same writes on the RDMA
/// controller, which carries nothing else but admin keep-alives. The trace joins setup and
/// completion per (queue, cid & 0xfff) into exact latencies. Prometheus' `histogram_count` must be
/// the dd's count exactly, and `histogram_quantile` must fall inside the schema-4 bucket that holds
/// the exact quantile (its bounds computed here from the definition, 2^((i−1)/16) .. 2^(i/16) s:
/// the schema's stated error, 4.4 % of the value at most), give or take the trace's resolution
/// and hook gap ([`SHIFTED_COMMANDS`], [`TRACE_SLACK_NS`]).
#[test]
fn latency_quantiles_match_the_kernels_own_trace() {
    on_each_lab(|s, release| {
        s.ensure_agent();
        let prom = Prometheus::start(s.lab.host_port)
            .unwrap_or_else(|e| panic!("{release}: starting Prometheus: {e:#}"));
        let script = format!(
            "c=$(ctrl_of rdma) || exit 9; d=$(dev_of rdma) || exit 9
             nvme_trace_start nvmeof-latency || exit 6
             agent_restart {LAB_AGENT_ARGS} > /dev/null || exit 7
             scrape > /dev/null
             dd if=/dev/zero of=$d bs=4k count={TRACED_WRITES} oflag=direct 2>/dev/null || exit 5
             echo \"@@CTRL $c\"
             nvme_trace_stop nvmeof-latency $c"
        );
        let out = s
            .lab
            .sh_timeout(&script, Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("{release}: {e:#}"));
        assert_eq!(out.rc, 0, "{release}: traced dd failed:\n{}", out.out);
        let ctrl = out
            .out
            .lines()
            .find_map(|l| l.strip_prefix("@@CTRL "))
            .expect("controller line")
            .trim()
            .to_owned();
        let overrun = out
            .out
            .lines()
            .find_map(|l| l.strip_prefix("@@OVERRUN "))
            .expect("overrun line")
            .trim()
            .to_owned();
        assert_eq!(overrun, "0", "{release}: the trace buffer lost events");
        let events: Vec<_> = out
            .out
            .lines()
            .filter_map(|l| trace::parse_line(l, &ctrl))
            .collect();
        let joined = trace::join_writes(&events);
        assert_eq!(
            (joined.latencies_ns.len(), joined.pending),
            (TRACED_WRITES, 0),
            "{release}: traced writes on {ctrl} ({} events, {} unmatched completions)",
            events.len(),
            joined.unmatched
        );
        let mut exact = joined.latencies_ns.clone();
        exact.sort_unstable();

        let sub = nqn("rdma");
        let sel = format!(r#"nvmeof_io_latency_seconds{{subsystem="{sub}",opclass="write"}}"#);
        let count_expr = format!("sum(histogram_count({sel}))");
        prom.wait_for(
            "Prometheus to hold every traced write",
            Duration::from_secs(60),
            |p| Ok(p.query(&count_expr)?.first().map(|x| x.value) == Some(TRACED_WRITES as f64)),
        )
        .unwrap_or_else(|e| {
            panic!(
                "{release}: {e:#}\nagent log:\n{}",
                s.lab
                    .sh("cat /tmp/agent.log")
                    .map(|o| o.out)
                    .unwrap_or_default()
            )
        });
        let classic = prom
            .query(r#"count({__name__="nvmeof_io_latency_seconds_bucket"})"#)
            .unwrap();
        assert!(
            classic.is_empty(),
            "{release}: Prometheus stored classic buckets, so it did not read the native ones: \
             {classic:?}"
        );
        // Mean offset between the program's clock reads and ftrace's, per command.
        let agent_sum_ns = prom.value(&format!("sum(histogram_sum({sel}))")).unwrap() * 1e9;
        let trace_sum_ns: u64 = exact.iter().sum();
        let mean_offset_ns = (agent_sum_ns - trace_sum_ns as f64) / TRACED_WRITES as f64;
        eprintln!(
            "{release}: {TRACED_WRITES} writes on {ctrl}: mean latency {:.1} µs (trace), \
             agent − trace {mean_offset_ns:+.0} ns per command",
            trace_sum_ns as f64 / TRACED_WRITES as f64 / 1e3
        );
        let mut failures = Vec::new();
        if mean_offset_ns.abs() > MAX_MEAN_OFFSET_NS {
            failures.push(format!(
                "agent and trace disagree by {mean_offset_ns:.0} ns per command"
            ));
        }
        // Busy time: dd keeps one write in flight at a time, so an I/O queue is busy exactly
        // while a traced write is, and the controller's busy time is the writes' exact latency
        // sum plus that of its other commands (keep-alives on the admin queue, in the agent's
        // own histogram as they are not traced here), within the same per-command offset.
        let busy_ns = prom
            .value(&format!(
                r#"sum(nvmeof_queue_busy_seconds_total{{subsystem="{sub}"}})"#
            ))
            .unwrap()
            * 1e9;
        let others_ns = prom
            .value(&format!(
                r#"sum(histogram_sum(nvmeof_io_latency_seconds{{subsystem="{sub}",opclass!="write"}})) or vector(0)"#
            ))
            .unwrap()
            * 1e9;
        let busy_want = trace_sum_ns as f64 + others_ns;
        eprintln!(
            "{release}: busy {:.1} ms, exact writes {:.1} ms + other commands {:.1} ms",
            busy_ns / 1e6,
            trace_sum_ns as f64 / 1e6,
            others_ns / 1e6
        );
        if (busy_ns - busy_want).abs() > MAX_MEAN_OFFSET_NS * TRACED_WRITES as f64 {
            failures.push(format!(
                "busy {busy_ns:.0} ns, want {busy_want:.0} ns (writes' exact latency sum plus \
                 the other commands')"
            ));
        }
        for q in [0.5, 0.9, 0.99, 0.999] {
            let agent = prom
                .value(&format!("histogram_quantile({q}, sum({sel}))"))
                .unwrap()
                * 1e9;
            let n = exact.len();
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            let want = trace::exact_quantile(&exact, q) as f64;
            let lo = exact[rank.saturating_sub(SHIFTED_COMMANDS).max(1) - 1] as f64;
            let hi = exact[(rank + SHIFTED_COMMANDS).min(n) - 1] as f64;
            let (lo, hi) = (
                schema4_bucket_ns(lo - TRACE_SLACK_NS).0,
                schema4_bucket_ns(hi + TRACE_SLACK_NS).1,
            );
            eprintln!(
                "{release}: p{q}: Prometheus {:.1} µs, exact {:.1} µs ({:+.2} %), allowed \
                 {:.1} .. {:.1} µs",
                agent / 1e3,
                want / 1e3,
                (agent - want) / want * 100.0,
                lo / 1e3,
                hi / 1e3
            );
            if !(lo..=hi).contains(&agent) {
                failures.push(format!(
                    "p{q}: Prometheus {agent:.0} ns, exact {want:.0} ns, allowed {lo:.0}..{hi:.0}"
                ));
            }
        }
        assert!(failures.is_empty(), "{release}: {failures:#?}");
    });
}

/// The in-flight map keeps an entry per request struct (or queue tag) and updates it in place:
/// once a queue's tags have all been used, more commands add no keys. 600 reads on the TCP
/// namespace from CPU 0 (so on one hardware queue, whose 128 tags blk-mq hands out in turn),
/// twice: the second run may add keys only for the admin commands (keep-alives) that land on a
/// tag not used before, far fewer than its 600 commands (a map that inserted and deleted per
/// command would count 600), and every read is still counted.
#[test]
fn inflight_entries_are_reused_command_after_command() {
    on_each_lab(|s, release| {
        s.ensure_agent();
        let by = nqn("tcp");
        let event = [("event", "inflight_new_key")];
        let reads = |s: &mut Shared| {
            s.lab
                .sh_ok("d=$(dev_of tcp) || exit 9; busybox taskset 1 dd if=$d of=/dev/null bs=4k count=600 iflag=direct 2>/dev/null")
                .unwrap_or_else(|e| panic!("{release}: {e:#}"));
        };
        let first = scrape_now(s);
        reads(s);
        let second = scrape_now(s);
        reads(s);
        let third = scrape_now(s);
        let new_keys = |a: &Metrics, b: &Metrics| {
            moved(a, b, &[], "nvmeof_exporter_ebpf_events_total", &event)
        };
        let counted = |a: &Metrics, b: &Metrics| {
            moved(
                a,
                b,
                &[("subsystem", by.as_str())],
                "nvmeof_io_commands_total",
                &[("opclass", "read")],
            )
        };
        assert_eq!(counted(&first, &second), 600.0, "{release}: first reads");
        assert_eq!(counted(&second, &third), 600.0, "{release}: second reads");
        let again = new_keys(&second, &third);
        eprintln!(
            "{release}: new in-flight keys: {} in the first 600 reads, {again} in the second",
            new_keys(&first, &second)
        );
        assert!(
            again < 60.0,
            "{release}: {again} new in-flight keys for 600 reads on tags already used \
             (first run: {})",
            new_keys(&first, &second)
        );
    });
}

/// Writes larger than nvme-tcp's inline data size are where a join on the recorded command id
/// fails (the H2C data PDU overwrites it): 64 KiB and 4 KiB writes and reads on TCP and RDMA must
/// all be counted, with their bytes, and no completion may go unmatched. Both request-keyed modes
/// are checked: the one the agent picks (tp_btf where nvme_core's BTF names its tracepoints, from
/// 6.1), then raw tracepoints forced. Debian's 5.10 has no BTF for nvme_core, so the agent runs
/// the classic mode there, and the test checks its documented gap instead.
#[test]
fn large_and_small_io_is_counted_exactly_on_tcp_and_rdma() {
    on_each_lab(|s, release| {
        s.ensure_agent();
        if release.starts_with("5.10.") {
            exact_io_in_mode(s, release, "tracepoint");
            return;
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            exact_io_in_mode(s, release, "tp_btf");
            s.restart_agent("--ebpf.attach-mode=raw_tracepoint");
            exact_io_in_mode(s, release, "raw_tracepoint");
        }));
        s.restart_agent("");
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    });
}

/// The dd's of [`large_and_small_io_is_counted_exactly_on_tcp_and_rdma`] with the agent in `mode`.
fn exact_io_in_mode(s: &mut Shared, release: &str, mode: &str) {
    for t in ["tcp", "rdma"] {
        if !s.expected_transports().contains(&t) {
            continue;
        }
        let sub = nqn(t);
        let by = [("subsystem", sub.as_str())];
        let before = scrape_now(s);
        assert_eq!(
            before.sum("nvmeof_exporter_ebpf_attach_mode", &[("mode", mode)]),
            1.0,
            "{release}: not in attach mode {mode}:\n{}",
            before.text
        );
        s.lab
            .sh_ok(&format!(
                "d=$(dev_of {t}) || exit 9
                 dd if=/dev/zero of=$d bs=64k count=16 oflag=direct 2>/dev/null &&
                 dd if=/dev/zero of=$d bs=4k count=32 oflag=direct 2>/dev/null &&
                 dd if=$d of=/dev/null bs=64k count=8 iflag=direct 2>/dev/null &&
                 dd if=$d of=/dev/null bs=4k count=16 iflag=direct 2>/dev/null"
            ))
            .unwrap_or_else(|e| panic!("{release} {t}: {e:#}"));
        let after = scrape_now(s);
        let delta = |name: &str, extra: &[(&str, &str)]| moved(&before, &after, &by, name, extra);
        let unmatched = unmatched_between(&before, &after);
        let ctx = format!("{release} {mode} {t}");
        let writes = delta("nvmeof_io_commands_total", &[("opclass", "write")]);
        if mode == "tracepoint" {
            // The classic mode's documented gap (docs/metrics.md, attach modes): a write whose
            // completion record carries an overwritten command id is unmatched, not counted.
            // Every write is one or the other, and the reads are exact.
            assert_eq!(
                writes + unmatched,
                48.0,
                "{ctx}: writes counted + unmatched"
            );
            assert_eq!(
                delta("nvmeof_io_latency_seconds_count", &[("opclass", "write")]),
                writes,
                "{ctx}: histogram count of writes"
            );
            assert_eq!(
                delta("nvmeof_io_read_bytes_total", &[]),
                (8 * 65536 + 16 * 4096) as f64,
                "{ctx}: read bytes"
            );
            assert_eq!(
                delta("nvmeof_io_commands_total", &[("opclass", "read")]),
                24.0,
                "{ctx}: reads"
            );
            continue;
        }
        assert_eq!(unmatched, 0.0, "{ctx}: unmatched completions");
        assert_eq!(
            delta("nvmeof_io_write_bytes_total", &[]),
            (16 * 65536 + 32 * 4096) as f64,
            "{ctx}: write bytes"
        );
        assert_eq!(
            delta("nvmeof_io_read_bytes_total", &[]),
            (8 * 65536 + 16 * 4096) as f64,
            "{ctx}: read bytes"
        );
        assert_eq!(writes, 48.0, "{ctx}: writes");
        assert_eq!(
            delta("nvmeof_io_commands_total", &[("opclass", "read")]),
            24.0,
            "{ctx}: reads"
        );
        assert_eq!(
            delta("nvmeof_io_latency_seconds_count", &[("opclass", "write")]),
            48.0,
            "{ctx}: histogram count of writes"
        );
    }
}

/// An in-flight map smaller than the requests taking turns in it (`--ebpf.max-inflight=16` on a
/// TCP controller whose queues have 128 requests each): entries are evicted and made again, and
/// the agent counts every command whose request found none, says so once in its log with the
/// flag that fixes it, and still counts every command. Where the kernel's modules have no BTF
/// (5.10) the programs run classic, keyed by command id in a map the flag does not size: every
/// command counted all the same, and the log says the flag does not apply.
#[test]
fn an_inflight_map_too_small_for_the_node_is_counted_and_logged_once() {
    on_each_lab(|s, release| {
        s.restart_agent("--ebpf.max-inflight=16");
        let by = nqn("tcp");
        let before = scrape_now(s);
        s.lab
            .sh_ok("d=$(dev_of tcp) || exit 9; dd if=$d of=/dev/null bs=4k count=600 iflag=direct 2>/dev/null")
            .unwrap_or_else(|e| panic!("{release}: {e:#}"));
        let after = scrape_now(s);
        let log = s
            .lab
            .sh_ok("cat /tmp/agent.log")
            .unwrap_or_else(|e| panic!("{release}: {e:#}"));
        s.restart_agent("");
        let reads = moved(
            &before,
            &after,
            &[("subsystem", by.as_str())],
            "nvmeof_io_commands_total",
            &[("opclass", "read")],
        );
        let unmatched = unmatched_between(&before, &after);
        let new_keys = after.sum(
            "nvmeof_exporter_ebpf_events_total",
            &[("event", "inflight_new_key")],
        );
        let classic = after.sum(
            "nvmeof_exporter_ebpf_attach_mode",
            &[("mode", "tracepoint")],
        ) == 1.0;
        eprintln!(
            "{release}: {reads} reads timed, {unmatched} unmatched, {new_keys} new keys \
             (classic: {classic})"
        );
        // Every read is either timed or counted as a completion that found no entry.
        assert_eq!(reads + unmatched, 600.0, "{release}: reads");
        if classic {
            assert!(
                log.contains("--ebpf.max-inflight sizes the request-keyed modes' only")
                    && !log.contains("raise --ebpf.max-inflight"),
                "{release}: the agent's log:\n{log}"
            );
            return;
        }
        assert!(new_keys > 16.0, "{release}: {new_keys} new in-flight keys");
        let told: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("raise --ebpf.max-inflight"))
            .collect();
        assert_eq!(told.len(), 1, "{release}: the agent's log:\n{log}");
        assert!(told[0].contains("16 entries"), "{release}: {}", told[0]);
    });
}

/// Per queue, each I/O queue's CPUs are the kernel's (`mq/N/cpu_list`, read in the guest), and
/// the queue ids agree with the I/O series: reads pinned to CPU 1 land on the queue whose CPUs
/// include 1.
#[test]
fn per_queue_cpus_are_the_kernels_and_name_the_queue_a_cpus_reads_take() {
    on_each_lab(|s, release| {
        s.restart_agent("--metrics.per-queue");
        let want = kernel_queue_cpus(s, release, "/sys/class/nvme/nvme*");
        let before = scrape_now(s);
        read_200_on_cpu_1(s, release);
        let after = scrape_now(s);
        s.restart_agent("");
        assert!(want.len() >= 8, "{release}: the guest's queues: {want:?}");
        assert_eq!(agents_queue_cpus(&after), want, "{release}: queue CPUs");
        let sub = nqn("tcp");
        let tcp_ctrl = after
            .select("nvmeof_io_commands_total", &[("subsystem", sub.as_str())])
            .find_map(|m| m.label("controller").map(str::to_owned))
            .expect("a TCP controller's series");
        let of_tcp = [("controller", tcp_ctrl.as_str())];
        reads_land_on_cpu_1s_queue(&before, &after, &of_tcp, release);
    });
}

/// On demand (issue 15): an agent without `--metrics.per-queue` shows the TCP controllers per
/// queue to a scrape that names them (`/metrics?controller=nvmeA&controller=nvmeB`, both paths of
/// the TCP subsystem), with their queues' CPUs as blk-mq's `mq/N/cpu_list` has them, and 200
/// direct reads pinned to CPU 1 land exactly on the queue of CPU 1; the other controllers stay
/// per controller, and the default scrape has no `queue` label at all.
#[test]
fn a_scrape_naming_a_controller_gets_its_queues_without_a_restart() {
    on_each_lab(|s, release| {
        s.restart_agent("");
        let tcp: Vec<String> = s
            .controllers()
            .into_iter()
            .filter(|(_, transport, _, _)| transport == "tcp")
            .map(|(name, ..)| name)
            .collect();
        assert!(
            !tcp.is_empty(),
            "{release}: no TCP controller in\n{}",
            s.topology
        );
        let dirs: Vec<String> = tcp.iter().map(|c| format!("/sys/class/nvme/{c}")).collect();
        let want = kernel_queue_cpus(s, release, &dirs.join(" "));
        let query: Vec<String> = tcp.iter().map(|c| format!("controller={c}")).collect();
        let path = format!("/metrics?{}", query.join("&"));
        let before = fresh_scrape_of(s, &path).0;
        read_200_on_cpu_1(s, release);
        let after = fresh_scrape_of(s, &path).0;
        let default = scrape_now(s);

        // The named controllers' queue CPUs are the kernel's; nobody else's are shown.
        assert!(want.len() >= 2, "{release}: the TCP queues: {want:?}");
        assert_eq!(agents_queue_cpus(&after), want, "{release}: {tcp:?}");
        // Per queue: the named controllers' alone.
        for m in after.select("nvmeof_queue_busy_seconds_total", &[]) {
            let c = m.label("controller").unwrap_or_default();
            let named = tcp.iter().any(|t| t == c);
            assert_eq!(m.label("queue").is_some(), named, "{release}: {m:?}");
        }
        // Every queue shown is a TCP controller's.
        reads_land_on_cpu_1s_queue(&before, &after, &[], release);

        // The default scrape, right after: per controller, as ever.
        let per_queue: Vec<_> = (default.samples.iter())
            .filter(|m| m.label("queue").is_some() || m.label("local_port").is_some())
            .collect();
        assert!(per_queue.is_empty(), "{release}: {per_queue:?}");
        assert!(!default.has_family("nvmeof_queue_cpus_info"), "{release}");
        let sub = nqn("tcp");
        let reads = [("subsystem", sub.as_str()), ("opclass", "read")];
        let total = default.sum("nvmeof_io_commands_total", &reads);
        assert!(
            total >= 200.0,
            "{release}: the reads per controller: {total}"
        );
    });
}

/// Each I/O queue's CPUs as the guest's kernel gives them, for the controllers whose sysfs
/// directories `dirs` (a shell word list or glob) names: "controller queue cpus" lines, sorted,
/// the queue being blk-mq's `mq/N` + 1 (the NVMe queue id).
fn kernel_queue_cpus(s: &mut Shared, release: &str, dirs: &str) -> Vec<String> {
    let out = s
        .lab
        .sh_ok(&format!(
            r#"for c in {dirs}; do
                 for d in "$c"/nvme*n*; do
                   [ -d "$d/mq" ] || continue
                   for q in "$d"/mq/*; do echo "${{c##*/}} $(( ${{q##*/}} + 1 )) $(cat "$q/cpu_list")"; done
                   break
                 done
               done"#
        ))
        .unwrap_or_else(|e| panic!("{release}: {e:#}"));
    let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// The agent's `nvmeof_queue_cpus_info` as [`kernel_queue_cpus`] lines.
fn agents_queue_cpus(m: &Metrics) -> Vec<String> {
    let mut lines: Vec<String> = m
        .select("nvmeof_queue_cpus_info", &[])
        .map(|m| {
            let l = |k| m.label(k).unwrap_or_default();
            format!("{} {} {}", l("controller"), l("queue"), l("cpus"))
        })
        .collect();
    lines.sort();
    lines
}

/// 200 direct 4 KiB reads of the TCP namespace from CPU 1.
fn read_200_on_cpu_1(s: &mut Shared, release: &str) {
    s.lab
        .sh_ok("d=$(dev_of tcp) || exit 9; busybox taskset 2 dd if=$d of=/dev/null bs=4k count=200 iflag=direct 2>/dev/null")
        .unwrap_or_else(|e| panic!("{release}: {e:#}"));
}

/// The queue whose CPUs include CPU 1, by `after`'s `nvmeof_queue_cpus_info` series matching
/// `which`, took exactly the 200 reads of [`read_200_on_cpu_1`] from `before` to `after`,
/// counted over the TCP subsystem's controllers (per queue, the command count is the latency
/// histogram's).
fn reads_land_on_cpu_1s_queue(
    before: &Metrics,
    after: &Metrics,
    which: &[(&str, &str)],
    release: &str,
) {
    let cpu1 = after
        .select("nvmeof_queue_cpus_info", which)
        .find(|m| m.label("cpus").is_some_and(|c| cpus_include(c, 1)))
        .and_then(|m| m.label("queue").map(str::to_owned))
        .expect("a queue for CPU 1");
    eprintln!("{release}: CPU 1's queue ({which:?}): {cpu1}");
    let sub = nqn("tcp");
    let reads = moved(
        before,
        after,
        &[("subsystem", sub.as_str()), ("queue", cpu1.as_str())],
        "nvmeof_io_latency_seconds_count",
        &[("opclass", "read")],
    );
    assert_eq!(reads, 200.0, "{release}: reads on queue {cpu1}");
}

/// Whether a kernel CPU list (`0-3,8`) includes `cpu`.
fn cpus_include(list: &str, cpu: u32) -> bool {
    list.split(',').any(|r| match r.split_once('-') {
        Some((a, b)) => {
            a.parse().is_ok_and(|a: u32| a <= cpu) && b.parse().is_ok_and(|b: u32| cpu <= b)
        }
        None => r.parse() == Ok(cpu),
    })
}

/// Slow-command tracing's threshold in the lab, and the delay netem puts on one TCP path: far
/// apart, so that no command of either path comes near the threshold unless the emulation
/// stalls it (and then the trace shows it too).
const SLOW_MS: u64 = 30;
const DELAY_MS: u64 = 60;
/// Writes of 4 KiB, direct, on the two TCP paths in turn (round-robin).
const SLOW_WRITES: usize = 48;
/// What `nvmeof-exporter trace --slower-than` asks in the lab: above the agent's threshold and
/// below the delay, so it shows the same commands.
const TRACE_CLI_MS: u64 = 45;

/// One slow command as `/debug/slow` lists it: (controller, queue, command id) and latency.
fn listed_slow(json: &str) -> Vec<((String, u16, u16), u64)> {
    let v: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("/debug/slow: {e}: {json}"));
    v.as_array()
        .unwrap_or_else(|| panic!("/debug/slow is not an array: {json}"))
        .iter()
        .map(|e| {
            let int = |k: &str| e[k].as_u64().unwrap_or_else(|| panic!("{k} in {e}"));
            (
                (
                    e["controller"].as_str().expect("controller").to_owned(),
                    int("queue") as u16,
                    int("cid") as u16,
                ),
                (e["latency_seconds"].as_f64().expect("latency") * 1e9).round() as u64,
            )
        })
        .collect()
}

/// A delay on one TCP path: the slow commands the agent lists are the commands the kernel's own
/// trace shows at or past the threshold, one for one (controller, queue, command id), with the
/// trace's latencies; they are the delayed path's writes, and none is rate-limited or lost.
#[test]
fn slow_commands_listed_are_the_delayed_paths_with_the_traces_latencies() {
    on_each_lab(|s, release| {
        let script = format!(
            "slow=$(ctrl_of tcp 4421) || exit 9; fast=$(ctrl_of tcp 4420) || exit 9
             d=$(dev_of tcp) || exit 9
             nvme_trace_start nvmeof-slow || exit 6
             agent_restart {LAB_AGENT_ARGS} --trace.slower-than={SLOW_MS}ms --trace.slow-per-cpu=1000 > /dev/null || exit 7
             /usr/bin/nvmeof-exporter trace --agent 127.0.0.1:$AGENT_PORT --slower-than={TRACE_CLI_MS}ms \
                 --interval=200ms --for=300s --json > /tmp/slow-trace.json 2> /tmp/slow-trace.err &
             tp=$!
             tcp_iopolicy round-robin
             netem_towards 4421 delay {DELAY_MS}ms || exit 8
             dd if=/dev/zero of=$d bs=4k count={SLOW_WRITES} oflag=direct 2>/dev/null; rc=$?
             restore_lo
             tcp_iopolicy numa
             [ $rc = 0 ] || exit 5
             sleep 1; kill $tp; wait $tp
             sed 's/^/@@TRACE /' /tmp/slow-trace.json /tmp/slow-trace.err
             /usr/bin/nvmeof-exporter trace --agent 127.0.0.1:$AGENT_PORT --all --for=1s | sed 's/^/@@HUMAN /'
             echo \"@@SLOW $slow\"
             echo \"@@FAST $fast\"
             echo \"@@MODE $(scrape | grep '^nvmeof_exporter_ebpf_attach_mode')\"
             echo \"@@JSON $(curl -sf \"http://127.0.0.1:$AGENT_PORT/debug/slow?limit=1000\")\"
             echo \"@@EVENTS $(scrape | grep -E '^nvmeof_exporter_ebpf_events_total.*slow_' | tr '\\n' ' ')\"
             nvme_trace_stop nvmeof-slow"
        );
        let out = s
            .lab
            .sh_timeout(&script, Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("{release}: {e:#}"));
        // The next test gets the lab's own agent back.
        s.restart_agent("");
        assert_eq!(out.rc, 0, "{release}: the delayed dd failed:\n{}", out.out);
        // Tracing on changes the programs: they attach in the mode the agent uses without it
        // (a program the verifier refused would have fallen back to another mode).
        let default_mode = scrape_now(s)
            .select("nvmeof_exporter_ebpf_attach_mode", &[])
            .find_map(|m| m.label("mode").map(str::to_owned))
            .expect("the default agent's attach mode");
        let traced_mode = out
            .out
            .lines()
            .find_map(|l| l.strip_prefix("@@MODE "))
            .unwrap_or_default();
        assert!(
            traced_mode.contains(&format!("mode=\"{default_mode}\"")),
            "{release}: tracing on: {traced_mode}, off: {default_mode}"
        );
        let line = |tag: &str| {
            out.out
                .lines()
                .find_map(|l| l.strip_prefix(tag))
                .unwrap_or_else(|| panic!("{release}: no {tag} line:\n{}", out.out))
                .trim()
                .to_owned()
        };
        let (slow, fast) = (line("@@SLOW "), line("@@FAST "));
        assert_eq!(line("@@OVERRUN "), "0", "{release}: the trace lost events");
        // Every rate-limited or unsent slow command would show here.
        let events = line("@@EVENTS ");
        assert!(
            events.contains("slow_rate_limited") && events.contains("slow_ring_full"),
            "{release}: {events}"
        );
        for counter in events.split(" nvmeof_").filter(|c| !c.is_empty()) {
            assert!(counter.trim_end().ends_with(" 0"), "{release}: {events}");
        }
        let threshold_ns = SLOW_MS * 1_000_000;
        // The trace's commands of both paths at or past the threshold, on I/O queues (the
        // admin queues' keep-alives on the delayed path are slow too, but they run on after the
        // trace stops, so the two lists cannot end at the same command).
        let mut traced = std::collections::BTreeMap::new();
        for ctrl in [&slow, &fast] {
            let events: Vec<_> = out
                .out
                .lines()
                .filter_map(|l| trace::parse_line(l, ctrl))
                .collect();
            for c in trace::join_all(&events) {
                // A command within the trace's slack of the threshold may fall either side.
                assert!(
                    c.latency_ns.abs_diff(threshold_ns) as f64 > TRACE_SLACK_NS,
                    "{release}: a command at the threshold: {c:?}"
                );
                if c.qid != 0 && c.latency_ns >= threshold_ns {
                    traced.insert((ctrl.clone(), c.qid, c.cid), c.latency_ns);
                }
            }
        }
        let listed: std::collections::BTreeMap<_, _> = listed_slow(&line("@@JSON "))
            .into_iter()
            .filter(|((_, qid, _), _)| *qid != 0)
            .collect();
        eprintln!(
            "{release}: {} slow I/O commands listed, {} traced; on {slow} (delayed) {}, on {fast} {}",
            listed.len(),
            traced.len(),
            listed.keys().filter(|k| k.0 == slow).count(),
            listed.keys().filter(|k| k.0 == fast).count(),
        );
        let keys = |m: &std::collections::BTreeMap<(String, u16, u16), u64>| {
            m.keys().cloned().collect::<Vec<_>>()
        };
        assert_eq!(keys(&listed), keys(&traced), "{release}: slow commands");
        // `nvmeof-exporter trace`, following the agent while the dd ran, printed the same
        // commands (its threshold is between the agent's and the delay).
        let followed: Vec<String> = out
            .out
            .lines()
            .filter_map(|l| l.strip_prefix("@@TRACE "))
            .map(str::to_owned)
            .collect();
        let mut from_cli: Vec<_> = listed_slow(&format!("[{}]", followed.join(",")))
            .into_iter()
            .filter(|((_, qid, _), _)| *qid != 0)
            .map(|(k, _)| k)
            .collect();
        from_cli.sort();
        assert_eq!(
            from_cli,
            keys(&listed),
            "{release}: trace printed {followed:#?}"
        );
        let human: Vec<&str> = out
            .out
            .lines()
            .filter_map(|l| l.strip_prefix("@@HUMAN "))
            .collect();
        assert!(
            human
                .iter()
                .any(|l| l.contains(&format!(" ms  {slow}/q")) && l.contains(" write ")),
            "{release}: trace's lines: {human:#?}"
        );
        // Round-robin sends about half the writes down the delayed path: every one is slow.
        let on_slow = traced.keys().filter(|k| k.0 == slow).count();
        assert!(
            on_slow >= SLOW_WRITES / 4,
            "{release}: {on_slow} slow writes on {slow}"
        );
        // The latencies: the trace's, within its slack plus 0.1 % (the program reads the clock
        // after ftrace's probe has written its record; after a vCPU idled through the delay
        // that takes some µs more at the completion than at the setup under TCG: 5 to 27 µs of
        // 61 ms seen on 6.1), but for a few commands a stalled vCPU shifted (as in the
        // quantile test), by at most 2 ms.
        let off: Vec<_> = listed
            .iter()
            .map(|(k, v)| (k, *v, traced[k], *v as i64 - traced[k] as i64))
            .filter(|(_, _, t, d)| d.unsigned_abs() as f64 > TRACE_SLACK_NS + *t as f64 / 1000.0)
            .collect();
        assert!(
            off.len() <= 1 + listed.len() / 20
                && off.iter().all(|(.., d)| d.unsigned_abs() < 2_000_000),
            "{release}: latencies (agent, trace, difference) off the trace's: {off:?}"
        );
    });
}

/// From a tracefs instance's lines, each read's host wait as the kernel's own trace shows it:
/// `block_bio_queue` of the head disk (sector S) to the `nvme_setup_cmd` whose `slba` is S (the
/// lab's null_blk namespaces have 512-byte blocks). Ns per read, in the trace's order.
fn traced_host_waits(trace: &str) -> Vec<u64> {
    let ts = |l: &str, at: usize| -> Option<u64> {
        let t = l[..at].split_whitespace().last()?.trim_end_matches(':');
        let (s, f) = t.split_once('.')?;
        Some(s.parse::<u64>().ok()? * 1_000_000_000 + format!("{f:0<9}")[..9].parse::<u64>().ok()?)
    };
    let mut queued = std::collections::HashMap::new();
    let mut waits = Vec::new();
    for l in trace.lines() {
        if let Some(at) = l.find(" block_bio_queue: ") {
            // "259,2 RS 800 + 8 [dd]"
            let rest: Vec<&str> = l[at + 18..].split_whitespace().collect();
            if let (Some(t), Some(sector)) =
                (ts(l, at), rest.get(2).and_then(|s| s.parse::<u64>().ok()))
            {
                queued.insert(sector, t);
            }
        } else if let Some(at) = l.find(" nvme_setup_cmd: ") {
            let Some(slba) = l
                .split("slba=")
                .nth(1)
                .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if let (Some(t), Some(q)) = (ts(l, at), queued.remove(&slba)) {
                waits.push(t.saturating_sub(q));
            }
        }
    }
    waits
}

/// Host wait (`--ebpf.host-wait`): with the TCP paths delayed by netem and their queues cut to 4
/// requests, one reader's commands wait in the fabric, not in the host; eight readers at once
/// wait for a tag in the host. Both against the kernel's own trace of the same reads.
#[test]
fn host_wait_shows_a_full_queue_and_a_delay_stays_on_the_fabric() {
    const READERS: usize = 8;
    const READS: usize = 20;
    on_each_lab(|s, release| {
        s.restart_agent("--ebpf.host-wait");
        let by = nqn("tcp");
        let by = [("subsystem", by.as_str())];
        let phase = |s: &mut Shared, readers: usize| -> (Metrics, Metrics, Vec<u64>) {
            let before = scrape_now(s);
            let out = s
                .lab
                .sh_ok(&format!(
                    "d=$(dev_of tcp) || exit 9
                     T=/sys/kernel/tracing/instances/hostwait
                     rmdir $T 2>/dev/null; mkdir $T && echo mono > $T/trace_clock && echo 4096 > $T/buffer_size_kb
                     echo 1 > $T/events/block/block_bio_queue/enable
                     echo 1 > $T/events/nvme/nvme_setup_cmd/enable
                     for i in $(seq 1 {readers}); do
                         dd if=$d of=/dev/null bs=4k count={READS} skip=$((i * 4096)) iflag=direct 2>/dev/null &
                     done
                     wait
                     echo 0 > $T/events/block/block_bio_queue/enable
                     echo 0 > $T/events/nvme/nvme_setup_cmd/enable
                     echo \"@@OVERRUN $(cat $T/per_cpu/cpu*/stats | awk '/^overrun/ {{n += $2}} END {{print n + 0}}')\"
                     cat $T/trace; rmdir $T"
                ))
                .unwrap_or_else(|e| panic!("{release}: {e:#}"));
            assert!(
                out.contains("@@OVERRUN 0"),
                "{release}: the trace lost events"
            );
            let after = scrape_now(s);
            (before, after, traced_host_waits(&out))
        };
        s.lab
            .sh_ok(
                "for c in $(ctrl_of tcp 4420) $(ctrl_of tcp 4421); do
                     for q in /sys/class/nvme/$c/nvme*c*n*/queue/nr_requests; do
                         echo \"$q $(cat $q)\" >> /tmp/nr_requests.saved; echo 4 > $q
                     done
                 done
                 netem_towards 4420 delay 5ms &&
                 /usr/bin/tc filter add dev lo parent 1:0 protocol ip prio 1 u32 match ip dport 4421 0xffff flowid 1:3",
            )
            .unwrap_or_else(|e| panic!("{release}: {e:#}"));
        let one = phase(s, 1);
        let many = phase(s, READERS);
        let log = s
            .lab
            .sh_ok("restore_lo; cat /tmp/agent.log")
            .unwrap_or_default();
        s.lab
            .sh_ok(
                "while read -r q n; do echo $n > $q; done < /tmp/nr_requests.saved
                 rm /tmp/nr_requests.saved",
            )
            .unwrap_or_else(|e| panic!("{release}: {e:#}"));
        s.restart_agent("");
        let mode = one
            .1
            .select("nvmeof_exporter_ebpf_attach_mode", &[])
            .next()
            .and_then(|m| m.label("mode").map(str::to_owned));
        if mode.as_deref() == Some("tracepoint") {
            // The classic mode sees no request (5.10's modules have no BTF): said, and absent.
            assert!(
                log.contains("host wait is not measured"),
                "{release}: {log}"
            );
            assert!(
                !one.1.has_family("nvmeof_io_host_wait_seconds"),
                "{release}"
            );
            eprintln!("{release}: classic mode: host wait not measured, as the log says");
            return;
        }
        for (what, (before, after, traced), readers) in
            [("one reader", &one, 1), ("eight readers", &many, READERS)]
        {
            let reads = (readers * READS) as f64;
            let n = after.moved_from(before, "nvmeof_io_host_wait_seconds_count", &by);
            let sum = after.moved_from(before, "nvmeof_io_host_wait_seconds_sum", &by);
            let fabric = after.moved_from(
                before,
                "nvmeof_io_latency_seconds_sum",
                &[by[0], ("opclass", "read")],
            );
            let fabric_n = after.moved_from(
                before,
                "nvmeof_io_latency_seconds_count",
                &[by[0], ("opclass", "read")],
            );
            let trace_sum = traced.iter().sum::<u64>() as f64 / 1e9;
            eprintln!(
                "{release} {what}: {n} host waits, mean {:.3} ms (trace: {} reads, mean {:.3} ms); \
                 fabric mean {:.3} ms over {fabric_n}",
                sum / n * 1e3,
                traced.len(),
                trace_sum / traced.len() as f64 * 1e3,
                fabric / fabric_n * 1e3
            );
            assert_eq!(n, reads, "{release} {what}: host waits counted");
            assert_eq!(
                traced.len() as f64,
                reads,
                "{release} {what}: reads in the trace"
            );
            // Each wait is the span between two probes the trace and the programs both hit; they
            // run one after the other, tens of µs apart under TCG at most.
            let slack = 100e-6 * reads + 0.05 * trace_sum;
            assert!(
                (sum - trace_sum).abs() <= slack,
                "{release} {what}: {sum} s against the trace's {trace_sum} s"
            );
            // netem's 5 ms is on the fabric side whatever the load.
            assert!(
                fabric / fabric_n >= 0.005,
                "{release} {what}: fabric mean {}",
                fabric / fabric_n
            );
            // Relative to the fabric's time, which TCG's load stretches alike (seen: 0.2-0.5 ms
            // alone against 6-7 ms; 3.7-4.5 ms at eight against 9-12 ms).
            let share = (sum / n) / (fabric / fabric_n);
            if readers == 1 {
                // Alone, a read finds a free tag at once.
                assert!(
                    share < 0.2,
                    "{release} {what}: host wait {share:.2} of the fabric's"
                );
            } else {
                // Eight readers, four tags: half wait a command's time for one.
                assert!(
                    share > 0.25,
                    "{release} {what}: host wait {share:.2} of the fabric's"
                );
            }
        }
    });
}
