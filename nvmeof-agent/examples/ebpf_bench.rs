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
#[path = "ebpf_bench/variants.rs"]
mod variants;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context as _};
use aya::maps::{Array, MapData};
use aya::Ebpf;
use nvmeof_agent::bpf::io::drain::Drainer;
use nvmeof_agent::bpf::io::load::{self, Loaded, MapSizes};
use nvmeof_agent::bpf::io::{IoSource, IoState};
use nvmeof_agent::bpf::loader;
use nvmeof_agent::bpf::EBPF_OBJECT;
use nvmeof_agent::collector::{Collector, Scrape, Sink};
use nvmeof_agent::collectors::io::IoCollector;
use nvmeof_common::{
    latency_bucket, maps, OpClass, OpStats, QueueState, SlotLayout, TracepointLayout,
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
        slots: Some(slots),
        ..MapSizes::default()
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
        let ebpf = load::open(
            EBPF_OBJECT,
            &load::Layouts {
                tracepoint: Some(TracepointLayout::default()),
                request: None,
                ..Default::default()
            },
            sizes,
        )
        .map_err(|e| anyhow::anyhow!(loader::explain(&e)))?;
        let loaded = Loaded::detached(ebpf, load::AttachMode::Tracepoint, sizes);
        let mut d = Drainer::new(loaded, sysfs.clone())?;
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
            collector.collect(&Scrape::new(), &mut sink)?;
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
