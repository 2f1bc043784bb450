//! Fabric state end to end: every transport's controller live with its address, a cut TCP path
//! seen leaving live with the kernel's reconnect attempts counted, I/O on the other path, the
//! path restored, a reset between two scrapes counted, and a controller past its
//! ctrl_loss_tmo gone from `/metrics`. Every scrape is timed from the host.
#![cfg(feature = "lab")]

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::Duration;

use nvmeof_tests::{nqn, on_each_lab, Metrics, Shared};

/// The budget of one scrape, measured from the host through the forwarded port
/// (`NVMEOF_LAB_SCRAPE_BUDGET_MS`, 100 by default).
fn scrape_budget() -> Duration {
    let ms = std::env::var("NVMEOF_LAB_SCRAPE_BUDGET_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    Duration::from_millis(ms)
}

/// No single scrape may take longer than this, whatever the load.
const SCRAPE_CEILING: Duration = Duration::from_secs(1);

/// Scrapes in rounds of three until every collector the assertions read finished in the same
/// scrape (a run can miss its deadline and serve the previous output). Under TCG on a shared
/// machine most scrapes are slowed by the emulation itself (the guest's own curl sees 70–600 ms
/// with or without this collector): the fastest scrape of up to three rounds is held to the
/// budget, every scrape to the ceiling, and every figure is printed.
fn fresh(s: &mut Shared, what: &str) -> Metrics {
    s.ensure_agent();
    let release = s.lab.kernel.release.clone();
    let budget = scrape_budget();
    let mut times = Vec::new();
    let mut good = None;
    for round in 0..6 {
        for _ in 0..3 {
            let (m, took) = s.scrape();
            times.push(took);
            assert!(
                took < SCRAPE_CEILING,
                "{release} {what}: scrape took {took:?}"
            );
            let ok = ["controller", "subsystem", "state", "io"]
                .iter()
                .all(|c| m.sum("nvmeof_exporter_collector_success", &[("collector", c)]) == 1.0);
            if ok {
                good = Some(m);
            }
        }
        let best = times.iter().min().copied().unwrap_or_default();
        if good.is_some() && (best < budget || round >= 2) {
            break;
        }
    }
    let best = times.iter().min().copied().unwrap_or_default();
    eprintln!("{release} {what}: scrapes answered in {times:?}");
    assert!(
        best < budget,
        "{release} {what}: fastest of {times:?} over {budget:?}"
    );
    good.unwrap_or_else(|| panic!("{release} {what}: no scrape with every collector fresh"))
}

/// The `nvmeof_smart_*` series of controller `c` in the next scrape in which the `smart`
/// collector ran (a run past its deadline serves the previous output).
fn smart_series_of(s: &mut Shared, c: &str) -> Vec<String> {
    for _ in 0..20 {
        let (m, _) = s.scrape();
        if m.sum(
            "nvmeof_exporter_collector_success",
            &[("collector", "smart")],
        ) == 1.0
        {
            return m
                .samples
                .iter()
                .filter(|x| x.name.starts_with("nvmeof_smart_"))
                .filter(|x| x.label("controller") == Some(c))
                .map(|x| x.name.clone())
                .collect();
        }
    }
    panic!(
        "{}: the smart collector missed 20 scrapes",
        s.lab.kernel.release
    )
}

/// Runs `body` with the agent at the product's default collector deadline (the lab's agents run
/// with a longer one, so that value assertions see fresh collectors under TCG) and holds every
/// scrape answered meanwhile to what issue 4 asks: the exporter's own time for it
/// (`nvmeof_exporter_scrape_duration_seconds`, from the request to the encoded page; the
/// emulated network is not the exporter's) under 100 ms, but for one emulation stall. Ten
/// healthy scrapes first: only on a host so loaded that even those went over is their slowest
/// bucket the bound.
fn scrapes_stay_fast<R>(s: &mut Shared, what: &str, body: impl FnOnce(&mut Shared) -> R) -> R {
    let release = s.lab.kernel.release.clone();
    s.restart_agent("--collector.timeout=50ms");
    let (start, _) = s.scrape();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(150));
        let _ = s.scrape();
    }
    let (healthy_end, _) = s.scrape();
    let healthy = healthy_end.served_since(&start);
    let r = catch_unwind(AssertUnwindSafe(|| body(s)));
    let during = if r.is_ok() {
        let (end, _) = s.scrape();
        Some(end.served_since(&healthy_end))
    } else {
        None
    };
    // The lab's own agent again, whatever happened.
    s.restart_agent("");
    let r = r.unwrap_or_else(|e| resume_unwind(e));
    let during = during.expect("measured when the body passed");
    eprintln!("{release} {what}: healthy: {healthy}; throughout: {during}");
    let bound = healthy.max_le.max(0.1);
    // Under TCG the guest itself stalls now and then (seen once: one scrape of twelve at
    // 100–250 ms on 6.12 while the kernel tore a controller down): one such scrape is tolerated,
    // none over 250 ms. A scrape that waited on the kernel would take seconds.
    let one_stall = during.over_100ms <= 1.0 && during.max_le <= 0.25;
    assert!(
        during.scrapes >= 5.0 && (during.max_le <= bound || one_stall),
        "{release} {what}: {during} (bound {bound} s; healthy: {healthy})"
    );
    r
}

