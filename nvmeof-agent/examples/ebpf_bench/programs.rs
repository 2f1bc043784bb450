//! `ebpf_bench programs [--rounds N] [--bpftrace PATH] CMD...`: what a command costs each of our
//! pairs beside the floors and the peers, in one boot (BENCHMARKS.md).
//!
//! Our pairs come from the agent's object, loaded with the layouts the agent reads (struct
//! offsets from BTF for the tp_btf and raw pairs, the tp_btf pair on nvme_core's BTF as the
//! agent loads it; the record layout from tracefs for the classic pair). The floors, the
//! one-step programs and the minimal tracer come from the benchmark object (`nvmeof-bench`),
//! which only this example embeds; bpftrace runs its equivalent script as a child process.
//! Each variant is attached alone, CMD runs, the variant is detached, and its programs' run time
//! and run count (`bpf_prog_info`, moving while `kernel.bpf_stats_enabled=1`) give ns per
//! command; rounds of every variant in turn, ratios within a round, medians over rounds.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::tp_btf::BtfTracePointLinkId;
use aya::programs::{BtfTracePoint, RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use nvmeof_agent::bpf::btf;
use nvmeof_agent::bpf::io::load::{self, MapSizes};
use nvmeof_agent::bpf::loader;
use nvmeof_agent::bpf::module_tp::{self, ModuleProgram};
use nvmeof_agent::bpf::{format, tracefs, EBPF_OBJECT};
use nvmeof_common::bench::{self, MIN_BUCKET_COUNT};
use nvmeof_common::host_wait::{programs::BLOCK_BIO_QUEUE_BTF, BLOCK_BIO_QUEUE};
use nvmeof_common::slow::SlowTrace;
use nvmeof_common::{
    maps, OpStats, ProgramCounter, QueueState, LAYOUT_GLOBAL, PROGRAM_COUNTERS, REQ_LAYOUT_GLOBAL,
};

use crate::bpftrace;
use crate::variants::{Hook, Role, Variant, EVENTS, VARIANTS};

/// The benchmark programs' object (built by the agent's build.rs beside the agent's objects).
static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nvmeof-bench"));

/// Runs the workload; its output (dd's record counts) is shown only when it fails.
pub fn run_workload(cmd: &[String]) -> anyhow::Result<()> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd.join(" "))
        .stdin(std::process::Stdio::null())
        .output()
        .context("running the workload")?;
    if !out.status.success() {
        bail!(
            "workload failed: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Loads (once) and attaches host wait's program to vmlinux's `block_bio_queue`, as the agent's
/// loader does in tp_btf mode.
fn attach_block_bio_queue(ebpf: &mut Ebpf) -> anyhow::Result<BtfTracePointLinkId> {
    let p: &mut BtfTracePoint = ebpf
        .program_mut(BLOCK_BIO_QUEUE_BTF)
        .context(BLOCK_BIO_QUEUE_BTF)?
        .try_into()?;
    if p.fd().is_err() {
        let btf = aya::Btf::from_sys_fs().context("reading the kernel's BTF")?;
        p.load(BLOCK_BIO_QUEUE, &btf)
            .with_context(|| format!("loading {BLOCK_BIO_QUEUE_BTF}"))?;
    }
    Ok(p.attach()?)
}

/// The slow-command threshold of [`Role::OursSlow`]: far above any command of the workload.
const SLOW_THRESHOLD_NS: u64 = 1_000_000_000;

/// The objects and the tp_btf programs loaded from them, by (role, program, tracepoint).
struct Objects {
    ours: Ebpf,
    ours_slow: Ebpf,
    ours_host_wait: Ebpf,
    bench: Ebpf,
    btf: HashMap<(Role, &'static str, &'static str), ModuleProgram>,
}

impl Objects {
    fn of(&mut self, role: Role) -> &mut Ebpf {
        match role {
            Role::Ours => &mut self.ours,
            Role::OursSlow => &mut self.ours_slow,
            Role::OursHostWait => &mut self.ours_host_wait,
            _ => &mut self.bench,
        }
    }

    fn ours(&self, role: Role) -> &Ebpf {
        match role {
            Role::OursSlow => &self.ours_slow,
            Role::OursHostWait => &self.ours_host_wait,
            _ => &self.ours,
        }
    }

    /// Attaches a variant, runs the workload, detaches: (run time ns, runs) over its programs.
    fn measure(&mut self, v: &Variant, cmd: &[String]) -> anyhow::Result<(u64, u64)> {
        let hooks: Vec<_> = v.hooks().into_iter().map(|(p, e)| (v.role, p, e)).collect();
        if v.hook == Hook::Btf {
            let total = |o: &Self| -> anyhow::Result<(u64, u64)> {
                hooks.iter().try_fold((0, 0), |(t, n), k| {
                    let (t2, n2) = o.btf.get(k).context("tp_btf program")?.run_stats()?;
                    Ok((t + t2, n + n2))
                })
            };
            for k in &hooks {
                self.btf.get_mut(k).context("tp_btf program")?.attach()?;
            }
            let block = match v.role {
                Role::OursHostWait => Some(attach_block_bio_queue(&mut self.ours_host_wait)?),
                _ => None,
            };
            // The block program's time counts, its runs (one per bio, not per command) not.
            let block_ns = |o: &Self| -> anyhow::Result<u64> {
                match block {
                    Some(_) => Ok(loader::run_stats(&o.ours_host_wait, BLOCK_BIO_QUEUE_BTF)?.0),
                    None => Ok(0),
                }
            };
            let before = (total(self)?, block_ns(self)?);
            run_workload(cmd)?;
            let after = (total(self)?, block_ns(self)?);
            for k in &hooks {
                self.btf.get_mut(k).context("tp_btf program")?.detach();
            }
            if let Some(link) = block {
                let p: &mut BtfTracePoint = self
                    .ours_host_wait
                    .program_mut(BLOCK_BIO_QUEUE_BTF)
                    .context(BLOCK_BIO_QUEUE_BTF)?
                    .try_into()?;
                p.detach(link)?;
            }
            let ns = (after.0 .0 - before.0 .0) + (after.1 - before.1);
            return Ok((ns, after.0 .1 - before.0 .1));
        }
        let ebpf = self.of(v.role);
        let mut tp_links = Vec::new();
        let mut raw_links = Vec::new();
        for &(_, name, event) in &hooks {
            let prog = ebpf.program_mut(name).context(name)?;
            if v.hook == Hook::Raw {
                let p: &mut RawTracePoint = prog.try_into()?;
                let id = p
                    .attach(event)
                    .with_context(|| format!("attaching {name} to raw tracepoint {event}"))?;
                raw_links.push((name, id));
            } else {
                let p: &mut TracePoint = prog.try_into()?;
                let id = p
                    .attach("nvme", event)
                    .with_context(|| format!("attaching {name} to nvme:{event}"))?;
                tp_links.push((name, id));
            }
        }
        let total = |ebpf: &Ebpf| -> anyhow::Result<(u64, u64)> {
            v.programs.iter().try_fold((0, 0), |(t, n), name| {
                let (t2, n2) = loader::run_stats(ebpf, name)?;
                Ok((t + t2, n + n2))
            })
        };
        let before = total(ebpf)?;
        run_workload(cmd)?;
        let after = total(ebpf)?;
        for (name, id) in tp_links {
            let p: &mut TracePoint = ebpf.program_mut(name).context(name)?.try_into()?;
            p.detach(id)?;
        }
        for (name, id) in raw_links {
            let p: &mut RawTracePoint = ebpf.program_mut(name).context(name)?.try_into()?;
            p.detach(id)?;
        }
        Ok((after.0 - before.0, after.1 - before.1))
    }

    /// What a variant counted so far, to show that it did the whole work (a layout left
    /// invalid returns at once and looks as cheap as an empty program).
    fn counted(&self, role: Role) -> anyhow::Result<Vec<u64>> {
        match role {
            Role::Ours | Role::OursSlow | Role::OursHostWait => {
                let ours = self.ours(role);
                let mut v = program_counters(ours)?.to_vec();
                v.push(ops_commands(ours)?);
                let (submitted, completed) = queue_counts(ours)?;
                v.extend([submitted, completed]);
                Ok(v)
            }
            Role::Minimal => Ok(vec![minimal_commands(&self.bench)?]),
            Role::Floor | Role::Peer => Ok(vec![]),
        }
    }
}

/// The agent's programs' own event counters (`COUNTERS`, summed over CPUs).
fn program_counters(ebpf: &Ebpf) -> anyhow::Result<[u64; PROGRAM_COUNTERS as usize]> {
    let counters: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(ebpf.map(maps::COUNTERS).context("map COUNTERS")?)?;
    let mut sums = [0u64; PROGRAM_COUNTERS as usize];
    for (i, sum) in sums.iter_mut().enumerate() {
        *sum = counters.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(sums)
}

/// Commands the `OPS` array holds over every slot (the sum of its bucket counts): what the agent
/// would count.
fn ops_commands(ebpf: &Ebpf) -> anyhow::Result<u64> {
    let ops = Array::<&MapData, OpStats>::try_from(ebpf.map(maps::OPS).context("map OPS")?)?;
    let mut n = 0;
    for v in ops.iter() {
        n += v?.commands();
    }
    Ok(n)
}

/// Commands submitted and completed over every `QUEUES` slot.
fn queue_counts(ebpf: &Ebpf) -> anyhow::Result<(u64, u64)> {
    let queues =
        Array::<&MapData, QueueState>::try_from(ebpf.map(maps::QUEUES).context("map QUEUES")?)?;
    let (mut submitted, mut completed) = (0, 0);
    for v in queues.iter() {
        let v = v?;
        submitted += v.submitted;
        completed += v.completed;
    }
    Ok((submitted, completed))
}

/// Commands the minimal tracer timed: its log2 buckets over every CPU.
fn minimal_commands(ebpf: &Ebpf) -> anyhow::Result<u64> {
    let buckets: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
        ebpf.map(bench::maps::MIN_BUCKETS)
            .context("map MIN_BUCKETS")?,
    )?;
    let mut n = 0;
    for i in 0..MIN_BUCKET_COUNT {
        n += buckets.get(&i, 0)?.iter().sum::<u64>();
    }
    Ok(n)
}

/// Loads the benchmark object with the layouts its minimal tracers read, as the agent's loader
/// writes them into its own object.
fn open_bench(layouts: &load::Layouts) -> anyhow::Result<Ebpf> {
    let tracepoint = layouts.tracepoint.unwrap_or_default();
    let request = layouts.request.unwrap_or_default();
    EbpfLoader::new()
        .override_global(LAYOUT_GLOBAL, &tracepoint, true)
        .override_global(REQ_LAYOUT_GLOBAL, &request, true)
        .load(BENCH_OBJECT)
        .context("loading the benchmark object")
}

/// Loads every tp_btf program of `variants` for each tracepoint it goes on, from its object.
fn load_btf_programs(
    objects: &mut Objects,
    ids: Option<[u32; 2]>,
    variants: &[&Variant],
) -> anyhow::Result<()> {
    let ids = ids.context("nvme_core's BTF names no nvme tracepoint")?;
    let btf = module_tp::module_btf("nvme_core")?;
    let ours = module_tp::Instructions::relocated(EBPF_OBJECT, &objects.ours)?;
    let ours_slow = module_tp::Instructions::relocated(EBPF_OBJECT, &objects.ours_slow)?;
    let ours_host_wait = module_tp::Instructions::relocated(EBPF_OBJECT, &objects.ours_host_wait)?;
    let bench = module_tp::Instructions::relocated(BENCH_OBJECT, &objects.bench)?;
    for v in variants.iter().filter(|v| v.hook == Hook::Btf) {
        let insns = match v.role {
            Role::Ours => &ours,
            Role::OursSlow => &ours_slow,
            Role::OursHostWait => &ours_host_wait,
            _ => &bench,
        };
        for (name, event) in v.hooks() {
            let id = if event == EVENTS[0] { ids[0] } else { ids[1] };
            let p = ModuleProgram::load(insns, name, &btf, id)?;
            objects.btf.insert((v.role, name, event), p);
        }
    }
    Ok(())
}

pub fn run(rounds: usize, bpftrace: Option<PathBuf>, cmd: &[String]) -> anyhow::Result<()> {
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
        .context("enabling kernel.bpf_stats_enabled")?;
    let tracefs = tracefs::locate(None)?;
    let layout = format::read_layout(&tracefs)?;
    // Without nvme_core's structs in BTF (5.10's modules carry none) the request-keyed variants
    // cannot be loaded as the agent would not load them: they are left out, and said so.
    let request = match nvmeof_agent::bpf::io::request_btf::request_layout(Path::new(btf::SYS_BTF))
    {
        Ok(r) => Some(r),
        Err(e) => {
            println!("tp_btf and raw variants left out: no request layout from BTF: {e:#}");
            None
        }
    };
    let layouts = load::Layouts {
        tracepoint: Some(layout),
        request: request.map(|r| r.layout),
        module_tracepoints: request.and_then(|r| r.module_tracepoints),
        ..Default::default()
    };
    let slow = load::Layouts {
        slow: SlowTrace {
            threshold_ns: SLOW_THRESHOLD_NS,
            per_cpu_per_second: 100,
            _pad: 0,
        },
        ..layouts.clone()
    };
    let slow_sizes = MapSizes {
        slow: Some(load::SlowSizes {
            context: nvmeof_common::INFLIGHT_CAPACITY,
            ring_bytes: nvmeof_agent::bpf::io::slow::RING_BYTES,
        }),
        ..MapSizes::default()
    };
    // Host wait as the agent turns it on, where vmlinux's BTF allows it (else its variant counts
    // nothing and says so in its line).
    let host_wait = load::Layouts {
        host_wait: request
            .and_then(|r| r.host_wait)
            .unwrap_or(nvmeof_common::host_wait::HostWait::OFF),
        ..layouts.clone()
    };
    let host_wait_sizes = MapSizes {
        host_wait: Some(nvmeof_common::INFLIGHT_CAPACITY),
        ..MapSizes::default()
    };
    let mut objects = Objects {
        ours: load::open(EBPF_OBJECT, &layouts, MapSizes::default())?,
        ours_slow: load::open(EBPF_OBJECT, &slow, slow_sizes)?,
        ours_host_wait: load::open(EBPF_OBJECT, &host_wait, host_wait_sizes)?,
        bench: open_bench(&layouts)?,
        btf: HashMap::new(),
    };
    let candidates: Vec<&Variant> = VARIANTS
        .iter()
        .filter(|v| v.hook != Hook::Raw || request.is_some() || v.role == Role::Floor)
        .filter(|v| v.hook != Hook::Bpftrace || bpftrace.is_some())
        .collect();
    // tp_btf where nvme_core's BTF names its tracepoints (6.1 and later).
    let btf_why = load_btf_programs(&mut objects, layouts.module_tracepoints, &candidates).err();
    if let Some(why) = &btf_why {
        println!("tp_btf variants left out: {why:#}");
    }
    if bpftrace.is_none() {
        println!("bpftrace left out: no --bpftrace PATH");
    }
    let variants: Vec<&Variant> = candidates
        .into_iter()
        .filter(|v| v.hook != Hook::Btf || btf_why.is_none())
        .collect();
    for v in &variants {
        let ebpf = objects.of(v.role);
        for name in v.programs {
            let prog = ebpf.program_mut(name).context(*name)?;
            match v.hook {
                Hook::Raw => {
                    let p: &mut RawTracePoint = prog.try_into()?;
                    p.load().with_context(|| format!("verifying {name}"))?;
                }
                Hook::Classic => {
                    let p: &mut TracePoint = prog.try_into()?;
                    p.load().with_context(|| format!("verifying {name}"))?;
                }
                Hook::Btf | Hook::Bpftrace => {}
            }
        }
    }
    // Rounds of every variant in turn: the host's load moves during a run, so each variant is
    // compared with the floors of its own round and the medians over rounds are kept.
    let mut per_cmd = vec![Vec::new(); variants.len()];
    let mut runs_total = vec![0u64; variants.len()];
    for round in 0..rounds {
        for (i, v) in variants.iter().enumerate() {
            let before = objects.counted(v.role)?;
            let (ns, n) = match (&bpftrace, v.role) {
                (Some(path), Role::Peer) => {
                    let run = bpftrace::measure(path, cmd)?;
                    if round == 0 {
                        println!(
                            "{}: {} programs ({}), commands in its histograms {}",
                            v.label,
                            run.programs.len(),
                            run.programs.join(", "),
                            run.commands
                        );
                    }
                    (run.run_time_ns, run.runs)
                }
                _ => objects.measure(v, cmd)?,
            };
            if round == 0 {
                report_counted(v, &before, &objects.counted(v.role)?);
            }
            // A command is one setup and one completion: two runs.
            per_cmd[i].push(2.0 * ns as f64 / n.max(1) as f64);
            runs_total[i] += n;
        }
    }
    print_table(rounds, &variants, &per_cmd, &runs_total);
    Ok(())
}

/// What a variant counted during its first workload.
fn report_counted(v: &Variant, before: &[u64], after: &[u64]) {
    let d = |i: usize| after[i] - before[i];
    match v.role {
        Role::Ours | Role::OursSlow | Role::OursHostWait => {
            let c = |c: ProgramCounter| d(c as usize);
            println!(
                "{}: submitted {}, completed {} (on its queues), commands in OPS {}, unmatched {}, read failures {}, LBA size unknown {}, new in-flight keys {}, host wait unmatched {}",
                v.label,
                d(PROGRAM_COUNTERS as usize + 1),
                d(PROGRAM_COUNTERS as usize + 2),
                d(PROGRAM_COUNTERS as usize),
                c(ProgramCounter::CompletionUnmatched),
                c(ProgramCounter::ReadFailed),
                c(ProgramCounter::LbaSizeUnknown),
                c(ProgramCounter::InflightNewKey),
                c(ProgramCounter::HostWaitUnmatched),
            );
        }
        Role::Minimal => println!("{}: commands in its buckets {}", v.label, d(0)),
        Role::Floor | Role::Peer => {}
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// ns per command and the ratios, each the median over rounds of the ratio within the round.
fn print_table(rounds: usize, variants: &[&Variant], per_cmd: &[Vec<f64>], runs: &[u64]) {
    let index = |name: &str| {
        variants
            .iter()
            .position(|v| v.programs.first() == Some(&name))
    };
    let peer = variants.iter().position(|v| v.role == Role::Peer);
    let ratio = |i: usize, floor: Option<usize>| match floor {
        Some(f) => format!(
            "{:.2}",
            median(
                per_cmd[i]
                    .iter()
                    .zip(&per_cmd[f])
                    .map(|(a, b)| a / b)
                    .collect()
            )
        ),
        None => "–".to_owned(),
    };
    println!("{rounds} rounds; ns per command: median (min–max) over rounds; ratios: median over rounds of the ratio within the round, to the variants of the same hook type and to bpftrace");
    println!("| variant, alone on the nvme tracepoints | runs | ns per command | × empty | × clock floor | × minimal tracer | × bpftrace |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (i, v) in variants.iter().enumerate() {
        let [empty, clock, minimal] = match v.hook.floors() {
            Some(f) => f.map(index),
            None => [None; 3],
        };
        let lo = per_cmd[i].iter().copied().fold(f64::INFINITY, f64::min);
        let hi = per_cmd[i].iter().copied().fold(0.0, f64::max);
        println!(
            "| {} | {} | {:.0} ({lo:.0}–{hi:.0}) | {} | {} | {} | {} |",
            v.label,
            runs[i],
            median(per_cmd[i].clone()),
            ratio(i, empty),
            ratio(i, clock),
            ratio(i, minimal),
            ratio(i, peer),
        );
    }
}
