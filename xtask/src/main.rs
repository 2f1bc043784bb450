//! `cargo xtask`: the project's commands. `run` and `test` are the README's quick start.
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use xtask::bootstrap::STATIC_TARGET;
use xtask::cmd::{self, say};
use xtask::kernel::{self, Series};
use xtask::lab::{Lab, LabOptions};
use xtask::{arm64, bench, bootstrap, cache, capture, deploy_tools};

#[derive(Parser)]
#[command(about = "Build, lab and test commands of nvmeof-exporter")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and the lab need (Debian packages, rust-src, bpf-linker).
    Bootstrap,
    /// Bootstrap, then build the agent (release) with its eBPF object inside.
    Build,
    /// Bootstrap, then build the aarch64 static binary (the same eBPF object inside), run the
    /// agent's fixture-tree tests as aarch64 binaries under qemu-aarch64-static, and make the
    /// multi-arch image manifest localhost/nvmeof-exporter:VERSION (amd64 and arm64) with podman.
    BuildArm64 {
        /// Only the binary: no tests under qemu, no image.
        #[arg(long)]
        no_test: bool,
        /// Arguments passed on to the test binaries.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the exporter against the lab VM, serving real metrics on host loopback until stopped.
    Run {
        #[arg(long, default_value = "6.1")]
        kernel: Series,
        /// Host loopback port the agent's metrics are forwarded to.
        #[arg(long, default_value_t = 9856)]
        port: u16,
    },
    /// Every test: unit, golden and lab tests (the lab boots the chosen kernels).
    Test {
        /// Kernels the lab tests run on (repeatable); 6.1 by default.
        #[arg(long = "kernel", default_values = ["6.1"])]
        kernels: Vec<Series>,
        /// Arguments passed on to the test binaries (a filter, --nocapture, ...).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Fetch a kernel and build its out-of-tree modules (cached).
    Fetch {
        #[arg(long, default_value = "6.1")]
        kernel: Series,
    },
    /// Capture tracepoint formats and sysfs trees from the lab into tests/fixtures.
    Capture {
        #[arg(long = "kernel", default_values = ["6.1"])]
        kernels: Vec<Series>,
    },
    /// Capture raw SMART / Identify / Error log pages and nvme-cli's reading of them from the
    /// lab's PCIe controller and one controller of each fabric (TCP, RDMA, FC, loop) into
    /// nvmeof-agent/tests/fixtures/smart/captured.
    CaptureSmart {
        #[arg(long, default_value = "6.1")]
        kernel: Series,
    },
    /// The figures of BENCHMARKS.md: program cost per command against floors, drain and scrape
    /// CPU time at 8 controllers × 128 queues; one lab boot.
    Bench {
        #[arg(long, default_value = "6.1")]
        kernel: Series,
        /// vCPUs of the lab VM. Multi-threaded TCG emulates a guest's locked instructions for
        /// vCPUs that run in parallel, and a single vCPU has none: 1 against 2 shows that price.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
        smp: u32,
        /// The guest's clock source. `tsc`, what hardware nodes run: under TCG a read is a
        /// host clock read. `hpet`, what the guest picks by itself under TCG: every read an
        /// emulated MMIO access of several microseconds, which then weighs on every variant.
        #[arg(long, default_value = "tsc", value_parser = ["tsc", "hpet"])]
        clocksource: String,
    },
    /// One scrape's cost beside node_exporter's nvme collector (from Debian's archive), on the
    /// lab's captured 6.1 sysfs tree, natively on this host: BENCHMARKS.md's scrape table.
    BenchScrape {
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        #[arg(long, default_value_t = 200)]
        per_round: u32,
    },
    /// The agent's CPU per scrape and resident memory on a lab node beside node_exporter (both
    /// with their defaults, from Debian's archive), in one boot: BENCHMARKS.md's weight table.
    BenchWeight {
        #[arg(long, default_value = "6.1")]
        kernel: Series,
    },
    /// The parsers under random and mutated input (nvmeof-agent/tests/fuzz.rs), optimised but
    /// with overflow checks on: `per_parser` inputs for each (a twentieth for the web config,
    /// which goes through a file); the default comes to twelve million in all.
    Fuzz {
        #[arg(long, default_value_t = 2_000_000)]
        per_parser: u32,
    },
    /// Write the alerting rules and the dashboard from their one source (xtask/src/monitoring),
    /// then render the Helm chart with its default values into
    /// deploy/kubernetes/nvmeof-exporter.yaml (the plain manifests for `kubectl apply`).
    RenderDeploy,
    /// Fold the support records the lab tests left in the cache into docs/support/runs.tsv and
    /// render docs/support.md's matrix (target × transport × kernel) from it.
    Support,
    /// Boot the lab (with the agent) and run one guest script (at most 30 min), printing its output.
    Exec {
        #[arg(long, default_value = "6.1")]
        kernel: Series,
        script: String,
    },
}

/// The agent is built as what ships: one static binary (musl), which the lab then runs.
fn agent_binary() -> PathBuf {
    cache::workspace()
        .join("target")
        .join(STATIC_TARGET)
        .join("release/nvmeof-exporter")
}

fn build_agent() -> Result<PathBuf> {
    say(format!(
        "build: cargo build --release --target {STATIC_TARGET} -p nvmeof-agent --bin nvmeof-exporter \
         (static; the eBPF object is built and embedded)"
    ));
    xtask::bootstrap::build_static_agent(["--bin", "nvmeof-exporter"])?;
    let bin = agent_binary();
    let elf = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    if xtask::elf::interpreter(&elf)?.is_some() {
        anyhow::bail!(
            "{} is dynamically linked: it would not run in a FROM-scratch image",
            bin.display()
        );
    }
    say(format!(
        "build: {} is static (no program interpreter)",
        bin.display()
    ));
    Ok(bin)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Bootstrap => bootstrap::run(),
        Cmd::Build => {
            bootstrap::run()?;
            let bin = build_agent()?;
            say(format!("build: {}", bin.display()));
            Ok(())
        }
        Cmd::BuildArm64 { no_test, args } => {
            bootstrap::run()?;
            let started = std::time::Instant::now();
            let aarch64 = arm64::build()?;
            say(format!(
                "build-arm64: binary built in {:.0} s",
                started.elapsed().as_secs_f64()
            ));
            if no_test {
                return Ok(());
            }
            arm64::test(&args)?;
            let x86_64 = build_agent()?;
            arm64::manifest(&x86_64, &aarch64)?;
            say(format!(
                "build-arm64: done in {:.0} s",
                started.elapsed().as_secs_f64()
            ));
            Ok(())
        }
        Cmd::Fetch { kernel } => {
            bootstrap::run()?;
            let k = kernel::prepare(kernel)?;
            say(format!(
                "kernel: {} ready at {}",
                k.release,
                k.vmlinuz.display()
            ));
            for l in &k.limits {
                say(format!("kernel: limit: {l}"));
            }
            Ok(())
        }
        Cmd::Run { kernel, port } => run(kernel, port),
        Cmd::Test { kernels, args } => test(&kernels, &args),
        Cmd::Capture { kernels } => {
            bootstrap::run()?;
            let agent = build_agent()?;
            for k in kernels {
                capture::capture(k, &agent)?;
            }
            Ok(())
        }
        Cmd::CaptureSmart { kernel } => {
            bootstrap::run()?;
            let agent = build_agent()?;
            let pages = bench::build_example("nvme_pages")?;
            capture::capture_smart(kernel, &agent, &pages)
        }
        Cmd::Bench {
            kernel,
            smp,
            clocksource,
        } => {
            bootstrap::run()?;
            let agent = build_agent()?;
            bench::run(kernel, smp, &clocksource, agent)
        }
        Cmd::BenchScrape { rounds, per_round } => {
            bootstrap::run()?;
            let agent = build_agent()?;
            xtask::scrape_peer::run(&agent, rounds, per_round)
        }
        Cmd::BenchWeight { kernel } => {
            bootstrap::run()?;
            let agent = build_agent()?;
            xtask::weight::run(kernel, agent)
        }
        Cmd::Fuzz { per_parser } => {
            // Release speed, debug's arithmetic checks: an overflow is a finding, not a wrap.
            cmd::run(
                Command::new("cargo")
                    .current_dir(cache::workspace())
                    .env("NVMEOF_FUZZ_CASES", per_parser.to_string())
                    .env("AYA_BUILD_SKIP", "1")
                    .env("CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS", "true")
                    .env("CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS", "true")
                    .args(["test", "--release", "-p", "nvmeof-agent", "--test", "fuzz"])
                    .args(["--", "--nocapture", "--test-threads=2"]),
            )
        }
        Cmd::Support => xtask::support::update(&cache::workspace()),
        Cmd::RenderDeploy => {
            for (rel, text) in xtask::monitoring::rendered(&Default::default()) {
                let path = cache::workspace().join(rel);
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                say(format!("render-deploy: {}", path.display()));
            }
            deploy_tools::install()?;
            let path = cache::workspace().join(deploy_tools::RENDERED);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, deploy_tools::plain_manifests()?)
                .with_context(|| format!("writing {}", path.display()))?;
            say(format!("render-deploy: {}", path.display()));
            Ok(())
        }
        Cmd::Exec { kernel, script } => {
            bootstrap::run()?;
            let mut opts = LabOptions::standard(kernel);
            opts.agent = Some(build_agent()?);
            let mut lab = Lab::boot(&opts)?;
            // A one-off script may measure for minutes (an agent at a fleet's cadence).
            let o = lab.sh_timeout(&script, Duration::from_secs(1800))?;
            print!("{}", o.out);
            std::process::exit(o.rc);
        }
    }
}

