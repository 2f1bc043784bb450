//! Latency buckets: the classic bounds, and the deltas of cumulative kernel counts.
use nvmeof_common::latency::{slot_native_index, OVERFLOW_SLOT};
use nvmeof_common::LATENCY_BUCKETS;

/// The powers of two of a second that bound the classic buckets (plus `+Inf`): 2^-17 s
/// (7.6 µs, below any fabric's round trip) to 2^5 s (32 s, past nvme_core's default I/O
/// timeout). Each is a native bucket boundary (index 16·e), so a classic bucket is an exact sum
/// of kernel buckets.
pub const CLASSIC_EXPONENTS: std::ops::RangeInclusive<i32> = -17..=5;
/// Classic buckets including `+Inf`.
pub const CLASSIC_SLOTS: usize = 24;

/// The classic upper bounds in seconds, ascending (without `+Inf`).
pub fn classic_bounds_seconds() -> impl Iterator<Item = f64> {
    CLASSIC_EXPONENTS.map(|e| nvmeof_common::latency::native_upper_seconds(16 * e))
}

/// Delta of a cumulative u64 counter; a smaller value means the counter restarted from zero.
pub fn delta_u64(prev: u64, cur: u64) -> u64 {
    if cur >= prev {
        cur - prev
    } else {
        cur
    }
}

/// Delta of a u32 bucket count, modulo 2^32.
pub fn delta_u32(prev: u32, cur: u32) -> u32 {
    cur.wrapping_sub(prev)
}

/// The classic bucket (index into [`classic_bounds_seconds`], or the last slot for `+Inf`) of a
/// kernel bucket: the first bound at or above all of it.
pub fn classic_slot(bucket: usize) -> usize {
    match slot_native_index(bucket) {
        // Native bucket i is at or under 2^e s exactly when i ≤ 16·e.
        Some(i) => CLASSIC_EXPONENTS
            .clone()
            .position(|e| i <= 16 * e)
            .unwrap_or(CLASSIC_SLOTS - 1),
        None if bucket == OVERFLOW_SLOT => CLASSIC_SLOTS - 1,
        None => 0,
    }
}

/// Calls `f(bucket, delta)` for every bucket whose count moved from `prev` to `cur`, ascending
/// by bucket, and leaves `prev` equal to `cur`. Compares 8 buckets (32 bytes) at a time and
/// touches only the chunks that moved: a drain interval of I/O moves a few dozen of the 450.
#[inline]
pub fn take_bucket_deltas(
    prev: &mut [u32; LATENCY_BUCKETS],
    cur: &[u32; LATENCY_BUCKETS],
    mut f: impl FnMut(u16, u32),
) {
    const CHUNK: usize = 8;
    let (p_chunks, p_rest) = prev.as_chunks_mut::<CHUNK>();
    let (c_chunks, c_rest) = cur.as_chunks::<CHUNK>();
    for (n, (p, c)) in p_chunks.iter_mut().zip(c_chunks).enumerate() {
        if p == c {
            continue;
        }
        for i in 0..CHUNK {
            let d = delta_u32(p[i], c[i]);
            if d != 0 {
                f((n * CHUNK + i) as u16, d);
            }
        }
        *p = *c;
    }
    let base = p_chunks.len() * CHUNK;
    for (i, (p, &c)) in p_rest.iter_mut().zip(c_rest).enumerate() {
        let d = delta_u32(*p, c);
        if d != 0 {
            f((base + i) as u16, d);
        }
        *p = c;
    }
}

/// Non-zero bucket deltas between two raw histograms, ascending by bucket.
pub fn bucket_deltas(
    prev: Option<&[u32; LATENCY_BUCKETS]>,
    cur: &[u32; LATENCY_BUCKETS],
) -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    let mut prev = prev.copied().unwrap_or([0; LATENCY_BUCKETS]);
    take_bucket_deltas(&mut prev, cur, |b, d| out.push((b, d as u64)));
    out
}

/// Adds `delta` to `bucket` of a series' buckets (ascending by bucket, zero counts left out),
/// searching from `*from` on: deltas come ascending, so each search starts where the last ended.
#[inline]
pub(super) fn add_to_bucket(
    buckets: &mut Vec<(u16, u64)>,
    from: &mut usize,
    bucket: u16,
    delta: u64,
) {
    // Linear: a drain's deltas are a few buckets apart, closer than a binary search converges.
    let mut at = *from;
    while buckets.get(at).is_some_and(|&(b, _)| b < bucket) {
        at += 1;
    }
    match buckets.get_mut(at) {
        Some((b, c)) if *b == bucket => *c += delta,
        _ => buckets.insert(at, (bucket, delta)),
    }
    *from = at;
}

/// Looks values up in a list ascending by key, for keys that mostly come in the same order:
/// each is tried at the place after the last one found before a binary search.
pub(super) struct Cursor<'a, K, V> {
    list: &'a [(K, V)],
    next: usize,
}

impl<'a, K: Ord, V: Copy> Cursor<'a, K, V> {
    pub(super) fn new(list: &'a [(K, V)]) -> Self {
        Cursor { list, next: 0 }
    }

    pub(super) fn find(&mut self, key: &K) -> Option<V> {
        let at = match self.list.get(self.next) {
            Some((k, _)) if k == key => self.next,
            _ => self.list.binary_search_by(|(k, _)| k.cmp(key)).ok()?,
        };
        self.next = at + 1;
        Some(self.list[at].1)
    }
}
