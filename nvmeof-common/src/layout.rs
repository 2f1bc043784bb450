//! Where the programs find each field in the `nvme:nvme_setup_cmd` and `nvme:nvme_complete_rq`
//! records. The agent reads the offsets from the tracepoints' `format` files at start and writes
//! them into the `LAYOUT` global before loading, so no offset is compiled in.

/// One field of a tracepoint record: its byte offset and size. A size of 0 marks a field the
/// kernel does not have; the programs then skip what depends on it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldLoc {
    pub offset: u16,
    pub size: u16,
}

impl FieldLoc {
    pub const fn new(offset: u16, size: u16) -> Self {
        FieldLoc { offset, size }
    }

    pub const fn is_present(&self) -> bool {
        self.size != 0
    }
}

/// The fields the programs read. Sizes are those of the `format` file; the programs read 1, 2, 4
/// or 8 bytes accordingly (`cdw10` is an array whose dwords 10..15 are read at fixed offsets
/// inside it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointLayout {
    pub setup_ctrl_id: FieldLoc,
    pub setup_qid: FieldLoc,
    pub setup_opcode: FieldLoc,
    pub setup_cid: FieldLoc,
    pub setup_nsid: FieldLoc,
    pub setup_cdw10: FieldLoc,
    pub complete_ctrl_id: FieldLoc,
    pub complete_qid: FieldLoc,
    pub complete_cid: FieldLoc,
    pub complete_status: FieldLoc,
    /// Non-zero once the agent has filled the layout; an unset layout makes the programs return
    /// at once.
    pub valid: u32,
}
