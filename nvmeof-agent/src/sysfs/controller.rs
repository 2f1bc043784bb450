//! `/sys/class/nvme/nvmeN`: one NVMe controller, fabrics or PCIe.
//!
//! Attribute names and formats follow `drivers/nvme/host/core.c` (6.1; `sysfs.c` from 6.8). The
//! fabrics-only attributes (`hostnqn`, `ctrl_loss_tmo`, `reconnect_delay`, `fast_io_fail_tmo`)
//! are hidden on PCIe controllers, so their absence is no skip.
use std::path::Path;

use super::attr::{entries, still_there, Attrs, Parsed, Skip, MAX_ADDRESS_BYTES};
use super::Spelled;

spelled! {
    /// `nvme_ctrl_state` as the `state` attribute spells it.
    /// A word it does not know stays as it is (the kernel's own fallback is `unknown state`).
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
    pub enum CtrlState {
        New => "new",
        Live => "live",
        Resetting => "resetting",
        Connecting => "connecting",
        Deleting => "deleting",
        DeletingNoIo => "deleting (no IO)",
        Dead => "dead",
    }
}

/// A fabrics timeout that the administrator may switch `off` (`-1` in the kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    Off,
    Seconds(u32),
}

impl Timeout {
    /// The value exported: seconds, or -1 for `off` (documented in docs/metrics.md).
    pub fn as_f64(self) -> f64 {
        match self {
            Timeout::Off => -1.0,
            Timeout::Seconds(s) => s.into(),
        }
    }
}

/// The `address` attribute split into its parts. Fabrics transports print
/// `traddr=..,trsvcid=..[,host_traddr=..][,host_iface=..]`, TCP adds `src_addr=..`; PCIe prints
/// the bare PCI address, kept as `traddr`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Address {
    pub traddr: Option<String>,
    pub trsvcid: Option<String>,
    pub host_traddr: Option<String>,
    pub host_iface: Option<String>,
    pub src_addr: Option<String>,
}

