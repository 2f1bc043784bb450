//! Fibre Channel HBAs as `scsi_transport_fc` shows them: `class/fc_host/hostN` (port names,
//! state, `statistics/`) and `class/fc_remote_ports/rport-H:B-R` (port names, state and, on
//! kernels with FPIN, `statistics/`). Statistics are hex; all ones means "not supported".
//! Values that had to be cleaned or could not be read are skips, counted by the collector.
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::attr::{Attrs, Parsed, Skip};

/// One end of an FC path, as both `class/fc_host` and `class/fc_remote_ports` show it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FcPort {
    /// `hostN` or `rport-H:B-R`.
    pub name: String,
    /// `port_name`, e.g. `0x20000000000000a1`.
    pub port_name: String,
    pub node_name: String,
    pub port_state: Option<String>,
    pub statistics: BTreeMap<String, u64>,
}

/// An HBA port (`class/fc_host/hostN`).
pub type FcHost = FcPort;

/// A remote port (`class/fc_remote_ports/rport-H:B-R`) and the HBA port it is seen through.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FcRemotePort {
    pub port: FcPort,
    /// The N of the `hostN` it belongs to.
    pub host: u32,
}

/// A statistic as sysfs prints it: hex (`0x1a`) or decimal; `None` for all ones (unsupported).
pub fn stat_value(s: &str) -> Option<u64> {
    let s = s.trim();
    let v = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok()?,
        None => s.parse().ok()?,
    };
    (v != u64::MAX).then_some(v)
}

fn statistics(dir: &Path, skipped: &mut Vec<Skip>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    let mut a = Attrs::new(dir, skipped);
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Write-only trigger, not a statistic.
        if name == "reset_statistics" {
            continue;
        }
        let Some(text) = a.text(&name) else {
            continue;
        };
        match stat_value(&text) {
            Some(v) => {
                out.insert(name, v);
            }
            // All ones: the driver does not count it.
            None if is_all_ones(&text) => {}
            None => a.skip(&name, format!("{text:?} is not a statistic")),
        }
    }
    out
}

/// A statistic the driver does not keep: all ones.
fn is_all_ones(s: &str) -> bool {
    s.trim()
        .strip_prefix("0x")
        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c == 'f' || c == 'F'))
}

fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The port at `d`: its names, state and statistics.
fn port(d: &Path, skipped: &mut Vec<Skip>) -> FcPort {
    let mut a = Attrs::new(d, skipped);
    let (port_name, node_name, port_state) = (
        a.text("port_name").unwrap_or_default(),
        a.text("node_name").unwrap_or_default(),
        a.text("port_state"),
    );
    FcPort {
        name: name_of(d),
        port_name,
        node_name,
        port_state,
        statistics: statistics(&d.join("statistics"), skipped),
    }
}

pub fn fc_hosts(root: &Path) -> Parsed<FcHost> {
    let mut skipped = Vec::new();
    let items = entries(&root.join("class/fc_host"))
        .into_iter()
        .map(|d| port(&d, &mut skipped))
        .collect();
    Parsed { items, skipped }
}

pub fn fc_remote_ports(root: &Path) -> Parsed<FcRemotePort> {
    let mut skipped = Vec::new();
    let items = entries(&root.join("class/fc_remote_ports"))
        .into_iter()
        .filter_map(|d| {
            let host = name_of(&d)
                .strip_prefix("rport-")?
                .split(':')
                .next()?
                .parse()
                .ok()?;
            Some(FcRemotePort {
                port: port(&d, &mut skipped),
                host,
            })
        })
        .collect();
    Parsed { items, skipped }
}

/// The WWPN of an NVMe/FC address (`nn-0x...:pn-0x...`), as `0x` and 16 lower-case hex digits
/// (the way `port_name` reads).
pub fn wwpn_of(addr: &str) -> Option<String> {
    let pn = addr.split(':').find_map(|p| p.strip_prefix("pn-"))?;
    let v = u64::from_str_radix(pn.trim_start_matches("0x"), 16).ok()?;
    Some(format!("{v:#018x}"))
}

