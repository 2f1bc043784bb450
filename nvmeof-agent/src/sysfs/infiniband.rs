//! RDMA devices under `class/infiniband`: each port's counters (`counters/`, the IB port
//! counters of real HCAs; `hw_counters/`, the driver's own: soft-RoCE's retries, sequence errors,
//! ...), its GID table and the netdevs behind it, so that a controller can be tied to the port
//! that carries it. A value that had to be cleaned, or a counter that is not a number, is
//! counted in [`IbPort::odd_values`]; a counter the driver refuses to read is not data and not
//! counted (some HCAs refuse some `counters/` files on every read).
use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::Path;

use super::attr::read_clean;

/// One port of one RDMA device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IbPort {
    pub device: String,
    pub port: u32,
    /// Netdevs of the port: the device's `parent` (rxe, siw) and every `gid_attrs/ndevs/N`.
    pub netdevs: Vec<String>,
    /// IP addresses in the GID table (RoCE: IPv4-mapped or IPv6 GIDs; the zero GID left out).
    pub gid_addrs: Vec<IpAddr>,
    /// `counters/NAME`.
    pub counters: BTreeMap<String, u64>,
    /// `hw_counters/NAME`, except `lifespan` (a setting, not a count).
    pub hw_counters: BTreeMap<String, u64>,
    /// Netdev names and GIDs that had to be cleaned, at discovery.
    pub odd_labels: usize,
    /// Counter values that had to be cleaned or were not numbers, at the last read.
    pub odd_counters: usize,
}

impl IbPort {
    /// The values of its last read that were odd: skips for the collector to count.
    pub fn odd_values(&self) -> usize {
        self.odd_labels + self.odd_counters
    }
}

fn counters(dir: &Path, odd: &mut usize) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "lifespan" {
            continue;
        }
        let Some((text, cleaned)) = read_clean(&e.path()) else {
            continue;
        };
        match text.parse::<u64>() {
            Ok(v) if !cleaned => {
                out.insert(name, v);
            }
            _ => *odd += 1,
        }
    }
    out
}

/// Re-reads a port's `counters/` and `hw_counters/`: the cheap, changing part of [`IbPort`]
/// (its GIDs and netdevs, a file per GID slot, change only with the configuration).
pub fn refresh_counters(root: &Path, p: &mut IbPort) {
    let dir = root
        .join("class/infiniband")
        .join(&p.device)
        .join("ports")
        .join(p.port.to_string());
    let mut odd = 0;
    p.counters = counters(&dir.join("counters"), &mut odd);
    p.hw_counters = counters(&dir.join("hw_counters"), &mut odd);
    p.odd_counters = odd;
}

/// A GID as sysfs prints it (8 groups of 4 hex digits) → the IP address it carries, if any.
pub fn gid_addr(gid: &str) -> Option<IpAddr> {
    let a: std::net::Ipv6Addr = gid.trim().parse().ok()?;
    if a.is_unspecified() {
        return None;
    }
    Some(match a.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(a),
    })
}

/// Every port of every device under `ROOT/class/infiniband`; an empty list without RDMA.
pub fn ib_ports(root: &Path) -> Vec<IbPort> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(root.join("class/infiniband")) else {
        return out;
    };
    let mut devs: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    devs.sort();
    for dev in devs {
        let device = dev
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut odd_parent = 0;
        let parent = read_clean(&dev.join("parent")).map(|(name, cleaned)| {
            odd_parent += usize::from(cleaned);
            name
        });
        let Ok(ports) = fs::read_dir(dev.join("ports")) else {
            continue;
        };
        let mut ports: Vec<_> = ports.flatten().map(|e| e.path()).collect();
        ports.sort();
        for p in ports {
            let Some(port) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let mut netdevs: Vec<String> = parent.iter().cloned().collect();
            let mut gid_addrs = Vec::new();
            let mut odd_labels = odd_parent;
            if let Ok(gids) = fs::read_dir(p.join("gids")) {
                for g in gids.flatten() {
                    let Some((gid, cleaned)) = read_clean(&g.path()) else {
                        continue;
                    };
                    odd_labels += usize::from(cleaned);
                    let Some(a) = gid_addr(&gid) else {
                        continue;
                    };
                    gid_addrs.push(a);
                    // Reading the ndev of an unused slot fails (EINVAL): only used slots here.
                    let ndev = p.join("gid_attrs/ndevs").join(g.file_name());
                    if let Some((n, cleaned)) = read_clean(&ndev) {
                        odd_labels += usize::from(cleaned);
                        if !n.is_empty() && !netdevs.contains(&n) {
                            netdevs.push(n);
                        }
                    }
                }
            }
            let mut odd_counters = 0;
            gid_addrs.sort();
            gid_addrs.dedup();
            out.push(IbPort {
                device: device.clone(),
                port,
                netdevs,
                gid_addrs,
                counters: counters(&p.join("counters"), &mut odd_counters),
                hw_counters: counters(&p.join("hw_counters"), &mut odd_counters),
                odd_labels,
                odd_counters,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids_carry_addresses() {
        assert_eq!(
            gid_addr("0000:0000:0000:0000:0000:ffff:c000:0201"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            gid_addr("fe80:0000:0000:0000:6484:16ff:fee2:18a7"),
            Some("fe80::6484:16ff:fee2:18a7".parse().unwrap())
        );
        assert_eq!(gid_addr("0000:0000:0000:0000:0000:0000:0000:0000"), None);
    }

    /// A parent netdev with a control character is kept cleaned and counted; a counter that is
    /// not a number is left out and counted; one the driver refuses to read is neither.
    #[test]
    fn odd_values_are_counted() {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("class/infiniband/rxe0");
        let port = dev.join("ports/1");
        fs::create_dir_all(port.join("hw_counters")).unwrap();
        fs::create_dir_all(port.join("gids")).unwrap();
        fs::write(dev.join("parent"), "veth\x070\n").unwrap();
        fs::write(port.join("hw_counters/sent_pkts"), "12\n").unwrap();
        fs::write(port.join("hw_counters/rcvd_pkts"), "many\n").unwrap();
        // A directory where a counter should be: reading it fails, as a refused counter does.
        fs::create_dir_all(port.join("hw_counters/refused")).unwrap();
        let mut ports = ib_ports(d.path());
        let p = &ports[0];
        assert_eq!(p.netdevs, ["veth\u{FFFD}0"]);
        assert_eq!(p.hw_counters.keys().collect::<Vec<_>>(), ["sent_pkts"]);
        assert_eq!((p.odd_labels, p.odd_counters, p.odd_values()), (1, 1, 2));
        fs::write(port.join("hw_counters/rcvd_pkts"), "7\n").unwrap();
        refresh_counters(d.path(), &mut ports[0]);
        assert_eq!(ports[0].hw_counters["rcvd_pkts"], 7);
        assert_eq!(ports[0].odd_values(), 1, "the cleaned parent stays counted");
    }

    /// The lab-captured 6.1 tree: soft-RoCE on veth0, hw_counters only.
    #[test]
    fn captured_rxe_port() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/6.1/sys");
        let ports = ib_ports(&root);
        assert_eq!(ports.len(), 1);
        let p = &ports[0];
        assert_eq!((p.device.as_str(), p.port), ("rxe0", 1));
        assert_eq!(p.netdevs, ["veth0"]);
        assert!(p.hw_counters.contains_key("sent_pkts"));
        assert!(p.hw_counters.contains_key("retry_exceeded_err"));
        assert!(!p.hw_counters.contains_key("lifespan"));
        assert!(p.counters.is_empty());
    }
}