impl Address {
    /// Parses the attribute's text; keys this exporter does not know are returned for counting.
    pub fn parse(text: &str) -> (Address, Vec<String>) {
        let mut a = Address::default();
        let mut unknown = Vec::new();
        let text = text.trim().trim_end_matches('\0');
        if !text.is_empty() && !text.contains('=') {
            a.traddr = Some(text.to_owned());
            return (a, unknown);
        }
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let v = Some(v.to_owned());
            match k {
                "traddr" => a.traddr = v,
                "trsvcid" => a.trsvcid = v,
                "host_traddr" => a.host_traddr = v,
                "host_iface" => a.host_iface = v,
                "src_addr" => a.src_addr = v,
                _ => unknown.push(part.to_owned()),
            }
        }
        (a, unknown)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Controller {
    /// `nvmeN`.
    pub name: String,
    /// The N of `nvmeN`: `nvme_ctrl->instance`, the `ctrl_id` of the nvme tracepoints.
    pub instance: u32,
    pub state: Option<CtrlState>,
    /// `tcp`, `rdma`, `fc`, `loop` or `pcie`.
    pub transport: Option<String>,
    pub address: Option<Address>,
    pub cntlid: Option<u16>,
    /// `io`, `discovery`, `admin` or `reserved` (5.18+).
    pub cntrltype: Option<String>,
    /// `none`, `ddc`, `cdc` or `reserved` (5.18+).
    pub dctype: Option<String>,
    /// Admin queue plus I/O queues.
    pub queue_count: Option<u32>,
    /// Entries per submission queue minus one (the NVMe 0's based value).
    pub sqsize: Option<u32>,
    /// Keep-alive timeout in seconds.
    pub kato: Option<u32>,
    pub ctrl_loss_tmo: Option<Timeout>,
    pub reconnect_delay: Option<Timeout>,
    pub fast_io_fail_tmo: Option<Timeout>,
    /// -1 when the controller has no NUMA affinity.
    pub numa_node: Option<i32>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub firmware_rev: Option<String>,
    pub subsysnqn: Option<String>,
    pub hostnqn: Option<String>,
    /// Whether a DH-HMAC-CHAP host key is configured (`dhchap_secret` is not `none`): the host
    /// authenticates to the subsystem when it requires it. `None` where the attribute is
    /// absent (PCIe, kernels without `CONFIG_NVME_HOST_AUTH`).
    pub dhchap_host_key: Option<bool>,
    /// Whether a DH-HMAC-CHAP controller key is configured (`dhchap_ctrl_secret`): the
    /// controller authenticates to the host too (bidirectional).
    pub dhchap_ctrl_key: Option<bool>,
    /// Whether the controller was asked for TLS (NVMe/TCP, 6.7+): the kernel shows `tls_key`
    /// only then. `Some(false)` for a TCP controller of a kernel that can do TLS (nvme_tcp has
    /// its `tls_handshake_timeout` parameter) without it; `None` where it cannot be known.
    pub tls: Option<bool>,
}

/// The `nvmeN` entries of `ROOT/class/nvme` in instance order: instance, name and directory.
fn listed(root: &Path) -> anyhow::Result<Vec<(u32, String, std::path::PathBuf)>> {
    let class = root.join("class/nvme");
    Ok(entries(&class)?
        .into_iter()
        .filter_map(|name| {
            let instance = ctrl_instance(&name)?;
            let dir = class.join(&name);
            Some((instance, name, dir))
        })
        .collect())
}

/// Every controller under `ROOT/class/nvme`, in instance order, read now (the collectors of a
/// scrape share one read: `crate::collector::Scrape::controllers`).
pub fn controllers(root: &Path) -> anyhow::Result<Parsed<Controller>> {
    let mut out = Parsed::default();
    let tls_capable = root
        .join("module/nvme_tcp/parameters/tls_handshake_timeout")
        .exists();
    for (instance, name, dir) in listed(root)? {
        // A controller deleted since the listing (its class link dangles) is dropped, and a
        // link that loops with one skip: emitted, either would be a series of empty labels.
        if let Err(gone) = still_there(&dir) {
            out.skipped.extend(gone.into_skip(dir));
            continue;
        }
        let mut skipped = Vec::new();
        let c = controller(&dir, &name, instance, tls_capable, &mut skipped);
        // Gone while its attributes were read: what was read is no controller either, and its
        // attributes that failed are no skips.
        if let Err(gone) = still_there(&dir) {
            out.skipped.extend(gone.into_skip(dir));
            continue;
        }
        out.skipped.extend(skipped);
        out.items.push(c);
    }
    Ok(out)
}

/// Who a controller is and whether it is up, without the rest of its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub instance: u32,
    /// `nvmeN`.
    pub name: String,
    /// Empty when it cannot be read.
    pub subsysnqn: String,
    /// Empty when it cannot be read.
    pub state: String,
}

/// Every controller's identity and state, in instance order: two attributes per controller where
/// [`controllers`] reads twenty, for the background readers that ask every few seconds (the eBPF
/// drain, the SMART scheduler).
pub fn identities(root: &Path) -> anyhow::Result<Vec<Identity>> {
    let mut out = Vec::new();
    for (instance, name, dir) in listed(root)? {
        if still_there(&dir).is_err() {
            continue;
        }
        let read = |attr: &str| super::read_trim(&dir.join(attr)).unwrap_or_default();
        out.push(Identity {
            instance,
            subsysnqn: read("subsysnqn"),
            state: read("state"),
            name,
        });
    }
    Ok(out)
}

/// Most hardware queues read per controller: past any kernel's (one per possible CPU), so that an
/// odd tree cannot make a scrape read without end.
const MAX_QUEUES_LISTED: usize = 8192;

/// The CPUs each I/O queue of controller `name` serves: blk-mq's `mq/N/cpu_list` of one of its
/// namespaces' request queues (`nvmeHcCnN` under a multipath head, `nvmeCnN` without one; all
/// of a controller's namespaces share its tag set, so one tells for all). Hardware context N is
/// queue id N + 1 in every transport (the admin queue, 0, has none). Returns (queue id, the CPU
/// list as the kernel writes it, e.g. `0-3,128-131`) in queue order, and how many entries were
/// skipped as odd; nothing for a controller without namespaces.
pub fn queue_cpus(root: &Path, name: &str) -> (Vec<(u32, String)>, usize) {
    let dir = root.join("class/nvme").join(name);
    let Some(mq) = entries(&dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| is_namespace_disk(e))
        .map(|e| dir.join(e).join("mq"))
        .find(|mq| mq.is_dir())
    else {
        return (Vec::new(), 0);
    };
    let (mut queues, mut skipped) = (Vec::new(), 0);
    for hctx in entries(&mq)
        .unwrap_or_default()
        .into_iter()
        .take(MAX_QUEUES_LISTED)
    {
        let Ok(n) = hctx.parse::<u32>() else {
            continue;
        };
        match super::read_trim(&mq.join(&hctx).join("cpu_list")) {
            Some(cpus) if is_cpu_list(&cpus) => queues.push((n.saturating_add(1), cpus)),
            _ => skipped += 1,
        }
    }
    (queues, skipped)
}

