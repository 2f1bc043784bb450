//! Types of the asynchronous event and ANA programs (`nvmeof-ebpf`'s `nvmeof-aen` object): a
//! classic tracepoint on `nvme:nvme_async_event`, which the kernel fires once for every
//! Asynchronous Event Request that completes successfully (the event the controller reported),
//! and a kprobe on `nvme_update_ns_ana_state(desc, ns)`, where the kernel sets a path's ANA state
//! from the ANA log.
//!
//! The record's layout is not compiled in: the agent reads the offsets of `ctrl_id` and `result`
//! from the tracepoint's `format` file and writes them into the [`AenLayout`] global before load.
//! The program counts raw `result` values per controller; the agent turns them into the event's
//! type and information labels ([`AenKey`]). The kprobe reads the kernel's structs at offsets
//! the agent found in BTF ([`AnaLayout`]), as the state programs do.

use crate::FieldLoc;
use bytemuck::{Pod, Zeroable};

/// Names of the maps in the AEN object.
pub mod maps {
    object_names! {
        /// Events by (controller instance, raw result): [`crate::aen::AenKey`] → `u64`.
        AEN_EVENTS,
        /// ANA state changes by path and (from, to): [`crate::aen::AnaKey`] → `u64`.
        ANA_TRANSITIONS,
    }
}

/// Names of the programs in the AEN object.
pub mod programs {
    object_names! {
        /// Classic tracepoint `nvme:nvme_async_event`.
        NVME_ASYNC_EVENT: nvme_async_event,
        /// kprobe on [`super::FN_UPDATE_NS_ANA_STATE`].
        UPDATE_NS_ANA_STATE: update_ns_ana_state,
    }
}

/// The kernel function that sets a path's ANA state (`drivers/nvme/host/multipath.c`): called
/// for every namespace of every group descriptor of each ANA log read, and when a path is added.
pub const FN_UPDATE_NS_ANA_STATE: &str = "nvme_update_ns_ana_state";

/// Name of the global that carries [`AnaLayout`].
pub const ANA_LAYOUT_GLOBAL: &str = "ANA_LAYOUT";

/// Capacity of `ANA_TRANSITIONS`: 20 (from, to) pairs of the five states for 200 paths.
pub const ANA_CAPACITY: u32 = 4096;

/// Name of the global that carries [`AenLayout`].
pub const AEN_LAYOUT_GLOBAL: &str = "AEN_LAYOUT";

/// Capacity of `AEN_EVENTS`: a controller sees a handful of distinct results (type, information
/// and log page), so 4096 keys hold hundreds of controllers. Past it a new key is not counted.
pub const AEN_CAPACITY: u32 = 4096;

/// Where the program finds its two fields in the record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AenLayout {
    pub ctrl_id: FieldLoc,
    pub result: FieldLoc,
    /// 0 until the agent has written the layout: the program then does nothing.
    pub valid: u32,
}

/// Byte offsets the kprobe reads, from BTF: `desc->state` (u8), `ns->ana_state` (a 4-byte enum),
/// `ns->ctrl`, `ns->head`, `ctrl->subsys` (pointers), and the `instance` (int) of controller,
/// namespace head and subsystem, which name the path disk `nvme<subsys>c<ctrl>n<head>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AnaLayout {
    pub desc_state: u32,
    pub ns_ana_state: u32,
    pub ns_ctrl: u32,
    pub ns_head: u32,
    pub ctrl_instance: u32,
    pub ctrl_subsys: u32,
    pub head_instance: u32,
    pub subsys_instance: u32,
    /// 0 until the agent has written the layout: the program then does nothing.
    pub valid: u32,
}

/// One path's change from one ANA state to another (the NVMe values: 01h optimized ... 0Fh
/// change; `from` 0 never appears: a path's first state is no transition).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Pod, Zeroable)]
pub struct AnaKey {
    pub ctrl_instance: u32,
    pub subsys_instance: u32,
    pub head_instance: u32,
    pub from: u8,
    pub to: u8,
    pub _pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Pod, Zeroable)]
pub struct AenKey {
    /// The `nvmeN` instance.
    pub ctrl_id: u32,
    /// The record's `result`: completion dword 0 of the Asynchronous Event Request (event type
    /// in bits 2:0, information in 15:8, log page in 23:16).
    pub result: u32,
}
