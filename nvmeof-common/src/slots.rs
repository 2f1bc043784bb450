//! The bounds of the I/O tracer's arrays and the index of each queue, statistic and command in
//! flight in them: what lets the programs find their slot without a hash lookup.

use crate::io::{OpClass, OpKey, QueueKey};
#[cfg(test)]
use crate::io::{NVME_CMD_FLUSH, NVME_CMD_READ, NVME_CMD_WRITE, NVME_FABRICS_OPCODE};
use crate::INFLIGHT_CAPACITY;
use bytemuck::{Pod, Zeroable};

/// The bounds of the `QUEUES`, `OPS` and `INFLIGHT_SLOTS` arrays, written by the agent before
/// load.
///
/// A controller's instance (the N of `/dev/nvmeN`, which the kernel hands out lowest-free) and a
/// queue id index the arrays directly, so the programs find a queue's state and a command's
/// statistics without a hash lookup. Per controller there are [`SlotLayout::queues`] queue slots
/// and [`SlotLayout::stats_per_controller`] statistics slots: admin, fabrics, flush and other
/// commands per controller ([`CONTROLLER_CLASSES`]), reads and writes per I/O queue
/// ([`QUEUE_CLASSES`]): the per-queue split that earns its keep.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SlotLayout {
    /// Controller instances 0 .. `controllers`.
    pub controllers: u32,
    /// Queue ids 0 (admin) .. `queues`.
    pub queues: u32,
    /// Non-zero once filled; an unset layout makes the programs return at once.
    pub valid: u32,
    /// Entries of `INFLIGHT_SLOTS` less one: a power of two less one.
    pub inflight_mask: u32,
}

/// Classes counted once per controller, whatever the queue: rows 0..4 of a controller's block.
pub const CONTROLLER_CLASSES: [OpClass; 4] = [
    OpClass::Admin,
    OpClass::Fabrics,
    OpClass::Flush,
    OpClass::OtherIo,
];
/// Classes counted per I/O queue: two rows per queue after the controller rows.
pub const QUEUE_CLASSES: [OpClass; 2] = [OpClass::Read, OpClass::Write];

impl SlotLayout {
    pub const fn new(controllers: u32, queues: u32) -> SlotLayout {
        SlotLayout {
            controllers,
            queues,
            valid: 1,
            inflight_mask: INFLIGHT_CAPACITY - 1,
        }
    }

    /// The layout with `slots` entries of `INFLIGHT_SLOTS`, rounded up to a power of two.
    pub const fn with_inflight_slots(self, slots: u32) -> SlotLayout {
        let n = if slots <= 1 {
            1
        } else {
            match slots.checked_next_power_of_two() {
                Some(n) => n,
                None => 1 << 31,
            }
        };
        SlotLayout {
            inflight_mask: n - 1,
            ..self
        }
    }

    /// Entries of `INFLIGHT_SLOTS`.
    pub const fn inflight_slots(&self) -> u32 {
        self.inflight_mask + 1
    }

    /// What [`InflightSlot::key`](crate::InflightSlot::key) holds for `key`: one more, so that 0 (the array's zeroed
    /// start, and an idle slot's) is no command's key (a pointer is never `u64::MAX`, a request
    /// queue id never `u32::MAX`).
    #[inline(always)]
    pub fn slot_key(key: u64) -> u64 {
        key.wrapping_add(1)
    }

    /// The `INFLIGHT_SLOTS` index of a command's key: the high half of a multiplicative
    /// (Fibonacci) hash, masked. The keys of a node's commands in flight are regular (tags
    /// counting up, queue ids, request structs at a fixed stride), which a multiplication by
    /// the golden ratio spreads over the array; two keys of one index share the slot in turn
    /// (`InflightCollision`).
    #[inline(always)]
    pub fn inflight_index(&self, key: u64) -> u32 {
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32 & self.inflight_mask
    }

    /// Entries of `QUEUES`.
    pub const fn queue_slots(&self) -> u32 {
        self.controllers * self.queues
    }

    /// `OPS` entries per controller: the controller rows, then reads and writes of every I/O
    /// queue (1 .. `queues`).
    pub const fn stats_per_controller(&self) -> u32 {
        CONTROLLER_CLASSES.len() as u32 + self.queues.saturating_sub(1) * QUEUE_CLASSES.len() as u32
    }

    /// Entries of `OPS`.
    pub const fn stats_slots(&self) -> u32 {
        self.controllers * self.stats_per_controller()
    }

    /// The `QUEUES` index of a queue; `None` past the bounds.
    #[inline(always)]
    pub fn queue_slot(&self, ctrl_id: u32, qid: u16) -> Option<u32> {
        if ctrl_id < self.controllers && (qid as u32) < self.queues {
            Some(ctrl_id * self.queues + qid as u32)
        } else {
            None
        }
    }

    /// The `OPS` index of a command of `class` on an in-bounds queue ([`Self::queue_slot`] is
    /// `Some`): reads and writes on I/O queues (qid ≥ 1, as [`OpClass::classify`] gives them)
    /// have a row per queue, the other classes one per controller.
    #[inline(always)]
    pub fn stats_slot(&self, ctrl_id: u32, qid: u16, class: OpClass) -> u32 {
        let row = match class {
            OpClass::Admin => 0,
            OpClass::Fabrics => 1,
            OpClass::Flush => 2,
            OpClass::OtherIo => 3,
            OpClass::Read => 4 + (qid as u32).saturating_sub(1) * 2,
            OpClass::Write => 5 + (qid as u32).saturating_sub(1) * 2,
        };
        ctrl_id * self.stats_per_controller() + row
    }

