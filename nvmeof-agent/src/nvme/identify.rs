//! The Identify Controller data structure (CNS 01h), decoded from its 4096 bytes: the few fields
//! the exporter labels with (model, serial, firmware), and those that size other commands (ELPE
//! for the error log, VER for which log page options the controller knows).
use super::{check, DecodeError};

pub const IDENTIFY_LEN: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentifyController {
    /// PCI Vendor ID and Subsystem Vendor ID.
    pub vid: u16,
    pub ssvid: u16,
    pub serial: String,
    pub model: String,
    pub firmware: String,
    /// Recommended Arbitration Burst.
    pub rab: u8,
    /// IEEE OUI, as the 24-bit number it encodes.
    pub ieee_oui: u32,
    /// Controller Multi-Path I/O and Namespace Sharing Capabilities.
    pub cmic: u8,
    /// Maximum Data Transfer Size, a power of two in units of the minimum page size; 0 = none.
    pub mdts: u8,
    pub cntlid: u16,
    /// Version: major << 16 | minor << 8 | tertiary; 0 before NVMe 1.2.
    pub ver: u32,
    pub ctratt: u32,
    pub oacs: u16,
    /// Log Page Attributes.
    pub lpa: u8,
    /// Error Log Page Entries, 0's based: the controller keeps `elpe + 1` entries.
    pub elpe: u8,
    /// Number of Power States Support, 0's based.
    pub npss: u8,
    /// Warning and Critical Composite Temperature Thresholds in kelvin; 0 = not reported.
    pub wctemp_k: u16,
    pub cctemp_k: u16,
    /// Total and unallocated NVM capacity in bytes (0 where not reported).
    pub tnvmcap: u128,
    pub unvmcap: u128,
    /// Number of Namespaces (the highest valid NSID).
    pub nn: u32,
    /// NVM Subsystem NVMe Qualified Name; empty before NVMe 1.2.1.
    pub subnqn: String,
}

impl IdentifyController {
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        // SUBNQN ends at 1024; the rest is power state descriptors and vendor space.
        let b = check("Identify Controller", buf, 1024)?;
        Ok(Self {
            vid: b.u16(0),
            ssvid: b.u16(2),
            serial: b.text(4, 24),
            model: b.text(24, 64),
            firmware: b.text(64, 72),
            rab: b.u8(72),
            ieee_oui: u32::from_le_bytes([b.u8(73), b.u8(74), b.u8(75), 0]),
            cmic: b.u8(76),
            mdts: b.u8(77),
            cntlid: b.u16(78),
            ver: b.u32(80),
            ctratt: b.u32(96),
            oacs: b.u16(256),
            lpa: b.u8(261),
            elpe: b.u8(262),
            npss: b.u8(263),
            wctemp_k: b.u16(266),
            cctemp_k: b.u16(268),
            tnvmcap: b.u128(280),
            unvmcap: b.u128(296),
            nn: b.u32(516),
            subnqn: b.text(768, 1024),
        })
    }

    /// Number of entries in the Error Information log.
    pub fn error_log_entries(&self) -> usize {
        usize::from(self.elpe) + 1
    }

    /// Whether the controller claims NVMe 1.3 or later, the version that defined the Retain
    /// Asynchronous Event bit of Get Log Page; older ones may reject it as a reserved field.
    pub fn knows_rae(&self) -> bool {
        self.ver >= 0x0001_0300
    }

    /// "1.4.0" style, as `nvme id-ctrl` prints it.
    pub fn version_string(&self) -> String {
        format!(
            "{}.{}.{}",
            self.ver >> 16,
            (self.ver >> 8) & 0xff,
            self.ver & 0xff
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn full_page() -> Vec<u8> {
        let mut p = vec![0u8; IDENTIFY_LEN];
        p[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        p[2..4].copy_from_slice(&0x1af4u16.to_le_bytes());
        p[4..24].copy_from_slice(b"SN-0001             ");
        p[24..64].copy_from_slice(b"QEMU NVMe Ctrl                          ");
        p[64..72].copy_from_slice(b"9.1.0   ");
        p[72] = 6;
        p[73..76].copy_from_slice(&[0x00, 0x54, 0x52]);
        p[76] = 0x0b;
        p[77] = 7;
        p[78..80].copy_from_slice(&0x0042u16.to_le_bytes());
        p[80..84].copy_from_slice(&0x0001_0400u32.to_le_bytes());
        p[96..100].copy_from_slice(&0x8000_0010u32.to_le_bytes());
        p[256..258].copy_from_slice(&0x012au16.to_le_bytes());
        p[261] = 0x0f;
        p[262] = 63;
        p[263] = 2;
        p[266..268].copy_from_slice(&343u16.to_le_bytes());
        p[268..270].copy_from_slice(&373u16.to_le_bytes());
        p[280..296].copy_from_slice(&1_000_204_886_016u128.to_le_bytes());
        p[296..312].copy_from_slice(&4096u128.to_le_bytes());
        p[516..520].copy_from_slice(&256u32.to_le_bytes());
        let nqn = b"nqn.2019-08.org.qemu:SN-0001";
        p[768..768 + nqn.len()].copy_from_slice(nqn);
        p
    }

    #[test]
    fn decodes_every_field() {
        let id = IdentifyController::decode(&full_page()).unwrap();
        assert_eq!(
            id,
            IdentifyController {
                vid: 0x1b36,
                ssvid: 0x1af4,
                serial: "SN-0001".into(),
                model: "QEMU NVMe Ctrl".into(),
                firmware: "9.1.0".into(),
                rab: 6,
                ieee_oui: 0x52_5400,
                cmic: 0x0b,
                mdts: 7,
                cntlid: 0x42,
                ver: 0x0001_0400,
                ctratt: 0x8000_0010,
                oacs: 0x012a,
                lpa: 0x0f,
                elpe: 63,
                npss: 2,
                wctemp_k: 343,
                cctemp_k: 373,
                tnvmcap: 1_000_204_886_016,
                unvmcap: 4096,
                nn: 256,
                subnqn: "nqn.2019-08.org.qemu:SN-0001".into(),
            }
        );
        assert_eq!(id.error_log_entries(), 64);
        assert!(id.knows_rae());
        assert_eq!(id.version_string(), "1.4.0");
    }

    #[test]
    fn old_controller_has_no_rae() {
        let id = IdentifyController {
            ver: 0x0001_0201,
            ..Default::default()
        };
        assert!(!id.knows_rae());
        assert_eq!(IdentifyController::default().error_log_entries(), 1);
    }

    #[test]
    fn short_page_is_an_error_not_a_panic() {
        let p = full_page();
        for len in [0, 4, 1023] {
            let e = IdentifyController::decode(&p[..len]).unwrap_err();
            assert_eq!((e.page, e.need, e.got), ("Identify Controller", 1024, len));
        }
    }
}
