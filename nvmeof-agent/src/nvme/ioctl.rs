//! Admin commands through the kernel's passthrough ioctl on a controller's character device
//! (`/dev/nvmeN`, fabrics and PCIe alike): Identify Controller, and Get Log Page for the SMART /
//! Health and Error Information logs. No process is forked; `nvme-cli` is not needed at run time.
//!
//! Privileges: opening `/dev/nvmeN` needs read access, and the kernel allows Get Log Page only
//! with CAP_SYS_ADMIN (Identify Controller alone is open to others since 6.2); both failures
//! come back as `NvmeError::PermissionDenied`.
//!
//! Timeouts: the command's `timeout_ms` replaces the kernel's admin timeout (60 s) for this
//! command only. When it fires the kernel recovers the controller as for any timed-out command
//! (abort, then reset or, on fabrics, reconnect), and the ioctl fails with EINTR. A caller that
//! cannot afford to block should run these on a thread of its own (`crate::smart` does).
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    DecodeError, ErrorLogEntry, IdentifyController, SmartLog, ERROR_LOG_ENTRY_LEN, IDENTIFY_LEN,
    SMART_LOG_LEN,
};

/// `struct nvme_passthru_cmd` (alias `nvme_admin_cmd`) of `include/uapi/linux/nvme_ioctl.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AdminCmd {
    pub opcode: u8,
    pub flags: u8,
    pub rsvd1: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub metadata: u64,
    pub addr: u64,
    pub metadata_len: u32,
    pub data_len: u32,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
    pub timeout_ms: u32,
    /// Dword 0 of the completion, written back by the kernel.
    pub result: u32,
}

// The ioctl number encodes the direction and size. Most architectures use the asm-generic
// layout (2 direction bits at 30, read 2 | write 1); powerpc, mips and sparc keep 3 direction
// bits at 29 (read 2 | write 4) and 13 size bits. Read-write lands on the same two top bits in
// both, (1 | 2) << 30 == (2 | 4) << 29, and the admin command's size fits 13 bits: one value.
const IOC_READ_WRITE_SHIFTED: u64 = (1 | 2) << 30;

const fn iowr(ty: u8, nr: u8, size: usize) -> u64 {
    IOC_READ_WRITE_SHIFTED | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

/// `_IOWR('N', 0x41, struct nvme_admin_cmd)`.
pub const NVME_IOCTL_ADMIN_CMD: u64 = iowr(b'N', 0x41, std::mem::size_of::<AdminCmd>());

pub const OPC_GET_LOG_PAGE: u8 = 0x02;
pub const OPC_IDENTIFY: u8 = 0x06;
pub const CNS_CONTROLLER: u32 = 0x01;
pub const LID_ERROR_INFO: u8 = 0x01;
pub const LID_SMART: u8 = 0x02;
/// The controller-wide scope for log pages that can also be read per namespace.
pub const NSID_ALL: u32 = 0xffff_ffff;
/// Error Information entries a controller may keep at most (ELPE is one byte, 0's based).
pub const MAX_ERROR_LOG_ENTRIES: usize = 256;

/// Why an admin command failed; every variant names the device.
#[derive(Debug)]
pub enum NvmeError {
    /// Opening the device or the command itself was refused (EACCES/EPERM).
    PermissionDenied { dev: PathBuf, op: &'static str },
    /// The device node or the controller behind it is gone (ENOENT/ENODEV/ENXIO).
    NoDevice { dev: PathBuf },
    /// The kernel refused to open a controller that is not live (EWOULDBLOCK): it is
    /// resetting, connecting or being deleted.
    NotLive { dev: PathBuf },
    /// The controller completed the command with a non-zero status.
    Status {
        dev: PathBuf,
        op: &'static str,
        status: u16,
    },
    /// The command timed out or was cancelled by a controller reset (EINTR/ETIMEDOUT).
    Timeout {
        dev: PathBuf,
        op: &'static str,
        timeout: Duration,
    },
    /// Any other system error.
    Io {
        dev: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// The command succeeded but the page could not be decoded.
    Decode { dev: PathBuf, source: DecodeError },
}

impl NvmeError {
    /// A short, stable name for the `reason` label of `nvmeof_smart_poll_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            NvmeError::PermissionDenied { .. } => "permission_denied",
            NvmeError::NoDevice { .. } => "no_device",
            NvmeError::NotLive { .. } => "not_live",
            NvmeError::Status { .. } => "nvme_status",
            NvmeError::Timeout { .. } => "timeout",
            NvmeError::Io { .. } => "io",
            NvmeError::Decode { .. } => "decode",
        }
    }

    fn from_errno(dev: &Path, op: &'static str, timeout: Duration, e: io::Error) -> Self {
        let dev = dev.to_owned();
        match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => NvmeError::PermissionDenied { dev, op },
            Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => NvmeError::NoDevice { dev },
            Some(libc::EWOULDBLOCK) => NvmeError::NotLive { dev },
            Some(libc::EINTR | libc::ETIMEDOUT) => NvmeError::Timeout { dev, op, timeout },
            _ => NvmeError::Io { dev, op, source: e },
        }
    }
}

