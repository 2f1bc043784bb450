//! Debian kernels for the lab: resolved to the newest build of a series at run time (the archive
//! drops superseded builds, so no exact version is pinned), downloaded and unpacked under the
//! cache, never installed. Debian builds neither `nvme-fcloop` nor (before 6.12) `nvme-loop`:
//! they are built here out of tree from the same version's `linux-source`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::apt::{self, Apt};
use crate::cache;
use crate::cmd::{self, say};

/// The kernel series the lab can boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Series {
    #[value(name = "5.10")]
    V5_10,
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    /// The newest kernel in Debian's unstable release.
    #[value(name = "sid")]
    Sid,
}

impl Series {
    pub fn name(self) -> &'static str {
        match self {
            Series::V5_10 => "5.10",
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
            Series::Sid => "sid",
        }
    }

    pub fn parse(s: &str) -> Result<Series> {
        <Series as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| anyhow::anyhow!("unknown kernel series {s:?}: use 5.10, 6.1, 6.12 or sid"))
    }

    fn release(self) -> &'static str {
        match self {
            Series::V5_10 => "bullseye",
            Series::V6_1 | Series::V6_12 => "bookworm",
            Series::Sid => "sid",
        }
    }

    /// Image packages of this series (signed generic amd64 flavour only).
    fn image_regex(self) -> &'static str {
        match self {
            Series::V5_10 => r"^linux-image-5\.10\.0-[0-9]+-amd64$",
            Series::V6_1 => r"^linux-image-6\.1\.0-[0-9]+-amd64$",
            Series::V6_12 => r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$",
            Series::Sid => r"^linux-image-[0-9]+\.[0-9]+\.[0-9]+\+deb[0-9]+-amd64$",
        }
    }
}

/// An unpacked kernel with the modules the lab needs.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub series: Series,
    /// `uname -r`, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// The Debian package version, e.g. `6.1.192-2`.
    pub version: String,
    pub vmlinuz: PathBuf,
    /// The unpacked image (with `lib/modules/<release>`).
    pub root: PathBuf,
    /// Modules built here: file name → path.
    pub built_modules: BTreeMap<String, PathBuf>,
    /// What this kernel cannot do in the lab, and why.
    pub limits: Vec<String>,
}

/// The modules the lab loads, in an order that satisfies their dependencies.
pub const LAB_MODULES: &[&str] = &[
    "configfs",
    "null_blk",
    // A block device on a file, for nvmet's bdev backend beside null_blk (issue 17's backends).
    "loop",
    "crc32_generic",
    "nvme-core",
    "nvme-fabrics",
    "nvme",
    "nvmet",
    "nvme-tcp",
    "nvmet-tcp",
    "veth",
    "rdma_rxe",
    "nvme-rdma",
    "nvmet-rdma",
    "nvme-fc",
    "nvmet-fc",
    "virtio_pci",
    "virtio_net",
    // Packet loss on one TCP path: a prio qdisc on lo, a u32 filter on the port, netem in a band.
    "sch_prio",
    "sch_netem",
    "cls_u32",
    // sock_diag for TCP (the tcp collector); a host autoloads it, the lab's init does not.
    "tcp_diag",
    // The ffdhe groups of DH-HMAC-CHAP (nvme-auth asks the crypto API for them by name, which a
    // host autoloads and the lab's init does not).
    "dh_generic",
    // Kernel TLS, which tlshd sets on a socket once its handshake is done (NVMe/TCP with TLS);
    // a host autoloads it, the lab's init does not.
    "tls",
    // The AES-GCM of kernel TLS records (the suite tlshd negotiates): the crypto API asks for
    // gcm(aes) and ghash by name, which a host autoloads and the lab's init does not.
    "ctr",
    "ghash-generic",
    "gcm",
];

