//! The transport collectors and connection errors against the real kernel: soft-RoCE counters
//! tied to the RDMA controller, TCP retransmissions of one path under netem loss, and error
//! completions of a cut path counted exactly as tracefs sees them. Each test restores what it
//! changes (qdiscs, iopolicy, ports, tracing).
#![cfg(feature = "lab")]

use std::time::Duration;

use nvmeof_tests::{kernels, with_lab, Metrics, Shared};

fn nqn(t: &str) -> String {
    format!("nqn.2026-11.io.nvmeof-exporter.lab:{t}")
}

fn scrape_after_drain(s: &mut Shared) -> Metrics {
    std::thread::sleep(Duration::from_millis(2500));
    s.scrape().0
}

/// Scrapes until `ready` holds (a collector that missed its deadline under TCG serves its output
/// from the next scrape on), at most 12 times; the last page either way.
fn scrape_until(s: &mut Shared, ready: impl Fn(&Metrics) -> bool) -> Metrics {
    let mut m = scrape_after_drain(s);
    for _ in 0..12 {
        if ready(&m) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1500));
        m = s.scrape().0;
    }
    m
}

/// Whether `collector` answered this scrape in time (its output is this scrape's, not a cached
/// one from a run that started earlier).
fn fresh(m: &Metrics, collector: &str) -> bool {
    m.sum(
        "nvmeof_exporter_collector_success",
        &[("collector", collector)],
    ) == 1.0
}

fn agent_log(s: &mut Shared) -> String {
    s.lab
        .sh("tail -20 /tmp/agent.log")
        .map(|o| o.out)
        .unwrap_or_default()
}

fn sh(s: &mut Shared, script: &str) -> String {
    s.lab
        .sh_ok(script)
        .unwrap_or_else(|e| panic!("{script}: {e:#}"))
        .trim()
        .to_owned()
}

