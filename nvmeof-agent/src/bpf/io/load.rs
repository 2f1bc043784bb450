//! Loading the I/O object (`nvmeof`) and attaching its pair of programs. The object gets the
//! layout parsed from tracefs in its `LAYOUT` global and the struct offsets read from BTF in
//! `REQ_LAYOUT`, and its maps the sizes computed for the node ([`MapSizes`]).
//!
//! The attach mode is chosen here, once, in this order: tp_btf, raw tracepoints (both key a
//! command by its `struct request *`), classic tracepoints (keyed by the recorded command id,
//! which nvme-tcp overwrites for writes larger than its inline data: see `docs/metrics.md`).
use std::os::fd::{AsFd as _, AsRawFd as _};

use anyhow::{bail, Context as _};
use aya::{
    programs::{BtfTracePoint, RawTracePoint, TracePoint},
    Btf, Ebpf,
};
use nvmeof_common::count_maps::CountMap;
use nvmeof_common::host_wait::{self, HostWait, HOST_WAIT_GLOBAL};
use nvmeof_common::slow::{self, SlowTrace, SLOW_TRACE_GLOBAL};
use nvmeof_common::{
    maps, programs, ErrorTimeouts, RequestLayout, SlotLayout, TracepointLayout,
    ERROR_TIMEOUTS_GLOBAL, LAYOUT_GLOBAL, REQ_LAYOUT_GLOBAL, SLOT_LAYOUT_GLOBAL,
};

use crate::bpf::loader::{explain, object_loader, program, run_stats, ProgramRun};
use crate::bpf::{btf, count_maps, module_tp};

/// The classic tracepoint programs with their tracepoint (category `nvme`).
pub const PROGRAMS: [&str; 2] = [programs::NVME_SETUP_CMD, programs::NVME_COMPLETE_RQ];
/// The tp_btf programs, in the same order.
pub const BTF_PROGRAMS: [&str; 2] = [programs::NVME_SETUP_CMD_BTF, programs::NVME_COMPLETE_RQ_BTF];
/// The raw tracepoint programs, in the same order.
pub const RAW_PROGRAMS: [&str; 2] = [programs::NVME_SETUP_CMD_RAW, programs::NVME_COMPLETE_RQ_RAW];

/// How the programs are hooked, in the order they are tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// BTF-enabled tracepoints, keyed by the request pointer: by aya where nvme_core is built
    /// in, by `module_tp` where it is a module with BTF (aya 0.14 finds targets in vmlinux only).
    TpBtf,
    /// Raw tracepoints, keyed by the request pointer.
    RawTracepoint,
    /// Classic tracepoints, keyed by (controller, queue, command id): misses nvme-tcp writes
    /// larger than the inline data size.
    Tracepoint,
}

impl AttachMode {
    pub const ALL: [AttachMode; 3] = [
        AttachMode::TpBtf,
        AttachMode::RawTracepoint,
        AttachMode::Tracepoint,
    ];

    /// The `mode` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::TpBtf => "tp_btf",
            AttachMode::RawTracepoint => "raw_tracepoint",
            AttachMode::Tracepoint => "tracepoint",
        }
    }

    /// The two programs (setup, completion) of this mode.
    pub fn programs(self) -> [&'static str; 2] {
        match self {
            AttachMode::TpBtf => BTF_PROGRAMS,
            AttachMode::RawTracepoint => RAW_PROGRAMS,
            AttachMode::Tracepoint => PROGRAMS,
        }
    }
}

/// The hook of each program of a pair: the tracepoint's own name.
const HOOKS: [&str; 2] = [programs::NVME_SETUP_CMD, programs::NVME_COMPLETE_RQ];

