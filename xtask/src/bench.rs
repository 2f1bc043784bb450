//! `cargo xtask bench [--smp N]`: the figures of BENCHMARKS.md, in one lab boot. Builds the
//! `ebpf_bench` example (nvmeof-agent/examples), boots the lab with it and Debian's bpftrace,
//! and runs there: the programs' run time per command beside the benchmark object's floors and
//! minimal tracer and bpftrace's equivalent script (bpf_stats, one dd per variant and round), the
//! same counters as bpftool shows them, and the agent's CPU time per drain and per scrape with
//! the real maps filled for 8 controllers × 128 I/O queues.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::bootstrap::STATIC_TARGET;
use crate::cmd::say;
use crate::kernel::Series;
use crate::lab::{self, Lab, LabOptions};

/// Direct 4 KiB reads per variant and round of the program benchmark.
pub const READS: u32 = 3000;
/// Rounds of every variant in turn: the medians over them are what BENCHMARKS.md quotes.
pub const ROUNDS: u32 = 5;

/// Builds an example of the agent crate (release; the lab runs `ebpf_bench` and `nvme_pages`)
/// and returns its path.
pub fn build_example(name: &str) -> Result<PathBuf> {
    // Static like the agent: the lab's guest has no copy of the host's shared libraries.
    say(format!(
        "build: cargo build --release --target {STATIC_TARGET} -p nvmeof-agent --example {name}"
    ));
    let release = crate::bootstrap::build_static_agent(["--example", name])?;
    Ok(release.join("examples").join(name))
}

/// `cpus`: the VM's vCPUs (`cargo xtask bench --smp N`); the lab's default is 2. `clocksource`:
/// the guest's (`--clocksource`): `tsc` is trusted as hardware nodes trust it (TCG gives no
/// invariant-TSC flag, so the guest would fall back to the HPET).
pub fn run(series: Series, cpus: u32, clocksource: &str, agent: PathBuf) -> Result<()> {
    let bench = build_example("ebpf_bench")?;
    let mut opts = LabOptions::new(series);
    opts.agent = Some(agent);
    opts.cpus = cpus;
    opts.kernel_args.push(format!("clocksource={clocksource}"));
    if clocksource == "tsc" {
        opts.kernel_args.push("tsc=reliable".to_owned());
    }
    opts.extra_files
        .push((bench, PathBuf::from("/usr/bin/ebpf_bench")));
    // The peer, with its libraries (LLVM and clang: about 200 MB), in this boot only; the
    // initramfs unpacks into the guest's memory, hence the room.
    opts.extra_tools.push("bpftrace");
    opts.memory_mb = opts.memory_mb.max(2048);
    let mut lab = Lab::boot(&opts)?;
    let topo = lab.sh("topology; controllers")?;
    let clock = lab.sh("cat /sys/devices/system/clocksource/clocksource0/current_clocksource")?;
    println!(
        "lab: {} (QEMU {}, {cpus} vCPU{}, clock source {})\n{}",
        lab.kernel.release,
        lab::accel(),
        if cpus == 1 { "" } else { "s" },
        clock.out.trim(),
        topo.out
    );
    // bpftrace compiles its script each round: tens of seconds under TCG.
    let long = Duration::from_secs(3600);
    let programs = lab
        .sh_timeout(
            &format!(
                "d=$(dev_of tcp) || exit 9
                 echo \"workload, per variant and round: dd if=$d of=/dev/null bs=4k count={READS} iflag=direct\"
                 /usr/bin/ebpf_bench programs --rounds {ROUNDS} --bpftrace /usr/bin/bpftrace dd if=$d of=/dev/null bs=4k count={READS} iflag=direct 2>&1 &
                 p=$!
                 sleep 5
                 echo '--- bpftool prog show, 5 s in (the same bpf_prog_info counters; the first variants are ours: the tp_btf pair (`tracing`), then the raw pair)'
                 /usr/bin/bpftool prog show 2>&1 | grep -E 'name (nvme_|bench_)'
                 wait $p"
            ),
            long,
        )
        .context("running the program benchmark")?;
    println!("== programs (bpf_stats, one boot)\n{}", programs.out);
    let drain = lab
        .sh_timeout("/usr/bin/ebpf_bench drain 8 128 20 2>&1", long)
        .context("running the drain benchmark")?;
    println!(
        "== drain and scrape (CPU time of the agent's thread)\n{}",
        drain.out
    );
    if programs.rc != 0 || drain.rc != 0 {
        anyhow::bail!(
            "a benchmark failed (exit codes {} and {})",
            programs.rc,
            drain.rc
        );
    }
    Ok(())
}
