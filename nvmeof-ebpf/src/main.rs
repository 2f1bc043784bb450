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
//! Maps (types and names in `nvmeof-common`):
//! - `INFLIGHT_SLOTS`: the start time of every command of the request-keyed programs between
//!   setup and completion, in an array slot indexed by a hash of its key (raw: the request
//!   pointer; tp_btf: request queue, queue and tag), where a hash map would cost a hash lookup at
//!   each end (BENCHMARKS.md). A command whose slot holds another command in flight goes to
//!   `INFLIGHT_RQ`; the classic programs keep every command in `INFLIGHT` (see `claim`). Both
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
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use nvmeof_common::count_maps::{CountMap, COUNT_MAPS};
use nvmeof_common::slow::classic_key;
use nvmeof_common::{
    latency_bucket, ConnErrorKey, ConnErrorKind, ErrorTimeouts, FieldLoc, Inflight, InflightKey,
    InflightSlot, NamespaceKey, OpClass, OpStats, ProgramCounter, QueueState, RequestLayout,
    SlotLayout, StatusKey, TracepointLayout, BPF_F_MMAPABLE, CONN_ERRORS_CAPACITY,
    INFLIGHT_CAPACITY, LATENCY_BUCKETS, NAMESPACES_CAPACITY, NVME_STATUS_MASK, PROGRAM_COUNTERS,
    STATUSES_CAPACITY, TAG_MASK,
};
use nvmeof_ebpf::helpers::{atomic_add, atomic_add32, compare_exchange, count_key};

#[path = "io/host_wait.rs"]
mod host_wait;
#[path = "io/slow.rs"]
mod slow;

use host_wait::{host_wait, take_host_wait};
use slow::{keep_context, send_slow, slow_trace};

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
/// `dwords 10..15` start at cdw10; cdw12 holds the 0-based number of logical blocks in 0..16.
const CDW12_OFFSET_IN_CDW10: u16 = 8;
const DEFAULT_LBA_SHIFT: u32 = 9;
/// `struct nvme_command` (NVMe base specification, submission queue entry): opcode in byte 0,
/// the command identifier in bytes 2-3, the namespace in 4-7, a read's or write's starting LBA
/// in 40-47 (cdw10-11, low dword first).
const CMD_OPCODE: u64 = 0;
const CMD_CID: u64 = 2;
const CMD_NSID: u64 = 4;
const CMD_SLBA: u64 = 40;

#[inline(always)]
fn slot_layout() -> SlotLayout {
    // SAFETY: as in `layout`.
    unsafe { core::ptr::read_volatile(&SLOT_LAYOUT) }
}

#[inline(always)]
fn req_layout() -> RequestLayout {
    // SAFETY: as in `layout`.
    unsafe { core::ptr::read_volatile(&REQ_LAYOUT) }
}

/// Reads a `T` at a kernel address; a failed read is counted.
#[inline(always)]
fn kread<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one fails, it cannot fault.
    match unsafe { bpf_probe_read_kernel(addr as *const T) } {
        Ok(v) => Some(v),
        Err(_) => {
            count(ProgramCounter::ReadFailed);
            None
        }
    }
}

#[inline(always)]
fn layout() -> TracepointLayout {
    // SAFETY: a plain read of a global; volatile so the compiler does not fold in the zeroed
    // initialiser that the agent overrides before load.
    unsafe { core::ptr::read_volatile(&LAYOUT) }
}