/// Optional map capacities, for nodes with more controllers or queues than the defaults cover.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapSizes {
    /// `INFLIGHT_SLOTS`, the in-flight array (rounded up to a power of two); `None` is
    /// [`nvmeof_common::INFLIGHT_CAPACITY`]. The LRU maps its collisions go to keep theirs.
    pub inflight: Option<u32>,
    /// The bounds of `QUEUES` and `OPS`; `None` is [`DEFAULT_SLOTS`].
    pub slots: Option<SlotLayout>,
    /// Slow-command tracing's maps; `None` (tracing off) leaves them at one entry and one page.
    pub slow: Option<SlowSizes>,
    /// `--ebpf.count-map-entries`: the entries of `STATUSES` and `CONN_ERRORS`; 0 keeps the
    /// object's.
    pub count_map_entries: u32,
    /// Host wait on: the entries of `BIO_QUEUED` (bios submitted and not yet set up, of every
    /// block device); `HOST_WAIT_STATS` gets a slot per controller of the arrays.
    pub host_wait: Option<u32>,
}

/// The sizes of slow-command tracing's maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlowSizes {
    /// `SLOW_CONTEXT`: the in-flight map's size (it holds what a setup keeps for each command).
    pub context: u32,
    /// `SLOW_EVENTS`: bytes, a power of two times the page size.
    pub ring_bytes: u32,
}

/// The arrays' bounds where no sizing was done (tests, benchmarks): 16 controllers of up to 8
/// I/O queues.
pub const DEFAULT_SLOTS: SlotLayout = SlotLayout::new(16, 9);

impl MapSizes {
    /// The arrays' bounds, `INFLIGHT_SLOTS`' included.
    pub fn slots(&self) -> SlotLayout {
        let slots = self.slots.unwrap_or(DEFAULT_SLOTS);
        match self.inflight {
            Some(n) => slots.with_inflight_slots(n),
            None => slots,
        }
    }
}

/// The loaded object; dropping it detaches the programs and frees the maps.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub attached: Vec<&'static str>,
    pub mode: AttachMode,
    /// The tp_btf programs on nvme_core as a module, which aya does not hold.
    pub module_programs: Vec<module_tp::ModuleProgram>,
    /// The bounds the arrays were created with.
    pub slots: SlotLayout,
    /// As loaded ([`MapSizes::count_map_entries`]), for the log of a full map.
    pub count_map_entries: u32,
}

impl Loaded {
    /// The object's maps, opened with `sizes` and no program attached (benchmarks, tests).
    pub fn detached(ebpf: Ebpf, mode: AttachMode, sizes: MapSizes) -> Loaded {
        Loaded {
            ebpf,
            attached: vec![],
            mode,
            module_programs: vec![],
            slots: sizes.slots(),
            count_map_entries: sizes.count_map_entries,
        }
    }

    /// `bpf_prog_info`'s run time (ns) and run count of attached program `name`.
    pub fn run_stats(&self, name: &str) -> Option<(u64, u64)> {
        if let Some(p) = self.module_programs.iter().find(|p| p.name == name) {
            return p.run_stats().ok();
        }
        run_stats(&self.ebpf, name).ok()
    }

    /// `bpf_prog_info`'s `recursion_misses` of attached program `name`: the runs the kernel
    /// skipped because the program was already running on that CPU (Linux 5.12; counted
    /// whatever `kernel.bpf_stats_enabled`), each an event the program did not see.
    pub fn misses(&self, name: &str) -> Option<u64> {
        if let Some(p) = self.module_programs.iter().find(|p| p.name == name) {
            return p.misses().ok();
        }
        let fd = self.ebpf.program(name)?.fd().ok()?;
        module_tp::prog_info(fd.as_fd().as_raw_fd())
            .ok()
            .map(|i| i.recursion_misses)
    }

    /// The run statistics of every attached program whose `bpf_prog_info` could be read.
    pub fn program_runs(&self) -> Vec<ProgramRun> {
        self.attached
            .iter()
            .filter_map(|name| {
                let (run_time_ns, run_count) = self.run_stats(name)?;
                Some(ProgramRun {
                    name,
                    run_time_ns,
                    run_count,
                    misses: self.misses(name).unwrap_or(0),
                })
            })
            .collect()
    }
}

