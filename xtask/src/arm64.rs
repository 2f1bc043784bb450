//! The aarch64 build (`cargo xtask build-arm64`): the same static musl binary for arm64 storage
//! and GPU nodes, with the same eBPF object inside (BPF bytecode does not depend on the host
//! CPU). ring and mimalloc have C parts, so the cross build needs an aarch64 C compiler and musl
//! headers: zig (PyPI's `ziglang`, in the deploy tools' venv) brings both, and `cargo-zigbuild`
//! drives it as the C compiler and linker. The agent's parser, golden `/metrics` and process
//! tests then run as aarch64 binaries under Debian's `qemu-aarch64-static` (called as cargo's
//! runner: no binfmt registration needed), and the two binaries become one multi-arch image
//! manifest with podman, offline (`FROM scratch`: nothing to pull).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::bootstrap::STATIC_TARGET;
use crate::cache;
use crate::cmd::{self, say};
use crate::deploy_tools;
use crate::elf;

pub const TARGET: &str = "aarch64-unknown-linux-musl";
pub const QEMU: &str = "qemu-aarch64-static";

/// The agent's tests that run under qemu-user: the library's unit tests (every parser: sysfs,
/// tracefs formats, NVMe pages, BTF, web config), the golden `/metrics` text on the 6.1 fixture
/// tree, the binary serving that tree over TCP, the HTTP layer, the registry, and the SMART
/// captures. The rest need the host's kernel (eBPF), a real Prometheus or the lab.
pub const QEMU_TESTS: &[&str] = &[
    "--lib",
    "--test",
    "golden",
    "--test",
    "binary",
    "--test",
    "http",
    "--test",
    "registry",
    "--test",
    "smart_captures",
];

/// What the emulator, not the aarch64 build, cannot do: qemu-user implements neither bpf(2)
/// (ENOSYS: the one unit test that needs the host's BPF rather than skipping without
/// permission) nor NETLINK_SOCK_DIAG (the tcp collector fails, so the whole-text golden file
/// differs in its tcp families), and the process it measures is the emulator, whose own memory
/// and translated code are most of the resident set. All three run natively in `cargo xtask
/// test`; the golden test of vanished controllers and binary.rs's scrapes of the fixture tree
/// still run here.
const QEMU_SKIP: &[&str] = &[
    "bpf::io::tests::start_with_formats_but_no_tracepoints_reports_down",
    "metrics_text_matches_the_golden_file",
    "memory_stays_bounded_under_fifty_concurrent_scrapes_and_comes_back_after",
];

/// The image the two binaries make, `localhost/nvmeof-exporter:VERSION`.
pub fn image() -> String {
    format!("localhost/nvmeof-exporter:{}", env!("CARGO_PKG_VERSION"))
}

pub fn binary(target: &str) -> PathBuf {
    cache::workspace()
        .join("target")
        .join(target)
        .join("release/nvmeof-exporter")
}

/// `cargo-zigbuild SUBCOMMAND --release --target aarch64-unknown-linux-musl -p nvmeof-agent`,
/// with the venv first on PATH (cargo-zigbuild finds zig as `python -m ziglang` there).
fn zigbuild(sub: &str) -> Result<Command> {
    let zb = deploy_tools::tool("cargo-zigbuild")
        .context("cargo-zigbuild is not installed: run `cargo xtask bootstrap`")?;
    let bin = zb.parent().context("the venv's bin")?;
    let path = std::env::join_paths(std::iter::once(bin.to_owned()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    let mut c = Command::new(&zb);
    c.current_dir(cache::workspace()).env("PATH", path).args([
        sub,
        "--release",
        "--target",
        TARGET,
        "-p",
        "nvmeof-agent",
    ]);
    Ok(c)
}

/// Checks that `bin` is a static executable for `machine`.
fn check_static(bin: &Path, machine: u16) -> Result<()> {
    let data = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    if let Some(interp) = elf::interpreter(&data)? {
        bail!("{} is dynamically linked ({interp})", bin.display());
    }
    let m = elf::machine(&data)?;
    if m != machine {
        bail!("{} is for ELF machine {m}, not {machine}", bin.display());
    }
    Ok(())
}

/// The static aarch64 binary, eBPF object inside.
pub fn build() -> Result<PathBuf> {
    say(format!(
        "build-arm64: cargo zigbuild --release --target {TARGET} (zig as C compiler and linker)"
    ));
    cmd::run(zigbuild("zigbuild")?.args(["--bin", "nvmeof-exporter"]))?;
    let bin = binary(TARGET);
    check_static(&bin, elf::EM_AARCH64)?;
    say(format!("build-arm64: {} is static aarch64", bin.display()));
    Ok(bin)
}

/// [`QEMU_TESTS`] built for aarch64 and run under qemu-user; `args` go to the test binaries.
pub fn test(args: &[String]) -> Result<()> {
    if !cmd::have(QEMU) {
        bail!("{QEMU} is not on PATH: run `cargo xtask bootstrap` (Debian's qemu-user-static)");
    }
    say(format!(
        "build-arm64: the fixture-tree tests as aarch64 binaries under {QEMU}"
    ));
    let runner = format!(
        "CARGO_TARGET_{}_RUNNER",
        TARGET.to_uppercase().replace('-', "_")
    );
    cmd::run(
        zigbuild("test")?
            .env(runner, QEMU)
            // binary.rs starts the exporter itself: through qemu too (no binfmt handler).
            .env("NVMEOF_TEST_RUNNER", QEMU)
            .args(QEMU_TESTS)
            .arg("--")
            .args(QEMU_SKIP.iter().flat_map(|t| ["--skip", t]))
            .args(args),
    )
}

/// One manifest list, [`image`], with `deploy/Dockerfile` built for linux/amd64 and
/// linux/arm64 from the two static binaries. The build context is a scratch directory holding
/// only the binaries (the workspace's target/ is gigabytes).
pub fn manifest(x86_64: &Path, aarch64: &Path) -> Result<()> {
    let ctx = tempfile::tempdir()?;
    for (triple, bin) in [(STATIC_TARGET, x86_64), (TARGET, aarch64)] {
        let dir = ctx.path().join("target").join(triple).join("release");
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(bin, dir.join("nvmeof-exporter"))
            .with_context(|| format!("copying {}", bin.display()))?;
    }
    let image = image();
    // A manifest left by an earlier run would gain a third and fourth entry.
    let _ = cmd::capture(Command::new("podman").args(["manifest", "rm", &image]));
    cmd::run(Command::new("podman").args(["manifest", "create", &image]))?;
    let dockerfile = cache::workspace().join("deploy/Dockerfile");
    for (platform, triple) in [("linux/amd64", STATIC_TARGET), ("linux/arm64", TARGET)] {
        cmd::run(
            Command::new("podman")
                .args(["build", "--platform", platform, "--manifest", &image])
                .arg("--build-arg")
                .arg(format!("RUST_TARGET={triple}"))
                .arg("-f")
                .arg(&dockerfile)
                .arg(ctx.path()),
        )
        .with_context(|| format!("podman build for {platform}"))?;
    }
    say(format!(
        "build-arm64: manifest {image} (linux/amd64, linux/arm64)"
    ));
    Ok(())
}
