//! Replays the admin pages captured in the lab (`cargo xtask capture-smart`: for each controller
//! `NAME`, `examples/nvme_pages.rs` writes `NAME.{id-ctrl,smart-log,error-log}.bin` and nvme-cli
//! `NAME.{id-ctrl,smart-log,error-log}.json` beside them) and checks every field our decoders
//! and nvme-cli both report. The directory is walked: a new capture is checked without a change
//! here, and a capture missing a page or its JSON fails.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nvmeof_agent::nvme::{ErrorLogEntry, IdentifyController, SmartLog, ERROR_LOG_ENTRY_LEN};
use serde_json::Value;

const KINDS: [&str; 3] = ["id-ctrl", "smart-log", "error-log"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smart/captured")
}

/// Every capture's name, each checked to have all three pages and nvme-cli's reading of each.
fn captures() -> Vec<String> {
    let mut files = BTreeMap::<String, Vec<String>>::new();
    for e in std::fs::read_dir(dir())
        .expect("the captured pages")
        .flatten()
    {
        let file = e.file_name().into_string().unwrap();
        if file == "README.md" {
            continue;
        }
        let (name, kind) = KINDS
            .iter()
            .find_map(|k| {
                let stem = file
                    .strip_suffix(".bin")
                    .or_else(|| file.strip_suffix(".json"))?;
                Some((stem.strip_suffix(&format!(".{k}"))?, k))
            })
            .unwrap_or_else(|| panic!("{file}: not NAME.{{{}}}.{{bin,json}}", KINDS.join(",")));
        let ext = file.rsplit('.').next().unwrap();
        files
            .entry(name.to_owned())
            .or_default()
            .push(format!("{kind}.{ext}"));
    }
    for (name, have) in &mut files {
        have.sort();
        let mut want: Vec<String> = KINDS
            .iter()
            .flat_map(|k| [format!("{k}.bin"), format!("{k}.json")])
            .collect();
        want.sort();
        assert_eq!(have, &want, "{name}: an incomplete capture");
    }
    files.into_keys().collect()
}