/// What the programs read their fields with; a mode whose layout is missing is skipped.
#[derive(Clone, Debug, Default)]
pub struct Layouts {
    /// From the tracepoints' `format` files: the classic programs.
    pub tracepoint: Option<TracepointLayout>,
    /// From BTF: the request-keyed programs.
    pub request: Option<RequestLayout>,
    /// nvme_core's tracepoint typedef ids, when it is a module with BTF: the tp_btf targets.
    pub module_tracepoints: Option<[u32; 2]>,
    /// nvme_core's I/O and admin timeouts: completions later than these count as timeouts.
    pub timeouts: ErrorTimeouts,
    /// Slow-command tracing's threshold and rate ([`SlowTrace::OFF`] by default).
    pub slow: SlowTrace,
    /// Host wait's offsets ([`HostWait::OFF`] by default: off).
    pub host_wait: HostWait,
}

/// Loads `object` with `layouts` into the kernel: maps created, nothing verified or attached
/// yet. A missing layout leaves its global zeroed, which makes its programs return at once.
pub fn open(object: &[u8], layouts: &Layouts, sizes: MapSizes) -> anyhow::Result<Ebpf> {
    let mut loader = object_loader(object)?;
    let tracepoint = layouts.tracepoint.unwrap_or_default();
    let request = layouts.request.unwrap_or_default();
    loader.override_global(LAYOUT_GLOBAL, &tracepoint, true);
    loader.override_global(REQ_LAYOUT_GLOBAL, &request, true);
    loader.override_global(ERROR_TIMEOUTS_GLOBAL, &layouts.timeouts, true);
    loader.override_global(SLOW_TRACE_GLOBAL, &layouts.slow, true);
    loader.override_global(HOST_WAIT_GLOBAL, &layouts.host_wait, true);
    if let Some(slow) = sizes.slow {
        loader.map_max_entries(slow::maps::SLOW_CONTEXT, slow.context);
        loader.map_max_entries(slow::maps::SLOW_EVENTS, slow.ring_bytes);
    }
    count_maps::size(&mut loader, &CountMap::IO, sizes.count_map_entries);
    let slots = sizes.slots();
    if let Some(n) = sizes.host_wait {
        loader.map_max_entries(host_wait::maps::BIO_QUEUED, n);
        loader.map_max_entries(host_wait::maps::HOST_WAIT_STATS, slots.controllers.max(1));
    }
    loader.override_global(SLOT_LAYOUT_GLOBAL, &slots, true);
    loader.map_max_entries(maps::OPS, slots.stats_slots().max(1));
    loader.map_max_entries(maps::QUEUES, slots.queue_slots().max(1));
    loader.map_max_entries(maps::INFLIGHT_SLOTS, slots.inflight_slots());
    loader.load(object).context("loading the eBPF object")
}

