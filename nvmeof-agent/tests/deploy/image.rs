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
    // platform → the digest of its image.
    let entries: std::collections::BTreeMap<String, String> = list["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests: {text}"))
        .iter()
        .map(|m| {
            let platform = format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            );
            (platform, m["digest"].as_str().unwrap().to_owned())
        })
        .collect();
    let platforms: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{text}");
    let repo = image.rsplit_once(':').unwrap().0;

    let dir = tempfile::tempdir().unwrap();
    for (arch, machine) in [("amd64", elf::EM_X86_64), ("arm64", elf::EM_AARCH64)] {
        // Created, never started: an arm64 container cannot run here without binfmt. By the
        // entry's digest: podman 4.3's `create --arch arm64 NAME:TAG` gave the amd64 image.
        // The id on stdout; stderr may warn that arm64 is not this host's platform.
        let by_digest = format!("{repo}@{}", entries[&format!("linux/{arch}")]);
        let created = Command::new(&podman)
            .args(["create", &by_digest])
            .output()
            .unwrap();
        assert!(created.status.success(), "{arch}: {created:?}");
        let id = String::from_utf8_lossy(&created.stdout).trim().to_owned();
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
