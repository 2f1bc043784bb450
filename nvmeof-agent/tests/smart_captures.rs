//! Replays SMART pages captured in the lab (`examples/nvme_pages.rs` writes
//! `NAME.smart-log.bin`) and, where `nvme smart-log -o json > NAME.smart-log.json` was saved
//! beside it, checks every numeric field both report against ours.
use std::collections::BTreeMap;
use std::path::Path;

use nvmeof_agent::nvme::SmartLog;

/// Flat `"key" : number` pairs; nested or non-numeric values are skipped (nvme-cli's JSON
/// changed shape across versions, and only the numbers matter here).
fn numbers(json: &str) -> BTreeMap<String, u128> {
    json.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let k = k.trim().trim_matches('"');
            let v = v.trim().trim_end_matches(',').trim();
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
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
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
        assert!(compared >= 10, "{name}: only {compared} fields in common");
    }
}

#[test]
fn the_json_reader_takes_flat_numbers() {
    let m = numbers("{\n  \"critical_warning\" : 2,\n  \"temperature\" : 323,\n  \"x\" : \"a\"\n}");
    assert_eq!(m.get("critical_warning"), Some(&2));
    assert_eq!(m.get("temperature"), Some(&323));
    assert_eq!(m.len(), 2);
}
