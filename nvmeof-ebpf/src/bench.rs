//! The benchmark object (`nvmeof-bench`): programs `cargo xtask bench` sets beside ours, never
//! in the agent's object (`src/main.rs`) and never loaded by the agent. The benchmark example
//! (`nvmeof-agent/examples/ebpf_bench.rs`) attaches each variant alone to the nvme tracepoints
//! and compares their run time (`bpf_stats`) in one boot (see BENCHMARKS.md):
//! - `bench_tp_empty`: a classic tracepoint program that does nothing: the hook's own floor;
//! - `bench_tp_clock`: one `bpf_ktime_get_ns` per event, stored per CPU: the two clock reads a
//!   command costs at least, the fair floor under TCG where the clock read dominates;
//! - `bench_tp_atomic`: the clock read plus one BPF atomic add to a shared slot, to price the
//!   atomic adds the real programs use on shared map values;
//! - `bench_raw_empty`, `bench_raw_clock`: the same on raw tracepoints, to price the hook type;
//! - `bench_raw_hash`, `bench_raw_probe`: the raw clock read plus one hash-map lookup that hits,
//!   or plus one `bpf_probe_read_kernel` of the request: the two other steps the request-keyed
//!   programs repeat per command (about six hash-map lookups and eight reads), priced apart
//!   from the atomic adds;
//! - `bench_raw_inflight`: the raw clock read plus an insert and a delete of the request pointer
//!   in a hash map, which the request-keyed pair makes once per command (insert at setup,
//!   delete at completion) and this program once per event, so twice per command;
//! - `bench_raw_lru`: the raw clock read plus one lookup that hits in an LRU hash keyed by the
//!   request and a store into its value: what the request-keyed pair does per event in place of
//!   that insert and delete;
//! - `bench_btf_empty`, `bench_btf_clock`: empty and clock on tp_btf (each is loaded once per
//!   tracepoint, as a tp_btf program's target is fixed at load), and `bench_btf_load`: the
//!   clock read plus one plain load of the request's first field, what a tp_btf program does
//!   where a raw one calls `bpf_probe_read_kernel`;
//! - the minimal latency tracer (`bench_min_{tp,raw,btf}_{setup,complete}`), the floor a timing
//!   tracer cannot go under: at setup the clock into an array slot by (controller, queue, tag),
//!   at completion the clock again, the start from that slot and one added to a log2 bucket in
//!   a per-CPU array (not atomic). The classic pair reads controller, queue and command id from
//!   the record (`LAYOUT`); the request-keyed pairs read them as our programs do, from the
//!   request at the offsets the loader found in BTF (`REQ_LAYOUT`).
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use nvmeof_common::bench::{min_bucket, min_slot, MIN_BUCKET_COUNT, MIN_SLOTS};
use nvmeof_common::{FieldLoc, RequestLayout, TracepointLayout, TAG_MASK};
use nvmeof_ebpf::helpers::global;

#[map]
static BENCH_CLOCK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static BENCH_SHARED: Array<u64> = Array::with_max_entries(1, 0);

#[map]
static BENCH_HASH: HashMap<u64, u64> = HashMap::with_max_entries(1, 0);

/// Room for the requests of concurrent events: each one's entry lives only during its run.
#[map]
static BENCH_INFLIGHT: HashMap<u64, u64> = HashMap::with_max_entries(16, 0);

/// Keyed by the request like `INFLIGHT_RQ`; entries stay, as there.
#[map]
static BENCH_LRU: LruHashMap<u64, u64> = LruHashMap::with_max_entries(1024, 0);

#[inline(always)]
fn read_clock() -> u32 {
    // SAFETY: a helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(p) = BENCH_CLOCK.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, not shared with another run.
        unsafe { *p = now };
    }
    0
}

