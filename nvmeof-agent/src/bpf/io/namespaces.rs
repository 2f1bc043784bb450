//! The little sysfs the tracer needs, read at every drain so that namespaces and controllers
//! that appear later are picked up: each namespace's LBA size (the programs turn block counts
//! into bytes with it) and each controller's subsystem NQN (the `subsystem` label). Both come
//! from the sysfs parsers in [`crate::sysfs`]; a tree that cannot be read gives empty answers
//! (the drain then keeps 512-byte blocks and empty labels, and the sysfs collectors report why).
use std::collections::BTreeMap;
use std::path::Path;

pub use crate::sysfs::NamespaceLba;

/// Every namespace of every controller with its LBA size, sorted.
pub fn namespace_lba_sizes(sysfs_root: &Path) -> Vec<NamespaceLba> {
    let mut out = match crate::sysfs::namespace_lba_sizes(sysfs_root) {
        Ok(v) => v,
        Err(e) => {
            log::debug!("eBPF drain: no namespace LBA sizes: {e:#}");
            Vec::new()
        }
    };
    out.sort_by_key(|n| (n.ctrl_instance, n.nsid, n.logical_block_size));
    out.dedup();
    out
}

/// Controller instance → subsystem NQN. A controller whose `subsysnqn` cannot be read is present
/// with an empty NQN: it exists, only its label is unknown.
pub fn controller_subsystems(sysfs_root: &Path) -> BTreeMap<u32, String> {
    match crate::sysfs::controller::identities(sysfs_root) {
        Ok(found) => found
            .into_iter()
            .map(|c| (c.instance, c.subsysnqn))
            .collect(),
        Err(e) => {
            log::debug!("eBPF drain: no controllers: {e:#}");
            BTreeMap::new()
        }
    }
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

    /// A plain (non-multipath) namespace hangs off its controller.
    #[test]
    fn reads_plain_namespaces() {
        let root = fake_sysfs(&[(3, "nqn.b", &[("nvme3n1", 7, 4096)])]);
        let got = namespace_lba_sizes(root.path());
        let want = [NamespaceLba {
            ctrl_instance: 3,
            nsid: 7,
            logical_block_size: 4096,
        }];
        assert_eq!(got, want);
        let subs = controller_subsystems(root.path());
        assert_eq!(subs.get(&3).map(String::as_str), Some("nqn.b"));
        assert_eq!(subs.len(), 1);
    }

    /// The lab-captured 6.1 tree: native multipath, every controller reaches nsid 1 through its
    /// own path (`nvme0c1n1` is controller 1's path to the head `nvme0n1`).
    #[test]
    fn captured_tree_has_every_path_and_nqn() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/6.1/sys");
        let got = namespace_lba_sizes(&root);
        let want: Vec<NamespaceLba> = (0..5)
            .map(|c| NamespaceLba {
                ctrl_instance: c,
                nsid: 1,
                logical_block_size: 512,
            })
            .collect();
        assert_eq!(got, want);
        let subs = controller_subsystems(&root);
        let lab = |t: &str| format!("nqn.2026-11.io.nvmeof-exporter.lab:{t}");
        let want: BTreeMap<u32, String> =
            [(0, "tcp"), (1, "tcp"), (2, "rdma"), (3, "fc"), (4, "loop")]
                .into_iter()
                .map(|(c, t)| (c, lab(t)))
                .collect();
        assert_eq!(subs, want);
    }

    #[test]
    fn no_nvme_class_is_empty() {
        let root = tempfile::tempdir().unwrap();
        assert!(namespace_lba_sizes(root.path()).is_empty());
        assert!(controller_subsystems(root.path()).is_empty());
    }
}
