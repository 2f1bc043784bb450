//! `cargo xtask bench-scrape`: what a scrape costs this exporter beside node_exporter's `nvme`
//! collector (the peer SREs run today), on the same sysfs tree captured from the lab, in one run.
//! node_exporter comes from Debian's archive (`prometheus-node-exporter`, fetched and unpacked
//! into the cache, never installed); both serve on host loopback and are scraped in turns, the
//! same number of times. Figures: wall time per scrape as the scraper sees it, the server's CPU
//! time per scrape (utime + stime from /proc), page size and series, and the ratios.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::apt::{self, Apt};
use crate::cache;
use crate::cmd::say;
use crate::lab::{free_port, http_get};

/// The Debian release the peer comes from: the one the lab's default kernel (6.1) is from.
const PEER_RELEASE: &str = "bookworm";
const PEER_PACKAGE: &str = "prometheus-node-exporter";

/// node_exporter's binary, from Debian's package, unpacked under the cache.
pub fn node_exporter() -> Result<PathBuf> {
    let apt = Apt::for_release(PEER_RELEASE)?;
    let versions = apt.versions(PEER_PACKAGE)?;
    let newest = versions
        .iter()
        .fold(None::<&String>, |best, v| match best {
            Some(b) if !apt::version_gt(v, b) => Some(b),
            _ => Some(v),
        })
        .with_context(|| format!("no {PEER_PACKAGE} in {PEER_RELEASE}"))?
        .clone();
    let dir = cache::dir("peers")?;
    let (deb, _) = apt.download(PEER_PACKAGE, &newest, &dir)?;
    let root = dir.join(format!("{PEER_PACKAGE}-{}", newest.replace(':', "_")));
    let bin = root.join("usr/bin/prometheus-node-exporter");
    if !bin.is_file() {
        apt::unpack(&deb, &root)?;
    }
    say(format!(
        "bench-scrape: node_exporter {newest} from Debian {PEER_RELEASE}"
    ));
    Ok(bin)
}

/// CPU time (user + system) a process has used so far.
fn cpu(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces, inside parentheses).
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

struct Server {
    name: &'static str,
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(name: &'static str, bin: &Path, args: &[String], port: u16) -> Result<Server> {
    let child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let s = Server { name, child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok((200, _, _)) = http_get(port, "/metrics") {
            return Ok(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{name} did not answer on 127.0.0.1:{port}")
}

#[derive(Default)]
struct Figures {
    wall: Vec<Duration>,
    cpu: Duration,
    scrapes: u32,
    bytes: usize,
    series: usize,
}

pub fn run(agent: &Path, rounds: u32, per_round: u32) -> Result<()> {
    let tree = cache::workspace().join("tests/fixtures/6.1/sys");
    if !tree.is_dir() {
        bail!("no captured tree at {}", tree.display());
    }
    let peer = node_exporter()?;
    let sysfs = format!("--path.sysfs={}", tree.display());
    let (p_ours, p_peer) = (free_port()?, free_port()?);
    let mut servers = [
        start(
            "nvmeof-exporter",
            agent,
            &[
                format!("--web.listen-address=127.0.0.1:{p_ours}"),
                sysfs.clone(),
                // The tree stands for the kernel's sysfs; eBPF and admin commands would read
                // this machine's kernel and devices instead.
                "--no-collector.io".into(),
                "--no-collector.smart".into(),
            ],
            p_ours,
        )?,
        start(
            "node_exporter --collector.nvme",
            &peer,
            &[
                format!("--web.listen-address=127.0.0.1:{p_peer}"),
                sysfs,
                "--collector.disable-defaults".into(),
                "--collector.nvme".into(),
                "--web.disable-exporter-metrics".into(),
            ],
            p_peer,
        )?,
    ];
    let mut figures: Vec<Figures> = servers.iter().map(|_| Figures::default()).collect();
    for s in &servers {
        for _ in 0..10 {
            http_get(s.port, "/metrics")?;
        }
    }
    // In turns, so that both see the same machine.
    for _ in 0..rounds {
        for (s, f) in servers.iter_mut().zip(figures.iter_mut()) {
            let cpu0 = cpu(s.child.id())?;
            for _ in 0..per_round {
                let (status, body, took) = http_get(s.port, "/metrics")?;
                if status != 200 {
                    bail!("{}: HTTP {status}", s.name);
                }
                f.wall.push(took);
                f.bytes = body.len();
                f.series = body
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                    .count();
            }
            f.cpu += cpu(s.child.id())? - cpu0;
            f.scrapes += per_round;
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "bench-scrape: {} scrapes each ({rounds} rounds of {per_round}, in turns) of {}",
        rounds * per_round,
        tree.display()
    );
    println!("| exporter | series | page bytes | wall ms p50 / p99 | CPU ms per scrape |");
    println!("| --- | --- | --- | --- | --- |");
    let mut p50s = Vec::new();
    let mut cpus = Vec::new();
    for (s, f) in servers.iter().zip(figures.iter_mut()) {
        f.wall.sort();
        let p = |q: f64| f.wall[((f.wall.len() - 1) as f64 * q) as usize];
        let cpu_per = f.cpu / f.scrapes;
        println!(
            "| {} | {} | {} | {:.2} / {:.2} | {:.3} |",
            s.name,
            f.series,
            f.bytes,
            ms(p(0.5)),
            ms(p(0.99)),
            ms(cpu_per)
        );
        p50s.push(p(0.5));
        cpus.push(cpu_per);
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "ratio nvmeof-exporter / node_exporter: wall p50 {:.2}×, CPU per scrape {:.2}×, series {:.1}×",
        ratio(p50s[0], p50s[1]),
        ratio(cpus[0], cpus[1]),
        figures[0].series as f64 / figures[1].series.max(1) as f64
    );
    Ok(())
}
