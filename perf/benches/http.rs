//! The HTTP front door's parse: head (httparse, limits) and JSON body (simd-json, in
//! place) of SARK's typical question, over OPA's data API and AuthZEN; and AuthZEN's
//! mapping to SARK's input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use shard::http::{HttpConfig, parse_request};

fn http(c: &mut Criterion) {
    let cfg = HttpConfig::new("127.0.0.1:8181".parse().unwrap());
    let mut g = c.benchmark_group("http");
    for (name, request) in perf::sample_http_requests() {
        assert!(parse_request(&cfg, &mut request.clone()).unwrap().is_some());
        g.bench_function(format!("parse_{name}"), |b| {
            b.iter_batched_ref(|| request.clone(), |buf| black_box(parse_request(&cfg, black_box(buf))), BatchSize::SmallInput)
        });
    }
    let [_, (_, authzen)] = perf::sample_http_requests();
    let (_, body) = parse_request(&cfg, &mut authzen.clone()).unwrap().unwrap();
    g.bench_function("authzen_to_input", |b| b.iter(|| black_box(shard::authzen::evaluation(black_box(&body)))));
    g.finish();
}

criterion_group!(benches, http);
criterion_main!(benches);
