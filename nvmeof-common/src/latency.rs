//! Latency buckets that are Prometheus native-histogram buckets, so the agent re-buckets nothing.
//!
//! Schema [`NATIVE_SCHEMA`] (4): bucket `i` holds the latencies `v` (in seconds) with
//! `2^((i-1)/16) < v ≤ 2^(i/16)`: 16 buckets per power of two, each 2^(1/16) ≈ 1.044 times as
//! wide as the one before, so a value read at a bucket's middle is within 2.2 % of any latency
//! in it. The kernel counts into a dense array of [`LATENCY_BUCKETS`] slots:
//! - slot 0, the zero bucket: latencies ≤ [`ZERO_THRESHOLD_NS`] (2^-20 s, 953.7 ns);
//! - slots 1 ..= [`NATIVE_INDEX_MAX`] − [`NATIVE_INDEX_MIN`] + 1: native buckets
//!   [`NATIVE_INDEX_MIN`] ..= [`NATIVE_INDEX_MAX`], from 2^-20 s to 2^8 s (256 s);
//! - the last slot: latencies over 256 s (past any nvme_core command timeout a kernel ships).
//!
//! The boundaries are powers of 2^(1/16) of a SECOND, and a second is 10^9 ns, not a power of
//! two of them: a boundary in ns is `10^9 · 2^(k/16)`. Within every power of two of nanoseconds
//! the 16 boundaries fall at the same fractions, so the kernel finds a bucket from the position
//! of the highest set bit and one comparison of the normalised value against a 16-entry table
//! ([`MANTISSA_THRESHOLDS`]), after a 64-entry table ([`FIRST_THRESHOLD`]) has said which
//! threshold to compare with. The tests check both tables against the definition in exact integer
//! arithmetic.

/// The native-histogram schema: 2^4 = 16 buckets per power of two.
pub const NATIVE_SCHEMA: i32 = 4;
/// Buckets per power of two.
pub const BUCKETS_PER_OCTAVE: i32 = 1 << NATIVE_SCHEMA;
/// The first native bucket the kernel keeps: (2^(-320/16) s, 2^(-319/16) s] = (953.7 ns,
/// 995.4 ns], which begins where the zero bucket ends.
pub const NATIVE_INDEX_MIN: i32 = -319;
/// The last native bucket the kernel keeps: (2^(127/16) s, 2^8 s] = (245.1 s, 256 s].
pub const NATIVE_INDEX_MAX: i32 = 128;
/// Latencies at or below this many nanoseconds (2^-20 s) go to the zero bucket, slot 0.
pub const ZERO_THRESHOLD_NS: u64 = 953;
/// The zero bucket's upper bound in seconds, the native histogram's `zero_threshold`.
pub const ZERO_THRESHOLD_SECONDS: f64 = 1.0 / (1u64 << 20) as f64;
/// Slots: the zero bucket, the native buckets, and the overflow bucket.
pub const LATENCY_BUCKETS: usize = (NATIVE_INDEX_MAX - NATIVE_INDEX_MIN + 3) as usize;
/// The slot of latencies over 2^8 s.
pub const OVERFLOW_SLOT: usize = LATENCY_BUCKETS - 1;

/// `16 · log2(10^9)` = 478.357…: a latency of `ns` nanoseconds is in native bucket
/// `ceil(16 · log2(ns) − 478.357…)`. [`bucket_of`] splits `16 · log2(ns)` into `16 · msb` and
/// the fraction found by the thresholds; this is the integer part of the offset.
const NS_PER_SECOND_LOG2_X16_FLOOR: i32 = 478;

/// For `j` in 0..16, `floor(10^9 · 2^(34 + (j − 14)/16))`: the ns boundaries that fall in one
/// power of two, shifted so the power of two is [2^63, 2^64). A value `ns` with highest bit `m`,
/// shifted left by `63 − m`, is above `j + 1` of them exactly when it lies past the `j`-th
/// boundary of its power of two. Entry 14 is `10^9 · 2^34` (whole seconds are boundaries and
/// integers); the others are irrational, so `>` against their floor is exact. Entry 16 is a
/// sentinel no value passes.
pub const MANTISSA_THRESHOLDS: [u64; 17] = [
    9_367_390_095_664_785_123,
    9_782_119_886_672_959_139,
    10_215_211_334_214_395_865,
    10_667_477_378_275_455_874,
    11_139_766_950_770_582_417,
    11_632_966_569_041_094_487,
    12_148_001_999_904_198_769,
    12_685_839_997_375_745_474,
    13_247_490_117_328_543_392,
    13_834_006_612_492_462_370,
    14_446_490_411_353_358_019,
    15_086_091_184_665_336_863,
    15_754_009_503_455_335_899,
    16_451_499_092_570_727_389,
    17_179_869_184_000_000_000,
    17_940_486_974_383_847_752,
    u64::MAX,
];

