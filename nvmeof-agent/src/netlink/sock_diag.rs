//! TCP sockets through `NETLINK_SOCK_DIAG` (`inet_diag_req_v2` with `INET_DIAG_INFO`, answered
//! with `inet_diag_msg` and a `struct tcp_info` attribute). Kernel sockets, such as nvme-tcp's
//! queues, are listed like any other socket of the network namespace.
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{attrs, u32_at, u64_at};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_INFO: u16 = 2;
/// Size of `struct inet_diag_msg`: family, state, timer, retrans, the 48-byte socket id, then
/// expires, rqueue, wqueue, uid, inode.
const INET_DIAG_MSG_LEN: usize = 72;
/// `TCPF_ALL`: every state.
const ALL_STATES: u32 = 0xfff;

/// One TCP socket and what its `tcp_info` says. Absent fields (an older kernel's shorter
/// `tcp_info`) are `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TcpSocket {
    pub src: Option<IpAddr>,
    pub sport: u16,
    pub dst: Option<IpAddr>,
    pub dport: u16,
    /// TCP state (1 = established).
    pub state: u8,
    /// Smoothed RTT, µs.
    pub rtt_us: Option<u32>,
    /// Segments retransmitted over the connection's life.
    pub total_retrans: Option<u32>,
    /// Segments currently presumed lost.
    pub lost: Option<u32>,
    pub bytes_acked: Option<u64>,
    pub bytes_received: Option<u64>,
    pub bytes_sent: Option<u64>,
    pub bytes_retrans: Option<u64>,
}

