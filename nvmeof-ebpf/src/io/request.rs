//! The request-keyed pairs: `nvme_setup_cmd` and `nvme_complete_rq` as tp_btf and raw
//! tracepoints, whose first argument is the `struct request *`. Controller, queue and status are
//! read from the kernel's structs at offsets the agent found in BTF (`REQ_LAYOUT`).
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use nvmeof_common::slow::classic_key;
use nvmeof_common::{ConnErrorKind, OpClass, ProgramCounter, RequestLayout, NVME_STATUS_MASK};
use nvmeof_ebpf::helpers::global;

use crate::host_wait::{host_wait, take_host_wait};
use crate::inflight::{begin, end, inflight};
use crate::slow::{keep_context, slow_trace};
use crate::{conn_error, count, finish, Setup, INFLIGHT_RQ, REQ_LAYOUT};

/// `struct nvme_command` (NVMe base specification, submission queue entry): opcode in byte 0,
/// the command identifier in bytes 2-3, the namespace in 4-7, a read's or write's starting LBA
/// in 40-47 (cdw10-11, low dword first).
const CMD_OPCODE: u64 = 0;
const CMD_CID: u64 = 2;
const CMD_NSID: u64 = 4;
const CMD_SLBA: u64 = 40;

#[inline(always)]
pub(crate) fn req_layout() -> RequestLayout {
    global(&REQ_LAYOUT)
}

/// Reads a `T` at a kernel address; a failed read is counted.
#[inline(always)]
pub(crate) fn kread<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one fails, it cannot fault.
    match unsafe { bpf_probe_read_kernel(addr as *const T) } {
        Ok(v) => Some(v),
        Err(_) => {
            count(ProgramCounter::ReadFailed);
            None
        }
    }
}