/// [`MANTISSA_THRESHOLDS`] padded with sentinels to a power of two, for a masked index.
const PADDED_THRESHOLDS: [u64; 32] = {
    let mut out = [u64::MAX; 32];
    let mut j = 0;
    while j < MANTISSA_THRESHOLDS.len() {
        out[j] = MANTISSA_THRESHOLDS[j];
        j += 1;
    }
    out
};

/// log2 of the cells of [`FIRST_THRESHOLD`].
const FIRST_THRESHOLD_BITS: u32 = 6;

/// For each of 64 equal cells of [2^63, 2^64) (the 6 bits below the highest), how many
/// thresholds lie wholly below the cell: a value in the cell passes those, and at most one more
/// (thresholds are 4.4 % apart, cells 1.6 % wide), which one comparison settles.
pub const FIRST_THRESHOLD: [u8; 1 << FIRST_THRESHOLD_BITS] = first_thresholds();

const fn first_thresholds() -> [u8; 1 << FIRST_THRESHOLD_BITS] {
    let mut out = [0u8; 1 << FIRST_THRESHOLD_BITS];
    let mut cell = 0;
    while cell < out.len() {
        let start = (1u64 << 63) + ((cell as u64) << (63 - FIRST_THRESHOLD_BITS));
        let mut below = 0;
        while below < 16 && MANTISSA_THRESHOLDS[below] < start {
            below += 1;
        }
        out[cell] = below as u8;
        cell += 1;
    }
    out
}

/// Index of the most significant set bit; `v` must be non-zero. A binary search, each step
/// halving the bit positions still in question. Six calls, no loop, so the verifier sees a fixed
/// cost (a loop over the widths lets the compiler unroll it into other code, longer in some
/// programs).
#[inline(always)]
pub fn msb(v: u64) -> u32 {
    let mut x = v;
    let mut k = 0;
    halve(&mut x, &mut k, 32);
    halve(&mut x, &mut k, 16);
    halve(&mut x, &mut k, 8);
    halve(&mut x, &mut k, 4);
    halve(&mut x, &mut k, 2);
    halve(&mut x, &mut k, 1);
    k
}

/// One step of [`msb`]: when `x` has a set bit at `width` or above, drops its lower `width` bits
/// and adds `width` to the index `k` found so far.
#[inline(always)]
fn halve(x: &mut u64, k: &mut u32, width: u32) {
    if *x >= 1 << width {
        *x >>= width;
        *k += width;
    }
}

/// The native bucket index of a latency of `ns` > 0 nanoseconds, unbounded.
#[inline(always)]
pub fn native_index(ns: u64) -> i32 {
    let m = msb(ns);
    let mantissa = ns << (63 - m);
    let cell =
        (mantissa >> (63 - FIRST_THRESHOLD_BITS)) as usize & ((1 << FIRST_THRESHOLD_BITS) - 1);
    let passed = FIRST_THRESHOLD[cell] as usize;
    // The mask bounds the index where the verifier can see it (a bounds check on a value loaded
    // from a table is not tracked); the table's entries are 0..=16.
    let next = PADDED_THRESHOLDS[passed & (PADDED_THRESHOLDS.len() - 1)];
    let r = passed as i32 + (mantissa > next) as i32;
    BUCKETS_PER_OCTAVE * m as i32 - NS_PER_SECOND_LOG2_X16_FLOOR + r
}

/// The slot of a latency in nanoseconds: 0 for the zero bucket, then one per native bucket, and
/// the overflow slot past 256 s.
#[inline(always)]
pub fn latency_bucket(ns: u64) -> usize {
    if ns <= ZERO_THRESHOLD_NS {
        return 0;
    }
    let i = native_index(ns);
    if i > NATIVE_INDEX_MAX {
        return OVERFLOW_SLOT;
    }
    // ns > 953 puts i at NATIVE_INDEX_MIN or above.
    (i - NATIVE_INDEX_MIN + 1) as usize
}

