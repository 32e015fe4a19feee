//! The binary protocol codec: encode and decode of an EVAL, a DECISION and a PING frame.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use wire::message::{Decision, Eval, Reason, Tool};
use wire::{Check, DEFAULT_MAX_PAYLOAD, HEADER_LEN, Reply, Request, check, decode_reply, decode_request, encode_reply, encode_request};

fn eval() -> Eval {
    Eval {
        user_id: "alice".into(),
        roles: vec!["developer".into()],
        teams: vec!["payments".into()],
        mfa_verified: Some(true),
        mfa_age_s: Some(120),
        action: "tool:invoke".into(),
        tool: Some(Tool {
            name: "update_ticket".into(),
            sensitivity_level: Some("medium".into()),
            teams: vec!["payments".into()],
            ..Tool::default()
        }),
        client_ip: Some("10.20.30.40".into()),
        parameters_json: Some(r#"{"ticket_id": "T-42", "status": "closed"}"#.into()),
        context_json: Some(r#"{"audit_enabled": true, "vpn": true}"#.into()),
        ..Eval::default()
    }
}

fn decode_one(buf: &[u8]) -> (wire::Header, &[u8]) {
    match check(buf, DEFAULT_MAX_PAYLOAD).unwrap() {
        Check::Complete { header, total } => (header, buf.get(HEADER_LEN..total).unwrap()),
        Check::Incomplete => panic!("incomplete"),
    }
}

fn wire(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    let req = Request::Eval(Box::new(eval()));
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
            let (h, p) = decode_one(black_box(&frame));
            black_box(decode_request(&h, p).unwrap())
        })
    });
    let reply = Reply::Decision(Decision {
        allow: true,
        cache_hit: true,
        ttl_s: 300,
        decision_id: 42,
        error_code: 0,
        reasons: vec![Reason {
            code: 0,
            text: "allowed: all policies passed".into(),
        }],
        filtered_parameters_json: Some(r#"{"ticket_id": "T-42", "status": "closed"}"#.into()),
    });
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
            let (h, p) = decode_one(black_box(&frame));
            black_box(decode_reply(&h, p).unwrap())
        })
    });
    let ping = Request::Ping(Vec::new());
    let mut frame = Vec::new();
    encode_request(&mut frame, 7, &ping);
    g.bench_function("ping_decode_and_pong_encode", |b| {
        b.iter(|| {
            let (h, p) = decode_one(black_box(&frame));
            let Request::Ping(bytes) = decode_request(&h, p).unwrap() else { unreachable!() };
            buf.clear();
            encode_reply(&mut buf, h.request_id, &Reply::Pong(bytes));
        })
    });
    g.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
