//! Interface addresses through rtnetlink (`RTM_GETADDR` dump): which netdev holds an address,
//! and which one has it on-link.
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{attrs, u32_at};

const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_LABEL: u16 = 3;

/// One address of one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfAddr {
    pub ifindex: u32,
    /// The label (IPv4: the interface name, or `name:alias`); empty for IPv6.
    pub label: String,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// Parses one `RTM_NEWADDR` payload (`struct ifaddrmsg` + attributes).
pub fn parse_msg(p: &[u8]) -> Option<IfAddr> {
    let family = *p.first()?;
    let prefix_len = *p.get(1)?;
    let ifindex = u32_at(p, 4)?;
    let mut local = None;
    let mut address = None;
    let mut label = String::new();
    for (kind, v) in attrs(p.get(8..)?) {
        let a = match (family as i32, v.len()) {
            (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
            (libc::AF_INET6, 16) => {
                let b: [u8; 16] = v.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => None,
        };
        match kind {
            IFA_LOCAL => local = a,
            IFA_ADDRESS => address = a,
            IFA_LABEL => label = String::from_utf8_lossy(v).trim_end_matches('\0').to_owned(),
            _ => {}
        }
    }
    Some(IfAddr {
        ifindex,
        label,
        addr: local.or(address)?,
        prefix_len,
    })
}

/// Every address of every interface.
pub fn addresses() -> io::Result<Vec<IfAddr>> {
    let mut out = Vec::new();
    // struct ifaddrmsg, all families.
    super::dump(libc::NETLINK_ROUTE, RTM_GETADDR, &[0u8; 8], |kind, p| {
        if kind == RTM_NEWADDR {
            out.extend(parse_msg(p));
        }
    })?;
    Ok(out)
}

fn in_prefix(net: IpAddr, len: u8, a: IpAddr) -> bool {
    match (net, a) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The interface that holds `a`, or else the one with `a` on-link (longest prefix).
pub fn ifindex_for(addrs: &[IfAddr], a: IpAddr) -> Option<u32> {
    if let Some(x) = addrs.iter().find(|x| x.addr == a) {
        return Some(x.ifindex);
    }
    addrs
        .iter()
        .filter(|x| in_prefix(x.addr, x.prefix_len, a))
        .max_by_key(|x| x.prefix_len)
        .map(|x| x.ifindex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(ifindex: u32, addr: &str, prefix_len: u8) -> IfAddr {
        IfAddr {
            ifindex,
            label: String::new(),
            addr: addr.parse().unwrap(),
            prefix_len,
        }
    }

    #[test]
    fn holder_first_then_longest_prefix() {
        let addrs = [
            a(1, "127.0.0.1", 8),
            a(5, "192.0.2.1", 24),
            a(6, "192.0.2.129", 25),
            a(7, "2001:db8::1", 64),
        ];
        let ip = |s: &str| s.parse().unwrap();
        assert_eq!(ifindex_for(&addrs, ip("192.0.2.1")), Some(5));
        assert_eq!(ifindex_for(&addrs, ip("192.0.2.7")), Some(5));
        assert_eq!(ifindex_for(&addrs, ip("192.0.2.200")), Some(6));
        assert_eq!(ifindex_for(&addrs, ip("2001:db8::9")), Some(7));
        assert_eq!(ifindex_for(&addrs, ip("198.51.100.1")), None);
    }

    #[test]
    fn parses_ifaddrmsg() {
        let mut p = vec![libc::AF_INET as u8, 24, 0, 0];
        p.extend_from_slice(&5u32.to_ne_bytes());
        for (kind, v) in [
            (IFA_ADDRESS, &[192u8, 0, 2, 1][..]),
            (IFA_LABEL, b"veth0\0"),
        ] {
            p.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
            p.extend_from_slice(&kind.to_ne_bytes());
            p.extend_from_slice(v);
            while p.len() % 4 != 0 {
                p.push(0);
            }
        }
        let x = parse_msg(&p).unwrap();
        assert_eq!(x.ifindex, 5);
        assert_eq!(x.label, "veth0");
        assert_eq!(x.prefix_len, 24);
        assert_eq!(x.addr, "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
