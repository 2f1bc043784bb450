//! Types shared by the kernel side (`nvmeof-ebpf`) and the agent (`nvmeof-agent`).
//!
//! Every map key and value is defined here once, `#[repr(C)]` and free of implicit padding, so the
//! kernel writes exactly what the agent reads. Map and program names are constants for the same
//! reason. The latency bucket function lives here too ([`latency`]): the kernel counts into
//! Prometheus native-histogram buckets, the agent reads their bounds from the same module.
#![no_std]

pub mod aen;
pub mod bench;
pub mod conn_errors;
pub mod count_maps;
pub mod host_wait;
pub mod latency;
pub mod layout;
pub mod queues;
pub mod slow;
pub mod state;

pub use conn_errors::{ConnErrorKey, ConnErrorKind, ErrorTimeouts, CONN_ERROR_KINDS};
pub use latency::{latency_bucket, LATENCY_BUCKETS};
pub use layout::{FieldLoc, RequestLayout, TracepointLayout};
pub use state::{CtrlLayout, PendingChange, Reconnects, TransitionKey, TransitionStats};

/// Names of the maps in the eBPF object.
pub mod maps {
    /// Commands set up and not yet completed, an array indexed by
    /// [`crate::SlotLayout::inflight_index`] of the command's key → [`crate::InflightSlot`].
    pub const INFLIGHT_SLOTS: &str = "INFLIGHT_SLOTS";
    /// The classic programs' commands in flight (they use no slots): [`crate::InflightKey`] →
    /// [`crate::Inflight`].
    pub const INFLIGHT: &str = "INFLIGHT";
    /// The request-keyed programs' commands whose slot in `INFLIGHT_SLOTS` holds another command
    /// in flight: `struct request *` as `u64` → [`crate::Inflight`].
    pub const INFLIGHT_RQ: &str = "INFLIGHT_RQ";
    /// Per hardware queue, an array indexed by [`crate::SlotLayout::queue_slot`] →
    /// [`crate::QueueState`]; memory-mappable, the agent reads it without a system call.
    pub const QUEUES: &str = "QUEUES";
    /// Per (controller, queue, opcode class), an array indexed by
    /// [`crate::SlotLayout::stats_slot`] → [`crate::OpStats`]; memory-mappable.
    pub const OPS: &str = "OPS";
    /// Error completions: [`crate::StatusKey`] → `u64` count.
    pub const STATUSES: &str = "STATUSES";
    /// The LBA size of each namespace, written by the agent: [`crate::NamespaceKey`] → `u32` shift.
    pub const NAMESPACES: &str = "NAMESPACES";
    /// The programs' own event counters: index [`crate::ProgramCounter`] → `u64`, per CPU.
    pub const COUNTERS: &str = "COUNTERS";
    /// Connection errors by kind: [`crate::ConnErrorKey`] → `u64` count.
    pub const CONN_ERRORS: &str = "CONN_ERRORS";
}

/// Names of the programs in the eBPF object.
pub mod programs {
    /// Classic tracepoints, joined on (controller, queue, command id): the last fallback.
    pub const NVME_SETUP_CMD: &str = "nvme_setup_cmd";
    pub const NVME_COMPLETE_RQ: &str = "nvme_complete_rq";

    /// BTF-enabled tracepoints (tp_btf), joined on the request pointer.
    pub const NVME_SETUP_CMD_BTF: &str = "nvme_setup_cmd_btf";
    pub const NVME_COMPLETE_RQ_BTF: &str = "nvme_complete_rq_btf";
    /// Raw tracepoints, joined on the request pointer: where tp_btf cannot attach.
    pub const NVME_SETUP_CMD_RAW: &str = "nvme_setup_cmd_raw";
    pub const NVME_COMPLETE_RQ_RAW: &str = "nvme_complete_rq_raw";
}

