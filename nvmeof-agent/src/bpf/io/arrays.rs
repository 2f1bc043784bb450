//! `QUEUES` and `OPS` as the drain reads them. Both are arrays mapped into the agent's memory:
//! every drain scans every queue's state (32 bytes a queue) and re-reads the statistics (1.8 KB a
//! slot) only of the queues that completed a command since the drain before last; the others are
//! named as unread, and the model keeps their last values (the one copy of the previous state).
//! So a drain's cost follows the queues that are busy, not the node's size. ("Since the drain
//! before last": a completion counts on its queue a moment before it counts in its statistics,
//! so a queue that moved is read once more at the next drain.)
use std::collections::HashSet;

use anyhow::{bail, Context as _};
use aya::maps::{Array, Map, MapData};
use aya::Ebpf;
use nvmeof_common::{maps, OpStats, QueueState, SlotLayout, CONTROLLER_CLASSES, QUEUE_CLASSES};

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
            counted: vec![false; slots.stats_slots() as usize],
            last_reads: 0,
        })
    }

    /// Every queue that has seen a command into `raw.queues`; the statistics of every slot that
    /// may have moved into `raw.ops`, and every other slot that has counted a command into
    /// `raw.ops_unread`.
    pub fn read(&mut self, raw: &mut RawMaps) {
        let slots = self.slots;
        let mut queues = Vec::new();
        let mut queue_moved = vec![false; self.completed.len()];
        let mut controller_moved = vec![false; slots.controllers as usize];
        for i in 0..self.queues.len() {
            let Some(q) = self.queues.get(i) else { break };
            if q == QueueState::default() {
                continue;
            }
            let i = i as usize;
            let moved = q.completed != self.completed[i];
            queue_moved[i] = moved || self.moved_last[i];
            self.moved_last[i] = moved;
            self.completed[i] = q.completed;
            if queue_moved[i] {
                controller_moved[i / slots.queues as usize] = true;
            }
            queues.push((slots.queue_key(i as u32), q));
        }
        let per = slots.stats_per_controller();
        let controller_rows = CONTROLLER_CLASSES.len() as u32;
        // Sized as the last drain's reads: 1.8 KB a slot, not grown by doubling.
        let mut ops = Vec::with_capacity(self.last_reads);
        let mut unread = Vec::new();
        let mut reads = 0;
        // Slots are read straight into `ops`; a read that finds a slot never written leaves its
        // entry to the next read, and the last such entry is dropped at the end.
        let mut spare = false;
        for ctrl_id in 0..slots.controllers {
            let moved = controller_moved[ctrl_id as usize];
            let base = ctrl_id * per;
            for row in 0..per {
                let index = base + row;
                let read = moved
                    && (row < controller_rows || {
                        let qid = (row - controller_rows) / QUEUE_CLASSES.len() as u32 + 1;
                        queue_moved[(ctrl_id * slots.queues + qid) as usize]
                    });
                let counted = &mut self.counted[index as usize];
                if read {
                    reads += 1;
                    if !spare {
                        ops.push((slots.stats_key(index), OpStats::default()));
                    }
                    let (key, value) = ops.last_mut().expect("pushed");
                    *key = slots.stats_key(index);
                    // All zeros: OpStats::default(), a slot that has not counted.
                    spare = !self.ops.read_into(index, value).unwrap_or(false);
                    if !spare {
                        *counted = true;
                        continue;
                    }
                }
                if *counted {
                    unread.push(slots.stats_key(index));
                }
            }
        }
        if spare {
            ops.pop();
        }
        self.last_reads = reads;
        raw.ops = ops;
        raw.ops_unread = unread;
        raw.queues = queues;
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