/// Same spelling for a `port_name` as read.
pub fn normalise_wwn(s: &str) -> Option<String> {
    let v = u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()?;
    Some(format!("{v:#018x}"))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A tree shaped like scsi_transport_fc's: one HBA port with statistics, one remote port.
    pub fn write_tree(root: &Path) {
        let h = root.join("class/fc_host/host3");
        fs::create_dir_all(h.join("statistics")).unwrap();
        fs::write(h.join("port_name"), "0x20000000000000a1\n").unwrap();
        fs::write(h.join("node_name"), "0x10000000000000a1\n").unwrap();
        fs::write(h.join("port_state"), "Online\n").unwrap();
        for (k, v) in [
            ("link_failure_count", "0x2"),
            ("loss_of_sync_count", "0x5"),
            ("loss_of_signal_count", "0x1"),
            ("invalid_crc_count", "0x1a"),
            ("error_frames", "0x0"),
            ("nos_count", "0xffffffffffffffff"),
            ("tx_frames", "0x100"),
        ] {
            fs::write(h.join("statistics").join(k), format!("{v}\n")).unwrap();
        }
        fs::write(h.join("statistics/reset_statistics"), "").unwrap();
        let r = root.join("class/fc_remote_ports/rport-3:0-1");
        fs::create_dir_all(r.join("statistics")).unwrap();
        fs::write(r.join("port_name"), "0x20000000000000b1\n").unwrap();
        fs::write(r.join("node_name"), "0x10000000000000b1\n").unwrap();
        fs::write(r.join("port_state"), "Online\n").unwrap();
        fs::write(r.join("statistics/fpin_li"), "0x3\n").unwrap();
        fs::write(r.join("statistics/fpin_cn"), "0x0\n").unwrap();
    }

    #[test]
    fn parses_hosts_and_remote_ports() {
        let d = tempfile::tempdir().unwrap();
        write_tree(d.path());
        let hosts = fc_hosts(d.path());
        assert_eq!(hosts.skipped, vec![], "all ones is unsupported, not odd");
        assert_eq!(hosts.items.len(), 1);
        let h = &hosts.items[0];
        assert_eq!(h.name, "host3");
        assert_eq!(h.port_state.as_deref(), Some("Online"));
        assert_eq!(h.statistics["invalid_crc_count"], 26);
        assert_eq!(h.statistics["link_failure_count"], 2);
        assert!(!h.statistics.contains_key("nos_count"));
        assert!(!h.statistics.contains_key("reset_statistics"));
        let r = fc_remote_ports(d.path()).items;
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].host, r[0].port.statistics["fpin_li"]), (3, 3));
        assert!(fc_hosts(Path::new("/nonexistent")).items.is_empty());
    }

    /// What had to be cleaned (a port name with a terminal escape) or could not be read as a
    /// statistic is kept or left out, and counted: one skip each.
    #[test]
    fn odd_values_are_counted() {
        let d = tempfile::tempdir().unwrap();
        write_tree(d.path());
        let h = d.path().join("class/fc_host/host3");
        fs::write(h.join("port_name"), "0x2000\x1b[31m\n").unwrap();
        fs::write(h.join("statistics/tx_frames"), "lots\n").unwrap();
        fs::remove_file(h.join("node_name")).unwrap();
        let hosts = fc_hosts(d.path());
        let why: Vec<String> = hosts
            .skipped
            .iter()
            .map(|s| {
                let name = s.path.file_name().unwrap().to_string_lossy();
                format!("{name}: {}", s.reason)
            })
            .collect();
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(
            why.iter()
                .any(|w| w.starts_with("port_name: control characters")),
            "{why:?}"
        );
        assert!(
            why.iter().any(|w| w.starts_with("tx_frames: \"lots\"")),
            "{why:?}"
        );
        assert!(why.iter().any(|w| w.starts_with("node_name: ")), "{why:?}");
        let host = &hosts.items[0];
        assert_eq!(host.port_name, "0x2000\u{FFFD}[31m");
        assert!(!host.statistics.contains_key("tx_frames"));
        assert_eq!(host.statistics["invalid_crc_count"], 26);
    }

    #[test]
    fn wwpns_compare_in_one_spelling() {
        assert_eq!(
            wwpn_of("nn-0x10000000000000a1:pn-0x20000000000000a1").as_deref(),
            Some("0x20000000000000a1")
        );
        assert_eq!(
            normalise_wwn("0x20000000000000A1").as_deref(),
            Some("0x20000000000000a1")
        );
        assert_eq!(wwpn_of("127.0.0.1"), None);
    }
}
