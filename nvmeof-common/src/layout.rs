//! Where the programs find each field in the `nvme:nvme_setup_cmd` and `nvme:nvme_complete_rq`
//! records. The agent reads the offsets from the tracepoints' `format` files at start and writes
//! them into the `LAYOUT` global before loading, so no offset is compiled in.

use bytemuck::{Pod, Zeroable};

/// One field of a tracepoint record: its byte offset and size. A size of 0 marks a field the
/// kernel does not have; the programs then skip what depends on it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
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

impl TracepointLayout {
    /// What an object's `LAYOUT` global holds until the loader writes it.
    pub const UNSET: TracepointLayout = TracepointLayout {
        setup_ctrl_id: FieldLoc::new(0, 0),
        setup_qid: FieldLoc::new(0, 0),
        setup_opcode: FieldLoc::new(0, 0),
        setup_cid: FieldLoc::new(0, 0),
        setup_nsid: FieldLoc::new(0, 0),
        setup_cdw10: FieldLoc::new(0, 0),
        complete_ctrl_id: FieldLoc::new(0, 0),
        complete_qid: FieldLoc::new(0, 0),
        complete_cid: FieldLoc::new(0, 0),
        complete_status: FieldLoc::new(0, 0),
        valid: 0,
    };
}

/// Where the request-keyed programs (tp_btf and raw tracepoints, whose first argument is the
/// `struct request *`) find what they read in kernel structs. The agent reads every offset from
/// the kernel's BTF at start (`struct request`, `request_queue`, `blk_mq_hw_ctx` from vmlinux,
/// `struct nvme_request` and `nvme_ctrl` from nvme_core's split BTF) and writes them into the
/// `REQ_LAYOUT` global before loading. The command itself (`struct nvme_command`) is the NVMe wire
/// format, so its offsets are the specification's and compiled in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RequestLayout {
    /// `sizeof(struct request)`: `nvme_req(req)` is the blk-mq pdu right after it.
    pub request_size: u32,
    /// `struct request`: `q` (`struct request_queue *`).
    pub request_q: u32,
    /// `struct request`: `mq_hctx` (`struct blk_mq_hw_ctx *`).
    pub request_mq_hctx: u32,
    /// `struct request`: `__data_len` (u32, `blk_rq_bytes()`): a read's or write's bytes.
    pub request_data_len: u32,
    /// `struct request`: `tag` (int): the blk-mq driver tag, unique among a hardware queue's
    /// commands in flight.
    pub request_tag: u32,
    /// `struct request_queue`: `queuedata` (NULL on the admin queue: `nvme_req_qid` is then 0).
    pub queue_queuedata: u32,
    /// `struct request_queue`: `id` (int, unique among the node's request queues): with the
    /// queue id and the tag, the in-flight key of the tp_btf programs.
    pub queue_id: u32,
    /// `struct blk_mq_hw_ctx`: `queue_num` (u32; the NVMe queue id is it plus one).
    pub hctx_queue_num: u32,
    /// `struct nvme_request`: `ctrl` (`struct nvme_ctrl *`).
    pub nvme_req_ctrl: u32,
    /// `struct nvme_request`: `status` (u16).
    pub nvme_req_status: u32,
    /// `struct nvme_ctrl`: `instance` (int: the N of `/dev/nvmeN`).
    pub ctrl_instance: u32,
    /// Non-zero once filled; an unset layout makes the programs return at once.
    pub valid: u32,
}

impl RequestLayout {
    /// What an object's `REQ_LAYOUT` global holds until the loader writes it.
    pub const UNSET: RequestLayout = RequestLayout {
        request_size: 0,
        request_q: 0,
        request_mq_hctx: 0,
        request_data_len: 0,
        request_tag: 0,
        queue_queuedata: 0,
        queue_id: 0,
        hctx_queue_num: 0,
        nvme_req_ctrl: 0,
        nvme_req_status: 0,
        ctrl_instance: 0,
        valid: 0,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_layouts_are_the_defaults() {
        assert_eq!(TracepointLayout::UNSET, TracepointLayout::default());
        assert_eq!(RequestLayout::UNSET, RequestLayout::default());
    }
}
