//! Installs what the build and the lab need on a fresh Debian machine, idempotently: Debian
//! packages (QEMU, busybox, the tools copied into the lab VM, a C toolchain for out-of-tree
//! modules, musl-gcc, qemu-user), the nightly toolchain's `rust-src` (for `-Z build-std=core`),
//! the musl targets (the agent ships static, for x86_64 and aarch64), `bpf-linker`, and the deployment checkers in a venv
//! (`deploy_tools`: helm-python-sdk, kubernetes-validate, check-jsonschema, cloudcoil's
//! prometheus-operator models).
//! Each step says whether it found the thing in place or installed it.
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{self, say};

/// Debian packages the build and the lab need, with the program that shows each is there.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "cpio",
    "iproute2",
    "nvme-cli",
    "curl",
    "xz-utils",
    "zstd",
    "gcc",
    "make",
    "libc6-dev",
    "libelf-dev",
    "dwarves",
    "bpftool",
    // Copied into the lab VM: the terminal in which the lab test drives `nvmeof-exporter top`.
    "tmux",
    // The peer of `cargo xtask bench`: its script runs in the benchmark's guest.
    "bpftrace",
    // The C compiler for musl: ring (TLS) builds C, and the shipped binary is static.
    "musl-tools",
    // A real Prometheus (and promtool): the lab tests scrape the agent with it, native
    // histograms on, and lint the exposition. Only the binaries are used; no service starts.
    "prometheus",
    // The venv of the deployment checkers (deploy_tools) is made by Debian's Python.
    "python3-venv",
    // The deploy tests run a container with the chart's securityContext against a host device
    // (SMART's device cgroup question). runc rather than crun, podman's default: crun 1.8
    // refuses this machine's hybrid cgroups.
    "podman",
    "runc",
    // The aarch64 build's tests run under qemu-user (`cargo xtask build-arm64`).
    "qemu-user-static",
    // systemd-analyze: the Ansible role's unit is verified and scored (`security --offline`)
    // by the deploy tests; no systemd needs to run.
    "systemd",
];

/// The target the agent ships for: one static binary.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

/// Builds one target of the agent crate (`["--bin", NAME]`, `["--example", NAME]`) as what
/// ships: release, static (the lab's guest has no copy of the host's shared libraries). Returns
/// the release directory it lands under.
pub fn build_static_agent(target: [&str; 2]) -> Result<PathBuf> {
    cmd::run(
        Command::new("cargo")
            .current_dir(crate::cache::workspace())
            .args(["build", "--release", "--target", STATIC_TARGET])
            .args(["-p", "nvmeof-agent"])
            .args(target),
    )?;
    Ok(crate::cache::workspace()
        .join("target")
        .join(STATIC_TARGET)
        .join("release"))
}
/// The rust targets bootstrap installs: the shipped one and the arm64 build's.
const TARGETS: &[&str] = &[STATIC_TARGET, crate::arm64::TARGET];

pub const BPF_LINKER_VERSION: &str = "0.13.0";
pub const NIGHTLY: &str = "nightly";

pub fn run() -> Result<()> {
    debian_packages()?;
    nightly_rust_src()?;
    static_target()?;
    lint_components()?;
    bpf_linker()?;
    crate::deploy_tools::install()?;
    say("bootstrap: everything in place");
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        say(format!(
            "bootstrap: Debian packages already installed ({})",
            DEBIAN_PACKAGES.len()
        ));
        return Ok(());
    }
    if !is_root() {
        bail!(
            "these Debian packages are missing: {}. Installing them needs root: run \
             `sudo apt-get install -y {}` or run this command as root",
            missing.join(" "),
            missing.join(" ")
        );
    }
    say(format!(
        "bootstrap: installing Debian packages: {}",
        missing.join(" ")
    ));
    cmd::run(Command::new("apt-get").args(["update", "-qq"]))
        .context("apt-get update (is the Debian archive reachable?)")?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )?;
    Ok(())
}

