//! The SMART / Health Information log page (Log Identifier 02h), decoded from its 512 bytes.
//!
//! Offsets follow the NVMe Base Specification (2.0, figure "SMART / Health Information Log
//! Page"); counters are kept in the page's own units and converted by the accessors, so a test
//! can compare a decoded page field by field with `nvme smart-log -o json`.
use super::{check, DecodeError};

pub const SMART_LOG_LEN: usize = 512;

/// Data units are thousands of 512-byte units, rounded up by the controller.
pub const DATA_UNIT_BYTES: u128 = 512 * 1000;

/// Critical Warning (byte 0). Bits 6 and 7 are reserved; `raw` keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CriticalWarning(pub u8);

impl CriticalWarning {
    /// Each bit with the label value the `smart` collector exports for it, in bit order.
    pub const BITS: [(u8, &'static str); 6] = [
        (0, "available_spare"),
        (1, "temperature"),
        (2, "reliability_degraded"),
        (3, "read_only"),
        (4, "volatile_memory_backup_failed"),
        (5, "persistent_memory_read_only"),
    ];

    pub fn raw(self) -> u8 {
        self.0
    }
    pub fn bit(self, n: u8) -> bool {
        n < 8 && self.0 & (1 << n) != 0
    }
    /// Available spare capacity fell below the threshold.
    pub fn available_spare(self) -> bool {
        self.bit(0)
    }
    /// A temperature is above its over-temperature or below its under-temperature threshold.
    pub fn temperature(self) -> bool {
        self.bit(1)
    }
    /// NVM subsystem reliability degraded by media or internal errors.
    pub fn reliability_degraded(self) -> bool {
        self.bit(2)
    }
    /// All media placed in read-only mode.
    pub fn read_only(self) -> bool {
        self.bit(3)
    }
    pub fn volatile_memory_backup_failed(self) -> bool {
        self.bit(4)
    }
    pub fn persistent_memory_read_only(self) -> bool {
        self.bit(5)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmartLog {
    pub critical_warning: CriticalWarning,
    /// Composite temperature in kelvin.
    pub composite_temperature_k: u16,
    /// Percent of spare capacity left (0–100).
    pub available_spare_pct: u8,
    pub available_spare_threshold_pct: u8,
    /// Vendor estimate of life used; may exceed 100 (saturates at 255).
    pub percentage_used: u8,
    /// Endurance Group Critical Warning Summary (byte 6), a bit per condition like byte 0.
    pub endurance_group_critical_warning: u8,
    /// In units of 1000 × 512 bytes.
    pub data_units_read: u128,
    pub data_units_written: u128,
    pub host_read_commands: u128,
    pub host_write_commands: u128,
    /// Minutes.
    pub controller_busy_time_min: u128,
    pub power_cycles: u128,
    pub power_on_hours: u128,
    pub unsafe_shutdowns: u128,
    pub media_errors: u128,
    pub error_log_entries: u128,
    /// Minutes spent above the warning / critical composite temperature threshold.
    pub warning_temp_time_min: u32,
    pub critical_temp_time_min: u32,
    /// Temperature sensors 1–8 in kelvin; `None` where the page reports 0 (no such sensor).
    pub temperature_sensors_k: [Option<u16>; 8],
    /// Thermal Management Temperature 1 and 2: transition counts and total seconds.
    pub thermal_mgmt_transitions: [u32; 2],
    pub thermal_mgmt_time_s: [u32; 2],
}

impl SmartLog {
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        // The fields end at 232; the rest of the 512 bytes is reserved, so accept a page that
        // stops there rather than reject a capture that was trimmed of zeros.
        let b = check("SMART log", buf, 232)?;
        let mut temperature_sensors_k = [None; 8];
        for (i, s) in temperature_sensors_k.iter_mut().enumerate() {
            let k = b.u16(200 + 2 * i);
            *s = (k != 0).then_some(k);
        }
        Ok(Self {
            critical_warning: CriticalWarning(b.u8(0)),
            composite_temperature_k: b.u16(1),
            available_spare_pct: b.u8(3),
            available_spare_threshold_pct: b.u8(4),
            percentage_used: b.u8(5),
            endurance_group_critical_warning: b.u8(6),
            data_units_read: b.u128(32),
            data_units_written: b.u128(48),
            host_read_commands: b.u128(64),
            host_write_commands: b.u128(80),
            controller_busy_time_min: b.u128(96),
            power_cycles: b.u128(112),
            power_on_hours: b.u128(128),
            unsafe_shutdowns: b.u128(144),
            media_errors: b.u128(160),
            error_log_entries: b.u128(176),
            warning_temp_time_min: b.u32(192),
            critical_temp_time_min: b.u32(196),
            temperature_sensors_k,
            thermal_mgmt_transitions: [b.u32(216), b.u32(220)],
            thermal_mgmt_time_s: [b.u32(224), b.u32(228)],
        })
    }

    pub fn data_read_bytes(&self) -> u128 {
        self.data_units_read.saturating_mul(DATA_UNIT_BYTES)
    }
    pub fn data_written_bytes(&self) -> u128 {
        self.data_units_written.saturating_mul(DATA_UNIT_BYTES)
    }
}

/// Kelvin to degrees Celsius, the unit the exporter publishes. Computed in hundredths so that
/// 323 K prints as 49.85, not 49.85000000000002.
pub fn kelvin_to_celsius(k: u16) -> f64 {
    (i32::from(k) * 100 - 27315) as f64 / 100.0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A page where every field has a distinct value, so a wrong offset shows as a wrong figure.
    pub(crate) fn full_page() -> [u8; SMART_LOG_LEN] {
        let mut p = [0u8; SMART_LOG_LEN];
        p[0] = 0b0011_1111;
        p[1..3].copy_from_slice(&323u16.to_le_bytes());
        p[3] = 97;
        p[4] = 10;
        p[5] = 3;
        p[6] = 0x05;
        let wide: [(usize, u128); 10] = [
            (32, 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            (48, 2_000),
            (64, 3_000_000),
            (80, 4_000_000),
            (96, 55),
            (112, 66),
            (128, 77),
            (144, 88),
            (160, 99),
            (176, 111),
        ];
        for (at, v) in wide {
            p[at..at + 16].copy_from_slice(&v.to_le_bytes());
        }
        p[192..196].copy_from_slice(&12u32.to_le_bytes());
        p[196..200].copy_from_slice(&34u32.to_le_bytes());
        for i in 0..8 {
            // Sensor 4 (index 3) absent.
            let k: u16 = if i == 3 { 0 } else { 300 + i as u16 };
            p[200 + 2 * i..202 + 2 * i].copy_from_slice(&k.to_le_bytes());
        }
        p[216..220].copy_from_slice(&5u32.to_le_bytes());
        p[220..224].copy_from_slice(&6u32.to_le_bytes());
        p[224..228].copy_from_slice(&700u32.to_le_bytes());
        p[228..232].copy_from_slice(&800u32.to_le_bytes());
        p
    }

    /// The whole struct at once, so that a field added to it must be given a value here.
    #[test]
    fn decodes_every_field() {
        let s = SmartLog::decode(&full_page()).unwrap();
        assert_eq!(
            s,
            SmartLog {
                critical_warning: CriticalWarning(0x3f),
                composite_temperature_k: 323,
                available_spare_pct: 97,
                available_spare_threshold_pct: 10,
                percentage_used: 3,
                endurance_group_critical_warning: 0x05,
                data_units_read: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
                data_units_written: 2_000,
                host_read_commands: 3_000_000,
                host_write_commands: 4_000_000,
                controller_busy_time_min: 55,
                power_cycles: 66,
                power_on_hours: 77,
                unsafe_shutdowns: 88,
                media_errors: 99,
                error_log_entries: 111,
                warning_temp_time_min: 12,
                critical_temp_time_min: 34,
                temperature_sensors_k: [
                    Some(300),
                    Some(301),
                    Some(302),
                    None,
                    Some(304),
                    Some(305),
                    Some(306),
                    Some(307)
                ],
                thermal_mgmt_transitions: [5, 6],
                thermal_mgmt_time_s: [700, 800],
            }
        );
        assert_eq!(s.critical_warning.raw(), 0x3f);
        assert_eq!(s.data_written_bytes(), 1_024_000_000);
    }

    #[test]
    fn each_critical_warning_bit_alone() {
        type Getter = fn(CriticalWarning) -> bool;
        let getters: [Getter; 6] = [
            CriticalWarning::available_spare,
            CriticalWarning::temperature,
            CriticalWarning::reliability_degraded,
            CriticalWarning::read_only,
            CriticalWarning::volatile_memory_backup_failed,
            CriticalWarning::persistent_memory_read_only,
        ];
        for (n, name) in CriticalWarning::BITS {
            let mut p = [0u8; SMART_LOG_LEN];
            p[0] = 1 << n;
            let cw = SmartLog::decode(&p).unwrap().critical_warning;
            for (m, get) in getters.iter().enumerate() {
                assert_eq!(get(cw), m == n as usize, "bit {n} ({name}) vs getter {m}");
            }
            assert_eq!(cw.raw(), 1 << n);
        }
        // Reserved bits survive in the raw byte without naming a condition.
        let cw = CriticalWarning(0xc0);
        assert!(CriticalWarning::BITS.iter().all(|&(n, _)| !cw.bit(n)));
        assert_eq!(cw.raw(), 0xc0);
        assert!(!cw.bit(8));
    }

    #[test]
    fn short_page_is_an_error_not_a_panic() {
        for len in [0, 1, 100, 231] {
            let e = SmartLog::decode(&full_page()[..len]).unwrap_err();
            assert_eq!((e.need, e.got), (232, len));
        }
        assert!(SmartLog::decode(&full_page()[..232]).is_ok());
    }

    #[test]
    fn units() {
        assert_eq!(kelvin_to_celsius(323), 49.85);
        assert_eq!(kelvin_to_celsius(0), -273.15);
        assert_eq!(kelvin_to_celsius(u16::MAX), 65261.85);
        let s = SmartLog {
            data_units_read: u128::MAX,
            ..Default::default()
        };
        assert_eq!(s.data_read_bytes(), u128::MAX);
    }
}
