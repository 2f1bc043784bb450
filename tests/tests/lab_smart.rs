//! SMART in the lab, with Debian's nvme-cli as the oracle: every controller (the fabrics ones
//! and QEMU's emulated PCIe controller) exports the values `nvme smart-log -o json` prints for it
//! in the same run; a controller stuck connecting turns stale without slowing a scrape; without
//! CAP_SYS_ADMIN polls fail as `permission_denied`, logged once; a poll is one admin command once
//! Identify is known.
#![cfg(feature = "lab")]

use std::collections::BTreeMap;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use nvmeof_agent::nvme::CriticalWarning;
use nvmeof_tests::{json_numbers, on_each_lab, support, Metrics, Shared, LAB_AGENT_ARGS};

/// The lab agent's SMART polling in these tests: fast enough to wait for, slow enough for TCG.
const INTERVAL: Duration = Duration::from_secs(1);

/// Restarts the agent with a short SMART interval, runs `f`, then restores the default agent
/// for the other tests (also when `f` panics).
fn with_fast_smart<R>(s: &mut Shared, f: impl FnOnce(&mut Shared) -> R) -> R {
    with_fast_smart_and(s, "", f)
}

/// [`with_fast_smart`] with more agent flags (a flag given twice takes its last value).
fn with_fast_smart_and<R>(s: &mut Shared, extra: &str, f: impl FnOnce(&mut Shared) -> R) -> R {
    s.restart_agent(&format!("--smart.interval={}s {extra}", INTERVAL.as_secs()));
    let r = catch_unwind(AssertUnwindSafe(|| f(s)));
    s.restart_agent("");
    r.unwrap_or_else(|e| resume_unwind(e))
}

fn value(m: &Metrics, name: &str, ctrl: &str, extra: &[(&str, &str)]) -> Option<f64> {
    let mut want = vec![("controller", ctrl)];
    want.extend_from_slice(extra);
    let v: Vec<f64> = m.select(name, &want).map(|s| s.value).collect();
    assert!(v.len() <= 1, "{name} {want:?}: {} series", v.len());
    v.first().copied()
}

fn stale(m: &Metrics, ctrl: &str) -> Option<f64> {
    value(m, "nvmeof_smart_stale", ctrl, &[])
}

