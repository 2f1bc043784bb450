//! The I/O tracer's kernel/user types: a command's class, the programs' own counters, what a
//! command in flight holds, and the keys and values of the per-queue and per-class statistics.

use crate::latency::LATENCY_BUCKETS;
#[cfg(doc)]
use crate::latency_bucket;
#[cfg(doc)]
use crate::{slow, SlotLayout};
use bytemuck::{Pod, Zeroable};

/// The low bits of a command id that hold the blk-mq tag. Newer kernels put a generation counter
/// above them in `nvme_setup_cmd` but 5.10 records the bare tag in `nvme_complete_rq`: joining on
/// the masked value works on both.
pub const TAG_MASK: u16 = 0x0fff;

crate::indexed_enum! {
    /// The class of an NVMe command, the last part of the key of every per-command statistic.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum OpClass: u8 {
        Read => "read",
        Write => "write",
        Flush => "flush",
        OtherIo => "other",
        Admin => "admin",
        Fabrics => "fabrics",
    }
}

impl OpClass {
    /// Classifies a command by its queue and opcode. Queue 0 is the admin queue; opcode 0x7f is a
    /// fabrics command (connect, property get/set, authentication) on any queue.
    #[inline(always)]
    pub fn classify(qid: u16, opcode: u8) -> OpClass {
        if opcode == NVME_FABRICS_OPCODE {
            OpClass::Fabrics
        } else if qid == 0 {
            OpClass::Admin
        } else {
            match opcode {
                NVME_CMD_READ => OpClass::Read,
                NVME_CMD_WRITE => OpClass::Write,
                NVME_CMD_FLUSH => OpClass::Flush,
                _ => OpClass::OtherIo,
            }
        }
    }

    /// Whether the command moves data counted in bytes (read and write).
    #[inline(always)]
    pub fn moves_data(self) -> bool {
        matches!(self, OpClass::Read | OpClass::Write)
    }
}

pub const NVME_CMD_FLUSH: u8 = 0x00;
pub const NVME_CMD_WRITE: u8 = 0x01;
pub const NVME_CMD_READ: u8 = 0x02;
pub const NVME_FABRICS_OPCODE: u8 = 0x7f;

crate::indexed_enum! {
    /// Counters the programs keep about themselves, indices into the `COUNTERS` per-CPU array: only
    /// events off the common path (a drop, a miss, a new key), so that a command pays for none of
    /// them (a per-CPU array lookup is a helper call before Linux 6.10). The setups and completions
    /// seen are the agent's sums of `QUEUES`' submitted and completed counts and these.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum ProgramCounter: u32 {
        /// A setup found an in-flight entry for the same (controller, queue, tag): the earlier
        /// command's completion was never seen (reset, timeout, lost event). The entry is replaced.
        InflightReplaced,
        /// The in-flight LRU map refused a new key: this command is not timed. (An LRU hash makes
        /// room by evicting instead, so this stays 0 unless its memory cannot be had.)
        InflightFull,
        /// A completion with no in-flight entry (set up before the programs attached, or dropped).
        CompletionUnmatched,
        /// A command of a controller instance or a queue past the arrays' bounds
        /// ([`SlotLayout`], from `--ebpf.max-controllers` and `--ebpf.max-queues`): not timed.
        SlotOutOfRange,
        /// A read or write on a namespace whose LBA size the agent had not yet written: its bytes
        /// are counted with 512-byte blocks.
        LbaSizeUnknown,
        /// A tracepoint field could not be read (`bpf_probe_read` failed).
        ReadFailed,
        /// A setup whose slot was taken ([`ProgramCounter::InflightCollision`]) and whose key had
        /// no entry in the in-flight LRU map, so one was inserted. Each key is new once; later ones
        /// mean more keys take turns than the map holds, and its LRU evicted some (which can be of
        /// a command still in flight).
        InflightNewKey,
        /// A command past the slow-command threshold not sent: its CPU had sent its share of the
        /// second ([`slow::SlowTrace::per_cpu_per_second`]).
        SlowRateLimited,
        /// A slow command not sent: the ring buffer was full (the agent reads it too slowly).
        SlowRingFull,
        /// Host wait on (`crate::host_wait`): a setup whose request's first bio had no submission
        /// time (a bio split off inside the block layer, one submitted before the programs
        /// attached, or evicted from `BIO_QUEUED`): its host wait is not counted.
        HostWaitUnmatched,
        /// A setup whose slot in `INFLIGHT_SLOTS` held another command still in flight (two keys
        /// of the same index): it went to the in-flight LRU map, which costs a hash lookup at setup
        /// and at completion. Not a loss; many mean the array is small for the commands in flight.
        InflightCollision,
        /// Commands written off as lost: a queue that had commands in flight saw no event for
        /// longer than any command lives ([`crate::ErrorTimeouts::longest_life_ns`]), so their
        /// completions went unseen (the kernel skipped the program). Counted by the command, at
        /// the queue's next event; see [`QueueState::written_off`].
        InflightExpired,
    }
}