/// Name of the global that carries the tracepoint field layout (see [`TracepointLayout`]).
pub const LAYOUT_GLOBAL: &str = "LAYOUT";
/// Name of the global that carries the kernel struct offsets (see [`RequestLayout`]).
pub const REQ_LAYOUT_GLOBAL: &str = "REQ_LAYOUT";
/// Name of the global that carries the command timeouts (see [`ErrorTimeouts`]).
pub const ERROR_TIMEOUTS_GLOBAL: &str = "ERROR_TIMEOUTS";
/// Name of the global that carries the array sizes (see [`SlotLayout`]).
pub const SLOT_LAYOUT_GLOBAL: &str = "SLOT_LAYOUT";

/// `BPF_F_MMAPABLE`: an array map the agent can map into its memory and read without a system
/// call per element (Linux 5.5).
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Capacity of the in-flight LRU maps (`INFLIGHT`, `INFLIGHT_RQ`), which take the commands whose
/// slot in `INFLIGHT_SLOTS` is taken, and the least `INFLIGHT_SLOTS` has. A lost completion
/// leaves its entry until the same key is used again, when it is replaced and counted.
pub const INFLIGHT_CAPACITY: u32 = 16384;
/// Capacity of the `STATUSES` map.
pub const STATUSES_CAPACITY: u32 = 1024;
/// Capacity of the `NAMESPACES` map.
pub const NAMESPACES_CAPACITY: u32 = 1024;
/// Capacity of the `CONN_ERRORS` map: 8 kinds for 128 controllers.
pub const CONN_ERRORS_CAPACITY: u32 = 1024;

/// The low bits of a command id that hold the blk-mq tag. Newer kernels put a generation counter
/// above them in `nvme_setup_cmd` but 5.10 records the bare tag in `nvme_complete_rq`: joining on
/// the masked value works on both.
pub const TAG_MASK: u16 = 0x0fff;

/// The class of an NVMe command, the last part of the key of every per-command statistic.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpClass {
    Read = 0,
    Write = 1,
    Flush = 2,
    OtherIo = 3,
    Admin = 4,
    Fabrics = 5,
}

impl OpClass {
    pub const ALL: [OpClass; 6] = [
        OpClass::Read,
        OpClass::Write,
        OpClass::Flush,
        OpClass::OtherIo,
        OpClass::Admin,
        OpClass::Fabrics,
    ];

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

    pub fn from_u8(v: u8) -> Option<OpClass> {
        OpClass::ALL.get(v as usize).copied()
    }

    /// The label value used on `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpClass::Read => "read",
            OpClass::Write => "write",
            OpClass::Flush => "flush",
            OpClass::OtherIo => "other",
            OpClass::Admin => "admin",
            OpClass::Fabrics => "fabrics",
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

/// Counters the programs keep about themselves, indices into the `COUNTERS` per-CPU array: only
/// events off the common path (a drop, a miss, a new key), so that a command pays for none of
/// them (a per-CPU array lookup is a helper call before Linux 6.10). The setups and completions
/// seen are the agent's sums of `QUEUES`' submitted and completed counts and these.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramCounter {
    /// A setup found an in-flight entry for the same (controller, queue, tag): the earlier
    /// command's completion was never seen (reset, timeout, lost event). The entry is replaced.
    InflightReplaced = 0,
    /// The in-flight LRU map refused a new key: this command is not timed. (An LRU hash makes
    /// room by evicting instead, so this stays 0 unless its memory cannot be had.)
    InflightFull = 1,
    /// A completion with no in-flight entry (set up before the programs attached, or dropped).
    CompletionUnmatched = 2,
    /// A command of a controller instance or a queue past the arrays' bounds
    /// ([`SlotLayout`], from `--ebpf.max-controllers` and `--ebpf.max-queues`): not timed.
    SlotOutOfRange = 3,
    /// A read or write on a namespace whose LBA size the agent had not yet written: its bytes are
    /// counted with 512-byte blocks.
    LbaSizeUnknown = 4,
    /// A tracepoint field could not be read (`bpf_probe_read` failed).
    ReadFailed = 5,
    /// A setup whose slot was taken ([`ProgramCounter::InflightCollision`]) and whose key had no
    /// entry in the in-flight LRU map, so one was inserted. Each key is new once; later ones mean
    /// more keys take turns than the map holds, and its LRU evicted some (which can be of a
    /// command still in flight).
    InflightNewKey = 6,
    /// A command past the slow-command threshold not sent: its CPU had sent its share of the
    /// second ([`slow::SlowTrace::per_cpu_per_second`]).
    SlowRateLimited = 7,
    /// A slow command not sent: the ring buffer was full (the agent reads it too slowly).
    SlowRingFull = 8,
    /// Host wait on (`crate::host_wait`): a setup whose request's first bio had no submission
    /// time (a bio split off inside the block layer, one submitted before the programs attached,
    /// or evicted from `BIO_QUEUED`): its host wait is not counted.
    HostWaitUnmatched = 9,
    /// A setup whose slot in `INFLIGHT_SLOTS` held another command still in flight (two keys
    /// of the same index): it went to the in-flight LRU map, which costs a hash lookup at setup
    /// and at completion. Not a loss; many mean the array is small for the commands in flight.
    InflightCollision = 10,
}

