//! Shared helpers for the end-to-end tests: one lab VM per kernel per test process, booted on
//! first use with every transport connected and the agent running, then shared by the tests (a
//! boot costs seconds under TCG; scenarios that change the topology restore it).
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use xtask::kernel::Series;
use xtask::lab::{Lab, LabOptions};

/// The kernels to test on: `NVMEOF_LAB_KERNELS` (comma separated), 6.1 by default.
pub fn kernels() -> Vec<Series> {
    let list = std::env::var("NVMEOF_LAB_KERNELS").unwrap_or_else(|_| "6.1".into());
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| Series::parse(s.trim()).expect("NVMEOF_LAB_KERNELS"))
        .collect()
}

/// The agent binary under test: `NVMEOF_AGENT_BIN`, which `cargo xtask test` sets after building.
pub fn agent_bin() -> PathBuf {
    let p = std::env::var_os("NVMEOF_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| xtask::cache::workspace().join("target/release/nvmeof-exporter"));
    assert!(
        p.is_file(),
        "no agent binary at {}: run the lab tests through `cargo xtask test`",
        p.display()
    );
    p
}

/// A booted lab with its topology: the transports the kernel could not set up, with why.
pub struct Shared {
    pub lab: Lab,
    pub topology: String,
}

impl Shared {
    /// The transports this kernel is expected to carry: all four, less those its limits name.
    pub fn expected_transports(&self) -> Vec<&'static str> {
        let limited = |module: &str| self.lab.kernel.limits.iter().any(|l| l.starts_with(module));
        let mut t = vec!["tcp", "rdma"];
        if !limited("nvme-fcloop") {
            t.push("fc");
        }
        if !limited("nvme-loop") {
            t.push("loop");
        }
        t
    }

    /// `controllers` in the guest, parsed: (name, transport, state, subsysnqn).
    pub fn controllers(&mut self) -> Vec<(String, String, String, String)> {
        let out = self.lab.sh_ok("controllers").expect("listing controllers");
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 4).then(|| {
                    (
                        f[0].into(),
                        f[1].into(),
                        f[2..f.len() - 1].join(" "),
                        f[f.len() - 1].into(),
                    )
                })
            })
            .collect()
    }
}

type Slot = Arc<Mutex<Option<Shared>>>;

fn slot(series: Series) -> Slot {
    static LABS: OnceLock<Mutex<BTreeMap<&'static str, Slot>>> = OnceLock::new();
    let mut labs = LABS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    labs.entry(series.name()).or_default().clone()
}

/// Runs `f` on the shared lab of a kernel, booting it first if needed.
pub fn with_lab<R>(series: Series, f: impl FnOnce(&mut Shared) -> R) -> R {
    let slot = slot(series);
    let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        let mut opts = LabOptions::new(series);
        opts.agent = Some(agent_bin());
        let mut lab = Lab::boot(&opts).expect("booting the lab");
        let topology = lab
            .sh("topology; controllers")
            .expect("setting up the topology")
            .out;
        eprintln!("lab {}: topology\n{topology}", lab.kernel.release);
        *guard = Some(Shared { lab, topology });
    }
    f(guard.as_mut().expect("lab booted above"))
}