fn warm_up(s: &mut Shared) {
    s.ensure_agent();
    for _ in 0..3 {
        let _ = s.scrape();
    }
}

fn ctrl(s: &mut Shared, sub: &str, port: &str) -> String {
    s.lab
        .sh_ok(&format!("ctrl_of {sub} {port}"))
        .unwrap()
        .trim()
        .to_owned()
}

fn transitions(m: &Metrics, c: &str, from: &str, to: &str) -> f64 {
    m.sum(
        "nvmeof_controller_state_transitions_total",
        &[("controller", c), ("from", from), ("to", to)],
    )
}

fn attempts(m: &Metrics, c: &str) -> f64 {
    m.sum("nvmeof_reconnect_attempts_total", &[("controller", c)])
}

/// The first number after PREFIX in the kernel's last `nvme nvmeN: PREFIX ...` line (0 when
/// none): 6.1 logs "Successfully reconnected (8 attempt)", 6.12 "(attempt 8/600)".
fn logged(s: &mut Shared, c: &str, prefix: &str) -> f64 {
    let out = s
        .lab
        .sh_ok(&format!(
            "dmesg | grep 'nvme {c}: {prefix}' | tail -1 | sed 's/.*{prefix}[^0-9]*\\([0-9]*\\).*/\\1/'"
        ))
        .unwrap();
    out.trim().parse().unwrap_or(0.0)
}

#[test]
fn every_transport_is_live_with_its_address_and_kprobes_count() {
    on_each_lab(|s, release| {
        warm_up(s);
        let m = fresh(s, "addresses");
        // kprobes need nvme_core's BTF for the struct offsets (Debian's 5.10 has no module
        // BTF): where it exists they must be on, elsewhere the poller, saying so.
        let module_btf = s.lab.sh("[ -e /sys/kernel/btf/nvme_core ]").unwrap().rc == 0;
        let source = if module_btf { "kprobe" } else { "sysfs_poll" };
        assert_eq!(
            m.sum("nvmeof_exporter_state_source", &[("source", source)]),
            1.0,
            "{release}: state transitions are not caught by {source}:\n{}",
            s.lab.sh("cat /tmp/agent.log").unwrap().out
        );
        let fc_tgt = "nn-0x10000000000000b1:pn-0x20000000000000b1";
        let fc_host = "nn-0x10000000000000a1:pn-0x20000000000000a1";
        let want: Vec<(&str, &str, &str, &str)> = vec![
            ("tcp", "127.0.0.1", "4420", ""),
            ("tcp", "127.0.0.1", "4421", ""),
            ("rdma", "192.0.2.1", "4420", ""),
            ("fc", fc_tgt, "", fc_host),
            ("loop", "", "", ""),
        ];
        let transports = s.expected_transports();
        for (t, traddr, trsvcid, host_traddr) in want {
            if !transports.contains(&t) {
                continue;
            }
            let sub = nqn(t);
            let want = [
                ("subsystem", sub.as_str()),
                ("traddr", traddr),
                ("trsvcid", trsvcid),
                ("host_traddr", host_traddr),
            ];
            let info: Vec<_> = m.select("nvmeof_controller_info", &want).collect();
            assert_eq!(info.len(), 1, "{release}: {t} {traddr} {trsvcid}");
            let c = info[0].label("controller").unwrap();
            let by = [("controller", c), ("state", "live")];
            assert_eq!(m.sum("nvmeof_subsystem_state", &by), 1.0, "{release}: {c}");
            assert_eq!(
                m.sum(
                    "nvmeof_transport_type",
                    &[("controller", c), ("transport", t)]
                ),
                1.0,
                "{release}: {c} transport"
            );
            assert_eq!(
                m.sum("nvmeof_controller_since_live_seconds", &[("controller", c)]),
                0.0,
                "{release}: {c} is live"
            );
            // Kprobes on: every controller has an attempts series from the start. The poller
            // sees no attempts (they happen inside `connecting`) and claims none.
            assert_eq!(
                m.select("nvmeof_reconnect_attempts_total", &[("controller", c)])
                    .count(),
                usize::from(module_btf),
                "{release}: {c} attempts"
            );
        }
    });
}

