//! What the benchmark object (`nvmeof-bench`, `nvmeof-ebpf/src/bench.rs`) and the benchmark
//! example (`nvmeof-agent/examples/ebpf_bench.rs`) share: program and map names, the minimal
//! tracer's bounds. The agent's own object has none of
//! these programs; it never loads this one.

/// Names of the programs in the benchmark object. Unless said otherwise each goes on both nvme
/// tracepoints.
pub mod programs {
    object_names! {
        /// Classic tracepoints: nothing, and one clock read per event.
        BENCH_TP_EMPTY: bench_tp_empty,
        BENCH_TP_CLOCK: bench_tp_clock,
        /// The clock read plus one BPF atomic add to a shared array slot.
        BENCH_TP_ATOMIC: bench_tp_atomic,
        /// The same two on raw tracepoints.
        BENCH_RAW_EMPTY: bench_raw_empty,
        BENCH_RAW_CLOCK: bench_raw_clock,
        /// The raw clock read plus one hash-map lookup that hits, or plus one read of the request.
        BENCH_RAW_HASH: bench_raw_hash,
        BENCH_RAW_PROBE: bench_raw_probe,
        /// The raw clock read plus an insert and a delete in a hash map keyed by the request.
        BENCH_RAW_INFLIGHT: bench_raw_inflight,
        /// The raw clock read plus a lookup and a store in an LRU hash keyed by the request.
        BENCH_RAW_LRU: bench_raw_lru,
        /// Empty and clock on tp_btf, and the clock read plus one plain load of the request.
        BENCH_BTF_EMPTY: bench_btf_empty,
        BENCH_BTF_CLOCK: bench_btf_clock,
        BENCH_BTF_LOAD: bench_btf_load,
        /// The minimal latency tracer, one pair per hook type: the setup program on
        /// `nvme_setup_cmd`, the completion program on `nvme_complete_rq`.
        MIN_TP_SETUP: bench_min_tp_setup,
        MIN_TP_COMPLETE: bench_min_tp_complete,
        MIN_RAW_SETUP: bench_min_raw_setup,
        MIN_RAW_COMPLETE: bench_min_raw_complete,
        MIN_BTF_SETUP: bench_min_btf_setup,
        MIN_BTF_COMPLETE: bench_min_btf_complete,
    }
}

/// Names of the minimal tracer's maps.
pub mod maps {
    object_names! {
        /// Start times, `u64` ns, by [`super::min_slot`]; 0 when no command is pending there.
        MIN_START,
        /// Completed commands by log2 of their latency in ns, per CPU:
        /// [`super::MIN_BUCKET_COUNT`] `u64`.
        MIN_BUCKETS,
    }
}

/// The minimal tracer's bounds: controller instances, queue ids per controller, tags per queue.
/// A command beyond them is not timed (the lab's controllers, queues and tags are far below).
pub const MIN_CTRLS: u32 = 16;
pub const MIN_QUEUES: u32 = 64;
pub const MIN_TAGS: u32 = 256;
/// Slots of `MIN_START`: 2 MiB of `u64`.
pub const MIN_SLOTS: u32 = MIN_CTRLS * MIN_QUEUES * MIN_TAGS;
/// log2 buckets: bucket `b` holds latencies in `[2^(b-1), 2^b)` ns (0 for 0).
pub const MIN_BUCKET_COUNT: u32 = 64;

/// The start-time slot of a command: (controller instance × [`MIN_QUEUES`] + queue id) ×
/// [`MIN_TAGS`] + tag, or `None` beyond the bounds.
#[inline(always)]
pub fn min_slot(ctrl: u32, qid: u32, tag: u32) -> Option<u32> {
    if ctrl >= MIN_CTRLS || qid >= MIN_QUEUES || tag >= MIN_TAGS {
        return None;
    }
    Some((ctrl * MIN_QUEUES + qid) * MIN_TAGS + tag)
}

/// The log2 bucket of a latency: the number of significant bits, at most `MIN_BUCKET_COUNT - 1`.
#[inline(always)]
pub fn min_bucket(ns: u64) -> u32 {
    (64 - ns.leading_zeros()).min(MIN_BUCKET_COUNT - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_distinct_and_bounded() {
        assert_eq!(min_slot(0, 0, 0), Some(0));
        assert_eq!(min_slot(0, 1, 0), Some(MIN_TAGS));
        assert_eq!(min_slot(1, 0, 0), Some(MIN_QUEUES * MIN_TAGS));
        assert_eq!(
            min_slot(MIN_CTRLS - 1, MIN_QUEUES - 1, MIN_TAGS - 1),
            Some(MIN_SLOTS - 1)
        );
        assert_eq!(min_slot(MIN_CTRLS, 0, 0), None);
        assert_eq!(min_slot(0, MIN_QUEUES, 0), None);
        assert_eq!(min_slot(0, 0, MIN_TAGS), None);
    }

    #[test]
    fn buckets_are_log2() {
        assert_eq!(min_bucket(0), 0);
        assert_eq!(min_bucket(1), 1);
        assert_eq!(min_bucket(1023), 10);
        assert_eq!(min_bucket(1024), 11);
        assert_eq!(min_bucket(u64::MAX), MIN_BUCKET_COUNT - 1);
    }
}
