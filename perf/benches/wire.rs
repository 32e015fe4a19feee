//! The binary protocol codec: encode and decode of an EVAL, a DECISION and a PING frame.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use wire::{Reply, Request, decode_reply, decode_request, encode_reply, encode_request};

fn wire(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    let req = Request::Eval(Box::new(perf::sample_eval()));
    let mut buf = Vec::with_capacity(4096);
    g.bench_function("encode_eval", |b| {
        b.iter(|| {
            buf.clear();
            encode_request(&mut buf, 7, black_box(&req));
        })
    });
    let mut frame = Vec::new();
    encode_request(&mut frame, 7, &req);
    g.bench_function("decode_eval", |b| {
        b.iter(|| {
            let (h, p) = perf::one_frame(black_box(&frame));
            black_box(decode_request(&h, p).unwrap())
        })
    });
    let reply = perf::sample_reply();
    g.bench_function("encode_decision", |b| {
        b.iter(|| {
            buf.clear();
            encode_reply(&mut buf, 7, black_box(&reply));
        })
    });
    let mut frame = Vec::new();
    encode_reply(&mut frame, 7, &reply);
    g.bench_function("decode_decision", |b| {
        b.iter(|| {
            let (h, p) = perf::one_frame(black_box(&frame));
            black_box(decode_reply(&h, p).unwrap())
        })
    });
    let ping = Request::Ping(Vec::new());
    let mut frame = Vec::new();
    encode_request(&mut frame, 7, &ping);
    g.bench_function("ping_decode_and_pong_encode", |b| {
        b.iter(|| {
            let (h, p) = perf::one_frame(black_box(&frame));
            let Request::Ping(bytes) = decode_request(&h, p).unwrap() else { unreachable!() };
            buf.clear();
            encode_reply(&mut buf, h.request_id, &Reply::Pong(bytes));
        })
    });
    g.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