/// Shell: sets the iopolicy of the tcp subsystem (both paths carry I/O with round-robin).
fn tcp_iopolicy(policy: &str) -> String {
    format!(
        "for s in /sys/class/nvme-subsystem/*; do
             [ \"$(cat $s/subsysnqn)\" = \"$(nqn tcp)\" ] && echo {policy} > $s/iopolicy
         done; true"
    )
}

#[test]
fn rdma_counters_move_with_io_and_belong_to_the_rdma_controller() {
    for k in kernels() {
        with_lab(k, |s| {
            let release = s.lab.kernel.release.clone();
            s.ensure_agent();
            let ctrl = sh(s, "ctrl_of rdma");
            let by = [("controller", ctrl.as_str())];
            let before = scrape_until(s, |m| {
                m.has_family("nvmeof_rdma_hw_counters_total") && fresh(m, "rdma")
            });
            sh(
                s,
                "dd if=/dev/zero of=$(dev_of rdma) bs=4k count=256 oflag=direct 2>/dev/null",
            );
            let after = scrape_until(s, |m| {
                fresh(m, "rdma")
                    && m.sum("nvmeof_rdma_hw_counters_total", &[("counter", "sent_pkts")])
                        > before.sum("nvmeof_rdma_hw_counters_total", &[("counter", "sent_pkts")])
            });
            let info: Vec<_> = after.select("nvmeof_rdma_port_info", &by).collect();
            assert_eq!(info.len(), 1, "{release}: one port for {ctrl}");
            assert_eq!(info[0].label("device"), Some("rxe0"));
            assert_eq!(info[0].label("port"), Some("1"));
            assert_eq!(info[0].label("netdev"), Some("veth0"));
            assert_eq!(info[0].label("subsystem"), Some(nqn("rdma").as_str()));
            let delta = |c: &str| {
                let want = [("controller", ctrl.as_str()), ("counter", c)];
                after.sum("nvmeof_rdma_hw_counters_total", &want)
                    - before.sum("nvmeof_rdma_hw_counters_total", &want)
            };
            eprintln!(
                "{release}: rxe0 for {ctrl} after 256 writes: sent_pkts +{}, rcvd_pkts +{}",
                delta("sent_pkts"),
                delta("rcvd_pkts")
            );
            // Each 4 KiB write is at least a command and its data one way, a response back.
            assert!(
                delta("sent_pkts") >= 256.0,
                "{release}: sent_pkts {}",
                delta("sent_pkts")
            );
            assert!(
                delta("rcvd_pkts") >= 256.0,
                "{release}: rcvd_pkts {}",
                delta("rcvd_pkts")
            );
            assert_eq!(delta("retry_exceeded_err"), 0.0);
            // No other controller is tied to an RDMA port.
            assert_eq!(after.select("nvmeof_rdma_port_info", &[]).count(), 1);
        });
    }
}

#[test]
fn netem_loss_on_one_tcp_path_raises_only_its_retransmissions() {
    for k in kernels() {
        with_lab(k, |s| {
            let release = s.lab.kernel.release.clone();
            s.ensure_agent();
            let lossy = sh(s, "ctrl_of tcp 4421");
            let clean = sh(s, "ctrl_of tcp 4420");
            let retrans = |m: &Metrics, c: &str| {
                m.sum(
                    "nvmeof_tcp_retransmitted_segments_total",
                    &[("controller", c)],
                )
            };
            let before = scrape_until(s, |m| {
                fresh(m, "tcp")
                    && m.sum("nvmeof_tcp_connections", &[("controller", &lossy)]) > 0.0
                    && m.sum("nvmeof_tcp_connections", &[("controller", &clean)]) > 0.0
            });
            for c in [&lossy, &clean] {
                // The admin queue and one I/O queue per CPU.
                assert!(
                    before.sum("nvmeof_tcp_connections", &[("controller", c)]) >= 2.0,
                    "{release}: connections of {c}:\n{}\n{}",
                    before.text,
                    agent_log(s)
                );
            }
            // Loss only on what the host sends to port 4421: a prio qdisc on lo whose third band
            // drops 10 %, and a u32 filter sending that port there.
            let out = s
                .lab
                .sh(&format!(
                    "{}
                     /usr/bin/tc qdisc add dev lo root handle 1: prio &&
                     /usr/bin/tc qdisc add dev lo parent 1:3 handle 30: netem loss 10% &&
                     /usr/bin/tc filter add dev lo parent 1:0 protocol ip prio 1 u32 \
                         match ip dport 4421 0xffff flowid 1:3 &&
                     dd if=/dev/zero of=$(dev_of tcp) bs=64k count=128 oflag=direct 2>&1
                     rc=$?
                     /usr/bin/tc qdisc del dev lo root
                     {}
                     exit $rc",
                    tcp_iopolicy("round-robin"),
                    tcp_iopolicy("numa")
                ))
                .unwrap();
            assert_eq!(out.rc, 0, "{release}: {}", out.out);
            let after = scrape_until(s, |m| {
                retrans(m, &lossy) > retrans(&before, &lossy) && fresh(m, "tcp")
            });
            let lossy_delta = retrans(&after, &lossy) - retrans(&before, &lossy);
            let clean_delta = retrans(&after, &clean) - retrans(&before, &clean);
            eprintln!(
                "{release}: retransmitted segments, 10 % loss towards 4421: {lossy} +{lossy_delta}, {clean} +{clean_delta}"
            );
            assert!(
                lossy_delta > 0.0,
                "{release}: no retransmissions on {lossy}"
            );
            assert_eq!(clean_delta, 0.0, "{release}: retransmissions on {clean}");
            let sent =
                |m: &Metrics, c: &str| m.sum("nvmeof_tcp_sent_bytes_total", &[("controller", c)]);
            // Both paths carried data (round-robin): the clean one's silence is not idleness.
            assert!(sent(&after, &clean) - sent(&before, &clean) > 1_000_000.0);
            assert!(sent(&after, &lossy) - sent(&before, &lossy) > 1_000_000.0);
        });
    }
}

#[test]
#[ignore = "timing-dependent: on an unloaded host the target drains in-flight commands before it drops the path, so no command fails (0 error completions in tracefs in 4 of 4 runs); passed under heavy load (3 traced = 3 counted). Needs a cut that fails commands reliably (e.g. drop packets instead of unlinking the port)."]
fn a_cut_path_counts_its_error_completions_as_tracefs_does() {
    const KINDS: [&str; 7] = [
        "path_error",
        "host_path_error",
        "abort",
        "transport_error",
        "command_error",
        "keep_alive_failure",
        "connect_failure",
    ];
    for k in kernels() {
        with_lab(k, |s| {
            let release = s.lab.kernel.release.clone();
            s.ensure_agent();
            let cut = sh(s, "ctrl_of tcp 4421");
            let errors = |m: &Metrics, c: Option<&str>| -> f64 {
                KINDS
                    .iter()
                    .map(|kind| {
                        let mut want = vec![("kind", *kind)];
                        if let Some(c) = c {
                            want.push(("controller", c));
                        }
                        m.sum("nvmeof_connection_errors_total", &want)
                    })
                    .sum()
            };
            let before = scrape_until(s, |m| {
                m.has_family("nvmeof_connection_errors_total") && fresh(m, "io")
            });
            assert!(
                before.has_family("nvmeof_connection_errors_total"),
                "{release}: {}",
                agent_log(s)
            );
            // Four readers on both paths; port 2 (4421) loses the subsystem under them, and gets it back.
            let out = s
                .lab
                .sh(&format!(
                    "T=/sys/kernel/tracing
                     echo > $T/trace
                     echo 1 > $T/events/nvme/nvme_complete_rq/enable
                     {}
                     d=$(dev_of tcp)
                     errs() {{ grep nvme_complete_rq $T/trace | grep -c 'status=0x[1-9a-f][0-9a-f]*$'; }}
                     # A cut with no command in flight on that path fails none: cut again.
                     for attempt in 1 2 3; do
                         for i in 1 2 3 4; do
                             dd if=$d of=/dev/null bs=4k count=5000 skip=$((i * 5000)) iflag=direct 2>/dev/null &
                         done
                         sleep 1
                         unexpose 2 tcp
                         sleep 4
                         expose 2 tcp
                         wait
                         wait_live 30; live=$?
                         echo \"cut $attempt: $(errs) error completions so far\"
                         [ $live = 0 ] || break
                         [ \"$(errs)\" -gt 0 ] && break
                     done
                     echo 0 > $T/events/nvme/nvme_complete_rq/enable
                     {}
                     echo traced $(errs)
                     exit $live",
                    tcp_iopolicy("round-robin"),
                    tcp_iopolicy("numa")
                ))
                .unwrap();
            assert_eq!(
                out.rc, 0,
                "{release}: the path did not come back:\n{}",
                out.out
            );
            let traced: f64 = out
                .out
                .lines()
                .find_map(|l| l.strip_prefix("traced "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("{release}: no count in {}", out.out));
            let after = scrape_until(s, |m| {
                errors(m, None) - errors(&before, None) >= traced && fresh(m, "io")
            });
            let counted = errors(&after, None) - errors(&before, None);
            let on_cut = errors(&after, Some(&cut)) - errors(&before, Some(&cut));
            let by_kind: Vec<String> = KINDS
                .iter()
                .map(|kind| {
                    let w = [("controller", cut.as_str()), ("kind", *kind)];
                    format!(
                        "{kind}={}",
                        after.sum("nvmeof_connection_errors_total", &w)
                            - before.sum("nvmeof_connection_errors_total", &w)
                    )
                })
                .collect();
            eprintln!(
                "{release}: {}traced {traced}, counted {counted}; {cut}: {by_kind:?}",
                out.out
            );
            assert!(
                traced > 0.0,
                "{release}: cutting the path made no error completion"
            );
            assert_eq!(
                counted, traced,
                "{release}: counted vs traced ({by_kind:?})"
            );
            assert_eq!(on_cut, traced, "{release}: errors belong to {cut}");
        });
    }
}
