//! Connection errors counted by the completion program: error completions sorted into kinds by
//! their NVMe status (and, for keep-alive and connect, by the command), plus commands that
//! completed only after their timeout. One map, [`crate::maps::CONN_ERRORS`], keyed by
//! (controller, kind); the classification is here so that the kernel and the tests use one copy.

use bytemuck::{Pod, Zeroable};

crate::indexed_enum! {
    /// What went wrong. Every completion with a non-zero status counts in exactly one of the kinds
    /// before [`ConnErrorKind::Timeout`]; `Timeout` counts in addition (a timed-out command also
    /// completes, usually as `host_aborted_cmd`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum ConnErrorKind: u8 {
        /// Path-related status set by the controller (SCT 3, 0x300..0x36f: internal path error, ANA
        /// inaccessible, persistent loss or transition, controller path error), or specific to a
        /// command set or vendor (0x380..0x3ff): the kernel fails over on every SCT 3 status
        /// (`nvme_is_path_error`).
        PathError => "path_error",
        /// Path-related status set by the host itself (0x370, 0x372..0x37f): the transport is down.
        HostPathError => "host_path_error",
        /// Aborted commands: abort requested (0x07), SQ deleted (0x08), preempt and abort (0x1b),
        /// and host aborted (0x371: cancelled by the host on a reset or timeout).
        Abort => "abort",
        /// Transport errors: transient transport error (0x22) and data transfer error (0x04).
        TransportError => "transport_error",
        /// Any other error status (generic, command specific, media) on a command that is neither a
        /// keep-alive nor a fabrics command.
        CommandError => "command_error",
        /// A Keep Alive (admin opcode 0x18) completed with an error.
        KeepAliveFailure => "keep_alive_failure",
        /// A fabrics command (Connect, Property Get/Set, authentication) completed with an error: a
        /// failed connect attempt of a queue or the controller.
        ConnectFailure => "connect_failure",
        /// A command completed (whatever its status) after its queue's timeout: the block layer's
        /// timeout handler fired for it.
        Timeout => "timeout",
    }
}

pub const CONN_ERROR_KINDS: usize = ConnErrorKind::COUNT;

pub const NVME_ADMIN_KEEP_ALIVE: u8 = 0x18;

impl ConnErrorKind {
    /// The kind of a non-zero `status` (masked with [`crate::NVME_STATUS_MASK`]) from the status
    /// alone.
    #[inline(always)]
    pub fn of_status(status: u16) -> ConnErrorKind {
        match status {
            0x007 | 0x008 | 0x01b | 0x371 => ConnErrorKind::Abort,
            0x004 | 0x022 => ConnErrorKind::TransportError,
            0x300..=0x36f | 0x380..=0x3ff => ConnErrorKind::PathError,
            0x370..=0x37f => ConnErrorKind::HostPathError,
            _ => ConnErrorKind::CommandError,
        }
    }

    /// The kind of a non-zero `status` on a command whose queue and opcode are known.
    #[inline(always)]
    pub fn of_command(status: u16, qid: u16, opcode: u8) -> ConnErrorKind {
        if opcode == crate::NVME_FABRICS_OPCODE {
            ConnErrorKind::ConnectFailure
        } else if qid == 0 && opcode == NVME_ADMIN_KEEP_ALIVE {
            ConnErrorKind::KeepAliveFailure
        } else {
            ConnErrorKind::of_status(status)
        }
    }
}

/// Key of the connection-error map; the value is a `u64` count.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct ConnErrorKey {
    pub ctrl_id: u32,
    /// A [`ConnErrorKind`] as `u8`.
    pub kind: u8,
    pub _pad: [u8; 3],
}

/// The command timeouts, written by the agent before load (from `nvme_core`'s `io_timeout` and
/// `admin_timeout` parameters). 0 turns timeout counting off for that kind of queue.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ErrorTimeouts {
    pub io_ns: u64,
    pub admin_ns: u64,
}

impl ErrorTimeouts {
    /// Whether a command on `qid` that took `latency_ns` outlived its timeout.
    #[inline(always)]
    pub fn timed_out(&self, qid: u16, latency_ns: u64) -> bool {
        let limit = if qid == 0 { self.admin_ns } else { self.io_ns };
        limit != 0 && latency_ns >= limit
    }

    /// Longer than any command stays in flight: an I/O command times out after `io_ns`, and its
    /// recovery (an Abort, a reset or a reconnect, each bounded by `admin_ns`) then ends it,
    /// twice over for margin. A queue that has commands in flight and no event for this long
    /// lost their completions. `u64::MAX` (never) while either timeout is unknown.
    #[inline(always)]
    pub fn longest_life_ns(&self) -> u64 {
        if self.io_ns == 0 || self.admin_ns == 0 {
            return u64::MAX;
        }
        self.io_ns.saturating_add(self.admin_ns).saturating_mul(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_fall_into_kinds() {
        use ConnErrorKind::*;
        assert_eq!(ConnErrorKind::of_status(0x371), Abort);
        assert_eq!(ConnErrorKind::of_status(0x007), Abort);
        assert_eq!(ConnErrorKind::of_status(0x370), HostPathError);
        assert_eq!(ConnErrorKind::of_status(0x303), PathError);
        assert_eq!(ConnErrorKind::of_status(0x360), PathError);
        assert_eq!(ConnErrorKind::of_status(0x3c0), PathError);
        assert_eq!(ConnErrorKind::of_status(0x022), TransportError);
        assert_eq!(ConnErrorKind::of_status(0x00b), CommandError);
        assert_eq!(ConnErrorKind::of_status(0x281), CommandError);
        assert_eq!(ConnErrorKind::of_command(0x182, 1, 0x7f), ConnectFailure);
        assert_eq!(ConnErrorKind::of_command(0x371, 0, 0x18), KeepAliveFailure);
        assert_eq!(ConnErrorKind::of_command(0x371, 1, 0x18), Abort);
        for k in ConnErrorKind::ALL {
            assert_eq!(ConnErrorKind::from_repr(k as u8), Some(k));
        }
        assert_eq!(ConnErrorKind::from_repr(8), None);
    }

    #[test]
    fn timeouts_per_queue_kind() {
        let t = ErrorTimeouts {
            io_ns: 30_000_000_000,
            admin_ns: 0,
        };
        assert!(t.timed_out(1, 30_000_000_000));
        assert!(!t.timed_out(1, 29_999_999_999));
        assert!(!t.timed_out(0, u64::MAX));
        // Without the admin timeout no life is known to be too long.
        assert_eq!(t.longest_life_ns(), u64::MAX);
        let defaults = ErrorTimeouts {
            io_ns: 30_000_000_000,
            admin_ns: 60_000_000_000,
        };
        assert_eq!(defaults.longest_life_ns(), 180_000_000_000);
        let huge = ErrorTimeouts {
            io_ns: u64::MAX,
            admin_ns: 1,
        };
        assert_eq!(huge.longest_life_ns(), u64::MAX);
    }
}