#[test]
fn a_reset_between_two_scrapes_is_counted() {
    on_each_lab(|s, release| {
        warm_up(s);
        let c = ctrl(s, "tcp", "4421");
        let before = fresh(s, "before reset");
        // live → resetting → connecting → live in milliseconds, all between two scrapes.
        s.lab
            .sh_ok(&format!(
                "echo 1 > /sys/class/nvme/{c}/reset_controller; wait_live 20"
            ))
            .unwrap();
        let after = fresh(s, "after reset");
        if after.sum("nvmeof_exporter_state_source", &[("source", "sysfs_poll")]) == 1.0 {
            // No kprobes on this kernel (no nvme_core BTF: Debian's 5.10): the 100 ms poller
            // cannot see a reset that lasts milliseconds, and says its counts are a lower
            // bound. What this test proves needs the kprobes.
            let no_btf = s.lab.sh("[ ! -e /sys/kernel/btf/nvme_core ]").unwrap().rc == 0;
            assert!(no_btf, "{release}: polling although nvme_core has BTF");
            eprintln!("{release}: kprobes off (no nvme_core BTF): exact counts not checked");
            return;
        }
        for (from, to) in [
            ("live", "resetting"),
            ("resetting", "connecting"),
            ("connecting", "live"),
        ] {
            assert_eq!(
                transitions(&after, &c, from, to) - transitions(&before, &c, from, to),
                1.0,
                "{release}: {c} {from} → {to}"
            );
        }
        assert_eq!(
            attempts(&after, &c),
            attempts(&before, &c),
            "{release}: a reset is no reconnect attempt"
        );
        let last = after.sum(
            "nvmeof_controller_last_transition_timestamp_seconds",
            &[("controller", &c)],
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Guest and host clocks agree to within the boot's skew.
        assert!(
            (now - last).abs() < 120.0,
            "{release}: last transition {last} vs {now}"
        );
    });
}

/// A scrape in which the `io` and `state` collectors answered within their deadline (not held
/// to the scrape budget: what it counts is the point, not how fast).
fn counted(s: &mut Shared) -> Metrics {
    s.ensure_agent();
    let mut last = String::new();
    for _ in 0..20 {
        let (m, _) = s.scrape();
        if ["io", "state"]
            .iter()
            .all(|c| m.sum("nvmeof_exporter_collector_success", &[("collector", c)]) == 1.0)
        {
            return m;
        }
        last = m.text;
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("no scrape with io and state on time in 20 tries; the last:\n{last}");
}

/// With every counting map cut to 2 entries, what the kernel did is still all accounted for:
/// each event is either in its series or in its map's `map_full` count, and each full map is
/// logged once. The truth: two resets are six transitions (the test above shows a reset's three),
/// and nvme-cli reports the status of each out-of-range read it sent, one per subsystem.
#[test]
fn full_counting_maps_count_what_they_could_not_and_say_so_once() {
    on_each_lab(|s, release| {
        s.restart_agent("--ebpf.count-map-entries=2");
        let c = ctrl(s, "tcp", "4421");
        let before = counted(s);
        // One read of an LBA past the end of a namespace of three subsystems: three error
        // completions on three controllers, so three keys for maps of two.
        let out = s
            .lab
            .sh_ok(
                "for t in tcp loop rdma; do
                     d=$(dev_of $t) || exit 9
                     lba=$(cat /sys/block/${d#/dev/}/queue/logical_block_size)
                     nvme read $d --start-block=1099511627775 --block-count=0 \
                         --data-size=$lba --data=/dev/null 2>&1 && echo \"$t: no error\"
                 done; true",
            )
            .unwrap_or_else(|e| panic!("{release}: {e:#}"));
        // nvme-cli prints the status of each command the controller failed (nvmet on null_blk
        // answers an LBA past the end with an internal error, a real drive with LBA Out of Range).
        let refused = out.matches("NVMe status:").count();
        let kprobes = before.sum("nvmeof_exporter_state_source", &[("source", "kprobe")]) == 1.0;
        if kprobes {
            s.lab
                .sh_ok(&format!(
                    "for i in 1 2; do echo 1 > /sys/class/nvme/{c}/reset_controller; wait_live 20; done"
                ))
                .unwrap_or_else(|e| panic!("{release}: {e:#}"));
        }
        let after = counted(s);
        let log = s
            .lab
            .sh_ok("cat /tmp/agent.log")
            .unwrap_or_else(|e| panic!("{release}: {e:#}"));
        s.restart_agent("");
        assert_eq!(refused, 3, "{release}: nvme-cli said:\n{out}");
        let delta =
            |name: &str, want: &[(&str, &str)]| after.sum(name, want) - before.sum(name, want);
        let by_status = delta("nvmeof_io_errors_total", &[]);
        let by_kind = delta("nvmeof_connection_errors_total", &[]);
        let statuses_full = delta(
            "nvmeof_exporter_ebpf_map_full_total",
            &[("map", "STATUSES")],
        );
        let kinds_full = delta(
            "nvmeof_exporter_ebpf_map_full_total",
            &[("map", "CONN_ERRORS")],
        );
        eprintln!(
            "{release}: 3 error completions: {by_status} by status + {statuses_full} STATUSES \
             full, {by_kind} by kind + {kinds_full} CONN_ERRORS full"
        );
        // Two keys fit, the third controller's error finds the map full.
        assert_eq!(
            (by_status, statuses_full),
            (2.0, 1.0),
            "{release}: STATUSES"
        );
        assert_eq!((by_kind, kinds_full), (2.0, 1.0), "{release}: CONN_ERRORS");
        let mut full_maps = vec!["STATUSES", "CONN_ERRORS"];
        if kprobes {
            let counted: f64 = [
                ("live", "resetting"),
                ("resetting", "connecting"),
                ("connecting", "live"),
            ]
            .iter()
            .map(|(from, to)| {
                transitions(&after, &c, from, to) - transitions(&before, &c, from, to)
            })
            .sum();
            let all = delta("nvmeof_controller_state_transitions_total", &[]);
            let lost = delta(
                "nvmeof_exporter_state_map_full_total",
                &[("map", "TRANSITIONS")],
            );
            eprintln!("{release}: 6 transitions: {counted} counted on {c} ({all} in all) + {lost} TRANSITIONS full");
            // Two (from, to) keys fit; each reset's third transition finds the map full.
            assert_eq!(
                (counted, all, lost),
                (4.0, 4.0, 2.0),
                "{release}: TRANSITIONS"
            );
            full_maps.push("TRANSITIONS");
        } else {
            eprintln!("{release}: kprobes off (no nvme_core BTF): TRANSITIONS not exercised");
        }
        for map in full_maps {
            let told = log
                .lines()
                .filter(|l| l.contains(&format!("map {map} is full (2 entries)")))
                .count();
            assert_eq!(told, 1, "{release}: {map} in the agent's log:\n{log}");
        }
    });
}

#[test]
fn a_cut_tcp_path_reconnects_counted_while_io_flows_on_the_other() {
    on_each_lab(|s, release| {
        scrapes_stay_fast(s, "a cut path", |s| {
            warm_up(s);
            let sub = nqn("tcp");
            let c = ctrl(s, "tcp", "4420");
            let before = fresh(s, "before cut");
            s.lab.sh_ok("dmesg -c > /dev/null; unexpose 1 tcp").unwrap();
            // reconnect_delay=1: a few attempts fail in 4 s.
            s.lab
            .sh_ok(&format!(
                "i=0; while [ $(cat /sys/class/nvme/{c}/state) = live ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; sleep 4"
            ))
            .unwrap();
            // I/O keeps flowing on the other path: 1 MiB of direct writes through the head.
            let dd = s
                .lab
                .sh("dd if=/dev/zero of=$(dev_of tcp) bs=64k count=16 oflag=direct 2>&1")
                .unwrap();
            std::thread::sleep(Duration::from_millis(2500)); // one drain of the io maps
            let failed_before = logged(s, &c, "Failed reconnect attempt");
            let cut = fresh(s, "path cut");
            let failed_after = logged(s, &c, "Failed reconnect attempt");

            // Restore the path before any assertion, so that a failure leaves the lab whole.
            let restored = s.lab.sh("expose 1 tcp; wait_live 30").unwrap();
            let back = fresh(s, "path restored");
            let total = logged(s, &c, "Successfully reconnected");
            let counted = attempts(&cut, &c) - attempts(&before, &c);
            let counted_back = attempts(&back, &c) - attempts(&before, &c);
            eprintln!(
            "{release}: {c} cut: {counted} attempts counted, kernel logged {failed_before}..{failed_after}; \
             restored after {total} attempts (kernel), {counted_back} counted"
        );

            assert_eq!(dd.rc, 0, "{release}: dd on the remaining path: {}", dd.out);
            let live = |m: &Metrics| {
                m.sum(
                    "nvmeof_subsystem_state",
                    &[("controller", &c), ("state", "live")],
                )
            };
            assert_eq!(live(&cut), 0.0, "{release}: {c} left live");
            let since = |m: &Metrics| {
                m.sum(
                    "nvmeof_controller_since_live_seconds",
                    &[("controller", &c)],
                )
            };
            assert!(since(&cut) > 3.0, "{release}: {c} since live");
            let exact = cut.sum("nvmeof_exporter_state_source", &[("source", "kprobe")]) == 1.0;
            if exact {
                assert_eq!(
                    transitions(&cut, &c, "live", "resetting")
                        - transitions(&before, &c, "live", "resetting"),
                    1.0
                );
                assert!(
                    failed_before >= 2.0 && counted >= failed_before && counted <= failed_after,
                    "{release}: {counted} attempts counted, kernel logged {failed_before}..{failed_after}"
                );
            } else {
                // Polled every 100 ms (no kprobes on this kernel): a lower bound. Leaving
                // live is seen (whatever state the poll caught next); attempts not above the
                // kernel's.
                let left: f64 = cut
                    .select(
                        "nvmeof_controller_state_transitions_total",
                        &[("controller", &c), ("from", "live")],
                    )
                    .map(|x| x.value)
                    .sum::<f64>()
                    - before
                        .select(
                            "nvmeof_controller_state_transitions_total",
                            &[("controller", &c), ("from", "live")],
                        )
                        .map(|x| x.value)
                        .sum::<f64>();
                assert!(
                    left >= 1.0,
                    "{release}: leaving live not seen by the poller"
                );
                assert!(
                    counted <= failed_after,
                    "{release}: {counted} > {failed_after}"
                );
            }
            let paths = |m: &Metrics, f: &str| m.sum(f, &[("subsystem", &sub)]);
            assert_eq!(paths(&cut, "nvmeof_subsystem_paths"), 2.0);
            assert_eq!(
                paths(&cut, "nvmeof_subsystem_live_paths"),
                1.0,
                "{release}: one of two paths live"
            );
            // Restored: live again, the successful attempt counted too.
            assert_eq!(restored.rc, 0, "{release}: {}", restored.out);
            assert!(total >= 3.0, "{release}: kernel log: {total}");
            if exact {
                assert_eq!(counted_back, total, "{release}");
            } else {
                assert!(counted_back <= total, "{release}: {counted_back} > {total}");
            }
            assert_eq!(live(&back), 1.0);
            assert_eq!(paths(&back, "nvmeof_subsystem_live_paths"), 2.0);
            assert_eq!(since(&back), 0.0);
        })
    });
}

#[test]
fn a_controller_past_its_ctrl_loss_tmo_vanishes_from_metrics() {
    on_each_lab(|s, release| {
        scrapes_stay_fast(s, "ctrl_loss_tmo expiry", |s| {
            warm_up(s);
            // A third path of its own (port 6), connected with a 3 s ctrl_loss_tmo.
            let c = s
            .lab
            .sh_ok(
                "port 6 tcp ipv4 127.0.0.1 4422 && expose 6 tcp &&
                 connect \"transport=tcp,traddr=127.0.0.1,trsvcid=4422,nqn=$(nqn tcp),reconnect_delay=1,ctrl_loss_tmo=3\" &&
                 wait_live 20 && ctrl_of tcp 4422",
            )
            .unwrap()
            .trim()
            .to_owned();
            let with = fresh(s, "third path");
            let errors_before = with.sum(
                "nvmeof_exporter_collect_errors_total",
                &[("collector", "state")],
            );
            // A deadline missed, a run still stuck from an earlier scrape or failed while the
            // emulated guest stalls also counts as an error; the agent logs each, so those
            // are told apart, and a failure the removal caused would name the controller.
            let misses = |s: &mut Shared| -> f64 {
                let out = s
                    .lab
                    .sh("grep -cE 'collector state(: previous run still stuck| missed its deadline| failed)' /tmp/agent.log")
                    .map(|o| o.out)
                    .unwrap_or_default();
                out.trim().parse().unwrap_or(0.0)
            };
            let misses_before = misses(s);
            assert_eq!(
                with.sum(
                    "nvmeof_subsystem_state",
                    &[("controller", &c), ("state", "live")]
                ),
                1.0,
                "{release}: {c}"
            );
            // Its SMART series first (the poller's first pass over it comes within seconds),
            // so that their absence below means something.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while smart_series_of(s, &c).is_empty() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{release}: {c} never got SMART series"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            // Cut it for good: the kernel gives up after ctrl_loss_tmo and removes it.
            s.lab
            .sh_ok(&format!(
                "unexpose 6 tcp; i=0; while [ -e /sys/class/nvme/{c} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; [ ! -e /sys/class/nvme/{c} ]; rmdir $CFG/ports/6"
            ))
            .unwrap();
            // At once, before the SMART poller's next pass (every 5 s at the default interval)
            // could have dropped it.
            let smart = smart_series_of(s, &c);
            assert!(smart.is_empty(), "{release}: {c} still has {smart:?}");
            std::thread::sleep(Duration::from_millis(2500)); // one drain of the io maps
            let without = fresh(s, "third path removed");
            let left: Vec<_> = without
                .samples
                .iter()
                .filter(|x| x.label("controller") == Some(c.as_str()))
                .map(|x| x.name.clone())
                .collect();
            assert!(left.is_empty(), "{release}: {c} still has {left:?}");
            let missed = misses(s) - misses_before;
            // A failure the removal caused would name the removed controller.
            let failures = s
                .lab
                .sh(&format!(
                    "grep 'collector state failed' /tmp/agent.log | grep -cw '{c}'"
                ))
                .map(|o| o.out)
                .unwrap_or_default();
            assert_eq!(failures.trim(), "0", "{release}: state failures naming {c}");
            assert_eq!(
                without.sum(
                    "nvmeof_exporter_collect_errors_total",
                    &[("collector", "state")]
                ) - missed,
                errors_before,
                "{release}: errors after the removal, besides {missed} logged misses, stuck runs \
                 or failures; the agent's log:\n{}",
                s.lab
                    .sh("grep -v ' DEBUG ' /tmp/agent.log | tail -20")
                    .map(|o| o.out)
                    .unwrap_or_default()
            );
            assert_eq!(
                without.sum("nvmeof_subsystem_paths", &[("subsystem", &nqn("tcp"))]),
                2.0
            );
        })
    });
}

/// The `io` collector during a cut: 64 KiB writes go over the remaining path and are counted
/// (with the classic tracepoints' command-id join they were not: nvme-tcp overwrites the recorded
/// id of writes past its inline size; the request-keyed programs fixed that).
#[test]
fn io_bytes_are_counted_while_one_tcp_path_is_cut() {
    on_each_lab(|s, release| {
        warm_up(s);
        let sub = nqn("tcp");
        let c = ctrl(s, "tcp", "4420");
        let before = fresh(s, "before cut (io)");
        let dd = s
            .lab
            .sh(&format!(
                "unexpose 1 tcp
                 i=0; while [ $(cat /sys/class/nvme/{c}/state) = live ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
                 dd if=/dev/zero of=$(dev_of tcp) bs=64k count=16 oflag=direct 2>&1"
            ))
            .unwrap();
        std::thread::sleep(Duration::from_millis(2500)); // one drain of the io maps
        let cut = fresh(s, "path cut (io)");
        let restored = s.lab.sh("expose 1 tcp; wait_live 30").unwrap();
        assert_eq!(dd.rc, 0, "{release}: {}", dd.out);
        assert_eq!(restored.rc, 0, "{release}: {}", restored.out);
        let bytes = |m: &Metrics| m.sum("nvmeof_io_write_bytes_total", &[("subsystem", &sub)]);
        assert!(
            bytes(&cut) - bytes(&before) >= 1048576.0,
            "{release}: {} bytes counted on the other path",
            bytes(&cut) - bytes(&before)
        );
    });
}
