//! `cargo xtask bench-weight`: the agent's weight on a lab node beside node_exporter, in one boot
//! (issue goals: whole-process CPU per scrape at most half node_exporter's, resident memory at
//! most 30 MiB steady and 64 MiB under 50 concurrent scrapes). Both run in the guest as a node
//! runs them: the agent with every default collector (eBPF programs attached, SMART polled, state
//! kprobes), node_exporter (Debian's package, the release of the lab's kernel) with its defaults,
//! its `nvme` collector among them. Each is scraped in turn, from the guest, by curl:
//! - back to back (`BURST` scrapes, in alternating rounds): CPU per scrape with the scrape's own
//!   cost dominating;
//! - at a fleet's cadence (`CADENCE_SCRAPES` scrapes `CADENCE` apart, both in the same window): the
//!   whole process's CPU over the window per scrape, background work (drains, polls, Go's runtime)
//!   included;
//! - resident memory steady after both, and the high-water mark over `CONCURRENT` scrapes at once.
//!
//! CPU is each exporter's cgroup's `usage_usec` (`cpu.stat`: the scheduler's exact run time,
//! threads that have ended included; utime + stime from `/proc/PID/stat` are 10 ms ticks, too
//! coarse for a scrape of tens of ms), memory `VmRSS` / `VmHWM` from `/proc/PID/status`.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::kernel::Series;
use crate::lab::{Lab, LabOptions, LAB_AGENT_ARGS};

/// Back-to-back scrapes: `ROUNDS` rounds of `ROUND` each, the two exporters in turn.
const ROUNDS: u32 = 5;
const ROUND: u32 = 20;
const BURST: u32 = ROUNDS * ROUND;
const CADENCE: u32 = 15;
const CADENCE_SCRAPES: u32 = 8;
const CONCURRENT: u32 = 50;
const PEER_PORT: u16 = 9100;

