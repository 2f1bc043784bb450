//! Captures a controller's raw admin pages for fixtures, and prints the decoded SMART log with
//! `nvme smart-log -o json`'s key names (raw units: kelvin, data units, minutes, hours) so the
//! two can be compared field by field in the lab.
//!
//! `nvme_pages /dev/nvme0 [OUTDIR]` writes `OUTDIR/nvme0.{id-ctrl,smart-log,error-log}.bin`.
use std::fmt::Display;
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

    // `nvme smart-log -o json`'s keys, each with the decoded value in raw units.
    let smart: &[(&str, &dyn Display)] = &[
        ("critical_warning", &s.critical_warning.raw()),
        ("temperature", &s.composite_temperature_k),
        ("avail_spare", &s.available_spare_pct),
        ("spare_thresh", &s.available_spare_threshold_pct),
        ("percent_used", &s.percentage_used),
        (
            "endurance_grp_critical_warning_summary",
            &s.endurance_group_critical_warning,
        ),
        ("data_units_read", &s.data_units_read),
        ("data_units_written", &s.data_units_written),
        ("host_read_commands", &s.host_read_commands),
        ("host_write_commands", &s.host_write_commands),
        ("controller_busy_time", &s.controller_busy_time_min),
        ("power_cycles", &s.power_cycles),
        ("power_on_hours", &s.power_on_hours),
        ("unsafe_shutdowns", &s.unsafe_shutdowns),
        ("media_errors", &s.media_errors),
        ("num_err_log_entries", &s.error_log_entries),
        ("warning_temp_time", &s.warning_temp_time_min),
        ("critical_comp_time", &s.critical_temp_time_min),
    ];
    let mut fields: Vec<(String, String)> = smart
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
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
