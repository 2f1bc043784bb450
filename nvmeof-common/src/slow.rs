//! Slow-command tracing: commands slower than a threshold leave the kernel one by one, through a
//! BPF ring buffer, with what identifies them (namespace, LBA, command id, submitting task).
//!
//! Off (threshold 0) it costs a command one read of a global at setup and one at completion. On,
//! a setup also keeps the command's identity ([`SlowContext`], keyed like the in-flight entry)
//! and a completion at or past the threshold sends a [`SlowCommand`], at most
//! [`SlowTrace::per_cpu_per_second`] a second per CPU: the rest are counted (`slow_rate_limited`,
//! and `slow_ring_full` when the agent does not read fast enough), never queued.

use bytemuck::{Pod, Zeroable};

/// Name of the global that carries the [`SlowTrace`] settings.
pub const SLOW_TRACE_GLOBAL: &str = "SLOW_TRACE";

/// Map names.
pub mod maps {
    object_names! {
        /// The ring buffer the completions write [`crate::slow::SlowCommand`]s into.
        SLOW_EVENTS,
        /// What a setup keeps of a command for its completion: in-flight key (`u64`) →
        /// [`crate::slow::SlowContext`].
        SLOW_CONTEXT,
        /// Per CPU, the rate limit's window: index 0 → [`crate::slow::SlowBudget`].
        SLOW_BUDGET,
    }
}

/// Written by the agent before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SlowTrace {
    /// A command this slow or slower is sent; 0 turns tracing off.
    pub threshold_ns: u64,
    /// Most commands sent per second by one CPU.
    pub per_cpu_per_second: u32,
    pub _pad: u32,
}

impl SlowTrace {
    pub const OFF: SlowTrace = SlowTrace {
        threshold_ns: 0,
        per_cpu_per_second: 0,
        _pad: 0,
    };
}

/// A command's identity as its setup saw it: the completion runs in another task's context (an
/// interrupt, a transport's worker), so the submitter is known only here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SlowContext {
    /// Starting LBA (cdw10-11 of a read or write), 0 for other commands.
    pub slba: u64,
    /// The submitting task's cgroup (v2) id.
    pub cgroup_id: u64,
    /// The submitting task's process id (tgid).
    pub pid: u32,
    pub nsid: u32,
    /// The NVMe command identifier (the kernel's, with its generation bits).
    pub cid: u16,
    /// The CPU the command was submitted on.
    pub cpu: u16,
    pub _pad: u32,
    /// The submitting task's name (`comm`), NUL padded.
    pub comm: [u8; 16],
}

/// One CPU's rate-limit window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SlowBudget {
    pub window_start_ns: u64,
    pub sent: u32,
    pub _pad: u32,
}

/// A slow command, as the ring buffer carries it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SlowCommand {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at setup.
    pub start_ns: u64,
    pub latency_ns: u64,
    pub ctx: SlowContext,
    pub ctrl_id: u32,
    /// Bytes moved (reads and writes).
    pub bytes: u32,
    /// NVMe status (status code type and code, without the phase bit).
    pub status: u16,
    pub qid: u16,
    /// The CPU the completion ran on.
    pub completion_cpu: u16,
    pub opcode: u8,
    /// An [`crate::OpClass`] as `u8`.
    pub opclass: u8,
    /// 1 when the setup's [`SlowContext`] was found (else its fields are zero: the entry was
    /// evicted, or the setup ran before tracing started).
    pub has_context: u8,
    pub _pad: [u8; 7],
}

/// The in-flight key of the classic programs, (controller, queue, tag), as the `u64` that keys
/// [`maps::SLOW_CONTEXT`] (the request-keyed programs use the request pointer).
#[inline(always)]
pub fn classic_key(ctrl_id: u32, qid: u16, tag: u16) -> u64 {
    (u64::from(ctrl_id) << 32) | (u64::from(qid) << 16) | u64::from(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_keys_differ_by_each_part() {
        let k = classic_key(3, 2, 17);
        assert_ne!(k, classic_key(4, 2, 17));
        assert_ne!(k, classic_key(3, 1, 17));
        assert_ne!(k, classic_key(3, 2, 18));
    }
}