pub const PROGRAM_COUNTERS: u32 = 11;

impl ProgramCounter {
    pub const ALL: [ProgramCounter; PROGRAM_COUNTERS as usize] = [
        ProgramCounter::InflightReplaced,
        ProgramCounter::InflightFull,
        ProgramCounter::CompletionUnmatched,
        ProgramCounter::SlotOutOfRange,
        ProgramCounter::LbaSizeUnknown,
        ProgramCounter::ReadFailed,
        ProgramCounter::InflightNewKey,
        ProgramCounter::SlowRateLimited,
        ProgramCounter::SlowRingFull,
        ProgramCounter::HostWaitUnmatched,
        ProgramCounter::InflightCollision,
    ];
}

/// Key of the in-flight map: one hardware queue's tag.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InflightSlot {
    /// One more than the command's key ([`SlotLayout::slot_key`]), 0 when none: the raw
    /// programs' request pointer; the tp_btf programs' [`slow::classic_key`] of (request queue
    /// id, queue, tag), as a tp_btf program may not do arithmetic on the pointer.
    pub key: u64,
    pub inflight: Inflight,
}

/// The bounds of the `QUEUES`, `OPS` and `INFLIGHT_SLOTS` arrays, written by the agent before
/// load.
///
/// A controller's instance (the N of `/dev/nvmeN`, which the kernel hands out lowest-free) and a
/// queue id index the arrays directly, so the programs find a queue's state and a command's
/// statistics without a hash lookup. Per controller there are [`SlotLayout::queues`] queue slots
/// and [`SlotLayout::stats_per_controller`] statistics slots: admin, fabrics, flush and other
/// commands per controller ([`CONTROLLER_CLASSES`]), reads and writes per I/O queue
/// ([`QUEUE_CLASSES`]): the per-queue split that earns its keep.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotLayout {
    /// Controller instances 0 .. `controllers`.
    pub controllers: u32,
    /// Queue ids 0 (admin) .. `queues`.
    pub queues: u32,
    /// Non-zero once filled; an unset layout makes the programs return at once.
    pub valid: u32,
    /// Entries of `INFLIGHT_SLOTS` less one: a power of two less one.
    pub inflight_mask: u32,
}

/// Classes counted once per controller, whatever the queue: rows 0..4 of a controller's block.
pub const CONTROLLER_CLASSES: [OpClass; 4] = [
    OpClass::Admin,
    OpClass::Fabrics,
    OpClass::Flush,
    OpClass::OtherIo,
];
/// Classes counted per I/O queue: two rows per queue after the controller rows.
pub const QUEUE_CLASSES: [OpClass; 2] = [OpClass::Read, OpClass::Write];

impl SlotLayout {
    pub const fn new(controllers: u32, queues: u32) -> SlotLayout {
        SlotLayout {
            controllers,
            queues,
            valid: 1,
            inflight_mask: INFLIGHT_CAPACITY - 1,
        }
    }

