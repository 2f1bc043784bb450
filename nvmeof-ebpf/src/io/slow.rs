//! Slow-command tracing's kernel side (`nvmeof_common::slow`): a setup keeps the command's
//! identity, a completion past the threshold sends it through a ring buffer, within its CPU's
//! share of the second.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_smp_processor_id,
    },
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use nvmeof_common::slow::{SlowBudget, SlowCommand, SlowContext, SlowTrace};
use nvmeof_common::{Inflight, ProgramCounter};
use nvmeof_ebpf::helpers::global;

use crate::count;

/// Written by the agent before load; a zero threshold turns slow-command tracing off.
#[no_mangle]
static SLOW_TRACE: SlowTrace = SlowTrace::OFF;

// Sized by the agent before load: the in-flight map's size and a ring of its choice while
// tracing, one entry and one page while not.
#[map]
static SLOW_CONTEXT: LruHashMap<u64, SlowContext> = LruHashMap::with_max_entries(1, 0);
#[map]
static SLOW_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
static SLOW_BUDGET: PerCpuArray<SlowBudget> = PerCpuArray::with_max_entries(1, 0);
#[inline(always)]
pub fn slow_trace() -> SlowTrace {
    global(&SLOW_TRACE)
}

/// Keeps what a slow command's completion reports and cannot see itself: the setup runs in the
/// submitting task's context, the completion in an interrupt's or a transport worker's.
#[inline(always)]
pub fn keep_context(key: u64, nsid: u32, slba: u64, cid: u16) {
    // SAFETY: helper calls without pointer arguments.
    let (cgroup_id, pid_tgid, cpu) = unsafe {
        (
            bpf_get_current_cgroup_id(),
            bpf_get_current_pid_tgid(),
            bpf_get_smp_processor_id(),
        )
    };
    let ctx = SlowContext {
        slba,
        cgroup_id,
        pid: (pid_tgid >> 32) as u32,
        nsid,
        cid,
        cpu: cpu as u16,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // In place when the key has an entry (its previous command's): an LRU insert allocates a
    // new element and frees the old one, several times the cost (as for the in-flight map).
    match SLOW_CONTEXT.get_ptr_mut(key) {
        // SAFETY: p points into the map's value for key; the key serves one command at a time.
        Some(p) => unsafe { *p = ctx },
        None => {
            let _ = SLOW_CONTEXT.insert(key, ctx, 0);
        }
    }
}

/// Sends a command past the threshold to the agent, within its CPU's share of the second.
#[inline(always)]
pub fn send_slow(trace: &SlowTrace, key: u64, started: &Inflight, status: u16, latency: u64) {
    let Some(budget) = SLOW_BUDGET.get_ptr_mut(0) else {
        return;
    };
    let now = started.start_ns.wrapping_add(latency);
    // SAFETY: a per-CPU slot: no other program run touches it while this one runs.
    unsafe {
        if now.wrapping_sub((*budget).window_start_ns) >= 1_000_000_000 {
            (*budget).window_start_ns = now;
            (*budget).sent = 0;
        }
        if (*budget).sent >= trace.per_cpu_per_second {
            count(ProgramCounter::SlowRateLimited);
            return;
        }
        (*budget).sent += 1;
    }
    let Some(mut entry) = SLOW_EVENTS.reserve::<SlowCommand>(0) else {
        count(ProgramCounter::SlowRingFull);
        return;
    };
    // SAFETY: a map value read, copied at once.
    let ctx = unsafe { SLOW_CONTEXT.get(key) }.copied();
    // SAFETY: a helper call without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    entry.write(SlowCommand {
        start_ns: started.start_ns,
        latency_ns: latency,
        ctx: ctx.unwrap_or_default(),
        ctrl_id: started.ctrl_id,
        bytes: started.bytes,
        status,
        qid: started.qid,
        completion_cpu: cpu as u16,
        opcode: started.opcode,
        opclass: started.opclass,
        has_context: ctx.is_some() as u8,
        _pad: [0; 7],
    });
    entry.submit(0);
}
