//! Types of the controller state programs (`nvmeof-ebpf`'s `nvmeof-state` object): kprobes on
//! `nvme_change_ctrl_state` (entry and return), `nvmf_should_reconnect`, and
//! `nvmf_connect_admin_queue` / `nvmf_connect_io_queue` (entry and return: failed connects).
//!
//! Nothing about `struct nvme_ctrl` is compiled in: the agent reads the offsets of its `state`,
//! `instance` and `nr_reconnects` members and the values of `enum nvme_ctrl_state` from the
//! kernel's BTF at start and writes them into the [`CtrlLayout`] global before load.

use bytemuck::{Pod, Zeroable};

/// Names of the maps in the state object.
pub mod maps {
    object_names! {
        /// Transitions by (controller instance, from, to): [`crate::TransitionKey`] →
        /// [`crate::TransitionStats`].
        TRANSITIONS,
        /// Reconnect attempts per controller instance: `u32` → [`crate::Reconnects`].
        RECONNECTS,
        /// State changes between entry and return, by thread: `u64` pid_tgid →
        /// [`crate::PendingChange`].
        PENDING_CHANGES,
        /// Failed connects by (subsystem NQN, queue, reason): [`crate::state::ConnectFailureKey`]
        /// → `u64`.
        CONNECT_FAILURES,
        /// Connects between entry and return, by thread: `u64` pid_tgid →
        /// [`crate::state::PendingConnect`].
        PENDING_CONNECTS,
    }
}

/// Names of the programs in the state object.
pub mod programs {
    object_names! {
        /// kprobe on `nvme_change_ctrl_state`: notes the old state and the requested one.
        CHANGE_CTRL_STATE: change_ctrl_state,
        /// kretprobe on `nvme_change_ctrl_state`: counts the transition when the kernel made it.
        CHANGE_CTRL_STATE_RET: change_ctrl_state_ret,
        /// kprobe on `nvmf_should_reconnect`: called after each failed (re)connect attempt.
        SHOULD_RECONNECT: should_reconnect,
        /// kprobe and kretprobe on `nvmf_connect_admin_queue`: the Connect of the admin queue and,
        /// on kernels with in-band authentication, its DH-HMAC-CHAP transaction.
        CONNECT_ADMIN: connect_admin,
        CONNECT_ADMIN_RET: connect_admin_ret,
        /// The same on `nvmf_connect_io_queue`, for each I/O queue.
        CONNECT_IO: connect_io,
        CONNECT_IO_RET: connect_io_ret,
    }
}

object_names! {
    /// The kernel functions the programs above attach to.
    FN_CHANGE_CTRL_STATE: nvme_change_ctrl_state,
    FN_SHOULD_RECONNECT: nvmf_should_reconnect,
    FN_CONNECT_ADMIN_QUEUE: nvmf_connect_admin_queue,
    FN_CONNECT_IO_QUEUE: nvmf_connect_io_queue,
}

/// Name of the global that carries [`CtrlLayout`].
pub const CTRL_LAYOUT_GLOBAL: &str = "CTRL_LAYOUT";

/// State values at or above this are counted in the last slot.
pub const STATE_SLOTS: u8 = 8;
/// Capacity of `TRANSITIONS`: 64 (from, to) pairs for 64 controllers.
pub const TRANSITIONS_CAPACITY: u32 = 4096;
/// Capacity of `RECONNECTS`.
pub const RECONNECTS_CAPACITY: u32 = 1024;
/// Capacity of `PENDING_CHANGES` and `PENDING_CONNECTS` (LRUs: an entry whose return was
/// missed is evicted).
pub const PENDING_CAPACITY: u32 = 256;
/// Capacity of `CONNECT_FAILURES`: 3 reasons × 2 queue kinds for 170 subsystems.
pub const CONNECT_FAILURES_CAPACITY: u32 = 1024;
/// `NVMF_NQN_SIZE`: an NQN is at most 223 bytes, and the kernel keeps it NUL-terminated.
pub const NQN_BYTES: usize = 224;

/// Byte offsets in `struct nvme_ctrl` and the value of `NVME_CTRL_NEW`, from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CtrlLayout {
    pub state: u32,
    pub instance: u32,
    pub nr_reconnects: u32,
    /// `NVME_CTRL_NEW`: a transition from it is a new controller, whose instance number may have
    /// been used before: its old counts are cleared first.
    pub state_new: u32,
    /// 0 until the agent has written the layout: the programs then do nothing.
    pub valid: u32,
    /// `struct nvme_ctrl`: `opts` (`struct nvmf_ctrl_options *`).
    pub opts: u32,
    /// `struct nvmf_ctrl_options`: `subsysnqn` (`char *`).
    pub opts_subsysnqn: u32,
    /// Non-zero when both offsets above were found: the connect programs need them.
    pub opts_valid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Pod, Zeroable)]
