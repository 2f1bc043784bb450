//! The counting maps' sizes and what they could not count (`nvmeof_common::count_maps`): each
//! tracer sizes its counting maps with [`size`] before load, reads its object's `MAP_FULL` with
//! [`read`], and reports the first event each full map lost with [`FullLog`], once.
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray};
use aya::{Ebpf, EbpfLoader};
use nvmeof_common::count_maps::{CountMap, COUNT_MAPS, MAP_FULL};

/// Per [`CountMap`] slot, the events it could not count.
pub type MapFull = [u64; COUNT_MAPS as usize];

/// The entries a counting map gets: `entries` (`--ebpf.count-map-entries`) or, at 0, the
/// object's own.
pub fn capacity(map: CountMap, entries: u32) -> u32 {
    if entries == 0 {
        map.default_capacity()
    } else {
        entries
    }
}

/// Sizes `maps` (the object's counting maps) to `entries`; 0 keeps the object's sizes.
pub fn size(loader: &mut EbpfLoader, maps: &[CountMap], entries: u32) {
    if entries == 0 {
        return;
    }
    for m in maps {
        loader.map_max_entries(m.name(), entries);
    }
}

/// Sums each slot of the per-CPU array `name` over the CPUs.
pub fn per_cpu_sums<const N: usize>(ebpf: &Ebpf, name: &str) -> anyhow::Result<[u64; N]> {
    let map = ebpf
        .map(name)
        .with_context(|| format!("map {name} missing from the object"))?;
    let array: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map).with_context(|| format!("map {name}"))?;
    let mut sums = [0u64; N];
    for (i, sum) in sums.iter_mut().enumerate() {
        let per_cpu = array
            .get(&(i as u32), 0)
            .with_context(|| format!("reading map {name}"))?;
        *sum = per_cpu.iter().fold(0u64, |a, v| a.wrapping_add(*v));
    }
    Ok(sums)
}

/// The object's `MAP_FULL`, summed over the CPUs.
pub fn read(ebpf: &Ebpf) -> anyhow::Result<MapFull> {
    per_cpu_sums(ebpf, MAP_FULL)
}

/// Logs, once per map, that a counting map was full, with what it lost and what fixes it.
#[derive(Debug, Default)]
pub struct FullLog {
    told: [AtomicBool; COUNT_MAPS as usize],
}

impl FullLog {
    /// Logs each of `maps` that `full` says lost events and was not logged before. `entries` is
    /// `--ebpf.count-map-entries`, for the map's size in the message.
    pub fn observe(&self, full: &MapFull, maps: &[CountMap], entries: u32) {
        for &m in maps {
            let lost = full[m as usize];
            if lost == 0 || self.told[m as usize].swap(true, Ordering::Relaxed) {
                continue;
            }
            log::warn!(
                "eBPF: map {} is full ({} entries): {}; {lost} so far. Raise \
                 --ebpf.count-map-entries (counted as nvmeof_exporter_*_map_full_total{{map=\"{}\"}})",
                m.name(),
                capacity(m, entries),
                m.loses(),
                m.name()
            );
        }
    }
}

/// The counts of `maps` in `full`, for a snapshot: (map name, events lost).
pub fn of(full: &MapFull, maps: &[CountMap]) -> Vec<(&'static str, u64)> {
    maps.iter().map(|&m| (m.name(), full[m as usize])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_the_flag_or_the_objects_own() {
        assert_eq!(capacity(CountMap::Statuses, 0), 1024);
        assert_eq!(capacity(CountMap::AnaTransitions, 0), 4096);
        assert_eq!(capacity(CountMap::Statuses, 7), 7);
    }

    #[test]
    fn only_the_objects_maps_are_reported() {
        let mut full = MapFull::default();
        full[CountMap::Transitions as usize] = 3;
        full[CountMap::AenEvents as usize] = 9;
        let maps = [CountMap::Transitions, CountMap::Reconnects];
        assert_eq!(of(&full, &maps), [("TRANSITIONS", 3), ("RECONNECTS", 0)]);
        let log = FullLog::default();
        log.observe(&full, &maps, 0);
        assert!(log.told[CountMap::Transitions as usize].load(Ordering::Relaxed));
        assert!(!log.told[CountMap::AenEvents as usize].load(Ordering::Relaxed));
        assert!(!log.told[CountMap::Reconnects as usize].load(Ordering::Relaxed));
    }
}