/// The native bucket index of a slot; `None` for the zero and the overflow slot.
pub fn slot_native_index(slot: usize) -> Option<i32> {
    (1..OVERFLOW_SLOT)
        .contains(&slot)
        .then(|| slot as i32 - 1 + NATIVE_INDEX_MIN)
}

/// `2^(j/16)` for j in 0..16 (no `exp2` in `core`); a test checks them against std's.
const OCTAVE_FRACTIONS: [f64; 16] = [
    1.0,
    1.0442737824274138,
    1.0905077326652577,
    1.1387886347566916,
    1.189207115002721,
    1.241857812073484,
    1.2968395546510096,
    1.3542555469368927,
    core::f64::consts::SQRT_2,
    1.4768261459394993,
    1.5422108254079407,
    1.6104903319492543,
    1.681792830507429,
    1.7562521603732995,
    1.8340080864093424,
    1.9152065613971474,
];

/// A native bucket's upper bound in seconds, `2^(i/16)`, for the indices the kernel keeps.
pub fn native_upper_seconds(index: i32) -> f64 {
    let octave = index.div_euclid(BUCKETS_PER_OCTAVE);
    let fraction = OCTAVE_FRACTIONS[index.rem_euclid(BUCKETS_PER_OCTAVE) as usize];
    // 2^octave built from its exponent bits; octave is within ±1022 for any i32 / 16 in range.
    let power = f64::from_bits(((1023 + octave.clamp(-1022, 1023)) as u64) << 52);
    fraction * power
}

