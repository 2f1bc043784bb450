//! Writes small sysfs trees shaped like a 6.1 NVMe-oF host's, for unit tests of odd and edge
//! cases (a garbage value, a missing attribute) that a real kernel does not show. Golden and
//! end-to-end tests use the trees the lab captured from real kernels (`tests/fixtures/<kernel>`,
//! written by `cargo xtask capture`). Devices live under `devices/` and the class directories
//! hold symlinks to them, as in the real sysfs.
use std::fs;
use std::path::{Path, PathBuf};

/// A sysfs root being written. Paths are relative to it; it plays `/sys`.
pub struct FixtureTree {
    root: PathBuf,
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("attribute has a parent")).expect("mkdir");
    fs::write(path, text).expect("write attribute");
}

fn attrs(dir: &Path, pairs: &[(&str, &str)]) {
    for (name, value) in pairs {
        write(&dir.join(name), &format!("{value}\n"));
    }
}

fn link(target: &Path, at: &Path) {
    fs::create_dir_all(at.parent().expect("link has a parent")).expect("mkdir");
    std::os::unix::fs::symlink(target, at).expect("symlink");
}

const ZERO_STAT: &str =
    "       0        0        0        0        0        0        0        0        0        0        0        0        0        0        0        0        0";

impl FixtureTree {
    pub fn new(root: &Path) -> Self {
        FixtureTree {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Subsystem 0 (`nqn.test:a`) reached over TCP by nvme0 and nvme1 in these states: the
    /// multipath host most tests start from.
    pub fn two_paths(&self, states: [&str; 2]) {
        self.tcp_controller(0, "nqn.test:a", states[0]);
        self.tcp_controller(1, "nqn.test:a", states[1]);
        self.subsystem(0, "nqn.test:a", &[0, 1]);
    }

    pub fn ctrl_dir(&self, instance: u32) -> PathBuf {
        self.root
            .join(format!("devices/virtual/nvme-fabrics/ctl/nvme{instance}"))
    }

    pub fn subsys_dir(&self, instance: u32) -> PathBuf {
        self.root.join(format!(
            "devices/virtual/nvme-subsystem/nvme-subsys{instance}"
        ))
    }

    /// A controller as LAB.md shows one over TCP to 127.0.0.1:4420 on 6.1; returns its directory.
    pub fn tcp_controller(&self, instance: u32, nqn: &str, state: &str) -> PathBuf {
        let dir = self.ctrl_dir(instance);
        attrs(
            &dir,
            &[
                (
                    "address",
                    "traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1",
                ),
                ("cntlid", &(instance + 1).to_string()),
                ("cntrltype", "io"),
                ("ctrl_loss_tmo", "5"),
                ("dctype", "none"),
                ("fast_io_fail_tmo", "off"),
                ("firmware_rev", "6.1.0-56"),
                ("hostid", "2f6e3b0c-5a43-4bde-9c6e-9f1c0d7c1a10"),
                (
                    "hostnqn",
                    "nqn.2014-08.org.nvmexpress:uuid:2f6e3b0c-5a43-4bde-9c6e-9f1c0d7c1a10",
                ),
                ("kato", "5"),
                ("model", "Linux                                   "),
                ("numa_node", "-1"),
                ("queue_count", "3"),
                ("reconnect_delay", "1"),
                ("serial", "8a1f3c9e2b7d4e60    "),
                ("sqsize", "127"),
                ("state", state),
                ("subsysnqn", nqn),
                ("transport", "tcp"),
            ],
        );
        link(&dir, &self.root.join(format!("class/nvme/nvme{instance}")));
        dir
    }

    /// Turns a controller into one over another transport with its address format.
    pub fn set_transport(&self, instance: u32, transport: &str, address: &str) {
        let dir = self.ctrl_dir(instance);
        attrs(&dir, &[("transport", transport), ("address", address)]);
    }

    /// A subsystem with native multipath and links to its controllers; returns its directory.
    pub fn subsystem(&self, instance: u32, nqn: &str, ctrls: &[u32]) -> PathBuf {
        let dir = self.subsys_dir(instance);
        attrs(
            &dir,
            &[
                ("firmware_rev", "6.1.0-56"),
                ("iopolicy", "numa"),
                ("model", "Linux                                   "),
                ("serial", "8a1f3c9e2b7d4e60    "),
                ("subsysnqn", nqn),
                ("subsystype", "nvm"),
            ],
        );
        for c in ctrls {
            link(&self.ctrl_dir(*c), &dir.join(format!("nvme{c}")));
        }
        link(
            &dir,
            &self
                .root
                .join(format!("class/nvme-subsystem/nvme-subsys{instance}")),
        );
        dir
    }

    /// A multipath head `nvme{subsys}n{head}` of 1 GiB in 4 KiB blocks, with a hidden path under
    /// each controller; `ana` gives each path's state, `None` for a target without ANA.
    pub fn multipath_namespace(
        &self,
        subsys: u32,
        head: u32,
        nsid: u32,
        ctrls: &[u32],
        ana: Option<&[&str]>,
    ) {
        let name = format!("nvme{subsys}n{head}");
        disk(
            &self.subsys_dir(subsys).join(&name),
            nsid,
            2_097_152,
            4096,
            ZERO_STAT,
        );
        for (i, c) in ctrls.iter().enumerate() {
            let path = self.ctrl_dir(*c).join(format!("nvme{subsys}c{c}n{head}"));
            disk(&path, nsid, 2_097_152, 4096, ZERO_STAT);
            if let Some(states) = ana {
                attrs(&path, &[("ana_state", states[i]), ("ana_grpid", "1")]);
            }
        }
    }

    /// A disk `nvme{ctrl}n{instance}` without multipath: 512 MiB in 512-byte blocks, some I/O.
    pub fn plain_namespace(&self, ctrl: u32, instance: u32, nsid: u32) {
        let dir = self.ctrl_dir(ctrl).join(format!("nvme{ctrl}n{instance}"));
        let stat = "     100        0     2048       30      200        0     4096       50        1       70       80        0        0        0        0        4        2";
        disk(&dir, nsid, 1_048_576, 512, stat);
    }
}

fn disk(dir: &Path, nsid: u32, sectors: u64, lbs: u32, stat: &str) {
    attrs(
        dir,
        &[
            ("nsid", &nsid.to_string()),
            ("size", &sectors.to_string()),
            ("queue/logical_block_size", &lbs.to_string()),
            ("queue/physical_block_size", &lbs.to_string()),
            ("stat", stat),
        ],
    );
}

/// A [`FixtureTree`] in a temporary directory that lives as long as the value.
pub struct Tree {
    tree: FixtureTree,
    _dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        Tree {
            tree: FixtureTree::new(dir.path()),
            _dir: dir,
        }
    }
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl std::ops::Deref for Tree {
    type Target = FixtureTree;
    fn deref(&self) -> &FixtureTree {
        &self.tree
    }
}