/// Loads `object`, then verifies and attaches the programs of the first mode that works (see
/// the module documentation), or of `only`. Each mode that failed is logged at info with why.
pub fn load(
    object: &[u8],
    layouts: &Layouts,
    sizes: MapSizes,
    only: Option<AttachMode>,
) -> anyhow::Result<Loaded> {
    let mut ebpf = open(object, layouts, sizes)?;
    let mut why = Vec::new();
    for mode in AttachMode::ALL {
        if only.is_some_and(|o| o != mode) {
            continue;
        }
        let usable = match mode {
            AttachMode::TpBtf | AttachMode::RawTracepoint => layouts.request.is_some(),
            AttachMode::Tracepoint => layouts.tracepoint.is_some(),
        };
        if !usable {
            why.push(format!("{}: no layout", mode.as_str()));
            continue;
        }
        match attach(&mut ebpf, mode, object, layouts) {
            Ok(module_programs) => {
                for e in &why {
                    log::info!("eBPF: {e}");
                }
                let mut attached = mode.programs().to_vec();
                if layouts.host_wait.on != 0 {
                    match attach_host_wait(&mut ebpf, mode) {
                        Ok(name) => attached.push(name),
                        Err(e) => log::warn!(
                            "eBPF: host wait not measured ({}); every setup counts as \
                             host_wait_unmatched",
                            explain(&e)
                        ),
                    }
                }
                return Ok(Loaded {
                    ebpf,
                    attached,
                    mode,
                    module_programs,
                    slots: sizes.slots(),
                    count_map_entries: sizes.count_map_entries,
                });
            }
            Err(e) => {
                log::debug!("eBPF: {} failed: {e:?}", mode.as_str());
                // Whatever of this mode did load is unloaded (and so detached) before the next.
                for name in mode.programs() {
                    if let Some(p) = ebpf.program_mut(name) {
                        let _ = match p {
                            aya::programs::Program::BtfTracePoint(p) => p.unload(),
                            aya::programs::Program::RawTracePoint(p) => p.unload(),
                            aya::programs::Program::TracePoint(p) => p.unload(),
                            _ => Ok(()),
                        };
                    }
                }
                why.push(format!("{} not attached: {}", mode.as_str(), explain(&e)));
            }
        }
    }
    bail!("no attach mode worked ({})", why.join("; "))
}

/// Verifies and attaches the two programs of `mode`; on nvme_core as a module, tp_btf returns
/// the programs it loaded itself.
fn attach(
    ebpf: &mut Ebpf,
    mode: AttachMode,
    object: &[u8],
    layouts: &Layouts,
) -> anyhow::Result<Vec<module_tp::ModuleProgram>> {
    let btf = match mode {
        AttachMode::TpBtf => {
            // Checked first: parsing vmlinux BTF again only to miss the target costs seconds on a
            // slow machine.
            if std::path::Path::new(btf::SYS_BTF)
                .join("nvme_core")
                .exists()
            {
                let ids = layouts.module_tracepoints.context(
                    "nvme_core is a module and its BTF names no nvme tracepoint (btf_trace_*)",
                )?;
                return module_tp::attach_pair(object, ebpf, BTF_PROGRAMS, ids);
            }
            Some(Btf::from_sys_fs().context("reading the kernel's BTF")?)
        }
        _ => None,
    };
    // Both verified first, then attached completion first. The other way round, every command
    // set up while the completion program was still being verified (milliseconds, a second
    // under TCG) and completed before it ran left an in-flight entry and one queue depth behind,
    // until its tag came back and counted it lost (`inflight_evictions`). Now a command whose setup
    // is seen has its completion seen; one set up before is an unmatched completion, as ever.
    let pairs = mode.programs().into_iter().zip(HOOKS);
    for (name, hook) in pairs.clone() {
        match mode {
            AttachMode::TpBtf => {
                let p: &mut BtfTracePoint = program(ebpf, name)?;
                let btf = btf.as_ref().expect("read above");
                p.load(hook, btf)
                    .with_context(|| format!("loading {name} for tp_btf/{hook}"))?;
            }
            AttachMode::RawTracepoint => {
                let p: &mut RawTracePoint = program(ebpf, name)?;
                p.load().with_context(|| format!("verifying {name}"))?;
            }
            AttachMode::Tracepoint => {
                let p: &mut TracePoint = program(ebpf, name)?;
                p.load().with_context(|| format!("verifying {name}"))?;
            }
        }
    }
    for (name, hook) in pairs.rev() {
        match mode {
            AttachMode::TpBtf => {
                let p: &mut BtfTracePoint = program(ebpf, name)?;
                p.attach()
                    .with_context(|| format!("attaching {name} to tp_btf/{hook}"))?;
            }
            AttachMode::RawTracepoint => {
                let p: &mut RawTracePoint = program(ebpf, name)?;
                p.attach(hook)
                    .with_context(|| format!("attaching {name} to raw_tp/{hook}"))?;
            }
            AttachMode::Tracepoint => {
                let p: &mut TracePoint = program(ebpf, name)?;
                p.attach("nvme", hook)
                    .with_context(|| format!("attaching {name} to nvme:{hook}"))?;
            }
        }
    }
    Ok(vec![])
}

