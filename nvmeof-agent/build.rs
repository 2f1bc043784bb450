//! Builds the eBPF objects (nvmeof-ebpf's `nvmeof`, `nvmeof-state` and `nvmeof-aen`, for bpfel-unknown-none with
//! nightly) into OUT_DIR, where src/bpf embeds them; the benchmark object `nvmeof-bench` lands
//! beside them, for the `ebpf_bench` example alone. `AYA_BUILD_SKIP=1` skips it for tools that only need the host code to
//! type-check; the agent then starts without eBPF.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../nvmeof-ebpf");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip = std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    if skip {
        // Empty objects: the loader reports "no eBPF object in this build" and runs sysfs-only.
        for name in [
            "nvmeof",
            "nvmeof-state",
            "nvmeof-aen",
            "nvmeof-queues",
            "nvmeof-bench",
        ] {
            std::fs::write(out_dir.join(name), b"")
                .context("writing the empty eBPF placeholder")?;
        }
        return Ok(());
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "nvmeof-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF programs (nightly with rust-src and bpf-linker are needed: `cargo xtask bootstrap` installs them)")
}
