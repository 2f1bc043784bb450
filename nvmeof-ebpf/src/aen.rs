//! The asynchronous event program of nvmeof-exporter (object `nvmeof-aen`).
//!
//! Hook: the classic tracepoint `nvme:nvme_async_event`, which nvme_core fires for every
//! Asynchronous Event Request that completes with success, before it acts on the event (an ANA
//! change notice makes it re-read the ANA log). Map (types and names in `nvmeof_common::aen`):
//! - `AEN_EVENTS`: per (controller instance, raw result), how many.
//!
//! The record's offsets come from the tracepoint's `format` file (`AEN_LAYOUT`, written by the
//! agent before load), never from the source. The program only counts; the agent decodes the
//! result into type and information.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use nvmeof_common::aen::{AenKey, AenLayout, AEN_CAPACITY};
use nvmeof_common::FieldLoc;
use nvmeof_ebpf::helpers::{count_key, read_field};

/// Written by the agent before load (`EbpfLoader::override_global`).
#[no_mangle]
static AEN_LAYOUT: AenLayout = AenLayout {
    ctrl_id: FieldLoc::new(0, 0),
    result: FieldLoc::new(0, 0),
    valid: 0,
};

#[map]
static AEN_EVENTS: HashMap<AenKey, u64> = HashMap::with_max_entries(AEN_CAPACITY, 0);

#[tracepoint]
pub fn nvme_async_event(ctx: TracePointContext) -> u32 {
    let _ = try_count(&ctx);
    0
}

#[inline(always)]
fn try_count(ctx: &TracePointContext) -> Option<()> {
    // SAFETY: a plain read of a global; volatile so the zeroed initialiser is not folded in.
    let l = unsafe { core::ptr::read_volatile(&AEN_LAYOUT) };
    if l.valid == 0 {
        return None;
    }
    let key = AenKey {
        ctrl_id: read_field(ctx, l.ctrl_id)?.ok()? as u32,
        result: read_field(ctx, l.result)?.ok()? as u32,
    };
    count_key(&AEN_EVENTS, &key);
    Some(())
}

nvmeof_ebpf::gpl_object!();