#[inline(always)]
fn count(counter: ProgramCounter) {
    if let Some(p) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot: no other program run touches it while this one runs.
        unsafe { *p += 1 };
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

/// Reads a record field (see [`nvmeof_ebpf::helpers::read_field`]); a failed read is counted.
#[inline(always)]
fn read_field(ctx: &TracePointContext, loc: FieldLoc) -> Option<u64> {
    match nvmeof_ebpf::helpers::read_field(ctx, loc) {
        Some(Ok(v)) => Some(v),
        Some(Err(())) => {
            count(ProgramCounter::ReadFailed);
            None
        }
        None => None,
    }
}

/// Brings a queue's busy time up to `now` and adds to its submitted and completed counts. A setup
/// that replaced a lost command counts that command as completed, so `submitted - completed`
/// (the depth) does not grow by one for every lost completion.
#[inline(always)]
fn queue_event(slot: u32, now: u64, submitted: u64, completed: u64) {
    let Some(state) = QUEUES.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: state points into a map value; the racy reads below are tolerated (like the block
    // layer's io_ticks): the counts themselves use atomic adds.
    unsafe {
        let depth = (*state).submitted.wrapping_sub((*state).completed);
        let last = (*state).last_event_ns;
        if depth > 0 && last != 0 && now > last {
            atomic_add(&mut (*state).busy_ns, now - last);
        }
        (*state).last_event_ns = now;
        if submitted != 0 {
            atomic_add(&mut (*state).submitted, submitted);
        }
        if completed != 0 {
            atomic_add(&mut (*state).completed, completed);
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

/// A read's or write's bytes from its command, for the classic pair, which sees no request:
/// cdw12's 0-based block count times the namespace's LBA size, which the agent writes into
/// `NAMESPACES` from sysfs (512-byte blocks, counted, until it has).
#[inline(always)]
fn command_bytes(ctrl_id: u32, nsid: u32, cdw12: u32) -> u32 {
    let blocks = (cdw12 & 0xffff) + 1;
    let key = NamespaceKey { ctrl_id, nsid };
    // SAFETY: a map value read, copied at once.
    let shift = match unsafe { NAMESPACES.get(key) } {
        Some(v) => *v,
        None => {
            count(ProgramCounter::LbaSizeUnknown);
            DEFAULT_LBA_SHIFT
        }
    };
    blocks << (shift & 31)
}

/// The in-flight value of a command set up at `now`, with the slots its completion updates;
/// `None` (counted) for a controller or queue past the arrays' bounds.
#[inline(always)]
fn inflight(s: &Setup, now: u64) -> Option<Inflight> {
    let slots = slot_layout();
    let Some(queue_slot) = slots.queue_slot(s.ctrl_id, s.qid) else {
        count(ProgramCounter::SlotOutOfRange);
        return None;
    };
    let class = OpClass::classify(s.qid, s.opcode);
    Some(Inflight {
        start_ns: now,
        bytes: s.bytes,
        ctrl_id: s.ctrl_id,
        queue_slot,
        stats_slot: slots.stats_slot(s.ctrl_id, s.qid, class),
        qid: s.qid,
        opclass: class as u8,
        opcode: s.opcode,
        _pad: [0; 4],
    })
}

/// Records a command as in flight and counts it as submitted on its queue: in `key`'s slot of
/// `INFLIGHT_SLOTS` (an inlined array lookup) when the slot is idle or already its key's, else
/// (counted) or without `key` (the classic programs) under `lru_key` in `lru` (a hash lookup).
#[inline(always)]
fn begin<K>(
    key: Option<u64>,
    lru: &LruHashMap<K, Inflight>,
    lru_key: &K,
    value: &Inflight,
) -> Option<()> {
    let replaced = match key.and_then(|key| claim(key, value)) {
        Some(replaced) => replaced,
        None => begin_lru(lru, lru_key, value)?,
    };
    if replaced {
        count(ProgramCounter::InflightReplaced);
    }
    queue_event(value.queue_slot, value.start_ns, 1, replaced as u64);
    Some(())
}

/// Writes a command into its slot: `Some(replaced)` when the slot was idle (claimed by an atomic
/// compare-and-exchange of its start time, so two setups of one index on two CPUs cannot both
/// take it) or already its key's (`replaced`: that command's completion was lost); `None` when
/// the slot holds another command in flight (counted).
///
/// The compare-and-exchange came with Linux 5.12, and 5.10's verifier refuses a program holding
/// one even where it cannot run: only the request-keyed programs use the slots (they need
/// nvme_core's BTF, which 5.10 kernels lack); the classic ones, every kernel's fallback, keep to
/// the LRU maps.
#[inline(always)]
fn claim(key: u64, value: &Inflight) -> Option<bool> {
    let slots = slot_layout();
    let slot = INFLIGHT_SLOTS.get_ptr_mut(slots.inflight_index(key))?;
    let mine = SlotLayout::slot_key(key);
    // SAFETY: slot points into the array's value. Only the setup that claimed a slot, and then
    // its key's completion, write it; another setup that finds it taken only reads `key` (at
    // worst before the claimer wrote it: then it is 0, no key's, and it goes to the LRU map).
    unsafe {
        let start = &mut (*slot).inflight.start_ns;
        let replaced = match compare_exchange(start, 0, value.start_ns) {
            0 => false,
            _ if (*slot).key == mine => true,
            _ => {
                count(ProgramCounter::InflightCollision);
                return None;
            }
        };
        (*slot).key = mine;
        (*slot).inflight = *value;
        Some(replaced)
    }
}

/// The command in `key`'s slot, if it is there: the slot is then freed, its key cleared before
/// its start time (the release, atomic: a setup may claim it from then on).
#[inline(always)]
fn release(key: u64) -> Option<Inflight> {
    let slots = slot_layout();
    let slot = INFLIGHT_SLOTS.get_ptr_mut(slots.inflight_index(key))?;
    // SAFETY: as in `claim`: a slot holding this key is written by this key's setup and
    // completion only, which do not overlap.
    unsafe {
        let started = (*slot).inflight;
        if started.start_ns == 0 || (*slot).key != SlotLayout::slot_key(key) {
            return None;
        }
        (*slot).key = 0;
        compare_exchange(&mut (*slot).inflight.start_ns, started.start_ns, 0);
        Some(started)
    }
}

/// Records a command in an in-flight LRU map; whether it replaced one whose completion was lost.
#[inline(always)]
fn begin_lru<K>(map: &LruHashMap<K, Inflight>, key: &K, value: &Inflight) -> Option<bool> {
    match map.get_ptr_mut(key) {
        Some(p) => {
            // SAFETY: p points into the map's value for key; only this key's setup and completion
            // write it, and they do not overlap (the key serves one command at a time).
            unsafe {
                let replaced = (*p).start_ns != 0;
                *p = *value;
                Some(replaced)
            }
        }
        None => {
            count(ProgramCounter::InflightNewKey);
            if map.insert(key, value, 0).is_err() {
                count(ProgramCounter::InflightFull);
                return None;
            }
            Some(false)
        }
    }
}

/// The in-flight value of `key` (its slot's, else `lru_key`'s in `lru`), marked idle; `None`
/// when no setup of it is pending.
#[inline(always)]
fn end<K>(key: Option<u64>, lru: &LruHashMap<K, Inflight>, lru_key: &K) -> Option<Inflight> {
    if let Some(started) = key.and_then(release) {
        return Some(started);
    }
    let p = lru.get_ptr_mut(lru_key)?;
    // SAFETY: as in `begin_lru`.
    unsafe {
        if (*p).start_ns == 0 {
            return None;
        }
        let started = *p;
        (*p).start_ns = 0;
        Some(started)
    }
}

#[tracepoint]
pub fn nvme_setup_cmd(ctx: TracePointContext) -> u32 {
    let _ = try_setup(&ctx);
    0
}

#[inline(always)]
fn try_setup(ctx: &TracePointContext) -> Option<()> {
    let l = layout();
    if l.valid == 0 {
        return None;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let ctrl_id = read_field(ctx, l.setup_ctrl_id)? as u32;
    let qid = read_field(ctx, l.setup_qid)? as u16;
    let opcode = read_field(ctx, l.setup_opcode)? as u8;
    let cid = read_field(ctx, l.setup_cid)? as u16;
    let mut s = Setup {
        ctrl_id,
        qid,
        opcode,
        bytes: 0,
    };
    if OpClass::classify(qid, opcode).moves_data() && l.setup_cdw10.is_present() {
        let nsid = read_field(ctx, l.setup_nsid)? as u32;
        let cdw12 = FieldLoc::new(l.setup_cdw10.offset + CDW12_OFFSET_IN_CDW10, 4);
        s.bytes = command_bytes(ctrl_id, nsid, read_field(ctx, cdw12)? as u32);
    }
    let key = InflightKey {
        ctrl_id,
        qid,
        tag: cid & TAG_MASK,
    };
    let value = inflight(&s, now)?;
    if slow_trace().threshold_ns != 0 {
        let nsid = read_field(ctx, l.setup_nsid).unwrap_or(0) as u32;
        // cdw10 and cdw11, little-endian: the starting LBA.
        let slba = if s.bytes != 0 {
            read_field(ctx, FieldLoc::new(l.setup_cdw10.offset, 8)).unwrap_or(0)
        } else {
            0
        };
        keep_context(classic_key(ctrl_id, qid, key.tag), nsid, slba, cid);
    }
    begin(None, &INFLIGHT, &key, &value)
}

#[btf_tracepoint(function = "nvme_setup_cmd")]
pub fn nvme_setup_cmd_btf(ctx: BtfTracePointContext) -> u32 {
    let _ = rq_setup::<true>(ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    0
}

#[raw_tracepoint(tracepoint = "nvme_setup_cmd")]
pub fn nvme_setup_cmd_raw(ctx: RawTracePointContext) -> u32 {
    let _ = rq_setup::<false>(ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    0
}

/// Reads a `T` at `addr` inside a struct the tracepoint's arguments lead to. `BTF`: the program
/// is tp_btf, its arguments are typed pointers and the verifier checks a plain load against the
/// kernel's BTF (a field of that size at that offset; a fault reads zero), so no helper call;
/// otherwise (raw tracepoints) through `bpf_probe_read_kernel`. Only for the struct members BTF
/// types: `struct request`, `request_queue`, `blk_mq_hw_ctx`, `nvme_command`. The blk-mq pdu
/// (`nvme_req`) lies past `struct request` and its `ctrl` is reached through an untyped pointer,
/// so those are always read with `kread`.
#[inline(always)]
fn field<T: Copy, const BTF: bool>(addr: u64) -> Option<T> {
    if BTF {
        // SAFETY: the verifier proves the load against BTF and turns it into a faulting-safe
        // load (a bad address reads zero); addr is a typed argument plus a constant offset.
        Some(unsafe { core::ptr::read_volatile(addr as *const T) })
    } else {
        kread::<T>(addr)
    }
}

/// A request's `struct request_queue *` and NVMe queue id (`nvme_req_qid()`: 0 on the admin
/// queue, which has no queuedata, else the hardware queue number plus one).
#[inline(always)]
fn request_queue<const BTF: bool>(req: u64, l: &RequestLayout) -> Option<(u64, u16)> {
    let q = field::<u64, BTF>(req + l.request_q as u64)?;
    let queuedata = field::<u64, BTF>(q + l.queue_queuedata as u64)?;
    let qid = if queuedata == 0 {
        0
    } else {
        let hctx = field::<u64, BTF>(req + l.request_mq_hctx as u64)?;
        field::<u32, BTF>(hctx + l.hctx_queue_num as u64)? as u16 + 1
    };
    Some((q, qid))
}

/// A request's key in `INFLIGHT_SLOTS`. Raw tracepoints: the request pointer itself, which
/// costs no read. tp_btf: the verifier forbids arithmetic on a typed pointer (the index is a
/// hash of the key), so (request queue id, queue id, tag), three plain loads: a driver tag is
/// unique among its hardware queue's commands in flight, and the queue id among request queues.
#[inline(always)]
fn request_key<const BTF: bool>(req: u64, q: u64, qid: u16, l: &RequestLayout) -> Option<u64> {
    if !BTF {
        return Some(req);
    }
    let queue = field::<u32, BTF>(q + l.queue_id as u64)?;
    let tag = field::<u32, BTF>(req + l.request_tag as u64)?;
    Some(classic_key(queue, qid, tag as u16))
}

/// `nvme_setup_cmd(struct request *req, struct nvme_command *cmd)`. The arguments are checked
/// for null first: tp_btf arguments may be null for the verifier (6.12 marks every raw tracepoint
/// argument so), which refuses any arithmetic on them before that check (`rq_complete` too).
#[inline(always)]
fn rq_setup<const BTF: bool>(req: u64, cmd: u64) -> Option<()> {
    let l = req_layout();
    if l.valid == 0 || req == 0 || cmd == 0 {
        return None;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    // nvme_req(req) is the blk-mq pdu right after struct request.
    let pdu = req + l.request_size as u64;
    let ctrl = kread::<u64>(pdu + l.nvme_req_ctrl as u64)?;
    let ctrl_id = kread::<u32>(ctrl + l.ctrl_instance as u64)?;
    let (q, qid) = request_queue::<BTF>(req, &l)?;
    let opcode = field::<u8, BTF>(cmd + CMD_OPCODE)?;
    let mut s = Setup {
        ctrl_id,
        qid,
        opcode,
        bytes: 0,
    };
    // The request's byte count (`blk_rq_bytes()`) is the command's: one load where the command's
    // block count needed the namespace's LBA size from a hash map.
    let moves_data = OpClass::classify(qid, opcode).moves_data();
    if moves_data {
        s.bytes = field::<u32, BTF>(req + l.request_data_len as u64)?;
    }
    let value = inflight(&s, now)?;
    let hw = host_wait();
    if hw.on != 0 {
        // A flush or an admin command carries no bio.
        let bio = field::<u64, BTF>(req + hw.request_bio as u64).unwrap_or(0);
        if bio != 0 {
            take_host_wait(bio, ctrl_id, now);
        }
    }
    if slow_trace().threshold_ns != 0 {
        // Two 32-bit loads: on tp_btf the verifier checks a load against the first member of
        // the `nvme_command` union at that offset, the common command's cdw10 (4 bytes), and
        // refuses 8.
        let slba = match moves_data {
            true => {
                let lo = field::<u32, BTF>(cmd + CMD_SLBA).unwrap_or(0);
                let hi = field::<u32, BTF>(cmd + CMD_SLBA + 4).unwrap_or(0);
                u64::from(lo) | u64::from(hi) << 32
            }
            false => 0,
        };
        let nsid = field::<u32, BTF>(cmd + CMD_NSID).unwrap_or(0);
        keep_context(
            req,
            nsid,
            slba,
            field::<u16, BTF>(cmd + CMD_CID).unwrap_or(0),
        );
    }
    begin(
        request_key::<BTF>(req, q, qid, &l),
        &INFLIGHT_RQ,
        &req,
        &value,
    )
}

#[tracepoint]
pub fn nvme_complete_rq(ctx: TracePointContext) -> u32 {
    let _ = try_complete(&ctx);
    0
}

#[inline(always)]
fn try_complete(ctx: &TracePointContext) -> Option<()> {
    let l = layout();
    if l.valid == 0 {
        return None;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let ctrl_id = read_field(ctx, l.complete_ctrl_id)? as u32;
    let qid = read_field(ctx, l.complete_qid)? as u16;
    let cid = read_field(ctx, l.complete_cid)? as u16;
    let status = read_field(ctx, l.complete_status)? as u16 & NVME_STATUS_MASK;
    let key = InflightKey {
        ctrl_id,
        qid,
        tag: cid & TAG_MASK,
    };
    let started = match end(None, &INFLIGHT, &key) {
        Some(v) => v,
        None => {
            count(ProgramCounter::CompletionUnmatched);
            if status != 0 {
                conn_error(ctrl_id, ConnErrorKind::of_status(status));
            }
            return None;
        }
    };
    finish(&started, status, now, classic_key(ctrl_id, qid, key.tag))
}

#[btf_tracepoint(function = "nvme_complete_rq")]
pub fn nvme_complete_rq_btf(ctx: BtfTracePointContext) -> u32 {
    let _ = rq_complete::<true>(ctx.arg::<u64>(0));
    0
}

#[raw_tracepoint(tracepoint = "nvme_complete_rq")]
pub fn nvme_complete_rq_raw(ctx: RawTracePointContext) -> u32 {
    let _ = rq_complete::<false>(ctx.arg::<u64>(0));
    0
}

/// `nvme_complete_rq(struct request *req)`.
#[inline(always)]
fn rq_complete<const BTF: bool>(req: u64) -> Option<()> {
    let l = req_layout();
    if l.valid == 0 || req == 0 {
        return None;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let pdu = req + l.request_size as u64;
    // The raw programs' key is the pointer: the queue is read only for tp_btf's.
    let key = match BTF {
        true => {
            request_queue::<BTF>(req, &l).and_then(|(q, qid)| request_key::<BTF>(req, q, qid, &l))
        }
        false => Some(req),
    };
    let started = match end(key, &INFLIGHT_RQ, &req) {
        Some(v) => v,
        None => {
            count(ProgramCounter::CompletionUnmatched);
            // A failed command whose setup was not seen still counts, by its status alone (as
            // the classic path does): its controller is read from the request.
            let status = kread::<u16>(pdu + l.nvme_req_status as u64)? & NVME_STATUS_MASK;
            if status != 0 {
                let ctrl = kread::<u64>(pdu + l.nvme_req_ctrl as u64)?;
                let ctrl_id = kread::<u32>(ctrl + l.ctrl_instance as u64)?;
                conn_error(ctrl_id, ConnErrorKind::of_status(status));
            }
            return None;
        }
    };
    let status = kread::<u16>(pdu + l.nvme_req_status as u64)? & NVME_STATUS_MASK;
    finish(&started, status, now, req)
}

/// Accounts a completed command: its queue, its (controller, queue, class) statistics and, when
/// it failed, its status; sends it to the agent when it was slow. `key` is its in-flight key as
/// `SLOW_CONTEXT` holds it.
#[inline(always)]
fn finish(started: &Inflight, status: u16, now: u64, key: u64) -> Option<()> {
    let (ctrl_id, qid) = (started.ctrl_id, started.qid);
    queue_event(started.queue_slot, now, 0, 1);

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
    // SAFETY: a plain read of a global, volatile for the reason given in `layout`.
    let timeouts = unsafe { core::ptr::read_volatile(&ERROR_TIMEOUTS) };
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
