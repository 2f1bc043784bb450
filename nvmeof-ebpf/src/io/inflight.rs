//! Commands in flight between setup and completion: in an array slot indexed by a hash of the
//! request key (`INFLIGHT_SLOTS`, the request-keyed programs), else in an LRU hash map
//! (`INFLIGHT_RQ` for the slots' collisions, `INFLIGHT` for the classic programs).
use aya_ebpf::maps::LruHashMap;
use nvmeof_common::{Inflight, OpClass, ProgramCounter, SlotLayout};
use nvmeof_ebpf::helpers::compare_exchange;

use crate::{count, queue_event, slot_layout, Setup, INFLIGHT_SLOTS};

/// The in-flight value of a command set up at `now`, with the slots its completion updates;
/// `None` (counted) for a controller or queue past the arrays' bounds.
#[inline(always)]
pub(crate) fn inflight(s: &Setup, now: u64) -> Option<Inflight> {
    let slots = slot_layout();
    let Some(queue_slot) = slots.queue_slot(s.ctrl_id, s.qid) else {
        count(ProgramCounter::SlotOutOfRange);
        return None;
    };
    let class = OpClass::classify(s.qid, s.opcode);
    Some(Inflight {
        start_ns: now,
        bytes: s.bytes,
        ctrl_id: s.ctrl_id,
        queue_slot,
        stats_slot: slots.stats_slot(s.ctrl_id, s.qid, class),
        qid: s.qid,
        opclass: class as u8,
        opcode: s.opcode,
        _pad: [0; 4],
    })
}

/// Records a command as in flight and counts it as submitted on its queue: in `key`'s slot of
/// `INFLIGHT_SLOTS` (an inlined array lookup) when the slot is idle or already its key's, else
/// (counted) or without `key` (the classic programs) under `lru_key` in `lru` (a hash lookup).
/// A command it replaces (its completion lost) ends on its queue.
#[inline(always)]
pub(crate) fn begin<K>(
    key: Option<u64>,
    lru: &LruHashMap<K, Inflight>,
    lru_key: &K,
    value: &Inflight,
) -> Option<()> {
    let replaced = match key.and_then(|key| claim(key, value)) {
        Some(replaced) => replaced,
        None => begin_lru(lru, lru_key, value)?,
    };
    if replaced != 0 {
        count(ProgramCounter::InflightReplaced);
    }
    queue_event(value.queue_slot, value.start_ns, 1, replaced);
    Some(())
}

/// Writes a command into its slot: `Some(0)` when the slot was idle (claimed by an atomic
/// compare-and-exchange of its start time, so two setups of one index on two CPUs cannot both
/// take it), `Some(start)` when it was already its key's (the start time of the command replaced,
/// whose completion was lost); `None` when the slot holds another command in flight (counted).
///
/// The compare-and-exchange came with Linux 5.12, and 5.10's verifier refuses a program holding
/// one even where it cannot run: only the request-keyed programs use the slots (they need
/// nvme_core's BTF, which 5.10 kernels lack); the classic ones, every kernel's fallback, keep to
/// the LRU maps.
#[inline(always)]
pub(crate) fn claim(key: u64, value: &Inflight) -> Option<u64> {
    let slots = slot_layout();
    let slot = INFLIGHT_SLOTS.get_ptr_mut(slots.inflight_index(key))?;
    let mine = SlotLayout::slot_key(key);
    // SAFETY: slot points into the array's value. Only the setup that claimed a slot, and then
    // its key's completion, write it; another setup that finds it taken only reads `key` (at
    // worst before the claimer wrote it: then it is 0, no key's, and it goes to the LRU map).
    unsafe {
        let start = &mut (*slot).inflight.start_ns;
        let replaced = match compare_exchange(start, 0, value.start_ns) {
            0 => 0,
            old if (*slot).key == mine => old,
            _ => {
                count(ProgramCounter::InflightCollision);
                return None;
            }
        };
        (*slot).key = mine;
        (*slot).inflight = *value;
        Some(replaced)
    }
}

/// The command in `key`'s slot, if it is there: the slot is then freed, its key cleared before
/// its start time (the release, atomic: a setup may claim it from then on).
#[inline(always)]
pub(crate) fn release(key: u64) -> Option<Inflight> {
    let slots = slot_layout();
    let slot = INFLIGHT_SLOTS.get_ptr_mut(slots.inflight_index(key))?;
    // SAFETY: as in `claim`: a slot holding this key is written by this key's setup and
    // completion only, which do not overlap.
    unsafe {
        let started = (*slot).inflight;
        if started.start_ns == 0 || (*slot).key != SlotLayout::slot_key(key) {
            return None;
        }
        (*slot).key = 0;
        compare_exchange(&mut (*slot).inflight.start_ns, started.start_ns, 0);
        Some(started)
    }
}

/// Records a command in an in-flight LRU map; the start time of one it replaced, whose
/// completion was lost, or 0.
#[inline(always)]
pub(crate) fn begin_lru<K>(
    map: &LruHashMap<K, Inflight>,
    key: &K,
    value: &Inflight,
) -> Option<u64> {
    match map.get_ptr_mut(key) {
        Some(p) => {
            // SAFETY: p points into the map's value for key; only this key's setup and completion
            // write it, and they do not overlap (the key serves one command at a time).
            unsafe {
                let replaced = (*p).start_ns;
                *p = *value;
                Some(replaced)
            }
        }
        None => {
            count(ProgramCounter::InflightNewKey);
            if map.insert(key, value, 0).is_err() {
                count(ProgramCounter::InflightFull);
                return None;
            }
            Some(0)
        }
    }
}

/// The in-flight value of `key` (its slot's, else `lru_key`'s in `lru`), marked idle; `None`
/// when no setup of it is pending.
#[inline(always)]
pub(crate) fn end<K>(
    key: Option<u64>,
    lru: &LruHashMap<K, Inflight>,
    lru_key: &K,
) -> Option<Inflight> {
    if let Some(started) = key.and_then(release) {
        return Some(started);
    }
    let p = lru.get_ptr_mut(lru_key)?;
    // SAFETY: as in `begin_lru`.
    unsafe {
        if (*p).start_ns == 0 {
            return None;
        }
        let started = *p;
        (*p).start_ns = 0;
        Some(started)
    }
}