fn addr(family: u8, b: &[u8]) -> Option<IpAddr> {
    match family as i32 {
        libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        libc::AF_INET6 => {
            let a: [u8; 16] = b.get(..16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// Parses one `SOCK_DIAG_BY_FAMILY` reply payload.
pub fn parse_msg(p: &[u8]) -> Option<TcpSocket> {
    if p.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let family = p[0];
    let id = &p[4..52];
    let mut s = TcpSocket {
        state: p[1],
        sport: u16::from_be_bytes([id[0], id[1]]),
        dport: u16::from_be_bytes([id[2], id[3]]),
        src: addr(family, &id[4..20]),
        dst: addr(family, &id[20..36]),
        ..Default::default()
    };
    for (kind, info) in attrs(&p[INET_DIAG_MSG_LEN..]) {
        if kind == INET_DIAG_INFO {
            // Offsets of `struct tcp_info` (include/uapi/linux/tcp.h).
            s.lost = u32_at(info, 32);
            s.rtt_us = u32_at(info, 68);
            s.total_retrans = u32_at(info, 100);
            s.bytes_acked = u64_at(info, 120);
            s.bytes_received = u64_at(info, 128);
            s.bytes_sent = u64_at(info, 200);
            s.bytes_retrans = u64_at(info, 208);
        }
    }
    Some(s)
}

/// `INET_DIAG_REQ_BYTECODE`: the request attribute holding a filter the kernel runs on each
/// socket before it writes a reply (`inet_diag_bc_run`).
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// The filter's operations (`enum` in `include/uapi/linux/inet_diag.h`; both since Linux 2.6).
const INET_DIAG_BC_JMP: u8 = 1;
const INET_DIAG_BC_D_GE: u8 = 4;
const INET_DIAG_BC_D_LE: u8 = 5;
/// More remote ports than this and the filter is left out (every socket is dumped, as before):
/// a node's controllers listen on a handful.
pub const MAX_FILTERED_PORTS: usize = 64;

/// The `inet_diag_req_v2` body asking for the TCP sockets of `family` with `tcp_info`: every
/// one, or (`remote_ports` not empty) only those whose remote port is one of them.
pub fn request(family: u8, remote_ports: &[u16]) -> Vec<u8> {
    let mut b = vec![0u8; 56];
    b[0] = family;
    b[1] = libc::IPPROTO_TCP as u8;
    b[2] = 1 << (INET_DIAG_INFO - 1);
    b[4..8].copy_from_slice(&ALL_STATES.to_ne_bytes());
    if !remote_ports.is_empty() && remote_ports.len() <= MAX_FILTERED_PORTS {
        let code = remote_port_filter(remote_ports);
        let len = 4 + code.len();
        b.extend_from_slice(&(len as u16).to_ne_bytes());
        b.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        b.extend_from_slice(&code);
    }
    b
}

/// The kernel's filter program for "the remote port is one of `ports`", so that a host with tens
/// of thousands of sockets (a training node's data loaders) hands over only its NVMe/TCP ones.
///
/// The kernel walks `struct inet_diag_bc_op { u8 code; u8 yes; u16 no; }`: a comparison moves on
/// by `yes` bytes when it holds and by `no` when not, and the socket is kept when the walk ends
/// exactly at the program's end (past it: dropped). Per port, one block of 20 bytes: `dport >=
/// p` and `dport <= p` (each followed by the operand `p` in the `no` field of a second op), then
/// a jump to the end (kept); a failed comparison goes on to the next port's block, the last
/// port's past the end. `inet_diag_bc_audit` checks every jump lands on an op or just past the
/// end, as these do.
pub fn remote_port_filter(ports: &[u16]) -> Vec<u8> {
    const BLOCK: usize = 20;
    let op = |code: u8, yes: usize, no: usize| {
        let mut o = [code, yes as u8, 0, 0];
        o[2..].copy_from_slice(&(no as u16).to_ne_bytes());
        o
    };
    let total = BLOCK * ports.len();
    let mut code = Vec::with_capacity(total);
    for (i, &port) in ports.iter().enumerate() {
        let at = BLOCK * i;
        // Where a failed comparison goes, from the op at `from`: the next block's start, or
        // for the last block four bytes past the end (the socket is dropped).
        let next = |from: usize| match i + 1 == ports.len() {
            true => total + 4 - from,
            false => at + BLOCK - from,
        };
        code.extend(op(INET_DIAG_BC_D_GE, 8, next(at)));
        code.extend(op(0, 0, port as usize));
        code.extend(op(INET_DIAG_BC_D_LE, 8, next(at + 8)));
        code.extend(op(0, 0, port as usize));
        code.extend(op(INET_DIAG_BC_JMP, 4, total - (at + 16)));
    }
    code
}

/// Every TCP socket (IPv4 and IPv6) of this network namespace whose remote port is one of
/// `remote_ports` (every socket when it is empty or longer than [`MAX_FILTERED_PORTS`]).
pub fn tcp_sockets(remote_ports: &[u16]) -> io::Result<Vec<TcpSocket>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        let r = super::dump(
            libc::NETLINK_SOCK_DIAG,
            SOCK_DIAG_BY_FAMILY,
            &request(family, remote_ports),
            |kind, p| {
                if kind == SOCK_DIAG_BY_FAMILY {
                    out.extend(parse_msg(p));
                }
            },
        );
        match r {
            Ok(()) => {}
            // No IPv6 on this host: no IPv6 sockets either.
            Err(e) if family == libc::AF_INET6 as u8 && e.raw_os_error().is_some() => {}
            // ENOENT: no diag handler, the tcp_diag module is not loaded (hosts autoload it).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(io::Error::new(
                    e.kind(),
                    "no sock_diag handler for TCP (tcp_diag module not loaded)",
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as the kernel builds it: inet_diag_msg, then an INET_DIAG_INFO attribute.
    pub fn reply(sport: u16, dport: u16, rtt: u32, retrans: u32, sent: u64) -> Vec<u8> {
        let mut p = vec![0u8; INET_DIAG_MSG_LEN];
        p[0] = libc::AF_INET as u8;
        p[1] = 1;
        p[4..6].copy_from_slice(&sport.to_be_bytes());
        p[6..8].copy_from_slice(&dport.to_be_bytes());
        p[8..12].copy_from_slice(&[127, 0, 0, 1]);
        p[24..28].copy_from_slice(&[127, 0, 0, 2]);
        let mut info = vec![0u8; 232];
        info[32..36].copy_from_slice(&3u32.to_ne_bytes());
        info[68..72].copy_from_slice(&rtt.to_ne_bytes());
        info[100..104].copy_from_slice(&retrans.to_ne_bytes());
        info[128..136].copy_from_slice(&4096u64.to_ne_bytes());
        info[200..208].copy_from_slice(&sent.to_ne_bytes());
        p.extend_from_slice(&((4 + info.len()) as u16).to_ne_bytes());
        p.extend_from_slice(&INET_DIAG_INFO.to_ne_bytes());
        p.extend_from_slice(&info);
        p
    }

    #[test]
    fn parses_ids_and_tcp_info() {
        let s = parse_msg(&reply(40000, 4420, 250, 7, 1 << 20)).unwrap();
        assert_eq!(s.sport, 40000);
        assert_eq!(s.dport, 4420);
        assert_eq!(s.src, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(s.dst, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(s.rtt_us, Some(250));
        assert_eq!(s.total_retrans, Some(7));
        assert_eq!(s.lost, Some(3));
        assert_eq!(s.bytes_received, Some(4096));
        assert_eq!(s.bytes_sent, Some(1 << 20));
        assert_eq!(s.bytes_retrans, Some(0));
    }

    #[test]
    fn short_tcp_info_leaves_newer_fields_out() {
        let mut p = reply(1, 2, 3, 4, 5);
        // Cut tcp_info to the 104 bytes of a 2.6 kernel.
        p.truncate(INET_DIAG_MSG_LEN + 4 + 104);
        p[INET_DIAG_MSG_LEN..INET_DIAG_MSG_LEN + 2].copy_from_slice(&108u16.to_ne_bytes());
        let s = parse_msg(&p).unwrap();
        assert_eq!(s.total_retrans, Some(4));
        assert_eq!(s.bytes_sent, None);
        assert!(parse_msg(&p[..40]).is_none());
    }

    #[test]
    fn request_asks_for_info_on_all_states() {
        let r = request(libc::AF_INET6 as u8, &[]);
        assert_eq!(r.len(), 56);
        assert_eq!(r[1], 6);
        assert_eq!(r[2], 2);
        assert_eq!(u32_at(&r, 4), Some(0xfff));
        // With ports: the filter follows as one attribute; too many ports, none.
        let r = request(libc::AF_INET as u8, &[4420, 4421]);
        assert_eq!(r.len(), 56 + 4 + 40);
        assert_eq!(&r[58..60], &1u16.to_ne_bytes());
        let many: Vec<u16> = (1..=MAX_FILTERED_PORTS as u16 + 1).collect();
        assert_eq!(request(libc::AF_INET as u8, &many).len(), 56);
    }

    /// The kernel's own answer: this host's kernel runs the filter (after its audit, which
    /// refuses a malformed program with EINVAL) on real loopback connections to three listening
    /// ports, and hands over exactly the client sockets whose remote port was asked for; the
    /// server sides (whose remote port is the client's) and the third port's stay out.
    #[test]
    fn the_kernel_keeps_only_the_sockets_to_the_ports_asked_for() {
        use std::net::{TcpListener, TcpStream};
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let clients: Vec<TcpStream> = ports
            .iter()
            .flat_map(|&p| [p, p])
            .map(|p| TcpStream::connect(("127.0.0.1", p)).unwrap())
            .collect();
        let accepted: Vec<TcpStream> = listeners
            .iter()
            .flat_map(|l| [l.accept().unwrap().0, l.accept().unwrap().0])
            .collect();
        let asked = [ports[0], ports[2]];
        let all = match tcp_sockets(&[]) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipped: no sock_diag here ({e})");
                return;
            }
        };
        // A program the kernel's audit refuses fails here (EINVAL).
        let socks = tcp_sockets(&asked).expect("the filtered dump");
        let mut got: Vec<u16> = socks
            .iter()
            .filter(|s| s.dst == Some(IpAddr::V4(Ipv4Addr::LOCALHOST)))
            .map(|s| s.dport)
            .collect();
        got.sort();
        // Other sockets of this host to those ports may exist (none in a test's namespace
        // usually); ours are two clients per asked port, and nothing else comes back.
        let mine: Vec<u16> = clients
            .iter()
            .map(|c| c.peer_addr().unwrap().port())
            .filter(|p| asked.contains(p))
            .collect();
        assert!(mine.iter().all(|p| got.contains(p)), "{got:?}");
        assert!(got.iter().all(|p| asked.contains(p)), "{got:?}");
        assert_eq!(got.iter().filter(|&&p| p == ports[0]).count(), 2, "{got:?}");
        // Unfiltered, the third port's clients and the accepted sides are there too.
        assert!(all.iter().any(|s| s.dport == ports[1]));
        let server_side = accepted[0].peer_addr().unwrap().port();
        assert!(all.iter().any(|s| s.dport == server_side));
        assert!(!socks.iter().any(|s| s.dport == server_side));
    }
}