/// `nvmeCnN` or `nvmeHcCnN`: a namespace's disk under its controller.
fn is_namespace_disk(name: &str) -> bool {
    // What follows a run of digits, if there is one.
    fn digits(s: &str) -> Option<&str> {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        (n > 0).then(|| &s[n..])
    }
    let Some(rest) = name.strip_prefix("nvme").and_then(digits) else {
        return false;
    };
    let rest = match rest.strip_prefix('c') {
        Some(r) => match digits(r) {
            Some(r) => r,
            None => return false,
        },
        None => rest,
    };
    rest.strip_prefix('n').and_then(digits) == Some("")
}

/// A kernel CPU list (`0`, `0-3,8`): digits, commas and dashes, nothing else.
fn is_cpu_list(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
}

/// The N of a controller name `nvmeN`; `None` for anything else.
pub fn ctrl_instance(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("nvme")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn controller(
    dir: &Path,
    name: &str,
    instance: u32,
    tls_capable: bool,
    skipped: &mut Vec<Skip>,
) -> Controller {
    let mut a = Attrs::new(dir, skipped);
    let state = a.text("state").map(|s| CtrlState::parse(&s));
    if let Some(CtrlState::Unknown(s)) = &state {
        a.skip("state", format!("unknown controller state {s:?}"));
    }
    let transport = a.text("transport").filter(|t| !t.is_empty());
    // Loop controllers have no address; PCIe and fabrics do.
    let address = a.optional_long_text("address", MAX_ADDRESS_BYTES).map(|t| {
        let (addr, unknown) = Address::parse(&t);
        for part in unknown {
            a.skip("address", format!("unknown address part {part:?}"));
        }
        addr
    });
    // A TCP controller asked for TLS shows `tls_key` (the session's PSK serial, empty until a
    // handshake made one); others do not.
    let tls_key = a.optional_text("tls_key").is_some();
    Controller {
        name: name.to_owned(),
        instance,
        state,
        address,
        cntlid: a.number("cntlid"),
        cntrltype: a.optional_text("cntrltype"),
        dctype: a.optional_text("dctype"),
        queue_count: a.number("queue_count"),
        sqsize: a.number("sqsize"),
        kato: a.number("kato"),
        ctrl_loss_tmo: timeout(&mut a, "ctrl_loss_tmo"),
        reconnect_delay: timeout(&mut a, "reconnect_delay"),
        fast_io_fail_tmo: timeout(&mut a, "fast_io_fail_tmo"),
        numa_node: a.number("numa_node"),
        model: a.text("model"),
        serial: a.text("serial"),
        firmware_rev: a.text("firmware_rev"),
        subsysnqn: a.text("subsysnqn"),
        hostnqn: a.optional_text("hostnqn"),
        dhchap_host_key: a.secret_configured("dhchap_secret"),
        dhchap_ctrl_key: a.secret_configured("dhchap_ctrl_secret"),
        tls: match (tls_key, transport.as_deref()) {
            (true, _) => Some(true),
            (false, Some("tcp")) if tls_capable => Some(false),
            _ => None,
        },
        transport,
    }
}

fn timeout(a: &mut Attrs<'_>, name: &str) -> Option<Timeout> {
    let text = a.optional_text(name)?;
    if text == "off" {
        return Some(Timeout::Off);
    }
    a.parse::<u32>(name, &text).map(Timeout::Seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identity alone, as the captured 6.1 tree's files say it: every `nvmeN` with its
    /// `subsysnqn` and `state` as written there, trimmed.
    #[test]
    fn identities_of_the_captured_tree() {
        let root = crate::test_support::captured_6_1();
        let mut want: Vec<(u32, String, String, String)> =
            std::fs::read_dir(root.join("class/nvme"))
                .unwrap()
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let n = name.strip_prefix("nvme")?.parse().ok()?;
                    let read = |a: &str| std::fs::read_to_string(e.path().join(a)).ok();
                    let (nqn, state) = (read("subsysnqn")?, read("state")?);
                    Some((n, name, nqn.trim().to_owned(), state.trim().to_owned()))
                })
                .collect();
        want.sort();
        assert!(want.len() >= 5, "{want:?}");
        let got: Vec<_> = identities(&root)
            .unwrap()
            .into_iter()
            .map(|i| (i.instance, i.name, i.subsysnqn, i.state))
            .collect();
        assert_eq!(got, want);
    }
    use crate::test_support::Tree;

    /// The 6.1 lab tree: each TCP, RDMA, FC and loop controller's two I/O queues, one per vCPU,
    /// read from its namespace's disk under a multipath head (nvme1's is `nvme0c1n1`: the second
    /// path of subsystem 0).
    #[test]
    fn queue_cpus_come_from_a_namespace_disk_of_the_controller() {
        let root = crate::test_support::captured_6_1();
        for name in ["nvme0", "nvme1", "nvme2", "nvme3", "nvme4"] {
            assert_eq!(
                queue_cpus(&root, name),
                (vec![(1, "0".to_owned()), (2, "1".to_owned())], 0),
                "{name}"
            );
        }
        assert_eq!(queue_cpus(&root, "nvme9"), (Vec::new(), 0));
    }

    #[test]
    fn odd_cpu_lists_are_skipped_and_only_disks_are_read() {
        let t = Tree::new();
        let file = |rel: &str, text: &str| {
            let path = t.root().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        file("class/nvme/nvme0/nvme0-not-a-disk/mq/0/cpu_list", "9\n");
        file("class/nvme/nvme0/nvme0n1/mq/0/cpu_list", "0-3,8\n");
        file("class/nvme/nvme0/nvme0n1/mq/1/cpu_list", "4\x1b[31m\n");
        file("class/nvme/nvme0/nvme0n1/mq/x/cpu_list", "5\n");
        assert_eq!(
            queue_cpus(t.root(), "nvme0"),
            (vec![(1, "0-3,8".to_owned())], 1)
        );
        for (name, disk) in [
            ("nvme0n1", true),
            ("nvme0c1n1", true),
            ("nvme12c3n45", true),
            ("nvme0c1", false),
            ("nvme0n", false),
            ("nvmen1", false),
            ("nvme0n1p1", false),
            ("hwmon0", false),
        ] {
            assert_eq!(is_namespace_disk(name), disk, "{name}");
        }
    }

    #[test]
    fn a_6_1_tcp_controller() {
        let t = Tree::new();
        t.tcp_controller(0, "nqn.test:a", "live");
        let p = controllers(t.root()).unwrap();
        assert_eq!(p.skipped, vec![]);
        let c = &p.items[0];
        assert_eq!(c.name, "nvme0");
        assert_eq!(c.state, Some(CtrlState::Live));
        assert_eq!(c.transport.as_deref(), Some("tcp"));
        let addr = c.address.as_ref().unwrap();
        assert_eq!(addr.traddr.as_deref(), Some("127.0.0.1"));
        assert_eq!(addr.trsvcid.as_deref(), Some("4420"));
        assert_eq!(addr.src_addr.as_deref(), Some("127.0.0.1"));
        assert_eq!(addr.host_traddr, None);
        assert_eq!(c.queue_count, Some(3));
        assert_eq!(c.sqsize, Some(127));
        assert_eq!(c.ctrl_loss_tmo, Some(Timeout::Seconds(5)));
        assert_eq!(c.fast_io_fail_tmo, Some(Timeout::Off));
        assert_eq!(c.model.as_deref(), Some("Linux"));
        assert_eq!(c.numa_node, Some(-1));
    }

    #[test]
    fn one_scrape_reads_the_controllers_once() {
        use crate::collector::Scrape;
        let t = Tree::new();
        let d = t.tcp_controller(0, "nqn.test:a", "live");
        let state = |p: Parsed<Controller>| p.items[0].state.clone();
        let first = Scrape::new();
        let before = first.controllers(t.root()).unwrap();
        std::fs::write(d.join("state"), "resetting\n").unwrap();
        // The same scrape shares the first read; a later one, or a call outside any, reads again.
        let again = first.controllers(t.root()).unwrap();
        assert_eq!(state(before), Some(CtrlState::Live));
        assert_eq!(state(again), Some(CtrlState::Live));
        let next = Scrape::new().controllers(t.root()).unwrap();
        assert_eq!(state(next), Some(CtrlState::Resetting));
        std::fs::write(d.join("state"), "connecting\n").unwrap();
        assert_eq!(
            state(controllers(t.root()).unwrap()),
            Some(CtrlState::Connecting)
        );
    }

    #[test]
    fn odd_values_are_skipped_and_counted_not_fatal() {
        let t = Tree::new();
        let d = t.tcp_controller(3, "nqn.test:a", "sleeping");
        std::fs::write(d.join("kato"), "").unwrap();
        std::fs::write(d.join("queue_count"), "three\n").unwrap();
        std::fs::remove_file(d.join("serial")).unwrap();
        std::fs::write(d.join("ctrl_loss_tmo"), "-5\n").unwrap();
        let p = controllers(t.root()).unwrap();
        let c = &p.items[0];
        assert_eq!(c.instance, 3);
        assert_eq!(c.state, Some(CtrlState::Unknown("sleeping".into())));
        assert_eq!(
            (c.kato, c.queue_count, c.serial.clone()),
            (None, None, None)
        );
        assert_eq!(c.ctrl_loss_tmo, None);
        assert_eq!(c.sqsize, Some(127));
        assert_eq!(p.skipped.len(), 5, "{:?}", p.skipped);
    }

    #[test]
    fn every_kernel_state_round_trips() {
        for s in CtrlState::KNOWN {
            assert_eq!(&CtrlState::parse(s.as_str()), s);
        }
        assert_eq!(
            CtrlState::parse("deleting (no IO)"),
            CtrlState::DeletingNoIo
        );
        assert_eq!(
            CtrlState::parse("unknown state"),
            CtrlState::Unknown("unknown state".into())
        );
    }

    #[test]
    fn addresses_of_each_transport() {
        let (fc, unknown) = Address::parse("traddr=nn-0x1:pn-0x2,host_traddr=nn-0x3:pn-0x4\n");
        assert_eq!(fc.traddr.as_deref(), Some("nn-0x1:pn-0x2"));
        assert_eq!(fc.host_traddr.as_deref(), Some("nn-0x3:pn-0x4"));
        assert_eq!(unknown.len(), 0);
        let (pci, _) = Address::parse("0000:00:04.0\n");
        assert_eq!(pci.traddr.as_deref(), Some("0000:00:04.0"));
        let (v6, unknown) = Address::parse("traddr=fe80::1,trsvcid=4420,host_iface=eth0,keyring=x");
        assert_eq!(v6.traddr.as_deref(), Some("fe80::1"));
        assert_eq!(v6.host_iface.as_deref(), Some("eth0"));
        assert_eq!(unknown, ["keyring=x"]);
        assert_eq!(Address::parse("").0, Address::default());
    }

    /// A class link whose controller was deleted after the listing (it dangles) and one that
    /// loops are dropped, one skip each, rather than emitted with empty labels.
    #[test]
    fn a_vanished_or_looping_controller_is_dropped() {
        let t = Tree::new();
        t.tcp_controller(0, "nqn.test:a", "live");
        let class = t.root().join("class/nvme");
        std::os::unix::fs::symlink(
            "../../devices/virtual/nvme-fabrics/ctl/nvme5",
            class.join("nvme5"),
        )
        .unwrap();
        std::os::unix::fs::symlink("nvme7", class.join("nvme7")).unwrap();
        let p = controllers(t.root()).unwrap();
        let names: Vec<_> = p.items.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["nvme0"]);
        // The deleted one is no error (the kernel removes controllers); the loop is counted.
        assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
        assert_eq!(p.skipped[0].path, class.join("nvme7"));
        assert!(p.skipped[0].reason.contains("unresolvable"));
    }

    #[test]
    fn a_missing_class_is_no_data_not_an_error() {
        let t = Tree::new();
        let p = controllers(&t.root().join("nowhere")).unwrap();
        assert_eq!((p.items.len(), p.skipped.len()), (0, 0));
        assert_eq!(ctrl_instance("nvme-subsys0"), None);
        assert_eq!(ctrl_instance("nvme12"), Some(12));
    }
}
