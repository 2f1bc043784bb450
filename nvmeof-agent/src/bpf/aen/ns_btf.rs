//! What the ANA kprobe needs from the kernel's BTF: the offsets it reads (see
//! [`AnaLayout`]) and the names of `enum nvme_ana_state`, read with the general reader in
//! [`crate::bpf::btf`] from nvme_core's split BTF (as the state programs' `ctrl_btf`). Each
//! field's size is checked against the width the program reads.
use std::path::Path;

use anyhow::Context as _;
use nvmeof_common::aen::AnaLayout;

use crate::bpf::state::ctrl_btf::{nvme_core_btf, read_blobs, sysfs_names, NvmeCoreBtf};

/// The layout and `enum nvme_ana_state`'s names.
pub type AnaBtf = NvmeCoreBtf<AnaLayout>;

pub fn ana_btf(base: &[u8], module: Option<&[u8]>) -> anyhow::Result<AnaBtf> {
    let btf = nvme_core_btf(base, module)?;
    let at = |s: &str, m: &str, size: u32| btf.member_offset(s, m, size);
    let layout = AnaLayout {
        desc_state: at("nvme_ana_group_desc", "state", 1)?,
        ns_ana_state: at("nvme_ns", "ana_state", 4)?,
        ns_ctrl: at("nvme_ns", "ctrl", 8)?,
        ns_head: at("nvme_ns", "head", 8)?,
        ctrl_instance: at("nvme_ctrl", "instance", 4)?,
        ctrl_subsys: at("nvme_ctrl", "subsys", 8)?,
        head_instance: at("nvme_ns_head", "instance", 4)?,
        subsys_instance: at("nvme_subsystem", "instance", 4)?,
        valid: 1,
    };
    // As `nvme_ana_state_names` spells them.
    let states = sysfs_names(
        &btf,
        "nvme_ana_state",
        "NVME_ANA_",
        &[
            ("NONOPTIMIZED", "non-optimized"),
            ("PERSISTENT_LOSS", "persistent-loss"),
        ],
    )?;
    Ok(AnaBtf { layout, states })
}

/// Reads the running kernel's BTF under `btf_dir` (`/sys/kernel/btf`).
pub fn read(btf_dir: &Path) -> anyhow::Result<AnaBtf> {
    let (base, module) = read_blobs(btf_dir)?;
    ana_btf(&base, module.as_deref()).context("the ANA kprobe's offsets")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::btf::BtfBuilder;

    #[test]
    fn offsets_and_state_names_from_split_btf() {
        let mut base = BtfBuilder::new();
        base.int("int", 4); // 1
        base.int("u8", 1); // 2
        base.int("long", 8); // 3: stands for the pointers
        let mut m = BtfBuilder::split(&base);
        m.strukt("nvme_ana_group_desc", 32, &[("state", 2, 16 * 8, 0)]);
        m.strukt(
            "nvme_ns",
            256,
            &[
                ("ctrl", 3, 8 * 8, 0),
                ("head", 3, 24 * 8, 0),
                ("ana_state", 1, 100 * 8, 0),
            ],
        );
        m.strukt(
            "nvme_ctrl",
            2048,
            &[("instance", 1, 40 * 8, 0), ("subsys", 3, 1200 * 8, 0)],
        );
        m.strukt("nvme_ns_head", 512, &[("instance", 1, 300 * 8, 0)]);
        m.strukt("nvme_subsystem", 512, &[("instance", 1, 4 * 8, 0)]);
        m.enumeration(
            "nvme_ana_state",
            &[
                ("NVME_ANA_OPTIMIZED", 1),
                ("NVME_ANA_NONOPTIMIZED", 2),
                ("NVME_ANA_INACCESSIBLE", 3),
                ("NVME_ANA_PERSISTENT_LOSS", 4),
                ("NVME_ANA_CHANGE", 15),
            ],
        );
        let got = ana_btf(&base.finish(), Some(&m.finish())).unwrap();
        assert_eq!(
            got.layout,
            AnaLayout {
                desc_state: 16,
                ns_ana_state: 100,
                ns_ctrl: 8,
                ns_head: 24,
                ctrl_instance: 40,
                ctrl_subsys: 1200,
                head_instance: 300,
                subsys_instance: 4,
                valid: 1
            }
        );
        let names: Vec<(u32, &str)> = got.states.iter().map(|(v, n)| (*v, n.as_str())).collect();
        assert_eq!(
            names,
            [
                (1, "optimized"),
                (2, "non-optimized"),
                (3, "inaccessible"),
                (4, "persistent-loss"),
                (15, "change")
            ]
        );
    }

    #[test]
    fn a_field_of_another_width_is_refused() {
        let mut base = BtfBuilder::new();
        base.int("int", 4);
        base.strukt("nvme_ana_group_desc", 32, &[("state", 1, 16 * 8, 0)]);
        let err = format!("{:#}", ana_btf(&base.finish(), None).unwrap_err());
        assert!(
            err.contains("nvme_ana_group_desc member state is 4 bytes, the programs read 1"),
            "{err}"
        );
    }
}
