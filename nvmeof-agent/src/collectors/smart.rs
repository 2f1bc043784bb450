//! Collector `smart`: renders the SMART source's snapshot (`crate::smart`: SMART / Health log and
//! Identify Controller of every NVMe controller, polled in the background). `collect` copies the
//! source's cache, so a hung controller costs a scrape nothing but a `nvmeof_smart_stale` of 1.
//! Fabrics targets (nvmet) answer with mostly zero pages; a composite temperature of 0 K is taken
//! as "not reported".
use std::time::UNIX_EPOCH;

use crate::collector::{families, Collector, Scrape, Sink};
use crate::nvme::smart_log::kelvin_to_celsius;
use crate::nvme::CriticalWarning;
use crate::smart::poller::{CtrlView, Discovered};
use crate::smart::SmartSource;
use crate::sysfs::Spelled as _;

/// Renders what the SMART source (`crate::smart`) last polled.
pub struct SmartCollector {
    source: SmartSource,
}

impl SmartCollector {
    pub fn new(source: SmartSource) -> Self {
        Self { source }
    }
}

families! {
    pub INFO: gauge("nvmeof_smart_info",
        "Identify Controller of each NVMe controller polled for SMART; always 1.");
    pub CRITICAL_WARNING: gauge("nvmeof_smart_critical_warning",
        "SMART Critical Warning, one series per defined bit: 1 when the condition holds.");
    pub CRITICAL_WARNING_RAW: gauge("nvmeof_smart_critical_warning_raw",
        "SMART Critical Warning byte as read, reserved bits included.");
    pub ENDURANCE_GROUP_WARNING_RAW: gauge("nvmeof_smart_endurance_group_critical_warning_raw",
        "SMART Endurance Group Critical Warning Summary byte as read.");
    pub TEMPERATURE: gauge("nvmeof_smart_temperature_celsius",
        "Composite temperature (sensor=\"composite\") and each reported temperature sensor.");
    pub AVAILABLE_SPARE: gauge("nvmeof_smart_available_spare_ratio",
        "Remaining spare capacity, 0 to 1.");
    pub AVAILABLE_SPARE_THRESHOLD: gauge("nvmeof_smart_available_spare_threshold_ratio",
        "Spare capacity below which the available_spare warning is raised, 0 to 1.");
    pub ENDURANCE_USED: gauge("nvmeof_smart_endurance_used_ratio",
        "SMART Percentage Used / 100: vendor estimate of life used; may exceed 1.");
    pub DATA_READ: counter("nvmeof_smart_data_read_bytes_total",
        "Data read by hosts, from Data Units Read (units of 512000 bytes, rounded up).");
    pub DATA_WRITTEN: counter("nvmeof_smart_data_written_bytes_total",
        "Data written by hosts, from Data Units Written (units of 512000 bytes, rounded up).");
    pub HOST_READS: counter("nvmeof_smart_host_read_commands_total",
        "Read commands completed by the controller.");
    pub HOST_WRITES: counter("nvmeof_smart_host_write_commands_total",
        "Write commands completed by the controller.");
    pub BUSY: counter("nvmeof_smart_controller_busy_seconds_total",
        "Time the controller was busy with I/O commands (reported in minutes).");
    pub POWER_CYCLES: counter("nvmeof_smart_power_cycles_total",
        "Power cycles.");
    pub POWER_ON: counter("nvmeof_smart_power_on_seconds_total",
        "Power-on time (reported in hours).");
    pub UNSAFE_SHUTDOWNS: counter("nvmeof_smart_unsafe_shutdowns_total",
        "Unsafe shutdowns.");
    pub MEDIA_ERRORS: counter("nvmeof_smart_media_errors_total",
        "Unrecovered data integrity errors detected by the controller.");
    pub ERROR_LOG_ENTRIES: counter("nvmeof_smart_error_log_entries_total",
        "Error Information log entries over the controller's life.");
    pub WARNING_TEMP_TIME: counter("nvmeof_smart_warning_temperature_seconds_total",
        "Time above the warning composite temperature threshold (reported in minutes).");
    pub CRITICAL_TEMP_TIME: counter("nvmeof_smart_critical_temperature_seconds_total",
        "Time above the critical composite temperature threshold (reported in minutes).");
    pub THERMAL_TRANSITIONS: counter("nvmeof_smart_thermal_management_transitions_total",
        "Transitions into thermal management level 1 or 2 (light / heavy throttling).");
    pub THERMAL_TIME: counter("nvmeof_smart_thermal_management_seconds_total",
        "Time spent in thermal management level 1 or 2.");
    pub LAST_SUCCESS: gauge("nvmeof_smart_last_success_timestamp_seconds",
        "Unix time of the last successful SMART poll.");
    pub STALE: gauge("nvmeof_smart_stale",
        "1 when the last poll failed, is stuck, or succeeded more than 2 intervals ago.");
    pub POLL_ERRORS: counter("nvmeof_smart_poll_errors_total",
        "Failed or skipped SMART polls, by reason.");
}

