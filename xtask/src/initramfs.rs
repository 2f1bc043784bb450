//! The lab VM's initramfs: busybox, the kernel modules in load order, the host's own tools the
//! scenarios use (iproute2, nvme-cli, curl, bpftool, tmux) with their shared libraries, the
//! agent, and the guest scripts (`guest/init.sh`, `guest/lab.sh`).
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;
use crate::kernel::{self, Kernel};

const INIT: &str = include_str!("../guest/init.sh");
const LAB_LIB: &str = include_str!("../guest/lab.sh");

/// Host programs copied into the guest (absolute paths are looked up on PATH). tmux is the
/// terminal a person would run `nvmeof-exporter top` in: the lab drives it with keys and reads
/// its screen.
const GUEST_TOOLS: &[&str] = &["ip", "rdma", "tc", "nvme", "curl", "bpftool", "tmux"];

/// Host files copied into the guest at the same path. tmux refuses to start without a UTF-8
/// locale (it tries `C.UTF-8` itself), and glibc's is a compiled file from libc-bin, not built
/// into the library: its character classes (350 KiB) are all tmux reads.
const GUEST_FILES: &[&str] = &["/usr/lib/locale/C.utf8/LC_CTYPE"];

fn which(program: &str) -> Option<PathBuf> {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ] {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// Copies a file into the staging tree at the same absolute path.
fn stage(staging: &Path, file: &Path, at: Option<&Path>) -> Result<()> {
    let rel = at
        .unwrap_or(file)
        .strip_prefix("/")
        .unwrap_or(at.unwrap_or(file));
    let dest = staging.join(rel);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(file, &dest)
        .with_context(|| format!("copying {} into the initramfs", file.display()))?;
    Ok(())
}

/// The shared libraries a dynamic executable needs (with the dynamic loader).
fn libraries(exe: &Path) -> Result<BTreeSet<PathBuf>> {
    let out = cmd::capture(Command::new("ldd").arg(exe))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!("{} needs a library the host lacks: {line}", exe.display());
        }
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.insert(PathBuf::from(p));
        }
    }
    Ok(libs)
}

pub struct Contents<'a> {
    pub kernel: &'a Kernel,
    /// The agent binary, if the VM should have it (at /bin/nvmeof-exporter).
    pub agent: Option<&'a Path>,
    /// Extra files: (host path, guest path).
    pub extra: Vec<(PathBuf, PathBuf)>,
    /// Host programs beyond [`GUEST_TOOLS`], copied the same way.
    pub tools: Vec<&'a str>,
}

/// Builds the initramfs into `out` (gzip-compressed newc cpio).
pub fn build(c: &Contents, work: &Path, out: &Path) -> Result<()> {
    let staging = work.join("initramfs");
    let _ = std::fs::remove_dir_all(&staging);
    for d in [
        "bin", "sbin", "dev", "proc", "sys", "tmp", "run", "mods", "lab", "etc",
    ] {
        std::fs::create_dir_all(staging.join(d))?;
    }
    let busybox = which("busybox").context("busybox is not installed (package busybox-static)")?;
    stage(&staging, &busybox, Some(Path::new("/bin/busybox")))?;
    write_exec(&staging.join("init"), INIT)?;
    write_exec(&staging.join("lab/lab.sh"), LAB_LIB)?;

    let mut order = String::new();
    for (i, m) in kernel::module_closure(c.kernel)?.iter().enumerate() {
        let name = m
            .file_name()
            .context("module path without a file name")?
            .to_string_lossy();
        let dest = format!("{i:03}-{name}");
        std::fs::copy(m, staging.join("mods").join(&dest))
            .with_context(|| format!("copying module {}", m.display()))?;
        order.push_str(&dest);
        order.push('\n');
    }
    std::fs::write(staging.join("mods/order"), order)?;
    std::fs::write(
        staging.join("lab/kernel"),
        format!("{}\n", c.kernel.release),
    )?;
    std::fs::write(staging.join("lab/limits"), c.kernel.limits.join("\n"))?;

    let mut exes: Vec<(PathBuf, PathBuf)> = Vec::new();
    for t in GUEST_TOOLS.iter().chain(&c.tools) {
        let p = which(t)
            .with_context(|| format!("{t} is not installed: run `cargo xtask bootstrap`"))?;
        exes.push((p.clone(), PathBuf::from("/usr/bin").join(t)));
    }
    if let Some(agent) = c.agent {
        exes.push((
            agent.to_path_buf(),
            PathBuf::from("/usr/bin/nvmeof-exporter"),
        ));
    }
    let mut libs = BTreeSet::new();
    for (host, guest) in &exes {
        stage(&staging, host, Some(guest))?;
        libs.extend(libraries(host)?);
    }
    for lib in &libs {
        stage(&staging, lib, None)?;
    }
    for f in GUEST_FILES {
        stage(&staging, Path::new(f), None)?;
    }
    for (host, guest) in &c.extra {
        stage(&staging, host, Some(guest))?;
    }

    let script = format!(
        "cd '{}' && find . -print | cpio -o -H newc --quiet | gzip -1 > '{}'",
        staging.display(),
        out.display()
    );
    cmd::output(Command::new("sh").arg("-c").arg(script)).context("packing the initramfs")?;
    Ok(())
}

fn write_exec(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}
