//! The controller state programs of nvmeof-exporter (object `nvmeof-state`).
//!
//! Hooks: kprobe and kretprobe on `nvme_change_ctrl_state(ctrl, new_state)`, kprobe on
//! `nvmf_should_reconnect(ctrl)`, kprobes and kretprobes on `nvmf_connect_admin_queue(ctrl)` and
//! `nvmf_connect_io_queue(ctrl, ...)`. Maps (types and names in `nvmeof_common::state`):
//! - `PENDING_CHANGES`: the old and requested state between entry and return, by thread;
//! - `TRANSITIONS`: per (controller instance, from, to), how many and when the last one was;
//! - `RECONNECTS`: per controller instance, the reconnect attempts seen in `nr_reconnects`;
//! - `PENDING_CONNECTS`, `CONNECT_FAILURES`: each queue's Connect (and its in-band
//!   authentication) that failed, by subsystem NQN, queue kind and reason, read from the return
//!   value;
//! - `MAP_FULL`: what the counting maps could not count, full (`nvmeof_common::count_maps`).
//!
//! The entry reads `ctrl->state`, `ctrl->instance` and `ctrl->nr_reconnects` at offsets the
//! agent took from BTF (`CTRL_LAYOUT`); the return counts the transition only when the kernel
//! accepted it (the function returns false for a change its state machine refuses).
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::{kprobe, kretprobe, map},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{ProbeContext, RetProbeContext},
};
use nvmeof_common::count_maps::{CountMap, COUNT_MAPS};
use nvmeof_common::state::{
    ConnectFailure, ConnectFailureKey, CtrlLayout, PendingChange, PendingConnect, Reconnects,
    TransitionKey, TransitionStats, CONNECT_FAILURES_CAPACITY, NQN_BYTES, PENDING_CAPACITY,
    RECONNECTS_CAPACITY, STATE_SLOTS, TRANSITIONS_CAPACITY,
};
use nvmeof_ebpf::helpers::{atomic_add, count_key, get_or_insert, global, map_full, BPF_NOEXIST};

/// Written by the agent before load (`EbpfLoader::override_global`).
#[no_mangle]
static CTRL_LAYOUT: CtrlLayout = CtrlLayout {
    state: 0,
    instance: 0,
    nr_reconnects: 0,
    state_new: 0,
    valid: 0,
    opts: 0,
    opts_subsysnqn: 0,
    opts_valid: 0,
};

#[map]
static PENDING_CHANGES: LruHashMap<u64, PendingChange> =
    LruHashMap::with_max_entries(PENDING_CAPACITY, 0);
#[map]
static TRANSITIONS: HashMap<TransitionKey, TransitionStats> =
    HashMap::with_max_entries(TRANSITIONS_CAPACITY, 0);
#[map]
static RECONNECTS: HashMap<u32, Reconnects> = HashMap::with_max_entries(RECONNECTS_CAPACITY, 0);
#[map]
static PENDING_CONNECTS: LruHashMap<u64, PendingConnect> =
    LruHashMap::with_max_entries(PENDING_CAPACITY, 0);
#[map]
static CONNECT_FAILURES: HashMap<ConnectFailureKey, u64> =
    HashMap::with_max_entries(CONNECT_FAILURES_CAPACITY, 0);
#[map]
static MAP_FULL: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNT_MAPS, 0);

#[inline(always)]
fn layout() -> CtrlLayout {
    global(&CTRL_LAYOUT)
}

#[inline(always)]
fn read_u32(base: u64, offset: u32) -> Option<u32> {
    // SAFETY: bpf_probe_read_kernel fails on a bad address, it cannot fault.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const u32).ok() }
}

/// Folds the controller's current `nr_reconnects` into its attempt count.
#[inline(always)]
fn observe_reconnects(instance: u32, nr: u32) {
    let Some(p) = get_or_insert(&RECONNECTS, &instance, &Reconnects::default()) else {
        map_full(&MAP_FULL, CountMap::Reconnects);
        return;
    };
    // SAFETY: a live map value. Reconnects of one controller run in its one work item, so these
    // plain updates do not race with each other.
    unsafe { (*p).observe(nr) };
}

#[kprobe]
pub fn change_ctrl_state(ctx: ProbeContext) -> u32 {
    let _ = try_change(&ctx);
    0
}

#[inline(always)]
fn try_change(ctx: &ProbeContext) -> Option<()> {
    let l = layout();
    if l.valid == 0 {
        return None;
    }
    let ctrl: u64 = ctx.arg(0)?;
    let to: u64 = ctx.arg(1)?;
    let from = read_u32(ctrl, l.state)?;
    let instance = read_u32(ctrl, l.instance)?;
    if let Some(nr) = read_u32(ctrl, l.nr_reconnects) {
        observe_reconnects(instance, nr);
    }
    let pending = PendingChange {
        instance,
        from,
        to: to as u32,
        _pad: 0,
    };
    PENDING_CHANGES
        .insert(bpf_get_current_pid_tgid(), pending, 0)
        .ok()
}

#[kretprobe]
pub fn change_ctrl_state_ret(ctx: RetProbeContext) -> u32 {
    let _ = try_change_ret(&ctx);
    0
}

