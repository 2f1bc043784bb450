//! `QUEUES` and `OPS` as the drain reads them. Both are arrays mapped into the agent's memory:
//! every drain scans every queue's state (32 bytes a queue) first, then re-reads the statistics
//! (1.8 KB a slot) only of the queues that completed a command since the drain before last, and
//! hands each slot to the model as it reads it; the other slots that have counted are named as
//! unread, and the model keeps their last values (the one copy of the previous state). So a
//! drain's cost follows the queues that are busy, not the node's size, and no copy of all the
//! slots read is made. ("Since the drain before last": a completion counts on its queue a
//! moment before it counts in its statistics, so a queue that moved is read once more at the
//! next drain.)
use std::collections::HashSet;

use anyhow::{bail, Context as _};
use aya::maps::{Array, Map, MapData};
use aya::Ebpf;
use nvmeof_common::{
    maps, OpKey, OpStats, QueueState, SlotLayout, CONTROLLER_CLASSES, QUEUE_CLASSES,
};

use super::model::RawMaps;
use crate::bpf::mapped::Mapped;

pub struct Arrays {
    slots: SlotLayout,
    queues: Mapped<QueueState>,
    ops: Mapped<OpStats>,
    /// Each queue slot's `completed` at the last drain.
    completed: Vec<u64>,
    /// Queue slots that moved at the last drain.
    moved_last: Vec<bool>,
    /// Queue slots, and controllers, whose statistics the next [`Arrays::read_ops`] re-reads:
    /// those that moved since the drain before last, as [`Arrays::read_queues`] found them.
    queue_moved: Vec<bool>,
    controller_moved: Vec<bool>,
    /// Statistics slots that have counted a command (read non-zero once, not forgotten since).
    counted: Vec<bool>,
    /// Statistics slots read at the last drain.
    pub last_reads: usize,
}

fn mapped<T: aya::Pod>(ebpf: &Ebpf, name: &str, entries: u32) -> anyhow::Result<Mapped<T>> {
    match ebpf.map(name) {
        Some(Map::Array(m)) => Mapped::new(m, entries).with_context(|| format!("map {name}")),
        Some(_) => bail!("map {name} is not an array"),
        None => bail!("map {name} missing from the object"),
    }
}

impl Arrays {
    pub fn new(ebpf: &Ebpf, slots: SlotLayout) -> anyhow::Result<Arrays> {
        let n = slots.queue_slots() as usize;
        Ok(Arrays {
            slots,
            queues: mapped(ebpf, maps::QUEUES, slots.queue_slots())?,
            ops: mapped(ebpf, maps::OPS, slots.stats_slots())?,
            completed: vec![0; n],
            moved_last: vec![false; n],
            queue_moved: vec![false; n],
            controller_moved: vec![false; slots.controllers as usize],
            counted: vec![false; slots.stats_slots() as usize],
            last_reads: 0,
        })
    }

    /// Every queue that has seen a command into `raw.queues`, noting which moved since the drain
    /// before last for [`Self::read_ops`].
    pub fn read_queues(&mut self, raw: &mut RawMaps) {
        let slots = self.slots;
        let mut queues = Vec::new();
        self.queue_moved.fill(false);
        self.controller_moved.fill(false);
        for i in 0..self.queues.len() {
            let Some(q) = self.queues.get(i) else { break };
            if q == QueueState::default() {
                continue;
            }
            let i = i as usize;
            let moved = q.completed != self.completed[i];
            self.queue_moved[i] = moved || self.moved_last[i];
            self.moved_last[i] = moved;
            self.completed[i] = q.completed;
            if self.queue_moved[i] {
                self.controller_moved[i / slots.queues as usize] = true;
            }
            queues.push((slots.queue_key(i as u32), q));
        }
        raw.queues = queues;
    }

    /// Controllers with a statistics slot that has counted a command.
    pub fn counted_controllers(&self) -> impl Iterator<Item = u32> + '_ {
        let per = self.slots.stats_per_controller().max(1) as usize;
        (self.counted.chunks(per).enumerate())
            .filter(|(_, c)| c.contains(&true))
            .map(|(ctrl_id, _)| ctrl_id as u32)
    }

    /// Gives `op` every statistics slot that has counted a command, except those of the
    /// controllers in `skip`: with its value when its queue moved at the last
    /// [`Self::read_queues`] (read from the mapping into one buffer, handed over at once), unread
    /// (`None`) otherwise. A slot read as all zeros (never written) is not given unless it had
    /// counted before, then as unread.
    pub fn read_ops(&mut self, skip: &HashSet<u32>, op: &mut dyn FnMut(&OpKey, Option<&OpStats>)) {
        let slots = self.slots;
        let per = slots.stats_per_controller();
        let controller_rows = CONTROLLER_CLASSES.len() as u32;
        let mut value = Box::<OpStats>::default();
        let mut reads = 0;
        for ctrl_id in (0..slots.controllers).filter(|c| !skip.contains(c)) {
            let moved = self.controller_moved[ctrl_id as usize];
            let base = ctrl_id * per;
            for row in 0..per {
                let index = base + row;
                let read = moved
                    && (row < controller_rows || {
                        let qid = (row - controller_rows) / QUEUE_CLASSES.len() as u32 + 1;
                        self.queue_moved[(ctrl_id * slots.queues + qid) as usize]
                    });
                let counted = &mut self.counted[index as usize];
                if read {
                    reads += 1;
                    // All zeros: OpStats::default(), a slot that has not counted.
                    if self.ops.read_into(index, &mut value).unwrap_or(false) {
                        *counted = true;
                        op(&slots.stats_key(index), Some(&value));
                        continue;
                    }
                }
                if *counted {
                    op(&slots.stats_key(index), None);
                }
            }
        }
        self.last_reads = reads;
    }

    /// Zeroes the queues and statistics of controllers that are gone (or whose instance number
    /// went to another subsystem), so that the next controller with that instance starts from 0.
    pub fn forget(&mut self, ebpf: &mut Ebpf, gone: &HashSet<u32>) -> anyhow::Result<()> {
        let slots = self.slots;
        let per = slots.stats_per_controller();
        for &ctrl_id in gone.iter().filter(|&&c| c < slots.controllers) {
            {
                let mut q = Array::<&mut MapData, QueueState>::try_from(
                    ebpf.map_mut(maps::QUEUES).context("map QUEUES")?,
                )?;
                for qid in 0..slots.queues {
                    let i = ctrl_id * slots.queues + qid;
                    q.set(i, QueueState::default(), 0)
                        .context("zeroing QUEUES")?;
                    self.completed[i as usize] = 0;
                    self.moved_last[i as usize] = false;
                }
            }
            let mut o = Array::<&mut MapData, OpStats>::try_from(
                ebpf.map_mut(maps::OPS).context("map OPS")?,
            )?;
            for i in ctrl_id * per..(ctrl_id + 1) * per {
                o.set(i, OpStats::default(), 0).context("zeroing OPS")?;
                self.counted[i as usize] = false;
            }
        }
        Ok(())
    }
}
