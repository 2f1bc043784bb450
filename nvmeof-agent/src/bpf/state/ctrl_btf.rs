//! What the state programs need from the kernel's BTF: the byte offsets of `state`, `instance`
//! and `nr_reconnects` in `struct nvme_ctrl`, and the values of `enum nvme_ctrl_state`, read with
//! the general reader in [`crate::bpf::btf`]. `struct nvme_ctrl` lives in `nvme_core`, whose BTF
//! (`/sys/kernel/btf/nvme_core`) is split BTF on top of `vmlinux`; when nvme_core is built in,
//! both are in vmlinux itself.
use std::path::Path;

use anyhow::Context as _;
use nvmeof_common::CtrlLayout;

use crate::bpf::btf::Btf;

/// What a tracer's programs need from nvme_core's BTF: the offsets they read and the names of
/// the state enum whose values they record, (value, name) as sysfs spells them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvmeCoreBtf<L> {
    pub layout: L,
    pub states: Vec<(u32, String)>,
}

/// `struct nvme_ctrl`'s layout and `enum nvme_ctrl_state`'s names.
pub type CtrlBtf = NvmeCoreBtf<CtrlLayout>;

/// [`CtrlBtf`] from BTF blobs: `module` is nvme_core's split BTF on `base` (vmlinux), or `None`
/// when nvme_core is built in.
pub fn ctrl_btf(base: &[u8], module: Option<&[u8]>) -> anyhow::Result<CtrlBtf> {
    let btf = nvme_core_btf(base, module)?;
    let offset = |name: &str| -> anyhow::Result<u32> { Ok(btf.member("nvme_ctrl", name)?.offset) };
    let (state, instance, nr_reconnects) = (
        offset("state")?,
        offset("instance")?,
        offset("nr_reconnects")?,
    );
    // As `nvme_sysfs_show_state` spells them.
    let states = sysfs_names(
        &btf,
        "nvme_ctrl_state",
        "NVME_CTRL_",
        &[("DELETING_NOIO", "deleting (no IO)")],
    )?;
    let state_new = states
        .iter()
        .find(|(_, n)| n == "new")
        .map(|(v, _)| *v)
        .context("enum nvme_ctrl_state has no NVME_CTRL_NEW")?;
    // The subsystem NQN a fabrics controller was asked to connect to: the connect programs only
    // need it, so a kernel whose BTF lacks it keeps the rest.
    let opts = btf
        .member_offset("nvme_ctrl", "opts", 8)
        .and_then(|o| Ok((o, btf.member_offset("nvmf_ctrl_options", "subsysnqn", 8)?)));
    let (opts, opts_subsysnqn, opts_valid) = match opts {
        Ok((o, n)) => (o, n, 1),
        Err(e) => {
            log::info!("state: failed connects not counted: {e:#}");
            (0, 0, 0)
        }
    };
    Ok(CtrlBtf {
        layout: CtrlLayout {
            state,
            instance,
            nr_reconnects,
            state_new,
            valid: 1,
            opts,
            opts_subsysnqn,
            opts_valid,
        },
        states,
    })
}

/// The values of `enum name` by the names sysfs shows for them: each enumerator without
/// `prefix`, in lower case, but for those sysfs spells otherwise (`spelled`: without the prefix,
/// then sysfs' name). Enumerators without the prefix, or with a negative value, are left out.
pub fn sysfs_names(
    btf: &Btf,
    name: &str,
    prefix: &str,
    spelled: &[(&str, &str)],
) -> anyhow::Result<Vec<(u32, String)>> {
    Ok(btf
        .enum_values(name)?
        .into_iter()
        .filter_map(|(n, v)| {
            let n = n.strip_prefix(prefix)?;
            let sysfs = match spelled.iter().find(|(e, _)| *e == n) {
                Some((_, s)) => (*s).to_owned(),
                None => n.to_ascii_lowercase(),
            };
            Some((u32::try_from(v).ok()?, sysfs))
        })
        .collect())
}

