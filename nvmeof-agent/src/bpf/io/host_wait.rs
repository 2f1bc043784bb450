//! Host wait per controller (`nvmeof_common::host_wait`): the drain reads `HOST_WAIT_STATS` (one
//! slot per controller instance, cumulative, `u32` buckets that wrap) and keeps 64-bit totals
//! here, per controller of one subsystem: an instance number handed to another subsystem starts
//! again from zero, as the latency series do.
use std::collections::BTreeMap;

use anyhow::Context as _;
use aya::maps::{Array, MapData};
use aya::Ebpf;
use nvmeof_common::host_wait::maps::HOST_WAIT_STATS;
use nvmeof_common::{OpClass, OpStats, LATENCY_BUCKETS};

use super::model::{OpView, SeriesKey};

/// One controller's totals.
struct Totals {
    /// The subsystem the totals belong to.
    nqn: String,
    /// The slot as last read, for the next delta.
    last: OpStats,
    sum_ns: u64,
    buckets: Vec<u64>,
}

/// The totals of every controller seen.
#[derive(Default)]
pub struct HostWaitTotals {
    by_ctrl: BTreeMap<u32, Totals>,
}

impl HostWaitTotals {
    /// Reads the slots of `controllers` (instance → subsystem NQN) and adds what moved.
    pub fn read(&mut self, ebpf: &Ebpf, controllers: &BTreeMap<u32, String>) -> anyhow::Result<()> {
        let map = ebpf
            .map(HOST_WAIT_STATS)
            .with_context(|| format!("map {HOST_WAIT_STATS} missing from the object"))?;
        let array: Array<&MapData, OpStats> =
            Array::try_from(map).with_context(|| format!("map {HOST_WAIT_STATS}"))?;
        for (&ctrl_id, nqn) in controllers {
            // Past the arrays' bounds the programs count nothing (slot_out_of_range).
            let Ok(now) = array.get(&ctrl_id, 0) else {
                continue;
            };
            self.add(ctrl_id, nqn, &now);
        }
        Ok(())
    }

    fn add(&mut self, ctrl_id: u32, nqn: &str, now: &OpStats) {
        let t = self.by_ctrl.entry(ctrl_id).or_insert_with(|| Totals {
            nqn: nqn.to_owned(),
            last: *now,
            sum_ns: 0,
            buckets: vec![0; LATENCY_BUCKETS],
        });
        if t.nqn != nqn {
            t.nqn = nqn.to_owned();
            t.sum_ns = 0;
            t.buckets.iter_mut().for_each(|b| *b = 0);
        }
        t.sum_ns += now.latency_sum_ns.wrapping_sub(t.last.latency_sum_ns);
        for (i, b) in t.buckets.iter_mut().enumerate() {
            *b += u64::from(now.buckets[i].wrapping_sub(t.last.buckets[i]));
        }
        t.last = *now;
    }

    /// Each controller's host wait as a latency series: its sum and its kernel buckets.
    pub fn views(&self) -> Vec<OpView> {
        self.by_ctrl
            .iter()
            .map(|(&ctrl_id, t)| OpView {
                key: SeriesKey {
                    ctrl_id,
                    qid: None,
                    class: OpClass::OtherIo,
                },
                commands: t.buckets.iter().sum(),
                bytes: 0,
                errors: 0,
                latency_sum_ns: t.sum_ns,
                buckets: t
                    .buckets
                    .iter()
                    .enumerate()
                    .filter(|(_, &c)| c != 0)
                    .map(|(i, &c)| (i as u16, c))
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(sum: u64, bucket: usize, count: u32) -> OpStats {
        let mut s = OpStats {
            latency_sum_ns: sum,
            ..Default::default()
        };
        s.buckets[bucket] = count;
        s
    }

    #[test]
    fn totals_survive_wrapping_buckets_and_restart_for_another_subsystem() {
        let mut t = HostWaitTotals::default();
        t.add(3, "nqn.a", &slot(100, 5, u32::MAX - 1));
        t.add(3, "nqn.a", &slot(300, 5, 2)); // wrapped: 4 more
        let v = t.views();
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].commands, v[0].latency_sum_ns), (4, 200));
        assert_eq!(v[0].buckets, [(5, 4)]);
        // Instance 3 now serves another subsystem: its counts start again.
        t.add(3, "nqn.b", &slot(400, 5, 3));
        let v = t.views();
        assert_eq!((v[0].commands, v[0].latency_sum_ns), (1, 100));
    }
}
