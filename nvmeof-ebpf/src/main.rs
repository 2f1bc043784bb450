//! The kernel side of nvmeof-exporter.
//!
//! Hooks: `nvme_setup_cmd` and `nvme_complete_rq`, three ways; the agent attaches one pair:
//! - tp_btf (`*_btf`) and raw tracepoints (`*_raw`): the first argument is the `struct request *`,
//!   which keys the command from setup to completion. Controller, queue and status are read from
//!   the kernel's structs at offsets the agent found in BTF (`REQ_LAYOUT`), a read's or write's
//!   bytes from the request (`blk_rq_bytes()`), the opcode from the `struct nvme_command` (the
//!   NVMe wire format).
//! - classic tracepoints: the record's (controller, queue, command id & 0xfff) keys the command.
//!   A read's or write's bytes are its block count (cdw12) times its namespace's LBA size, which
//!   the agent writes into `NAMESPACES`. The last fallback: nvme-tcp writes the H2C data PDU over the command PDU, so for writes
//!   larger than the inline data size the completion record's `cid` is a transfer tag and those
//!   writes go unmatched.
//!
//! Parts (`io/`, as the agent's `bpf/io/`): `classic.rs` and `request.rs` the two kinds of pair,
//! `inflight.rs` the commands in flight, `slow.rs` and `host_wait.rs` the options.
//!
//! Maps (types and names in `nvmeof-common`):
//! - `INFLIGHT_SLOTS`: the start time of every command of the request-keyed programs between
//!   setup and completion, in an array slot indexed by a hash of its key (raw: the request
//!   pointer; tp_btf: request queue, queue and tag), where a hash map would cost a hash lookup at
//!   each end (BENCHMARKS.md). A command whose slot holds another command in flight goes to
//!   `INFLIGHT_RQ`; the classic programs keep every command in `INFLIGHT` (see `inflight::claim`). Both
//!   are LRU hashes whose entries stay, idle, after their completion, for the key's next
//!   command;
//! - `QUEUES`: per hardware queue, submitted and completed counts and busy time;
//! - `OPS`: per (controller, queue, opcode class), bytes, errors, latency sum and a latency
//!   histogram in Prometheus native-histogram buckets, whose counts add up to the completed
//!   commands.
//!
//!   Both are arrays indexed by the controller instance and the queue id (`SLOT_LAYOUT`, sized
//!   by the agent before load): the setup finds the two slots a command's completion will update
//!   and keeps them in its in-flight entry, so a completion looks up nothing but that entry, and
//!   an array lookup is a bounds check and an addition that the verifier inlines;
//! - `STATUSES`: error completions by (controller, NVMe status, class);
//! - `CONN_ERRORS`: connection errors by (controller, kind): every error completion in exactly
//!   one kind, and commands that completed after their timeout (`ERROR_TIMEOUTS`, written by the
//!   agent before load);
//! - `COUNTERS`: the programs' own events (replaced or refused in-flight entries, ...);
//! - `MAP_FULL`: errors `STATUSES` or `CONN_ERRORS` could not count, full
//!   (`nvmeof_common::count_maps`);
//! - `SLOW_CONTEXT`, `SLOW_EVENTS`, `SLOW_BUDGET` (`io/slow.rs`): slow-command tracing
//!   (`nvmeof_common::slow`), sized by the agent to one entry and one page while it is off;
//! - `BIO_QUEUED`, `HOST_WAIT_STATS` (`io/host_wait.rs`, with its `block_bio_queue` programs):
//!   host wait (`nvmeof_common::host_wait`), one entry each while it is off.
//!
//! Field offsets are not compiled in: the agent parses the tracepoints' `format` files and writes
//! them into the `LAYOUT` global before loading. Every counter is cumulative; the agent takes
//! deltas. Shared maps are updated with the BPF atomic add, which every supported kernel has.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use nvmeof_common::count_maps::{CountMap, COUNT_MAPS};
use nvmeof_common::{
    latency_bucket, ConnErrorKey, ConnErrorKind, ErrorTimeouts, Inflight, InflightKey,
    InflightSlot, NamespaceKey, OpStats, ProgramCounter, QueueState, RequestLayout, SlotLayout,
    StatusKey, TracepointLayout, BPF_F_MMAPABLE, CONN_ERRORS_CAPACITY, INFLIGHT_CAPACITY,
    LATENCY_BUCKETS, NAMESPACES_CAPACITY, PROGRAM_COUNTERS, STATUSES_CAPACITY,
};
use nvmeof_ebpf::helpers::{atomic_add, atomic_add32, count_key, global};

