//! The kernel's counting maps: hash maps that count events by key, an entry made on a key's
//! first event. A full map refuses a new key, and that event would go uncounted without a
//! trace; so each object also keeps [`MAP_FULL`], a per-CPU array indexed by [`CountMap`], where
//! a program counts each event it could not count for that reason. The agent sums it, exports it
//! per map and logs the first of each map once, naming `--ebpf.count-map-entries`.

/// Name of the per-CPU array, in each object with counting maps: index [`CountMap`] → `u64`.
pub const MAP_FULL: &str = "MAP_FULL";

crate::indexed_enum! {
    /// The counting maps of all objects (each object's `MAP_FULL` has a slot for every one, and
    /// uses its own).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    pub enum CountMap: u32 {
        /// `STATUSES` (io object): error completions by (controller, status, opcode class).
        Statuses,
        /// `CONN_ERRORS` (io object): error completions by (controller, kind).
        ConnErrors,
        /// `TRANSITIONS` (state object): by (controller, from, to).
        Transitions,
        /// `RECONNECTS` (state object): per controller.
        Reconnects,
        /// `AEN_EVENTS` (AEN object): by (controller, result).
        AenEvents,
        /// `ANA_TRANSITIONS` (AEN object): by (path, from, to).
        AnaTransitions,
        /// `CONNECT_FAILURES` (state object): by (subsystem, queue, reason).
        ConnectFailures,
    }
}

/// Slots of each object's `MAP_FULL`.
pub const COUNT_MAPS: u32 = CountMap::COUNT as u32;

impl CountMap {
    /// The counting maps of the io object (`nvmeof`).
    pub const IO: [CountMap; 2] = [CountMap::Statuses, CountMap::ConnErrors];
    /// Those of the state object (`nvmeof-state`).
    pub const STATE: [CountMap; 3] = [
        CountMap::Transitions,
        CountMap::Reconnects,
        CountMap::ConnectFailures,
    ];
    /// Those of the AEN object (`nvmeof-aen`).
    pub const AEN: [CountMap; 2] = [CountMap::AenEvents, CountMap::AnaTransitions];

    /// The map's name in its object (and the `map` label the agent exports).
    pub const fn name(self) -> &'static str {
        match self {
            CountMap::Statuses => crate::maps::STATUSES,
            CountMap::ConnErrors => crate::maps::CONN_ERRORS,
            CountMap::Transitions => crate::state::maps::TRANSITIONS,
            CountMap::Reconnects => crate::state::maps::RECONNECTS,
            CountMap::AenEvents => crate::aen::maps::AEN_EVENTS,
            CountMap::AnaTransitions => crate::aen::maps::ANA_TRANSITIONS,
            CountMap::ConnectFailures => crate::state::maps::CONNECT_FAILURES,
        }
    }

    /// The entries the object declares, which the agent keeps unless told otherwise.
    pub const fn default_capacity(self) -> u32 {
        match self {
            CountMap::Statuses => crate::STATUSES_CAPACITY,
            CountMap::ConnErrors => crate::CONN_ERRORS_CAPACITY,
            CountMap::Transitions => crate::state::TRANSITIONS_CAPACITY,
            CountMap::Reconnects => crate::state::RECONNECTS_CAPACITY,
            CountMap::AenEvents => crate::aen::AEN_CAPACITY,
            CountMap::AnaTransitions => crate::aen::ANA_CAPACITY,
            CountMap::ConnectFailures => crate::state::CONNECT_FAILURES_CAPACITY,
        }
    }

    /// What goes uncounted while the map is full (for the agent's log).
    pub const fn loses(self) -> &'static str {
        match self {
            CountMap::Statuses => {
                "error completions of a new (controller, status) pair are not counted by status"
            }
            CountMap::ConnErrors => {
                "error completions of a new (controller, kind) pair are not counted by kind"
            }
            CountMap::Transitions => {
                "state transitions of a new (controller, from, to) triple are not counted"
            }
            CountMap::Reconnects => "reconnect attempts of a new controller are not counted",
            CountMap::AenEvents => {
                "asynchronous events of a new (controller, result) pair are not counted"
            }
            CountMap::AnaTransitions => {
                "ANA transitions of a new (path, from, to) triple are not counted"
            }
            CountMap::ConnectFailures => {
                "failed connects of a new (subsystem, queue, reason) triple are not counted"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_indices_and_names_are_unique() {
        for (i, m) in CountMap::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i);
        }
        for a in CountMap::ALL {
            let same = CountMap::ALL
                .iter()
                .filter(|b| b.name() == a.name())
                .count();
            assert_eq!(same, 1, "{a:?}");
        }
    }
}
