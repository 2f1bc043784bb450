//! Types of the asynchronous event program (`nvmeof-ebpf`'s `nvmeof-aen` object): a classic
//! tracepoint on `nvme:nvme_async_event`, which the kernel fires once for every Asynchronous
//! Event Request that completes successfully (the event the controller reported).
//!
//! The record's layout is not compiled in: the agent reads the offsets of `ctrl_id` and `result`
//! from the tracepoint's `format` file and writes them into the [`AenLayout`] global before load.
//! The program counts raw `result` values per controller; the agent turns them into the event's
//! type and information labels ([`AenKey`]).
use crate::FieldLoc;

/// Names of the maps in the AEN object.
pub mod maps {
    /// Events by (controller instance, raw result): [`crate::aen::AenKey`] → `u64`.
    pub const AEN_EVENTS: &str = "AEN_EVENTS";
}

/// Names of the programs in the AEN object.
pub mod programs {
    /// Classic tracepoint `nvme:nvme_async_event`.
    pub const NVME_ASYNC_EVENT: &str = "nvme_async_event";
}

/// Name of the global that carries [`AenLayout`].
pub const AEN_LAYOUT_GLOBAL: &str = "AEN_LAYOUT";

/// Capacity of `AEN_EVENTS`: a controller sees a handful of distinct results (type, information
/// and log page), so 4096 keys hold hundreds of controllers. Past it a new key is not counted.
pub const AEN_CAPACITY: u32 = 4096;

/// Where the program finds its two fields in the record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AenLayout {
    pub ctrl_id: FieldLoc,
    pub result: FieldLoc,
    /// 0 until the agent has written the layout: the program then does nothing.
    pub valid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AenKey {
    /// The `nvmeN` instance.
    pub ctrl_id: u32,
    /// The record's `result`: completion dword 0 of the Asynchronous Event Request (event type
    /// in bits 2:0, information in 15:8, log page in 23:16).
    pub result: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<AenLayout>(), 12);
        assert_eq!(core::mem::size_of::<AenKey>(), 8);
    }
}
