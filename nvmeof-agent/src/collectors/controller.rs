//! Collector `controller`: the state, transport, address and connection settings of every NVMe
//! controller in `/sys/class/nvme` (parsed by `crate::sysfs::controller`).
//!
//! Labels: `subsystem` is the subsystem NQN (stable across reconnects, unlike `nvme-subsysN`),
//! `controller` the kernel's `nvmeN`. The tree is read afresh on every scrape, so controllers
//! that come or go between scrapes come or go on `/metrics` with no stale series.
use std::path::PathBuf;

use crate::collector::{families, label, Collector, Family, Scrape, Sink};
use crate::sysfs::Controller;

families! {
    STATE: gauge("nvmeof_subsystem_state",
        "Controller state, one series per state the kernel knows (1 for the current one); a state this exporter does not know gets its own series.");
    TRANSPORT: gauge("nvmeof_transport_type",
        "The controller's transport (rdma, tcp, fc, loop, pcie) as a label; always 1.");
    INFO: gauge("nvmeof_controller_info",
        "Identity and address of a controller; always 1.");
    QUEUES: gauge("nvmeof_controller_queues",
        "Queues of the controller, the admin queue included (sysfs queue_count).");
    IO_QUEUES: gauge("nvmeof_controller_io_queues",
        "I/O queues of the controller (queue_count - 1).");
    QUEUE_SIZE: gauge("nvmeof_controller_queue_size",
        "Entries per I/O submission queue (sysfs sqsize + 1: sqsize is 0's based).");
    KATO: gauge("nvmeof_controller_keep_alive_timeout_seconds",
        "Keep-alive timeout (kato).");
    LOSS_TMO: gauge("nvmeof_controller_loss_timeout_seconds",
        "Time the host keeps reconnecting before it removes the controller (ctrl_loss_tmo); -1 when off (reconnect forever).");
    RECONNECT_DELAY: gauge("nvmeof_controller_reconnect_delay_seconds",
        "Delay between reconnect attempts (reconnect_delay); -1 when off.");
    FAST_IO_FAIL: gauge("nvmeof_controller_fast_io_fail_timeout_seconds",
        "Time after which I/O fails while reconnecting (fast_io_fail_tmo); -1 when off (I/O waits for ctrl_loss_tmo).");
    CNTLID: gauge("nvmeof_controller_cntlid",
        "Controller ID the target assigned (cntlid).");
    NUMA_NODE: gauge("nvmeof_controller_numa_node",
        "NUMA node of the controller; -1 for none.");
    TLS: gauge("nvmeof_controller_tls_enabled",
        "Whether the NVMe/TCP controller was asked for TLS (1: sysfs tls_key exists) or not (0: a TCP controller of a kernel that can do TLS, whose nvme_tcp has tls_handshake_timeout); absent where the kernel cannot.");
    DHCHAP: gauge("nvmeof_controller_dhchap_key_configured",
        "Whether a DH-HMAC-CHAP key is configured (1) or not (0): key=host (sysfs dhchap_secret), the host authenticates to the subsystem whenever the subsystem requires it; key=controller (dhchap_ctrl_secret), the controller authenticates to the host too. Only where the kernel has host authentication, on fabrics controllers.");
    QUEUE_CPUS: gauge("nvmeof_queue_cpus_info",
        "The CPUs whose I/O an I/O queue carries (blk-mq's mq/N/cpu_list, queue = N + 1), as the cpus label; always 1. Only with --metrics.per-queue or for the controllers a scrape names (controller=), beside the per-queue I/O series it explains.");
}

pub struct ControllerCollector {
    sysfs: PathBuf,
    /// Each I/O queue's CPUs too, of every controller (`--metrics.per-queue`): a series per
    /// queue. Without it, of the controllers a scrape names ([`Scrape::detail`]).
    per_queue: bool,
}

impl ControllerCollector {
    pub fn new(sysfs: PathBuf) -> Self {
        ControllerCollector {
            sysfs,
            per_queue: false,
        }
    }

    /// With each I/O queue's CPUs (`nvmeof_queue_cpus_info`).
    pub fn per_queue(mut self, on: bool) -> Self {
        self.per_queue = on;
        self
    }
}

impl Collector for ControllerCollector {
    fn collect(&self, scrape: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
        let parsed = scrape.controllers(&self.sysfs)?;
        sink.skipped(parsed.skipped.len());
        for c in &parsed.items {
            emit(sink, c);
            if self.per_queue || scrape.detail().per_queue_named(&c.name) {
                let (queues, odd) = crate::sysfs::controller::queue_cpus(&self.sysfs, &c.name);
                sink.skipped(odd);
                let subsystem = label(&c.subsysnqn);
                for (qid, cpus) in queues {
                    let queue = qid.to_string();
                    sink.gauge(
                        &QUEUE_CPUS,
                        &[
                            ("subsystem", subsystem),
                            ("controller", c.name.as_str()),
                            ("queue", queue.as_str()),
                            ("cpus", cpus.as_str()),
                        ],
                        1.0,
                    );
                }
            }
        }
        Ok(())
    }
}

