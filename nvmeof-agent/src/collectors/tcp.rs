//! Collector `tcp`: the TCP connections of each `tcp` controller (one per queue, admin queue
//! included), found through sock_diag netlink (`crate::netlink::sock_diag`), and what their
//! `tcp_info` says: RTT, retransmissions, lost segments, bytes.
//!
//! A connection belongs to a controller when its remote end is the controller's
//! (`traddr`, `trsvcid`) and, when the controller has one, its local address is `src_addr`
//! (or `host_traddr`). Controllers that share all of these (two subsystems behind one target
//! port, connected from the same address) cannot be told apart this way: their connections are
//! not exported and count as skipped values. Listening and target-side sockets never match (their
//! remote port is not the target's). Per controller the counters are summed over its connections
//! and the RTT is the largest; `--metrics.per-queue` adds one series per connection, labelled by
//! its local port (sock_diag does not know the queue id). Counters start again when a reconnect
//! replaces the connections.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use nvmeof_common::queues::TcpQueueRecord;

use crate::bpf::queues::TcpQueues;
use crate::collector::{families, label, Collector, Scrape, Sink};
use crate::netlink::sock_diag::{tcp_sockets, TcpSocket};
use crate::sysfs::Controller;

families! {
    CONNECTIONS: gauge("nvmeof_tcp_connections",
        "TCP connections of the controller (one per queue, admin queue included) that are not closed.");
    RTT: gauge("nvmeof_tcp_rtt_seconds",
        "Smoothed round-trip time (tcp_info rtt); per controller the largest of its connections.");
    RETRANS: counter("nvmeof_tcp_retransmitted_segments_total",
        "Segments retransmitted (tcp_info total_retrans), summed over the controller's connections.");
    LOST: gauge("nvmeof_tcp_lost_segments",
        "Segments presumed lost and not yet retransmitted or acknowledged (tcp_info lost), summed over the controller's connections.");
    SENT: counter("nvmeof_tcp_sent_bytes_total",
        "Bytes sent, retransmissions included (tcp_info bytes_sent).");
    RECEIVED: counter("nvmeof_tcp_received_bytes_total",
        "Bytes received (tcp_info bytes_received).");
    RETRANS_BYTES: counter("nvmeof_tcp_retransmitted_bytes_total",
        "Bytes retransmitted (tcp_info bytes_retrans).");
    QUEUE_INFO: gauge("nvmeof_tcp_queue_info",
        "The connection (local port) that carries each queue of the controller (0: admin), as the kernel's nvme-tcp queue says (a BPF iterator over its sockets); always 1. Per queue only.");
}

const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;

pub struct TcpCollector {
    sysfs: PathBuf,
    per_queue: bool,
    /// Which connection carries which queue, read when a scrape wants queues.
    queues: TcpQueues,
}

impl TcpCollector {
    pub fn new(sysfs: PathBuf, per_queue: bool) -> Self {
        let queues = TcpQueues::new(sysfs.join("kernel/btf"));
        TcpCollector {
            sysfs,
            per_queue,
            queues,
        }
    }
}

/// One series per queue of the controllers `per_queue` names: its connection's local port.
fn emit_queues(
    sink: &mut Sink,
    ctrls: &[Controller],
    records: &[TcpQueueRecord],
    per_queue: &dyn Fn(&Controller) -> bool,
) {
    for c in ctrls.iter().filter(|c| per_queue(c)) {
        let Some(instance) = c
            .name
            .strip_prefix("nvme")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let subsystem = label(&c.subsysnqn);
        for r in records.iter().filter(|r| r.ctrl_instance == instance) {
            let (queue, port) = (r.qid.to_string(), r.local_port.to_string());
            sink.gauge(
                &QUEUE_INFO,
                &[
                    ("subsystem", subsystem),
                    ("controller", c.name.as_str()),
                    ("queue", queue.as_str()),
                    ("local_port", port.as_str()),
                ],
                1.0,
            );
        }
    }
}

/// What identifies a controller's connections: (local address if pinned, remote address, port).
type ConnKey = (Option<IpAddr>, IpAddr, u16);

fn key_of(c: &Controller) -> Option<ConnKey> {
    let a = c.address.as_ref()?;
    let ip = |s: &Option<String>| s.as_deref().and_then(|s| s.parse::<IpAddr>().ok());
    Some((
        ip(&a.src_addr).or_else(|| ip(&a.host_traddr)),
        ip(&a.traddr)?,
        a.trsvcid.as_deref()?.parse().ok()?,
    ))
}