pub fn run(series: Series, agent: PathBuf) -> Result<()> {
    let peer = crate::scrape_peer::node_exporter()?;
    let mut opts = LabOptions::new(series);
    opts.agent = Some(agent);
    opts.extra_files
        .push((peer, PathBuf::from("/usr/bin/node_exporter")));
    let mut lab = Lab::boot(&opts)?;
    let script = format!(
        r#"topology > /dev/null || exit 9
agent_start {LAB_AGENT_ARGS} > /dev/null || exit 8
/usr/bin/node_exporter --web.listen-address=127.0.0.1:{PEER_PORT} > /tmp/peer.log 2>&1 &
echo $! > /tmp/peer.pid
i=0; until curl -sf http://127.0.0.1:{PEER_PORT}/metrics > /dev/null; do i=$((i+1)); [ $i -lt 100 ] || exit 7; sleep 0.1; done
# Some I/O so the eBPF side carries data, then both settle.
d=$(dev_of tcp) && dd if=$d of=/dev/null bs=4k count=2000 iflag=direct 2>/dev/null
sleep 5
a=$(cat /tmp/agent.pid); p=$(cat /tmp/peer.pid)
ua=http://127.0.0.1:$AGENT_PORT/metrics; up=http://127.0.0.1:{PEER_PORT}/metrics
# Each exporter in a cgroup of its own, for its exact CPU time.
grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts || mount -t cgroup2 none /sys/fs/cgroup || exit 6
for x in $a $p; do mkdir -p /sys/fs/cgroup/w$x && echo $x > /sys/fs/cgroup/w$x/cgroup.procs || exit 6; done
cpu_us() {{ awk '$1 == "usage_usec" {{print $2}}' /sys/fs/cgroup/w$1/cpu.stat; }}
kib() {{ awk -v f="$2:" '$1 == f {{print $2}}' /proc/$1/status; }}
burst() {{ n=0; while [ $n -lt {ROUND} ]; do curl -sf $1 > /dev/null; n=$((n+1)); done; }}
# Back to back, in alternating rounds: whatever else loads the VM loads both alike.
ba=0; bp=0; r=0
while [ $r -lt {ROUNDS} ]; do
    t=$(cpu_us $a); burst $ua; ba=$((ba + $(cpu_us $a) - t))
    t=$(cpu_us $p); burst $up; bp=$((bp + $(cpu_us $p) - t))
    r=$((r+1))
done
# At a fleet's cadence, both in the same window: the whole process, background work included.
ca=$(cpu_us $a); cp=$(cpu_us $p); n=0
while [ $n -lt {CADENCE_SCRAPES} ]; do curl -sf $ua > /dev/null; curl -sf $up > /dev/null; sleep {CADENCE}; n=$((n+1)); done
ca=$(( $(cpu_us $a) - ca )); cp=$(( $(cpu_us $p) - cp ))
sa=$(kib $a VmRSS); sp=$(kib $p VmRSS)
# `wait` on the scrapes' pids only: a bare one would wait for node_exporter too.
together() {{ pids=; n=0; while [ $n -lt {CONCURRENT} ]; do curl -sf $1 > /dev/null & pids="$pids $!"; n=$((n+1)); done; wait $pids; }}
together $ua
together $up
sleep 1
echo "@@ agent series=$(curl -sf $ua | grep -vc '^#') bytes=$(curl -sf $ua | wc -c) burst_us=$ba cadence_us=$ca steady_kib=$sa hwm_kib=$(kib $a VmHWM) after_kib=$(kib $a VmRSS)"
echo "@@ peer series=$(curl -sf $up | grep -vc '^#') bytes=$(curl -sf $up | wc -c) burst_us=$bp cadence_us=$cp steady_kib=$sp hwm_kib=$(kib $p VmHWM) after_kib=$(kib $p VmRSS)"
"#
    );
    let out = lab
        .sh_timeout(&script, Duration::from_secs(1800))
        .context("running the weight benchmark")?;
    if out.rc != 0 {
        anyhow::bail!("weight benchmark failed (exit {}):\n{}", out.rc, out.out);
    }
    let rows: Vec<Row> = out
        .out
        .lines()
        .filter_map(|l| l.strip_prefix("@@ "))
        .map(Row::parse)
        .collect::<Result<_>>()?;
    let [agent, peer] = rows.as_slice() else {
        anyhow::bail!("expected two result lines:\n{}", out.out);
    };
    println!(
        "lab: {} ({} vCPUs, TCG); {BURST} scrapes back to back, then {CADENCE_SCRAPES} at {CADENCE} s, \
         then {CONCURRENT} at once\n",
        lab.kernel.release, opts.cpus
    );
    println!("| exporter | series | page bytes | CPU ms per scrape, back to back | CPU ms per scrape at {CADENCE} s (whole process) | RSS MiB steady | RSS MiB peak ({CONCURRENT} at once) | RSS MiB after |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, r) in [
        ("nvmeof-exporter (defaults)", agent),
        ("node_exporter (defaults)", peer),
    ] {
        println!(
            "| {name} | {} | {} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} |",
            r.series,
            r.bytes,
            r.burst_ms_per_scrape(),
            r.cadence_ms_per_scrape(),
            r.steady_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0,
            r.after_kib as f64 / 1024.0
        );
    }
    println!(
        "\nratios nvmeof-exporter / node_exporter: CPU per scrape back to back {:.2}, at {CADENCE} s {:.2}; RSS steady {:.2}, peak {:.2}",
        agent.burst_ms_per_scrape() / peer.burst_ms_per_scrape(),
        agent.cadence_ms_per_scrape() / peer.cadence_ms_per_scrape(),
        agent.steady_kib as f64 / peer.steady_kib as f64,
        agent.hwm_kib as f64 / peer.hwm_kib as f64,
    );
    Ok(())
}

/// One exporter's figures, from its `@@` line.
struct Row {
    series: u64,
    bytes: u64,
    burst_us: u64,
    cadence_us: u64,
    steady_kib: u64,
    hwm_kib: u64,
    after_kib: u64,
}

impl Row {
    fn parse(line: &str) -> Result<Row> {
        let field = |name: &str| -> Result<u64> {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .with_context(|| format!("{name} in {line:?}"))?
                .parse::<u64>()
                .with_context(|| format!("{name} in {line:?}"))
        };
        Ok(Row {
            series: field("series")?,
            bytes: field("bytes")?,
            burst_us: field("burst_us")?,
            cadence_us: field("cadence_us")?,
            steady_kib: field("steady_kib")?,
            hwm_kib: field("hwm_kib")?,
            after_kib: field("after_kib")?,
        })
    }

    fn burst_ms_per_scrape(&self) -> f64 {
        self.burst_us as f64 / 1000.0 / f64::from(BURST)
    }

    fn cadence_ms_per_scrape(&self) -> f64 {
        self.cadence_us as f64 / 1000.0 / f64::from(CADENCE_SCRAPES)
    }
}
