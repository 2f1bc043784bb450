//! The lab itself: every transport reaches `live` and carries I/O on every kernel under test,
//! and a guest kernel that stops under a test is replaced (once) rather than failing every test
//! after it.
#![cfg(feature = "lab")]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use nvmeof_tests::{kernels, with_lab};
use xtask::lab::stop_in;

const BOOT_ID: &str = "cat /proc/sys/kernel/random/boot_id";

#[test]
fn every_transport_reaches_live_and_carries_io() {
    for k in kernels() {
        with_lab(k, |s| {
            let release = s.lab.kernel.release.clone();
            if k.name() != "sid" {
                assert!(
                    s.lab.kernel.limits.is_empty(),
                    "{release}: unexpected limits {:?}",
                    s.lab.kernel.limits
                );
            }
            let ctrls = s.controllers();
            for t in s.expected_transports() {
                let live = ctrls.iter().filter(|c| c.1 == t && c.2 == "live").count();
                let want = if t == "tcp" { 2 } else { 1 };
                assert_eq!(
                    live, want,
                    "{release}: live {t} controllers in {ctrls:?}\n{}",
                    s.topology
                );

                // 1 MiB of random data written with direct I/O reads back identical.
                let script = format!(
                    "d=$(dev_of {t}) || exit 9
                     dd if=/dev/urandom of=/tmp/pat bs=64k count=16 2>/dev/null
                     dd if=/tmp/pat of=$d bs=64k count=16 oflag=direct 2>/dev/null || exit 8
                     dd if=$d of=/tmp/back bs=64k count=16 iflag=direct 2>/dev/null
                     cmp /tmp/pat /tmp/back && echo same"
                );
                let out = s
                    .lab
                    .sh_ok(&script)
                    .unwrap_or_else(|e| panic!("{release} {t}: {e:#}"));
                assert_eq!(out.trim(), "same", "{release} {t}: {out}");
            }
        });
    }
}

#[test]
fn tcp_subsystem_has_two_paths_under_native_multipath() {
    for k in kernels() {
        with_lab(k, |s| {
            let out = s
                .lab
                .sh_ok(
                    "for sd in /sys/class/nvme-subsystem/*; do
                       [ \"$(cat $sd/subsysnqn)\" = \"$(nqn tcp)\" ] || continue
                       ls -d $sd/nvme[0-9]* | grep -c 'nvme[0-9]*$'
                       ls -d $sd/nvme*n* | wc -l
                     done",
                )
                .unwrap();
            let counts: Vec<&str> = out.split_whitespace().collect();
            assert_eq!(
                counts,
                ["2", "1"],
                "{}: controllers and heads of the tcp subsystem",
                s.lab.kernel.release
            );
        });
    }
}

/// Both halves in one test, in this order: tests of one process share the lab, and the first
/// half's replaced lab between the second half's two visits would fail its "same guest" check.
#[test]
fn a_guest_that_stops_is_replaced_once_and_one_that_answers_never() {
    for k in kernels() {
        // A test that fails while its guest still answers is not run again, even with the
        // kernel's words for a stop on the console.
        let mut runs = Vec::new();
        let failed = catch_unwind(AssertUnwindSafe(|| {
            with_lab(k, |s| {
                runs.push(s.sh_out(BOOT_ID));
                s.sh_out(
                    "echo '<0>watchdog: BUG: soft lockup - CPU#0 stuck for 1s! [lab]' >/dev/kmsg",
                );
                panic!("an assertion of the test itself failed");
            })
        }));
        assert!(failed.is_err(), "{k:?}: the test's failure stands");
        assert_eq!(runs.len(), 1, "{k:?}: runs of the test");
        with_lab(k, |s| {
            let release = s.lab.kernel.release.clone();
            let console = s.lab.console();
            let warned = console
                .lines()
                .filter(|l| l.ends_with("stuck for 1s! [lab]"))
                .any(|l| stop_in(l).is_some());
            assert!(
                warned,
                "{release}: the warning reached the console as a stop sign"
            );
            assert_eq!(s.sh_out(BOOT_ID), runs[0], "{release}: the same guest");
        });

        // A test whose guest kernel stops is run once more, on a fresh lab.
        let mut boots = Vec::new();
        with_lab(k, |s| {
            boots.push(s.sh_out(BOOT_ID));
            if boots.len() == 1 {
                // A real stop: the kernel panics (and, booted with -no-reboot, QEMU exits), so
                // the test's next command is never answered, as in a lockup.
                let _ = s
                    .lab
                    .sh_timeout("echo c > /proc/sysrq-trigger", Duration::from_secs(20));
                s.sh_out("echo still here");
            }
        });
        assert_eq!(boots.len(), 2, "{k:?}: runs of the test");
        assert_ne!(boots[0], boots[1], "{k:?}: the rerun had a fresh guest");
    }
}