fn nightly_rust_src() -> Result<()> {
    if !cmd::have("rustup") {
        bail!(
            "rustup is not on PATH: the eBPF build needs rustup's nightly toolchain with rust-src"
        );
    }
    let toolchains = cmd::output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        say("bootstrap: installing the nightly toolchain (minimal profile)");
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
        ]))
        .context("installing the nightly toolchain")?;
    }
    let components = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    // rust-src for -Z build-std=core; clippy for the eBPF crate's lint (the lint step of
    // `cargo xtask test`).
    for component in ["rust-src", "clippy"] {
        if components.lines().any(|l| l.starts_with(component)) {
            say(format!("bootstrap: nightly {component} already installed"));
            continue;
        }
        say(format!(
            "bootstrap: adding {component} to the nightly toolchain"
        ));
        cmd::run(Command::new("rustup").args([
            "component",
            "add",
            component,
            "--toolchain",
            NIGHTLY,
        ]))
        .with_context(|| format!("rustup component add {component} --toolchain nightly"))?;
    }
    Ok(())
}

/// rustfmt and clippy of the default toolchain, for the lint step of `cargo xtask test`.
fn lint_components() -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args(["component", "list", "--installed"]))?;
    for component in ["rustfmt", "clippy"] {
        if installed.lines().any(|l| l.starts_with(component)) {
            continue;
        }
        say(format!("bootstrap: adding {component}"));
        cmd::run(Command::new("rustup").args(["component", "add", component]))
            .with_context(|| format!("rustup component add {component}"))?;
    }
    Ok(())
}

/// The musl targets of the default toolchain: the agent ships as one static binary, for x86_64
/// and aarch64.
fn static_target() -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    for target in TARGETS {
        if installed.lines().any(|l| l.trim() == *target) {
            say(format!("bootstrap: rust target {target} already installed"));
            continue;
        }
        say(format!("bootstrap: adding the rust target {target}"));
        cmd::run(Command::new("rustup").args(["target", "add", target]))
            .with_context(|| format!("rustup target add {target}"))?;
    }
    Ok(())
}

/// The nightly's own libLLVM, which bpf-linker links against (no LLVM from apt needed). Its file
/// name carries the nightly's version, so it is looked up, never assumed.
fn nightly_libllvm() -> Result<(PathBuf, PathBuf)> {
    let sysroot = cmd::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    let mut found = None;
    for e in std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM.so.")
            || (name.starts_with("libLLVM-") && name.ends_with(".so"))
        {
            found = Some(lib.join(name));
            break;
        }
    }
    let so = found.with_context(|| format!("no libLLVM shared library in {}", lib.display()))?;
    Ok((so, lib))
}

fn bpf_linker_works() -> Option<String> {
    let out = Command::new("bpf-linker").arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn bpf_linker() -> Result<()> {
    if let Some(v) = bpf_linker_works() {
        if v.contains(BPF_LINKER_VERSION) {
            say(format!(
                "bootstrap: {v} already installed (cached, not rebuilt)"
            ));
            return Ok(());
        }
    }
    let (so, libdir) = nightly_libllvm()?;
    say(format!(
        "bootstrap: building bpf-linker {BPF_LINKER_VERSION} against {} (about a minute)",
        so.display()
    ));
    let rustflags = format!(
        "-C link-arg={} -C link-arg=-Wl,-rpath,{}",
        so.display(),
        libdir.display()
    );
    cmd::run(
        Command::new("cargo")
            .env("RUSTFLAGS", rustflags)
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--force",
            ])
            .args([
                "--no-default-features",
                "--features",
                "llvm-22,no-llvm-linking",
            ]),
    )
    .context("installing bpf-linker")?;
    match bpf_linker_works() {
        Some(v) => {
            say(format!("bootstrap: {v} installed"));
            Ok(())
        }
        None => bail!(
            "bpf-linker was installed but `bpf-linker --version` fails; is ~/.cargo/bin on PATH?"
        ),
    }
}