fn matches(k: &ConnKey, s: &TcpSocket) -> bool {
    s.state != TCP_LISTEN
        && s.state != TCP_CLOSE
        && s.dst == Some(k.1)
        && s.dport == k.2
        && k.0.is_none_or(|src| s.src == Some(src))
}

/// Each controller's connections; controllers whose key another shares get none and are
/// returned in the second list.
pub fn assign<'a>(
    ctrls: &'a [Controller],
    socks: &'a [TcpSocket],
) -> (
    Vec<(&'a Controller, Vec<&'a TcpSocket>)>,
    Vec<&'a Controller>,
) {
    let mut by_key: BTreeMap<ConnKey, Vec<&Controller>> = BTreeMap::new();
    for c in ctrls {
        if let Some(k) = key_of(c) {
            by_key.entry(k).or_default().push(c);
        }
    }
    let mut out = Vec::new();
    let mut ambiguous = Vec::new();
    for (k, cs) in by_key {
        if cs.len() > 1 {
            ambiguous.extend(cs);
            continue;
        }
        let mine = socks.iter().filter(|s| matches(&k, s)).collect();
        out.push((cs[0], mine));
    }
    (out, ambiguous)
}

fn emit(sink: &mut Sink, base: &[(&str, &str)], socks: &[&TcpSocket]) {
    let sum32 = |f: fn(&TcpSocket) -> Option<u32>| -> Option<f64> {
        let v: Vec<u32> = socks.iter().filter_map(|s| f(s)).collect();
        (!v.is_empty() || socks.is_empty()).then(|| v.iter().fold(0.0, |a, &x| a + x as f64))
    };
    let sum64 = |f: fn(&TcpSocket) -> Option<u64>| -> Option<f64> {
        let v: Vec<u64> = socks.iter().filter_map(|s| f(s)).collect();
        (!v.is_empty() || socks.is_empty()).then(|| v.iter().fold(0.0, |a, &x| a + x as f64))
    };
    sink.gauge(&CONNECTIONS, base, socks.len() as f64);
    if let Some(rtt) = socks.iter().filter_map(|s| s.rtt_us).max() {
        sink.gauge(&RTT, base, rtt as f64 / 1e6);
    }
    if let Some(v) = sum32(|s| s.total_retrans) {
        sink.counter(&RETRANS, base, v);
    }
    if let Some(v) = sum32(|s| s.lost) {
        sink.gauge(&LOST, base, v);
    }
    if let Some(v) = sum64(|s| s.bytes_sent) {
        sink.counter(&SENT, base, v);
    }
    if let Some(v) = sum64(|s| s.bytes_received) {
        sink.counter(&RECEIVED, base, v);
    }
    if let Some(v) = sum64(|s| s.bytes_retrans) {
        sink.counter(&RETRANS_BYTES, base, v);
    }
}

/// Emits every family for `assigned`; for the controllers for which `per_queue` says so also
/// one series per connection.
pub fn emit_all(
    sink: &mut Sink,
    assigned: &[(&Controller, Vec<&TcpSocket>)],
    per_queue: &dyn Fn(&Controller) -> bool,
) {
    for (c, socks) in assigned {
        let subsystem = label(&c.subsysnqn);
        let base = [("subsystem", subsystem), ("controller", c.name.as_str())];
        emit(sink, &base, socks);
        if per_queue(c) {
            for s in socks {
                let port = s.sport.to_string();
                let mut l = base.to_vec();
                l.push(("local_port", port.as_str()));
                emit(sink, &l, std::slice::from_ref(s));
            }
        }
    }
}

