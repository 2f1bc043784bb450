//! Namespaces and the paths to them.
//!
//! With native multipath the disk is a head `nvmeSnN` under `nvme-subsysS` and each controller
//! holds a hidden path disk `nvmeScCnN`; without it the disk `nvmeCnN` sits under its controller
//! and is its own single path. ANA state is per path and absent when the controller does not use
//! ANA.
use std::collections::BTreeMap;
use std::path::Path;

use super::attr::{entries, still_there, Attrs, Gone, Parsed, Skip};
use super::blockstat::{parse_stat, BlockStat};
use super::controller::ctrl_instance;
use super::Spelled;

spelled! {
    /// Asymmetric namespace access state of one path, as `ana_state` spells it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum AnaState {
        Optimized => "optimized",
        NonOptimized => "non-optimized",
        Inaccessible => "inaccessible",
        PersistentLoss => "persistent-loss",
        Change => "change",
    }
}

/// A namespace as the host sees it: the block device I/O is submitted to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Namespace {
    /// `nvmeSnN` (multipath head) or `nvmeCnN` (plain disk).
    pub name: String,
    /// The NQN of the subsystem the namespace belongs to.
    pub subsysnqn: Option<String>,
    pub nsid: Option<u32>,
    /// In 512-byte sectors, whatever the logical block size.
    pub size_sectors: Option<u64>,
    pub logical_block_size: Option<u32>,
    pub stat: Option<BlockStat>,
    /// One per controller that reaches the namespace.
    pub paths: Vec<NsPath>,
}

/// One controller's way to a namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NsPath {
    /// `nvmeScCnN`, or the plain disk's own name.
    pub name: String,
    /// `nvmeC`.
    pub controller: String,
    pub ctrl_instance: u32,
    pub nsid: Option<u32>,
    pub logical_block_size: Option<u32>,
    pub ana_state: Option<AnaState>,
}

/// What the eBPF side needs to turn a command's LBA count into bytes: one entry per
/// (controller, namespace) pair, multipath paths included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NamespaceLba {
    /// The N of `nvmeN`, the tracepoints' `ctrl_id`.
    pub ctrl_instance: u32,
    pub nsid: u32,
    pub logical_block_size: u32,
}

/// `(S, N)` of a disk name `nvmeSnN` (a head, or a plain disk whose S is its controller).
pub fn head_instance(name: &str) -> Option<(u32, u32)> {
    let (s, n) = name.strip_prefix("nvme")?.split_once('n')?;
    Some((number(s)?, number(n)?))
}

/// `(S, C, N)` of a path name `nvmeScCnN`.
pub fn path_instance(name: &str) -> Option<(u32, u32, u32)> {
    let (s, rest) = name.strip_prefix("nvme")?.split_once('c')?;
    let (c, n) = rest.split_once('n')?;
    Some((number(s)?, number(c)?, number(n)?))
}

fn number(digits: &str) -> Option<u32> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The entries of a subsystem's or controller's directory; `None`, with a skip, when it cannot be
/// read (removed, a link that loops): that one directory costs itself only.
fn listing(dir: &Path, skipped: &mut Vec<Skip>) -> Option<Vec<String>> {
    let listed =
        still_there(dir).and_then(|()| entries(dir).map_err(|e| Gone::Bad(format!("{e:#}"))));
    match listed {
        Ok(l) => Some(l),
        Err(gone) => {
            skipped.extend(gone.into_skip(dir.to_path_buf()));
            None
        }
    }
}

/// Every namespace under `ROOT/class/nvme-subsystem` (heads) and `ROOT/class/nvme` (paths and
/// plain disks).
pub fn namespaces(root: &Path) -> anyhow::Result<Parsed<Namespace>> {
    let mut out = Parsed::<Namespace>::default();
    let mut heads = BTreeMap::new();
    let subsys_class = root.join("class/nvme-subsystem");
    for subsys in entries(&subsys_class)? {
        let dir = subsys_class.join(&subsys);
        let Some(listed) = listing(&dir, &mut out.skipped) else {
            continue;
        };
        let nqn = Attrs::new(&dir, &mut out.skipped).text("subsysnqn");
        for entry in listed {
            if head_instance(&entry).is_some() {
                let ns = disk(&dir.join(&entry), &entry, nqn.clone(), &mut out.skipped);
                heads.insert(entry, out.items.len());
                out.items.push(ns);
            }
        }
    }
    let ctrl_class = root.join("class/nvme");
    for ctrl in entries(&ctrl_class)? {
        let Some(instance) = ctrl_instance(&ctrl) else {
            continue;
        };
        let dir = ctrl_class.join(&ctrl);
        let Some(listed) = listing(&dir, &mut out.skipped) else {
            continue;
        };
        for entry in listed {
            if let Some((s, _, n)) = path_instance(&entry) {
                let p = path(&dir.join(&entry), &entry, &ctrl, instance, &mut out.skipped);
                match heads.get(&format!("nvme{s}n{n}")) {
                    Some(&i) => out.items[i].paths.push(p),
                    // Seen while a namespace is being removed: the head went first.
                    None => out.skipped.push(Skip {
                        path: dir.join(&entry),
                        reason: "path without a namespace head".into(),
                    }),
                }
            } else if head_instance(&entry).is_some() {
                let d = dir.join(&entry);
                let nqn = Attrs::new(&dir, &mut out.skipped).text("subsysnqn");
                let mut ns = disk(&d, &entry, nqn, &mut out.skipped);
                let p = path(&d, &entry, &ctrl, instance, &mut out.skipped);
                ns.paths.push(p);
                out.items.push(ns);
            }
        }
    }
    Ok(out)
}

