//! Collector `fc`: the Fibre Channel HBA port (`fc_host`) and remote port (`fc_remote_ports`)
//! that carry each `fc` controller, and their statistics (link failures, loss of sync and
//! signal, invalid CRC, error frames, ...; FPIN notifications on remote ports).
//!
//! The HBA port is the `fc_host` whose `port_name` is the WWPN of the controller's
//! `host_traddr`; the remote port the `rport` of that host whose `port_name` is the WWPN of
//! `traddr`. Software FC (fcloop) has no `fc_host`: nothing is emitted for it.
use std::path::PathBuf;

use crate::collector::{families, label, Collector, Family, Scrape, Sink};
use crate::sysfs::fc::{
    fc_hosts, fc_remote_ports, normalise_wwn, wwpn_of, FcHost, FcPort, FcRemotePort,
};
use crate::sysfs::Controller;

families! {
    HOST_INFO: gauge("nvmeof_fc_host_info",
        "The FC HBA port carrying an fc controller, with its port name and state; always 1.");
    HOST_STATISTICS: counter("nvmeof_fc_host_statistics_total",
        "Statistics of the FC HBA port carrying the controller (fc_host/hostN/statistics/NAME: link_failure_count, loss_of_sync_count, loss_of_signal_count, invalid_crc_count, error_frames, ...).");
    RPORT_INFO: gauge("nvmeof_fc_remote_port_info",
        "The FC remote port (target) of an fc controller, with its port name and state; always 1.");
    RPORT_STATISTICS: counter("nvmeof_fc_remote_port_statistics_total",
        "Statistics of the controller's FC remote port (fc_remote_ports/rport-H:B-R/statistics/NAME: FPIN link integrity, congestion, ...).");
}

pub struct FcCollector {
    sysfs: PathBuf,
}

impl FcCollector {
    pub fn new(sysfs: PathBuf) -> Self {
        FcCollector { sysfs }
    }
}

/// The HBA port and remote port of `c`, as far as they are found.
pub fn carrier_of<'a>(
    c: &Controller,
    hosts: &'a [FcHost],
    rports: &'a [FcRemotePort],
) -> (Option<&'a FcHost>, Option<&'a FcRemotePort>) {
    let Some(a) = c.address.as_ref() else {
        return (None, None);
    };
    let local = a.host_traddr.as_deref().and_then(wwpn_of);
    let remote = a.traddr.as_deref().and_then(wwpn_of);
    let host = hosts
        .iter()
        .find(|h| local.is_some() && normalise_wwn(&h.port_name) == local);
    let host_no = host.and_then(|h| h.name.strip_prefix("host")?.parse::<u32>().ok());
    let rport = rports.iter().find(|r| {
        remote.is_some()
            && normalise_wwn(&r.port.port_name) == remote
            && host_no.is_none_or(|n| n == r.host)
    });
    (host, rport)
}

pub fn emit(sink: &mut Sink, c: &Controller, host: Option<&FcHost>, rport: Option<&FcRemotePort>) {
    if let Some(h) = host {
        emit_port(sink, c, "fc_host", h, &HOST_INFO, &HOST_STATISTICS);
    }
    if let Some(r) = rport {
        emit_port(sink, c, "rport", &r.port, &RPORT_INFO, &RPORT_STATISTICS);
    }
}

/// One end of the path: an info series and a counter per statistic, the label `kind` naming the
/// port.
fn emit_port(
    sink: &mut Sink,
    c: &Controller,
    kind: &str,
    port: &FcPort,
    info: &Family,
    statistics: &Family,
) {
    let base = [
        ("subsystem", label(&c.subsysnqn)),
        ("controller", c.name.as_str()),
        (kind, port.name.as_str()),
    ];
    let mut labels = base.to_vec();
    labels.push(("port_name", port.port_name.as_str()));
    labels.push(("port_state", label(&port.port_state)));
    sink.gauge(info, &labels, 1.0);
    for (k, v) in &port.statistics {
        let mut l = base.to_vec();
        l.push(("statistic", k.as_str()));
        sink.counter(statistics, &l, *v as f64);
    }
}

impl Collector for FcCollector {
    fn collect(&self, scrape: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
        let fc = scrape.controllers_on(&self.sysfs, "fc")?;
        if fc.is_empty() {
            return Ok(());
        }
        let hosts = fc_hosts(&self.sysfs);
        let rports = fc_remote_ports(&self.sysfs);
        sink.skipped(hosts.skipped.len() + rports.skipped.len());
        let (hosts, rports) = (hosts.items, rports.items);
        for c in &fc {
            let (h, r) = carrier_of(c, &hosts, &rports);
            emit(sink, c, h, r);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs;

    /// The lab's fcloop controller (captured 6.1 tree) beside an HBA-shaped fc_host tree with the
    /// same port names: the carrier is found and its statistics exported.
    #[test]
    fn statistics_beside_the_controller() {
        let d = tempfile::tempdir().unwrap();
        crate::sysfs::fc::tests::write_tree(d.path());
        let root = crate::test_support::captured_6_1();
        let parsed = sysfs::controllers(&root).unwrap();
        let c = parsed
            .items
            .iter()
            .find(|c| c.transport.as_deref() == Some("fc"))
            .unwrap();
        let hosts = fc_hosts(d.path()).items;
        let rports = fc_remote_ports(d.path()).items;
        let (h, r) = carrier_of(c, &hosts, &rports);
        assert_eq!(h.unwrap().name, "host3");
        assert_eq!(r.unwrap().port.name, "rport-3:0-1");
        let mut sink = Sink::new();
        emit(&mut sink, c, h, r);
        let text = crate::test_support::text(sink);
        let l = format!(
            "subsystem=\"{}\",controller=\"{}\"",
            c.subsysnqn.as_deref().unwrap(),
            c.name
        );
        for line in [
            format!("nvmeof_fc_host_statistics_total{{{l},fc_host=\"host3\",statistic=\"invalid_crc_count\"}} 26"),
            format!("nvmeof_fc_host_statistics_total{{{l},fc_host=\"host3\",statistic=\"loss_of_sync_count\"}} 5"),
            format!("nvmeof_fc_remote_port_statistics_total{{{l},rport=\"rport-3:0-1\",statistic=\"fpin_li\"}} 3"),
            format!("nvmeof_fc_host_info{{{l},fc_host=\"host3\",port_name=\"0x20000000000000a1\",port_state=\"Online\"}} 1"),
        ] {
            assert!(text.lines().any(|t| t == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("nos_count"), "{text}");
        // No fc_host (fcloop, the lab): nothing.
        let (h, r) = carrier_of(c, &[], &[]);
        assert!(h.is_none() && r.is_none());
    }
}