/// Lab modules a kernel may lack without harm: crc32_generic is gone from 7.x (crc32 is a library
/// there, which rdma_rxe pulls in), sid's 7.2 builds virtio_pci in without listing it in a
/// text `modules.builtin`, only the kernels with in-band authentication use dh_generic, and
/// only those with TLS on NVMe/TCP use tls and the AES-GCM modules (built in on some).
const MAYBE_ABSENT: &[&str] = &[
    "crc32_generic",
    "virtio_pci",
    "dh_generic",
    "tls",
    "ctr",
    "ghash-generic",
    "gcm",
];

/// Built out of tree when the kernel lacks them: (module file, source file).
const OUT_OF_TREE: &[(&str, &str)] = &[("nvme-fcloop", "fcloop.c"), ("nvme-loop", "loop.c")];

fn newest_image(apt: &Apt, series: Series) -> Result<(String, String)> {
    let names = apt.search_names(series.image_regex())?;
    if names.is_empty() {
        bail!(
            "no kernel image of series {} in Debian {}",
            series.name(),
            series.release()
        );
    }
    let source = format!("linux-source-{}", series.name());
    let sources = if series == Series::Sid {
        Vec::new()
    } else {
        apt.versions(&source)?
    };
    let mut best: Option<(String, String)> = None;
    for n in names {
        for v in apt.versions(&n)? {
            // The out-of-tree modules must be built from the very same source version.
            if series != Series::Sid && !sources.contains(&v) {
                continue;
            }
            if best.as_ref().is_none_or(|(_, bv)| apt::version_gt(&v, bv)) {
                best = Some((n.clone(), v));
            }
        }
    }
    best.with_context(|| {
        format!(
            "no kernel image of series {} has a matching {source}",
            series.name()
        )
    })
}

/// Resolves, downloads and unpacks the newest kernel of a series, and builds the missing
/// modules. Everything is cached: a second call downloads and builds nothing, and says so.
pub fn prepare(series: Series) -> Result<Kernel> {
    let apt = Apt::for_release(series.release())?;
    let (image, version) = newest_image(&apt, series)?;
    let release = image.trim_start_matches("linux-image-").to_owned();
    let dir = cache::dir(&format!("kernels/{release}_{version}"))?;
    let debs = dir.join("debs");
    let root = dir.join("image");
    let done = dir.join("image.done");
    if done.exists() {
        say(format!(
            "kernel: {release} ({version}) cached, not downloaded again"
        ));
    } else {
        let _ = std::fs::remove_dir_all(&root);
        let (deb, _) = apt.download(&image, &version, &debs)?;
        apt::unpack(&deb, &root)?;
        // sid splits the image: a meta package naming the binary and the modules packages.
        let depends = apt.field(&image, "Depends").unwrap_or_default();
        for dep in split_depends(&depends) {
            if dep.starts_with("linux-binary-") || dep.starts_with("linux-modules-") {
                let (deb, _) = apt.download(&dep, &version, &debs)?;
                apt::unpack(&deb, &root)?;
            }
        }
        normalise_modules(&root, &release)?;
        std::fs::write(&done, "")?;
    }
    let vmlinuz = [
        root.join(format!("boot/vmlinuz-{release}")),
        root.join(format!("lib/modules/{release}/vmlinuz")),
    ]
    .into_iter()
    .find(|p| p.exists())
    .with_context(|| format!("no vmlinuz for {release} in {}", root.display()))?;

    let mut kernel = Kernel {
        series,
        release,
        version,
        vmlinuz,
        root,
        built_modules: BTreeMap::new(),
        limits: Vec::new(),
    };
    build_missing_modules(&apt, &mut kernel, &dir)?;
    Ok(kernel)
}

