//! Captures a controller's raw admin pages for fixtures, and prints the decoded SMART log with
//! `nvme smart-log -o json`'s key names (raw units: kelvin, data units, minutes, hours) so the
//! two can be compared field by field in the lab.
//!
//! `nvme_pages /dev/nvme0 [OUTDIR]` writes `OUTDIR/nvme0.{id-ctrl,smart-log,error-log}.bin`.
use std::path::Path;
use std::time::Duration;

use nvmeof_agent::nvme::{self, ioctl, ErrorLogEntry, IdentifyController, SmartLog};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(dev) = args.next() else {
        anyhow::bail!("usage: nvme_pages /dev/nvmeN [OUTDIR]");
    };
    let dev = Path::new(&dev);
    let out = args.next();
    let timeout = Duration::from_secs(5);

    let id_raw = nvme::read_identify_raw(dev, timeout)?;
    let id = IdentifyController::decode(&id_raw)?;
    let smart_raw = nvme::read_smart_raw(dev, timeout)?;
    let s = SmartLog::decode(&smart_raw)?;
    let err_raw = ioctl::read_error_log_raw(dev, id.error_log_entries(), false, timeout)?;
    let errors = ErrorLogEntry::decode_page(&err_raw)?;

    if let Some(out) = out {
        let name = dev.file_name().unwrap_or(dev.as_os_str()).to_string_lossy();
        let out = Path::new(&out);
        std::fs::create_dir_all(out)?;
        for (kind, bytes) in [
            ("id-ctrl", &id_raw[..]),
            ("smart-log", &smart_raw[..]),
            ("error-log", &err_raw[..]),
        ] {
            std::fs::write(out.join(format!("{name}.{kind}.bin")), bytes)?;
        }
    }

    let mut fields: Vec<(String, String)> = vec![
        (
            "critical_warning".into(),
            s.critical_warning.raw().to_string(),
        ),
        ("temperature".into(), s.composite_temperature_k.to_string()),
        ("avail_spare".into(), s.available_spare_pct.to_string()),
        (
            "spare_thresh".into(),
            s.available_spare_threshold_pct.to_string(),
        ),
        ("percent_used".into(), s.percentage_used.to_string()),
        (
            "endurance_grp_critical_warning_summary".into(),
            s.endurance_group_critical_warning.to_string(),
        ),
        ("data_units_read".into(), s.data_units_read.to_string()),
        (
            "data_units_written".into(),
            s.data_units_written.to_string(),
        ),
        (
            "host_read_commands".into(),
            s.host_read_commands.to_string(),
        ),
        (
            "host_write_commands".into(),
            s.host_write_commands.to_string(),
        ),
        (
            "controller_busy_time".into(),
            s.controller_busy_time_min.to_string(),
        ),
        ("power_cycles".into(), s.power_cycles.to_string()),
        ("power_on_hours".into(), s.power_on_hours.to_string()),
        ("unsafe_shutdowns".into(), s.unsafe_shutdowns.to_string()),
        ("media_errors".into(), s.media_errors.to_string()),
        (
            "num_err_log_entries".into(),
            s.error_log_entries.to_string(),
        ),
        (
            "warning_temp_time".into(),
            s.warning_temp_time_min.to_string(),
        ),
        (
            "critical_comp_time".into(),
            s.critical_temp_time_min.to_string(),
        ),
    ];
    for (i, k) in s.temperature_sensors_k.iter().enumerate() {
        if let Some(k) = k {
            fields.push((format!("temperature_sensor_{}", i + 1), k.to_string()));
        }
    }
    for i in 0..2 {
        let n = i + 1;
        let trans = s.thermal_mgmt_transitions[i].to_string();
        fields.push((format!("thm_temp{n}_trans_count"), trans));
        fields.push((
            format!("thm_temp{n}_total_time"),
            s.thermal_mgmt_time_s[i].to_string(),
        ));
    }
    println!("{{");
    for (i, (k, v)) in fields.iter().enumerate() {
        let comma = if i + 1 < fields.len() { "," } else { "" };
        println!("  \"{k}\" : {v}{comma}");
    }
    println!("}}");
    eprintln!(
        "{}: model {:?} serial {:?} firmware {:?} ver {} cntlid {} elpe {} ({} error entries used)",
        dev.display(),
        id.model,
        id.serial,
        id.firmware,
        id.version_string(),
        id.cntlid,
        id.elpe,
        errors.len()
    );
    Ok(())
}