impl Collector for SmartCollector {
    fn collect(&self, scrape: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
        // The controllers this scrape reads for every kernel collector: no read of its own, and
        // the poller's scheduler has nothing to read while scrapes come.
        let found: Vec<Discovered> = scrape
            .controllers(self.source.sysfs_root())?
            .items
            .into_iter()
            .map(|c| Discovered {
                state: c
                    .state
                    .as_ref()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                subsysnqn: c.subsysnqn.unwrap_or_default(),
                name: c.name,
            })
            .collect();
        for (name, view) in self.source.observe(&found) {
            emit(sink, &name, &view);
        }
        Ok(())
    }
}

// u128 counters go out as f64: exact up to 2^53, which no real drive reaches.
fn f(v: u128) -> f64 {
    v as f64
}

fn emit(sink: &mut Sink, ctrl: &str, v: &CtrlView) {
    let base = [("controller", ctrl), ("subsystem", v.subsystem.as_str())];
    sink.gauge(&STALE, &base, if v.stale { 1.0 } else { 0.0 });
    for (reason, n) in &v.errors {
        sink.counter(
            &POLL_ERRORS,
            &[base[0], base[1], ("reason", reason)],
            *n as f64,
        );
    }
    if let Some(t) = v.last_success {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        sink.gauge(&LAST_SUCCESS, &base, secs);
    }
    if let Some(id) = &v.identify {
        sink.gauge(
            &INFO,
            &[
                base[0],
                base[1],
                ("model", id.model.as_str()),
                ("serial", id.serial.as_str()),
                ("firmware", id.firmware.as_str()),
            ],
            1.0,
        );
    }
    let Some(s) = &v.smart else { return };
    let cw = s.critical_warning;
    for (bit, label) in CriticalWarning::BITS {
        let on = if cw.bit(bit) { 1.0 } else { 0.0 };
        sink.gauge(&CRITICAL_WARNING, &[base[0], base[1], ("bit", label)], on);
    }
    sink.gauge(&CRITICAL_WARNING_RAW, &base, f64::from(cw.raw()));
    sink.gauge(
        &ENDURANCE_GROUP_WARNING_RAW,
        &base,
        f64::from(s.endurance_group_critical_warning),
    );
    if s.composite_temperature_k != 0 {
        let c = kelvin_to_celsius(s.composite_temperature_k);
        sink.gauge(
            &TEMPERATURE,
            &[base[0], base[1], ("sensor", "composite")],
            c,
        );
    }
    for (i, k) in s.temperature_sensors_k.iter().enumerate() {
        if let Some(k) = k {
            let n = (i + 1).to_string();
            let c = kelvin_to_celsius(*k);
            sink.gauge(&TEMPERATURE, &[base[0], base[1], ("sensor", &n)], c);
        }
    }
    let pct = |p: u8| f64::from(p) / 100.0;
    sink.gauge(&AVAILABLE_SPARE, &base, pct(s.available_spare_pct));
    sink.gauge(
        &AVAILABLE_SPARE_THRESHOLD,
        &base,
        pct(s.available_spare_threshold_pct),
    );
    sink.gauge(&ENDURANCE_USED, &base, pct(s.percentage_used));
    sink.counter(&DATA_READ, &base, f(s.data_read_bytes()));
    sink.counter(&DATA_WRITTEN, &base, f(s.data_written_bytes()));
    sink.counter(&HOST_READS, &base, f(s.host_read_commands));
    sink.counter(&HOST_WRITES, &base, f(s.host_write_commands));
    sink.counter(&BUSY, &base, f(s.controller_busy_time_min) * 60.0);
    sink.counter(&POWER_CYCLES, &base, f(s.power_cycles));
    sink.counter(&POWER_ON, &base, f(s.power_on_hours) * 3600.0);
    sink.counter(&UNSAFE_SHUTDOWNS, &base, f(s.unsafe_shutdowns));
    sink.counter(&MEDIA_ERRORS, &base, f(s.media_errors));
    sink.counter(&ERROR_LOG_ENTRIES, &base, f(s.error_log_entries));
    let min = |m: u32| f64::from(m) * 60.0;
    sink.counter(&WARNING_TEMP_TIME, &base, min(s.warning_temp_time_min));
    sink.counter(&CRITICAL_TEMP_TIME, &base, min(s.critical_temp_time_min));
    for (i, level) in ["1", "2"].into_iter().enumerate() {
        let l = [base[0], base[1], ("level", level)];
        sink.counter(
            &THERMAL_TRANSITIONS,
            &l,
            f64::from(s.thermal_mgmt_transitions[i]),
        );
        sink.counter(&THERMAL_TIME, &l, f64::from(s.thermal_mgmt_time_s[i]));
    }
}

#[cfg(test)]
mod tests;