/// Scrapes until every controller in `ctrls` has SMART data newer than `since` (Unix seconds)
/// and is not stale.
fn wait_fresh(s: &mut Shared, ctrls: &[String], since: f64) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (m, _) = s.scrape();
        let fresh = ctrls.iter().all(|c| {
            stale(&m, c) == Some(0.0)
                && value(&m, "nvmeof_smart_last_success_timestamp_seconds", c, &[])
                    .is_some_and(|t| t > since)
        });
        if fresh {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "SMART not fresh for all of {ctrls:?}:\n{}\nagent log:\n{}",
            m.text
                .lines()
                .filter(|l| l.starts_with("nvmeof_smart_stale")
                    || l.starts_with("nvmeof_smart_last")
                    || l.contains("poll_errors"))
                .collect::<Vec<_>>()
                .join("\n"),
            s.lab
                .sh("cat /tmp/agent.log")
                .map(|o| o.out)
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn guest_now(s: &mut Shared) -> f64 {
    s.lab
        .sh_ok("date +%s")
        .expect("guest clock")
        .trim()
        .parse()
        .expect("date +%s")
}

/// Labels a metric needs beyond `controller` to pick one series.
type Labels = &'static [(&'static str, &'static str)];

/// (nvme-cli JSON key, metric, extra labels, factor from nvme-cli's unit to the metric's).
const ORACLE: &[(&str, &str, Labels, f64)] = &[
    (
        "critical_warning",
        "nvmeof_smart_critical_warning_raw",
        &[],
        1.0,
    ),
    (
        "endurance_grp_critical_warning_summary",
        "nvmeof_smart_endurance_group_critical_warning_raw",
        &[],
        1.0,
    ),
    (
        "avail_spare",
        "nvmeof_smart_available_spare_ratio",
        &[],
        0.01,
    ),
    (
        "spare_thresh",
        "nvmeof_smart_available_spare_threshold_ratio",
        &[],
        0.01,
    ),
    (
        "percent_used",
        "nvmeof_smart_endurance_used_ratio",
        &[],
        0.01,
    ),
    (
        "data_units_read",
        "nvmeof_smart_data_read_bytes_total",
        &[],
        512_000.0,
    ),
    (
        "data_units_written",
        "nvmeof_smart_data_written_bytes_total",
        &[],
        512_000.0,
    ),
    (
        "host_read_commands",
        "nvmeof_smart_host_read_commands_total",
        &[],
        1.0,
    ),
    (
        "host_write_commands",
        "nvmeof_smart_host_write_commands_total",
        &[],
        1.0,
    ),
    (
        "controller_busy_time",
        "nvmeof_smart_controller_busy_seconds_total",
        &[],
        60.0,
    ),
    ("power_cycles", "nvmeof_smart_power_cycles_total", &[], 1.0),
    (
        "power_on_hours",
        "nvmeof_smart_power_on_seconds_total",
        &[],
        3600.0,
    ),
    (
        "unsafe_shutdowns",
        "nvmeof_smart_unsafe_shutdowns_total",
        &[],
        1.0,
    ),
    ("media_errors", "nvmeof_smart_media_errors_total", &[], 1.0),
    (
        "num_err_log_entries",
        "nvmeof_smart_error_log_entries_total",
        &[],
        1.0,
    ),
    (
        "warning_temp_time",
        "nvmeof_smart_warning_temperature_seconds_total",
        &[],
        60.0,
    ),
    (
        "critical_comp_time",
        "nvmeof_smart_critical_temperature_seconds_total",
        &[],
        60.0,
    ),
    (
        "thm_temp1_trans_count",
        "nvmeof_smart_thermal_management_transitions_total",
        &[("level", "1")],
        1.0,
    ),
    (
        "thm_temp2_trans_count",
        "nvmeof_smart_thermal_management_transitions_total",
        &[("level", "2")],
        1.0,
    ),
    (
        "thm_temp1_total_time",
        "nvmeof_smart_thermal_management_seconds_total",
        &[("level", "1")],
        1.0,
    ),
    (
        "thm_temp2_total_time",
        "nvmeof_smart_thermal_management_seconds_total",
        &[("level", "2")],
        1.0,
    ),
];

/// Compares one controller's metrics with nvme-cli's reading; returns how many fields matched.
fn compare_with_nvme_cli(
    release: &str,
    m: &Metrics,
    ctrl: &str,
    cli: &BTreeMap<String, f64>,
) -> usize {
    let mut compared = 0;
    for (key, metric, extra, factor) in ORACLE {
        let Some(want) = cli.get(*key) else { continue };
        let got = value(m, metric, ctrl, extra).unwrap_or_else(|| {
            panic!("{release} {ctrl}: no {metric} {extra:?} (nvme-cli {key} = {want})")
        });
        let want = want * factor;
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{release} {ctrl}: {metric} {extra:?} = {got}, nvme-cli {key} says {want}"
        );
        compared += 1;
    }
    // Temperatures: kelvin in nvme-cli, Celsius here, 0 K not exported.
    let mut sensors = vec![("temperature".to_owned(), "composite".to_owned())];
    sensors.extend((1..=8).map(|n| (format!("temperature_sensor_{n}"), n.to_string())));
    for (key, sensor) in sensors {
        let Some(&k) = cli.get(&key) else { continue };
        let got = value(
            m,
            "nvmeof_smart_temperature_celsius",
            ctrl,
            &[("sensor", &sensor)],
        );
        if k == 0.0 {
            assert_eq!(got, None, "{release} {ctrl}: sensor {sensor} reads 0 K");
        } else {
            let got = got.unwrap_or_else(|| panic!("{release} {ctrl}: no sensor {sensor}"));
            assert!(
                (got - (k - 273.15)).abs() < 1e-9,
                "{release} {ctrl}: sensor {sensor} = {got} °C, nvme-cli says {k} K"
            );
        }
        compared += 1;
    }
    // Each critical warning bit follows the byte nvme-cli read.
    let raw = cli["critical_warning"] as u8;
    for (bit, label) in CriticalWarning::BITS {
        let got = value(m, "nvmeof_smart_critical_warning", ctrl, &[("bit", label)]);
        let want = f64::from((raw >> bit) & 1);
        assert_eq!(
            got,
            Some(want),
            "{release} {ctrl}: critical warning bit {label}"
        );
        compared += 1;
    }
    compared
}