fn run(series: Series, port: u16) -> Result<()> {
    bootstrap::run()?;
    let agent = build_agent()?;
    let mut opts = LabOptions::standard(series);
    opts.agent = Some(agent);
    opts.host_port = Some(port);
    let mut lab = Lab::boot(&opts)?;
    let topo = lab.sh("topology; controllers")?;
    print!("{}", topo.out);
    lab.sh_ok(&format!("agent_start {}", xtask::lab::LAB_AGENT_ARGS))
        .context("starting the agent in the lab")?;
    // A gentle, bounded background load so the I/O metrics move: 1 MiB to each namespace every
    // two seconds, for at most two hours.
    lab.sh_ok(
        "( i=0; while [ $i -lt 3600 ]; do for s in tcp rdma fc loop; do d=$(dev_of $s) && \
         dd if=/dev/zero of=$d bs=64k count=16 oflag=direct 2>/dev/null; done; sleep 2; \
         i=$((i+1)); done ) > /dev/null 2>&1 &",
    )?;
    println!();
    println!(
        "nvmeof-exporter is serving real metrics from the lab VM (kernel {}):",
        lab.kernel.release
    );
    println!("    curl http://127.0.0.1:{port}/metrics");
    println!("Press Ctrl-C to stop.");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The style gate: rustfmt, and clippy with warnings as errors on the host crates (lab tests
/// included) and on the eBPF crate (nightly, for its BPF target).
fn lint() -> Result<()> {
    let ws = cache::workspace();
    say("lint: cargo fmt --all --check");
    cmd::run(
        Command::new("cargo")
            .current_dir(&ws)
            .args(["fmt", "--all", "--check"]),
    )?;
    say("lint: cargo clippy (host crates, lab tests included) -D warnings");
    cmd::run(Command::new("cargo").current_dir(&ws).args([
        "clippy",
        "--workspace",
        "--exclude",
        "nvmeof-ebpf",
        "--all-targets",
        "--features",
        "nvmeof-tests/lab",
        "--",
        "-D",
        "warnings",
    ]))?;
    say("lint: cargo +nightly clippy (eBPF crate, bpfel-unknown-none) -D warnings");
    cmd::run(
        Command::new("cargo")
            .current_dir(ws.join("nvmeof-ebpf"))
            .args([
                "+nightly",
                "clippy",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--bins",
                "--",
                "-D",
                "warnings",
            ]),
    )?;
    Ok(())
}

fn test(kernels: &[Series], args: &[String]) -> Result<()> {
    bootstrap::run()?;
    lint()?;
    let agent = build_agent()?;
    // The whole run also builds the arm64 binary and the multi-arch image the deploy tests
    // inspect, and after the native tests runs the arm64 ones under qemu-user (about 8 minutes
    // cold on 2 cores); a run that names tests is a developer's loop and skips it.
    let whole = args.is_empty();
    if whole {
        let started = std::time::Instant::now();
        let aarch64 = arm64::build()?;
        arm64::manifest(&agent, &aarch64)?;
        say(format!(
            "test: arm64 build and the multi-arch image in {:.0} s",
            started.elapsed().as_secs_f64()
        ));
    }
    let names: Vec<&str> = kernels.iter().map(|k| k.name()).collect();
    for k in kernels {
        let k = kernel::prepare(*k)?;
        say(format!("kernel: {} ready", k.release));
    }
    say(format!(
        "test: cargo test (lab kernels: {})",
        names.join(", ")
    ));
    let mut c = Command::new("cargo");
    c.current_dir(cache::workspace())
        .env("NVMEOF_AGENT_BIN", &agent)
        .env("NVMEOF_LAB_KERNELS", names.join(","))
        .args([
            "test",
            "--no-fail-fast",
            "--workspace",
            "--exclude",
            "nvmeof-ebpf",
            "--features",
            "nvmeof-tests/lab",
        ]);
    if !args.is_empty() {
        c.arg("--").args(args);
    }
    // cargo's own output goes through, and the run closes with one line that adds up every test
    // binary's result (cargo's last lines are doc-test binaries, often empty).
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let mut totals = Totals::default();
    let out = child.stdout.take().context("cargo test stdout")?;
    for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
        let line = line?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child.wait()?;
    println!(
        "summary: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    // After the summary, so that one emulated failure neither hides the native results nor
    // stops them from running.
    let arm64_tests = if whole {
        say("test: the arm64 binaries' tests under qemu-user");
        arm64::test(&[])
    } else {
        Ok(())
    };
    if !status.success() {
        anyhow::bail!("cargo test failed: {status}");
    }
    arm64_tests.context("the arm64 tests under qemu-user")
}

/// The counts of cargo's `test result:` lines, added up.
#[derive(Default, Debug, PartialEq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn adds_up_cargo_test_results() {
        let mut t = Totals::default();
        t.add("test result: ok. 102 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.70s");
        t.add("test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 3s");
        t.add("running 3 tests");
        assert_eq!(
            t,
            Totals {
                passed: 103,
                failed: 2,
                ignored: 1
            }
        );
    }
}
