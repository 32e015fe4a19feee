//! Instruction counts (iai-callgrind, under valgrind) of the binary protocol codec: decode
//! an EVAL, encode a DECISION, answer a PING. Time per operation: `benches/wire.rs`.
//! `scripts/install-iai.sh && cargo bench -p perf --bench iai_wire`; `perf/check` compares
//! the counts with `perf/baseline/`.

use std::hint::black_box;

use iai_callgrind::{library_benchmark, library_benchmark_group, main};
use wire::{Reply, Request, decode_request, encode_reply, encode_request};

fn eval_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    encode_request(&mut frame, 7, &Request::Eval(Box::new(perf::sample_eval())));
    frame
}

fn ping_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    encode_request(&mut frame, 7, &Request::Ping(Vec::new()));
    frame
}

#[library_benchmark]
#[bench::typical(eval_frame())]
fn decode_eval(frame: Vec<u8>) -> Request {
    let (h, p) = perf::one_frame(black_box(&frame));
    black_box(decode_request(&h, p).unwrap_or(Request::Ping(Vec::new())))
}

#[library_benchmark]
#[bench::allow((perf::sample_reply(), Vec::with_capacity(4096)))]
fn encode_decision((reply, mut out): (Reply, Vec<u8>)) -> Vec<u8> {
    encode_reply(&mut out, 7, black_box(&reply));
    out
}

#[library_benchmark]
#[bench::empty((ping_frame(), Vec::with_capacity(64)))]
fn ping_to_pong((frame, mut out): (Vec<u8>, Vec<u8>)) -> Vec<u8> {
    let (h, p) = perf::one_frame(black_box(&frame));
    if let Ok(Request::Ping(bytes)) = decode_request(&h, p) {
        encode_reply(&mut out, h.request_id, &Reply::Pong(bytes));
    }
    out
}

library_benchmark_group!(name = codec; benchmarks = decode_eval, encode_decision, ping_to_pong);
main!(library_benchmark_groups = codec);
