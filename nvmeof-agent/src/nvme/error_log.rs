//! The Error Information log page (Log Identifier 01h): `elpe + 1` entries of 64 bytes, newest
//! first. An entry whose Error Count is 0 is unused.
use super::{check, DecodeError};

pub const ERROR_LOG_ENTRY_LEN: usize = 64;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorLogEntry {
    /// A 64-bit count unique to this error; 0 = empty entry.
    pub error_count: u64,
    pub sqid: u16,
    pub cid: u16,
    /// Status Field with the Phase Tag (bit 0) removed: SCT in bits 10:8, SC in bits 7:0, plus
    /// the CRD/More/DNR bits above them, as in a completion entry.
    pub status: u16,
    /// Byte and bit of the command parameter in error; 0xffff = not applicable.
    pub param_error_location: u16,
    pub lba: u64,
    pub nsid: u32,
    pub vendor_specific_page: u8,
    pub trtype: u8,
    pub command_specific: u64,
    pub trtype_specific: u16,
}

impl ErrorLogEntry {
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let b = check("Error Information entry", buf, ERROR_LOG_ENTRY_LEN)?;
        Ok(Self {
            error_count: b.u64(0),
            sqid: b.u16(8),
            cid: b.u16(10),
            status: b.u16(12) >> 1,
            param_error_location: b.u16(14),
            lba: b.u64(16),
            nsid: b.u32(24),
            vendor_specific_page: b.u8(28),
            trtype: b.u8(29),
            command_specific: b.u64(32),
            trtype_specific: b.u16(40),
        })
    }

    /// Decodes a whole page, dropping unused entries. A trailing partial entry is an error: the
    /// page length should be a whole number of entries.
    pub fn decode_page(buf: &[u8]) -> Result<Vec<Self>, DecodeError> {
        if !buf.len().is_multiple_of(ERROR_LOG_ENTRY_LEN) {
            return Err(DecodeError {
                page: "Error Information log",
                need: buf.len().next_multiple_of(ERROR_LOG_ENTRY_LEN),
                got: buf.len(),
            });
        }
        buf.chunks_exact(ERROR_LOG_ENTRY_LEN)
            .map(Self::decode)
            .filter(|e| !matches!(e, Ok(e) if e.error_count == 0))
            .collect()
    }

    pub fn status_code_type(&self) -> u8 {
        ((self.status >> 8) & 0x7) as u8
    }
    pub fn status_code(&self) -> u8 {
        (self.status & 0xff) as u8
    }
    pub fn do_not_retry(&self) -> bool {
        self.status & 0x4000 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(count: u64) -> [u8; ERROR_LOG_ENTRY_LEN] {
        let mut p = [0u8; ERROR_LOG_ENTRY_LEN];
        p[0..8].copy_from_slice(&count.to_le_bytes());
        p[8..10].copy_from_slice(&3u16.to_le_bytes());
        p[10..12].copy_from_slice(&0x1234u16.to_le_bytes());
        // DNR, SCT 2 (media errors), SC 0x81 (unrecovered read error), phase tag set.
        let sf: u16 = ((0x4000 | 0x200 | 0x81) << 1) | 1;
        p[12..14].copy_from_slice(&sf.to_le_bytes());
        p[14..16].copy_from_slice(&0xffffu16.to_le_bytes());
        p[16..24].copy_from_slice(&0xdead_beefu64.to_le_bytes());
        p[24..28].copy_from_slice(&1u32.to_le_bytes());
        p[28] = 0;
        p[29] = 3;
        p[32..40].copy_from_slice(&77u64.to_le_bytes());
        p[40..42].copy_from_slice(&9u16.to_le_bytes());
        p
    }

    #[test]
    fn decodes_every_field() {
        let e = ErrorLogEntry::decode(&entry(5)).unwrap();
        assert_eq!(
            e,
            ErrorLogEntry {
                error_count: 5,
                sqid: 3,
                cid: 0x1234,
                status: 0x4281,
                param_error_location: 0xffff,
                lba: 0xdead_beef,
                nsid: 1,
                vendor_specific_page: 0,
                trtype: 3,
                command_specific: 77,
                trtype_specific: 9,
            }
        );
        assert_eq!((e.status_code_type(), e.status_code()), (2, 0x81));
        assert!(e.do_not_retry());
    }

    #[test]
    fn page_skips_empty_entries() {
        let mut page = Vec::new();
        page.extend_from_slice(&entry(7));
        page.extend_from_slice(&[0u8; ERROR_LOG_ENTRY_LEN]);
        page.extend_from_slice(&entry(6));
        let v = ErrorLogEntry::decode_page(&page).unwrap();
        assert_eq!(
            v.iter().map(|e| e.error_count).collect::<Vec<_>>(),
            vec![7, 6]
        );
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        assert_eq!(ErrorLogEntry::decode(&entry(1)[..63]).unwrap_err().got, 63);
        let e = ErrorLogEntry::decode_page(&[0u8; 100]).unwrap_err();
        assert_eq!((e.need, e.got), (128, 100));
        assert!(ErrorLogEntry::decode_page(&[]).unwrap().is_empty());
    }
}