/// nvme_core's types: its split BTF on vmlinux's, or vmlinux's alone when it is built in.
pub fn nvme_core_btf(base: &[u8], module: Option<&[u8]>) -> anyhow::Result<Btf> {
    let base = Btf::parse(base).context("reading vmlinux BTF")?;
    Ok(match module {
        Some(m) => Btf::parse_split(m, base).context("reading nvme_core BTF")?,
        None => base,
    })
}

/// The blobs under `btf_dir` (`/sys/kernel/btf`): vmlinux, and nvme_core when it is a module.
pub fn read_blobs(btf_dir: &Path) -> anyhow::Result<(Vec<u8>, Option<Vec<u8>>)> {
    let vmlinux = btf_dir.join("vmlinux");
    let base = std::fs::read(&vmlinux).with_context(|| format!("reading {}", vmlinux.display()))?;
    let module_path = btf_dir.join("nvme_core");
    let module = match std::fs::read(&module_path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", module_path.display())),
    };
    Ok((base, module))
}

/// Reads the running kernel's BTF under `btf_dir` (`/sys/kernel/btf`).
pub fn read(btf_dir: &Path) -> anyhow::Result<CtrlBtf> {
    let (base, module) = read_blobs(btf_dir)?;
    ctrl_btf(&base, module.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::btf::BtfBuilder;

    #[test]
    fn finds_offsets_in_split_btf_with_names_in_the_base() {
        let mut base = BtfBuilder::new();
        base.name("state");
        base.name("instance");
        base.int("int", 4); // 1
        base.int("long", 8); // 2: stands for the pointers
        let mut m = BtfBuilder::split(&base);
        // "state" and "instance" resolve to the base's strings.
        m.strukt("nvme_ctrl_other", 64, &[("state", 1, 0, 0)]);
        m.strukt(
            "nvme_ctrl",
            64,
            &[
                ("instance", 1, 8 * 8, 0),
                ("state", 1, 40 * 8, 0),
                ("nr_reconnects", 1, 1400 * 8, 0),
                ("opts", 2, 1600 * 8, 0),
            ],
        );
        m.strukt("nvmf_ctrl_options", 256, &[("subsysnqn", 2, 24 * 8, 0)]);
        m.enumeration(
            "nvme_ctrl_state",
            &[
                ("NVME_CTRL_NEW", 0),
                ("NVME_CTRL_LIVE", 1),
                ("NVME_CTRL_DELETING_NOIO", 5),
            ],
        );
        let got = ctrl_btf(&base.finish(), Some(&m.finish())).unwrap();
        assert_eq!(
            got.layout,
            CtrlLayout {
                state: 40,
                instance: 8,
                nr_reconnects: 1400,
                state_new: 0,
                valid: 1,
                opts: 1600,
                opts_subsysnqn: 24,
                opts_valid: 1,
            }
        );
        assert_eq!(
            got.states,
            vec![
                (0, "new".to_owned()),
                (1, "live".to_owned()),
                (5, "deleting (no IO)".to_owned())
            ]
        );
    }

    #[test]
    fn a_missing_member_is_named() {
        let mut base = BtfBuilder::new();
        base.strukt("nvme_ctrl", 64, &[("state", 1, 0, 0)]);
        let err = ctrl_btf(&base.finish(), None).unwrap_err();
        assert!(format!("{err:#}").contains("no member instance"), "{err:#}");
    }

    /// This machine's own kernel: nvme_core may or may not be there; when it is, the three
    /// members must be found.
    #[test]
    fn the_running_kernel_if_it_has_nvme_core() {
        let dir = Path::new("/sys/kernel/btf");
        if !dir.join("nvme_core").exists() {
            return;
        }
        let got = read(dir).unwrap();
        assert!(got.states.iter().any(|(_, n)| n == "live"), "{got:?}");
    }
}
