//! Benchmarks behind BENCHMARKS.md (`cargo xtask bench` runs them in the lab VM).
//!
//! - `ebpf_bench programs CMD...`: turns `kernel.bpf_stats_enabled` on, loads and attaches the
//!   real programs (as the agent does) and the benchmark-only ones of the same object (an empty
//!   program, a one-clock-read program and one that adds an atomic add, each on both nvme
//!   tracepoints; empty and clock also as raw tracepoints), runs CMD, and prints each program's run time per command. Every program sees
//!   the same events in the same run, so the ratios compare like with like.
//! - `ebpf_bench drain CONTROLLERS QUEUES DRAINS`: the agent's CPU time per drain and per scrape.
//!   The real object's maps are loaded without attaching anything and filled with the keys that
//!   many controllers and I/O queues produce (read, write and connect per I/O queue; admin and
//!   fabrics on queue 0); between drains every key's counters and a few buckets move. The drain
//!   and the `io` collector's scrape (collect + text encoding) run as in the agent.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context as _};
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::{RawTracePoint, TracePoint};
use aya::Ebpf;
use nvmeof_agent::bpf::drain::Drainer;
use nvmeof_agent::bpf::loader::{self, Loaded, MapSizes};
use nvmeof_agent::bpf::{format, tracefs, IoState, EBPF_OBJECT};
use nvmeof_agent::collector::{Collector, Sink};
use nvmeof_agent::collectors::io::IoCollector;
use nvmeof_common::{
    latency_bucket, maps, programs, OpClass, OpKey, OpStats, QueueKey, QueueState, TracepointLayout,
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

fn runs(ebpf: &Ebpf, name: &str) -> anyhow::Result<(u64, u64)> {
    let info = ebpf
        .program(name)
        .with_context(|| format!("program {name}"))?
        .info()
        .with_context(|| format!("bpf_prog_info of {name}"))?;
    Ok((info.run_time().as_nanos() as u64, info.run_count()))
}

fn programs_bench(cmd: &[String]) -> anyhow::Result<()> {
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
        .context("enabling kernel.bpf_stats_enabled")?;
    let tracefs = tracefs::locate(None)?;
    let layout = format::read_layout(&tracefs)?;
    let Loaded { mut ebpf, .. } = loader::load(EBPF_OBJECT, &layout, MapSizes::default())?;
    for name in [
        programs::BENCH_TP_EMPTY,
        programs::BENCH_TP_CLOCK,
        programs::BENCH_TP_ATOMIC,
    ] {
        let p: &mut TracePoint = ebpf.program_mut(name).context(name)?.try_into()?;
        p.load().with_context(|| format!("verifying {name}"))?;
        for e in EVENTS {
            p.attach("nvme", e)
                .with_context(|| format!("attaching {name} to nvme:{e}"))?;
        }
    }
    for name in [programs::BENCH_RAW_EMPTY, programs::BENCH_RAW_CLOCK] {
        let p: &mut RawTracePoint = ebpf.program_mut(name).context(name)?.try_into()?;
        p.load().with_context(|| format!("verifying {name}"))?;
        for e in EVENTS {
            p.attach(e)
                .with_context(|| format!("attaching {name} to raw tracepoint {e}"))?;
        }
    }
    let all = [
        programs::NVME_SETUP_CMD,
        programs::NVME_COMPLETE_RQ,
        programs::BENCH_TP_EMPTY,
        programs::BENCH_TP_CLOCK,
        programs::BENCH_TP_ATOMIC,
        programs::BENCH_RAW_EMPTY,
        programs::BENCH_RAW_CLOCK,
    ];
    let before: Vec<(u64, u64)> = all
        .iter()
        .map(|n| runs(&ebpf, n))
        .collect::<anyhow::Result<_>>()?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd.join(" "))
        .status()
        .context("running the workload")?;
    if !status.success() {
        bail!("workload failed: {status}");
    }
    let after: Vec<(u64, u64)> = all
        .iter()
        .map(|n| runs(&ebpf, n))
        .collect::<anyhow::Result<_>>()?;
    let d: BTreeMap<&str, (u64, u64)> = all
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(n, (b, a))| (*n, (a.0 - b.0, a.1 - b.1)))
        .collect();
    // A command is one setup and one completion.
    let commands = d[programs::NVME_SETUP_CMD].1;
    if commands == 0 {
        bail!("the workload issued no nvme command");
    }
    let per_cmd = |ns: u64| ns as f64 / commands as f64;
    let ours = per_cmd(d[programs::NVME_SETUP_CMD].0 + d[programs::NVME_COMPLETE_RQ].0);
    let floor = per_cmd(d[programs::BENCH_TP_CLOCK].0);
    println!(
        "commands: {commands} (setup runs), completions: {}",
        d[programs::NVME_COMPLETE_RQ].1
    );
    println!("| program | hook | runs | ns per run | ns per command | × clock floor |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, hook) in [
        (programs::NVME_SETUP_CMD, "tracepoint"),
        (programs::NVME_COMPLETE_RQ, "tracepoint"),
        (programs::BENCH_TP_EMPTY, "tracepoint ×2"),
        (programs::BENCH_TP_CLOCK, "tracepoint ×2"),
        (programs::BENCH_TP_ATOMIC, "tracepoint ×2"),
        (programs::BENCH_RAW_EMPTY, "raw_tp ×2"),
        (programs::BENCH_RAW_CLOCK, "raw_tp ×2"),
    ] {
        let (ns, n) = d[name];
        println!(
            "| `{name}` | {hook} | {n} | {:.0} | {:.0} | {:.2} |",
            ns as f64 / n.max(1) as f64,
            per_cmd(ns),
            per_cmd(ns) / floor
        );
    }
    println!(
        "| **ours (setup + complete)** | tracepoint | {} | | {ours:.0} | **{:.2}** |",
        commands * 2,
        ours / floor
    );
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

