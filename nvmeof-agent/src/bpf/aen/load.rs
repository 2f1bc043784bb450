//! Loading the AEN object (`nvmeof-aen`): its record layout from tracefs in `AEN_LAYOUT`, the
//! tracepoint program, and the ANA kprobe where BTF gave its offsets.
use anyhow::Context as _;
use aya::programs::{KProbe, TracePoint};
use aya::Ebpf;
use nvmeof_common::aen;
use nvmeof_common::count_maps::CountMap;

use crate::bpf::count_maps;
use crate::bpf::loader::{explain, object_loader, program};

/// Loads the AEN object with the record layout from the tracepoint's `format` file and attaches
/// its tracepoint program to `nvme:nvme_async_event` (a classic tracepoint: its record is all it
/// needs, so it runs without BTF, on 5.10 too). With `ana` (struct offsets from BTF) the kprobe on
/// `nvme_update_ns_ana_state` is attached too; its failure is logged and leaves
/// [`LoadedAen::ana`] false (the agent then samples sysfs), the tracepoint's fails the whole.
pub fn load_aen(
    object: &[u8],
    layout: &aen::AenLayout,
    ana: Option<&aen::AnaLayout>,
    count_map_entries: u32,
) -> anyhow::Result<LoadedAen> {
    let ana_layout = ana.copied().unwrap_or_default();
    let mut loader = object_loader(object)?;
    loader
        .override_global(aen::AEN_LAYOUT_GLOBAL, layout, true)
        .override_global(aen::ANA_LAYOUT_GLOBAL, &ana_layout, true);
    count_maps::size(&mut loader, &CountMap::AEN, count_map_entries);
    let mut ebpf = loader.load(object).context("loading the AEN eBPF object")?;
    let name = aen::programs::NVME_ASYNC_EVENT;
    let prog: &mut TracePoint = program(&mut ebpf, name)?;
    prog.load().with_context(|| format!("verifying {name}"))?;
    prog.attach("nvme", name)
        .with_context(|| format!("attaching {name} to nvme:{name}"))?;
    let ana = ana.is_some() && {
        let (name, function) = (
            aen::programs::UPDATE_NS_ANA_STATE,
            aen::FN_UPDATE_NS_ANA_STATE,
        );
        let r = program::<KProbe>(&mut ebpf, name).and_then(|p| {
            p.load().with_context(|| format!("verifying {name}"))?;
            p.attach(function, 0)
                .with_context(|| format!("attaching {name} to {function}"))
        });
        r.map_err(|e| log::info!("ANA: {name} left out: {}", explain(&e)))
            .is_ok()
    };
    Ok(LoadedAen { ebpf, ana })
}

/// The loaded AEN object.
pub struct LoadedAen {
    pub ebpf: Ebpf,
    /// The ANA kprobe is attached.
    pub ana: bool,
}
