//! Benchmarks behind BENCHMARKS.md (`cargo xtask bench` runs them in the lab VM).
//!
//! - `ebpf_bench programs CMD...`: turns `kernel.bpf_stats_enabled` on, loads the real programs
//!   (the tp_btf pair, the agent's default mode, loaded on nvme_core's BTF as the agent does, and
//!   the raw pair, both with the struct offsets from BTF, and the classic pair with the record
//!   layout from tracefs, as the agent reads them) and the benchmark-only ones
//!   of the same object (an empty program, a one-clock-read program and one that adds an atomic
//!   add, each on both nvme tracepoints; empty and clock also as raw tracepoints and as tp_btf,
//!   the raw clock read plus one hash lookup, one probe read, one hash insert and delete, or one
//!   LRU lookup and store, and the tp_btf clock read plus one plain load), then attaches
//!   each variant alone, runs CMD, detaches, and prints its run time per command, all in one boot;
//!   with `--rounds N`, N rounds of every variant in turn, and the medians.
//! - `ebpf_bench drain CONTROLLERS QUEUES DRAINS`: the agent's CPU time per drain and per scrape.
//!   The real object's maps are loaded without attaching anything and filled with the keys that
//!   many controllers and I/O queues produce (read, write and connect per I/O queue; admin and
//!   fabrics on queue 0); between drains every key's counters and a few buckets move. The drain
//!   and the `io` collector's scrape (collect + text encoding) run as in the agent.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context as _};
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{RawTracePoint, TracePoint};
use aya::Ebpf;
use nvmeof_agent::bpf::io::drain::Drainer;
use nvmeof_agent::bpf::io::{IoSource, IoState};
use nvmeof_agent::bpf::loader::{self, Loaded, MapSizes};
use nvmeof_agent::bpf::module_tp::{self, ModuleProgram};
use nvmeof_agent::bpf::{btf, format, tracefs, EBPF_OBJECT};
use nvmeof_agent::collector::{Collector, Sink};
use nvmeof_agent::collectors::io::IoCollector;
use nvmeof_common::{
    latency_bucket, maps, programs, OpClass, OpStats, ProgramCounter, QueueState, SlotLayout,
    TracepointLayout, PROGRAM_COUNTERS,
};

