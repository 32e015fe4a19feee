//! Instruction counts (iai-callgrind, under valgrind) of the cache: hashing the typed input
//! into its key, a hit and a miss in a full cache, and a shard's whole hit path (key,
//! lookup, decision). Time per operation: `benches/cache.rs`.
//! `scripts/install-iai.sh && cargo bench -p perf --bench iai_cache`; `perf/check` compares
//! the counts with `perf/baseline/`.

use std::hint::black_box;
use std::sync::Arc;

use iai_callgrind::{library_benchmark, library_benchmark_group, main};
use pdp::cache::{CacheConfig, DecisionCache, Eviction};
use pdp::eval::{CompiledBundle, EnginePreference, EvalLimits};
use pdp::input::SarkInput;
use pdp::key::{CacheKey, KeyHasher};
use pdp::point::DecisionPoint;

fn hasher() -> (SarkInput, KeyHasher) {
    (perf::sample_input(), KeyHasher::new("bench", "data.sark.decision"))
}

#[library_benchmark]
#[bench::typed(hasher())]
fn key_typed((input, mut hasher): (SarkInput, KeyHasher)) -> bool {
    black_box(black_box(&input).cache_key(&mut hasher)).is_ok()
}

#[library_benchmark]
#[bench::s3fifo(perf::full_cache(Eviction::S3Fifo))]
#[bench::lru(perf::full_cache(Eviction::Lru))]
fn lookup_hit((mut cache, key): (DecisionCache, CacheKey)) -> DecisionCache {
    black_box(cache.get(black_box(key)));
    cache
}

#[library_benchmark]
#[bench::s3fifo(perf::full_cache(Eviction::S3Fifo))]
fn lookup_miss((mut cache, _): (DecisionCache, CacheKey)) -> DecisionCache {
    black_box(cache.get(black_box(CacheKey(7))));
    cache
}

/// A decision point whose cache already holds the sample's answer.
fn warm_point() -> (DecisionPoint, SarkInput) {
    let bundle = perf::shipped_bundle().unwrap_or_else(|e| unreachable!("{e}"));
    let compiled = Arc::new(CompiledBundle::compile(&bundle, EvalLimits::default()).unwrap_or_else(|e| unreachable!("{e}")));
    let mut point = DecisionPoint::new(compiled, EnginePreference::Fastest, CacheConfig::default(), quanta::Clock::new());
    let input = perf::sample_input();
    point.decide_typed(&input, input.now_ns.unwrap_or(0));
    (point, input)
}

#[library_benchmark]
#[bench::typed(warm_point())]
fn point_hit((mut point, input): (DecisionPoint, SarkInput)) -> DecisionPoint {
    let now = input.now_ns.unwrap_or(0);
    black_box(point.decide_typed(black_box(&input), now));
    point
}

library_benchmark_group!(name = cache; benchmarks = key_typed, lookup_hit, lookup_miss, point_hit);
main!(library_benchmark_groups = cache);
