//! Benchmarks behind BENCHMARKS.md (`cargo xtask bench` runs them in the lab VM).
//!
//! - `ebpf_bench programs [--rounds N] [--bpftrace PATH] CMD...`: each of our pairs against the
//!   floors, the minimal tracer and bpftrace, per command, in one boot (`ebpf_bench/programs.rs`).
//! - `ebpf_bench drain CONTROLLERS QUEUES DRAINS`: the agent's CPU time per drain and per scrape.
//!   The real object's maps are loaded without attaching anything and filled with the keys that
//!   many controllers and I/O queues produce (read, write and connect per I/O queue; admin and
//!   fabrics on queue 0); between drains every key's counters and a few buckets move. The drain
//!   and the `io` collector's scrape (collect + text encoding) run as in the agent.
#[path = "ebpf_bench/bpftrace.rs"]
mod bpftrace;
#[path = "ebpf_bench/programs.rs"]
mod programs;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context as _};
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::Ebpf;
use nvmeof_agent::bpf::io::drain::Drainer;
use nvmeof_agent::bpf::io::{IoSource, IoState};
use nvmeof_agent::bpf::loader::{self, Loaded, MapSizes};
use nvmeof_agent::bpf::EBPF_OBJECT;
use nvmeof_agent::collector::{Collector, Sink};
use nvmeof_agent::collectors::io::IoCollector;
use nvmeof_common::{
    latency_bucket, maps, OpClass, OpKey, OpStats, QueueKey, QueueState, TracepointLayout,
};

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

/// Moves every key's counters as a drain interval of I/O would: 96 commands spread over 16
/// buckets around 100 µs (a different spread per round, so deltas are never empty).
fn bump(ebpf: &mut Ebpf, keys: &[OpKey], queues: &[QueueKey], round: u64) -> anyhow::Result<()> {
    let mut ops = BpfHashMap::<&mut MapData, OpKey, OpStats>::try_from(
        ebpf.map_mut(maps::OPS).context("map OPS")?,
    )?;
    let mut v = OpStats::default();
    for k in keys {
        let mut s = ops.get(k, 0).unwrap_or(v);
        s.bytes += 96 * 4096;
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
            &loader::Layouts {
                tracepoint: Some(TracepointLayout::default()),
                request: None,
                module_tracepoints: None,
                timeouts: Default::default(),
            },
            MapSizes::default(),
        )
        .map_err(|e| anyhow::anyhow!(loader::explain(&e)))?;
        let loaded = Loaded::detached(ebpf, loader::AttachMode::Tracepoint);
        let mut d = Drainer::new(loaded, sysfs.clone(), per_queue, 60);
        let state = Arc::new(RwLock::new(IoState {
            up: true,
            per_queue,
            ..Default::default()
        }));
        let collector = IoCollector::new(IoSource::shared(state.clone()));
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
            let text = nvmeof_agent::exposition::text::encode(&sink.into_families());
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
        Some("programs") => {
            let mut rest = &args[1..];
            let mut rounds = 1;
            let mut bpftrace = None;
            loop {
                match rest.first().map(String::as_str) {
                    Some("--rounds") => {
                        let n = rest.get(1).and_then(|s| s.parse().ok()).filter(|&n| n > 0);
                        rounds = n.context("--rounds takes a positive number")?;
                    }
                    Some("--bpftrace") => {
                        let p = rest.get(1).context("--bpftrace takes a path")?;
                        bpftrace = Some(PathBuf::from(p));
                    }
                    _ => break,
                }
                rest = &rest[2..];
            }
            if rest.is_empty() {
                bail!("ebpf_bench programs: no workload command");
            }
            programs::run(rounds, bpftrace, rest)
        }
        Some("drain") => {
            let n = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
            drain_bench(n(1, 8) as u32, n(2, 128) as u16, n(3, 20) as usize)
        }
        _ => bail!(
            "usage: ebpf_bench programs [--rounds N] [--bpftrace PATH] CMD... | ebpf_bench drain [CONTROLLERS QUEUES DRAINS]"
        ),
    }
}