const EVENTS: [&str; 2] = [programs::NVME_SETUP_CMD, programs::NVME_COMPLETE_RQ];

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a plain syscall on a valid struct.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The variants, each measured alone: (label, programs, hook). A program first in a
/// tracepoint's chain pays the cold misses of the event (seen: with all attached at once the
/// first program's cost doubled and a later clock read cost a third of an earlier one), so each
/// variant gets the tracepoints to itself, for the same workload, in one boot. The raw pair comes
/// first: it is what the agent attaches by default (tp_btf where nvme_core's BTF names the
/// tracepoints, 6.1 and later; classic on 5.10, whose modules have no BTF).
const VARIANTS: [(&str, &[&str], Hook); 15] = [
    (
        "ours, tp_btf: nvme_setup_cmd_btf + nvme_complete_rq_btf",
        &[programs::NVME_SETUP_CMD_BTF, programs::NVME_COMPLETE_RQ_BTF],
        Hook::BtfOwn,
    ),
    (
        "ours, raw: nvme_setup_cmd_raw + nvme_complete_rq_raw",
        &[programs::NVME_SETUP_CMD_RAW, programs::NVME_COMPLETE_RQ_RAW],
        Hook::RawOwn,
    ),
    (
        "ours, classic: nvme_setup_cmd + nvme_complete_rq",
        &[programs::NVME_SETUP_CMD, programs::NVME_COMPLETE_RQ],
        Hook::Own,
    ),
    (
        "empty (bench_tp_empty ×2)",
        &[programs::BENCH_TP_EMPTY],
        Hook::Both,
    ),
    (
        "clock floor (bench_tp_clock ×2)",
        &[programs::BENCH_TP_CLOCK],
        Hook::Both,
    ),
    (
        "clock + atomic add (bench_tp_atomic ×2)",
        &[programs::BENCH_TP_ATOMIC],
        Hook::Both,
    ),
    (
        "raw_tp empty (bench_raw_empty ×2)",
        &[programs::BENCH_RAW_EMPTY],
        Hook::RawBoth,
    ),
    (
        "raw_tp clock (bench_raw_clock ×2)",
        &[programs::BENCH_RAW_CLOCK],
        Hook::RawBoth,
    ),
    (
        "raw_tp clock + hash lookup (bench_raw_hash ×2)",
        &[programs::BENCH_RAW_HASH],
        Hook::RawBoth,
    ),
    (
        "raw_tp clock + probe read (bench_raw_probe ×2)",
        &[programs::BENCH_RAW_PROBE],
        Hook::RawBoth,
    ),
    (
        "raw_tp clock + hash insert and delete (bench_raw_inflight ×2)",
        &[programs::BENCH_RAW_INFLIGHT],
        Hook::RawBoth,
    ),
    (
        "raw_tp clock + LRU lookup and store (bench_raw_lru ×2)",
        &[programs::BENCH_RAW_LRU],
        Hook::RawBoth,
    ),
    (
        "tp_btf empty (bench_btf_empty ×2)",
        &[programs::BENCH_BTF_EMPTY],
        Hook::BtfBoth,
    ),
    (
        "tp_btf clock (bench_btf_clock ×2)",
        &[programs::BENCH_BTF_CLOCK],
        Hook::BtfBoth,
    ),
    (
        "tp_btf clock + one plain load (bench_btf_load ×2)",
        &[programs::BENCH_BTF_LOAD],
        Hook::BtfBoth,
    ),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    /// Each program on the tracepoint of its own name.
    Own,
    /// One program on both nvme tracepoints.
    Both,
    /// Each program on the raw tracepoint its name starts with (`nvme_setup_cmd_raw` on
    /// `nvme_setup_cmd`).
    RawOwn,
    /// One program on both nvme raw tracepoints.
    RawBoth,
    /// Each program on the tp_btf tracepoint its name starts with (`nvme_setup_cmd_btf`).
    BtfOwn,
    /// One program, loaded once for each nvme tracepoint, on both as tp_btf.
    BtfBoth,
}

impl Hook {
    fn raw(self) -> bool {
        matches!(self, Hook::RawOwn | Hook::RawBoth)
    }

    fn btf(self) -> bool {
        matches!(self, Hook::BtfOwn | Hook::BtfBoth)
    }

    /// The floors a variant is compared with: the empty and clock programs of its hook type.
    fn floors(self) -> [&'static str; 2] {
        if self.raw() {
            [programs::BENCH_RAW_EMPTY, programs::BENCH_RAW_CLOCK]
        } else if self.btf() {
            [programs::BENCH_BTF_EMPTY, programs::BENCH_BTF_CLOCK]
        } else {
            [programs::BENCH_TP_EMPTY, programs::BENCH_TP_CLOCK]
        }
    }

