//! The multi-arch image `cargo xtask build-arm64` makes: one manifest list with linux/amd64 and
//! linux/arm64, each image holding a static binary for its own CPU (read back out of the image
//! with podman, not taken from target/). Needs the image built; without it the test skips and
//! says why, except in CI.
use std::process::Command;

use serde_json::Value;
use xtask::deploy_tools::require;
use xtask::elf;

use super::chart::{run, which};

#[test]
fn the_multi_arch_manifest_has_a_static_binary_per_architecture() {
    let Some(podman) = require(which("podman"), "podman") else {
        return;
    };
    let image = xtask::arm64::image();
    let (found, text) = run(Command::new(&podman).args(["manifest", "inspect", &image]));
    let Some(text) = require(
        found.then_some(text),
        &format!("the multi-arch image {image} (`cargo xtask build-arm64`)"),
    ) else {
        return;
    };
    let list: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let mut platforms: Vec<String> = list["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests: {text}"))
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{text}");

    let dir = tempfile::tempdir().unwrap();
    for (arch, machine) in [("amd64", elf::EM_X86_64), ("arm64", elf::EM_AARCH64)] {
        // Created, never started: an arm64 container cannot run here without binfmt.
        let (ok, id) = run(Command::new(&podman).args(["create", "--arch", arch, &image]));
        assert!(ok, "{arch}: {id}");
        let id = id.lines().last().unwrap().trim().to_owned();
        let out = dir.path().join(arch);
        let (copied, msg) = run(Command::new(&podman)
            .arg("cp")
            .arg(format!("{id}:/nvmeof-exporter"))
            .arg(&out));
        let _ = run(Command::new(&podman).args(["rm", &id]));
        assert!(copied, "{arch}: {msg}");
        let data = std::fs::read(&out).unwrap();
        assert_eq!(elf::machine(&data).unwrap(), machine, "{arch}");
        assert_eq!(elf::interpreter(&data).unwrap(), None, "{arch}: not static");
    }
}
