//! [`LogHistogram`]: a small log-linear latency histogram (HdrHistogram's layout, cut down).
//!
//! Each power of two between 2^10 ns (≈ 1 µs) and 2^37 ns (≈ 137 s) is split into 64 equal
//! buckets, so a bucket is at most 1/64 of its lower bound wide; quantiles report the bucket's
//! midpoint, within 1/128 (< 0.8 %) of every value in it. Values below 1 µs count in the first
//! bucket, values above the range in the last; min and max are kept exactly and bound every
//! quantile. 1,728 `u64` counters, allocated once.

/// log2 of the lowest tracked value (1,024 ns).
const LOW_EXP: u32 = 10;
/// log2 of the first value past the range (2^37 ns ≈ 137 s).
const HIGH_EXP: u32 = 37;
/// log2 of the buckets per power of two.
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Number of buckets.
pub const BUCKETS: usize = (HIGH_EXP - LOW_EXP) as usize * SUB;

/// Latencies in nanoseconds, log-linear buckets (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogHistogram {
    counts: Box<[u64]>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LogHistogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// The bucket `ns` counts in.
    pub fn index(ns: u64) -> usize {
        let v = ns.clamp(1 << LOW_EXP, (1 << HIGH_EXP) - 1);
        let exp = 63 - v.leading_zeros();
        let sub = (v >> (exp - SUB_BITS)) as usize & (SUB - 1);
        (exp - LOW_EXP) as usize * SUB + sub
    }

    /// `[low, high)` of bucket `i`, ns.
    pub fn bounds(i: usize) -> (u64, u64) {
        let exp = LOW_EXP + (i / SUB) as u32;
        let sub = (i % SUB) as u64;
        let width = 1u64 << (exp - SUB_BITS);
        let low = (SUB as u64 + sub) * width;
        (low, low + width)
    }

    pub fn record(&mut self, ns: u64) {
        self.record_n(ns, 1);
    }

    /// Records `n` values of `ns` (a Kafka observation standing for `n` records).
    pub fn record_n(&mut self, ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        self.counts[Self::index(ns)] += n;
        self.count += n;
        self.sum += u128::from(ns) * u128::from(n);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Exact smallest value; 0 when empty.
    pub fn min(&self) -> u64 {
        if self.count == 0 { 0 } else { self.min }
    }

    /// Exact largest value; 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            (self.sum / u128::from(self.count)) as u64
        }
    }

    /// The value at quantile `q` (0..=1): the midpoint of the bucket holding the
    /// ⌈q·count⌉-th smallest value, clamped to [min, max]. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        if rank >= self.count {
            return self.max;
        }
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, high) = Self::bounds(i);
                return (low + (high - low) / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Non-empty buckets, lowest first: (low ns, high ns, count).
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, &c)| {
                let (low, high) = Self::bounds(i);
                (low, high, c)
            })
    }

    /// Counts per power of two (`[2^k, 2^(k+1))` ns), from the lowest to the highest non-empty
    /// one (empty ones between included): a coarse log-scale shape for sparklines.
    pub fn octaves(&self) -> Vec<(u64, u64)> {
        let per: Vec<u64> = self.counts.chunks(SUB).map(|c| c.iter().sum()).collect();
        let Some(first) = per.iter().position(|c| *c > 0) else {
            return Vec::new();
        };
        let last = per.iter().rposition(|c| *c > 0).unwrap_or(first);
        (first..=last)
            .map(|k| (1u64 << (LOW_EXP + k as u32), per[k]))
            .collect()
    }
}
