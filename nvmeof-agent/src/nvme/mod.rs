//! The NVMe admin command layer: the passthrough ioctl on `/dev/nvmeN` (`ioctl`) and pure
//! decoders for the pages it returns (`smart_log`, `identify`, `error_log`).
//!
//! The decoders take byte slices and never panic: a short page is a `DecodeError`, so pages
//! captured in the lab (see `ioctl::read_smart_raw`) can be replayed in tests on any host.
pub mod error_log;
pub mod identify;
pub mod ioctl;
pub mod smart_log;

pub use error_log::{ErrorLogEntry, ERROR_LOG_ENTRY_LEN};
pub use identify::{IdentifyController, IDENTIFY_LEN};
pub use ioctl::{
    read_error_log, read_identify, read_identify_raw, read_smart_log, read_smart_raw, NvmeError,
};
pub use smart_log::{CriticalWarning, SmartLog, SMART_LOG_LEN};

/// A page shorter than its layout: the command returned less than asked, or a capture was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub page: &'static str,
    pub need: usize,
    pub got: usize,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} page too short: {} bytes, need {}",
            self.page, self.got, self.need
        )
    }
}

impl std::error::Error for DecodeError {}

/// Little-endian field readers over a page whose length the caller has already checked; each
/// decoder checks once up front so that the field list below it reads like the specification.
pub(crate) struct Le<'a>(pub(crate) &'a [u8]);

impl Le<'_> {
    pub(crate) fn u8(&self, at: usize) -> u8 {
        self.0[at]
    }
    pub(crate) fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.0[at], self.0[at + 1]])
    }
    pub(crate) fn u32(&self, at: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[at..at + 4]);
        u32::from_le_bytes(b)
    }
    pub(crate) fn u64(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(b)
    }
    pub(crate) fn u128(&self, at: usize) -> u128 {
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.0[at..at + 16]);
        u128::from_le_bytes(b)
    }
    /// ASCII fields are space padded (serial, model, firmware) or NUL padded (NQNs).
    pub(crate) fn text(&self, from: usize, to: usize) -> String {
        String::from_utf8_lossy(&self.0[from..to])
            .trim_end_matches([' ', '\0'])
            .trim_start()
            .to_owned()
    }
}

pub(crate) fn check<'a>(
    page: &'static str,
    buf: &'a [u8],
    need: usize,
) -> Result<Le<'a>, DecodeError> {
    if buf.len() < need {
        return Err(DecodeError {
            page,
            need,
            got: buf.len(),
        });
    }
    Ok(Le(buf))
}