fn split_depends(depends: &str) -> Vec<String> {
    depends
        .split(',')
        .flat_map(|alt| alt.split('|'))
        .filter_map(|d| d.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Moves merged-/usr modules to `lib/modules`, decompresses them (busybox `insmod` reads plain
/// .ko files) and runs depmod, which the package leaves to its install scripts.
fn normalise_modules(root: &Path, release: &str) -> Result<()> {
    let usr = root.join(format!("usr/lib/modules/{release}"));
    let lib = root.join(format!("lib/modules/{release}"));
    if usr.exists() && !lib.exists() {
        std::fs::create_dir_all(root.join("lib/modules"))?;
        std::fs::rename(&usr, &lib)?;
    }
    // xz removes the compressed file by itself (and has no `--rm`); zstd needs to be told.
    for (ext, tool, args) in [
        ("xz", "xz", &["-d", "-q", "-f"][..]),
        ("zst", "zstd", &["-d", "-q", "-f", "--rm"][..]),
    ] {
        let files = cmd::output(
            Command::new("find")
                .arg(&lib)
                .args(["-name", &format!("*.ko.{ext}")]),
        )?;
        let files: Vec<&str> = files.lines().collect();
        for chunk in files.chunks(200) {
            if !chunk.is_empty() {
                cmd::output(Command::new(tool).args(args).args(chunk))?;
            }
        }
    }
    cmd::output(Command::new("depmod").arg("-b").arg(root).arg(release))
        .context("depmod on the unpacked kernel")?;
    Ok(())
}

/// Whether the kernel has a module, built in or as a file.
pub fn has_module(root: &Path, release: &str, name: &str) -> bool {
    let moddir = root.join(format!("lib/modules/{release}"));
    let norm = |s: &str| s.replace('-', "_");
    let want = norm(name);
    for list in ["modules.builtin", "modules.dep"] {
        if let Ok(text) = std::fs::read_to_string(moddir.join(list)) {
            let found = text.lines().any(|l| {
                let path = l.split(':').next().unwrap_or("");
                let file = path.rsplit('/').next().unwrap_or("");
                norm(file.trim_end_matches(".ko")) == want
            });
            if found {
                return true;
            }
        }
    }
    false
}

fn build_missing_modules(apt: &Apt, k: &mut Kernel, dir: &Path) -> Result<()> {
    let missing: Vec<(&str, &str)> = OUT_OF_TREE
        .iter()
        .copied()
        .filter(|(m, _)| !has_module(&k.root, &k.release, m))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if k.series == Series::Sid {
        // sid's headers want a newer gcc and glibc than this Debian 12 host has.
        for (m, _) in &missing {
            k.limits.push(format!(
                "{m}: not built for {}: its headers need a newer compiler than the host's",
                k.release
            ));
        }
        return Ok(());
    }
    let out = dir.join("modules");
    let done = out.join("build.done");
    if done.exists() {
        say(format!(
            "kernel: out-of-tree modules for {} cached, not rebuilt",
            k.release
        ));
    } else {
        build_out_of_tree(apt, k, dir, &missing)?;
        std::fs::write(&done, "")?;
    }
    for (m, _) in missing {
        k.built_modules
            .insert(m.to_owned(), out.join("target").join(format!("{m}.ko")));
    }
    Ok(())
}

fn build_out_of_tree(apt: &Apt, k: &Kernel, dir: &Path, missing: &[(&str, &str)]) -> Result<()> {
    say(format!(
        "kernel: building {} for {} from linux-source-{} {}",
        missing
            .iter()
            .map(|(m, _)| *m)
            .collect::<Vec<_>>()
            .join(", "),
        k.release,
        k.series.name(),
        k.version
    ));
    let debs = dir.join("debs");
    let hdr = dir.join("headers");
    let _ = std::fs::remove_dir_all(&hdr);
    let headers = format!("linux-headers-{}", k.release);
    let (deb, _) = apt.download(&headers, &k.version, &debs)?;
    apt::unpack(&deb, &hdr)?;
    for dep in split_depends(&apt.field(&headers, "Depends")?) {
        if dep.starts_with("linux-headers-") || dep.starts_with("linux-kbuild-") {
            let (deb, _) = apt.download(&dep, &k.version, &debs)?;
            apt::unpack(&deb, &hdr)?;
        }
    }
    // The headers' Makefile includes the -common tree by absolute path: point it at ours.
    let kdir = hdr.join(format!("usr/src/linux-headers-{}", k.release));
    let makefile = kdir.join("Makefile");
    let text = std::fs::read_to_string(&makefile)
        .with_context(|| format!("reading {}", makefile.display()))?;
    let fixed: String = text
        .lines()
        .map(|l| match l.strip_prefix("include /") {
            Some(rest) => format!("include {}/{}\n", hdr.display(), rest),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&makefile, fixed)?;

    let src_pkg = format!("linux-source-{}", k.series.name());
    let (deb, _) = apt.download(&src_pkg, &k.version, &debs)?;
    let src = dir.join("source");
    let _ = std::fs::remove_dir_all(&src);
    apt::unpack(&deb, &src)?;
    let tarball = std::fs::read_dir(src.join("usr/src"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(".tar."))
        .context("linux-source package holds no tarball")?;
    let top = format!("linux-source-{}", k.series.name());
    let mut tar = Command::new("tar");
    tar.arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .arg("--wildcards");
    tar.arg(format!("{top}/drivers/nvme/target/nvmet.h"));
    tar.arg(format!("{top}/drivers/nvme/host/*.h"));
    for (_, file) in missing {
        tar.arg(format!("{top}/drivers/nvme/target/{file}"));
    }
    cmd::output(&mut tar).context("extracting the nvme sources")?;
    std::fs::remove_file(&tarball)?;

    let out = dir.join("modules");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    for sub in ["target", "host"] {
        cmd::output(
            Command::new("cp")
                .arg("-r")
                .arg(src.join(&top).join("drivers/nvme").join(sub))
                .arg(out.join(sub)),
        )?;
    }
    let mut kbuild = String::new();
    for (m, file) in missing {
        kbuild.push_str(&format!(
            "obj-m += {m}.o\n{m}-y := {}.o\n",
            file.trim_end_matches(".c")
        ));
    }
    std::fs::write(out.join("target/Kbuild"), kbuild)?;
    let mut make = Command::new("make");
    make.arg("-s")
        .arg("-C")
        .arg(&kdir)
        .arg(format!("M={}", out.join("target").display()))
        // 5.10's headers ask for gcc-10; the host's gcc builds these modules fine. Module BTF
        // needs a vmlinux the headers lack, so it is skipped.
        .arg("CC=gcc")
        .arg("CONFIG_DEBUG_INFO_BTF_MODULES=")
        .arg("modules");
    cmd::output(&mut make).context("building nvme-fcloop / nvme-loop out of tree")?;
    let _ = std::fs::remove_dir_all(&src);
    Ok(())
}

/// The `insmod` order for the lab's modules and their dependencies: absolute paths of module
/// files, or nothing for modules built into the kernel.
pub fn module_closure(k: &Kernel) -> Result<Vec<PathBuf>> {
    let mut order: Vec<PathBuf> = Vec::new();
    // fcloop and loop come from the kernel itself where Debian ships them (loop from 6.12, both
    // on sid's 7.2), else from the out-of-tree build below.
    let shipped = OUT_OF_TREE
        .iter()
        .map(|(m, _)| *m)
        .filter(|m| !k.built_modules.contains_key(*m) && has_module(&k.root, &k.release, m));
    for m in LAB_MODULES.iter().copied().chain(shipped) {
        let out = cmd::capture(
            Command::new("modprobe")
                .arg("-d")
                .arg(&k.root)
                .arg("-S")
                .arg(&k.release)
                .arg("--show-depends")
                .arg(m),
        )?;
        if !out.status.success() && MAYBE_ABSENT.contains(&m) {
            continue;
        }
        if !out.status.success() {
            bail!(
                "module {m} is missing from {}: {}",
                k.release,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(path) = line.strip_prefix("insmod ") {
                let p = PathBuf::from(path.split_whitespace().next().unwrap_or(path));
                if !order.contains(&p) {
                    order.push(p);
                }
            }
        }
    }
    order.extend(k.built_modules.values().cloned());
    Ok(order)
}
