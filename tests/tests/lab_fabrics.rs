//! The lab itself: every transport reaches `live` and carries I/O on every kernel under test.
#![cfg(feature = "lab")]

use nvmeof_tests::{kernels, with_lab};

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
