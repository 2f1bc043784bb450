//! The maps' sizing to the node: the arrays' bounds (possible CPUs, the controllers present), the
//! request-keyed in-flight map's capacity, and `nvme_core`'s command timeouts.

/// `nvme_core`'s command timeouts (module parameters, in seconds), for the `timeout` kind of
/// connection errors. A parameter that cannot be read turns that half off (0). Queues created
/// after a change of the parameter use the new value; the programs keep the one read at start.
pub fn command_timeouts(sysfs_root: &std::path::Path) -> nvmeof_common::ErrorTimeouts {
    let secs = |name: &str| -> u64 {
        let path = sysfs_root.join("module/nvme_core/parameters").join(name);
        crate::sysfs::read_trim(&path)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    nvmeof_common::ErrorTimeouts {
        io_ns: secs("io_timeout").saturating_mul(1_000_000_000),
        admin_ns: secs("admin_timeout").saturating_mul(1_000_000_000),
    }
}

/// The `--ebpf.max-controllers`, `--ebpf.max-queues` and `--ebpf.max-inflight` flags: the io
/// tracer's maps sized past what the node shows at start (controllers that connect later, more
/// queues); 0 leaves each to the sizing's own choice ([`slot_layout`], [`inflight_capacity`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapLimits {
    pub max_controllers: u32,
    pub max_queues: u32,
    pub max_inflight: u32,
}

/// Most slots `INFLIGHT_SLOTS` is given (262144 × 40 bytes: 10 MiB).
pub const INFLIGHT_CAPACITY_MAX: u32 = 1 << 18;

/// The in-flight array's slots: one per request struct of the controllers present at start
/// (each has `queue_count × (sqsize + 1)`: the blk-mq tags of its queues; at a low queue depth
/// only some of them carry commands, at a high one all can), rounded up to a power of two, at
/// least [`nvmeof_common::INFLIGHT_CAPACITY`] (room for controllers that connect later), at most
/// [`INFLIGHT_CAPACITY_MAX`]. Commands in flight share the slots by a hash of their keys: with
/// `n` in flight among `m` slots about `n / 2m` of them find theirs taken and go to an LRU map
/// (`inflight_collision`), which costs a hash lookup at each end but loses nothing.
pub fn inflight_capacity(sysfs_root: &std::path::Path) -> u32 {
    let requests: u64 = crate::sysfs::controller::controllers(sysfs_root)
        .map(|p| {
            p.items
                .iter()
                .map(|c| {
                    u64::from(c.queue_count.unwrap_or(1)) * (u64::from(c.sqsize.unwrap_or(0)) + 1)
                })
                .sum()
        })
        .unwrap_or(0);
    requests
        .max(u64::from(nvmeof_common::INFLIGHT_CAPACITY))
        .next_power_of_two()
        .min(u64::from(INFLIGHT_CAPACITY_MAX)) as u32
}

/// The node's possible CPUs (`devices/system/cpu/possible`, a list such as `0-255` or `0,2-5`):
/// nvme-tcp and nvme-rdma open one I/O queue per CPU unless told otherwise.
pub fn possible_cpus(sysfs_root: &std::path::Path) -> Option<u32> {
    let text = crate::sysfs::read_trim(&sysfs_root.join("devices/system/cpu/possible"))?;
    let mut n = 0u32;
    // A sane bound on what a sysfs file may claim, whatever it says.
    for part in text.trim().split(',').filter(|p| !p.is_empty()).take(4096) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        n = n.checked_add(hi.checked_sub(lo)?.checked_add(1)?)?;
    }
    (n > 0).then_some(n.min(1 << 16))
}

/// The most `OPS` may take when the node sizes it (no flag): 128 MiB, which holds 32
/// controllers of 1024 queues, or 142 of 257. An odd sysfs (an instance or a queue count no node
/// has) must not make the agent ask the kernel for gigabytes.
pub const AUTO_STATS_BUDGET: u64 = 128 << 20;

/// Linux's largest `CONFIG_NR_CPUS`: a `possible` list claiming more is not a real node's.
const MAX_CPUS: u32 = 8192;

/// The bounds of the `QUEUES` and `OPS` arrays: controller instances 0 .. `controllers` and
/// queue ids 0 .. `queues`.
/// - Queues: `max_queues`, or (0) the possible CPUs plus the admin queue, or the most any present
///   controller has if that is more, up to three per CPU plus the admin queue (I/O, write and
///   poll queues, each at most one per CPU).
/// - Controllers: `max_controllers`, or (0) twice the highest instance present plus one, at least
///   16 (the kernel hands instances out lowest-free, so they stay below the most controllers the
///   node has at once), as many as [`AUTO_STATS_BUDGET`] holds at that many queues.
///
/// A command past either bound is counted (`slot_out_of_range`) and not timed.
pub fn slot_layout(
    sysfs_root: &std::path::Path,
    max_controllers: u32,
    max_queues: u32,
) -> nvmeof_common::SlotLayout {
    let present = crate::sysfs::controller::controllers(sysfs_root)
        .map(|p| p.items)
        .unwrap_or_default();
    let cpus = possible_cpus(sysfs_root).unwrap_or(1).min(MAX_CPUS);
    let queues = match max_queues {
        0 => present
            .iter()
            .filter_map(|c| c.queue_count)
            .max()
            .unwrap_or(0)
            .min(3 * cpus + 1)
            .max(cpus + 1),
        n => n.min(1 << 16),
    };
    let controllers = match max_controllers {
        0 => {
            let wanted = present
                .iter()
                .map(|c| 2 * (c.instance.min(2047) + 1))
                .max()
                .unwrap_or(0)
                .max(16);
            let per = u64::from(nvmeof_common::SlotLayout::new(1, queues).stats_slots())
                * std::mem::size_of::<nvmeof_common::OpStats>() as u64;
            let fits = (AUTO_STATS_BUDGET / per.max(1)).max(1) as u32;
            if wanted > fits {
                log::warn!(
                    "eBPF: arrays for {fits} controllers of {queues} queues, not {wanted}: more \
                     would pass {AUTO_STATS_BUDGET} bytes; --ebpf.max-controllers sets it"
                );
            }
            wanted.min(fits)
        }
        n => n,
    };
    nvmeof_common::SlotLayout::new(controllers, queues)
}
