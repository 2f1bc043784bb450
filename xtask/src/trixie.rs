//! A newer Debian's userland for TLS on NVMe/TCP in the guest: the handshake daemon `tlshd`
//! (ktls-utils), which Debian 12 does not package, and nvme-cli 2.13 (`gen-tls-key`,
//! `check-tls-key --insert`, which Debian 12's 2.3 lacks), both from Debian 13 with the libraries
//! they load, Debian 13's glibc among them (they need 2.38; the host, whose libraries the other
//! guest tools use, has 2.36). They are unpacked under their own prefix in the guest and started
//! through that prefix's dynamic loader (`guest/lab.sh`, `trixie`), so the two glibcs never meet
//! in one process.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::apt::{self, Apt};
use crate::{cache, cmd};

/// The Debian release the programs come from.
pub const RELEASE: &str = "trixie";
/// Where the unpacked tree sits in the guest.
pub const GUEST_PREFIX: &str = "/opt/trixie";
/// The programs the guest runs: (package, path in the package).
const PROGRAMS: &[(&str, &str)] = &[
    ("ktls-utils", "usr/sbin/tlshd"),
    ("nvme-cli", "usr/sbin/nvme"),
];
/// The release's dynamic loader and its library directories (as `guest/lab.sh` names them).
const LOADER: &str = "usr/lib64/ld-linux-x86-64.so.2";
const LIBRARY_PATH: &[&str] = &["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"];

/// The packages the programs need at run time: their `Depends` followed to the bottom, first
/// alternative of each, through the archive's `libs` section only. The programs' other
/// dependencies (nvme-cli's `uuid-runtime`, a command it never starts for what the lab asks of
/// it) pull in an init system and a package manager, and nothing of them is loaded: what is
/// loaded is checked afterwards, library by library ([`needed`]).
fn closure(apt: &Apt) -> Result<BTreeMap<String, String>> {
    let roots: Vec<String> = PROGRAMS.iter().map(|(p, _)| (*p).to_owned()).collect();
    let mut todo = roots.clone();
    let mut found = BTreeMap::new();
    let mut passed = BTreeSet::new();
    while let Some(pkg) = todo.pop() {
        if found.contains_key(&pkg) || passed.contains(&pkg) {
            continue;
        }
        let fields = apt
            .show(&pkg)
            .with_context(|| format!("{RELEASE}: {pkg}"))?;
        let section = fields.iter().find(|(k, _)| k == "Section").map(|(_, v)| v);
        if !roots.contains(&pkg) && section.map(String::as_str) != Some("libs") {
            passed.insert(pkg);
            continue;
        }
        let version = fields
            .iter()
            .find(|(k, _)| k == "Version")
            .map(|(_, v)| v.clone())
            .with_context(|| format!("{RELEASE}: {pkg} has no version"))?;
        for (_, deps) in fields
            .iter()
            .filter(|(k, _)| k == "Depends" || k == "Pre-Depends")
        {
            for dep in deps.split(',') {
                let first = dep.split('|').next().unwrap_or_default();
                let name = first
                    .split(['(', ':'])
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                if !name.is_empty() {
                    todo.push(name);
                }
            }
        }
        found.insert(pkg, version);
    }
    Ok(found)
}

/// The files a program loads, as the release's own loader resolves them in `root`: every one
/// must be there (a library the closure missed stops the build, named).
fn needed(root: &Path, program: &str) -> Result<BTreeSet<PathBuf>> {
    let out = cmd::capture(
        Command::new(root.join(LOADER))
            .arg("--library-path")
            .arg(library_path(root))
            .arg("--list")
            .arg(root.join(program)),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not found") {
        bail!(
            "{RELEASE}'s {program} does not resolve its libraries in {}:\n{text}{}",
            root.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut files = BTreeSet::new();
    for line in text.lines() {
        let Some((_, rhs)) = line.split_once("=>") else {
            continue;
        };
        let Some(path) = rhs.split_whitespace().next().filter(|p| p.starts_with('/')) else {
            continue;
        };
        let path = PathBuf::from(path);
        if !path.starts_with(root) {
            bail!(
                "{RELEASE}'s {program} resolved {} outside its own tree",
                path.display()
            );
        }
        files.insert(path);
    }
    files.insert(root.join(LOADER));
    files.insert(root.join(program));
    Ok(files)
}

fn library_path(root: &Path) -> String {
    LIBRARY_PATH
        .iter()
        .map(|d| root.join(d).display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Downloads (cached) and unpacks the programs and their libraries, and returns the files the
/// guest needs: (host path, guest path under [`GUEST_PREFIX`]).
pub fn guest_files() -> Result<Vec<(PathBuf, PathBuf)>> {
    let apt = Apt::for_release(RELEASE)?;
    let packages = closure(&apt)?;
    let dir = cache::dir(RELEASE)?;
    let root = dir.join("root");
    // The tree is unpacked again whenever a package's version changed (a security update).
    let stamp = dir.join("root.versions");
    let want: String = packages.iter().map(|(p, v)| format!("{p}={v}\n")).collect();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
        let _ = std::fs::remove_dir_all(&root);
        for (pkg, version) in &packages {
            let (deb, _) = apt.download(pkg, version, &dir.join("debs"))?;
            apt::unpack(&deb, &root)?;
        }
        std::fs::write(&stamp, &want)?;
    }
    let mut files = BTreeSet::new();
    for (_, program) in PROGRAMS {
        files.extend(needed(&root, program)?);
    }
    Ok(files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(&root).unwrap_or(&f).to_path_buf();
            (f, Path::new(GUEST_PREFIX).join(rel))
        })
        .collect())
}
