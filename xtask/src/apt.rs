//! A private apt for fetching (never installing) Debian packages of any release: its own sources
//! list, package lists and download cache under the project's cache, so the host's apt state is
//! never touched. The archive's address is the one the host's own apt configuration uses.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use crate::cache;
use crate::cmd::{self, say};

/// Package lists older than this are refreshed: the archive drops superseded kernels.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

pub struct Apt {
    dir: PathBuf,
}

/// The main archive and the security archive the host's apt uses.
fn host_mirrors() -> Result<(String, String)> {
    let mut uris = Vec::new();
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in rd.flatten() {
            let p = e.path();
            let n = p.to_string_lossy().into_owned();
            if n.ends_with(".list") || n.ends_with(".sources") {
                files.push(p);
            }
        }
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix("URIs:") {
                uris.extend(rest.split_whitespace().map(str::to_owned));
            } else if let Some(rest) = line.strip_prefix("deb ") {
                if let Some(u) = rest.split_whitespace().find(|w| w.contains("://")) {
                    uris.push(u.to_owned());
                }
            }
        }
    }
    let debian: Vec<&String> = uris
        .iter()
        .filter(|u| u.trim_end_matches('/').ends_with("/debian"))
        .collect();
    let security: Vec<&String> = uris
        .iter()
        .filter(|u| u.trim_end_matches('/').ends_with("/debian-security"))
        .collect();
    let Some(main) = debian.first() else {
        bail!("found no Debian archive (a URI ending in /debian) in the host's apt sources");
    };
    let sec = match security.first() {
        Some(s) => s.to_string(),
        None => format!("{}-security", main.trim_end_matches('/')),
    };
    Ok((main.to_string(), sec))
}

impl Apt {
    /// An apt for one Debian release (`bullseye`, `bookworm`, `sid`), with its updates and
    /// security suites where the release has them.
    pub fn for_release(release: &str) -> Result<Apt> {
        let dir = cache::dir(&format!("apt/{release}"))?;
        for d in ["lists/partial", "archives/partial"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let (main, security) = host_mirrors()?;
        let mut list = format!("deb {main} {release} main\n");
        if release != "sid" {
            list.push_str(&format!("deb {main} {release}-updates main\n"));
            list.push_str(&format!("deb {security} {release}-security main\n"));
        }
        std::fs::write(dir.join("sources.list"), list)?;
        let apt = Apt { dir };
        apt.update_if_stale(release)?;
        Ok(apt)
    }

    fn opts(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            format!("-oDir::Etc::sourcelist={d}/sources.list"),
            "-oDir::Etc::sourceparts=/nonexistent".into(),
            format!("-oDir::State::Lists={d}/lists"),
            format!("-oDir::State::status={d}/status"),
            format!("-oDir::Cache={d}/cache"),
            "-oDebug::NoLocking=1".into(),
            "-oAPT::Sandbox::User=root".into(),
        ]
    }

    fn stamp(&self) -> PathBuf {
        self.dir.join("lists.stamp")
    }

    fn update_if_stale(&self, release: &str) -> Result<()> {
        std::fs::create_dir_all(self.dir.join("cache"))?;
        let status = self.dir.join("status");
        if !status.exists() {
            std::fs::write(&status, "")?;
        }
        let fresh = std::fs::metadata(self.stamp())
            .and_then(|m| m.modified())
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() < LISTS_MAX_AGE)
            .unwrap_or(false);
        if fresh {
            return Ok(());
        }
        self.update(release)
    }

    pub fn update(&self, release: &str) -> Result<()> {
        say(format!("apt: fetching the package lists of {release}"));
        cmd::output(
            Command::new("apt-get")
                .args(self.opts())
                .args(["-qq", "update"]),
        )
        .with_context(|| format!("apt-get update for {release}"))?;
        std::fs::write(self.stamp(), "")?;
        Ok(())
    }

    /// Package names matching a regular expression.
    pub fn search_names(&self, regex: &str) -> Result<Vec<String>> {
        let out = cmd::output(Command::new("apt-cache").args(self.opts()).args([
            "search",
            "--names-only",
            regex,
        ]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(" - ").next())
            .map(|s| s.trim().to_owned())
            .collect())
    }

    /// Fields of the candidate (newest) version of a package: `Version`, `Depends`, ...
    pub fn show(&self, pkg: &str) -> Result<Vec<(String, String)>> {
        let out = cmd::output(Command::new("apt-cache").args(self.opts()).args([
            "show",
            "--no-all-versions",
            pkg,
        ]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    pub fn field(&self, pkg: &str, field: &str) -> Result<String> {
        self.show(pkg)?
            .into_iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v)
            .with_context(|| format!("package {pkg} has no {field} field"))
    }

    /// All versions of a package the lists know.
    pub fn versions(&self, pkg: &str) -> Result<Vec<String>> {
        let out = cmd::output(
            Command::new("apt-cache")
                .args(self.opts())
                .args(["madison", pkg]),
        )?;
        Ok(out
            .lines()
            .filter_map(|l| l.split('|').nth(1))
            .map(|v| v.trim().to_owned())
            .collect())
    }

    /// Downloads `pkg=version` into `dest` unless a file for it is there already; returns the
    /// .deb's path and whether it was downloaded now.
    pub fn download(&self, pkg: &str, version: &str, dest: &Path) -> Result<(PathBuf, bool)> {
        std::fs::create_dir_all(dest)?;
        let prefix = format!("{pkg}_");
        let want_version = version.replace(':', "%3a");
        let find = || -> Option<PathBuf> {
            std::fs::read_dir(dest)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    let n = p
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    n.starts_with(&prefix) && n.contains(&want_version) && n.ends_with(".deb")
                })
        };
        if let Some(p) = find() {
            return Ok((p, false));
        }
        say(format!("apt: downloading {pkg} {version}"));
        cmd::output(
            Command::new("apt-get")
                .current_dir(dest)
                .args(self.opts())
                .args(["-qq", "download", &format!("{pkg}={version}")]),
        )
        .with_context(|| format!("downloading {pkg}={version}"))?;
        let p = find().with_context(|| {
            format!(
                "apt-get download left no .deb for {pkg} in {}",
                dest.display()
            )
        })?;
        Ok((p, true))
    }
}

/// Orders Debian versions with `dpkg --compare-versions`.
pub fn version_gt(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Unpacks a .deb into `root` (no scripts run, nothing installed).
pub fn unpack(deb: &Path, root: &Path) -> Result<()> {
    std::fs::create_dir_all(root)?;
    cmd::output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root))
        .with_context(|| format!("unpacking {}", deb.display()))?;
    Ok(())
}
