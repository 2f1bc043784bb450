//! Asynchronous events and ANA end to end: the target (nvmet) changes the ANA state of one TCP
//! port's group several times; each change sends an ANA change notice to the host controller on
//! that port. The agent's event counts must equal what the kernel's own trace of
//! `nvme:nvme_async_event` recorded, its ANA transitions (counted by the kprobe where it attaches,
//! sampled from sysfs elsewhere) the states sysfs showed one after the other, and the ANA gauge
//! the final state.
#![cfg(feature = "lab")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nvmeof_tests::{on_each_lab, support, tagged, Metrics, Shared};

const TRACE: &str = "/sys/kernel/tracing";

/// The ANA states the target's port 1 goes through, from `optimized` (the lab's start) back to
/// it. `change` lasts about a second, well inside nvmet's ANA transition time (the host resets a
/// controller whose group stays in `change` past it).
const FLIPS: [&str; 6] = [
    "non-optimized",
    "inaccessible",
    "change",
    "optimized",
    "persistent-loss",
    "optimized",
];

/// A scrape in which the `aen` and `namespace` collectors both answered within their deadline
/// (at most 10 tries).
fn fresh(s: &mut Shared, what: &str) -> Metrics {
    for _ in 0..10 {
        let (m, _) = s.scrape();
        let ok = ["aen", "namespace", "controller"]
            .iter()
            .all(|c| m.sum("nvmeof_exporter_collector_success", &[("collector", c)]) == 1.0);
        if ok {
            return m;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "{} {what}: no scrape with the collectors fresh",
        s.lab.kernel.release
    )
}

/// The kernel's trace of `nvme_async_event`: (controller, result) per event, in order. A line
/// reads `... nvme_async_event: nvme1: NVME_AEN=0x0c0302 [NVME_AER_NOTICE]`.
fn traced_events(trace: &str) -> Vec<(String, u32)> {
    trace
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(" nvme_async_event: ")?.1;
            let (ctrl, rest) = rest.split_once(": ")?;
            let hex = rest
                .strip_prefix("NVME_AEN=0x")?
                .split_whitespace()
                .next()?;
            Some((ctrl.to_owned(), u32::from_str_radix(hex, 16).ok()?))
        })
        .collect()
}

/// The event's type and information from completion dword 0, as the NVMe base specification
/// lays it out (bits 2:0 and 15:8), written here rather than taken from the agent.
fn is_ana_change(result: u32) -> bool {
    result & 0x7 == 2 && (result >> 8) & 0xff == 3
}

fn ana_transitions(m: &Metrics, path: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for x in m.select("nvmeof_namespace_ana_transitions_total", &[("path", path)]) {
        let key = (
            x.label("from").unwrap_or("").to_owned(),
            x.label("to").unwrap_or("").to_owned(),
        );
        *out.entry(key).or_default() += x.value;
    }
    out
}