#[test]
fn smart_metrics_equal_nvme_cli_for_every_controller() {
    on_each_lab(|s, release| {
        let pcie = s
            .lab
            .pcie_nvme
            .clone()
            .expect("the standard lab has a PCIe controller");
        // Some I/O on every namespace, so that the data unit and command counts are not 0.
        s.lab
            .sh_ok(
                "for d in $(dev_of tcp) $(dev_of rdma) $(dev_of fc) $(dev_of loop) $(pcie_dev); do
                   dd if=/dev/urandom of=$d bs=64k count=24 oflag=direct 2>/dev/null || exit 1
                   dd if=$d of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null || exit 1
                 done",
            )
            .unwrap_or_else(|e| panic!("{release}: I/O: {e:#}"));
        let ctrls = s.controllers();
        let fabrics: Vec<&str> = s.expected_transports();
        for t in fabrics.iter().chain(&["pcie"]) {
            assert!(
                ctrls.iter().any(|c| c.1 == *t && c.2 == "live"),
                "{release}: no live {t} controller in {ctrls:?}"
            );
        }
        let names: Vec<String> = ctrls.iter().map(|c| c.0.clone()).collect();
        with_fast_smart(s, |s| {
            let since = guest_now(s);
            wait_fresh(s, &names, since);
            // nvme-cli reads each controller, then the agent polls again at least once.
            let mut cli = BTreeMap::new();
            for c in &names {
                let out = s
                    .lab
                    .sh_ok(&format!("nvme smart-log /dev/{c} -o json"))
                    .unwrap_or_else(|e| panic!("{release} {c}: nvme-cli: {e:#}"));
                cli.insert(c.clone(), json_numbers(&out));
            }
            let since = guest_now(s) + 1.0;
            let m = wait_fresh(s, &names, since);
            for (name, transport, _, subsys) in &ctrls {
                let n = compare_with_nvme_cli(release, &m, name, &cli[name]);
                eprintln!("{release}: {name} ({transport}): {n} fields equal nvme-cli's");
                assert!(n >= 25, "{release} {name}: only {n} fields compared");
                let sub = value(&m, "nvmeof_smart_info", name, &[("subsystem", subsys)]);
                assert_eq!(sub, Some(1.0), "{release} {name}: nvmeof_smart_info");
                let written = value(&m, "nvmeof_smart_data_written_bytes_total", name, &[]);
                assert!(
                    written.is_some_and(|w| w > 0.0),
                    "{release} {name}: data written {written:?}"
                );
            }
            // QEMU's controller reports the warning it was given and a real temperature.
            let (p, ..) = ctrls.iter().find(|c| c.1 == "pcie").expect("checked above");
            assert_eq!(
                ctrls.iter().find(|c| c.1 == "pcie").unwrap().3,
                pcie.subsysnqn()
            );
            let raw = value(&m, "nvmeof_smart_critical_warning_raw", p, &[]);
            assert_eq!(raw, Some(f64::from(pcie.critical_warning)), "{release}");
            let temp = value(
                &m,
                "nvmeof_smart_temperature_celsius",
                p,
                &[("sensor", "composite")],
            );
            assert!(
                temp.is_some_and(|t| t > 0.0 && t < 100.0),
                "{release}: PCIe composite temperature {temp:?}"
            );
            // nvmet reports no temperature: no composite series for a fabrics controller.
            for (name, transport, ..) in ctrls.iter().filter(|c| c.1 != "pcie") {
                let t = value(
                    &m,
                    "nvmeof_smart_temperature_celsius",
                    name,
                    &[("sensor", "composite")],
                );
                assert_eq!(t, None, "{release} {name} ({transport}): temperature");
            }
            s.support(support::QEMU_PCIE, "pcie", support::Outcome::Proven);
        });
    });
}