    /// What an `OPS` index counts: (controller, queue, class); queue 0 for the per-controller
    /// rows. The inverse of [`Self::stats_slot`].
    pub fn stats_key(&self, index: u32) -> OpKey {
        let per = self.stats_per_controller().max(1);
        let (ctrl_id, row) = (index / per, index % per);
        let (qid, class) = match row {
            0..=3 => (0, CONTROLLER_CLASSES[row as usize]),
            r => (
                ((r - 4) / 2 + 1) as u16,
                QUEUE_CLASSES[((r - 4) % 2) as usize],
            ),
        };
        OpKey {
            ctrl_id,
            qid,
            opclass: class as u8,
            _pad: 0,
        }
    }

    /// What a `QUEUES` index is: the inverse of [`Self::queue_slot`].
    pub fn queue_key(&self, index: u32) -> QueueKey {
        let q = self.queues.max(1);
        QueueKey {
            ctrl_id: index / q,
            qid: (index % q) as u16,
            _pad: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slow;

    #[test]
    fn slots_are_dense_and_invert() {
        let l = SlotLayout::new(3, 5);
        assert_eq!(
            (l.queue_slots(), l.stats_per_controller(), l.stats_slots()),
            (15, 12, 36)
        );
        assert_eq!(l.queue_slot(2, 4), Some(14));
        assert_eq!(l.queue_slot(3, 0), None);
        assert_eq!(l.queue_slot(0, 5), None);
        let mut seen = [false; 36];
        for ctrl_id in 0..3 {
            for qid in 0..5u16 {
                let k = l.queue_key(l.queue_slot(ctrl_id, qid).unwrap());
                assert_eq!((k.ctrl_id, k.qid), (ctrl_id, qid));
                for opcode in [
                    NVME_CMD_READ,
                    NVME_CMD_WRITE,
                    NVME_CMD_FLUSH,
                    0x09,
                    NVME_FABRICS_OPCODE,
                ] {
                    let class = OpClass::classify(qid, opcode);
                    let i = l.stats_slot(ctrl_id, qid, class);
                    assert!(i < l.stats_slots(), "{ctrl_id} {qid} {class:?}");
                    seen[i as usize] = true;
                    let k = l.stats_key(i);
                    assert_eq!((k.ctrl_id, k.opclass), (ctrl_id, class as u8));
                    // Reads and writes keep their queue; the other classes are per controller.
                    let want_qid = if class.moves_data() { qid } else { 0 };
                    assert_eq!(k.qid, want_qid, "{class:?}");
                }
            }
        }
        // Every slot is some command's: none wasted.
        assert!(seen.iter().all(|&s| s));
    }

    extern crate std;

    /// Commands in flight whose index another already holds, among `keys` in that order.
    fn taken(l: &SlotLayout, keys: impl Iterator<Item = u64>) -> (usize, usize) {
        let mut held = std::collections::HashSet::new();
        let (mut n, mut taken) = (0, 0);
        for k in keys {
            let i = l.inflight_index(k);
            assert!(i < l.inflight_slots());
            n += 1;
            taken += usize::from(!held.insert(i));
        }
        (taken, n)
    }

    /// The keys of a node's commands in flight are regular, and the hash spreads them better
    /// than chance would (a random index: about `n / 2m` of `n` keys among `m` slots find theirs
    /// taken): none on the lab's node at the least size, few at 256 CPUs.
    #[test]
    fn inflight_indices_spread_a_nodes_keys() {
        assert_eq!(SlotLayout::new(1, 1).inflight_slots(), INFLIGHT_CAPACITY);
        assert_eq!(
            SlotLayout::new(1, 1)
                .with_inflight_slots(5)
                .inflight_slots(),
            8
        );
        assert_eq!(
            SlotLayout::new(1, 1)
                .with_inflight_slots(0)
                .inflight_slots(),
            1
        );
        assert_eq!(
            SlotLayout::new(1, 1)
                .with_inflight_slots(u32::MAX)
                .inflight_slots(),
            1 << 31
        );
        // The lab: three controllers' request queues, admin and two I/O queues, every tag.
        let lab = SlotLayout::new(16, 3);
        let keys = (3..6).flat_map(|q| {
            (0..3u16).flat_map(move |qid| (0..128).map(move |t| slow::classic_key(q, qid, t)))
        });
        assert_eq!(taken(&lab, keys), (0, 1152));
        // 16 controllers × 128 I/O queues, 32 commands in flight on each, in 2^18 slots.
        let node = SlotLayout::new(32, 129).with_inflight_slots(1 << 18);
        let keys = (0..16u32).flat_map(|c| {
            (1..129u16).flat_map(move |qid| (0..32).map(move |t| slow::classic_key(c, qid, t)))
        });
        let (taken, n) = taken(&node, keys);
        assert_eq!(n, 65536);
        // Chance would take 12.5 %; the hash takes 2.1 %.
        assert!(taken * 100 <= 5 * n, "{taken} of {n}");
    }
}
