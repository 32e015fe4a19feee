//! Decision cache: key hashing (typed input and JSON document), a hit, a miss, an insert.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use pdp::cache::{CacheConfig, Eviction};
use pdp::key::{CacheKey, KeyHasher};
use pdp::eval::{CompiledBundle, EnginePreference, EvalLimits};
use pdp::point::DecisionPoint;
use pdp::Sensitivity;

fn cache(c: &mut Criterion) {
    let input = perf::sample_input();
    let doc = input.to_value().unwrap();
    let mut hasher = KeyHasher::new("bench", "data.sark.decision");
    let mut g = c.benchmark_group("cache");
    g.bench_function("key_typed", |b| b.iter(|| black_box(black_box(&input).cache_key(&mut hasher))));
    g.bench_function("key_document", |b| {
        b.iter(|| black_box(hasher.document_key(black_box(&doc))))
    });
    g.bench_function("typed_to_value", |b| b.iter(|| black_box(black_box(&input).to_value())));
    for (name, eviction) in [("s3fifo", Eviction::S3Fifo), ("lru", Eviction::Lru)] {
        let (mut cache, present) = perf::full_cache(eviction);
        assert!(cache.get(present).is_some());
        g.bench_function(format!("hit_{name}"), |b| b.iter(|| black_box(cache.get(black_box(present)))));
        g.bench_function(format!("miss_{name}"), |b| b.iter(|| black_box(cache.get(black_box(CacheKey(7))))));
        let d = perf::sample_decision();
        let mut i = 0u128;
        g.bench_function(format!("insert_{name}"), |b| {
            b.iter(|| {
                i += 1;
                cache.insert(CacheKey(i.wrapping_mul(0x2545_f491_4f6c_dd1d) << 7), d.clone(), Sensitivity::Low)
            })
        });
    }
    // The whole hit path of a shard: key the typed input, find it, hand out the decision.
    let bundle = perf::shipped_bundle().unwrap();
    let compiled = Arc::new(CompiledBundle::compile(&bundle, EvalLimits::default()).unwrap());
    let mut point = DecisionPoint::new(compiled, EnginePreference::Fastest, CacheConfig::default(), quanta::Clock::new());
    let now = input.now_ns.unwrap_or(0);
    point.decide_typed(&input, now);
    assert!(point.decide_typed(&input, now).cache_hit);
    g.bench_function("point_hit_typed", |b| b.iter(|| black_box(point.decide_typed(black_box(&input), now))));
    g.bench_function("point_miss_typed", |b| {
        b.iter(|| {
            point.cache_mut().clear();
            black_box(point.decide_typed(black_box(&input), now))
        })
    });
    g.finish();
}

criterion_group!(benches, cache);
criterion_main!(benches);
