//! The model against raw map contents built by hand: deltas, buckets, series and views.
use nvmeof_common::latency::OVERFLOW_SLOT;
use nvmeof_common::{latency_bucket, ProgramCounter, LATENCY_BUCKETS};

use super::*;

fn op_key(ctrl_id: u32, qid: u16, class: OpClass) -> OpKey {
    OpKey {
        ctrl_id,
        qid,
        opclass: class as u8,
        _pad: 0,
    }
}

/// Raw stats holding the given latencies (ns), each moving `bytes`.
fn stats(latencies: &[u64], bytes: u64) -> OpStats {
    let mut s = OpStats::default();
    for &l in latencies {
        s.bytes += bytes;
        s.latency_sum_ns += l;
        s.buckets[latency_bucket(l)] += 1;
    }
    s
}

#[test]
fn deltas_wrap_and_reset() {
    assert_eq!(delta_u64(10, 15), 5);
    assert_eq!(delta_u64(10, 3), 3);
    assert_eq!(delta_u32(u32::MAX - 1, 3), 5);
    assert_eq!(delta_u32(7, 7), 0);
}

#[test]
fn bucket_deltas_are_sparse_and_wrap() {
    let mut prev = [0u32; LATENCY_BUCKETS];
    let mut cur = [0u32; LATENCY_BUCKETS];
    prev[5] = u32::MAX;
    cur[5] = 1;
    cur[9] = 4;
    assert_eq!(bucket_deltas(Some(&prev), &cur), vec![(5, 2), (9, 4)]);
    assert_eq!(bucket_deltas(None, &cur), vec![(5, 1), (9, 4)]);
}

#[test]
fn classic_slots_are_powers_of_two_of_a_second() {
    let bounds: Vec<f64> = classic_bounds_seconds().collect();
    assert_eq!(bounds.len() + 1, CLASSIC_SLOTS);
    assert_eq!(bounds[0], 1.0 / 131072.0);
    assert_eq!(bounds[17], 1.0);
    assert_eq!(bounds[22], 32.0);
    // 2^-17 s is 7629.39 ns: 7629 ns is at or under it, 7630 ns is not.
    assert_eq!(classic_slot(latency_bucket(7_629)), 0);
    assert_eq!(classic_slot(latency_bucket(7_630)), 1);
    // 100 µs ≤ 2^-13 s (122 µs); 200 µs ≤ 2^-12 s (244 µs); 1 ms ≤ 2^-9 s (1.95 ms).
    assert_eq!(classic_slot(latency_bucket(100_000)), 4);
    assert_eq!(classic_slot(latency_bucket(200_000)), 5);
    assert_eq!(classic_slot(latency_bucket(1_000_000)), 8);
    // 1 s is a bound and closes its bucket; 32 s too; past it only +Inf.
    assert_eq!(classic_slot(latency_bucket(1_000_000_000)), 17);
    assert_eq!(classic_slot(latency_bucket(1_000_000_001)), 18);
    assert_eq!(classic_slot(latency_bucket(32_000_000_000)), 22);
    assert_eq!(classic_slot(latency_bucket(32_000_000_001)), 23);
    assert_eq!(classic_slot(OVERFLOW_SLOT), CLASSIC_SLOTS - 1);
    assert_eq!(classic_slot(0), 0);
}

#[test]
fn native_buckets_are_the_kernel_slots() {
    let mut s = stats(&[500, 100_000, 100_000, 1_000_000_000, 300_000_000_000], 0);
    s.buckets[latency_bucket(2_000)] += 2;
    let mut m = Model::new();
    let v = m.apply(RawMaps {
        ops: vec![(op_key(0, 1, OpClass::Read), s)],
        ..Default::default()
    });
    let (zero, positive) = v.ops[0].native_buckets();
    assert_eq!(zero, 1);
    // ceil(16·log2(t / 1 s)): 2 µs → -302, 100 µs → -212, 1 s → 0, over 256 s → 129.
    assert_eq!(positive, vec![(-302, 2), (-212, 2), (0, 1), (129, 1)]);
    let classic = v.ops[0].classic_cumulative();
    assert_eq!((classic[0], classic[4], classic[17]), (3, 5, 6));
    assert_eq!((classic[22], classic[23]), (6, 7));
}