impl Collector for TcpCollector {
    fn collect(&self, scrape: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let tcp = scrape.controllers_on(&self.sysfs, "tcp")?;
        if tcp.is_empty() {
            return Ok(());
        }
        // Only the sockets to the controllers' ports: the kernel filters, so a host's other
        // connections, however many, cost the dump nothing.
        let ports: BTreeSet<u16> = tcp.iter().filter_map(|c| key_of(c).map(|k| k.2)).collect();
        let ports: Vec<u16> = ports.into_iter().collect();
        let socks = tcp_sockets(&ports).context("sock_diag dump of TCP sockets")?;
        let (assigned, ambiguous) = assign(&tcp, &socks);
        sink.skipped(ambiguous.len());
        let per_queue = |c: &Controller| self.per_queue || scrape.detail().per_queue_named(&c.name);
        emit_all(sink, &assigned, &per_queue);
        if tcp.iter().any(per_queue) {
            emit_queues(sink, &tcp, &self.queues.read(), &per_queue);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs;

    #[test]
    fn queue_info_names_each_queue_of_the_controllers_asked_for() {
        let ctrls = [
            ctrl("nvme3", "traddr=127.0.0.1,trsvcid=4420"),
            ctrl("nvme4", "traddr=127.0.0.1,trsvcid=4421"),
        ];
        let rec = |ctrl_instance, qid, local_port| TcpQueueRecord {
            ctrl_instance,
            qid,
            local_port,
            remote_port: 4420,
            _pad: 0,
        };
        let records = [
            rec(3, 0, 40000),
            rec(3, 1, 40002),
            rec(4, 1, 41000),
            rec(9, 1, 1),
        ];
        let mut sink = Sink::new();
        emit_queues(&mut sink, &ctrls, &records, &|c| c.name == "nvme3");
        let fams = sink.into_families();
        let series: Vec<Vec<String>> = fams[0]
            .metric
            .iter()
            .map(|m| m.label.iter().map(|l| l.value().to_owned()).collect())
            .collect();
        assert_eq!(
            series,
            [
                ["nqn.x:tcp", "nvme3", "0", "40000"],
                ["nqn.x:tcp", "nvme3", "1", "40002"]
            ]
        );
    }

    fn ctrl(name: &str, address: &str) -> Controller {
        let (address, _) = sysfs::Address::parse(address);
        Controller {
            name: name.into(),
            transport: Some("tcp".into()),
            address: Some(address),
            subsysnqn: Some("nqn.x:tcp".into()),
            ..Default::default()
        }
    }

    fn sock(sport: u16, dport: u16, state: u8, retrans: u32, rtt: u32) -> TcpSocket {
        TcpSocket {
            src: Some("127.0.0.1".parse().unwrap()),
            sport,
            dst: Some("127.0.0.1".parse().unwrap()),
            dport,
            state,
            rtt_us: Some(rtt),
            total_retrans: Some(retrans),
            lost: Some(0),
            bytes_acked: Some(0),
            bytes_received: Some(100),
            bytes_sent: Some(1000),
            bytes_retrans: Some(0),
        }
    }

    #[test]
    fn connections_go_to_their_controller_by_remote_port() {
        let a = ctrl("nvme0", "traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1");
        let b = ctrl("nvme1", "traddr=127.0.0.1,trsvcid=4421,src_addr=127.0.0.1");
        let socks = [
            sock(36386, 4420, 1, 2, 100),
            sock(36387, 4420, 1, 3, 300),
            sock(36388, 4421, 1, 0, 50),
            sock(4420, 36386, 1, 9, 9), // the target's end
            sock(4420, 0, TCP_LISTEN, 0, 0),
        ];
        let ctrls = [a, b];
        let (assigned, ambiguous) = assign(&ctrls, &socks);
        assert!(ambiguous.is_empty());
        let mut sink = Sink::new();
        // Per connection for nvme0 only (a scrape naming it).
        emit_all(&mut sink, &assigned, &|c| c.name == "nvme0");
        let text = crate::test_support::text(sink);
        assert!(!text.contains(r#"controller="nvme1",local_port"#), "{text}");
        for line in [
            r#"nvmeof_tcp_connections{subsystem="nqn.x:tcp",controller="nvme0"} 2"#,
            r#"nvmeof_tcp_connections{subsystem="nqn.x:tcp",controller="nvme1"} 1"#,
            r#"nvmeof_tcp_retransmitted_segments_total{subsystem="nqn.x:tcp",controller="nvme0"} 5"#,
            r#"nvmeof_tcp_retransmitted_segments_total{subsystem="nqn.x:tcp",controller="nvme1"} 0"#,
            r#"nvmeof_tcp_rtt_seconds{subsystem="nqn.x:tcp",controller="nvme0"} 0.0003"#,
            r#"nvmeof_tcp_sent_bytes_total{subsystem="nqn.x:tcp",controller="nvme0"} 2000"#,
            r#"nvmeof_tcp_retransmitted_segments_total{subsystem="nqn.x:tcp",controller="nvme0",local_port="36387"} 3"#,
        ] {
            assert!(
                text.lines().any(|t| t == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn controllers_sharing_an_endpoint_are_skipped() {
        let a = ctrl("nvme0", "traddr=10.0.0.1,trsvcid=4420");
        let b = ctrl("nvme1", "traddr=10.0.0.1,trsvcid=4420");
        let c = ctrl("nvme2", "traddr=10.0.0.1,trsvcid=4420,src_addr=10.0.0.2");
        let ctrls = [a, b, c];
        let (assigned, ambiguous) = assign(&ctrls, &[]);
        assert_eq!(ambiguous.len(), 2);
        assert_eq!(assigned.len(), 1);
        assert_eq!(assigned[0].0.name, "nvme2");
    }
}
