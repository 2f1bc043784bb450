//! Benchmark-only programs: the agent never loads or attaches them. `cargo xtask bench` attaches
//! each to both nvme tracepoints beside the real programs and compares their run time
//! (`bpf_stats`) in one boot (see BENCHMARKS.md):
//! - `bench_tp_empty`: a classic tracepoint program that does nothing: the hook's own floor;
//! - `bench_tp_clock`: one `bpf_ktime_get_ns` per event, stored per CPU: the two clock reads a
//!   command costs at least, the fair floor under TCG where the clock read dominates;
//! - `bench_tp_atomic`: the clock read plus one BPF atomic add to a shared slot, to price the
//!   atomic adds the real programs use on shared map values;
//! - `bench_raw_empty`, `bench_raw_clock`: the same on raw tracepoints, to price the hook type.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
};

#[map]
static BENCH_CLOCK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static BENCH_SHARED: Array<u64> = Array::with_max_entries(1, 0);

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
        nvmeof_ebpf::helpers::atomic_add(p, 1);
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