/// Attaches host wait's program on `block:block_bio_queue` in `mode`'s way (a vmlinux
/// tracepoint: tp_btf with vmlinux's BTF, or raw); the classic mode has no request to join.
fn attach_host_wait(ebpf: &mut Ebpf, mode: AttachMode) -> anyhow::Result<&'static str> {
    let hook = host_wait::BLOCK_BIO_QUEUE;
    let name = match mode {
        AttachMode::TpBtf => host_wait::programs::BLOCK_BIO_QUEUE_BTF,
        AttachMode::RawTracepoint => host_wait::programs::BLOCK_BIO_QUEUE_RAW,
        AttachMode::Tracepoint => bail!("the classic mode sees no request"),
    };
    if mode == AttachMode::TpBtf {
        let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
        let p: &mut BtfTracePoint = program(ebpf, name)?;
        p.load(hook, &btf)
            .with_context(|| format!("loading {name} for tp_btf/{hook}"))?;
        p.attach()
            .with_context(|| format!("attaching {name} to tp_btf/{hook}"))?;
    } else {
        let p: &mut RawTracePoint = program(ebpf, name)?;
        p.load().with_context(|| format!("verifying {name}"))?;
        p.attach(hook)
            .with_context(|| format!("attaching {name} to raw_tp/{hook}"))?;
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request-keyed programs pass this host's verifier (loading a raw tracepoint program
    /// names no tracepoint, so no NVMe is needed), with slow-command tracing off and on (the
    /// verifier prunes what a constant global turns off, so each is checked); skipped without
    /// an object or permission.
    #[test]
    fn raw_programs_pass_the_verifier() {
        let slow_on = SlowTrace {
            threshold_ns: 1,
            per_cpu_per_second: 10,
            _pad: 0,
        };
        let host_wait_on = HostWait {
            on: 1,
            request_bio: 8,
            bio_arg: 0,
            _pad: 0,
        };
        for (slow, host_wait) in [
            (SlowTrace::OFF, HostWait::OFF),
            (slow_on, HostWait::OFF),
            (SlowTrace::OFF, host_wait_on),
            (slow_on, host_wait_on),
        ] {
            let layouts = Layouts {
                request: Some(RequestLayout {
                    request_size: 296,
                    valid: 1,
                    ..Default::default()
                }),
                slow,
                host_wait,
                ..Default::default()
            };
            let sizes = MapSizes {
                slow: (slow.threshold_ns != 0).then_some(SlowSizes {
                    context: 1024,
                    ring_bytes: 1 << 16,
                }),
                host_wait: (host_wait.on != 0).then_some(1024),
                ..Default::default()
            };
            let mut ebpf = match open(crate::bpf::EBPF_OBJECT, &layouts, sizes) {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("skipped: {}", explain(&e));
                    return;
                }
            };
            for name in RAW_PROGRAMS
                .into_iter()
                .chain([host_wait::programs::BLOCK_BIO_QUEUE_RAW])
            {
                let p: &mut RawTracePoint = ebpf.program_mut(name).unwrap().try_into().unwrap();
                p.load().unwrap_or_else(|e| {
                    panic!("verifying {name} ({slow:?}, {host_wait:?}): {e:?}")
                });
            }
        }
    }

    #[test]
    fn empty_object_is_refused() {
        let err = load(&[], &Layouts::default(), MapSizes::default(), None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("no eBPF object"), "{err}");
    }
}