pub const PROGRAM_COUNTERS: u32 = ProgramCounter::COUNT as u32;

/// Key of the in-flight map: one hardware queue's tag.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct InflightKey {
    /// `nvme_ctrl->instance`: the N of `/dev/nvmeN`.
    pub ctrl_id: u32,
    pub qid: u16,
    /// `command_id & TAG_MASK`.
    pub tag: u16,
}

/// A command between setup and completion. Its controller and queue are read once, at setup,
/// and so are the array slots its completion updates: a completion makes no lookup but this
/// entry's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Inflight {
    pub start_ns: u64,
    /// Bytes the command moves (reads and writes), 0 for others.
    pub bytes: u32,
    pub ctrl_id: u32,
    /// Index into `QUEUES` ([`SlotLayout::queue_slot`]).
    pub queue_slot: u32,
    /// Index into `OPS` ([`SlotLayout::stats_slot`]).
    pub stats_slot: u32,
    pub qid: u16,
    /// An [`OpClass`] as `u8`.
    pub opclass: u8,
    /// The command's opcode (keep-alive and fabrics failures are told apart by it).
    pub opcode: u8,
    pub _pad: [u8; 4],
}

/// A slot of `INFLIGHT_SLOTS`: the command in flight there and its key, which tells it from the
/// other keys of the same index. A setup claims an idle slot (`inflight.start_ns` 0) by an atomic
/// compare-and-exchange of `start_ns`, then writes `key`; the completion clears `key`, then
/// `start_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct InflightSlot {
    /// One more than the command's key ([`SlotLayout::slot_key`]), 0 when none: the raw
    /// programs' request pointer; the tp_btf programs' [`slow::classic_key`] of (request queue
    /// id, queue, tag), as a tp_btf program may not do arithmetic on the pointer.
    pub key: u64,
    pub inflight: Inflight,
}

/// Key of the per-queue map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct QueueKey {
    pub ctrl_id: u32,
    pub qid: u16,
    pub _pad: u16,
}

/// Cumulative per-queue counters. [`QueueState::depth`] is the current depth (`completed` also
/// counts commands whose completion was lost, when their tag is set up again); `busy_ns` grows
/// while at least one command is in flight (like the block layer's `io_ticks`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct QueueState {
    pub submitted: u64,
    pub completed: u64,
    pub busy_ns: u64,
    pub last_event_ns: u64,
    /// Commands written off as lost (`ProgramCounter::InflightExpired`) and not yet ended, as
    /// a two's-complement count: set, not added, to `submitted - completed` (the depth is then
    /// 0), so two CPUs writing one queue off at once write the same value. A written-off command that ends after all (its
    /// tag's next setup, a late completion) counts in `completed` as ever and takes one off here,
    /// so the depth counts it once.
    pub written_off: u64,
    /// Commands that started before this (monotonic ns) were written off; 0 while none was.
    pub expired_before_ns: u64,
}

impl QueueState {
    /// Commands in flight: submitted, less completed, less written off. Negative only for a
    /// moment of two counters read without a lock, or after a race at a write-off.
    #[inline(always)]
    pub fn depth(&self) -> i64 {
        self.submitted
            .wrapping_sub(self.completed)
            .wrapping_sub(self.written_off) as i64
    }
}

/// Key of the per-(controller, queue, class) map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct OpKey {
    pub ctrl_id: u32,
    pub qid: u16,
    /// An [`OpClass`] as `u8`.
    pub opclass: u8,
    pub _pad: u8,
}