// The I/O tracer's parts, in `io/` as the agent's `bpf/io/` is: the classic pair, the
// request-keyed pairs (tp_btf and raw), the commands in flight both keep, and the two options.
#[path = "io/classic.rs"]
mod classic;
#[path = "io/host_wait.rs"]
mod host_wait;
#[path = "io/inflight.rs"]
mod inflight;
#[path = "io/request.rs"]
mod request;
#[path = "io/slow.rs"]
mod slow;

use slow::{send_slow, slow_trace};

/// Written by the agent before load (`EbpfLoader::override_global`).
#[no_mangle]
static LAYOUT: TracepointLayout = TracepointLayout::UNSET;

/// Written by the agent before load, from the kernel's BTF.
#[no_mangle]
static REQ_LAYOUT: RequestLayout = RequestLayout::UNSET;

/// Written by the agent before load: the bounds of `QUEUES` and `OPS`.
#[no_mangle]
static SLOT_LAYOUT: SlotLayout = SlotLayout {
    controllers: 0,
    queues: 0,
    valid: 0,
    inflight_mask: 0,
};

/// Written by the agent before load; zero turns timeout counting off.
#[no_mangle]
static ERROR_TIMEOUTS: ErrorTimeouts = ErrorTimeouts {
    io_ns: 0,
    admin_ns: 0,
};

#[map]
static CONN_ERRORS: HashMap<ConnErrorKey, u64> = HashMap::with_max_entries(CONN_ERRORS_CAPACITY, 0);
/// Sized by the agent before load (`SlotLayout::inflight_slots`).
#[map]
static INFLIGHT_SLOTS: Array<InflightSlot> = Array::with_max_entries(1, 0);
// The in-flight LRU maps keep their entries after a completion (`start_ns` = 0 marks one idle): the
// keys are a bounded set that the kernel reuses (a request struct, or a queue's tag, serves one
// command after another), so a lookup and a store per command replace an insert and a delete,
// which cost about 5 times as much (BENCHMARKS.md). LRU bounds them: when more keys come than the map
// holds, the entries touched least recently go first (idle ones, and those of commands whose
// completion was lost).
#[map]
static INFLIGHT_RQ: LruHashMap<u64, Inflight> = LruHashMap::with_max_entries(INFLIGHT_CAPACITY, 0);
#[map]
static INFLIGHT: LruHashMap<InflightKey, Inflight> =
    LruHashMap::with_max_entries(INFLIGHT_CAPACITY, 0);
// Sized by the agent before load (`SlotLayout::queue_slots`, `SlotLayout::stats_slots`).
#[map]
static QUEUES: Array<QueueState> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map]
static OPS: Array<OpStats> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map]
static STATUSES: HashMap<StatusKey, u64> = HashMap::with_max_entries(STATUSES_CAPACITY, 0);
#[map]
static NAMESPACES: HashMap<NamespaceKey, u32> = HashMap::with_max_entries(NAMESPACES_CAPACITY, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(PROGRAM_COUNTERS, 0);
#[map]
static MAP_FULL: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNT_MAPS, 0);
#[inline(always)]
fn slot_layout() -> SlotLayout {
    global(&SLOT_LAYOUT)
}

#[inline(always)]
fn count(counter: ProgramCounter) {
    count_by(counter, 1);
}

#[inline(always)]
fn count_by(counter: ProgramCounter, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot: no other program run touches it while this one runs.
        unsafe { *p += n };
    }
}

/// Adds one to a controller's count of a connection-error kind.
#[inline(always)]
fn conn_error(ctrl_id: u32, kind: ConnErrorKind) {
    let key = ConnErrorKey {
        ctrl_id,
        kind: kind as u8,
        _pad: [0; 3],
    };
    count_key(&CONN_ERRORS, &key, CountMap::ConnErrors, &MAP_FULL);
}

