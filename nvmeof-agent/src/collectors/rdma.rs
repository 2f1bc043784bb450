//! Collector `rdma`: the RDMA device and port that carry each `rdma` controller, and that port's
//! counters (`counters/`, `hw_counters/` under `class/infiniband/DEV/ports/N`).
//!
//! The port is found from the controller's address: first a port whose GID table holds
//! `host_traddr`, `src_addr` or `traddr` (a RoCE GID carries the IP address of its netdev), then
//! the port whose netdev holds or has on-link `traddr` (rtnetlink address dump). Labels:
//! `subsystem`, `controller`, `device`, `port`, and `counter` for the counter name as the driver
//! spells it.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::collector::{families, label, Collector, Scrape, Sink};
use crate::netlink::addr::{self, IfAddr};
use crate::sysfs::infiniband::{ib_ports, refresh_counters, IbPort};
use crate::sysfs::Controller;

families! {
    PORT_INFO: gauge("nvmeof_rdma_port_info",
        "The RDMA device and port that carry an rdma controller, with their netdev; always 1.");
    PORT_COUNTERS: counter("nvmeof_rdma_port_counters_total",
        "IB port counters of the RDMA port carrying the controller (sysfs ports/N/counters/NAME, as the kernel reports them).");
    HW_COUNTERS: counter("nvmeof_rdma_hw_counters_total",
        "Driver counters of the RDMA port carrying the controller (sysfs ports/N/hw_counters/NAME: packets, retries, retry-exceeded, out-of-sequence, duplicate requests, send errors, ...).");
}

/// How long the ports' GID tables and netdevs are reused while the host's addresses stay the
/// same. Reading them is a file per GID slot (1024 on a soft-RoCE port): under TCG a read took
/// about 120 ms, the whole of a warm scrape again, and with a 30 s limit a fleet's 15 s cadence
/// paid it every other scrape. A RoCE GID is made from an address of the port's netdev (and an
/// InfiniBand one from the port itself), so while the address dump is unchanged the table is
/// too; a controller whose address matches no cached port forces a fresh read, and this bounds
/// what the dump cannot see.
const PORTS_MAX_AGE: Duration = Duration::from_secs(300);
/// The same when the address dump failed: time alone says when to read again. Also the least
/// age at which a controller tied to no port forces a read: one routed through a gateway never
/// is, and would otherwise cost every scrape the whole read.
const PORTS_MAX_AGE_BLIND: Duration = Duration::from_secs(30);

/// The ports as last read, with the addresses they were read under.
struct PortCache {
    read_at: Instant,
    addrs: Option<Vec<IfAddr>>,
    ports: Vec<IbPort>,
}

pub struct RdmaCollector {
    sysfs: PathBuf,
    ports: Mutex<Option<PortCache>>,
}

impl RdmaCollector {
    pub fn new(sysfs: PathBuf) -> Self {
        RdmaCollector {
            sysfs,
            ports: Mutex::new(None),
        }
    }

    /// The ports, from the cache while the host's addresses (`None`: unknown) are those it was
    /// read under and it is young enough; `fresh` (a controller tied to no port) reads them
    /// again unless the cache is younger than [`PORTS_MAX_AGE_BLIND`]. Counters are always
    /// re-read.
    fn ports(&self, fresh: bool, addrs: Option<&[IfAddr]>) -> Vec<IbPort> {
        let mut cache = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let reusable = |c: &PortCache| match (fresh, addrs, c.addrs.as_deref()) {
            (false, Some(now), Some(then)) => now == then && c.read_at.elapsed() < PORTS_MAX_AGE,
            _ => c.read_at.elapsed() < PORTS_MAX_AGE_BLIND,
        };
        match cache.as_mut() {
            Some(c) if reusable(c) => {
                for p in c.ports.iter_mut() {
                    refresh_counters(&self.sysfs, p);
                }
                c.ports.clone()
            }
            _ => {
                let ports = ib_ports(&self.sysfs);
                *cache = Some(PortCache {
                    read_at: Instant::now(),
                    addrs: addrs.map(<[IfAddr]>::to_vec),
                    ports: ports.clone(),
                });
                ports
            }
        }
    }
}

