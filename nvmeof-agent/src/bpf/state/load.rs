//! Loading the state object (`nvmeof-state`): `struct nvme_ctrl`'s offsets from BTF in its
//! `CTRL_LAYOUT` global, then its kprobes, each required or of use without it.
use anyhow::Context as _;
use aya::{programs::KProbe, Ebpf};
use nvmeof_common::count_maps::CountMap;
use nvmeof_common::state::{self, programs as p};
use nvmeof_common::CtrlLayout;

use crate::bpf::count_maps;
use crate::bpf::loader::{object_loader, program};

/// Every program of the state object with the kernel function it probes, and whether the
/// object is of use without it.
pub const STATE_PROGRAMS: [(&str, &str, bool); 7] = [
    (p::CHANGE_CTRL_STATE, state::FN_CHANGE_CTRL_STATE, true),
    (p::CHANGE_CTRL_STATE_RET, state::FN_CHANGE_CTRL_STATE, true),
    // In nvme_fabrics, absent on a PCIe-only host: attempts are then seen at state changes only.
    (p::SHOULD_RECONNECT, state::FN_SHOULD_RECONNECT, false),
    // In nvme_fabrics too: failed connects are then not counted.
    (p::CONNECT_ADMIN, state::FN_CONNECT_ADMIN_QUEUE, false),
    (p::CONNECT_ADMIN_RET, state::FN_CONNECT_ADMIN_QUEUE, false),
    (p::CONNECT_IO, state::FN_CONNECT_IO_QUEUE, false),
    (p::CONNECT_IO_RET, state::FN_CONNECT_IO_QUEUE, false),
];

/// Loads the state object with `layout` and attaches its kprobes. A failure on a required
/// program fails the whole; an optional one is logged and left out of `attached`.
pub fn load_state(
    object: &[u8],
    layout: &CtrlLayout,
    count_map_entries: u32,
) -> anyhow::Result<LoadedState> {
    let mut loader = object_loader(object)?;
    loader.override_global(state::CTRL_LAYOUT_GLOBAL, layout, true);
    count_maps::size(&mut loader, &CountMap::STATE, count_map_entries);
    let mut ebpf = loader
        .load(object)
        .context("loading the state eBPF object")?;
    let mut attached = Vec::new();
    for (name, function, required) in STATE_PROGRAMS {
        let prog: &mut KProbe = program(&mut ebpf, name)?;
        let r = prog
            .load()
            .with_context(|| format!("verifying {name}"))
            .and_then(|()| {
                prog.attach(function, 0)
                    .with_context(|| format!("attaching {name} to {function}"))
            });
        match r {
            Ok(_) => attached.push(name),
            Err(e) if !required => log::info!("state: {name} left out: {e:#}"),
            Err(e) => return Err(e),
        }
    }
    Ok(LoadedState { ebpf, attached })
}

/// The state object, loaded, with the programs that attached.
pub struct LoadedState {
    pub ebpf: Ebpf,
    pub attached: Vec<&'static str>,
}