fn read(file: &str) -> Vec<u8> {
    std::fs::read(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn json(file: &str) -> Value {
    serde_json::from_slice(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// An unsigned field of nvme-cli's JSON: a number, or (nvme-cli 2.x's 128-bit counters and
/// capacities) a string of digits. `None` when the key is absent.
fn uint(v: &Value, key: &str) -> Option<u128> {
    match v.get(key)? {
        Value::Number(n) => Some(n.as_u64().unwrap_or_else(|| panic!("{key}: {n}")).into()),
        Value::String(s) => Some(s.parse().unwrap_or_else(|e| panic!("{key}: {s:?}: {e}"))),
        other => panic!("{key}: not a number: {other}"),
    }
}

/// Each pair must be in nvme-cli's object with the same value: a field it lacks fails too, so
/// that a renamed key cannot silently shrink the comparison.
fn check_fields(what: &str, theirs: &Value, ours: &[(&str, u128)]) {
    for (k, o) in ours {
        let t = uint(theirs, k).unwrap_or_else(|| panic!("{what}: nvme-cli has no {k}"));
        assert_eq!(*o, t, "{what}: {k}");
    }
}

fn smart_fields(s: &SmartLog) -> Vec<(String, u128)> {
    let mut v: Vec<(String, u128)> = [
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
            v.push((format!("temperature_sensor_{}", i + 1), (*k).into()));
        }
    }
    v
}

fn check_smart(name: &str) {
    let raw = read(&format!("{name}.smart-log.bin"));
    assert_eq!(raw.len(), 512, "{name}: SMART page length");
    let s = SmartLog::decode(&raw).unwrap();
    let theirs = json(&format!("{name}.smart-log.json"));
    let ours = smart_fields(&s);
    let pairs: Vec<(&str, u128)> = ours.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    check_fields(&format!("{name} smart-log"), &theirs, &pairs);
    // Sensors nvme-cli shows that we do not (it prints only those that report).
    let obj = theirs.as_object().expect("smart-log JSON is an object");
    for k in obj.keys().filter(|k| k.starts_with("temperature_sensor_")) {
        assert!(
            ours.iter().any(|(o, _)| o == k),
            "{name} smart-log: nvme-cli has {k}, we do not"
        );
    }
}

fn check_identify(name: &str) -> IdentifyController {
    let raw = read(&format!("{name}.id-ctrl.bin"));
    assert_eq!(raw.len(), 4096, "{name}: Identify page length");
    let id = IdentifyController::decode(&raw).unwrap();
    let theirs = json(&format!("{name}.id-ctrl.json"));
    let what = format!("{name} id-ctrl");
    check_fields(
        &what,
        &theirs,
        &[
            ("vid", id.vid.into()),
            ("ssvid", id.ssvid.into()),
            ("rab", id.rab.into()),
            ("ieee", id.ieee_oui.into()),
            ("cmic", id.cmic.into()),
            ("mdts", id.mdts.into()),
            ("cntlid", id.cntlid.into()),
            ("ver", id.ver.into()),
            ("ctratt", id.ctratt.into()),
            ("oacs", id.oacs.into()),
            ("lpa", id.lpa.into()),
            ("elpe", id.elpe.into()),
            ("npss", id.npss.into()),
            ("wctemp", id.wctemp_k.into()),
            ("cctemp", id.cctemp_k.into()),
            ("tnvmcap", id.tnvmcap),
            ("unvmcap", id.unvmcap),
            ("nn", id.nn.into()),
        ],
    );
    for (k, ours) in [
        ("sn", &id.serial),
        ("mn", &id.model),
        ("fr", &id.firmware),
        ("subnqn", &id.subnqn),
    ] {
        let t = theirs[k]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: nvme-cli has no {k}"));
        // nvme-cli keeps the space padding of the ASCII fields; we trim it.
        assert_eq!(ours, t.trim_end_matches([' ', '\0']), "{what}: {k}");
    }
    id
}

fn check_error_log(name: &str, id: &IdentifyController) {
    let raw = read(&format!("{name}.error-log.bin"));
    let what = format!("{name} error-log");
    assert_eq!(
        raw.len(),
        id.error_log_entries() * ERROR_LOG_ENTRY_LEN,
        "{what}: ELPE + 1 entries were read"
    );
    let theirs = json(&format!("{name}.error-log.json"));
    let entries = theirs["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no errors array"));
    // nvme-cli shows the first 64 entries unless told more (the capture does not: see
    // `cargo xtask capture-smart`); ours is the whole page, so its head is compared.
    assert!(
        !entries.is_empty() && entries.len() <= id.error_log_entries(),
        "{what}: nvme-cli shows {} entries of {}",
        entries.len(),
        id.error_log_entries()
    );
    let mut used = 0;
    for (i, (chunk, t)) in raw
        .chunks_exact(ERROR_LOG_ENTRY_LEN)
        .zip(entries)
        .enumerate()
    {
        let e = ErrorLogEntry::decode(chunk).unwrap();
        used += usize::from(e.error_count != 0);
        check_fields(
            &format!("{what} [{i}]"),
            t,
            &[
                ("error_count", e.error_count.into()),
                ("sqid", e.sqid.into()),
                ("cmdid", e.cid.into()),
                ("status_field", e.status.into()),
                ("parm_error_location", e.param_error_location.into()),
                ("lba", e.lba.into()),
                ("nsid", e.nsid.into()),
                ("vs", e.vendor_specific_page.into()),
                ("trtype", e.trtype.into()),
                ("cs", e.command_specific.into()),
                ("trtype_spec_info", e.trtype_specific.into()),
            ],
        );
    }
    let page = ErrorLogEntry::decode_page(&raw).unwrap();
    assert_eq!(page.len(), used, "{what}: entries in use");
}

#[test]
fn every_captured_page_matches_nvme_cli() {
    let names = captures();
    for name in &names {
        check_smart(name);
        let id = check_identify(name);
        check_error_log(name, &id);
    }
    // QEMU's PCIe controller and nvmet over TCP, RDMA, FC and loop.
    assert!(names.len() >= 5, "{names:?}");
}

/// The lab's implementations, as `cargo xtask capture-smart` saved them: QEMU's PCIe
/// controller told `smart_critical_warning=5`, and the kernel's nvmet target over each fabric.
#[test]
fn the_lab_captures_show_each_implementation() {
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

    for t in ["tcp", "rdma", "fc", "loop"] {
        let name = format!("nvmet-6.1-{t}");
        let nvmet = SmartLog::decode(&read(&format!("{name}.smart-log.bin"))).unwrap();
        assert_eq!(nvmet.critical_warning.raw(), 0, "{name}");
        assert_eq!(
            nvmet.composite_temperature_k, 0,
            "{name}: nvmet reports no temperature"
        );
        assert!(
            nvmet.data_units_written > 0 && nvmet.host_write_commands > 0,
            "{name}: the capture's writes are counted"
        );
        let id = IdentifyController::decode(&read(&format!("{name}.id-ctrl.bin"))).unwrap();
        assert_eq!(id.subnqn, format!("nqn.2026-11.io.nvmeof-exporter.lab:{t}"));
        assert_eq!(id.model, format!("nvmeof-lab-{t}"));

        // The capture's two failed commands, newest first: opcode FFh on the admin queue
        // (Invalid Command Opcode), then the read of LBA FFFFFFFFh on an I/O queue, which
        // null_blk refused (nvmet: Internal Error); both Do Not Retry.
        let errors = ErrorLogEntry::decode_page(&read(&format!("{name}.error-log.bin"))).unwrap();
        assert_eq!(nvmet.error_log_entries, 2, "{name}");
        let seen: Vec<_> = errors
            .iter()
            .map(|e| {
                let sc = (e.status_code_type(), e.status_code(), e.do_not_retry());
                (e.error_count, e.sqid > 0, sc, e.nsid, e.lba)
            })
            .collect();
        assert_eq!(
            seen,
            [
                (2, false, (0, 0x01, true), 0, 0),
                (1, true, (0, 0x06, true), 1, 0xffff_ffff)
            ],
            "{name}"
        );
    }
}

#[test]
fn json_fields_are_numbers_or_strings_of_digits() {
    let v: Value =
        serde_json::from_str(r#"{"critical_warning":2,"data_units_read":"4","mn":"x"}"#).unwrap();
    assert_eq!(uint(&v, "critical_warning"), Some(2));
    assert_eq!(uint(&v, "data_units_read"), Some(4));
    assert_eq!(uint(&v, "absent"), None);
    check_fields(
        "sample",
        &v,
        &[("critical_warning", 2), ("data_units_read", 4)],
    );
    let missing = std::panic::catch_unwind(|| check_fields("sample", &v, &[("temperature", 0)]));
    assert!(missing.is_err(), "a field nvme-cli lacks must fail");
}