/// A few status codes worth a name in a log line; `nvme-cli` has the full table.
fn status_name(status: u16) -> &'static str {
    match status & 0x7ff {
        0x001 => "Invalid Command Opcode",
        0x002 => "Invalid Field in Command",
        0x004 => "Data Transfer Error",
        0x006 => "Internal Error",
        0x007 => "Command Abort Requested",
        0x109 => "Invalid Log Page",
        0x370 => "Host Pathing Error",
        0x371 => "Command Aborted By Host",
        _ => "see the NVMe status code tables",
    }
}

impl std::fmt::Display for NvmeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NvmeError::PermissionDenied { dev, op } => write!(
                f,
                "{}: permission denied for {op}: SMART polling needs read access to the device \
                 and CAP_SYS_ADMIN",
                dev.display()
            ),
            NvmeError::NoDevice { dev } => write!(f, "{}: no such controller", dev.display()),
            NvmeError::NotLive { dev } => {
                write!(
                    f,
                    "{}: controller is not live (resetting or connecting)",
                    dev.display()
                )
            }
            NvmeError::Status { dev, op, status } => write!(
                f,
                "{}: {op} failed with NVMe status {status:#05x} (SCT {}, SC {:#04x}: {})",
                dev.display(),
                (status >> 8) & 0x7,
                status & 0xff,
                status_name(*status)
            ),
            NvmeError::Timeout { dev, op, timeout } => write!(
                f,
                "{}: {op} timed out or was cancelled by a controller reset (timeout {} ms)",
                dev.display(),
                timeout.as_millis()
            ),
            NvmeError::Io { dev, op, source } => write!(f, "{}: {op}: {source}", dev.display()),
            NvmeError::Decode { dev, source } => write!(f, "{}: {source}", dev.display()),
        }
    }
}

