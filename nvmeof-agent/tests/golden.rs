//! The whole `/metrics` text on the 6.1 fixture tree against a golden file: one change in the
//! output shows up as one diff. `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the file
//! after a deliberate change; review the diff before committing it.
mod common;

use nvmeof_agent::exposition::text;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/lab_6_1.txt");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_text_matches_the_golden_file() {
    let fixture = common::sysfs_6_1();
    // A generous deadline: this test is about the text, not about timing on a loaded machine.
    let scraper = common::scraper(&fixture.root, &["--collector.timeout=10s"]);
    let families = scraper.scrape().await;
    let text = text::encode(&families);
    let got = common::normalize(&text);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &got).unwrap();
    }
    let want = std::fs::read_to_string(GOLDEN).expect("golden file (UPDATE_GOLDEN=1 writes it)");
    if got != want {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .enumerate()
            .filter(|(_, (w, g))| w != g)
            .take(10)
            .map(|(i, (w, g))| format!("line {}:\n  want {w}\n  got  {g}", i + 1))
            .collect();
        panic!(
            "/metrics differs from {GOLDEN} ({} vs {} lines):\n{}",
            want.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
    // The figures the tree was built for, asserted on their own too.
    assert!(got.contains(
        "nvmeof_subsystem_live_paths{subsystem=\"nqn.2026-11.io.nvmeof-exporter.lab:tcp\"} 2\n"
    ));
    assert!(got.contains("nvmeof_exporter_collect_errors_total{collector=\"namespace\"} 0\n"));
}

/// Deletes the captured tree's nvme1 (the second TCP path) as the kernel does: its class link, its
/// subsystem's link to it, its device directory.
fn delete_nvme1(root: &std::path::Path) {
    std::fs::remove_file(root.join("class/nvme/nvme1")).unwrap();
    std::fs::remove_file(root.join("devices/virtual/nvme-subsystem/nvme-subsys0/nvme1")).unwrap();
    std::fs::remove_dir_all(root.join("devices/virtual/nvme-fabrics/ctl/nvme1")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_that_vanish_leave_no_series_behind() {
    let fixture = common::sysfs_6_1();
    let scraper = common::scraper(&fixture.root, &["--collector.timeout=10s"]);
    let before = text::encode(&scraper.scrape().await);
    assert!(before.contains("controller=\"nvme1\""));
    delete_nvme1(&fixture.root);
    let after = text::encode(&scraper.scrape().await);
    assert!(!after.contains("controller=\"nvme1\""), "{after}");
    assert!(after.contains(
        "nvmeof_subsystem_paths{subsystem=\"nqn.2026-11.io.nvmeof-exporter.lab:tcp\"} 1\n"
    ));
    assert!(after.contains("nvmeof_exporter_collector_stale{collector=\"controller\"} 0\n"));
}

/// The captured tree's second TCP path, reconnecting when ctrl_loss_tmo runs out and the kernel
/// deletes it: the subsystem keeps a lost path, so that `live_paths < paths + lost_paths` still
/// holds (1 < 1 + 1) where `live_paths < paths` alone would have resolved (1 < 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_deleted_while_reconnecting_stays_a_lost_path() {
    let fixture = common::sysfs_6_1();
    let scraper = common::scraper(&fixture.root, &["--collector.timeout=10s"]);
    let ctrl = fixture.root.join("devices/virtual/nvme-fabrics/ctl/nvme1");
    std::fs::write(ctrl.join("state"), "connecting\n").unwrap();
    let tcp = "{subsystem=\"nqn.2026-11.io.nvmeof-exporter.lab:tcp\"}";
    let before = text::encode(&scraper.scrape().await);
    assert!(before.contains(&format!("nvmeof_subsystem_lost_paths{tcp} 0\n")));
    delete_nvme1(&fixture.root);
    let after = text::encode(&scraper.scrape().await);
    for want in [
        format!("nvmeof_subsystem_paths{tcp} 1\n"),
        format!("nvmeof_subsystem_live_paths{tcp} 1\n"),
        format!("nvmeof_subsystem_lost_paths{tcp} 1\n"),
        "nvmeof_subsystem_lost_paths_forgotten_total 0\n".to_owned(),
    ] {
        assert!(after.contains(&want), "{want} missing:\n{after}");
    }
    assert!(!after.contains("controller=\"nvme1\""), "{after}");
}
