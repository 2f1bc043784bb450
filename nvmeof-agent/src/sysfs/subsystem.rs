//! `/sys/class/nvme-subsystem/nvme-subsysN`: one NVM subsystem, the controllers (paths) that
//! reach it and, with native multipath, its namespace heads.
use std::path::Path;

use super::attr::{entries, still_there, Attrs, Gone, Parsed, Skip};
use super::controller::{ctrl_instance, CtrlState};
use super::namespace::head_instance;
use super::Spelled;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Subsystem {
    /// `nvme-subsysN`.
    pub name: String,
    pub subsysnqn: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub firmware_rev: Option<String>,
    /// `numa`, `round-robin` or `queue-depth`; absent without native multipath.
    pub iopolicy: Option<String>,
    /// `nvm` or `discovery`; absent on kernels before 5.18.
    pub subsystype: Option<String>,
    /// The controllers linked under the subsystem: the paths to it.
    pub controllers: Vec<SubsysController>,
    /// Names of the multipath namespace heads (`nvmeXnY`) under the subsystem.
    pub namespaces: Vec<String>,
}

/// A controller as its subsystem lists it: enough to count live paths without a second scan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubsysController {
    /// `nvmeN`.
    pub name: String,
    pub state: Option<CtrlState>,
}

/// Every subsystem under `ROOT/class/nvme-subsystem`, in instance order.
pub fn subsystems(root: &Path) -> anyhow::Result<Parsed<Subsystem>> {
    let class = root.join("class/nvme-subsystem");
    let mut out = Parsed::default();
    for name in entries(&class)? {
        if !name.starts_with("nvme-subsys") {
            continue;
        }
        let dir = class.join(&name);
        // One subsystem that cannot be read (removed since the listing, a link that loops, a
        // directory that cannot be listed) costs itself only, counted as a skip.
        let mut skipped = Vec::new();
        let read = still_there(&dir)
            .and_then(|()| {
                subsystem(&dir, &name, &mut skipped).map_err(|e| Gone::Bad(format!("{e:#}")))
            })
            .and_then(|s| still_there(&dir).map(|()| s));
        match read {
            Ok(s) => {
                out.skipped.extend(skipped);
                out.items.push(s);
            }
            Err(gone) => out.skipped.extend(gone.into_skip(dir)),
        }
    }
    Ok(out)
}

fn subsystem(dir: &Path, name: &str, skipped: &mut Vec<Skip>) -> anyhow::Result<Subsystem> {
    let mut a = Attrs::new(dir, &mut *skipped);
    let mut s = Subsystem {
        name: name.to_owned(),
        subsysnqn: a.text("subsysnqn"),
        model: a.text("model"),
        serial: a.text("serial"),
        firmware_rev: a.text("firmware_rev"),
        iopolicy: a.optional_text("iopolicy"),
        subsystype: a.optional_text("subsystype"),
        ..Default::default()
    };
    for entry in entries(dir)? {
        if ctrl_instance(&entry).is_some() {
            // A path whose controller was deleted since the listing is no path.
            if let Err(gone) = still_there(&dir.join(&entry)) {
                skipped.extend(gone.into_skip(dir.join(&entry)));
                continue;
            }
            // Unknown states were counted by the controller parser's caller; here only liveness
            // matters.
            let state = Attrs::new(&dir.join(&entry), skipped)
                .text("state")
                .map(|t| CtrlState::parse(&t));
            s.controllers.push(SubsysController { name: entry, state });
        } else if head_instance(&entry).is_some() {
            s.namespaces.push(entry);
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Tree;

    #[test]
    fn a_subsystem_with_two_paths_and_a_head() {
        let t = Tree::new();
        t.two_paths(["live", "connecting"]);
        t.multipath_namespace(0, 1, 1, &[0, 1], Some(&["optimized", "inaccessible"]));
        let p = subsystems(t.root()).unwrap();
        assert_eq!(p.skipped, vec![]);
        let s = &p.items[0];
        assert_eq!(s.name, "nvme-subsys0");
        assert_eq!(s.subsysnqn.as_deref(), Some("nqn.test:a"));
        assert_eq!(s.iopolicy.as_deref(), Some("numa"));
        assert_eq!(s.subsystype.as_deref(), Some("nvm"));
        let names: Vec<_> = s.controllers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["nvme0", "nvme1"]);
        assert_eq!(s.controllers[1].state, Some(CtrlState::Connecting));
        assert_eq!(s.namespaces, ["nvme0n1"]);
    }

    /// A subsystem link that loops (or whose directory cannot be listed) and one that dangles
    /// cost themselves only: the good subsystem, its paths and its namespace are all there.
    #[test]
    fn one_bad_subsystem_entry_costs_that_entry_only() {
        let t = Tree::new();
        t.two_paths(["live", "live"]);
        t.multipath_namespace(0, 1, 1, &[0, 1], None);
        let class = t.root().join("class/nvme-subsystem");
        std::os::unix::fs::symlink("nvme-subsys3", class.join("nvme-subsys3")).unwrap();
        std::os::unix::fs::symlink("../../devices/gone", class.join("nvme-subsys4")).unwrap();
        // A path link under the good subsystem whose controller is gone.
        std::os::unix::fs::symlink(
            "../../nvme-fabrics/ctl/nvme9",
            t.subsys_dir(0).join("nvme9"),
        )
        .unwrap();
        let p = subsystems(t.root()).unwrap();
        let names: Vec<_> = p.items.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["nvme-subsys0"]);
        assert_eq!(p.items[0].controllers.len(), 2);
        // Only the loop counts: the removed subsystem and the gone path are deletions.
        assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
        assert_eq!(p.skipped[0].path, class.join("nvme-subsys3"));
        let ns = crate::sysfs::namespaces(t.root()).unwrap();
        assert_eq!(ns.items.len(), 1);
        assert_eq!(ns.items[0].paths.len(), 2);
        assert_eq!(ns.skipped.len(), 1, "{:?}", ns.skipped);
    }

    #[test]
    fn an_old_kernel_without_subsystype_or_iopolicy() {
        let t = Tree::new();
        let d = t.subsystem(2, "nqn.test:b", &[]);
        std::fs::remove_file(d.join("subsystype")).unwrap();
        std::fs::remove_file(d.join("iopolicy")).unwrap();
        std::fs::remove_file(d.join("model")).unwrap();
        let p = subsystems(t.root()).unwrap();
        let s = &p.items[0];
        assert_eq!((s.subsystype.clone(), s.iopolicy.clone()), (None, None));
        // Only the model counts: the other two are absent by design on such kernels.
        assert_eq!(p.skipped.len(), 1);
        assert!(s.controllers.is_empty());
    }
}