/// The logical block size of every (controller, namespace) pair; pairs whose nsid or block size
/// cannot be read are left out (the eBPF side then counts 512-byte blocks and says so).
pub fn namespace_lba_sizes(root: &Path) -> anyhow::Result<Vec<NamespaceLba>> {
    let mut out = Vec::new();
    for ns in namespaces(root)?.items {
        for p in &ns.paths {
            let nsid = p.nsid.or(ns.nsid);
            let lbs = p.logical_block_size.or(ns.logical_block_size);
            if let (Some(nsid), Some(logical_block_size)) = (nsid, lbs) {
                out.push(NamespaceLba {
                    ctrl_instance: p.ctrl_instance,
                    nsid,
                    logical_block_size,
                });
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// One path's ANA state as read by [`path_ana_states`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathAna {
    /// The N of the controller `nvmeN` the path goes through.
    pub ctrl_instance: u32,
    /// The controller's subsystem NQN.
    pub subsysnqn: String,
    /// `nvmeScCnN`, or a plain disk's `nvmeCnN`.
    pub path: String,
    /// `ana_state` as sysfs spells it.
    pub state: String,
}

/// Every controller under `ROOT/class/nvme` with its subsystem NQN, and (with `ana`) the
/// `ana_state` of each of its paths that has one: nothing else is read, so that a poll every
/// 100 ms stays cheap (one `subsysnqn` per controller, one `ana_state` per path).
pub fn path_ana_states(root: &Path, ana: bool) -> (Vec<(u32, String)>, Vec<PathAna>) {
    let (mut ctrls, mut paths) = (Vec::new(), Vec::new());
    let Ok(class) = std::fs::read_dir(root.join("class/nvme")) else {
        return (ctrls, paths);
    };
    for c in class.flatten() {
        let Some(instance) = ctrl_instance(&c.file_name().to_string_lossy()) else {
            continue;
        };
        let dir = c.path();
        let nqn = super::read_trim(&dir.join("subsysnqn")).unwrap_or_default();
        ctrls.push((instance, nqn.clone()));
        if !ana {
            continue;
        }
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if path_instance(&name).is_none() && head_instance(&name).is_none() {
                continue;
            }
            if let Some(state) = super::read_trim(&dir.join(&name).join("ana_state")) {
                paths.push(PathAna {
                    ctrl_instance: instance,
                    subsysnqn: nqn.clone(),
                    path: name,
                    state,
                });
            }
        }
    }
    (ctrls, paths)
}

/// The namespace a path leads to: the head `nvmeSnN` of a path `nvmeScCnN`, or a plain disk
/// itself.
pub fn namespace_of_path(path: &str) -> String {
    match path_instance(path) {
        Some((s, _, n)) => format!("nvme{s}n{n}"),
        None => path.to_owned(),
    }
}

fn disk(dir: &Path, name: &str, nqn: Option<String>, skipped: &mut Vec<Skip>) -> Namespace {
    let mut a = Attrs::new(dir, skipped);
    let stat = a.long_text("stat").and_then(|t| match parse_stat(&t) {
        Ok(s) => Some(s),
        Err(e) => {
            a.skip("stat", e);
            None
        }
    });
    Namespace {
        name: name.to_owned(),
        subsysnqn: nqn,
        nsid: a.number("nsid"),
        size_sectors: a.number("size"),
        logical_block_size: a.number("queue/logical_block_size"),
        stat,
        paths: Vec::new(),
    }
}

fn path(dir: &Path, name: &str, ctrl: &str, instance: u32, skipped: &mut Vec<Skip>) -> NsPath {
    let mut a = Attrs::new(dir, skipped);
    let ana_state = a.optional_text("ana_state").map(|s| AnaState::parse(&s));
    if let Some(AnaState::Unknown(s)) = &ana_state {
        a.skip("ana_state", format!("unknown ANA state {s:?}"));
    }
    NsPath {
        name: name.to_owned(),
        controller: ctrl.to_owned(),
        ctrl_instance: instance,
        nsid: a.number("nsid"),
        // Hidden path disks may lack a queue directory on some kernels; the head's size is used.
        logical_block_size: a.optional_number("queue/logical_block_size"),
        ana_state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Tree;

    fn two_path_tree() -> Tree {
        let t = Tree::new();
        t.two_paths(["live", "live"]);
        t.multipath_namespace(0, 1, 1, &[0, 1], Some(&["optimized", "non-optimized"]));
        t
    }

    #[test]
    fn a_multipath_head_with_two_paths() {
        let t = two_path_tree();
        let p = namespaces(t.root()).unwrap();
        assert_eq!(p.skipped, vec![]);
        assert_eq!(p.items.len(), 1);
        let ns = &p.items[0];
        assert_eq!(ns.name, "nvme0n1");
        assert_eq!(ns.subsysnqn.as_deref(), Some("nqn.test:a"));
        assert_eq!(ns.nsid, Some(1));
        assert_eq!(ns.size_sectors, Some(2_097_152));
        assert_eq!(ns.logical_block_size, Some(4096));
        assert_eq!(ns.stat.unwrap().write_ios, 0, "6.1 heads read zeros");
        let names: Vec<_> = ns.paths.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["nvme0c0n1", "nvme0c1n1"]);
        assert_eq!(ns.paths[1].controller, "nvme1");
        assert_eq!(ns.paths[1].ana_state, Some(AnaState::NonOptimized));
    }

    #[test]
    fn ana_states_of_every_path_alone() {
        let t = two_path_tree();
        let (ctrls, mut paths) = path_ana_states(t.root(), true);
        paths.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(ctrls.len(), 2);
        assert!(
            ctrls.iter().all(|(_, nqn)| nqn == "nqn.test:a"),
            "{ctrls:?}"
        );
        let got: Vec<_> = paths
            .iter()
            .map(|p| (p.ctrl_instance, p.path.as_str(), p.state.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (0, "nvme0c0n1", "optimized"),
                (1, "nvme0c1n1", "non-optimized")
            ]
        );
        assert_eq!(namespace_of_path("nvme0c1n1"), "nvme0n1");
        assert_eq!(namespace_of_path("nvme2n1"), "nvme2n1");
    }

    #[test]
    fn lba_sizes_cover_every_path() {
        let t = two_path_tree();
        let lba = namespace_lba_sizes(t.root()).unwrap();
        assert_eq!(
            lba,
            [
                NamespaceLba {
                    ctrl_instance: 0,
                    nsid: 1,
                    logical_block_size: 4096
                },
                NamespaceLba {
                    ctrl_instance: 1,
                    nsid: 1,
                    logical_block_size: 4096
                },
            ]
        );
    }

    #[test]
    fn a_plain_disk_is_its_own_path_without_ana() {
        let t = Tree::new();
        t.tcp_controller(2, "nqn.test:b", "live");
        t.plain_namespace(2, 1, 7);
        let p = namespaces(t.root()).unwrap();
        assert_eq!(p.skipped, vec![]);
        let ns = &p.items[0];
        assert_eq!((ns.name.as_str(), ns.nsid), ("nvme2n1", Some(7)));
        assert_eq!(ns.subsysnqn.as_deref(), Some("nqn.test:b"));
        assert_eq!(ns.paths.len(), 1);
        assert_eq!(
            (ns.paths[0].ctrl_instance, ns.paths[0].ana_state.clone()),
            (2, None)
        );
        let lba = namespace_lba_sizes(t.root()).unwrap();
        assert_eq!(lba[0].logical_block_size, 512);
    }

    #[test]
    fn odd_namespace_values_are_skipped() {
        let t = two_path_tree();
        let head = t.subsys_dir(0).join("nvme0n1");
        std::fs::write(head.join("stat"), "0 0 0\n").unwrap();
        std::fs::write(head.join("size"), "lots\n").unwrap();
        let p1 = t.ctrl_dir(1).join("nvme0c1n1");
        std::fs::write(p1.join("ana_state"), "sideways\n").unwrap();
        std::fs::remove_file(p1.join("nsid")).unwrap();
        let p = namespaces(t.root()).unwrap();
        let ns = &p.items[0];
        assert_eq!((ns.stat, ns.size_sectors), (None, None));
        assert_eq!(
            ns.paths[1].ana_state,
            Some(AnaState::Unknown("sideways".into()))
        );
        assert_eq!(p.skipped.len(), 4, "{:?}", p.skipped);
        // The path without nsid falls back to the head's.
        assert_eq!(namespace_lba_sizes(t.root()).unwrap().len(), 2);
    }

    #[test]
    fn names_of_heads_and_paths() {
        assert_eq!(head_instance("nvme0n1"), Some((0, 1)));
        assert_eq!(head_instance("nvme0c1n1"), None);
        assert_eq!(head_instance("nvme0n1p1"), None);
        assert_eq!(path_instance("nvme0c12n3"), Some((0, 12, 3)));
        assert_eq!(path_instance("nvme0n1"), None);
        for ana in AnaState::KNOWN {
            assert_eq!(&AnaState::parse(ana.as_str()), ana);
        }
    }
}