#[tracepoint]
pub fn bench_tp_empty(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn bench_tp_clock(_ctx: TracePointContext) -> u32 {
    read_clock()
}

#[tracepoint]
pub fn bench_tp_atomic(_ctx: TracePointContext) -> u32 {
    read_clock();
    if let Some(p) = BENCH_SHARED.get_ptr_mut(0) {
        // SAFETY: p points into the array's value.
        unsafe { nvmeof_ebpf::helpers::atomic_add(p, 1) };
    }
    0
}

#[raw_tracepoint]
pub fn bench_raw_empty(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint]
pub fn bench_raw_clock(_ctx: RawTracePointContext) -> i32 {
    read_clock() as i32
}

#[raw_tracepoint]
pub fn bench_raw_hash(_ctx: RawTracePointContext) -> i32 {
    read_clock();
    match BENCH_HASH.get_ptr_mut(0) {
        // A plain store: the lookup is what is priced, not an atomic add.
        // SAFETY: a map value the kernel keeps alive for this run; a lost racing store is fine.
        Some(p) => unsafe { *p = 1 },
        None => {
            let _ = BENCH_HASH.insert(0, 1, nvmeof_ebpf::helpers::BPF_NOEXIST);
        }
    }
    0
}

#[raw_tracepoint]
pub fn bench_raw_probe(ctx: RawTracePointContext) -> i32 {
    read_clock();
    let req = ctx.arg::<u64>(0);
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one fails, it cannot fault.
    if let Ok(v) = unsafe { bpf_probe_read_kernel(req as *const u64) } {
        if let Some(p) = BENCH_CLOCK.get_ptr_mut(0) {
            // SAFETY: a per-CPU slot, not shared with another run.
            unsafe { *p ^= v };
        }
    }
    0
}

#[raw_tracepoint]
pub fn bench_raw_inflight(ctx: RawTracePointContext) -> i32 {
    read_clock();
    let req = ctx.arg::<u64>(0);
    if BENCH_INFLIGHT.insert(req, 1, 0).is_ok() {
        let _ = BENCH_INFLIGHT.remove(req);
    }
    0
}

#[raw_tracepoint]
pub fn bench_raw_lru(ctx: RawTracePointContext) -> i32 {
    let now = read_clock();
    let req = ctx.arg::<u64>(0);
    match BENCH_LRU.get_ptr_mut(req) {
        // SAFETY: a map value the kernel keeps alive for this run; one request's events do not
        // overlap.
        Some(p) => unsafe { *p = now as u64 },
        None => {
            let _ = BENCH_LRU.insert(req, 1, 0);
        }
    }
    0
}

// The tp_btf section name is what aya's macro requires; the loader names the tracepoint at load
// (`module_tp`), so the same program serves both nvme tracepoints.
#[btf_tracepoint(function = "nvme_setup_cmd")]
pub fn bench_btf_empty(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "nvme_setup_cmd")]
pub fn bench_btf_clock(_ctx: BtfTracePointContext) -> i32 {
    read_clock() as i32
}

#[btf_tracepoint(function = "nvme_setup_cmd")]
pub fn bench_btf_load(ctx: BtfTracePointContext) -> i32 {
    read_clock();
    let req = ctx.arg::<u64>(0);
    // SAFETY: a typed argument: the verifier checks the load against `struct request` (its
    // first member, `q`, is a pointer) and makes it fault-safe.
    let q = unsafe { core::ptr::read_volatile(req as *const u64) };
    // The loaded value is a typed pointer, which the verifier lets a program compare but not
    // mix into arithmetic: the slot counts the non-null ones.
    if q != 0 {
        if let Some(p) = BENCH_CLOCK.get_ptr_mut(0) {
            // SAFETY: a per-CPU slot, not shared with another run.
            unsafe { *p += 1 };
        }
    }
    0
}

/// Written by the loader before load, as for the agent's object: the record layout from tracefs
/// (the classic minimal pair), the struct offsets from BTF (the request-keyed ones).
#[no_mangle]
static LAYOUT: TracepointLayout = TracepointLayout::UNSET;

#[no_mangle]
static REQ_LAYOUT: RequestLayout = RequestLayout::UNSET;

#[map]
static MIN_START: Array<u64> = Array::with_max_entries(MIN_SLOTS, 0);

#[map]
static MIN_BUCKETS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MIN_BUCKET_COUNT, 0);

/// Stores the start time of the command in `slot`.
#[inline(always)]
fn min_start(slot: Option<u32>, now: u64) {
    if let Some(p) = slot.and_then(|s| MIN_START.get_ptr_mut(s)) {
        // SAFETY: a map value; one slot serves one command at a time.
        unsafe { *p = now };
    }
}

/// Counts the command in `slot` into its latency bucket and frees the slot.
#[inline(always)]
fn min_end(slot: Option<u32>, now: u64) {
    let Some(p) = slot.and_then(|s| MIN_START.get_ptr_mut(s)) else {
        return;
    };
    // SAFETY: as in `min_start`.
    let start = unsafe { *p };
    if start == 0 {
        return;
    }
    // SAFETY: as in `min_start`.
    unsafe { *p = 0 };
    if let Some(b) = MIN_BUCKETS.get_ptr_mut(min_bucket(now.saturating_sub(start))) {
        // SAFETY: a per-CPU slot, not shared with another run.
        unsafe { *b += 1 };
    }
}

/// A field of 2 or 4 bytes of a tracepoint record.
#[inline(always)]
fn record_field(ctx: &TracePointContext, loc: FieldLoc) -> Option<u32> {
    let off = loc.offset as usize;
    // SAFETY: read_at goes through bpf_probe_read; a bad offset fails, it cannot fault.
    unsafe {
        match loc.size {
            2 => ctx.read_at::<u16>(off).map(u32::from).ok(),
            4 => ctx.read_at::<u32>(off).ok(),
            _ => None,
        }
    }
}

