//! The little sysfs the tracer needs: each namespace's LBA size (the programs turn block counts
//! into bytes with it) and each controller's subsystem NQN (the `subsystem` label). Both are read
//! at every drain, so namespaces and controllers that appear later are picked up.
//!
//! Layout: `<sysfs>/class/nvme/nvmeN/` holds the controller's `subsysnqn` and, as children, its
//! namespaces: `nvmeNnK` without native multipath, `nvmeScNnK` (one path of the shared
//! namespace) with it. Each namespace has `nsid` and `queue/logical_block_size`.
use std::collections::BTreeMap;
use std::path::Path;

/// One namespace as seen through one controller.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NamespaceLba {
    /// N of `nvmeN`: what the tracepoints call `ctrl_id`.
    pub ctrl_instance: u32,
    pub nsid: u32,
    pub logical_block_size: u32,
}

/// `nvmeN` → N.
fn controller_instance(name: &str) -> Option<u32> {
    name.strip_prefix("nvme")?.parse().ok()
}

/// `nvmeNnK` or `nvmeScNnK`.
fn is_namespace_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some(rest) = name.strip_prefix("nvme") else {
        return false;
    };
    let Some((head, ns)) = rest.split_once('n') else {
        return false;
    };
    digits(ns)
        && match head.split_once('c') {
            Some((s, c)) => digits(s) && digits(c),
            None => digits(head),
        }
}

fn read_u32(p: &Path) -> Option<u32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Controller directories under `<sysfs>/class/nvme`, sorted by instance.
fn controllers(sysfs_root: &Path) -> Vec<(u32, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(sysfs_root.join("class/nvme")) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = controller_instance(name.to_str()?)?;
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Every namespace of every controller with its LBA size; namespaces whose files cannot be read
/// (being removed, or no `nsid` on an old kernel) are left out.
pub fn namespace_lba_sizes(sysfs_root: &Path) -> Vec<NamespaceLba> {
    let mut out = Vec::new();
    for (ctrl_instance, dir) in controllers(sysfs_root) {
        let Ok(children) = std::fs::read_dir(&dir) else {
            continue;
        };
        for child in children.flatten() {
            let name = child.file_name();
            if !name.to_str().is_some_and(is_namespace_name) {
                continue;
            }
            let p = child.path();
            let (Some(nsid), Some(lbs)) = (
                read_u32(&p.join("nsid")),
                read_u32(&p.join("queue/logical_block_size")),
            ) else {
                log::debug!("{}: no nsid or logical_block_size", p.display());
                continue;
            };
            out.push(NamespaceLba {
                ctrl_instance,
                nsid,
                logical_block_size: lbs,
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Controller instance → subsystem NQN. A controller whose `subsysnqn` cannot be read is present
/// with an empty NQN: it exists, only its label is unknown.
pub fn controller_subsystems(sysfs_root: &Path) -> BTreeMap<u32, String> {
    controllers(sysfs_root)
        .into_iter()
        .map(|(n, dir)| {
            let nqn = std::fs::read_to_string(dir.join("subsysnqn")).unwrap_or_default();
            (n, nqn.trim().to_owned())
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    /// A namespace directory: name, nsid, logical block size.
    type FakeNs<'a> = (&'a str, u32, u32);

    /// A fake `/sys` with the given controllers `(instance, nqn, namespaces)`.
    pub fn fake_sysfs(ctrls: &[(u32, &str, &[FakeNs])]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (n, nqn, nss) in ctrls {
            let c = root.path().join(format!("class/nvme/nvme{n}"));
            fs::create_dir_all(&c).unwrap();
            fs::write(c.join("subsysnqn"), format!("{nqn}\n")).unwrap();
            for (name, nsid, lbs) in *nss {
                fs::create_dir_all(c.join(name).join("queue")).unwrap();
                fs::write(c.join(name).join("nsid"), format!("{nsid}\n")).unwrap();
                fs::write(
                    c.join(name).join("queue/logical_block_size"),
                    format!("{lbs}\n"),
                )
                .unwrap();
            }
        }
        root
    }

    #[test]
    fn names() {
        assert!(is_namespace_name("nvme0n1"));
        assert!(is_namespace_name("nvme10c3n12"));
        assert!(!is_namespace_name("nvme0"));
        assert!(!is_namespace_name("nvme0c1"));
        assert!(!is_namespace_name("nvme0n"));
        assert!(!is_namespace_name("nvme0cxn1"));
        assert!(!is_namespace_name("power"));
        assert_eq!(controller_instance("nvme12"), Some(12));
        assert_eq!(controller_instance("nvme-fabrics"), None);
    }

    #[test]
    fn reads_plain_and_multipath_namespaces() {
        let root = fake_sysfs(&[
            (0, "nqn.a", &[("nvme0c0n1", 1, 512), ("nvme0c0n2", 2, 4096)]),
            (3, "nqn.b", &[("nvme3n1", 7, 4096)]),
        ]);
        fs::create_dir_all(root.path().join("class/nvme/nvme0/power")).unwrap();
        let got = namespace_lba_sizes(root.path());
        let want = [(0, 1, 512), (0, 2, 4096), (3, 7, 4096)].map(|(c, n, l)| NamespaceLba {
            ctrl_instance: c,
            nsid: n,
            logical_block_size: l,
        });
        assert_eq!(got, want);
        let subs = controller_subsystems(root.path());
        assert_eq!(subs.get(&0).map(String::as_str), Some("nqn.a"));
        assert_eq!(subs.get(&3).map(String::as_str), Some("nqn.b"));
        assert_eq!(subs.len(), 2);
    }

    #[test]
    fn no_nvme_class_is_empty() {
        let root = tempfile::tempdir().unwrap();
        assert!(namespace_lba_sizes(root.path()).is_empty());
        assert!(controller_subsystems(root.path()).is_empty());
    }
}