    /// The layout with `slots` entries of `INFLIGHT_SLOTS`, rounded up to a power of two.
    pub const fn with_inflight_slots(self, slots: u32) -> SlotLayout {
        let n = if slots <= 1 {
            1
        } else {
            match slots.checked_next_power_of_two() {
                Some(n) => n,
                None => 1 << 31,
            }
        };
        SlotLayout {
            inflight_mask: n - 1,
            ..self
        }
    }

    /// Entries of `INFLIGHT_SLOTS`.
    pub const fn inflight_slots(&self) -> u32 {
        self.inflight_mask + 1
    }

    /// What [`InflightSlot::key`] holds for `key`: one more, so that 0 (the array's zeroed
    /// start, and an idle slot's) is no command's key (a pointer is never `u64::MAX`, a request
    /// queue id never `u32::MAX`).
    #[inline(always)]
    pub fn slot_key(key: u64) -> u64 {
        key.wrapping_add(1)
    }

    /// The `INFLIGHT_SLOTS` index of a command's key: the high half of a multiplicative
    /// (Fibonacci) hash, masked. The keys of a node's commands in flight are regular (tags
    /// counting up, queue ids, request structs at a fixed stride), which a multiplication by
    /// the golden ratio spreads over the array; two keys of one index share the slot in turn
    /// (`InflightCollision`).
    #[inline(always)]
    pub fn inflight_index(&self, key: u64) -> u32 {
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32 & self.inflight_mask
    }

    /// Entries of `QUEUES`.
    pub const fn queue_slots(&self) -> u32 {
        self.controllers * self.queues
    }

    /// `OPS` entries per controller: the controller rows, then reads and writes of every I/O
    /// queue (1 .. `queues`).
    pub const fn stats_per_controller(&self) -> u32 {
        CONTROLLER_CLASSES.len() as u32 + self.queues.saturating_sub(1) * QUEUE_CLASSES.len() as u32
    }

    /// Entries of `OPS`.
    pub const fn stats_slots(&self) -> u32 {
        self.controllers * self.stats_per_controller()
    }

    /// The `QUEUES` index of a queue; `None` past the bounds.
    #[inline(always)]
    pub fn queue_slot(&self, ctrl_id: u32, qid: u16) -> Option<u32> {
        if ctrl_id < self.controllers && (qid as u32) < self.queues {
            Some(ctrl_id * self.queues + qid as u32)
        } else {
            None
        }
    }

    /// The `OPS` index of a command of `class` on an in-bounds queue ([`Self::queue_slot`] is
    /// `Some`): reads and writes on I/O queues (qid ≥ 1, as [`OpClass::classify`] gives them)
    /// have a row per queue, the other classes one per controller.
    #[inline(always)]
    pub fn stats_slot(&self, ctrl_id: u32, qid: u16, class: OpClass) -> u32 {
        let row = match class {
            OpClass::Admin => 0,
            OpClass::Fabrics => 1,
            OpClass::Flush => 2,
            OpClass::OtherIo => 3,
            OpClass::Read => 4 + (qid as u32).saturating_sub(1) * 2,
            OpClass::Write => 5 + (qid as u32).saturating_sub(1) * 2,
        };
        ctrl_id * self.stats_per_controller() + row
    }

    /// What an `OPS` index counts: (controller, queue, class); queue 0 for the per-controller
    /// rows. The inverse of [`Self::stats_slot`].
    pub fn stats_key(&self, index: u32) -> OpKey {
        let per = self.stats_per_controller().max(1);
        let (ctrl_id, row) = (index / per, index % per);
        let (qid, class) = match row {
            0..=3 => (0, CONTROLLER_CLASSES[row as usize]),
            r => (
                ((r - 4) / 2 + 1) as u16,
                QUEUE_CLASSES[((r - 4) % 2) as usize],
            ),
        };
        OpKey {
            ctrl_id,
            qid,
            opclass: class as u8,
            _pad: 0,
        }
    }

    /// What a `QUEUES` index is: the inverse of [`Self::queue_slot`].
    pub fn queue_key(&self, index: u32) -> QueueKey {
        let q = self.queues.max(1);
        QueueKey {
            ctrl_id: index / q,
            qid: (index % q) as u16,
            _pad: 0,
        }
    }
}

