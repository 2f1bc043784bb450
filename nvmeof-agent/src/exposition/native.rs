//! Native histogram buckets as a collector gives them (sparse indices and counts) turned into
//! the protobuf form: spans of consecutive buckets and count deltas.
//!
//! Spans follow client_golang (`makeBuckets` in `prometheus/histogram.go`): a gap of one or two
//! empty buckets does not open a new span but is filled with zero-count buckets (two deltas cost
//! less than a span's offset and length); a longer gap opens a new span. Deltas run across
//! spans: the first is the first bucket's count, each next one its count minus the previous
//! bucket's. A native histogram with no bucket, no zero count and a zero threshold of 0 gets one
//! empty span `{offset: 0, length: 0}`, as client_golang sends it, or a scraper could not tell
//! it from a classic histogram.
use super::model::{BucketSpan, Histogram};

/// The native part of a histogram.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Native {
    /// Bucket boundaries grow by 2^(2^-schema): bucket `i` is (2^((i-1)·2^-schema), 2^(i·2^-schema)].
    pub schema: i32,
    /// Observations in [-zero_threshold, zero_threshold] count in `zero_count`, in no bucket.
    pub zero_threshold: f64,
    pub zero_count: u64,
    /// `(bucket index, count)`, ascending by index, counts not cumulative; buckets left out or
    /// given as 0 are empty.
    pub positive: Vec<(i32, u64)>,
}

/// Gaps of at most this many empty buckets are filled rather than opening a new span.
const MAX_FILLED_GAP: i64 = 2;

/// The spans and deltas of sparse `(index, count)` buckets, ascending by index.
pub fn spans_and_deltas(buckets: &[(i32, u64)]) -> (Vec<BucketSpan>, Vec<i64>) {
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut deltas = Vec::new();
    let mut previous = 0i64;
    // The index right after the last bucket placed.
    let mut next = 0i64;
    let mut push = |spans: &mut Vec<BucketSpan>, count: u64| {
        let span = spans.last_mut().expect("a span is open");
        span.length = Some(span.length() + 1);
        deltas.push(count as i64 - previous);
        previous = count as i64;
    };
    for &(index, count) in buckets.iter().filter(|(_, c)| *c > 0) {
        let index = i64::from(index);
        debug_assert!(
            spans.is_empty() || index >= next,
            "native buckets out of order"
        );
        let gap = index - next;
        if spans.is_empty() || gap > MAX_FILLED_GAP {
            spans.push(BucketSpan {
                offset: Some(gap as i32),
                length: Some(0),
            });
        } else {
            for _ in 0..gap {
                push(&mut spans, 0);
            }
        }
        push(&mut spans, count);
        next = index + 1;
    }
    (spans, deltas)
}

impl Native {
    /// Writes the native fields of `h`.
    pub fn fill(mut self, h: &mut Histogram) {
        if !self.positive.is_sorted_by(|a, b| a.0 < b.0) {
            // Out of order or repeated indices: sum by index (a cold path; callers give them sorted).
            self.positive.sort_by_key(|&(i, _)| i);
            self.positive.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    kept.1 += later.1;
                }
                same
            });
        }
        let (mut spans, deltas) = spans_and_deltas(&self.positive);
        if spans.is_empty() && self.zero_threshold == 0.0 && self.zero_count == 0 {
            spans.push(BucketSpan {
                offset: Some(0),
                length: Some(0),
            });
        }
        h.schema = Some(self.schema);
        h.zero_threshold = Some(self.zero_threshold);
        h.zero_count = Some(self.zero_count);
        h.positive_span = spans;
        h.positive_delta = deltas;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(offset: i32, length: u32) -> BucketSpan {
        BucketSpan {
            offset: Some(offset),
            length: Some(length),
        }
    }

    #[test]
    fn consecutive_buckets_make_one_span_of_deltas() {
        let (spans, deltas) = spans_and_deltas(&[(3, 5), (4, 7), (5, 2)]);
        assert_eq!(spans, [span(3, 3)]);
        assert_eq!(deltas, [5, 2, -5]);
    }

    #[test]
    fn gaps_of_one_or_two_are_filled_longer_ones_open_a_span() {
        // 3 leaves a gap of 1 (index 2) and 6 a gap of 2 (4, 5): filled with empty buckets;
        // 10 leaves a gap of 3 (7, 8, 9): a new span, 3 after the end of the first.
        let (spans, deltas) = spans_and_deltas(&[(0, 1), (1, 2), (3, 4), (6, 1), (10, 5)]);
        assert_eq!(spans, [span(0, 7), span(3, 1)]);
        //            0  1  2   3   4   5   6   10
        assert_eq!(deltas, [1, 1, -2, 4, -4, 0, 1, 4]);
        let total: i64 = deltas
            .iter()
            .scan(0, |c, d| {
                *c += d;
                Some(*c)
            })
            .sum();
        assert_eq!(total, 1 + 2 + 4 + 1 + 5);
    }

    #[test]
    fn a_single_bucket() {
        assert_eq!(spans_and_deltas(&[(42, 9)]), (vec![span(42, 1)], vec![9]));
    }

    #[test]
    fn negative_indices_start_the_first_span_below_zero() {
        // Bucket -5 is (2^(-6/4), 2^(-5/4)] at schema 2; -4 follows, -1 is 2 after: filled.
        let (spans, deltas) = spans_and_deltas(&[(-5, 2), (-4, 3), (-1, 1), (4, 6)]);
        assert_eq!(spans, [span(-5, 5), span(4, 1)]);
        assert_eq!(deltas, [2, 1, -3, 0, 1, 5]);
    }

    #[test]
    fn empty_buckets_given_as_zero_take_no_place() {
        assert_eq!(
            spans_and_deltas(&[(1, 0), (7, 3), (8, 0), (20, 0)]),
            (vec![span(7, 1)], vec![3])
        );
    }

    #[test]
    fn an_empty_native_histogram_keeps_one_empty_span() {
        let mut h = Histogram::default();
        Native {
            schema: 3,
            ..Native::default()
        }
        .fill(&mut h);
        assert_eq!(h.schema, Some(3));
        assert_eq!(h.positive_span, [span(0, 0)]);
        assert!(h.positive_delta.is_empty());
        assert!(h.is_native());

        // With a zero threshold (or zero count) the histogram is native already: no span.
        let mut h = Histogram::default();
        Native {
            schema: 3,
            zero_threshold: 1e-9,
            ..Native::default()
        }
        .fill(&mut h);
        assert!(h.positive_span.is_empty());
    }

    #[test]
    fn unsorted_or_repeated_indices_are_summed_in_order() {
        let mut h = Histogram::default();
        Native {
            schema: 0,
            zero_threshold: 0.0,
            zero_count: 1,
            positive: vec![(5, 1), (2, 2), (5, 3)],
        }
        .fill(&mut h);
        // 2 then 5 (1 + 3), the gap of 2 between them filled.
        assert_eq!(h.positive_span, [span(2, 4)]);
        assert_eq!(h.positive_delta, [2, -2, 0, 4]);
        assert_eq!(h.zero_count, Some(1));
    }
}