/// The OPS keys of a node: read, write and connect per I/O queue, admin and fabrics on queue 0.
fn op_keys(controllers: u32, queues: u16) -> Vec<OpKey> {
    let key = |ctrl_id, qid, c: OpClass| OpKey {
        ctrl_id,
        qid,
        opclass: c as u8,
        _pad: 0,
    };
    let mut keys = Vec::new();
    for c in 0..controllers {
        keys.push(key(c, 0, OpClass::Admin));
        keys.push(key(c, 0, OpClass::Fabrics));
        for q in 1..=queues {
            for class in [OpClass::Read, OpClass::Write, OpClass::Fabrics] {
                keys.push(key(c, q, class));
            }
        }
    }
    keys
}

/// Moves every key's counters as a drain interval of I/O would: 100 commands spread over 16
/// buckets around 100 µs (a different spread per round, so deltas are never empty).
fn bump(ebpf: &mut Ebpf, keys: &[OpKey], queues: &[QueueKey], round: u64) -> anyhow::Result<()> {
    let mut ops = BpfHashMap::<&mut MapData, OpKey, OpStats>::try_from(
        ebpf.map_mut(maps::OPS).context("map OPS")?,
    )?;
    let mut v = OpStats::default();
    for k in keys {
        let mut s = ops.get(k, 0).unwrap_or(v);
        s.commands += 100;
        s.bytes += 100 * 4096;
        for i in 0..16u64 {
            let ns = 60_000 + (i * 5 + round % 5) * 5_000;
            s.buckets[latency_bucket(ns)] = s.buckets[latency_bucket(ns)].wrapping_add(6);
            s.latency_sum_ns += ns * 6;
        }
        ops.insert(k, s, 0)?;
        v = OpStats::default();
    }
    let mut qs = BpfHashMap::<&mut MapData, QueueKey, QueueState>::try_from(
        ebpf.map_mut(maps::QUEUES).context("map QUEUES")?,
    )?;
    for k in queues {
        let mut s = qs.get(k, 0).unwrap_or_default();
        s.submitted += 101;
        s.completed += 100;
        s.busy_ns += 5_000_000;
        s.last_event_ns = round;
        qs.insert(k, s, 0)?;
    }
    Ok(())
}

fn drain_bench(controllers: u32, queues: u16, drains: usize) -> anyhow::Result<()> {
    let keys = op_keys(controllers, queues);
    let queue_keys: Vec<QueueKey> = (0..controllers)
        .flat_map(|c| {
            (0..=queues).map(move |q| QueueKey {
                ctrl_id: c,
                qid: q,
                _pad: 0,
            })
        })
        .collect();
    let sysfs = fake_sysfs(controllers)?;
    println!(
        "{controllers} controllers × {queues} I/O queues: {} OPS keys, {} QUEUES keys, {drains} drains per mode",
        keys.len(),
        queue_keys.len()
    );
    println!(
        "| series | drain CPU ms (median / max) | scrape CPU ms (median / max) | scrape bytes |"
    );
    println!("| --- | --- | --- | --- |");
    for per_queue in [false, true] {
        let ebpf = loader::open(
            EBPF_OBJECT,
            &TracepointLayout::default(),
            MapSizes::default(),
        )
        .map_err(|e| anyhow::anyhow!(loader::explain(&e)))?;
        let loaded = Loaded {
            ebpf,
            attached: vec![],
        };
        let mut d = Drainer::new(loaded, sysfs.clone(), per_queue, 60);
        let state = Arc::new(RwLock::new(IoState {
            up: true,
            per_queue,
            ..Default::default()
        }));
        let (stop, _rx) = mpsc::channel();
        let collector = IoCollector::running(state.clone(), stop);
        let mut drain_ms = Vec::new();
        let mut scrape_ms = Vec::new();
        let mut bytes = 0;
        for round in 0..drains as u64 {
            bump(&mut d.loaded_mut().ebpf, &keys, &queue_keys, round)?;
            let t = thread_cpu();
            d.drain_once(&state)?;
            drain_ms.push((thread_cpu() - t).as_secs_f64() * 1e3);
            let t = thread_cpu();
            let mut sink = Sink::new();
            collector.collect(&mut sink)?;
            let mut text = String::new();
            prometheus::TextEncoder::new().encode_utf8(&sink.into_families(), &mut text)?;
            scrape_ms.push((thread_cpu() - t).as_secs_f64() * 1e3);
            bytes = text.len();
        }
        let stat = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[v.len() - 1])
        };
        let (dm, dx) = stat(&mut drain_ms);
        let (sm, sx) = stat(&mut scrape_ms);
        println!(
            "| {} | {dm:.1} / {dx:.1} | {sm:.1} / {sx:.1} | {bytes} |",
            if per_queue {
                "--metrics.per-queue"
            } else {
                "default"
            }
        );
    }
    let _ = std::fs::remove_dir_all(Path::new(&sysfs));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("programs") if args.len() > 1 => programs_bench(&args[1..]),
        Some("drain") => {
            let n = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
            drain_bench(n(1, 8) as u32, n(2, 128) as u16, n(3, 20) as usize)
        }
        _ => bail!(
            "usage: ebpf_bench programs CMD... | ebpf_bench drain [CONTROLLERS QUEUES DRAINS]"
        ),
    }
}
