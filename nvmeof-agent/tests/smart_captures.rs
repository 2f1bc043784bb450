//! Replays SMART pages captured in the lab (`examples/nvme_pages.rs` writes
//! `NAME.smart-log.bin`) and, where `nvme smart-log -o json > NAME.smart-log.json` was saved
//! beside it, checks every numeric field both report against ours.
use std::collections::BTreeMap;
use std::path::Path;

use nvmeof_agent::nvme::{ErrorLogEntry, IdentifyController, SmartLog};

/// Flat `"key" : number` pairs; nested or non-numeric values are skipped (nvme-cli's JSON
/// changed shape across versions, and only the numbers matter here). nvme-cli 2.x prints the
/// 128-bit counters as strings of digits (`"data_units_read":"4"`): those count as numbers.
fn numbers(json: &str) -> BTreeMap<String, u128> {
    json.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let k = k.trim().trim_matches('"');
            let v = v.trim().trim_end_matches(',').trim().trim_matches('"');
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn ours(s: &SmartLog) -> BTreeMap<String, u128> {
    let mut m: BTreeMap<String, u128> = [
        ("critical_warning", s.critical_warning.raw().into()),
        ("temperature", s.composite_temperature_k.into()),
        ("avail_spare", s.available_spare_pct.into()),
        ("spare_thresh", s.available_spare_threshold_pct.into()),
        ("percent_used", s.percentage_used.into()),
        (
            "endurance_grp_critical_warning_summary",
            s.endurance_group_critical_warning.into(),
        ),
        ("data_units_read", s.data_units_read),
        ("data_units_written", s.data_units_written),
        ("host_read_commands", s.host_read_commands),
        ("host_write_commands", s.host_write_commands),
        ("controller_busy_time", s.controller_busy_time_min),
        ("power_cycles", s.power_cycles),
        ("power_on_hours", s.power_on_hours),
        ("unsafe_shutdowns", s.unsafe_shutdowns),
        ("media_errors", s.media_errors),
        ("num_err_log_entries", s.error_log_entries),
        ("warning_temp_time", s.warning_temp_time_min.into()),
        ("critical_comp_time", s.critical_temp_time_min.into()),
        (
            "thm_temp1_trans_count",
            s.thermal_mgmt_transitions[0].into(),
        ),
        (
            "thm_temp2_trans_count",
            s.thermal_mgmt_transitions[1].into(),
        ),
        ("thm_temp1_total_time", s.thermal_mgmt_time_s[0].into()),
        ("thm_temp2_total_time", s.thermal_mgmt_time_s[1].into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (i, k) in s.temperature_sensors_k.iter().enumerate() {
        if let Some(k) = k {
            m.insert(format!("temperature_sensor_{}", i + 1), (*k).into());
        }
    }
    m
}

#[test]
fn captured_smart_pages_match_nvme_cli() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smart/captured");
    let entries = std::fs::read_dir(&dir).expect("the captured pages");
    let mut pages = 0;
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path.to_str().and_then(|p| p.strip_suffix(".smart-log.bin")) else {
            continue;
        };
        let raw = std::fs::read(&path).unwrap();
        assert_eq!(raw.len(), 512, "{}", path.display());
        let s = SmartLog::decode(&raw).unwrap();
        let Ok(json) = std::fs::read_to_string(format!("{name}.smart-log.json")) else {
            continue;
        };
        let (theirs, ours) = (numbers(&json), ours(&s));
        let mut compared = 0;
        for (k, v) in &theirs {
            if let Some(o) = ours.get(k) {
                assert_eq!(o, v, "{name}: {k}");
                compared += 1;
            }
        }
        // nvme-cli 2.4 prints 22 fields for a page without temperature sensors.
        assert!(compared >= 22, "{name}: only {compared} fields in common");
        pages += 1;
    }
    assert!(pages >= 2, "{pages} captured pages with nvme-cli's reading");
}

/// The lab's two implementations, as `cargo xtask capture-smart` saved them: QEMU's PCIe
/// controller told `smart_critical_warning=5`, and the kernel's nvmet target over TCP.
#[test]
fn the_lab_captures_show_each_implementation() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smart/captured");
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));

    let qemu = SmartLog::decode(&read("qemu-cw5.smart-log.bin")).unwrap();
    assert_eq!(qemu.critical_warning.raw(), 5);
    assert!(qemu.critical_warning.available_spare());
    assert!(qemu.critical_warning.reliability_degraded());
    assert!(!qemu.critical_warning.temperature());
    assert_eq!(qemu.composite_temperature_k, 323);
    assert!(qemu.data_units_written > 0 && qemu.host_write_commands > 0);
    let id = IdentifyController::decode(&read("qemu-cw5.id-ctrl.bin")).unwrap();
    assert_eq!(id.serial, "nvmeof-lab-pcie");
    assert_eq!(id.subnqn, "nqn.2019-08.org.qemu:nvmeof-lab-pcie");
    let errors = ErrorLogEntry::decode_page(&read("qemu-cw5.error-log.bin")).unwrap();
    assert!(errors.iter().all(|e| e.error_count == 0), "{errors:?}");

    let nvmet = SmartLog::decode(&read("nvmet-6.1-tcp.smart-log.bin")).unwrap();
    assert_eq!(nvmet.critical_warning.raw(), 0);
    assert_eq!(
        nvmet.composite_temperature_k, 0,
        "nvmet reports no temperature"
    );
    assert!(nvmet.data_units_written > 0 && nvmet.host_write_commands > 0);
    let id = IdentifyController::decode(&read("nvmet-6.1-tcp.id-ctrl.bin")).unwrap();
    assert_eq!(id.subnqn, "nqn.2026-11.io.nvmeof-exporter.lab:tcp");
    assert_eq!(id.model, "nvmeof-lab-tcp");
    ErrorLogEntry::decode_page(&read("nvmet-6.1-tcp.error-log.bin")).unwrap();
}

#[test]
fn the_json_reader_takes_flat_numbers() {
    let m = numbers(
        "{\n  \"critical_warning\" : 2,\n  \"temperature\" : 323,\n  \"x\" : \"a\",\n  \"data_units_read\":\"4\"\n}",
    );
    assert_eq!(m.get("critical_warning"), Some(&2));
    assert_eq!(m.get("temperature"), Some(&323));
    assert_eq!(m.get("data_units_read"), Some(&4));
    assert_eq!(m.len(), 3);
}