/// The slot of a classic event from (controller, queue, command id) of its record.
#[inline(always)]
fn record_slot(
    ctx: &TracePointContext,
    ctrl: FieldLoc,
    qid: FieldLoc,
    cid: FieldLoc,
) -> Option<u32> {
    let ctrl = record_field(ctx, ctrl)?;
    let qid = record_field(ctx, qid)?;
    let cid = record_field(ctx, cid)?;
    min_slot(ctrl, qid, cid & TAG_MASK as u32)
}

#[tracepoint]
pub fn bench_min_tp_setup(ctx: TracePointContext) -> u32 {
    let l = global(&LAYOUT);
    if l.valid != 0 {
        let now = unsafe { bpf_ktime_get_ns() };
        min_start(
            record_slot(&ctx, l.setup_ctrl_id, l.setup_qid, l.setup_cid),
            now,
        );
    }
    0
}

#[tracepoint]
pub fn bench_min_tp_complete(ctx: TracePointContext) -> u32 {
    let l = global(&LAYOUT);
    if l.valid != 0 {
        let now = unsafe { bpf_ktime_get_ns() };
        min_end(
            record_slot(&ctx, l.complete_ctrl_id, l.complete_qid, l.complete_cid),
            now,
        );
    }
    0
}

/// A `T` in a struct the request leads to: a plain load on tp_btf (`BTF`), which the verifier
/// checks against the kernel's BTF, else `bpf_probe_read_kernel` (as in the agent's programs).
#[inline(always)]
fn field<T: Copy, const BTF: bool>(addr: u64) -> Option<T> {
    if BTF {
        // SAFETY: addr is a typed argument plus a constant offset; the verifier makes the load
        // fault-safe.
        Some(unsafe { core::ptr::read_volatile(addr as *const T) })
    } else {
        // SAFETY: bpf_probe_read_kernel checks the address; a bad one fails, it cannot fault.
        unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
    }
}

/// The slot of a request, read as the agent's request-keyed programs read controller and queue:
/// the controller instance through `nvme_req(req)->ctrl` (always a probe read: the pdu lies past
/// `struct request`), the queue id as `nvme_req_qid()`, and the request's tag.
#[inline(always)]
fn request_slot<const BTF: bool>(req: u64) -> Option<u32> {
    let l = global(&REQ_LAYOUT);
    // The null check first: the verifier refuses arithmetic on a maybe-null tp_btf argument.
    if l.valid == 0 || req == 0 {
        return None;
    }
    let pdu = req + l.request_size as u64;
    // SAFETY: as in `field`.
    let ctrl =
        unsafe { bpf_probe_read_kernel((pdu + l.nvme_req_ctrl as u64) as *const u64) }.ok()?;
    // SAFETY: as in `field`.
    let instance =
        unsafe { bpf_probe_read_kernel((ctrl + l.ctrl_instance as u64) as *const u32) }.ok()?;
    let q = field::<u64, BTF>(req + l.request_q as u64)?;
    let queuedata = field::<u64, BTF>(q + l.queue_queuedata as u64)?;
    let qid = if queuedata == 0 {
        0
    } else {
        let hctx = field::<u64, BTF>(req + l.request_mq_hctx as u64)?;
        field::<u32, BTF>(hctx + l.hctx_queue_num as u64)? + 1
    };
    let tag = field::<u32, BTF>(req + l.request_tag as u64)?;
    min_slot(instance, qid, tag)
}

#[raw_tracepoint]
pub fn bench_min_raw_setup(ctx: RawTracePointContext) -> i32 {
    let now = unsafe { bpf_ktime_get_ns() };
    min_start(request_slot::<false>(ctx.arg::<u64>(0)), now);
    0
}

#[raw_tracepoint]
pub fn bench_min_raw_complete(ctx: RawTracePointContext) -> i32 {
    let now = unsafe { bpf_ktime_get_ns() };
    min_end(request_slot::<false>(ctx.arg::<u64>(0)), now);
    0
}

#[btf_tracepoint(function = "nvme_setup_cmd")]
pub fn bench_min_btf_setup(ctx: BtfTracePointContext) -> i32 {
    let now = unsafe { bpf_ktime_get_ns() };
    min_start(request_slot::<true>(ctx.arg::<u64>(0)), now);
    0
}

#[btf_tracepoint(function = "nvme_complete_rq")]
pub fn bench_min_btf_complete(ctx: BtfTracePointContext) -> i32 {
    let now = unsafe { bpf_ktime_get_ns() };
    min_end(request_slot::<true>(ctx.arg::<u64>(0)), now);
    0
}

nvmeof_ebpf::gpl_object!();
