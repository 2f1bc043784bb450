//! Types shared by the kernel side (`nvmeof-ebpf`) and the agent (`nvmeof-agent`).
//!
//! Every map key and value is defined here once, `#[repr(C)]` and free of implicit padding (each
//! derives `bytemuck::Pod`, whose derive refuses padding at compile time), so the kernel writes
//! exactly what the agent reads. Map and program names are constants for the same
//! reason. The latency bucket function lives here too ([`latency`]): the kernel counts into
//! Prometheus native-histogram buckets, the agent reads their bounds from the same module.
#![no_std]

// First: its macro serves the modules below.
#[macro_use]
mod names;

pub mod aen;
pub mod bench;
pub mod conn_errors;
pub mod count_maps;
pub mod host_wait;
mod indexed;
pub mod io;
pub mod latency;
pub mod layout;
pub mod queues;
pub mod slots;
pub mod slow;
pub mod state;

pub use conn_errors::{ConnErrorKey, ConnErrorKind, ErrorTimeouts, CONN_ERROR_KINDS};
pub use io::*;
pub use latency::{latency_bucket, LATENCY_BUCKETS};
pub use layout::{FieldLoc, RequestLayout, TracepointLayout};
pub use slots::{SlotLayout, CONTROLLER_CLASSES, QUEUE_CLASSES};
pub use state::{CtrlLayout, PendingChange, Reconnects, TransitionKey, TransitionStats};

/// Names of the maps in the eBPF object.
pub mod maps {
    object_names! {
        /// Commands set up and not yet completed, an array indexed by
        /// [`crate::SlotLayout::inflight_index`] of the command's key → [`crate::InflightSlot`].
        INFLIGHT_SLOTS,
        /// The classic programs' commands in flight (they use no slots): [`crate::InflightKey`] →
        /// [`crate::Inflight`].
        INFLIGHT,
        /// The request-keyed programs' commands whose slot in `INFLIGHT_SLOTS` holds another
        /// command in flight: `struct request *` as `u64` → [`crate::Inflight`].
        INFLIGHT_RQ,
        /// Per hardware queue, an array indexed by [`crate::SlotLayout::queue_slot`] →
        /// [`crate::QueueState`]; memory-mappable, the agent reads it without a system call.
        QUEUES,
        /// Per (controller, queue, opcode class), an array indexed by
        /// [`crate::SlotLayout::stats_slot`] → [`crate::OpStats`]; memory-mappable.
        OPS,
        /// Error completions: [`crate::StatusKey`] → `u64` count.
        STATUSES,
        /// The LBA size of each namespace, written by the agent: [`crate::NamespaceKey`] → `u32`
        /// shift.
        NAMESPACES,
        /// The programs' own event counters: index [`crate::ProgramCounter`] → `u64`, per CPU.
        COUNTERS,
        /// Connection errors by kind: [`crate::ConnErrorKey`] → `u64` count.
        CONN_ERRORS,
    }
}

/// Names of the programs in the eBPF object.
pub mod programs {
    object_names! {
        /// Classic tracepoints, joined on (controller, queue, command id): the last fallback.
        NVME_SETUP_CMD: nvme_setup_cmd,
        NVME_COMPLETE_RQ: nvme_complete_rq,

        /// BTF-enabled tracepoints (tp_btf), joined on the request pointer.
        NVME_SETUP_CMD_BTF: nvme_setup_cmd_btf,
        NVME_COMPLETE_RQ_BTF: nvme_complete_rq_btf,
        /// Raw tracepoints, joined on the request pointer: where tp_btf cannot attach.
        NVME_SETUP_CMD_RAW: nvme_setup_cmd_raw,
        NVME_COMPLETE_RQ_RAW: nvme_complete_rq_raw,
    }
}

object_names! {
    /// Name of the global that carries the tracepoint field layout (see [`TracepointLayout`]).
    LAYOUT_GLOBAL: LAYOUT,
    /// Name of the global that carries the kernel struct offsets (see [`RequestLayout`]).
    REQ_LAYOUT_GLOBAL: REQ_LAYOUT,
    /// Name of the global that carries the command timeouts (see [`ErrorTimeouts`]).
    ERROR_TIMEOUTS_GLOBAL: ERROR_TIMEOUTS,
    /// Name of the global that carries the array sizes (see [`SlotLayout`]).
    SLOT_LAYOUT_GLOBAL: SLOT_LAYOUT,
}

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

/// `aya::Pod` for types that are `bytemuck::Pod`: bytemuck's derive has proved, at compile time,
/// that each is `#[repr(C)]`, has no padding and holds only plain integers, which is what
/// `aya::Pod` asks. The `unsafe` rests on that checked bound, not on a comment.
#[cfg(feature = "user")]
macro_rules! aya_pod {
    ($($t:ty),* $(,)?) => {$(
        const _: () = {
            const fn is_pod<T: bytemuck::Pod>() {}
            is_pod::<$t>()
        };
        // SAFETY: `$t: bytemuck::Pod`, checked just above.
        unsafe impl aya::Pod for $t {}
    )*};
}

#[cfg(feature = "user")]
aya_pod!(
    InflightKey,
    Inflight,
    InflightSlot,
    QueueKey,
    QueueState,
    OpKey,
    OpStats,
    StatusKey,
    NamespaceKey,
    FieldLoc,
    TracepointLayout,
    CtrlLayout,
    TransitionKey,
    TransitionStats,
    Reconnects,
    PendingChange,
    crate::state::ConnectFailureKey,
    crate::state::PendingConnect,
    RequestLayout,
    SlotLayout,
    crate::ConnErrorKey,
    crate::ErrorTimeouts,
    crate::slow::SlowTrace,
    crate::host_wait::HostWait,
    crate::queues::TcpQueueLayout,
    crate::queues::TcpQueueRecord,
    crate::slow::SlowContext,
    crate::slow::SlowCommand,
    crate::aen::AenLayout,
    crate::aen::AenKey,
    crate::aen::AnaLayout,
    crate::aen::AnaKey,
);