/// The model keeps each queue; a scrape that shows a controller per controller gets its
/// queues summed, every figure and bucket an exact sum.
#[test]
fn queues_sum_per_controller_and_take_deltas() {
    let mut m = Model::new();
    let k1 = op_key(0, 1, OpClass::Read);
    let k2 = op_key(0, 2, OpClass::Read);
    let raw = RawMaps {
        ops: vec![
            (k1, stats(&[100_000; 3], 4096)),
            (k2, stats(&[200_000], 4096)),
        ],
        ..Default::default()
    };
    let v = m.apply(raw);
    let per_queue: Vec<(Option<u16>, u64)> =
        v.ops.iter().map(|o| (o.key.qid, o.commands)).collect();
    assert_eq!(per_queue, vec![(Some(1), 3), (Some(2), 1)]);
    assert_eq!(v.ops_at(|_| true).len(), 2);
    let summed = v.ops_at(|_| false);
    assert_eq!(summed.len(), 1);
    let o = &summed[0];
    assert_eq!(
        o.key,
        SeriesKey {
            ctrl_id: 0,
            qid: None,
            class: OpClass::Read
        }
    );
    assert_eq!((o.commands, o.bytes, o.latency_sum_ns), (4, 16384, 500_000));
    // 100 µs is under 2^-13 s (slot 4), 200 µs under 2^-12 s (slot 5).
    let classic = o.classic_cumulative();
    assert_eq!(&classic[3..7], &[0, 3, 4, 4]);
    assert_eq!(classic[CLASSIC_SLOTS - 1], 4);

    // Second drain: queue 1 gets 2 more commands at 1 ms.
    let mut s1 = stats(&[100_000; 3], 4096);
    let more = stats(&[1_000_000; 2], 4096);
    s1.bytes += more.bytes;
    s1.latency_sum_ns += more.latency_sum_ns;
    s1.buckets[latency_bucket(1_000_000)] += 2;
    let v = m.apply(RawMaps {
        ops: vec![(k1, s1), (k2, stats(&[200_000], 4096))],
        ..Default::default()
    });
    let summed = v.ops_at(|_| false);
    let o = &summed[0];
    assert_eq!(
        (o.commands, o.bytes, o.latency_sum_ns),
        (6, 24576, 2_500_000)
    );
    assert_eq!(o.classic_cumulative()[CLASSIC_SLOTS - 1], 6);
    // Every kernel bucket's count since start, the queues added up.
    let b = |ns| latency_bucket(ns) as u16;
    let since_start = vec![(b(100_000), 3), (b(200_000), 1), (b(1_000_000), 2)];
    assert_eq!(o.buckets, since_start);

    // Third drain, nothing new: nothing moves.
    let v = m.apply(RawMaps {
        ops: vec![(k1, s1), (k2, stats(&[200_000], 4096))],
        ..Default::default()
    });
    let summed = v.ops_at(|_| false);
    assert_eq!(summed[0].buckets, since_start);
    assert_eq!(summed[0].commands, 6);

    // The controller goes away: its series go too.
    let v = m.apply(RawMaps::default());
    assert!(v.ops.is_empty());
}

/// One controller per queue, the other summed: the series come ascending by key, the sums
/// among the per-controller classes of their controller.
#[test]
fn a_scrape_chooses_the_controllers_it_shows_per_queue() {
    let mut m = Model::new();
    // (controller, queue, class, commands of 100 µs, bytes each)
    let ops = [
        (1, 0, OpClass::Flush, 1, 0),
        (1, 1, OpClass::Read, 1, 512),
        (1, 1, OpClass::Write, 1, 4096),
        (1, 2, OpClass::Read, 2, 512),
        (3, 0, OpClass::Admin, 1, 0),
        (3, 1, OpClass::Read, 1, 512),
        (3, 2, OpClass::Read, 1, 512),
    ];
    let v = m.apply(RawMaps {
        ops: (ops.iter())
            .map(|&(c, q, class, n, bytes)| (op_key(c, q, class), stats(&vec![100_000; n], bytes)))
            .collect(),
        queues: [(1, 1), (1, 2), (3, 0), (3, 1), (3, 2)]
            .map(|(ctrl_id, qid)| {
                let state = QueueState {
                    submitted: 5,
                    completed: 4,
                    busy_ns: 100 * u64::from(qid + 1),
                    last_event_ns: 0,
                    ..Default::default()
                };
                (
                    QueueKey {
                        ctrl_id,
                        qid,
                        _pad: 0,
                    },
                    state,
                )
            })
            .to_vec(),
        ..Default::default()
    });
    let ops: Vec<(u32, Option<u16>, OpClass, u64, u64)> = v
        .ops_at(|c| c == 3)
        .iter()
        .map(|o| (o.key.ctrl_id, o.key.qid, o.key.class, o.commands, o.bytes))
        .collect();
    assert_eq!(
        ops,
        vec![
            (1, None, OpClass::Read, 3, 1536),
            (1, None, OpClass::Write, 1, 4096),
            (1, None, OpClass::Flush, 1, 0),
            (3, None, OpClass::Admin, 1, 0),
            (3, Some(1), OpClass::Read, 1, 512),
            (3, Some(2), OpClass::Read, 1, 512),
        ]
    );
    let queues: Vec<(u32, Option<u16>, u64, u64)> = v
        .queues_at(|c| c == 3)
        .iter()
        .map(|(k, q)| (k.ctrl_id, k.qid, q.depth, q.busy_ns))
        .collect();
    assert_eq!(
        queues,
        vec![
            (1, None, 2, 500),
            (3, Some(0), 1, 100),
            (3, Some(1), 1, 200),
            (3, Some(2), 1, 300),
        ]
    );
    // Every controller per queue: the model's own series.
    assert_eq!(v.ops_at(|_| true).len(), v.ops.len());
    assert_eq!(v.queues_at(|_| true), v.queues);
}

