//! A node whose NVMe modules load after the agent (a DaemonSet comes up before anyone runs
//! `nvme connect`, which loads them): the agent starts without nvme_core, says it waits, and
//! attaches when the module arrives, without a restart; the commands after that are counted
//! exactly (the dd's own count).
#![cfg(feature = "lab")]

use std::time::{Duration, Instant};

use nvmeof_tests::{agent_bin, kernels, scrape_lab as scrape, LAB_AGENT_ARGS};
use xtask::lab::{Lab, LabOptions};

/// nvme_core and every module that needs it: held back at boot.
const DEFERRED: &[&str] = &[
    "nvme-core.ko",
    "nvme-fabrics.ko",
    "nvme.ko",
    "nvme-tcp.ko",
    "nvme-rdma.ko",
    "nvme-fc.ko",
    "nvme-loop.ko",
    "nvme-fcloop.ko",
];
const READS: u32 = 200;

#[test]
fn the_tracer_attaches_when_nvme_core_loads_after_the_agent() {
    for k in kernels() {
        let defer = std::env::temp_dir().join(format!("nvmeof-lab-defer-{}", std::process::id()));
        std::fs::write(&defer, DEFERRED.join("\n") + "\n").unwrap();
        let mut opts = LabOptions::new(k);
        opts.agent = Some(agent_bin());
        opts.extra_files.push((defer.clone(), "/mods/defer".into()));
        let lab = Lab::boot(&opts);
        let _ = std::fs::remove_file(&defer);
        let mut lab = lab.expect("booting the lab");
        let release = lab.kernel.release.clone();
        let out = lab
            .sh(&format!(
                "[ ! -d /sys/module/nvme_core ] && agent_start {LAB_AGENT_ARGS} && sleep 2"
            ))
            .unwrap();
        assert_eq!(
            out.rc, 0,
            "{release}: nvme_core loaded, or the agent:\n{}",
            out.out
        );
        let before = scrape(&lab);
        assert_eq!(before.sum("nvmeof_exporter_ebpf_up", &[]), 0.0, "{release}");
        assert_eq!(
            before.sum("nvmeof_exporter_ebpf_waiting_for_nvme_core", &[]),
            1.0,
            "{release}:\n{}",
            before.text
        );

        let out = lab
            .sh_timeout(
                "load_deferred && setup_tcp && connect_tcp && wait_live 30",
                Duration::from_secs(300),
            )
            .unwrap();
        assert_eq!(out.rc, 0, "{release}: modules and TCP:\n{}", out.out);
        // The agent looks for the module every 5 s; allow for an emulated host.
        let started = Instant::now();
        let up = loop {
            let m = scrape(&lab);
            if m.sum("nvmeof_exporter_ebpf_up", &[]) == 1.0 {
                break m;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{release}: not attached 60 s after nvme_core loaded:\n{}\n{}",
                m.text,
                lab.sh("cat /tmp/agent.log")
                    .map(|o| o.out)
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        assert_eq!(
            up.sum("nvmeof_exporter_ebpf_waiting_for_nvme_core", &[]),
            0.0
        );
        let log = lab.sh_ok("cat /tmp/agent.log").unwrap();
        assert!(log.contains("waiting: nvme_core is not loaded"), "{log}");
        assert!(log.contains("started: nvme_core is loaded"), "{log}");

        std::thread::sleep(Duration::from_secs(2));
        let before = scrape(&lab);
        lab.sh_ok(&format!(
            "dd if=$(dev_of tcp) of=/dev/null bs=4k count={READS} iflag=direct 2>&1"
        ))
        .unwrap_or_else(|e| panic!("{release}: {e:#}"));
        std::thread::sleep(Duration::from_secs(3));
        let after = scrape(&lab);
        let reads = after.moved_from(&before, "nvmeof_io_commands_total", &[("opclass", "read")]);
        let bytes = after.moved_from(&before, "nvmeof_io_read_bytes_total", &[]);
        assert_eq!(
            (reads, bytes),
            (f64::from(READS), f64::from(READS * 4096)),
            "{release}: reads and bytes after a late attach"
        );
    }
}