/// Key of the per-queue map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueKey {
    pub ctrl_id: u32,
    pub qid: u16,
    pub _pad: u16,
}

/// Cumulative per-queue counters. `submitted - completed` is the current depth (`completed` also
/// counts commands whose completion was lost, when their tag is set up again); `busy_ns` grows
/// while at least one command is in flight (like the block layer's `io_ticks`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueState {
    pub submitted: u64,
    pub completed: u64,
    pub busy_ns: u64,
    pub last_event_ns: u64,
}

/// Key of the per-(controller, queue, class) map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusKey {
    pub ctrl_id: u32,
    pub status: u16,
    pub opclass: u8,
    pub _pad: u8,
}

/// Key of the namespace map, whose value is log2 of the LBA size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespaceKey {
    pub ctrl_id: u32,
    pub nsid: u32,
}

/// The mask that keeps status code type and status code of an NVMe status.
pub const NVME_STATUS_MASK: u16 = 0x07ff;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)], Copy, made of integers, with explicit padding fields,
    // so every bit pattern is valid and no byte is uninitialised.
    unsafe impl aya::Pod for InflightKey {}
    unsafe impl aya::Pod for Inflight {}
    unsafe impl aya::Pod for InflightSlot {}
    unsafe impl aya::Pod for QueueKey {}
    unsafe impl aya::Pod for QueueState {}
    unsafe impl aya::Pod for OpKey {}
    unsafe impl aya::Pod for OpStats {}
    unsafe impl aya::Pod for StatusKey {}
    unsafe impl aya::Pod for NamespaceKey {}
    unsafe impl aya::Pod for FieldLoc {}
    unsafe impl aya::Pod for TracepointLayout {}
    unsafe impl aya::Pod for CtrlLayout {}
    unsafe impl aya::Pod for TransitionKey {}
    unsafe impl aya::Pod for TransitionStats {}
    unsafe impl aya::Pod for Reconnects {}
    unsafe impl aya::Pod for PendingChange {}
    unsafe impl aya::Pod for crate::state::ConnectFailureKey {}
    unsafe impl aya::Pod for crate::state::PendingConnect {}
    unsafe impl aya::Pod for RequestLayout {}
    unsafe impl aya::Pod for SlotLayout {}
    unsafe impl aya::Pod for crate::ConnErrorKey {}
    unsafe impl aya::Pod for crate::ErrorTimeouts {}
    unsafe impl aya::Pod for crate::slow::SlowTrace {}
    unsafe impl aya::Pod for crate::host_wait::HostWait {}
    unsafe impl aya::Pod for crate::queues::TcpQueueLayout {}
    unsafe impl aya::Pod for crate::queues::TcpQueueRecord {}
    unsafe impl aya::Pod for crate::slow::SlowContext {}
    unsafe impl aya::Pod for crate::slow::SlowCommand {}
    unsafe impl aya::Pod for crate::aen::AenLayout {}
    unsafe impl aya::Pod for crate::aen::AenKey {}
    unsafe impl aya::Pod for crate::aen::AnaLayout {}
    unsafe impl aya::Pod for crate::aen::AnaKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<InflightKey>(), 8);
        assert_eq!(core::mem::size_of::<Inflight>(), 32);
        assert_eq!(core::mem::size_of::<InflightSlot>(), 40);
        assert_eq!(core::mem::size_of::<SlotLayout>(), 16);
        assert_eq!(core::mem::size_of::<RequestLayout>(), 48);
        assert_eq!(core::mem::size_of::<QueueKey>(), 8);
        assert_eq!(core::mem::size_of::<QueueState>(), 32);
        assert_eq!(core::mem::size_of::<OpKey>(), 8);
        assert_eq!(core::mem::size_of::<OpStats>(), 24 + 4 * LATENCY_BUCKETS);
        assert_eq!(core::mem::size_of::<StatusKey>(), 8);
        assert_eq!(core::mem::size_of::<NamespaceKey>(), 8);
    }

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
    fn slots_are_dense_and_invert() {
        let l = SlotLayout::new(3, 5);
        assert_eq!(
            (l.queue_slots(), l.stats_per_controller(), l.stats_slots()),
            (15, 12, 36)
        );
        assert_eq!(l.queue_slot(2, 4), Some(14));
        assert_eq!(l.queue_slot(3, 0), None);
        assert_eq!(l.queue_slot(0, 5), None);
        let mut seen = [false; 36];
        for ctrl_id in 0..3 {
            for qid in 0..5u16 {
                let k = l.queue_key(l.queue_slot(ctrl_id, qid).unwrap());
                assert_eq!((k.ctrl_id, k.qid), (ctrl_id, qid));
                for opcode in [
                    NVME_CMD_READ,
                    NVME_CMD_WRITE,
                    NVME_CMD_FLUSH,
                    0x09,
                    NVME_FABRICS_OPCODE,
                ] {
                    let class = OpClass::classify(qid, opcode);
                    let i = l.stats_slot(ctrl_id, qid, class);
                    assert!(i < l.stats_slots(), "{ctrl_id} {qid} {class:?}");
                    seen[i as usize] = true;
                    let k = l.stats_key(i);
                    assert_eq!((k.ctrl_id, k.opclass), (ctrl_id, class as u8));
                    // Reads and writes keep their queue; the other classes are per controller.
                    let want_qid = if class.moves_data() { qid } else { 0 };
                    assert_eq!(k.qid, want_qid, "{class:?}");
                }
            }
        }
        // Every slot is some command's: none wasted.
        assert!(seen.iter().all(|&s| s));
    }

    extern crate std;

    /// Commands in flight whose index another already holds, among `keys` in that order.
    fn taken(l: &SlotLayout, keys: impl Iterator<Item = u64>) -> (usize, usize) {
        let mut held = std::collections::HashSet::new();
        let (mut n, mut taken) = (0, 0);
        for k in keys {
            let i = l.inflight_index(k);
            assert!(i < l.inflight_slots());
            n += 1;
            taken += usize::from(!held.insert(i));
        }
        (taken, n)
    }

    /// The keys of a node's commands in flight are regular, and the hash spreads them better
    /// than chance would (a random index: about `n / 2m` of `n` keys among `m` slots find theirs
    /// taken): none on the lab's node at the least size, few at 256 CPUs.
    #[test]
    fn inflight_indices_spread_a_nodes_keys() {
        assert_eq!(SlotLayout::new(1, 1).inflight_slots(), INFLIGHT_CAPACITY);
        assert_eq!(
            SlotLayout::new(1, 1)
                .with_inflight_slots(5)
                .inflight_slots(),
            8
        );
        assert_eq!(
            SlotLayout::new(1, 1)
                .with_inflight_slots(0)
                .inflight_slots(),
            1
        );
        assert_eq!(
            SlotLayout::new(1, 1)
                .with_inflight_slots(u32::MAX)
                .inflight_slots(),
            1 << 31
        );
        // The lab: three controllers' request queues, admin and two I/O queues, every tag.
        let lab = SlotLayout::new(16, 3);
        let keys = (3..6).flat_map(|q| {
            (0..3u16).flat_map(move |qid| (0..128).map(move |t| slow::classic_key(q, qid, t)))
        });
        assert_eq!(taken(&lab, keys), (0, 1152));
        // 16 controllers × 128 I/O queues, 32 commands in flight on each, in 2^18 slots.
        let node = SlotLayout::new(32, 129).with_inflight_slots(1 << 18);
        let keys = (0..16u32).flat_map(|c| {
            (1..129u16).flat_map(move |qid| (0..32).map(move |t| slow::classic_key(c, qid, t)))
        });
        let (taken, n) = taken(&node, keys);
        assert_eq!(n, 65536);
        // Chance would take 12.5 %; the hash takes 2.1 %.
        assert!(taken * 100 <= 5 * n, "{taken} of {n}");
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
            assert_eq!(OpClass::from_u8(c as u8), Some(c));
        }
        assert_eq!(OpClass::from_u8(6), None);
    }
}