/// Keys not re-read (their queue did not move) keep their series and their last value: the
/// next read takes its deltas from the value of the last read, however long ago.
#[test]
fn unread_keys_continue_from_their_last_read() {
    let mut m = Model::new();
    let k1 = op_key(0, 1, OpClass::Read);
    let k2 = op_key(0, 2, OpClass::Read);
    let first = stats(&[100_000; 2], 4096);
    m.apply(RawMaps {
        ops: vec![(k1, first), (k2, stats(&[50_000], 512))],
        ..Default::default()
    });
    // Two drains where queue 1 did not move; a key the model never saw is no series.
    for _ in 0..2 {
        let v = m.apply(RawMaps {
            ops: vec![(k2, stats(&[50_000], 512))],
            ops_unread: vec![k1, op_key(3, 1, OpClass::Write)],
            ..Default::default()
        });
        let got: Vec<(Option<u16>, u64, u64)> = v
            .ops
            .iter()
            .map(|o| (o.key.qid, o.commands, o.bytes))
            .collect();
        assert_eq!(got, vec![(Some(1), 2, 8192), (Some(2), 1, 512)]);
    }
    let mut more = first;
    more.bytes += 4096;
    more.latency_sum_ns += 1_000_000;
    more.buckets[latency_bucket(1_000_000)] += 1;
    let v = m.apply(RawMaps {
        ops: vec![(k1, more)],
        ops_unread: vec![k2],
        ..Default::default()
    });
    let o = &v.ops[0];
    assert_eq!(
        (o.commands, o.bytes, o.latency_sum_ns),
        (3, 12288, 1_200_000)
    );
    assert_eq!(v.inflight_ns, vec![(0, 1_250_000)]);
    // Neither read nor named: gone.
    let v = m.apply(RawMaps {
        ops_unread: vec![k2],
        ..Default::default()
    });
    assert_eq!(v.ops.len(), 1);
    assert_eq!(v.ops[0].key.qid, Some(2));
}

#[test]
fn model_per_queue_and_bucket_wrap() {
    let mut m = Model::new();
    let k = op_key(2, 3, OpClass::Write);
    let mut s = OpStats::default();
    let b = latency_bucket(50_000);
    s.buckets[b] = u32::MAX;
    m.apply(RawMaps {
        ops: vec![(k, s)],
        ..Default::default()
    });
    // Wrapped: 10 more. The commands follow the bucket, not the raw sum (9).
    s.buckets[b] = 9;
    let v = m.apply(RawMaps {
        ops: vec![(k, s)],
        ..Default::default()
    });
    let o = &v.ops[0];
    assert_eq!(o.key.qid, Some(3));
    assert_eq!(o.commands, u32::MAX as u64 + 10);
    assert_eq!(
        o.classic_cumulative()[CLASSIC_SLOTS - 1],
        u32::MAX as u64 + 10
    );
}

#[test]
fn per_queue_keeps_control_commands_per_controller() {
    let mut m = Model::new();
    let v = m.apply(RawMaps {
        ops: vec![
            (op_key(0, 0, OpClass::Admin), stats(&[30_000], 0)),
            (op_key(0, 0, OpClass::Fabrics), stats(&[20_000], 0)),
            (op_key(0, 1, OpClass::Fabrics), stats(&[40_000], 0)),
            (op_key(0, 1, OpClass::Read), stats(&[100_000; 2], 512)),
            // A flush, counted per controller by the kernel (queue 0 in its key).
            (op_key(0, 0, OpClass::Flush), stats(&[10_000], 0)),
        ],
        ..Default::default()
    });
    let keys: Vec<(Option<u16>, OpClass, u64)> = v
        .ops
        .iter()
        .map(|o| (o.key.qid, o.key.class, o.commands))
        .collect();
    assert_eq!(
        keys,
        vec![
            (None, OpClass::Flush, 1),
            (None, OpClass::Admin, 1),
            (None, OpClass::Fabrics, 2),
            (Some(1), OpClass::Read, 2),
        ]
    );
    // Per controller: the admin queue's 50 µs, queue 1's 240 µs, the flush's 10 µs.
    assert_eq!(v.inflight_ns, vec![(0, 300_000)]);
    assert_eq!(
        v.commands,
        vec![
            ((0, OpClass::Read), 2),
            ((0, OpClass::Flush), 1),
            ((0, OpClass::Admin), 1),
            ((0, OpClass::Fabrics), 2),
        ]
    );
}

