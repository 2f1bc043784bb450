//! Benchmark-only programs: the agent never loads or attaches them. `cargo xtask bench` attaches
//! each to both nvme tracepoints beside the real programs and compares their run time
//! (`bpf_stats`) in one boot (see BENCHMARKS.md):
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
//!   where a raw one calls `bpf_probe_read_kernel`.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};

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