/// Brings a queue's busy time up to `now`, adds `submitted` to its submitted count and, when a
/// command ended (`ended_start_ns`: its start time; 0 for none), one to its completed count. A
/// setup that replaced a lost command ends that command, so the depth does not grow by one for
/// every lost completion.
///
/// A queue with commands in flight and no event for longer than any command lives
/// (`ErrorTimeouts::longest_life_ns`) lost their completions: the kernel skipped the completion
/// program (`program_misses`; 5.10 skips without counting). Left in the depth, they would hold
/// it above zero, and count the queue busy for the whole of every gap between its commands,
/// until each one's tag came back. They are written off instead (`QueueState::written_off`).
#[inline(always)]
fn queue_event(slot: u32, now: u64, submitted: u64, ended_start_ns: u64) {
    let Some(state) = QUEUES.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: state points into a map value; the racy reads below are tolerated (like the block
    // layer's io_ticks): the counts themselves use atomic adds, and a write-off is a store that
    // two CPUs racing on it both make with the same value.
    unsafe {
        let depth = (*state).depth();
        let last = (*state).last_event_ns;
        if depth != 0 && last != 0 && now > last {
            let gap = now - last;
            if gap <= global(&ERROR_TIMEOUTS).longest_life_ns() {
                if depth > 0 {
                    atomic_add(&mut (*state).busy_ns, gap);
                }
            } else {
                (*state).written_off = (*state).submitted.wrapping_sub((*state).completed);
                (*state).expired_before_ns = now;
                if depth > 0 {
                    count_by(ProgramCounter::InflightExpired, depth as u64);
                }
            }
        }
        (*state).last_event_ns = now;
        if submitted != 0 {
            atomic_add(&mut (*state).submitted, submitted);
        }
        if ended_start_ns != 0 {
            atomic_add(&mut (*state).completed, 1);
            if ended_start_ns < (*state).expired_before_ns {
                // Written off already: the depth counted it out then.
                atomic_add(&mut (*state).written_off, u64::MAX);
            }
        }
    }
}

/// What a setup knows about a command, from a tracepoint record or from the kernel's structs.
struct Setup {
    ctrl_id: u32,
    qid: u16,
    opcode: u8,
    /// A read's or write's bytes; 0 for the other classes.
    bytes: u32,
}

/// Accounts a completed command: its queue, its (controller, queue, class) statistics and, when
/// it failed, its status; sends it to the agent when it was slow. `key` is its in-flight key as
/// `SLOW_CONTEXT` holds it.
#[inline(always)]
fn finish(started: &Inflight, status: u16, now: u64, key: u64) -> Option<()> {
    let (ctrl_id, qid) = (started.ctrl_id, started.qid);
    queue_event(started.queue_slot, now, 0, started.start_ns);

    let latency = now.saturating_sub(started.start_ns);
    let trace = slow_trace();
    if trace.threshold_ns != 0 && latency >= trace.threshold_ns {
        send_slow(&trace, key, started, status, latency);
    }
    if status != 0 {
        conn_error(
            ctrl_id,
            ConnErrorKind::of_command(status, qid, started.opcode),
        );
    }
    let timeouts = global(&ERROR_TIMEOUTS);
    if timeouts.timed_out(qid, latency) {
        conn_error(ctrl_id, ConnErrorKind::Timeout);
    }
    // In bounds: the setup checked both slots against the same layout.
    let stats = OPS.get_ptr_mut(started.stats_slot)?;
    let bucket = latency_bucket(latency);
    // Every shared atomic add is paid by every command (under multi-threaded TCG, dearly:
    // BENCHMARKS.md), so a command makes only those that carry information: no command count
    // (the agent sums the buckets), bytes only for reads and writes, errors only on error.
    // SAFETY: stats points into a live map value; bucket < LATENCY_BUCKETS by construction, and
    // the explicit check keeps the verifier's bounds proof simple.
    unsafe {
        atomic_add(&mut (*stats).latency_sum_ns, latency);
        if started.bytes != 0 {
            atomic_add(&mut (*stats).bytes, started.bytes as u64);
        }
        if status != 0 {
            atomic_add(&mut (*stats).errors, 1);
        }
        if bucket < LATENCY_BUCKETS {
            atomic_add32(&mut (*stats).buckets[bucket], 1);
        }
    }
    if status != 0 {
        let skey = StatusKey {
            ctrl_id,
            status,
            opclass: started.opclass,
            _pad: 0,
        };
        count_key(&STATUSES, &skey, CountMap::Statuses, &MAP_FULL);
    }
    Some(())
}

nvmeof_ebpf::gpl_object!();