fn emit(sink: &mut Sink, c: &Controller) {
    let ids = [
        ("subsystem", label(&c.subsysnqn)),
        ("controller", c.name.as_str()),
    ];
    if let Some(state) = &c.state {
        sink.one_hot(&STATE, &ids, state);
    }
    if let Some(t) = &c.transport {
        sink.gauge(&TRANSPORT, &[ids[0], ids[1], ("transport", t)], 1.0);
    }
    let addr = c.address.clone().unwrap_or_default();
    sink.gauge(
        &INFO,
        &[
            ids[0],
            ids[1],
            ("model", label(&c.model)),
            ("serial", label(&c.serial)),
            ("firmware_rev", label(&c.firmware_rev)),
            ("cntrltype", label(&c.cntrltype)),
            ("dctype", label(&c.dctype)),
            ("traddr", label(&addr.traddr)),
            ("trsvcid", label(&addr.trsvcid)),
            ("host_traddr", label(&addr.host_traddr)),
            ("host_iface", label(&addr.host_iface)),
            ("src_addr", label(&addr.src_addr)),
            ("hostnqn", label(&c.hostnqn)),
        ],
        1.0,
    );
    let mut gauge = |f: &Family, v: Option<f64>| {
        if let Some(v) = v {
            sink.gauge(f, &ids, v);
        }
    };
    gauge(&QUEUES, c.queue_count.map(f64::from));
    gauge(
        &IO_QUEUES,
        c.queue_count.map(|q| f64::from(q.saturating_sub(1))),
    );
    gauge(&QUEUE_SIZE, c.sqsize.map(|s| f64::from(s) + 1.0));
    gauge(&KATO, c.kato.map(f64::from));
    gauge(&LOSS_TMO, c.ctrl_loss_tmo.map(|t| t.as_f64()));
    gauge(&RECONNECT_DELAY, c.reconnect_delay.map(|t| t.as_f64()));
    gauge(&FAST_IO_FAIL, c.fast_io_fail_tmo.map(|t| t.as_f64()));
    gauge(&CNTLID, c.cntlid.map(f64::from));
    gauge(&NUMA_NODE, c.numa_node.map(f64::from));
    gauge(&TLS, c.tls.map(|on| f64::from(u8::from(on))));
    for (key, set) in [
        ("host", c.dhchap_host_key),
        ("controller", c.dhchap_ctrl_key),
    ] {
        if let Some(set) = set {
            sink.gauge(
                &DHCHAP,
                &[ids[0], ids[1], ("key", key)],
                f64::from(u8::from(set)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{collect, family, series, Tree};

    fn value(sink: Sink, name: &str, label: (&str, &str)) -> Vec<f64> {
        sink.into_families()
            .into_iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.metric)
            .filter(|m| {
                m.label
                    .iter()
                    .any(|l| l.name() == label.0 && l.value() == label.1)
            })
            .map(|m| m.value())
            .collect()
    }

    /// One scrape of a tree holding a single TCP controller, nvme0, whose sysfs `state` reads
    /// `state`.
    fn one_controller_in(state: &str) -> Sink {
        let t = Tree::new();
        t.tcp_controller(0, "nqn.test:a", state);
        collect(&ControllerCollector::new(t.root().into()))
    }

    /// Per queue, each I/O queue's CPUs from the lab's 6.1 tree (2 vCPUs: queue 1 carries CPU
    /// 0's I/O, queue 2 CPU 1's); none without the flag.
    #[test]
    fn per_queue_adds_each_io_queues_cpus() {
        let root = crate::test_support::captured_6_1();
        let plain = collect(&ControllerCollector::new(root.clone()));
        assert!(plain
            .into_families()
            .iter()
            .all(|f| f.name() != QUEUE_CPUS.name));
        let sink = collect(&ControllerCollector::new(root).per_queue(true));
        assert_eq!(sink.skipped_count(), 0);
        let fams = sink.into_families();
        let got = series(
            family(&fams, QUEUE_CPUS.name),
            &["controller", "queue", "cpus"],
        );
        let want: Vec<(Vec<String>, f64)> = (0..5)
            .flat_map(|c| [(c, "1", "0"), (c, "2", "1")])
            .map(|(c, q, cpus)| (vec![format!("nvme{c}"), q.to_owned(), cpus.to_owned()], 1.0))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn state_is_one_hot_over_every_kernel_state() {
        let sink = one_controller_in("connecting");
        assert_eq!(sink.skipped_count(), 0);
        let fams = sink.into_families();
        let state = family(&fams, STATE.name);
        assert_eq!(state.metric.len(), 7);
        let ones: f64 = state.metric.iter().map(|m| m.value()).sum();
        assert_eq!(ones, 1.0);
    }

    /// DH-HMAC-CHAP keys as the kernel prints them (`none`, or the key in its `DHHC-1:` form):
    /// configured or not, per key; no series where the attributes are absent (a kernel without
    /// host authentication), and one that cannot be read (a directory in its place) is a skip.
    #[test]
    fn dhchap_keys_are_configured_or_not_and_absent_where_the_kernel_has_none() {
        let t = Tree::new();
        let a = t.tcp_controller(0, "nqn.test:a", "live");
        std::fs::write(
            a.join("dhchap_secret"),
            "DHHC-1:00:FOhYHDeNvsyuvRBFYAEFC8e6RHe3+ZJIl9cYmlXc19ukwp+Z:\n",
        )
        .unwrap();
        std::fs::write(a.join("dhchap_ctrl_secret"), "none\n").unwrap();
        t.tcp_controller(1, "nqn.test:b", "live");
        let c = t.tcp_controller(2, "nqn.test:c", "live");
        std::fs::write(c.join("dhchap_secret"), "none\n").unwrap();
        std::fs::create_dir(c.join("dhchap_ctrl_secret")).unwrap();
        let sink = collect(&ControllerCollector::new(t.root().into()));
        assert_eq!(sink.skipped_count(), 1);
        let fams = sink.into_families();
        let got = series(family(&fams, DHCHAP.name), &["controller", "key"]);
        let want = [
            ("nvme0", "controller", 0.0),
            ("nvme0", "host", 1.0),
            ("nvme2", "host", 0.0),
        ]
        .map(|(c, k, v)| (vec![c.to_owned(), k.to_owned()], v));
        assert_eq!(got, want);
    }

    /// TLS as the kernel shows it (6.7+): `tls_key` on a TCP controller asked for TLS (empty
    /// until a handshake made a PSK), nothing on the others; 0 for those only where nvme_tcp can
    /// do TLS (its `tls_handshake_timeout` parameter), nothing at all where it cannot.
    #[test]
    fn tls_is_on_where_the_kernel_shows_a_key_and_off_only_where_it_could_be_on() {
        let tls = |t: &Tree| {
            let fams = collect(&ControllerCollector::new(t.root().into())).into_families();
            series(family(&fams, TLS.name), &["controller"])
        };
        let t = Tree::new();
        let a = t.tcp_controller(0, "nqn.test:a", "live");
        std::fs::write(a.join("tls_key"), "2ad1b3c4\n").unwrap();
        t.tcp_controller(1, "nqn.test:b", "live");
        let c = t.tcp_controller(2, "nqn.test:c", "connecting");
        std::fs::write(c.join("tls_key"), "").unwrap();
        let d = t.tcp_controller(3, "nqn.test:d", "live");
        std::fs::write(d.join("transport"), "rdma\n").unwrap();
        // No nvme_tcp parameter: only the controllers that show a key say anything.
        let want = [("nvme0", 1.0), ("nvme2", 1.0)].map(|(c, v)| (vec![c.to_owned()], v));
        assert_eq!(tls(&t), want);
        let params = t.root().join("module/nvme_tcp/parameters");
        std::fs::create_dir_all(&params).unwrap();
        std::fs::write(params.join("tls_handshake_timeout"), "10\n").unwrap();
        let want =
            [("nvme0", 1.0), ("nvme1", 0.0), ("nvme2", 1.0)].map(|(c, v)| (vec![c.to_owned()], v));
        assert_eq!(tls(&t), want);
    }

    #[test]
    fn an_unknown_state_gets_its_own_series_and_is_counted() {
        let sink = one_controller_in("unknown state");
        assert_eq!(sink.skipped_count(), 1);
        assert_eq!(value(sink, STATE.name, ("state", "unknown state")), [1.0]);
    }

    /// A controller gone since the listing makes no series with empty labels, only a skip; a
    /// model with a terminal escape in it is exported cleaned, and counted.
    #[test]
    fn a_vanished_controller_makes_no_series_and_odd_text_is_cleaned() {
        let t = Tree::new();
        let d = t.tcp_controller(0, "nqn.test:a", "live");
        std::fs::write(d.join("model"), b"Linux\x1b[2J\n").unwrap();
        std::os::unix::fs::symlink(
            "../../devices/virtual/nvme-fabrics/ctl/nvme1",
            t.root().join("class/nvme/nvme1"),
        )
        .unwrap();
        let sink = collect(&ControllerCollector::new(t.root().into()));
        // The cleaned model counts; the vanished controller, a deletion, does not.
        assert_eq!(sink.skipped_count(), 1);
        let fams = sink.into_families();
        let models = series(family(&fams, INFO.name), &["model"]);
        assert_eq!(models, [(vec!["Linux\u{FFFD}[2J".to_owned()], 1.0)]);
        for f in &fams {
            for m in &f.metric {
                assert!(m.label.iter().all(|l| l.value() != "nvme1"), "{}", f.name());
            }
        }
    }

    #[test]
    fn off_timeouts_are_minus_one_and_io_queues_exclude_admin() {
        let sink = one_controller_in("live");
        let fams = sink.into_families();
        let get = |name: &str| family(&fams, name).metric[0].value();
        assert_eq!(get(FAST_IO_FAIL.name), -1.0);
        assert_eq!(get(LOSS_TMO.name), 5.0);
        assert_eq!(get(IO_QUEUES.name), 2.0);
        assert_eq!(get(QUEUE_SIZE.name), 128.0);
    }
}
