//! The real agent, with its real eBPF programs, in the lab: what it serves through the forwarded
//! port on host loopback, and whether its I/O counters match what `dd` moved.
#![cfg(feature = "lab")]

use std::time::Duration;

use nvmeof_tests::{kernels, with_lab, Metrics, Shared};

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

/// Waits for one drain after the I/O (the default interval is 1 s) and scrapes.
fn scrape_after_drain(s: &mut Shared) -> Metrics {
    std::thread::sleep(Duration::from_millis(2500));
    s.scrape().0
}

#[test]
fn agent_serves_real_metrics_on_host_loopback() {
    let declared = declared_families();
    for k in kernels() {
        with_lab(k, |s| {
            let release = s.lab.kernel.release.clone();
            // Right after start every collector may miss its first deadline under TCG (two
            // vCPUs, one blocking task per collector): wait until the io collector has answered.
            let (mut m, mut took) = s.scrape();
            for _ in 0..10 {
                if m.has_family("nvmeof_exporter_ebpf_up") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1000));
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
}

#[test]
fn dd_bytes_and_commands_show_up_exactly_in_the_io_counters() {
    for k in kernels() {
        with_lab(k, |s| {
            let release = s.lab.kernel.release.clone();
            s.ensure_agent();
            for t in s.expected_transports() {
                let sub = nqn(t);
                let by = [("subsystem", sub.as_str())];
                let before = scrape_after_drain(s);
                // 256 writes then 128 reads of 4 KiB, direct, so each is exactly one command.
                s.lab
                    .sh_ok(&format!(
                        "d=$(dev_of {t}) || exit 9
                         dd if=/dev/zero of=$d bs=4k count=256 oflag=direct 2>/dev/null &&
                         dd if=$d of=/dev/null bs=4k count=128 iflag=direct 2>/dev/null"
                    ))
                    .unwrap_or_else(|e| panic!("{release} {t}: {e:#}"));
                let after = scrape_after_drain(s);
                let delta = |name: &str, extra: &[(&str, &str)]| {
                    let mut want: Vec<(&str, &str)> = by.to_vec();
                    want.extend_from_slice(extra);
                    after.sum(name, &want) - before.sum(name, &want)
                };
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
                let hist_count = delta(
                    "nvmeof_io_latency_histogram_seconds_count",
                    &[("opclass", "write")],
                );
                assert_eq!(
                    hist_count, 256.0,
                    "{release} {t}: histogram count of writes"
                );
            }
        });
    }
}