#[inline(always)]
fn slot(state: u32) -> u8 {
    if state >= STATE_SLOTS as u32 {
        STATE_SLOTS - 1
    } else {
        state as u8
    }
}

#[inline(always)]
fn try_change_ret(ctx: &RetProbeContext) -> Option<()> {
    let l = layout();
    let id = bpf_get_current_pid_tgid();
    // SAFETY: a map value read, copied before the entry is removed.
    let p = unsafe { *PENDING_CHANGES.get(id)? };
    let _ = PENDING_CHANGES.remove(id);
    let changed: u64 = ctx.ret();
    if changed & 0xff == 0 {
        return None;
    }
    if p.from == l.state_new {
        // A new controller: its instance number may have served another one before.
        for from in 0..STATE_SLOTS {
            for to in 0..STATE_SLOTS {
                let _ = TRANSITIONS.remove(TransitionKey {
                    instance: p.instance,
                    from,
                    to,
                    _pad: 0,
                });
            }
        }
        let _ = RECONNECTS.remove(p.instance);
    }
    let key = TransitionKey {
        instance: p.instance,
        from: slot(p.from),
        to: slot(p.to),
        _pad: 0,
    };
    let now = unsafe { bpf_ktime_get_ns() };
    match TRANSITIONS.get_ptr_mut(key) {
        // SAFETY: a live map value; the last writer wins, which is the last transition.
        Some(s) => unsafe {
            atomic_add(&mut (*s).count, 1);
            (*s).last_ns = now;
        },
        None => {
            let first = TransitionStats {
                count: 1,
                last_ns: now,
            };
            if TRANSITIONS.insert(key, first, BPF_NOEXIST).is_err() {
                let Some(s) = TRANSITIONS.get_ptr_mut(key) else {
                    map_full(&MAP_FULL, CountMap::Transitions);
                    return None;
                };
                // SAFETY: as above.
                unsafe {
                    atomic_add(&mut (*s).count, 1);
                    (*s).last_ns = now;
                }
            }
        }
    }
    Some(())
}

#[kprobe]
pub fn should_reconnect(ctx: ProbeContext) -> u32 {
    let l = layout();
    if l.valid == 0 {
        return 0;
    }
    let Some(ctrl) = ctx.arg::<u64>(0) else {
        return 0;
    };
    if let (Some(instance), Some(nr)) =
        (read_u32(ctrl, l.instance), read_u32(ctrl, l.nr_reconnects))
    {
        observe_reconnects(instance, nr);
    }
    0
}

/// Notes the controller of a connect starting on this thread; the return reads its result.
#[inline(always)]
fn connect_entry(ctx: &ProbeContext) -> u32 {
    if layout().opts_valid == 0 {
        return 0;
    }
    if let Some(ctrl) = ctx.arg::<u64>(0) {
        let _ = PENDING_CONNECTS.insert(bpf_get_current_pid_tgid(), PendingConnect { ctrl }, 0);
    }
    0
}

/// Counts a failed connect of this thread's pending one, by the subsystem NQN the controller
/// was created for (`ctrl->opts->subsysnqn`: set before the first Connect, when the controller
/// has not yet identified itself, and the same for every reconnect).
#[inline(always)]
fn connect_return(ctx: &RetProbeContext, io_queue: u8) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: a map value read, copied before the entry is removed.
    let Some(p) = (unsafe { PENDING_CONNECTS.get(id) }).copied() else {
        return 0;
    };
    let _ = PENDING_CONNECTS.remove(id);
    let ret: i64 = ctx.ret();
    let Some(reason) = ConnectFailure::of_return(ret as i32) else {
        return 0;
    };
    let l = layout();
    let mut key = ConnectFailureKey {
        subsysnqn: [0; NQN_BYTES],
        io_queue,
        reason: reason as u8,
        _pad: [0; 2],
    };
    // SAFETY: probe reads fail on a bad address, they cannot fault. An NQN that cannot be read
    // is counted under an empty one.
    unsafe {
        if let Ok(opts) = bpf_probe_read_kernel((p.ctrl + l.opts as u64) as *const u64) {
            if let Ok(nqn) = bpf_probe_read_kernel((opts + l.opts_subsysnqn as u64) as *const u64) {
                let _ = bpf_probe_read_kernel_str_bytes(nqn as *const u8, &mut key.subsysnqn);
            }
        }
    }
    count_key(
        &CONNECT_FAILURES,
        &key,
        CountMap::ConnectFailures,
        &MAP_FULL,
    );
    0
}

#[kprobe]
pub fn connect_admin(ctx: ProbeContext) -> u32 {
    connect_entry(&ctx)
}

#[kretprobe]
pub fn connect_admin_ret(ctx: RetProbeContext) -> u32 {
    connect_return(&ctx, 0)
}

#[kprobe]
pub fn connect_io(ctx: ProbeContext) -> u32 {
    connect_entry(&ctx)
}

#[kretprobe]
pub fn connect_io_ret(ctx: RetProbeContext) -> u32 {
    connect_return(&ctx, 1)
}

nvmeof_ebpf::gpl_object!();
