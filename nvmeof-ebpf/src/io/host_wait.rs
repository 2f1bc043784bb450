//! Host wait's kernel side (`nvmeof_common::host_wait`): `block_bio_queue` notes when each bio
//! was submitted; the setup of the request that carries it counts the span per controller.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, LruHashMap},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use nvmeof_common::host_wait::HostWait;
use nvmeof_common::{latency_bucket, OpStats, ProgramCounter, LATENCY_BUCKETS};
use nvmeof_ebpf::helpers::{atomic_add, atomic_add32, global};

use crate::count;

/// Written by the agent before load; `on` = 0 turns host wait off.
#[no_mangle]
static HOST_WAIT: HostWait = HostWait::OFF;

// Sized by the agent before load while host wait is on: the in-flight map's size, and one slot
// per controller instance of the arrays.
#[map]
static BIO_QUEUED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(1, 0);
#[map]
static HOST_WAIT_STATS: Array<OpStats> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn host_wait() -> HostWait {
    global(&HOST_WAIT)
}

/// Notes when a bio was submitted, for the setup of the request that will carry it. Every
/// submission overwrites: a bio struct is reused, and one merged into another request's bio
/// list is never taken by a setup. `arg(n)` reads the tracepoint's argument `n`, which both hook
/// types offer through their own context types: the bio is the first argument since 5.11 and the
/// second before ([`HostWait::bio_arg`]), each read at a constant offset as the verifier wants.
#[inline(always)]
fn bio_queued(arg: impl Fn(usize) -> u64) {
    let h = host_wait();
    if h.on == 0 {
        return;
    }
    let bio = match h.bio_arg {
        0 => arg(0),
        _ => arg(1),
    };
    if bio == 0 {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    match BIO_QUEUED.get_ptr_mut(bio) {
        // SAFETY: p points into the map's value for bio.
        Some(p) => unsafe { *p = now },
        None => {
            let _ = BIO_QUEUED.insert(bio, now, 0);
        }
    }
}

/// Counts the host wait of a command set up at `now` whose request's first bio is `bio`.
#[inline(always)]
pub fn take_host_wait(bio: u64, ctrl_id: u32, now: u64) {
    let queued = match BIO_QUEUED.get_ptr_mut(bio) {
        // SAFETY: p points into the map's value for bio; taken once (set to 0).
        Some(p) => unsafe {
            let t = *p;
            *p = 0;
            t
        },
        None => 0,
    };
    if queued == 0 || queued > now {
        count(ProgramCounter::HostWaitUnmatched);
        return;
    }
    let Some(stats) = HOST_WAIT_STATS.get_ptr_mut(ctrl_id) else {
        count(ProgramCounter::SlotOutOfRange);
        return;
    };
    let wait = now - queued;
    let bucket = latency_bucket(wait);
    // SAFETY: a live map value; bucket checked against the array's length.
    unsafe {
        atomic_add(&mut (*stats).latency_sum_ns, wait);
        if bucket < LATENCY_BUCKETS {
            atomic_add32(&mut (*stats).buckets[bucket], 1);
        }
    }
}

#[btf_tracepoint(function = "block_bio_queue")]
pub fn block_bio_queue_btf(ctx: BtfTracePointContext) -> u32 {
    bio_queued(|n| ctx.arg(n));
    0
}

#[raw_tracepoint(tracepoint = "block_bio_queue")]
pub fn block_bio_queue_raw(ctx: RawTracePointContext) -> u32 {
    bio_queued(|n| ctx.arg(n));
    0
}
