//! The classic pair: `nvme:nvme_setup_cmd` and `nvme:nvme_complete_rq` as tracepoints, reading
//! their records at the offsets the agent parsed from the `format` files (`LAYOUT`) and keying a
//! command by (controller, queue, command id & 0xfff). Every kernel's fallback.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use nvmeof_common::slow::classic_key;
use nvmeof_common::{
    ConnErrorKind, FieldLoc, InflightKey, NamespaceKey, OpClass, ProgramCounter, TracepointLayout,
    NVME_STATUS_MASK, TAG_MASK,
};
use nvmeof_ebpf::helpers::global;

use crate::inflight::{begin, end, inflight};
use crate::slow::{keep_context, slow_trace};
use crate::{conn_error, count, finish, Setup, INFLIGHT, LAYOUT, NAMESPACES};

/// `dwords 10..15` start at cdw10; cdw12 holds the 0-based number of logical blocks in 0..16.
const CDW12_OFFSET_IN_CDW10: u16 = 8;
const DEFAULT_LBA_SHIFT: u32 = 9;

/// The records' layout, `None` until the agent has filled it: the programs then return at once.
#[inline(always)]
fn layout() -> Option<TracepointLayout> {
    let l = global(&LAYOUT);
    (l.valid != 0).then_some(l)
}

/// Reads a record field (see [`nvmeof_ebpf::helpers::read_field`]); a failed read is counted.
#[inline(always)]
pub(crate) fn read_field(ctx: &TracePointContext, loc: FieldLoc) -> Option<u64> {
    match nvmeof_ebpf::helpers::read_field(ctx, loc) {
        Some(Ok(v)) => Some(v),
        Some(Err(())) => {
            count(ProgramCounter::ReadFailed);
            None
        }
        None => None,
    }
}

/// A read's or write's bytes from its command, for the classic pair, which sees no request:
/// cdw12's 0-based block count times the namespace's LBA size, which the agent writes into
/// `NAMESPACES` from sysfs (512-byte blocks, counted, until it has).
#[inline(always)]
pub(crate) fn command_bytes(ctrl_id: u32, nsid: u32, cdw12: u32) -> u32 {
    let blocks = (cdw12 & 0xffff) + 1;
    let key = NamespaceKey { ctrl_id, nsid };
    // SAFETY: a map value read, copied at once.
    let shift = match unsafe { NAMESPACES.get(key) } {
        Some(v) => *v,
        None => {
            count(ProgramCounter::LbaSizeUnknown);
            DEFAULT_LBA_SHIFT
        }
    };
    blocks << (shift & 31)
}

#[tracepoint]
pub fn nvme_setup_cmd(ctx: TracePointContext) -> u32 {
    let _ = try_setup(&ctx);
    0
}

#[inline(always)]
pub(crate) fn try_setup(ctx: &TracePointContext) -> Option<()> {
    let l = layout()?;
    let now = unsafe { bpf_ktime_get_ns() };
    let ctrl_id = read_field(ctx, l.setup_ctrl_id)? as u32;
    let qid = read_field(ctx, l.setup_qid)? as u16;
    let opcode = read_field(ctx, l.setup_opcode)? as u8;
    let cid = read_field(ctx, l.setup_cid)? as u16;
    let mut s = Setup {
        ctrl_id,
        qid,
        opcode,
        bytes: 0,
    };
    if OpClass::classify(qid, opcode).moves_data() && l.setup_cdw10.is_present() {
        let nsid = read_field(ctx, l.setup_nsid)? as u32;
        let cdw12 = FieldLoc::new(l.setup_cdw10.offset + CDW12_OFFSET_IN_CDW10, 4);
        s.bytes = command_bytes(ctrl_id, nsid, read_field(ctx, cdw12)? as u32);
    }
    let key = InflightKey {
        ctrl_id,
        qid,
        tag: cid & TAG_MASK,
    };
    let value = inflight(&s, now)?;
    if slow_trace().threshold_ns != 0 {
        let nsid = read_field(ctx, l.setup_nsid).unwrap_or(0) as u32;
        // cdw10 and cdw11, little-endian: the starting LBA.
        let slba = if s.bytes != 0 {
            read_field(ctx, FieldLoc::new(l.setup_cdw10.offset, 8)).unwrap_or(0)
        } else {
            0
        };
        keep_context(classic_key(ctrl_id, qid, key.tag), nsid, slba, cid);
    }
    begin(None, &INFLIGHT, &key, &value)
}

#[tracepoint]
pub fn nvme_complete_rq(ctx: TracePointContext) -> u32 {
    let _ = try_complete(&ctx);
    0
}

#[inline(always)]
pub(crate) fn try_complete(ctx: &TracePointContext) -> Option<()> {
    let l = layout()?;
    let now = unsafe { bpf_ktime_get_ns() };
    let ctrl_id = read_field(ctx, l.complete_ctrl_id)? as u32;
    let qid = read_field(ctx, l.complete_qid)? as u16;
    let cid = read_field(ctx, l.complete_cid)? as u16;
    let status = read_field(ctx, l.complete_status)? as u16 & NVME_STATUS_MASK;
    let key = InflightKey {
        ctrl_id,
        qid,
        tag: cid & TAG_MASK,
    };
    let started = match end(None, &INFLIGHT, &key) {
        Some(v) => v,
        None => {
            count(ProgramCounter::CompletionUnmatched);
            if status != 0 {
                conn_error(ctrl_id, ConnErrorKind::of_status(status));
            }
            return None;
        }
    };
    finish(&started, status, now, classic_key(ctrl_id, qid, key.tag))
}