/// Scrape times: through the forwarded port from the host (what Prometheus would see), and
/// the smart collector's own verdict on each of those scrapes; then `curl` inside the VM (no
/// host network stack, no QEMU user network).
struct Timings {
    host: Vec<Duration>,
    smart_ok: Vec<bool>,
    smart_s: Vec<f64>,
    /// The slowest wait on each collector, in seconds.
    slowest: BTreeMap<String, f64>,
    guest: Vec<Duration>,
    /// The agent's own time for every scrape of the series (host and VM), from its
    /// `nvmeof_exporter_scrape_duration_seconds` histogram: how many, how many over 100 ms, and
    /// the smallest bucket bound that holds them all.
    agent_scrapes: f64,
    agent_over_100ms: f64,
    agent_max_le: f64,
}

fn timed_scrapes(s: &mut Shared, n: usize) -> Timings {
    let mut t = Timings {
        host: Vec::new(),
        smart_ok: Vec::new(),
        smart_s: Vec::new(),
        slowest: BTreeMap::new(),
        guest: Vec::new(),
        agent_scrapes: 0.0,
        agent_over_100ms: 0.0,
        agent_max_le: 0.0,
    };
    let (first, _) = s.scrape();
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(150));
        let (m, took) = s.scrape();
        t.host.push(took);
        let by = [("collector", "smart")];
        t.smart_ok
            .push(m.sum("nvmeof_exporter_collector_success", &by) == 1.0);
        t.smart_s
            .push(m.sum("nvmeof_exporter_collector_duration_seconds", &by));
        for c in m.select("nvmeof_exporter_collector_duration_seconds", &[]) {
            let name = c.label("collector").unwrap_or("?").to_owned();
            let slowest = t.slowest.entry(name).or_insert(0.0);
            *slowest = slowest.max(c.value);
        }
    }
    let out = s
        .lab
        .sh_ok(&format!(
            "i=0; while [ $i -lt {n} ]; do
               curl -s -o /dev/null -w '%{{time_total}}\\n' http://127.0.0.1:$AGENT_PORT/metrics
               sleep 0.15; i=$((i + 1))
             done"
        ))
        .expect("timing scrapes in the guest");
    t.guest = out
        .split_whitespace()
        .filter_map(|v| v.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .collect();
    // This page holds every scrape above (its own time is not in it yet).
    let (last, _) = s.scrape();
    let served = last.served_since(&first);
    t.agent_scrapes = served.scrapes;
    t.agent_over_100ms = served.over_100ms;
    t.agent_max_le = served.max_le;
    t.host.sort();
    t.guest.sort();
    t
}

impl Timings {
    fn host_median(&self) -> Duration {
        self.host[self.host.len() / 2]
    }

    fn summary(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let pct = |v: &[Duration], q: f64| v.get(((v.len() as f64 - 1.0) * q) as usize).copied();
        let show = |v: &[Duration]| match (pct(v, 0.5), pct(v, 0.9), v.last()) {
            (Some(a), Some(b), Some(c)) => {
                format!(
                    "median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
                    ms(a),
                    ms(b),
                    ms(*c)
                )
            }
            _ => "none".into(),
        };
        let smart_max = self.smart_s.iter().cloned().fold(0.0, f64::max) * 1000.0;
        let slowest: Vec<String> = self
            .slowest
            .iter()
            .map(|(c, s)| format!("{c} {:.1}", s * 1000.0))
            .collect();
        format!(
            "{} scrapes from the host: {}; in the VM: {}; the agent's own time: {} of {} over \
             100 ms, all within {} s; smart collector max {:.2} ms, {} of {} \
             in time; slowest wait per collector (ms): {}",
            self.host.len(),
            show(&self.host),
            show(&self.guest),
            self.agent_over_100ms,
            self.agent_scrapes,
            self.agent_max_le,
            smart_max,
            self.smart_ok.iter().filter(|ok| **ok).count(),
            self.smart_ok.len(),
            slowest.join(", ")
        )
    }
}