/// Name of the netdev with `ifindex`, from `class/net/*/ifindex`.
fn netdev_name(root: &Path, ifindex: u32) -> Option<String> {
    std::fs::read_dir(root.join("class/net"))
        .ok()?
        .flatten()
        .find(|e| {
            crate::sysfs::read_trim(&e.path().join("ifindex")).and_then(|s| s.parse::<u32>().ok())
                == Some(ifindex)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

/// The port carrying `c`. `addrs` and `netdev_of` answer the route side (netlink and sysfs in
/// production, tables in tests).
pub fn port_of<'a>(
    c: &Controller,
    ports: &'a [IbPort],
    addrs: &[IfAddr],
    netdev_of: impl Fn(u32) -> Option<String>,
) -> Option<&'a IbPort> {
    let a = c.address.as_ref()?;
    let ip = |s: &Option<String>| s.as_deref().and_then(|s| s.parse::<IpAddr>().ok());
    let traddr = ip(&a.traddr);
    for cand in [ip(&a.host_traddr), ip(&a.src_addr), traddr]
        .into_iter()
        .flatten()
    {
        if let Some(p) = ports.iter().find(|p| p.gid_addrs.contains(&cand)) {
            return Some(p);
        }
    }
    let ifindex = addr::ifindex_for(addrs, traddr?)?;
    let netdev = netdev_of(ifindex)?;
    // An IPv4 address is labelled with its interface's name: a sysfs root that is not this
    // network namespace's (a fixture, another host's tree) names another interface there.
    let label = addrs
        .iter()
        .find(|a| a.ifindex == ifindex && !a.label.is_empty())
        .map(|a| a.label.split(':').next().unwrap_or_default());
    if label.is_some_and(|l| l != netdev) {
        return None;
    }
    ports.iter().find(|p| p.netdevs.contains(&netdev))
}

impl Collector for RdmaCollector {
    fn collect(&self, scrape: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
        let rdma = scrape.controllers_on(&self.sysfs, "rdma")?;
        if rdma.is_empty() {
            return Ok(());
        }
        // One dump a scrape: it tells whether the cached GID tables still hold, and which
        // netdev carries a controller no GID matches. A failed dump leaves the GID matches
        // standing.
        let dump = addr::addresses().ok();
        let addrs = dump.clone().unwrap_or_default();
        let netdev = |i| netdev_name(&self.sysfs, i);
        let mut ports = self.ports(false, dump.as_deref());
        if rdma
            .iter()
            .any(|c| port_of(c, &ports, &addrs, netdev).is_none())
        {
            // A controller tied to no port, by GID or route: perhaps a port configured since the
            // cache was filled.
            ports = self.ports(true, dump.as_deref());
        }
        // A port's odd values count once, however many controllers it carries.
        let mut counted: Vec<(&str, u32)> = Vec::new();
        for c in &rdma {
            let gid_hit = port_of(c, &ports, &[], |_| None);
            let port = match gid_hit {
                Some(p) => Some(p),
                None => port_of(c, &ports, &addrs, netdev),
            };
            let Some(p) = port else {
                sink.skipped(1);
                continue;
            };
            if !counted.contains(&(p.device.as_str(), p.port)) {
                counted.push((p.device.as_str(), p.port));
                sink.skipped(p.odd_values());
            }
            emit(sink, c, p);
        }
        Ok(())
    }
}

fn emit(sink: &mut Sink, c: &Controller, p: &IbPort) {
    let subsystem = label(&c.subsysnqn);
    let port = p.port.to_string();
    let netdev = p.netdevs.first().map(String::as_str).unwrap_or("");
    let base = [
        ("subsystem", subsystem),
        ("controller", c.name.as_str()),
        ("device", p.device.as_str()),
        ("port", port.as_str()),
    ];
    let mut info = base.to_vec();
    info.push(("netdev", netdev));
    sink.gauge(&PORT_INFO, &info, 1.0);
    for (fam, map) in [
        (&PORT_COUNTERS, &p.counters),
        (&HW_COUNTERS, &p.hw_counters),
    ] {
        for (name, v) in map {
            let mut l = base.to_vec();
            l.push(("counter", name.as_str()));
            sink.counter(fam, &l, *v as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs;

    fn rdma_ctrl(traddr: &str) -> Controller {
        let (address, _) = sysfs::Address::parse(&format!("traddr={traddr},trsvcid=4420"));
        Controller {
            name: "nvme2".into(),
            transport: Some("rdma".into()),
            address: Some(address),
            subsysnqn: Some("nqn.x:rdma".into()),
            ..Default::default()
        }
    }

    fn port(device: &str, netdev: &str, gid: &str) -> IbPort {
        IbPort {
            device: device.into(),
            port: 1,
            netdevs: vec![netdev.into()],
            gid_addrs: vec![gid.parse().unwrap()],
            ..Default::default()
        }
    }

    #[test]
    fn gid_match_then_route() {
        let ports = [
            port("mlx5_0", "eth0", "10.0.0.5"),
            port("rxe0", "veth0", "192.0.2.1"),
        ];
        // The target address is local (the lab): its GID names the port.
        let p = port_of(&rdma_ctrl("192.0.2.1"), &ports, &[], |_| None).unwrap();
        assert_eq!(p.device, "rxe0");
        // A remote target: the netdev with it on-link.
        let addrs = [IfAddr {
            ifindex: 4,
            label: "eth0".into(),
            addr: "10.0.0.5".parse().unwrap(),
            prefix_len: 24,
        }];
        let name = |i| (i == 4).then(|| "eth0".to_owned());
        let p = port_of(&rdma_ctrl("10.0.0.9"), &ports, &addrs, name).unwrap();
        assert_eq!(p.device, "mlx5_0");
        assert!(port_of(&rdma_ctrl("198.51.100.1"), &ports, &addrs, name).is_none());
        // The address dump names another interface than sysfs does for that index.
        let other = |i| (i == 4).then(|| "eth1".to_owned());
        assert!(port_of(&rdma_ctrl("10.0.0.9"), &ports, &addrs, other).is_none());
    }

    /// A port whose GID table holds `gid` in slot 0, in a tree of its own.
    fn gid_tree(gid: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let port = dir.path().join("class/infiniband/rxe0/ports/1");
        std::fs::create_dir_all(port.join("gids")).unwrap();
        std::fs::create_dir_all(port.join("gid_attrs/ndevs")).unwrap();
        std::fs::write(port.join("gids/0"), format!("{gid}\n")).unwrap();
        std::fs::write(port.join("gid_attrs/ndevs/0"), "veth0\n").unwrap();
        dir
    }

    fn address(a: &str) -> IfAddr {
        IfAddr {
            ifindex: 4,
            label: "veth0".into(),
            addr: a.parse().unwrap(),
            prefix_len: 24,
        }
    }

    /// The GID table is read again when the host's addresses change (a RoCE GID follows them),
    /// not while they stay the same; without an address dump, time alone decides.
    #[test]
    fn gid_tables_are_kept_while_the_addresses_stay() {
        let tree = gid_tree("0000:0000:0000:0000:0000:ffff:c000:0201");
        let c = RdmaCollector::new(tree.path().to_path_buf());
        let before = [address("192.0.2.1")];
        let gids = |ports: Vec<IbPort>| ports[0].gid_addrs.clone();
        let old: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap()];
        assert_eq!(gids(c.ports(false, Some(&before))), old);
        // The kernel moves the port to another address; the dump shows it.
        let gid = tree.path().join("class/infiniband/rxe0/ports/1/gids/0");
        std::fs::write(&gid, "0000:0000:0000:0000:0000:ffff:c000:0202\n").unwrap();
        assert_eq!(
            gids(c.ports(false, Some(&before))),
            old,
            "same addresses: cached"
        );
        let after = [address("192.0.2.2")];
        let new: Vec<IpAddr> = vec!["192.0.2.2".parse().unwrap()];
        assert_eq!(gids(c.ports(false, Some(&after))), new, "addresses changed");
        std::fs::write(&gid, "0000:0000:0000:0000:0000:ffff:c000:0203\n").unwrap();
        assert_eq!(gids(c.ports(false, None)), new, "no dump, young cache");
        // A controller tied to no port asks again: not before the cache is 30 s old (one
        // routed through a gateway never is tied, and would cost every scrape a read).
        assert_eq!(gids(c.ports(true, Some(&after))), new, "fresh, young cache");
        let mut cache = c.ports.lock().unwrap();
        let cached = cache.as_mut().unwrap();
        // (A host up for less than 30 s has no instant that old.)
        let Some(older) = cached.read_at.checked_sub(PORTS_MAX_AGE_BLIND) else {
            return;
        };
        cached.read_at = older;
        drop(cache);
        assert_ne!(gids(c.ports(true, Some(&after))), new, "fresh, old cache");
    }

    /// The captured 6.1 lab tree: nvme2 (rdma to 192.0.2.1) is carried by rxe0 port 1. The
    /// capture leaves GID tables out, so this goes through the route side with a table.
    #[test]
    fn captured_tree_ties_rxe0_to_the_rdma_controller() {
        let root = crate::test_support::captured_6_1();
        let parsed = sysfs::controllers(&root).unwrap();
        let c = parsed.items.iter().find(|c| c.name == "nvme2").unwrap();
        let ports = ib_ports(&root);
        let addrs = [IfAddr {
            ifindex: 4,
            label: "veth0".into(),
            addr: "192.0.2.1".parse().unwrap(),
            prefix_len: 24,
        }];
        let p = port_of(c, &ports, &addrs, |i| netdev_name(&root, i)).unwrap();
        assert_eq!((p.device.as_str(), p.port), ("rxe0", 1));
        let mut sink = Sink::new();
        emit(&mut sink, c, p);
        let fams = sink.into_families();
        let hw = crate::test_support::family(&fams, "nvmeof_rdma_hw_counters_total");
        assert_eq!(hw.metric.len(), p.hw_counters.len());
    }
}