/// The range `(low, high]` of seconds a slot holds: the zero bucket is `(0, 2^-20]` (latencies
/// of 0 ns included), the overflow slot `(256, +∞)`.
pub fn slot_bounds_seconds(slot: usize) -> (f64, f64) {
    match slot_native_index(slot) {
        Some(i) => (native_upper_seconds(i - 1), native_upper_seconds(i)),
        None if slot == 0 => (0.0, ZERO_THRESHOLD_SECONDS),
        None => (native_upper_seconds(NATIVE_INDEX_MAX), f64::INFINITY),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use num_bigint::BigUint;
    use std::vec::Vec;

    /// Whether `ns > 10^9 · 2^(k/16)`, decided exactly: both sides to the 16th power.
    fn above_boundary(ns: u64, k: i32) -> bool {
        let mut lhs = BigUint::from(ns).pow(16);
        let mut rhs = BigUint::from(10u32).pow(144);
        if k >= 0 {
            rhs <<= k as usize;
        } else {
            lhs <<= (-k) as usize;
        }
        lhs > rhs
    }

    /// The schema's definition: bucket i holds (10^9·2^((i-1)/16), 10^9·2^(i/16)] ns.
    fn in_native_bucket(ns: u64, i: i32) -> bool {
        above_boundary(ns, i - 1) && !above_boundary(ns, i)
    }

    #[test]
    fn thresholds_are_the_floors_of_the_boundaries() {
        // T_j ≤ 10^9·2^(34 + (j-14)/16) < T_j + 1, to the 16th power.
        let base: BigUint = BigUint::from(10u32).pow(144) << (34 * 16usize);
        for (j, &t) in MANTISSA_THRESHOLDS[..16].iter().enumerate() {
            let mut lo = BigUint::from(t).pow(16);
            let mut hi = (BigUint::from(t) + 1u32).pow(16);
            let mut exact = base.clone();
            let shift = j as i32 - 14;
            if shift >= 0 {
                exact <<= shift as usize;
            } else {
                lo <<= (-shift) as usize;
                hi <<= (-shift) as usize;
            }
            assert!(lo <= exact && exact < hi, "threshold {j}");
            assert!(t >= 1 << 63);
        }
        // Second boundaries are integers: entry 14 is exact.
        assert_eq!(MANTISSA_THRESHOLDS[14], 1_000_000_000u64 << 34);
    }

    #[test]
    fn first_threshold_cells_hold_at_most_one_threshold() {
        for (cell, &passed) in FIRST_THRESHOLD.iter().enumerate() {
            let start = (1u128 << 63) + ((cell as u128) << 57);
            let end = start + (1 << 57);
            let inside = MANTISSA_THRESHOLDS[..16]
                .iter()
                .filter(|&&t| (t as u128) >= start && (t as u128) < end)
                .count();
            assert!(inside <= 1, "cell {cell}");
            let below = MANTISSA_THRESHOLDS[..16]
                .iter()
                .filter(|&&t| (t as u128) < start)
                .count();
            assert_eq!(passed as usize, below, "cell {cell}");
        }
    }

    /// Values on, just below and just above every boundary from 1 ns to past the last bucket,
    /// and a spread between: each lands in the bucket the definition gives.
    #[test]
    fn native_index_matches_the_definition() {
        let mut values: Vec<u64> = Vec::new();
        for k in -478..=140 {
            let b = 1e9 * (k as f64 / 16.0).exp2();
            let b = b as u64;
            for d in [0u64, 1, 2] {
                values.push(b.saturating_sub(d).max(1));
                values.push(b + d);
            }
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            values.push((x >> 23).max(1)); // up to 2^41 ns (37 min)
            values.push((x >> 40).max(1));
        }
        values.extend([1, 2, 3, 953, 954, 999, 1000, 1_000_000_000, u64::MAX >> 20]);
        for ns in values {
            let i = native_index(ns);
            assert!(in_native_bucket(ns, i), "{ns} ns put in bucket {i}");
        }
    }

    #[test]
    fn slots_cover_1us_to_256s() {
        assert_eq!(LATENCY_BUCKETS, 450);
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(953), 0);
        assert_eq!(latency_bucket(954), 1);
        assert_eq!(slot_native_index(1), Some(NATIVE_INDEX_MIN));
        // Whole seconds close their bucket: 1 s is in (2^-1/16, 1], bucket 0.
        assert_eq!(slot_native_index(latency_bucket(1_000_000_000)), Some(0));
        assert_eq!(slot_native_index(latency_bucket(1_000_000_001)), Some(1));
        assert_eq!(latency_bucket(256_000_000_000), OVERFLOW_SLOT - 1);
        assert_eq!(latency_bucket(256_000_000_001), OVERFLOW_SLOT);
        assert_eq!(latency_bucket(u64::MAX), OVERFLOW_SLOT);
        assert_eq!(slot_bounds_seconds(0), (0.0, ZERO_THRESHOLD_SECONDS));
        assert_eq!(slot_bounds_seconds(1).0, ZERO_THRESHOLD_SECONDS);
        assert_eq!(slot_bounds_seconds(OVERFLOW_SLOT - 1).1, 256.0);
        assert_eq!(slot_bounds_seconds(OVERFLOW_SLOT), (256.0, f64::INFINITY));
        assert_eq!(ZERO_THRESHOLD_NS, (ZERO_THRESHOLD_SECONDS * 1e9) as u64);
    }

    #[test]
    fn every_latency_falls_inside_its_slot_bounds() {
        let mut v = 1u64;
        while v < 1 << 40 {
            for ns in [v - 1, v, v + 1, v + v / 3] {
                let (lo, hi) = slot_bounds_seconds(latency_bucket(ns));
                let s = ns as f64 / 1e9;
                // f64 rounding of the bounds: allow one part in 10^12.
                assert!(
                    lo * (1.0 - 1e-12) <= s && s <= hi * (1.0 + 1e-12),
                    "{ns} ns"
                );
            }
            v = v * 5 / 4 + 1;
        }
    }

    #[test]
    fn upper_bounds_are_powers_of_two_sixteenths() {
        for i in NATIVE_INDEX_MIN - 1..=NATIVE_INDEX_MAX {
            let want = (i as f64 / 16.0).exp2();
            let got = native_upper_seconds(i);
            assert!((got - want).abs() <= want * 1e-15, "{i}: {got} vs {want}");
        }
        assert_eq!(native_upper_seconds(0), 1.0);
        assert_eq!(native_upper_seconds(-320), ZERO_THRESHOLD_SECONDS);
        assert_eq!(native_upper_seconds(128), 256.0);
    }

    #[test]
    fn msb_matches_leading_zeros() {
        for shift in 0..64 {
            for v in [
                1u64 << shift,
                (1u64 << shift) | 1,
                ((1u128 << (shift + 1)) - 1) as u64,
            ] {
                assert_eq!(msb(v), 63 - v.leading_zeros(), "v={v}");
            }
        }
    }
}