pub struct TransitionKey {
    pub instance: u32,
    pub from: u8,
    pub to: u8,
    pub _pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TransitionStats {
    pub count: u64,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of the last one.
    pub last_ns: u64,
}

/// Reconnect attempts of one controller: the kernel's own `nr_reconnects` (incremented before
/// every attempt, reset to 0 after a success) read whenever the programs see the controller,
/// and the sum of its increases.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Reconnects {
    pub last_nr: u32,
    pub _pad: u32,
    pub attempts: u64,
}

impl Reconnects {
    /// Folds in a new reading of `nr_reconnects`. A lower reading means the kernel reset it
    /// (a success) and counted `nr` attempts since.
    #[inline(always)]
    pub fn observe(&mut self, nr: u32) {
        if nr > self.last_nr {
            self.attempts += (nr - self.last_nr) as u64;
        } else if nr < self.last_nr {
            self.attempts += nr as u64;
        }
        self.last_nr = nr;
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PendingChange {
    pub instance: u32,
    pub from: u32,
    pub to: u32,
    pub _pad: u32,
}

crate::indexed_enum! {
    /// Why a connect of one queue failed, from the return value of `nvmf_connect_admin_queue` or
    /// `nvmf_connect_io_queue` (0 on success).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum ConnectFailure: u8 {
        /// A positive NVMe status: the subsystem answered the Connect command with an error (host
        /// not allowed, invalid parameters, controller busy, ...).
        Rejected => "rejected",
        /// In-band authentication failed (`-EKEYREJECTED`, `-EKEYREVOKED`, `-EKEYEXPIRED`,
        /// `-ENOKEY`): a wrong key on either side, or a key the subsystem wants and the host lacks.
        Authentication => "authentication",
        /// Any other error (`-ETIMEDOUT`, `-ECONNREFUSED`, `-EIO`, ...): the transport failed
        /// under the Connect.
        Other => "other",
    }
}

pub const CONNECT_FAILURE_REASONS: usize = ConnectFailure::COUNT;

impl ConnectFailure {
    /// The reason of a non-zero return value; `None` for 0 (the connect succeeded).
    #[inline(always)]
    pub fn of_return(ret: i32) -> Option<ConnectFailure> {
        // <errno.h>: ENOKEY 126, EKEYEXPIRED 127, EKEYREVOKED 128, EKEYREJECTED 129.
        Some(match ret {
            0 => return None,
            r if r > 0 => ConnectFailure::Rejected,
            -129..=-126 => ConnectFailure::Authentication,
            _ => ConnectFailure::Other,
        })
    }
}

/// A failed connect's key: the subsystem it was for (from the controller's options, so it is
/// known before the controller has identified itself, and stays after the kernel removes it),
/// the queue kind (0 admin, 1 I/O) and the [`ConnectFailure`] reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ConnectFailureKey {
    /// NUL-terminated; zeros after the terminator.
    pub subsysnqn: [u8; NQN_BYTES],
    pub io_queue: u8,
    pub reason: u8,
    pub _pad: [u8; 2],
}

/// A connect between entry and return.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PendingConnect {
    /// `struct nvme_ctrl *`.
    pub ctrl: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_sum_the_increases_of_nr_reconnects() {
        let mut r = Reconnects::default();
        for nr in [0, 1, 1, 2, 3, 3] {
            r.observe(nr);
        }
        assert_eq!(r.attempts, 3);
        // Reset after a success, then two more attempts seen only at their end.
        r.observe(0);
        r.observe(2);
        assert_eq!(r.attempts, 5);
        // Reset and incremented between two readings.
        r.observe(1);
        assert_eq!(r.attempts, 6);
    }

    #[test]
    fn connect_failures_are_told_apart_by_the_return_value() {
        assert_eq!(ConnectFailure::of_return(0), None);
        // NVME_SC_CONNECT_INVALID_HOST with DNR, as nvmf_connect_admin_queue returns it.
        assert_eq!(
            ConnectFailure::of_return(0x4184),
            Some(ConnectFailure::Rejected)
        );
        // "qid 0: authentication failed, error -129" (EKEYREJECTED), seen in the lab on 6.12.
        assert_eq!(
            ConnectFailure::of_return(-129),
            Some(ConnectFailure::Authentication)
        );
        assert_eq!(
            ConnectFailure::of_return(-126),
            Some(ConnectFailure::Authentication)
        );
        assert_eq!(ConnectFailure::of_return(-110), Some(ConnectFailure::Other));
        assert_eq!(ConnectFailure::of_return(-130), Some(ConnectFailure::Other));
    }
}
