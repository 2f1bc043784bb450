//! The node the tracer is built for, scaled to what TCG can run: 16 vCPUs and 16 controllers
//! (loop and TCP) with one I/O queue per vCPU, the agent in per-queue mode, reads on every queue
//! of every controller. Every queue's commands and bytes must be exactly the reads issued on it
//! (the dd's own count, not the agent's), and nothing may be dropped: no command past the arrays'
//! bounds, refused by the in-flight map, unmatched, or unread.
#![cfg(feature = "lab")]

use std::time::Duration;

use nvmeof_tests::{agent_bin, kernels, scrape_lab as scrape, Metrics, LAB_AGENT_ARGS};
use xtask::lab::{Lab, LabOptions};

const CPUS: u32 = 16;
const CONTROLLERS: u32 = 16;
/// Reads per (controller, CPU): 16 × 16 × 8 = 2048 commands in all.
const READS: u32 = 8;

#[test]
fn every_queue_of_sixteen_controllers_is_counted_exactly_with_nothing_dropped() {
    for k in kernels() {
        let mut opts = LabOptions::new(k);
        opts.agent = Some(agent_bin());
        opts.cpus = CPUS;
        opts.memory_mb = 3072;
        let mut lab = Lab::boot(&opts).expect("booting the 16-vCPU lab");
        let release = lab.kernel.release.clone();
        let out = lab
            .sh_ok_timeout(
                &format!("scale_topology {CONTROLLERS} && controllers"),
                Duration::from_secs(600),
            )
            .unwrap_or_else(|e| panic!("{release}: scale topology: {e:#}"));
        let ctrls: Vec<String> = out
            .lines()
            .filter(|l| l.contains(":scale-") && l.contains(" live "))
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect();
        assert_eq!(ctrls.len(), CONTROLLERS as usize, "{release}:\n{out}");
        let queues = lab
            .sh_ok("for c in /sys/class/nvme/nvme*; do cat $c/queue_count; done | sort -u")
            .unwrap();
        assert_eq!(
            queues.trim(),
            (CPUS + 1).to_string(),
            "{release}: every controller has one I/O queue per vCPU (plus the admin queue)"
        );
        lab.sh_ok(&format!(
            "agent_start {LAB_AGENT_ARGS} --metrics.per-queue && sleep 2 && scrape > /dev/null"
        ))
        .unwrap_or_else(|e| panic!("{release}: agent: {e:#}"));
        std::thread::sleep(Duration::from_secs(2));
        let before = scrape(&lab);
        lab.sh_ok_timeout(
            &format!("read_every_queue {CONTROLLERS} {READS}"),
            Duration::from_secs(900),
        )
        .unwrap_or_else(|e| panic!("{release}: reads: {e:#}"));
        // Two drains (1 s apart) after the last read.
        std::thread::sleep(Duration::from_secs(3));
        let after = scrape(&lab);

        let mut wrong = Vec::new();
        for c in &ctrls {
            for qid in 1..=CPUS {
                let q = qid.to_string();
                let by = [
                    ("controller", c.as_str()),
                    ("queue", q.as_str()),
                    ("opclass", "read"),
                ];
                let reads = after.moved_from(&before, "nvmeof_io_latency_seconds_count", &by);
                let bytes = after.moved_from(
                    &before,
                    "nvmeof_io_read_bytes_total",
                    &[("controller", c.as_str()), ("queue", q.as_str())],
                );
                if reads != f64::from(READS) || bytes != f64::from(READS * 4096) {
                    wrong.push(format!("{c} queue {q}: {reads} reads, {bytes} bytes"));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{release}: per-queue counts, {READS} reads of 4096 bytes wanted on each:\n{}",
            wrong.join("\n")
        );
        let events =
            |m: &Metrics, e: &str| m.sum("nvmeof_exporter_ebpf_events_total", &[("event", e)]);
        for e in ["slot_out_of_range", "inflight_full", "read_failed"] {
            assert_eq!(
                events(&after, e),
                0.0,
                "{release}: {e} since the agent started"
            );
        }
        assert_eq!(
            after.moved_from(
                &before,
                "nvmeof_exporter_ebpf_events_total",
                &[("event", "completion_unmatched")]
            ),
            0.0,
            "{release}: unmatched completions during the reads"
        );
        let setups = after.moved_from(
            &before,
            "nvmeof_exporter_ebpf_events_total",
            &[("event", "setup")],
        );
        let completions = after.moved_from(
            &before,
            "nvmeof_exporter_ebpf_events_total",
            &[("event", "complete")],
        );
        // The agent derives both from the queues' counts (the programs do not count them): each
        // must hold every read, and apart from a keep-alive in flight per controller at either
        // edge of the window, as many completions as setups.
        let reads = f64::from(CONTROLLERS * CPUS * READS);
        assert!(
            setups >= reads
                && completions >= reads
                && (setups - completions).abs() <= f64::from(CONTROLLERS),
            "{release}: {setups} setups and {completions} completions in a window of {reads} reads"
        );
        eprintln!(
            "{release}: {CONTROLLERS} controllers × {CPUS} queues: {reads} reads counted exactly, \
             {setups} setups and {completions} completions in the window, no drop"
        );
    }
}
