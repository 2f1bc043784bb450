//! Collector `namespace`: size, block size and block-layer I/O counters of every namespace, and
//! the ANA state of every path to it (parsed by `crate::sysfs::namespace`).
//!
//! On 6.1 fabrics hosts a multipath head's `stat` reads zeros however much I/O goes through it:
//! these counters are kept for what they show on other setups, and the eBPF `io` collector is
//! the real source of fabrics throughput.
use std::path::PathBuf;

use crate::collector::{families, label, Collector, Scrape, Sink};
use crate::sysfs::{self, BlockStat, Namespace};

families! {
    SIZE: gauge("nvmeof_namespace_size_bytes",
        "Size of the namespace.");
    LBS: gauge("nvmeof_namespace_logical_block_size_bytes",
        "Logical block size of the namespace.");
    ANA: gauge("nvmeof_namespace_ana_state",
        "ANA state of one path to a namespace, one series per state (1 for the current one); absent when the target does not use ANA.");
    READS: counter("nvmeof_namespace_reads_completed_total",
        "Reads completed, from the block device's stat (zeros on 6.1 multipath heads).");
    WRITES: counter("nvmeof_namespace_writes_completed_total",
        "Writes completed, from the block device's stat (zeros on 6.1 multipath heads).");
    READ_BYTES: counter("nvmeof_namespace_read_bytes_total",
        "Bytes read, from the block device's stat.");
    WRITTEN_BYTES: counter("nvmeof_namespace_written_bytes_total",
        "Bytes written, from the block device's stat.");
    READ_TIME: counter("nvmeof_namespace_read_time_seconds_total",
        "Time spent on reads, summed over reads, from the block device's stat.");
    WRITE_TIME: counter("nvmeof_namespace_write_time_seconds_total",
        "Time spent on writes, summed over writes, from the block device's stat.");
    IO_TIME: counter("nvmeof_namespace_io_time_seconds_total",
        "Time the device had I/O in flight, from the block device's stat.");
}

/// The block layer counts in 512-byte sectors whatever the logical block size.
const SECTOR_BYTES: f64 = 512.0;

pub struct NamespaceCollector {
    sysfs: PathBuf,
}

impl NamespaceCollector {
    pub fn new(sysfs: PathBuf) -> Self {
        NamespaceCollector { sysfs }
    }
}

impl Collector for NamespaceCollector {
    fn collect(&self, _: &Scrape, sink: &mut Sink) -> anyhow::Result<()> {
        let parsed = sysfs::namespaces(&self.sysfs)?;
        sink.skipped(parsed.skipped.len());
        for ns in &parsed.items {
            emit(sink, ns);
        }
        Ok(())
    }
}

fn emit(sink: &mut Sink, ns: &Namespace) {
    let subsystem = label(&ns.subsysnqn);
    let nsid = ns.nsid.map(|n| n.to_string()).unwrap_or_default();
    let ids = [
        ("subsystem", subsystem),
        ("namespace", ns.name.as_str()),
        ("nsid", nsid.as_str()),
    ];
    if let Some(sectors) = ns.size_sectors {
        sink.gauge(&SIZE, &ids, sectors as f64 * SECTOR_BYTES);
    }
    if let Some(lbs) = ns.logical_block_size {
        sink.gauge(&LBS, &ids, f64::from(lbs));
    }
    if let Some(stat) = &ns.stat {
        stats(sink, &ids, stat);
    }
    for p in &ns.paths {
        let Some(state) = &p.ana_state else {
            continue;
        };
        let labels = [
            ids[0],
            ids[1],
            ("controller", p.controller.as_str()),
            ("path", p.name.as_str()),
        ];
        sink.one_hot(&ANA, &labels, state);
    }
}

fn stats(sink: &mut Sink, ids: &[(&str, &str)], s: &BlockStat) {
    let ms = |v: u64| v as f64 / 1000.0;
    sink.counter(&READS, ids, s.read_ios as f64);
    sink.counter(&WRITES, ids, s.write_ios as f64);
    sink.counter(&READ_BYTES, ids, s.read_sectors as f64 * SECTOR_BYTES);
    sink.counter(&WRITTEN_BYTES, ids, s.write_sectors as f64 * SECTOR_BYTES);
    sink.counter(&READ_TIME, ids, ms(s.read_ticks_ms));
    sink.counter(&WRITE_TIME, ids, ms(s.write_ticks_ms));
    sink.counter(&IO_TIME, ids, ms(s.io_ticks_ms));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Family;
    use crate::test_support::{collect, family, Tree};

    #[test]
    fn plain_disk_counters_in_bytes_and_seconds() {
        let t = Tree::new();
        t.tcp_controller(2, "nqn.test:b", "live");
        t.plain_namespace(2, 1, 1);
        let sink = collect(&NamespaceCollector::new(t.root().into()));
        let fams = sink.into_families();
        let get = |f: &Family| family(&fams, f.name).metric[0].value();
        assert_eq!(get(&SIZE), 536_870_912.0);
        assert_eq!(get(&READ_BYTES), 2048.0 * 512.0);
        assert_eq!(get(&WRITE_TIME), 0.05);
        assert!(
            fams.iter().all(|f| f.name() != ANA.name),
            "no ANA, no series"
        );
    }

    #[test]
    fn ana_is_one_hot_per_path() {
        let t = Tree::new();
        t.two_paths(["live", "live"]);
        t.multipath_namespace(0, 1, 1, &[0, 1], Some(&["optimized", "change"]));
        let sink = collect(&NamespaceCollector::new(t.root().into()));
        let fams = sink.into_families();
        let ana = family(&fams, ANA.name);
        assert_eq!(ana.metric.len(), 10);
        let ones: f64 = ana.metric.iter().map(|m| m.value()).sum();
        assert_eq!(ones, 2.0);
    }
}