#[btf_tracepoint(function = "nvme_setup_cmd")]
pub fn nvme_setup_cmd_btf(ctx: BtfTracePointContext) -> u32 {
    let _ = rq_setup::<true>(ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    0
}

#[raw_tracepoint(tracepoint = "nvme_setup_cmd")]
pub fn nvme_setup_cmd_raw(ctx: RawTracePointContext) -> u32 {
    let _ = rq_setup::<false>(ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    0
}

/// Reads a `T` at `addr` inside a struct the tracepoint's arguments lead to. `BTF`: the program
/// is tp_btf, its arguments are typed pointers and the verifier checks a plain load against the
/// kernel's BTF (a field of that size at that offset; a fault reads zero), so no helper call;
/// otherwise (raw tracepoints) through `bpf_probe_read_kernel`. Only for the struct members BTF
/// types: `struct request`, `request_queue`, `blk_mq_hw_ctx`, `nvme_command`. The blk-mq pdu
/// (`nvme_req`) lies past `struct request` and its `ctrl` is reached through an untyped pointer,
/// so those are always read with `kread`.
#[inline(always)]
pub(crate) fn field<T: Copy, const BTF: bool>(addr: u64) -> Option<T> {
    if BTF {
        // SAFETY: the verifier proves the load against BTF and turns it into a faulting-safe
        // load (a bad address reads zero); addr is a typed argument plus a constant offset.
        Some(unsafe { core::ptr::read_volatile(addr as *const T) })
    } else {
        kread::<T>(addr)
    }
}

/// A request's `struct request_queue *` and NVMe queue id (`nvme_req_qid()`: 0 on the admin
/// queue, which has no queuedata, else the hardware queue number plus one).
#[inline(always)]
pub(crate) fn request_queue<const BTF: bool>(req: u64, l: &RequestLayout) -> Option<(u64, u16)> {
    let q = field::<u64, BTF>(req + l.request_q as u64)?;
    let queuedata = field::<u64, BTF>(q + l.queue_queuedata as u64)?;
    let qid = if queuedata == 0 {
        0
    } else {
        let hctx = field::<u64, BTF>(req + l.request_mq_hctx as u64)?;
        field::<u32, BTF>(hctx + l.hctx_queue_num as u64)? as u16 + 1
    };
    Some((q, qid))
}

/// A request's key in `INFLIGHT_SLOTS`. Raw tracepoints: the request pointer itself, which
/// costs no read. tp_btf: the verifier forbids arithmetic on a typed pointer (the index is a
/// hash of the key), so (request queue id, queue id, tag), three plain loads: a driver tag is
/// unique among its hardware queue's commands in flight, and the queue id among request queues.
#[inline(always)]
pub(crate) fn request_key<const BTF: bool>(
    req: u64,
    q: u64,
    qid: u16,
    l: &RequestLayout,
) -> Option<u64> {
    if !BTF {
        return Some(req);
    }
    let queue = field::<u32, BTF>(q + l.queue_id as u64)?;
    let tag = field::<u32, BTF>(req + l.request_tag as u64)?;
    Some(classic_key(queue, qid, tag as u16))
}

/// `nvme_setup_cmd(struct request *req, struct nvme_command *cmd)`. The arguments are checked
/// for null first: tp_btf arguments may be null for the verifier (6.12 marks every raw tracepoint
/// argument so), which refuses any arithmetic on them before that check (`rq_complete` too).
#[inline(always)]
pub(crate) fn rq_setup<const BTF: bool>(req: u64, cmd: u64) -> Option<()> {
    let l = req_layout();
    if l.valid == 0 || req == 0 || cmd == 0 {
        return None;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    // nvme_req(req) is the blk-mq pdu right after struct request.
    let pdu = req + l.request_size as u64;
    let ctrl = kread::<u64>(pdu + l.nvme_req_ctrl as u64)?;
    let ctrl_id = kread::<u32>(ctrl + l.ctrl_instance as u64)?;
    let (q, qid) = request_queue::<BTF>(req, &l)?;
    let opcode = field::<u8, BTF>(cmd + CMD_OPCODE)?;
    let mut s = Setup {
        ctrl_id,
        qid,
        opcode,
        bytes: 0,
    };
    // The request's byte count (`blk_rq_bytes()`) is the command's: one load where the command's
    // block count needed the namespace's LBA size from a hash map.
    let moves_data = OpClass::classify(qid, opcode).moves_data();
    if moves_data {
        s.bytes = field::<u32, BTF>(req + l.request_data_len as u64)?;
    }
    let value = inflight(&s, now)?;
    let hw = host_wait();
    if hw.on != 0 {
        // A flush or an admin command carries no bio.
        let bio = field::<u64, BTF>(req + hw.request_bio as u64).unwrap_or(0);
        if bio != 0 {
            take_host_wait(bio, ctrl_id, now);
        }
    }
    if slow_trace().threshold_ns != 0 {
        // Two 32-bit loads: on tp_btf the verifier checks a load against the first member of
        // the `nvme_command` union at that offset, the common command's cdw10 (4 bytes), and
        // refuses 8.
        let slba = match moves_data {
            true => {
                let lo = field::<u32, BTF>(cmd + CMD_SLBA).unwrap_or(0);
                let hi = field::<u32, BTF>(cmd + CMD_SLBA + 4).unwrap_or(0);
                u64::from(lo) | u64::from(hi) << 32
            }
            false => 0,
        };
        let nsid = field::<u32, BTF>(cmd + CMD_NSID).unwrap_or(0);
        keep_context(
            req,
            nsid,
            slba,
            field::<u16, BTF>(cmd + CMD_CID).unwrap_or(0),
        );
    }
    begin(
        request_key::<BTF>(req, q, qid, &l),
        &INFLIGHT_RQ,
        &req,
        &value,
    )
}

#[btf_tracepoint(function = "nvme_complete_rq")]
pub fn nvme_complete_rq_btf(ctx: BtfTracePointContext) -> u32 {
    let _ = rq_complete::<true>(ctx.arg::<u64>(0));
    0
}

#[raw_tracepoint(tracepoint = "nvme_complete_rq")]
pub fn nvme_complete_rq_raw(ctx: RawTracePointContext) -> u32 {
    let _ = rq_complete::<false>(ctx.arg::<u64>(0));
    0
}

/// `nvme_complete_rq(struct request *req)`.
#[inline(always)]
pub(crate) fn rq_complete<const BTF: bool>(req: u64) -> Option<()> {
    let l = req_layout();
    if l.valid == 0 || req == 0 {
        return None;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let pdu = req + l.request_size as u64;
    // The raw programs' key is the pointer: the queue is read only for tp_btf's.
    let key = match BTF {
        true => {
            request_queue::<BTF>(req, &l).and_then(|(q, qid)| request_key::<BTF>(req, q, qid, &l))
        }
        false => Some(req),
    };
    let started = match end(key, &INFLIGHT_RQ, &req) {
        Some(v) => v,
        None => {
            count(ProgramCounter::CompletionUnmatched);
            // A failed command whose setup was not seen still counts, by its status alone (as
            // the classic path does): its controller is read from the request.
            let status = kread::<u16>(pdu + l.nvme_req_status as u64)? & NVME_STATUS_MASK;
            if status != 0 {
                let ctrl = kread::<u64>(pdu + l.nvme_req_ctrl as u64)?;
                let ctrl_id = kread::<u32>(ctrl + l.ctrl_instance as u64)?;
                conn_error(ctrl_id, ConnErrorKind::of_status(status));
            }
            return None;
        }
    };
    let status = kread::<u16>(pdu + l.nvme_req_status as u64)? & NVME_STATUS_MASK;
    finish(&started, status, now, req)
}
