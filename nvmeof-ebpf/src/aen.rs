//! The asynchronous event and ANA programs of nvmeof-exporter (object `nvmeof-aen`).
//!
//! Hooks: the classic tracepoint `nvme:nvme_async_event`, which nvme_core fires for every
//! Asynchronous Event Request that completes with success, before it acts on the event (an ANA
//! change notice makes it re-read the ANA log); a kprobe on `nvme_update_ns_ana_state(desc, ns)`,
//! where the kernel sets each path's ANA state from the log. Maps (types and names in
//! `nvmeof_common::aen`):
//! - `AEN_EVENTS`: per (controller instance, raw result), how many;
//! - `ANA_TRANSITIONS`: per (path, old state, new state), how many;
//! - `MAP_FULL`: events the two could not count, full (`nvmeof_common::count_maps`).
//!
//! The record's offsets come from the tracepoint's `format` file (`AEN_LAYOUT`), the structs'
//! from BTF (`ANA_LAYOUT`), both written by the agent before load, never from the source. The
//! programs only count; the agent decodes results and states into labels.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{kprobe, map, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::{ProbeContext, TracePointContext},
};
use nvmeof_common::aen::{AenKey, AenLayout, AnaKey, AnaLayout, AEN_CAPACITY, ANA_CAPACITY};
use nvmeof_common::count_maps::{CountMap, COUNT_MAPS};
use nvmeof_common::FieldLoc;
use nvmeof_ebpf::helpers::{count_key, global, read_field};

/// Written by the agent before load (`EbpfLoader::override_global`).
#[no_mangle]
static AEN_LAYOUT: AenLayout = AenLayout {
    ctrl_id: FieldLoc::new(0, 0),
    result: FieldLoc::new(0, 0),
    valid: 0,
};

/// Written by the agent before load, from the kernel's BTF.
#[no_mangle]
static ANA_LAYOUT: AnaLayout = AnaLayout {
    desc_state: 0,
    ns_ana_state: 0,
    ns_ctrl: 0,
    ns_head: 0,
    ctrl_instance: 0,
    ctrl_subsys: 0,
    head_instance: 0,
    subsys_instance: 0,
    valid: 0,
};

#[map]
static AEN_EVENTS: HashMap<AenKey, u64> = HashMap::with_max_entries(AEN_CAPACITY, 0);
#[map]
static ANA_TRANSITIONS: HashMap<AnaKey, u64> = HashMap::with_max_entries(ANA_CAPACITY, 0);
/// Events the maps above could not count, full (`nvmeof_common::count_maps`).
#[map]
static MAP_FULL: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNT_MAPS, 0);

#[tracepoint]
pub fn nvme_async_event(ctx: TracePointContext) -> u32 {
    let _ = try_count(&ctx);
    0
}

#[inline(always)]
fn try_count(ctx: &TracePointContext) -> Option<()> {
    let l = global(&AEN_LAYOUT);
    if l.valid == 0 {
        return None;
    }
    let key = AenKey {
        ctrl_id: read_field(ctx, l.ctrl_id)?.ok()? as u32,
        result: read_field(ctx, l.result)?.ok()? as u32,
    };
    count_key(&AEN_EVENTS, &key, CountMap::AenEvents, &MAP_FULL);
    Some(())
}

/// Reads a `T` at `base + offset` of kernel memory.
#[inline(always)]
fn kread<T>(base: u64, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel fails on a bad address, it cannot fault.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

#[kprobe]
pub fn update_ns_ana_state(ctx: ProbeContext) -> u32 {
    let _ = try_ana(&ctx);
    0
}

#[inline(always)]
fn try_ana(ctx: &ProbeContext) -> Option<()> {
    let l = global(&ANA_LAYOUT);
    if l.valid == 0 {
        return None;
    }
    let desc: u64 = ctx.arg(0)?;
    let ns: u64 = ctx.arg(1)?;
    let to: u8 = kread(desc, l.desc_state)?;
    let from: u32 = kread(ns, l.ns_ana_state)?;
    // A path's first state (a new namespace, zeroed) and a log that repeats the state are no
    // transitions.
    if from == 0 || from == u32::from(to) {
        return None;
    }
    let ctrl: u64 = kread(ns, l.ns_ctrl)?;
    let head: u64 = kread(ns, l.ns_head)?;
    let subsys: u64 = kread(ctrl, l.ctrl_subsys)?;
    let key = AnaKey {
        ctrl_instance: kread(ctrl, l.ctrl_instance)?,
        subsys_instance: kread(subsys, l.subsys_instance)?,
        head_instance: kread(head, l.head_instance)?,
        from: from.min(0xff) as u8,
        to,
        _pad: 0,
    };
    count_key(&ANA_TRANSITIONS, &key, CountMap::AnaTransitions, &MAP_FULL);
    Some(())
}

nvmeof_ebpf::gpl_object!();