#[test]
fn ana_changes_on_the_target_are_counted_as_the_kernel_saw_them() {
    on_each_lab(|s, release| {
        s.ensure_agent();
        let c = s.lab.sh_ok("ctrl_of tcp 4420").unwrap().trim().to_owned();
        let path = s
            .lab
            .sh_ok(&format!(
                "for p in /sys/class/nvme/{c}/nvme*c*n*; do [ -e $p/ana_state ] && echo ${{p##*/}}; done"
            ))
            .unwrap()
            .trim()
            .to_owned();
        assert!(
            !path.is_empty(),
            "{release}: {c} has no path with ana_state"
        );
        let start = s
            .lab
            .sh_ok(&format!("cat /sys/class/nvme/{c}/{path}/ana_state"))
            .unwrap()
            .trim()
            .to_owned();
        assert_eq!(start, "optimized", "{release}: {c}/{path} at start");
        s.lab
            .sh_ok(&format!(
                "echo 0 > {TRACE}/events/nvme/nvme_async_event/enable; echo > {TRACE}/trace; \
                 echo 1 > {TRACE}/events/nvme/nvme_async_event/enable"
            ))
            .unwrap();
        let before = fresh(s, "before");
        assert_eq!(
            before.sum("nvmeof_exporter_aen_up", &[]),
            1.0,
            "{release}: the nvme_async_event program is not attached"
        );
        // ANA changes are counted by the kprobe where nvme_core has BTF and the compiler left
        // nvme_update_ns_ana_state a function of its own (6.1 and sid here; 6.12 inlines it),
        // sampled from sysfs elsewhere (Debian's 5.10 has no module BTF).
        let kprobe = s
            .lab
            .sh("[ -e /sys/kernel/btf/nvme_core ] && grep -q ' nvme_update_ns_ana_state' /proc/kallsyms")
            .unwrap()
            .rc
            == 0;
        let source = if kprobe { "kprobe" } else { "sysfs_poll" };
        assert_eq!(
            before.sum("nvmeof_exporter_ana_source", &[("source", source)]),
            1.0,
            "{release}: ANA source"
        );

        // Each flip: wait (at most 10 s) until the host's sysfs shows the new state, then a second
        // more than the agent's 100 ms sampling needs; print what sysfs showed.
        let started = Instant::now();
        let script = FLIPS
            .iter()
            .map(|st| {
                format!(
                    "echo {st} > $CFG/ports/1/ana_groups/1/ana_state; i=0; \
                     while [ \"$(cat /sys/class/nvme/{c}/{path}/ana_state)\" != {st} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
                     echo \"seen $(cat /sys/class/nvme/{c}/{path}/ana_state)\"; sleep 1"
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let out = s.lab.sh(&script).unwrap();
        // Back to the lab's start whatever happened, before any assertion; only when needed, as
        // nvmet sends a notice for every write, even of the state the group is in.
        let g = "$CFG/ports/1/ana_groups/1/ana_state";
        let restored = s
            .lab
            .sh(&format!(
                "[ \"$(cat {g})\" = optimized ] || echo optimized > {g}; wait_live 30"
            ))
            .unwrap();
        let flips_took = started.elapsed();
        let after = fresh(s, "after");
        let trace = s
            .lab
            .sh_ok(&format!(
                "echo 0 > {TRACE}/events/nvme/nvme_async_event/enable; cat {TRACE}/trace"
            ))
            .unwrap();
        let events = traced_events(&trace);
        let seen = tagged(&out.out, "seen ");
        eprintln!(
            "{release}: {c}/{path}: {} flips in {flips_took:?}, sysfs showed {seen:?}; \
             kernel traced {} events: {events:?}",
            FLIPS.len(),
            events.len()
        );
        assert_eq!(out.rc, 0, "{release}: {}", out.out);
        assert_eq!(restored.rc, 0, "{release}: {}", restored.out);

        // Events: per controller, exactly what the kernel traced.
        let mut traced: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for (ctrl, result) in &events {
            let e = traced.entry(ctrl.as_str()).or_default();
            e.0 += 1.0;
            if is_ana_change(*result) {
                e.1 += 1.0;
            }
        }
        let (all, ana) = traced.get(c.as_str()).copied().unwrap_or_default();
        assert!(
            ana >= 1.0,
            "{release}: the kernel traced no ANA change for {c}"
        );
        let counted = |m: &Metrics, ctrl: &str, info: Option<&str>| {
            let mut want = vec![("controller", ctrl)];
            if let Some(i) = info {
                want.extend([("type", "notice"), ("info", i)]);
            }
            m.sum("nvmeof_controller_async_events_total", &want)
        };
        assert_eq!(
            counted(&after, &c, Some("ana_change")) - counted(&before, &c, Some("ana_change")),
            ana,
            "{release}: {c} ANA change notices"
        );
        assert_eq!(
            counted(&after, &c, None) - counted(&before, &c, None),
            all,
            "{release}: {c} events of any type"
        );
        for ctrl in s.controllers().into_iter().map(|x| x.0) {
            let moved = counted(&after, &ctrl, None) - counted(&before, &ctrl, None);
            let want = traced.get(ctrl.as_str()).map_or(0.0, |t| t.0);
            assert_eq!(moved, want, "{release}: {ctrl} events");
        }
        // The target sent one notice per flip; the kernel saw each.
        assert_eq!(ana, FLIPS.len() as f64, "{release}: ANA notices traced");

        // Transitions: the states sysfs showed, one after the other, from the start state.
        assert_eq!(seen, FLIPS, "{release}: sysfs did not follow the target");
        let mut want: BTreeMap<(String, String), f64> = BTreeMap::new();
        let mut prev = start.as_str();
        for st in &seen {
            if *st != prev {
                *want.entry((prev.to_owned(), st.to_string())).or_default() += 1.0;
            }
            prev = st;
        }
        let (b, a) = (
            ana_transitions(&before, &path),
            ana_transitions(&after, &path),
        );
        let moved: BTreeMap<(String, String), f64> = a
            .iter()
            .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v != 0.0)
            .collect();
        assert_eq!(moved, want, "{release}: {path} transitions");
        // The gauge ends in the final state.
        assert_eq!(
            after.sum(
                "nvmeof_namespace_ana_state",
                &[("path", &path), ("state", FLIPS[FLIPS.len() - 1])]
            ),
            1.0,
            "{release}: {path} ANA gauge"
        );
    });
}

/// Asymmetric paths: with port 1's ANA group non-optimized and port 2's optimized (as sysfs shows
/// them, and the agent's per-path ANA state), the host sends reads on the optimized path only, and
/// the agent's per-controller counts say so: 200 reads on port 2's controller, none on port 1's.
#[test]
fn io_follows_the_optimized_path_and_is_counted_there() {
    on_each_lab(|s, release| {
        s.ensure_agent();
        let c1 = s.lab.sh_ok("ctrl_of tcp 4420").unwrap().trim().to_owned();
        let c2 = s.lab.sh_ok("ctrl_of tcp 4421").unwrap().trim().to_owned();
        let reads = |m: &Metrics, c: &str| {
            m.sum(
                "nvmeof_io_commands_total",
                &[("controller", c), ("opclass", "read")],
            )
        };
        let ana = |m: &Metrics, c: &str| -> Vec<String> {
            m.select("nvmeof_namespace_ana_state", &[("controller", c)])
                .filter(|x| x.value == 1.0)
                .filter_map(|x| x.label("state").map(str::to_owned))
                .collect()
        };
        let g = "$CFG/ports/1/ana_groups/1/ana_state";
        let before = s.scrape_now();
        let out = s.lab.sh(&format!(
            "echo non-optimized > {g}; i=0
             until grep -qx non-optimized /sys/class/nvme/{c1}/nvme*c*n*/ana_state || [ $i -ge 100 ]; do
                 sleep 0.1; i=$((i + 1)); done
             d=$(dev_of tcp) && dd if=$d of=/dev/null bs=4k count=200 skip=77 iflag=direct 2>/dev/null"
        ));
        let asymmetric = s.scrape_now();
        let states = fresh(s, "asymmetric");
        let restored = s
            .lab
            .sh(&format!("echo optimized > {g}; wait_live 30"))
            .unwrap();
        let out = out.unwrap_or_else(|e| panic!("{release}: {e:#}"));
        assert_eq!(out.rc, 0, "{release}: {}", out.out);
        assert_eq!(restored.rc, 0, "{release}: {}", restored.out);
        let (on1, on2) = (
            reads(&asymmetric, &c1) - reads(&before, &c1),
            reads(&asymmetric, &c2) - reads(&before, &c2),
        );
        eprintln!(
            "{release}: port 1 ({c1}) {:?}, port 2 ({c2}) {:?}: reads {on1} on {c1}, {on2} on {c2}",
            ana(&states, &c1),
            ana(&states, &c2)
        );
        assert_eq!(ana(&states, &c1), ["non-optimized"], "{release}: {c1}");
        assert_eq!(ana(&states, &c2), ["optimized"], "{release}: {c2}");
        assert_eq!((on1, on2), (0.0, 200.0), "{release}: reads by path");
        s.support(support::NVMET_ANA, "tcp", support::Outcome::Proven);
    });
}
