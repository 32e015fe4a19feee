//! Where a decision's time goes, stage by stage, sampled: `decode` (the request frame or
//! body), `cache_lookup` (key and lookup, hit or miss), `evaluate` (on a miss: the
//! evaluator and the cache insert), `audit_push` (building the audit record and handing it
//! to the ring, waiting for room if it is full) and `encode` (the reply).
//!
//! One decision in `[metrics] stage_sample` (default 64; 0: none) is timed, chosen by a
//! per-shard countdown ([`Sampler`]): an unsampled one pays a decrement and a few
//! branches, and reads no clock. A sampled one reads the shard's quanta clock between
//! stages and adds each duration to its shard's own cells ([`StageCells`], in
//! [`crate::server::ShardStats`]: one writer, plain loads and stores); `/metrics` builds
//! `sark_pdp_stage_duration_seconds{stage,shard}` from every shard's cells at scrape time.
//! Frames are sampled, not the decisions in them: every item of a sampled EVAL_BATCH is
//! timed, so each decision is still timed with the same chance.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// A stage of the decision path; its index into [`STAGES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Decode,
    CacheLookup,
    Evaluate,
    AuditPush,
    Encode,
}

/// The `stage` label of each [`Stage`], in order.
pub const STAGES: [&str; 5] = ["decode", "cache_lookup", "evaluate", "audit_push", "encode"];

/// Bucket upper bounds (inclusive, as Prometheus's `le`), ns: 100 ns to 10 ms.
pub const BOUNDS_NS: [u64; 13] = [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 10_000_000];

/// The default `[metrics] stage_sample`.
pub const DEFAULT_SAMPLE: u32 = 64;

/// A stage's histogram as prometheus-client encodes one: the sum (seconds), the count, and
/// per bucket its upper bound (seconds; `f64::MAX` for `+Inf`) and its own observations
/// (the encoder makes them cumulative).
pub type Snapshot = (f64, u64, Vec<(f64, u64)>);

/// One shard's stage histograms: per stage, observations per bucket (not cumulative; the
/// last counts those past the largest bound) and their sum.
#[derive(Debug, Default)]
pub struct StageCells {
    buckets: [[AtomicU64; BOUNDS_NS.len() + 1]; STAGES.len()],
    sum_ns: [AtomicU64; STAGES.len()],
}

/// Add `n` to a cell this thread alone writes.
fn add(cell: &AtomicU64, n: u64) {
    cell.store(cell.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl StageCells {
    /// Count one `stage` that took `ns`. Only the owning shard calls this.
    pub fn observe(&self, stage: Stage, ns: u64) {
        let bucket = BOUNDS_NS.iter().position(|b| ns <= *b).unwrap_or(BOUNDS_NS.len());
        let s = stage as usize;
        if let Some(cell) = self.buckets.get(s).and_then(|row| row.get(bucket)) {
            add(cell, 1);
        }
        if let Some(cell) = self.sum_ns.get(s) {
            add(cell, ns);
        }
    }

    /// Stage `s` (an index into [`STAGES`]), read.
    pub fn snapshot(&self, s: usize) -> Snapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let bounds = BOUNDS_NS.iter().map(|b| *b as f64 / 1e9).chain([f64::MAX]);
        let buckets: Vec<(f64, u64)> = match self.buckets.get(s) {
            Some(row) => bounds.zip(row.iter().map(load)).collect(),
            None => Vec::new(),
        };
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_ns.get(s).map_or(0, load) as f64 / 1e9;
        (sum, count, buckets)
    }
}

/// Which decisions a shard times: one in `every` (0: none), by a countdown the shard alone
/// touches.
#[derive(Debug)]
pub struct Sampler {
    every: u32,
    left: Cell<u32>,
}

impl Sampler {
    pub fn new(every: u32) -> Sampler {
        Sampler { every, left: Cell::new(Self::start(every)) }
    }

    /// Where the countdown starts: `every`, or when off as far as it goes, so that off
    /// costs what an unsampled tick does.
    fn start(every: u32) -> u32 {
        if every == 0 { u32::MAX } else { every }
    }

    /// Whether the next decision (or frame) is timed: every `every`-th call.
    #[inline]
    pub fn tick(&self) -> bool {
        let left = self.left.get();
        if left > 1 {
            self.left.set(left - 1);
            return false;
        }
        self.left.set(Self::start(self.every));
        self.every > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_in_every_is_sampled_and_zero_is_off() {
        for every in [1u32, 2, 64] {
            let s = Sampler::new(every);
            let picked: Vec<usize> = (0..every as usize * 3).filter(|_| s.tick()).collect();
            assert_eq!(picked.len(), 3, "1 in {every}");
        }
        let s = Sampler::new(64);
        let first = (1..=64).find(|_| s.tick());
        assert_eq!(first, Some(64));
        let off = Sampler::new(0);
        assert!(!(0..1000).any(|_| off.tick()));
    }

    #[test]
    fn buckets_are_inclusive_and_the_snapshot_counts_and_sums() {
        let c = StageCells::default();
        for ns in [100, 101, 250, 9_999_999, 10_000_001, 50] {
            c.observe(Stage::Evaluate, ns);
        }
        let (sum, count, buckets) = c.snapshot(Stage::Evaluate as usize);
        assert_eq!(count, 6);
        assert!((sum - 20_000_501e-9).abs() < 1e-12, "{sum}");
        assert_eq!(buckets.len(), BOUNDS_NS.len() + 1);
        let n = |le: f64| buckets.iter().find(|(b, _)| (*b - le).abs() < 1e-15).map(|(_, n)| *n);
        assert_eq!((n(1e-7), n(2.5e-7), n(1e-2), n(f64::MAX)), (Some(2), Some(2), Some(1), Some(1)));
        // Other stages are untouched.
        assert_eq!(c.snapshot(Stage::Decode as usize).1, 0);
        assert_eq!(STAGES.get(Stage::AuditPush as usize), Some(&"audit_push"));
    }
}