#[test]
fn a_controller_stuck_connecting_turns_stale_and_scrapes_stay_fast() {
    on_each_lab(|s, release| {
        let names: Vec<String> = s.controllers().into_iter().map(|c| c.0).collect();
        let stuck = s
            .lab
            .sh_ok("ctrl_of tcp 4420")
            .expect("the first TCP path")
            .trim()
            .to_owned();
        // At the default collector deadline (the lab's agents run with a longer one), so
        // that the agent's own time per scrape is what a production scrape gets.
        with_fast_smart_and(s, "--collector.timeout=50ms", |s| {
            let since = guest_now(s);
            wait_fresh(s, &names, since);
            let healthy = timed_scrapes(s, 20);
            // Cut the path: nvmet drops the controller, the host reconnects every second
            // and fails while the subsystem is off the port (ctrl_loss_tmo is 600 s).
            s.lab.sh_ok("unexpose 1 tcp").expect("unexpose 1 tcp");
            let cut = catch_unwind(AssertUnwindSafe(|| {
                let state = s
                    .lab
                    .sh_ok(&format!(
                        "i=0; while [ $i -lt 200 ]; do
                           st=$(cat /sys/class/nvme/{stuck}/state)
                           [ \"$st\" != live ] && break
                           sleep 0.1; i=$((i + 1))
                         done; cat /sys/class/nvme/{stuck}/state"
                    ))
                    .expect("waiting for the cut path to leave live");
                assert_ne!(state.trim(), "live", "{release}: {stuck} stayed live");
                let deadline = Instant::now() + INTERVAL * 2 + Duration::from_secs(30);
                let m = loop {
                    let (m, _) = s.scrape();
                    if stale(&m, &stuck) == Some(1.0) {
                        break m;
                    }
                    assert!(Instant::now() < deadline, "{release}: {stuck} never stale");
                    std::thread::sleep(Duration::from_millis(200));
                };
                // While it stays cut: scrapes timed from the host and from inside the VM.
                let during = timed_scrapes(s, 20);
                let (last, _) = s.scrape();
                let state = s
                    .lab
                    .sh_ok(&format!("cat /sys/class/nvme/{stuck}/state"))
                    .unwrap();
                eprintln!(
                    "{release}: all live: {}\n{release}: {stuck} {}: {}",
                    healthy.summary(),
                    state.trim(),
                    during.summary()
                );
                // The smart collector answers from its cache: typically well within its
                // 50 ms deadline while a controller is stuck. (Under TCG on a loaded host a
                // scrape can miss it now and then, stuck controller or not: the healthy
                // figures above show how often.)
                let mut smart = during.smart_s.clone();
                smart.sort_by(f64::total_cmp);
                assert!(
                    smart[smart.len() / 2] < 0.05,
                    "{release}: smart collector while {stuck} is stuck: {}",
                    during.summary()
                );
                // Under 100 ms; on a host so loaded that the healthy lab is slower than
                // that (TCG shares the CPUs with everything else), within the healthy lab's
                // noise: three times its median. A scrape that waited on the stuck
                // controller would take the command timeout, seconds.
                let bound = Duration::from_millis(100).max(healthy.host_median() * 3);
                assert!(
                    during.host_median() < bound,
                    "{release}: scrapes while {stuck} is stuck: {} (bound {bound:?})",
                    during.summary()
                );
                // What the exporter itself adds to a scrape (from the request to the encoded
                // page, the emulated network left out): under 100 ms for every scrape while
                // the controller is stuck. Only on a host so loaded that the healthy lab's
                // scrapes went over that too (TCG shares the CPUs with everything else) is
                // the healthy lab's slowest bucket the bound; a scrape that waited on the
                // stuck controller would take the SMART command timeout (10 s).
                assert!(
                    during.agent_scrapes >= 40.0,
                    "{release}: {}",
                    during.summary()
                );
                let agent_bound = healthy.agent_max_le.max(0.1);
                assert!(
                    during.agent_max_le <= agent_bound,
                    "{release}: the agent's own time over {agent_bound} s: {}",
                    during.summary()
                );
                assert_eq!(stale(&last, &stuck), Some(1.0), "{release}: {stuck} stale");
                let skipped = value(
                    &last,
                    "nvmeof_smart_poll_errors_total",
                    &stuck,
                    &[("reason", "not_live")],
                );
                assert!(
                    skipped.is_some_and(|n| n >= 1.0),
                    "{release}: {stuck} not_live skips {skipped:?}"
                );
                // Its last values stay, marked stale.
                assert!(value(&m, "nvmeof_smart_critical_warning_raw", &stuck, &[]).is_some());
                for c in names.iter().filter(|c| **c != stuck) {
                    assert_eq!(stale(&last, c), Some(0.0), "{release}: {c} stale");
                }
            }));
            s.lab
                .sh_ok("expose 1 tcp && wait_live 60")
                .unwrap_or_else(|e| panic!("{release}: restoring the TCP path: {e:#}"));
            if let Err(e) = cut {
                resume_unwind(e);
            }
            // Back live, it is polled again at once and turns fresh.
            let since = guest_now(s);
            wait_fresh(s, &names, since);
        });
    });
}

#[test]
fn without_cap_sys_admin_polls_fail_as_permission_denied_logged_once() {
    on_each_lab(|s, release| {
        let names: Vec<String> = s.controllers().into_iter().map(|c| c.0).collect();
        // A second agent as `nobody` beside the lab's, on its own port. The devices are
        // opened to everyone meanwhile, so that what refuses is the kernel's CAP_SYS_ADMIN
        // check on the admin command and not the file mode.
        let out = s
            .lab
            .sh(&format!(
                "grep -q '^nobody:' /etc/passwd 2>/dev/null ||
                   echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >> /etc/passwd
                 grep -q '^nogroup:' /etc/group 2>/dev/null ||
                   echo 'nogroup:x:65534:' >> /etc/group
                 modes=''
                 for d in /dev/nvme[0-9]*; do
                   case $d in *n[0-9]*) continue ;; esac
                   modes=\"$modes $d:$(stat -c %a $d)\"; chmod 666 $d
                 done
                 : > /tmp/agent-nobody.log; chmod 666 /tmp/agent-nobody.log
                 su -s /bin/sh nobody -c 'exec >> /tmp/agent-nobody.log 2>&1; echo uid $(id -u); \
                   exec /usr/bin/nvmeof-exporter --web.listen-address=:9857 {LAB_AGENT_ARGS} \
                   --no-collector.io --smart.interval={}s' &
                 pid=$!
                 sleep {}
                 curl -sf http://127.0.0.1:9857/metrics > /tmp/nobody.prom; rc=$?
                 kill $pid; wait $pid
                 for m in $modes; do chmod ${{m##*:}} ${{m%:*}}; done
                 cat /tmp/nobody.prom; echo '@@LOG'; cat /tmp/agent-nobody.log
                 exit $rc",
                INTERVAL.as_secs(),
                INTERVAL.as_secs() * 6 + 4
            ))
            .expect("running the agent as nobody");
        let (page, log) = out.out.split_once("@@LOG").expect("page and log");
        assert_eq!(
            out.rc, 0,
            "{release}: scrape of the unprivileged agent:\n{}",
            out.out
        );
        let m = Metrics::parse(page);
        for c in &names {
            let denied = value(
                &m,
                "nvmeof_smart_poll_errors_total",
                c,
                &[("reason", "permission_denied")],
            );
            assert!(
                denied.is_some_and(|n| n >= 2.0),
                "{release} {c}: permission_denied {denied:?}\n{log}"
            );
            assert_eq!(stale(&m, c), Some(1.0), "{release} {c}: stale");
            assert_eq!(
                value(&m, "nvmeof_smart_critical_warning_raw", c, &[]),
                None,
                "{release} {c}: SMART values without permission"
            );
        }
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("smart") && l.to_lowercase().contains("permission"))
            .collect();
        eprintln!("{release}: unprivileged agent log:\n{log}");
        assert!(
            log.contains("uid 65534"),
            "{release}: not run as nobody:\n{log}"
        );
        assert_eq!(
            lines.len(),
            1,
            "{release}: permission lines in the log:\n{log}"
        );
        // The modes are back: only root may open the controllers again.
        let modes = s
            .lab
            .sh_ok("stat -c '%a %n' /dev/nvme[0-9] /dev/nvme[0-9][0-9] 2>/dev/null; true")
            .unwrap();
        assert!(
            !modes.contains("666"),
            "{release}: device modes not restored: {modes}"
        );
    });
}

/// Identify Controller and SMART log reads per controller, as tracefs saw them set up on the
/// admin queues while `during` ran in the guest and then `secs` scrapes a second apart (scrapes
/// drive the SMART polls).
fn admin_reads(s: &mut Shared, during: &str, secs: u64) -> BTreeMap<String, (usize, usize)> {
    let out = s.sh_out(&format!(
        "T=/sys/kernel/tracing/instances/nvmeof-admin
         rmdir $T 2>/dev/null; mkdir $T || exit 6
         echo 'qid == 0' > $T/events/nvme/nvme_setup_cmd/filter
         echo 1 > $T/events/nvme/nvme_setup_cmd/enable
         {during}
         i=0; while [ $i -lt {secs} ]; do scrape > /dev/null; sleep 1; i=$((i + 1)); done
         echo 0 > $T/events/nvme/nvme_setup_cmd/enable
         grep ' nvme_setup_cmd: ' $T/trace
         rmdir $T"
    ));
    let mut reads: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for line in out.lines() {
        let Some((_, rest)) = line.split_once(" nvme_setup_cmd: ") else {
            continue;
        };
        let Some((ctrl, cmd)) = rest.split_once(':') else {
            continue;
        };
        let r = reads.entry(ctrl.to_owned()).or_default();
        if cmd.contains("cmd=(nvme_admin_identify cns=1,") {
            r.0 += 1;
        } else if cmd.contains("cmd=(nvme_admin_get_log_page cdw10=02 ") {
            r.1 += 1;
        }
    }
    reads
}

/// The poller reads Identify once per controller and then only the SMART log: counted by the
/// kernel's own trace of the admin queues across an agent start and its polls (the kernel
/// issues no Identify of its own in steady state; keep-alives and other commands are left out).
#[test]
fn a_poll_is_one_admin_command_once_identify_is_known() {
    on_each_lab(|s, release| {
        let names: Vec<String> = s.controllers().into_iter().map(|c| c.0).collect();
        with_fast_smart(s, |s| {
            let restart = format!(
                "agent_stop; agent_start {LAB_AGENT_ARGS} --smart.interval={}s || exit 7",
                INTERVAL.as_secs()
            );
            let reads = admin_reads(s, &restart, 8);
            for c in &names {
                let (identify, smart) = reads.get(c).copied().unwrap_or_default();
                assert!(
                    smart >= 3,
                    "{release} {c}: {smart} SMART reads in 8 polling seconds: {reads:?}"
                );
                assert_eq!(
                    identify, 1,
                    "{release} {c}: Identify reads beside {smart} SMART reads: {reads:?}"
                );
            }
        });
    });
}