    /// The tracepoints a program goes on.
    fn events(self, name: &'static str) -> Vec<&'static str> {
        match self {
            Hook::Own => vec![name],
            Hook::RawOwn => EVENTS
                .into_iter()
                .filter(|e| name.strip_prefix(e) == Some("_raw"))
                .collect(),
            Hook::BtfOwn => EVENTS
                .into_iter()
                .filter(|e| name.strip_prefix(e) == Some("_btf"))
                .collect(),
            Hook::Both | Hook::RawBoth | Hook::BtfBoth => EVENTS.to_vec(),
        }
    }
}

/// Runs the workload; its output (dd's record counts, once per variant and round) is shown only
/// when it fails.
fn run_workload(cmd: &[String]) -> anyhow::Result<()> {
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

/// tp_btf programs by (name, tracepoint): loaded by `module_tp`, one per tracepoint.
type BtfPrograms = HashMap<(&'static str, &'static str), ModuleProgram>;

/// Attaches a variant, runs the workload, detaches: (run time ns, runs) summed over its programs.
fn measure(
    ebpf: &mut Ebpf,
    btf_progs: &mut BtfPrograms,
    names: &[&'static str],
    hook: Hook,
    cmd: &[String],
) -> anyhow::Result<(u64, u64)> {
    if hook.btf() {
        let keys: Vec<_> = names
            .iter()
            .flat_map(|n| hook.events(n).into_iter().map(move |e| (*n, e)))
            .collect();
        let total = |progs: &BtfPrograms| -> anyhow::Result<(u64, u64)> {
            keys.iter().try_fold((0, 0), |(t, n), k| {
                let (t2, n2) = progs.get(k).context("tp_btf program")?.run_stats()?;
                Ok((t + t2, n + n2))
            })
        };
        for k in &keys {
            btf_progs.get_mut(k).context("tp_btf program")?.attach()?;
        }
        let before = total(btf_progs)?;
        run_workload(cmd)?;
        let after = total(btf_progs)?;
        for k in &keys {
            btf_progs.get_mut(k).context("tp_btf program")?.detach();
        }
        return Ok((after.0 - before.0, after.1 - before.1));
    }
    let mut tp_links = Vec::new();
    let mut raw_links = Vec::new();
    for name in names {
        let events = hook.events(name);
        if events.is_empty() {
            bail!("{name}: no nvme tracepoint of that name");
        }
        for e in events {
            if hook.raw() {
                let p: &mut RawTracePoint = ebpf.program_mut(name).context(*name)?.try_into()?;
                let id = p
                    .attach(e)
                    .with_context(|| format!("attaching {name} to raw tracepoint {e}"))?;
                raw_links.push((*name, id));
            } else {
                let p: &mut TracePoint = ebpf.program_mut(name).context(*name)?.try_into()?;
                let id = p
                    .attach("nvme", e)
                    .with_context(|| format!("attaching {name} to nvme:{e}"))?;
                tp_links.push((*name, id));
            }
        }
    }
    let total = |ebpf: &Ebpf| -> anyhow::Result<(u64, u64)> {
        names.iter().try_fold((0, 0), |(t, n), name| {
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

/// The programs' own event counters (`COUNTERS`, summed over CPUs).
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

fn programs_bench(rounds: usize, cmd: &[String]) -> anyhow::Result<()> {
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
        .context("enabling kernel.bpf_stats_enabled")?;
    let tracefs = tracefs::locate(None)?;
    let layout = format::read_layout(&tracefs)?;
    // Both layouts, as the agent reads them: without REQ_LAYOUT the raw programs would return at
    // once and measure as cheap as an empty one.
    // Without nvme_core's structs in BTF (5.10's modules carry none) the request-keyed pairs
    // cannot be loaded as the agent would not load them: they are left out, and said so.
    let request = match btf::request_layout(Path::new(btf::SYS_BTF)) {
        Ok(r) => Some(r),
        Err(e) => {
            println!("tp_btf and raw variants left out: no request layout from BTF: {e:#}");
            None
        }
    };
    let layouts = loader::Layouts {
        tracepoint: Some(layout),
        request: request.map(|r| r.layout),
        module_tracepoints: request.and_then(|r| r.module_tracepoints),
        timeouts: Default::default(),
    };
    let mut ebpf = loader::open(EBPF_OBJECT, &layouts, MapSizes::default())?;
    // tp_btf where nvme_core's BTF names its tracepoints (6.1 and later).
    let mut btf_progs = BtfPrograms::new();
    let btf_why = match load_btf_programs(&ebpf, layouts.module_tracepoints, &mut btf_progs) {
        Ok(()) => None,
        Err(e) => Some(format!("{e:#}")),
    };
    if let Some(why) = &btf_why {
        println!("tp_btf variants left out: {why}");
    }
    // The benchmark-only raw programs need no layout; only our raw pair does.
    let variants: Vec<_> = VARIANTS
        .iter()
        .filter(|v| !v.2.btf() || btf_why.is_none())
        .filter(|v| v.2 != Hook::RawOwn || request.is_some())
        .collect();
    for (_, names, hook) in &variants {
        for name in names.iter() {
            if hook.raw() {
                let p: &mut RawTracePoint = ebpf.program_mut(name).context(*name)?.try_into()?;
                p.load().with_context(|| format!("verifying {name}"))?;
            } else if !hook.btf() {
                let p: &mut TracePoint = ebpf.program_mut(name).context(*name)?.try_into()?;
                p.load().with_context(|| format!("verifying {name}"))?;
            }
        }
    }
    // Rounds of every variant in turn: the host's load moves during a run (one clock floor went
    // from 1.2 to 3.0 µs between runs), so each variant is compared with the floors of its own
    // round and the medians over rounds are kept.
    let mut per_cmd = vec![Vec::new(); variants.len()];
    let mut runs_total = vec![0u64; variants.len()];
    for round in 0..rounds {
        for (i, (label, names, hook)) in variants.iter().enumerate() {
            let counters = program_counters(&ebpf)?;
            let commands = ops_commands(&ebpf)?;
            let (ns, n) = measure(&mut ebpf, &mut btf_progs, names, *hook, cmd)?;
            // Proof that our programs did the whole work (a layout left invalid returns at
            // once): what they counted during this variant's workload.
            if round == 0 && matches!(hook, Hook::Own | Hook::RawOwn | Hook::BtfOwn) {
                let after = program_counters(&ebpf)?;
                let d = |c: ProgramCounter| after[c as usize] - counters[c as usize];
                println!(
                    "{label}: setups {}, completions {}, commands in OPS {}, unmatched {}, read failures {}, LBA size unknown {}, new in-flight keys {}",
                    d(ProgramCounter::SetupEvents),
                    d(ProgramCounter::CompleteEvents),
                    ops_commands(&ebpf)? - commands,
                    d(ProgramCounter::CompletionUnmatched),
                    d(ProgramCounter::ReadFailed),
                    d(ProgramCounter::LbaSizeUnknown),
                    d(ProgramCounter::InflightNewKey),
                );
            }
            // A command is one setup and one completion: two runs.
            per_cmd[i].push(2.0 * ns as f64 / n.max(1) as f64);
            runs_total[i] += n;
        }
    }
    let index = |name: &str| {
        variants
            .iter()
            .position(|v| v.1[0] == name)
            .expect("a floor variant")
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // Each variant against the floors of its own hook type; the ratio is taken within each round.
    let ratio = |i: usize, floor: usize| {
        median(
            per_cmd[i]
                .iter()
                .zip(&per_cmd[floor])
                .map(|(a, b)| a / b)
                .collect(),
        )
    };
    println!("{rounds} rounds; ns per command: median (min–max) over rounds; ratios: median over rounds of the ratio within the round");
    println!(
        "| variant, alone on the nvme tracepoints | runs | ns per command | × empty | × clock floor |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (i, (label, _, hook)) in variants.iter().enumerate() {
        let [empty, clock] = hook.floors().map(index);
        let v = &per_cmd[i];
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        println!(
            "| {label} | {} | {:.0} ({lo:.0}–{hi:.0}) | {:.1} | {:.2} |",
            runs_total[i],
            median(v.clone()),
            ratio(i, empty),
            ratio(i, clock)
        );
    }
    Ok(())
}

/// Loads every tp_btf program of [`VARIANTS`] for each tracepoint it goes on.
fn load_btf_programs(
    ebpf: &Ebpf,
    ids: Option<[u32; 2]>,
    out: &mut BtfPrograms,
) -> anyhow::Result<()> {
    let ids = ids.context("nvme_core's BTF names no nvme tracepoint")?;
    let btf = module_tp::module_btf("nvme_core")?;
    let insns = module_tp::Instructions::relocated(EBPF_OBJECT, ebpf)?;
    for (_, names, hook) in VARIANTS.iter().filter(|v| v.2.btf()) {
        for name in names.iter() {
            for event in hook.events(name) {
                let id = if event == EVENTS[0] { ids[0] } else { ids[1] };
                let p = ModuleProgram::load(&insns, name, &btf, id)?;
                out.insert((*name, event), p);
            }
        }
    }
    Ok(())
}

/// A sysfs root with `controllers` controllers, one 4 KiB-block namespace each.
fn fake_sysfs(controllers: u32) -> anyhow::Result<PathBuf> {
    let root = std::env::temp_dir().join(format!("ebpf-bench-sysfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for c in 0..controllers {
        let dir = root.join(format!("class/nvme/nvme{c}"));
        let ns = dir.join(format!("nvme{c}n1"));
        std::fs::create_dir_all(ns.join("queue"))?;
        std::fs::write(dir.join("subsysnqn"), format!("nqn.2026-11.bench:{c}\n"))?;
        std::fs::write(ns.join("nsid"), "1\n")?;
        std::fs::write(ns.join("queue/logical_block_size"), "4096\n")?;
    }
    Ok(root)
}

/// The `OPS` slots a busy node fills: per controller admin and fabrics, reads and writes of
/// every I/O queue.
fn busy_slots(slots: SlotLayout) -> Vec<u32> {
    let mut out = Vec::new();
    for c in 0..slots.controllers {
        out.push(slots.stats_slot(c, 0, OpClass::Admin));
        out.push(slots.stats_slot(c, 1, OpClass::Fabrics));
        for q in 1..slots.queues as u16 {
            out.push(slots.stats_slot(c, q, OpClass::Read));
            out.push(slots.stats_slot(c, q, OpClass::Write));
        }
    }
    out
}

/// Moves every slot's counters as a drain interval of I/O would: 96 commands spread over 16
/// buckets around 100 µs (a different spread per round, so deltas are never empty), and every
/// queue's completions, so the drain reads every statistics slot (the worst case).
fn bump(ebpf: &mut Ebpf, slots: SlotLayout, busy: &[u32], round: u64) -> anyhow::Result<()> {
    let mut ops =
        Array::<&mut MapData, OpStats>::try_from(ebpf.map_mut(maps::OPS).context("map OPS")?)?;
    for &i in busy {
        let mut s = ops.get(&i, 0)?;
        s.bytes += 96 * 4096;
        for b in 0..16u64 {
            let ns = 60_000 + (b * 5 + round % 5) * 5_000;
            s.buckets[latency_bucket(ns)] = s.buckets[latency_bucket(ns)].wrapping_add(6);
            s.latency_sum_ns += ns * 6;
        }
        ops.set(i, s, 0)?;
    }
    let mut qs = Array::<&mut MapData, QueueState>::try_from(
        ebpf.map_mut(maps::QUEUES).context("map QUEUES")?,
    )?;
    for i in 0..slots.queue_slots() {
        let mut s = qs.get(&i, 0)?;
        s.submitted += 101;
        s.completed += 100;
        s.busy_ns += 5_000_000;
        s.last_event_ns = round;
        qs.set(i, s, 0)?;
    }
    Ok(())
}

/// Series a Prometheus stores from a text scrape (every sample line), and from a protobuf one
/// with native histograms (a histogram with native buckets is one series).
fn series(families: &[nvmeof_agent::exposition::model::MetricFamily]) -> (usize, usize) {
    let text = nvmeof_agent::exposition::text::encode(families);
    let classic = text.lines().filter(|l| !l.starts_with('#')).count();
    let native = families
        .iter()
        .map(|f| {
            f.metric
                .iter()
                .map(|m| match &m.histogram {
                    Some(h) if h.is_native() => 1,
                    Some(h) => h.bucket.len() + 3,
                    None if m.summary.is_some() => {
                        2 + m.summary.as_ref().map_or(0, |s| s.quantile.len())
                    }
                    None => 1,
                })
                .sum::<usize>()
        })
        .sum();
    (classic, native)
}

fn drain_bench(controllers: u32, queues: u16, drains: usize) -> anyhow::Result<()> {
    let slots = SlotLayout::new(controllers, u32::from(queues) + 1);
    let sizes = MapSizes {
        inflight: None,
        slots: Some(slots),
    };
    let busy = busy_slots(slots);
    let sysfs = fake_sysfs(controllers)?;
    println!(
        "{controllers} controllers × {queues} I/O queues: {} OPS slots busy of {}, {} QUEUES slots, {drains} drains per mode",
        busy.len(),
        slots.stats_slots(),
        slots.queue_slots()
    );
    println!(
        "| series | drain CPU ms (median / max) | scrape CPU ms (median / max) | text bytes | protobuf bytes | series, text | series, native |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for per_queue in [false, true] {
        let ebpf = loader::open(
            EBPF_OBJECT,
            &loader::Layouts {
                tracepoint: Some(TracepointLayout::default()),
                request: None,
                module_tracepoints: None,
                timeouts: Default::default(),
            },
            sizes,
        )
        .map_err(|e| anyhow::anyhow!(loader::explain(&e)))?;
        let loaded = Loaded::detached(ebpf, loader::AttachMode::Tracepoint, sizes);
        let mut d = Drainer::new(loaded, sysfs.clone(), per_queue)?;
        let state = Arc::new(RwLock::new(IoState {
            up: true,
            per_queue,
            ..Default::default()
        }));
        let collector = IoCollector::new(IoSource::shared(state.clone()));
        let mut drain_ms = Vec::new();
        let mut scrape_ms = Vec::new();
        let (mut bytes, mut proto_bytes, mut counts) = (0, 0, (0, 0));
        for round in 0..drains as u64 {
            bump(&mut d.loaded_mut().ebpf, slots, &busy, round)?;
            let t = thread_cpu();
            d.drain_once(&state)?;
            drain_ms.push((thread_cpu() - t).as_secs_f64() * 1e3);
            let t = thread_cpu();
            let mut sink = Sink::new();
            collector.collect(&mut sink)?;
            let families = sink.into_families();
            let text = nvmeof_agent::exposition::text::encode(&families);
            scrape_ms.push((thread_cpu() - t).as_secs_f64() * 1e3);
            bytes = text.len();
            proto_bytes = nvmeof_agent::exposition::protobuf::encode(&families, false).len();
            counts = series(&families);
        }
        let stat = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[v.len() - 1])
        };
        let (dm, dx) = stat(&mut drain_ms);
        let (sm, sx) = stat(&mut scrape_ms);
        println!(
            "| {} | {dm:.1} / {dx:.1} | {sm:.1} / {sx:.1} | {bytes} | {proto_bytes} | {} | {} |",
            if per_queue {
                "--metrics.per-queue"
            } else {
                "default"
            },
            counts.0,
            counts.1
        );
    }
    let _ = std::fs::remove_dir_all(Path::new(&sysfs));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("programs") => {
            let (rounds, cmd) = match args.get(1).map(String::as_str) {
                Some("--rounds") => {
                    let n = args.get(2).and_then(|s| s.parse().ok()).filter(|&n| n > 0);
                    (n.context("--rounds takes a positive number")?, &args[3..])
                }
                _ => (1, &args[1..]),
            };
            if cmd.is_empty() {
                bail!("ebpf_bench programs: no workload command");
            }
            programs_bench(rounds, cmd)
        }
        Some("drain") => {
            let n = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
            drain_bench(n(1, 8) as u32, n(2, 128) as u16, n(3, 20) as usize)
        }
        _ => bail!(
            "usage: ebpf_bench programs [--rounds N] CMD... | ebpf_bench drain [CONTROLLERS QUEUES DRAINS]"
        ),
    }
}