impl std::error::Error for NvmeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NvmeError::Io { source, .. } => Some(source),
            NvmeError::Decode { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Milliseconds for `timeout_ms`: at least 1 for a non-zero duration (0 means "the kernel's
/// default"), saturating at u32::MAX.
fn timeout_ms(t: Duration) -> u32 {
    if t.is_zero() {
        return 0;
    }
    u32::try_from(t.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// One admin command on an open controller device, with `buf` as its data (controller to host).
/// Returns Dword 0 of the completion.
fn submit(
    file: &File,
    dev: &Path,
    op: &'static str,
    mut cmd: AdminCmd,
    buf: &mut [u8],
    timeout: Duration,
) -> Result<u32, NvmeError> {
    cmd.addr = buf.as_mut_ptr() as u64;
    cmd.data_len = u32::try_from(buf.len()).map_err(|_| NvmeError::Io {
        dev: dev.to_owned(),
        op,
        source: io::Error::new(io::ErrorKind::InvalidInput, "data buffer over 4 GiB"),
    })?;
    cmd.timeout_ms = timeout_ms(timeout);
    // SAFETY: the descriptor is open for the whole call (borrowed `file`); `cmd` is an
    // exclusively borrowed `#[repr(C)]` copy of the kernel's 72-byte struct, whose size the
    // request number encodes; `addr`/`data_len` were set just above from `buf`, which is
    // exclusively borrowed until we return, so the kernel writes at most `buf.len()` bytes into
    // live memory; no metadata buffer is passed (`metadata_len` is 0), and the kernel keeps no
    // pointer after the call returns.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), NVME_IOCTL_ADMIN_CMD as _, &mut cmd) };
    match ret {
        0 => Ok(cmd.result),
        r if r > 0 => Err(NvmeError::Status {
            dev: dev.to_owned(),
            op,
            status: r as u16,
        }),
        _ => Err(NvmeError::from_errno(
            dev,
            op,
            timeout,
            io::Error::last_os_error(),
        )),
    }
}

fn open(dev: &Path, timeout: Duration) -> Result<File, NvmeError> {
    // Read-only is enough for the passthrough ioctl; the fd is closed after each poll so a
    // deleted controller is never kept alive by the exporter.
    File::open(dev).map_err(|e| NvmeError::from_errno(dev, "open", timeout, e))
}

/// Get Log Page into `buf` (its length, a multiple of 4, sets the transfer size). `rae` sets
/// Retain Asynchronous Event, so that a passive reader does not clear an event another tool is
/// waiting for; controllers older than NVMe 1.3 may reject it (see `IdentifyController::knows_rae`).
pub fn get_log_page(
    dev: &Path,
    lid: u8,
    nsid: u32,
    rae: bool,
    buf: &mut [u8],
    timeout: Duration,
) -> Result<(), NvmeError> {
    debug_assert!(buf.len() >= 4 && buf.len().is_multiple_of(4));
    let file = open(dev, timeout)?;
    let cmd = log_page_cmd(lid, nsid, rae, buf.len());
    submit(&file, dev, "Get Log Page", cmd, buf, timeout).map(|_| ())
}

/// The command for `len` bytes of log `lid` from offset 0: NUMD is the 0's based dword count,
/// split into NUMDL (cdw10 bits 31:16) and NUMDU (cdw11 bits 15:0).
pub fn log_page_cmd(lid: u8, nsid: u32, rae: bool, len: usize) -> AdminCmd {
    let numd = (len / 4).saturating_sub(1) as u32;
    AdminCmd {
        opcode: OPC_GET_LOG_PAGE,
        nsid,
        cdw10: u32::from(lid) | (u32::from(rae) << 15) | ((numd & 0xffff) << 16),
        cdw11: numd >> 16,
        ..Default::default()
    }
}

pub fn identify_cmd() -> AdminCmd {
    AdminCmd {
        opcode: OPC_IDENTIFY,
        nsid: 0,
        cdw10: CNS_CONTROLLER,
        ..Default::default()
    }
}

/// The raw 4096-byte Identify Controller data structure.
pub fn read_identify_raw(dev: &Path, timeout: Duration) -> Result<Vec<u8>, NvmeError> {
    let file = open(dev, timeout)?;
    let mut buf = vec![0u8; IDENTIFY_LEN];
    submit(
        &file,
        dev,
        "Identify Controller",
        identify_cmd(),
        &mut buf,
        timeout,
    )?;
    Ok(buf)
}

/// The raw 512-byte SMART / Health log, controller wide, with RAE clear (what a capture tool
/// compared against `nvme smart-log` wants). For lab captures and tests.
pub fn read_smart_raw(dev: &Path, timeout: Duration) -> Result<[u8; SMART_LOG_LEN], NvmeError> {
    read_smart_raw_with(dev, false, timeout)
}

pub fn read_smart_raw_with(
    dev: &Path,
    rae: bool,
    timeout: Duration,
) -> Result<[u8; SMART_LOG_LEN], NvmeError> {
    let mut buf = [0u8; SMART_LOG_LEN];
    get_log_page(dev, LID_SMART, NSID_ALL, rae, &mut buf, timeout)?;
    Ok(buf)
}

/// The raw Error Information log: `entries` × 64 bytes (capped at 256 entries).
pub fn read_error_log_raw(
    dev: &Path,
    entries: usize,
    rae: bool,
    timeout: Duration,
) -> Result<Vec<u8>, NvmeError> {
    let n = entries.clamp(1, MAX_ERROR_LOG_ENTRIES);
    let mut buf = vec![0u8; n * ERROR_LOG_ENTRY_LEN];
    get_log_page(dev, LID_ERROR_INFO, NSID_ALL, rae, &mut buf, timeout)?;
    Ok(buf)
}

pub fn read_identify(dev: &Path, timeout: Duration) -> Result<IdentifyController, NvmeError> {
    let raw = read_identify_raw(dev, timeout)?;
    IdentifyController::decode(&raw).map_err(|source| NvmeError::Decode {
        dev: dev.to_owned(),
        source,
    })
}

pub fn read_smart_log(dev: &Path, rae: bool, timeout: Duration) -> Result<SmartLog, NvmeError> {
    let raw = read_smart_raw_with(dev, rae, timeout)?;
    SmartLog::decode(&raw).map_err(|source| NvmeError::Decode {
        dev: dev.to_owned(),
        source,
    })
}

/// The used entries of the Error Information log, newest first; `id` sizes the read.
pub fn read_error_log(
    dev: &Path,
    id: &IdentifyController,
    timeout: Duration,
) -> Result<Vec<ErrorLogEntry>, NvmeError> {
    let raw = read_error_log_raw(dev, id.error_log_entries(), id.knows_rae(), timeout)?;
    ErrorLogEntry::decode_page(&raw).map_err(|source| NvmeError::Decode {
        dev: dev.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn admin_cmd_matches_the_kernel_layout() {
        assert_eq!(size_of::<AdminCmd>(), 72);
        assert_eq!(offset_of!(AdminCmd, opcode), 0);
        assert_eq!(offset_of!(AdminCmd, flags), 1);
        assert_eq!(offset_of!(AdminCmd, rsvd1), 2);
        assert_eq!(offset_of!(AdminCmd, nsid), 4);
        assert_eq!(offset_of!(AdminCmd, cdw2), 8);
        assert_eq!(offset_of!(AdminCmd, cdw3), 12);
        assert_eq!(offset_of!(AdminCmd, metadata), 16);
        assert_eq!(offset_of!(AdminCmd, addr), 24);
        assert_eq!(offset_of!(AdminCmd, metadata_len), 32);
        assert_eq!(offset_of!(AdminCmd, data_len), 36);
        assert_eq!(offset_of!(AdminCmd, cdw10), 40);
        assert_eq!(offset_of!(AdminCmd, cdw11), 44);
        assert_eq!(offset_of!(AdminCmd, cdw12), 48);
        assert_eq!(offset_of!(AdminCmd, cdw13), 52);
        assert_eq!(offset_of!(AdminCmd, cdw14), 56);
        assert_eq!(offset_of!(AdminCmd, cdw15), 60);
        assert_eq!(offset_of!(AdminCmd, timeout_ms), 64);
        assert_eq!(offset_of!(AdminCmd, result), 68);
    }

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn ioctl_number() {
        // As printed by a C program with <linux/nvme_ioctl.h> on x86_64 and arm64.
        assert_eq!(NVME_IOCTL_ADMIN_CMD, 0xc048_4e41);
    }

    #[test]
    fn smart_log_command() {
        let c = log_page_cmd(LID_SMART, NSID_ALL, false, SMART_LOG_LEN);
        assert_eq!(c.opcode, 0x02);
        assert_eq!(c.nsid, 0xffff_ffff);
        // NUMD = 128 dwords - 1 = 127.
        assert_eq!(c.cdw10, 0x007f_0002);
        assert_eq!(c.cdw11, 0);
        let c = log_page_cmd(LID_SMART, NSID_ALL, true, SMART_LOG_LEN);
        assert_eq!(c.cdw10, 0x007f_8002);
    }

    #[test]
    fn large_log_splits_numd() {
        // 256 KiB + 4 bytes: 65537 dwords, NUMD 65536 = NUMDL 0, NUMDU 1.
        let c = log_page_cmd(LID_ERROR_INFO, NSID_ALL, false, 256 * 1024 + 4);
        assert_eq!(c.cdw10, 0x0000_0001);
        assert_eq!(c.cdw11, 1);
        // 256 error entries: 4096 dwords, NUMD 4095.
        let c = log_page_cmd(LID_ERROR_INFO, NSID_ALL, false, 256 * 64);
        assert_eq!((c.cdw10, c.cdw11), (0x0fff_0001, 0));
    }

    #[test]
    fn identify_command() {
        let c = identify_cmd();
        assert_eq!((c.opcode, c.nsid, c.cdw10), (0x06, 0, 1));
    }

    #[test]
    fn timeouts_in_ms() {
        assert_eq!(timeout_ms(Duration::ZERO), 0);
        assert_eq!(timeout_ms(Duration::from_micros(10)), 1);
        assert_eq!(timeout_ms(Duration::from_secs(5)), 5000);
        assert_eq!(timeout_ms(Duration::from_secs(u64::MAX)), u32::MAX);
    }

    #[test]
    fn errno_maps_to_typed_errors_naming_the_device() {
        let dev = Path::new("/dev/nvme7");
        let t = Duration::from_secs(5);
        let cases = [
            (libc::EACCES, "permission_denied"),
            (libc::EPERM, "permission_denied"),
            (libc::ENOENT, "no_device"),
            (libc::ENODEV, "no_device"),
            (libc::EWOULDBLOCK, "not_live"),
            (libc::EINTR, "timeout"),
            (libc::ETIMEDOUT, "timeout"),
            (libc::EIO, "io"),
        ];
        for (errno, reason) in cases {
            let e =
                NvmeError::from_errno(dev, "Get Log Page", t, io::Error::from_raw_os_error(errno));
            assert_eq!(e.reason(), reason, "errno {errno}");
            assert!(e.to_string().starts_with("/dev/nvme7: "), "{e}");
        }
        let e = NvmeError::PermissionDenied {
            dev: dev.into(),
            op: "Get Log Page",
        };
        assert!(e.to_string().contains("CAP_SYS_ADMIN"));
        let e = NvmeError::Status {
            dev: dev.into(),
            op: "Get Log Page",
            status: 0x4109,
        };
        assert_eq!(
            e.to_string(),
            "/dev/nvme7: Get Log Page failed with NVMe status 0x4109 (SCT 1, SC 0x09: Invalid Log Page)"
        );
    }

    #[test]
    fn missing_device_is_no_device() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_smart_raw(&dir.path().join("nvme0"), Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.reason(), "no_device");
    }

    #[test]
    fn a_regular_file_is_not_a_controller() {
        // The ioctl on a non-device fails with ENOTTY: an "io" error, never a panic or a hang.
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = read_smart_raw(f.path(), Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.reason(), "io", "{e}");
    }
}
