//! What the I/O tracer's request-keyed programs need from the kernel's BTF (as `state::ctrl_btf`
//! and `aen::ns_btf` for theirs): the offsets that walk `struct request` and `struct
//! nvme_request`, nvme_core's tracepoint typedef ids when it is a module, and host wait's
//! offsets, read with the general reader in [`crate::bpf::btf`], each member checked for the
//! width the programs read.
use std::path::Path;

use anyhow::bail;
use nvmeof_common::host_wait::{HostWait, BLOCK_BIO_QUEUE};
use nvmeof_common::RequestLayout;

use crate::bpf::btf::Btf;

/// What the request-keyed programs need from BTF.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestBtf {
    pub layout: RequestLayout,
    /// The BTF ids of `btf_trace_nvme_setup_cmd` and `btf_trace_nvme_complete_rq` in
    /// nvme_core's split BTF, when nvme_core is a module whose BTF has them: the tp_btf targets
    /// there (`bpf::module_tp`).
    pub module_tracepoints: Option<[u32; 2]>,
    /// What host wait needs (`request.bio`, the bio's argument of `block_bio_queue`); `None`
    /// when vmlinux's BTF lacks either.
    pub host_wait: Option<HostWait>,
}

/// Host wait's offsets from vmlinux's BTF.
pub fn host_wait_from(vmlinux: &Btf) -> anyhow::Result<HostWait> {
    let args = vmlinux.tracepoint_args(BLOCK_BIO_QUEUE)?;
    Ok(HostWait {
        on: 1,
        request_bio: vmlinux.member_offset("request", "bio", 8)?,
        // `(struct bio *)` since 5.11, `(struct request_queue *, struct bio *)` before.
        bio_arg: match args {
            1 => 0,
            2 => 1,
            n => bail!("{BLOCK_BIO_QUEUE} has {n} arguments, not 1 or 2"),
        },
        _pad: 0,
    })
}

/// Reads the offsets the request-keyed programs need from `dir/vmlinux` and `dir/nvme_core`
/// (where nvme_core is built in, its structs are in vmlinux and the module file is absent).
pub fn request_layout(dir: &Path) -> anyhow::Result<RequestBtf> {
    let base = Btf::read(&dir.join("vmlinux"), None)?;
    let host_wait = host_wait_from(&base)
        .map_err(|e| log::debug!("host wait: {e:#}"))
        .ok();
    let module = dir.join("nvme_core");
    let (btf, module_tracepoints) = if module.exists() {
        let btf = Btf::read(&module, Some(base))?;
        let id = |tp: &str| btf.own_typedef_id(&format!("btf_trace_{tp}"));
        let ids = id("nvme_setup_cmd").zip(id("nvme_complete_rq"));
        (btf, ids.map(|(setup, complete)| [setup, complete]))
    } else {
        (base, None)
    };
    Ok(RequestBtf {
        layout: layout_from(&btf)?,
        module_tracepoints,
        host_wait,
    })
}

/// The layout from one BTF view, each member checked for the size the programs read.
pub fn layout_from(btf: &Btf) -> anyhow::Result<RequestLayout> {
    let sized = |s: &str, m: &str, size: u32| btf.member_offset(s, m, size);
    Ok(RequestLayout {
        request_size: btf.struct_size("request")?,
        request_q: sized("request", "q", 8)?,
        request_mq_hctx: sized("request", "mq_hctx", 8)?,
        request_data_len: sized("request", "__data_len", 4)?,
        request_tag: sized("request", "tag", 4)?,
        queue_queuedata: sized("request_queue", "queuedata", 8)?,
        queue_id: sized("request_queue", "id", 4)?,
        hctx_queue_num: sized("blk_mq_hw_ctx", "queue_num", 4)?,
        nvme_req_ctrl: sized("nvme_request", "ctrl", 8)?,
        nvme_req_status: sized("nvme_request", "status", 2)?,
        ctrl_instance: sized("nvme_ctrl", "instance", 4)?,
        valid: 1,
    })
}
