//! Types of the controller state programs (`nvmeof-ebpf`'s `nvmeof-state` object): kprobes on
//! `nvme_change_ctrl_state` (entry and return) and `nvmf_should_reconnect`.
//!
//! Nothing about `struct nvme_ctrl` is compiled in: the agent reads the offsets of its `state`,
//! `instance` and `nr_reconnects` members and the values of `enum nvme_ctrl_state` from the
//! kernel's BTF at start and writes them into the [`CtrlLayout`] global before load.

/// Names of the maps in the state object.
pub mod maps {
    /// Transitions by (controller instance, from, to): [`crate::TransitionKey`] →
    /// [`crate::TransitionStats`].
    pub const TRANSITIONS: &str = "TRANSITIONS";
    /// Reconnect attempts per controller instance: `u32` → [`crate::Reconnects`].
    pub const RECONNECTS: &str = "RECONNECTS";
    /// State changes between entry and return, by thread: `u64` pid_tgid → [`crate::PendingChange`].
    pub const PENDING_CHANGES: &str = "PENDING_CHANGES";
}

/// Names of the programs in the state object.
pub mod programs {
    /// kprobe on `nvme_change_ctrl_state`: notes the old state and the requested one.
    pub const CHANGE_CTRL_STATE: &str = "change_ctrl_state";
    /// kretprobe on `nvme_change_ctrl_state`: counts the transition when the kernel made it.
    pub const CHANGE_CTRL_STATE_RET: &str = "change_ctrl_state_ret";
    /// kprobe on `nvmf_should_reconnect`: called after each failed (re)connect attempt.
    pub const SHOULD_RECONNECT: &str = "should_reconnect";
}

/// The kernel functions the programs above attach to.
pub const FN_CHANGE_CTRL_STATE: &str = "nvme_change_ctrl_state";
pub const FN_SHOULD_RECONNECT: &str = "nvmf_should_reconnect";

/// Name of the global that carries [`CtrlLayout`].
pub const CTRL_LAYOUT_GLOBAL: &str = "CTRL_LAYOUT";

/// State values at or above this are counted in the last slot.
pub const STATE_SLOTS: u8 = 8;
/// Capacity of `TRANSITIONS`: 64 (from, to) pairs for 64 controllers.
pub const TRANSITIONS_CAPACITY: u32 = 4096;
/// Capacity of `RECONNECTS`.
pub const RECONNECTS_CAPACITY: u32 = 1024;
/// Capacity of `PENDING_CHANGES` (an LRU: an entry whose return was missed is evicted).
pub const PENDING_CAPACITY: u32 = 256;

/// Byte offsets in `struct nvme_ctrl` and the value of `NVME_CTRL_NEW`, from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtrlLayout {
    pub state: u32,
    pub instance: u32,
    pub nr_reconnects: u32,
    /// `NVME_CTRL_NEW`: a transition from it is a new controller, whose instance number may have
    /// been used before: its old counts are cleared first.
    pub state_new: u32,
    /// 0 until the agent has written the layout: the programs then do nothing.
    pub valid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransitionKey {
    pub instance: u32,
    pub from: u8,
    pub to: u8,
    pub _pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransitionStats {
    pub count: u64,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of the last one.
    pub last_ns: u64,
}

/// Reconnect attempts of one controller: the kernel's own `nr_reconnects` (incremented before
/// every attempt, reset to 0 after a success) read whenever the programs see the controller,
/// and the sum of its increases.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingChange {
    pub instance: u32,
    pub from: u32,
    pub to: u32,
    pub _pad: u32,
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
    fn sizes_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<TransitionKey>(), 8);
        assert_eq!(core::mem::size_of::<TransitionStats>(), 16);
        assert_eq!(core::mem::size_of::<Reconnects>(), 16);
        assert_eq!(core::mem::size_of::<PendingChange>(), 16);
        assert_eq!(core::mem::size_of::<CtrlLayout>(), 20);
    }
}