/// Cumulative per-(controller, queue, class) statistics of completed commands.
///
/// `latency_sum_ns` is also the integral of the in-flight count over time (Little's law), so its
/// rate is the average queue depth of that class.
///
/// There is no command count: every completion adds one to exactly one bucket, so the buckets
/// sum to it ([`OpStats::commands`]). One shared atomic add per command fewer in the kernel, the
/// same exact count in the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct OpStats {
    /// Bytes of reads and writes; other classes never add to it.
    pub bytes: u64,
    /// Completions with a non-zero NVMe status.
    pub errors: u64,
    pub latency_sum_ns: u64,
    /// Counts per [`latency_bucket`]. `u32` keeps the value small; the agent drains far more often
    /// than a bucket could wrap and takes deltas modulo 2^32.
    pub buckets: [u32; LATENCY_BUCKETS],
}

impl OpStats {
    /// Completed commands: the sum of the bucket counts, exact while no bucket has wrapped at
    /// 2^32. The agent instead adds up each bucket's delta (modulo 2^32) between drains.
    pub fn commands(&self) -> u64 {
        self.buckets.iter().map(|&c| u64::from(c)).sum()
    }
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            bytes: 0,
            errors: 0,
            latency_sum_ns: 0,
            buckets: [0; LATENCY_BUCKETS],
        }
    }
}

/// Key of the error-status map. `status` is the NVMe status as the kernel keeps it
/// (`nvme_req(req)->status`): status code type in bits 8..11, status code in bits 0..8, with the
/// More and Do Not Retry bits cleared.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct StatusKey {
    pub ctrl_id: u32,
    pub status: u16,
    pub opclass: u8,
    pub _pad: u8,
}

/// Key of the namespace map, whose value is log2 of the LBA size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct NamespaceKey {
    pub ctrl_id: u32,
    pub nsid: u32,
}

/// The mask that keeps status code type and status code of an NVMe status.
pub const NVME_STATUS_MASK: u16 = 0x07ff;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency_bucket;

    #[test]
    fn commands_are_the_sum_of_the_buckets() {
        let mut s = OpStats::default();
        assert_eq!(s.commands(), 0);
        let latencies = [0, 600, 600, 80_000, 1 << 40];
        for l in latencies {
            s.buckets[latency_bucket(l)] += 1;
        }
        s.buckets[7] = u32::MAX;
        assert_eq!(s.commands(), latencies.len() as u64 + u64::from(u32::MAX));
    }

    #[test]
    fn depth_counts_written_off_commands_once() {
        let mut q = QueueState {
            submitted: 10,
            completed: 7,
            ..Default::default()
        };
        assert_eq!(q.depth(), 3);
        // Three lost: written off as the programs do it, by a store.
        q.written_off = q.submitted.wrapping_sub(q.completed);
        assert_eq!(q.depth(), 0);
        // One of them ends after all: completed once, taken off the written-off count.
        q.completed += 1;
        q.written_off = q.written_off.wrapping_add(u64::MAX);
        assert_eq!(q.depth(), 0);
        // A negative depth (counters read mid-update, a late end racing a write-off) is set
        // right by the next write-off as well.
        q.completed += 2;
        assert_eq!(q.depth(), -2);
        q.written_off = q.submitted.wrapping_sub(q.completed);
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn classify_by_queue_and_opcode() {
        assert_eq!(OpClass::classify(1, NVME_CMD_READ), OpClass::Read);
        assert_eq!(OpClass::classify(3, NVME_CMD_WRITE), OpClass::Write);
        assert_eq!(OpClass::classify(3, NVME_CMD_FLUSH), OpClass::Flush);
        assert_eq!(OpClass::classify(3, 0x09), OpClass::OtherIo);
        assert_eq!(OpClass::classify(0, 0x02), OpClass::Admin);
        assert_eq!(OpClass::classify(0, 0x7f), OpClass::Fabrics);
        assert_eq!(OpClass::classify(2, 0x7f), OpClass::Fabrics);
        for c in OpClass::ALL {
            assert_eq!(OpClass::from_repr(c as u8), Some(c));
        }
        assert_eq!(OpClass::from_repr(6), None);
    }
}