#[test]
fn queues_statuses_and_counters() {
    let mut m = Model::new();
    let q = |qid, submitted, completed, busy_ns| {
        (
            QueueKey {
                ctrl_id: 1,
                qid,
                _pad: 0,
            },
            QueueState {
                submitted,
                completed,
                busy_ns,
                last_event_ns: 0,
                ..Default::default()
            },
        )
    };
    let sk = StatusKey {
        ctrl_id: 1,
        status: 0x371,
        opclass: 0,
        _pad: 0,
    };
    let mut counters = [0; PROGRAM_COUNTERS as usize];
    counters[0] = 5;
    let v = m.apply(RawMaps {
        queues: vec![q(0, 10, 10, 100), q(1, 50, 47, 1_000), q(2, 9, 8, 2_000)],
        statuses: vec![(sk, 2)],
        counters,
        ..Default::default()
    });
    let key = QueueSeriesKey {
        ctrl_id: 1,
        qid: None,
    };
    assert_eq!(
        v.queues_at(|_| false),
        vec![(
            key,
            QueueView {
                depth: 4,
                busy_ns: 3_100
            }
        )]
    );
    assert_eq!(v.io_queues, vec![(1, 2)]);
    assert_eq!(v.statuses, vec![(sk, 2)]);
    assert_eq!(v.counters[0], 5);
    // 69 submitted; 65 completed, of which 5 were lost commands that a setup replaced.
    let events = |setups, completions| Events {
        setups,
        completions,
    };
    assert_eq!(v.events, events(69, 60));
    counters[0] = 7;
    counters[ProgramCounter::SlotOutOfRange as usize] = 3;
    counters[ProgramCounter::CompletionUnmatched as usize] = 1;
    let v = m.apply(RawMaps {
        queues: vec![q(0, 10, 10, 100), q(1, 50, 50, 1_500), q(2, 9, 9, 2_000)],
        statuses: vec![(sk, 5)],
        counters,
        ..Default::default()
    });
    assert_eq!(
        v.queues_at(|_| false),
        vec![(
            key,
            QueueView {
                depth: 0,
                busy_ns: 3_600
            }
        )]
    );
    assert_eq!(v.statuses, vec![(sk, 5)]);
    // 3 setups past the arrays' bounds; 4 completed, 2 of them replaced, 1 unmatched.
    assert_eq!(v.events, events(72, 63));
    assert_eq!(v.counters[0], 7);
}

/// Queues in any order, one gone: each queue's busy time continues from its own last value,
/// and a series without queues goes.
#[test]
fn queue_series_follow_their_keys_in_any_order() {
    let mut m = Model::new();
    let q = |ctrl_id, qid, busy_ns| {
        (
            QueueKey {
                ctrl_id,
                qid,
                _pad: 0,
            },
            QueueState {
                submitted: 3,
                completed: 1,
                busy_ns,
                last_event_ns: 0,
                ..Default::default()
            },
        )
    };
    // One scrape of these raw queues: each series as (controller, queue, depth, busy ns).
    let mut series = |queues| -> Vec<(u32, Option<u16>, u64, u64)> {
        let v = m.apply(RawMaps {
            queues,
            ..Default::default()
        });
        v.queues
            .iter()
            .map(|(k, q)| (k.ctrl_id, k.qid, q.depth, q.busy_ns))
            .collect()
    };
    assert_eq!(
        series(vec![q(1, 2, 100), q(0, 1, 10), q(1, 1, 1_000)]),
        vec![
            (0, Some(1), 2, 10),
            (1, Some(1), 2, 1_000),
            (1, Some(2), 2, 100)
        ]
    );
    assert_eq!(
        series(vec![q(1, 1, 1_500), q(1, 2, 150)]),
        vec![(1, Some(1), 2, 1_500), (1, Some(2), 2, 150)]
    );
    // Queue 0/1 is back: it starts from its new raw value, its old series was dropped.
    assert_eq!(
        series(vec![q(1, 2, 160), q(0, 1, 30), q(1, 1, 1_500)]),
        vec![
            (0, Some(1), 2, 30),
            (1, Some(1), 2, 1_500),
            (1, Some(2), 2, 160)
        ]
    );
}
