//! The binary protocol's codec: every frame round-trips; truncated, trailing, oversized,
//! unknown and random input gets its documented error and never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use wire::message::{Decision, ErrorReply, Eval, EvalJson, Hello, HelloOk, MAX_BATCH, Reason, Server, Tool};
use wire::{Check, DEFAULT_MAX_PAYLOAD, HEADER_LEN, Reply, Request, WireError, check, decode_reply, decode_request, encode_reply, encode_request};

fn eval() -> Eval {
    Eval {
        user_id: "alice".into(),
        roles: vec!["developer".into(), "service".into()],
        teams: vec!["payments".into()],
        team_manager_of: vec![],
        scopes: vec!["tool:invoke".into()],
        mfa_verified: Some(true),
        mfa_age_s: Some(-3),
        email: Some("a@example.com".into()),
        action: "tool:invoke".into(),
        tool: Some(Tool {
            name: "update_ticket".into(),
            sensitivity_level: Some("medium".into()),
            owner: None,
            managers: vec!["bob".into()],
            teams: vec!["payments".into()],
        }),
        server: Some(Server {
            id: "srv-1".into(),
            name: None,
            owner_id: Some("bob".into()),
            teams: vec![],
            managed_by_team: Some("payments".into()),
        }),
        client_ip: Some("10.0.0.1".into()),
        now_ns: Some(1_795_428_000_000_000_000),
        parameters_json: Some(r#"{"ticket": "T-1"}"#.into()),
        agent_json: None,
        context_json: Some(r#"{"vpn": true}"#.into()),
    }
}

fn requests() -> Vec<Request> {
    vec![
        Request::Hello(Hello {
            version: 1,
            max_payload: 4096,
            token: Some("secret".into()),
        }),
        Request::Hello(Hello {
            version: 1,
            max_payload: DEFAULT_MAX_PAYLOAD,
            token: None,
        }),
        Request::Eval(Box::new(eval())),
        Request::Eval(Box::default()),
        Request::EvalExplain(Box::new(eval()), wire::Explain::Notes),
        Request::EvalExplain(Box::default(), wire::Explain::Full),
        Request::EvalJson(EvalJson {
            entrypoint: "data.mcp.allow".into(),
            input_json: "{}".into(),
        }),
        Request::EvalBatch(vec![eval(), Eval::default(), eval()]),
        Request::EvalBatch(vec![]),
        Request::Ping(b"abc".to_vec()),
        Request::Ping(vec![]),
        Request::Invalidate(wire::message::Invalidate::All),
        Request::Invalidate(wire::message::Invalidate::User("u-1".into())),
        Request::Invalidate(wire::message::Invalidate::Tool("db".into())),
        Request::Invalidate(wire::message::Invalidate::Server("s".into())),
    ]
}

fn replies() -> Vec<Reply> {
    let d = Decision {
        allow: true,
        cache_hit: true,
        ttl_s: 300,
        decision_id: u128::MAX - 7,
        error_code: 0,
        reasons: vec![Reason {
            code: 0,
            text: "allowed: all policies passed".into(),
        }],
        filtered_parameters_json: Some("{}".into()),
    };
    vec![
        Reply::HelloOk(Box::new(HelloOk {
            version: 1,
            max_payload: 4096,
            max_batch: MAX_BATCH,
            shards: 3,
            shard: 2,
            bundle_revision: "sark-default-1".into(),
            driver: "io_uring".into(),
            route: 1,
            shard_ports: vec![7475, 7476, 7477],
        })),
        Reply::Decision(d.clone()),
        Reply::Decision(Decision::default()),
        Reply::Explanation(d.clone(), r#"{"level":"notes"}"#.into()),
        Reply::Result(Some("true".into())),
        Reply::Result(None),
        Reply::DecisionBatch(vec![d, Decision::default()]),
        Reply::Pong(b"abc".to_vec()),
        Reply::Invalidated(true),
        Reply::Invalidated(false),
        Reply::Error(ErrorReply {
            code: 3003,
            message: "unknown opcode 0x42".into(),
        }),
    ]
}

/// Split a buffer into frames, as a server's read loop does.
fn frames(buf: &[u8]) -> Vec<(wire::Header, &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    while let Check::Complete { header, total } = check(rest, DEFAULT_MAX_PAYLOAD).unwrap() {
        out.push((header, &rest[HEADER_LEN..total]));
        rest = &rest[total..];
    }
    assert!(rest.is_empty());
    out
}

#[test]
fn every_request_round_trips_pipelined_in_one_buffer() {
    let mut buf = Vec::new();
    for (i, r) in requests().iter().enumerate() {
        encode_request(&mut buf, 1000 + i as u64, r);
    }
    let got: Vec<(u64, Request)> = frames(&buf)
        .into_iter()
        .map(|(h, p)| (h.request_id, decode_request(&h, p).unwrap()))
        .collect();
    let want: Vec<(u64, Request)> = requests().into_iter().enumerate().map(|(i, r)| (1000 + i as u64, r)).collect();
    assert_eq!(got, want);
}

#[test]
fn every_reply_round_trips() {
    let mut buf = Vec::new();
    for (i, r) in replies().iter().enumerate() {
        encode_reply(&mut buf, i as u64, r);
    }
    let got: Vec<Reply> = frames(&buf).into_iter().map(|(h, p)| decode_reply(&h, p).unwrap()).collect();
    assert_eq!(got, replies());
}

#[test]
fn truncated_or_padded_payloads_are_malformed_never_a_panic() {
    for req in requests() {
        let mut buf = Vec::new();
        encode_request(&mut buf, 9, &req);
        let (h, payload) = frames(&buf)[0];
        if matches!(req, Request::Ping(_)) {
            continue; // PING's payload is opaque: any length is valid
        }
        for cut in 0..payload.len() {
            let err = decode_request(&h, &payload[..cut]).unwrap_err();
            assert!(matches!(err, WireError::Malformed { .. }), "{req:?} cut at {cut}: {err}");
            assert!(err.is_fatal());
            assert_eq!(err.wire_code(), 3004);
        }
        let mut padded = payload.to_vec();
        padded.push(0);
        let err = decode_request(&h, &padded).unwrap_err();
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
    }
}

#[test]
fn unknown_opcodes_are_not_fatal() {
    let mut buf = Vec::new();
    wire::frame::write_frame(&mut buf, 0x42, 0, 5, |b| b.extend_from_slice(b"xyz"));
    let (h, p) = frames(&buf)[0];
    let err = decode_request(&h, p).unwrap_err();
    assert_eq!(err, WireError::UnknownOpcode(0x42));
    assert!(!err.is_fatal());
    assert_eq!(err.wire_code(), 3003);
}

#[test]
fn counts_are_checked_before_allocating() {
    // A batch claiming u32::MAX items in a 4-byte payload.
    let mut buf = Vec::new();
    wire::frame::write_frame(&mut buf, wire::opcode::EVAL_BATCH, 0, 1, |b| b.extend_from_slice(&u32::MAX.to_le_bytes()));
    let (h, p) = frames(&buf)[0];
    assert!(matches!(decode_request(&h, p), Err(WireError::Malformed { .. })));
    // A string claiming more bytes than follow.
    let mut buf = Vec::new();
    wire::frame::write_frame(&mut buf, wire::opcode::EVAL_JSON, 0, 1, |b| b.extend_from_slice(&1000u32.to_le_bytes()));
    let (h, p) = frames(&buf)[0];
    let err = decode_request(&h, p).unwrap_err();
    assert!(err.to_string().contains("length 1000 exceeds the 0 bytes left"), "{err}");
}

#[test]
fn batches_over_the_limit_are_refused_but_not_fatal() {
    let items = vec![Eval::default(); MAX_BATCH as usize + 1];
    let mut buf = Vec::new();
    encode_request(&mut buf, 1, &Request::EvalBatch(items));
    let (h, p) = frames(&buf)[0];
    let err = decode_request(&h, p).unwrap_err();
    assert_eq!(err.wire_code(), 3005);
    assert!(!err.is_fatal());
}

#[test]
fn invalid_utf8_and_bad_tags_are_malformed() {
    let mut buf = Vec::new();
    encode_request(
        &mut buf,
        1,
        &Request::EvalJson(EvalJson {
            entrypoint: "ab".into(),
            input_json: "{}".into(),
        }),
    );
    let at = HEADER_LEN + 4; // first byte of the entrypoint
    buf[at] = 0xff;
    let (h, p) = frames(&buf)[0];
    assert!(decode_request(&h, p).unwrap_err().to_string().contains("invalid UTF-8"));

    let mut buf = Vec::new();
    encode_request(&mut buf, 1, &Request::Hello(Hello { version: 1, max_payload: 1, token: None }));
    let last = buf.len() - 1;
    buf[last] = 7; // presence tag of the token
    let (h, p) = frames(&buf)[0];
    assert!(decode_request(&h, p).unwrap_err().to_string().contains("presence tag 7"));
}

#[test]
fn random_bytes_never_panic() {
    // A deterministic xorshift stream: many short random payloads under every opcode.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let opcode = [1u8, 2, 3, 4, 5, 0x81, 0x82, 0x83, 0x84, 0x85, 0xff, 0x42][(next() % 12) as usize];
        let h = wire::Header {
            len: len as u32,
            version: 1,
            opcode,
            flags: 0,
            request_id: 1,
        };
        let _ = decode_request(&h, &payload);
        let _ = decode_reply(&h, &payload);
    }
}

#[test]
fn decision_views_encode_the_same_bytes_as_owned_decisions() {
    let reasons = vec!["denied: mfa required".to_string(), "second".to_string()];
    let view = wire::DecisionView {
        allow: false,
        cache_hit: true,
        ttl_s: 30,
        decision_id: 0xabcdef,
        error_code: 1004,
        reasons: &reasons,
        filtered_parameters_json: Some("{\"a\":1}"),
    };
    let owned = Decision {
        allow: false,
        cache_hit: true,
        ttl_s: 30,
        decision_id: 0xabcdef,
        error_code: 1004,
        reasons: reasons.iter().map(|t| Reason { code: 1004, text: t.clone() }).collect(),
        filtered_parameters_json: Some("{\"a\":1}".into()),
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    wire::encode_decision(&mut a, 7, &view);
    wire::encode_reply(&mut b, 7, &Reply::Decision(owned.clone()));
    assert_eq!(a, b);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    wire::encode_decision_batch(&mut a, 8, &[view, view]);
    wire::encode_reply(&mut b, 8, &Reply::DecisionBatch(vec![owned.clone(), owned]));
    assert_eq!(a, b);
}

#[test]
fn explain_rides_in_evals_header_flags_and_leaves_the_plain_frames_as_they_were() {
    let (mut plain, mut notes, mut full) = (Vec::new(), Vec::new(), Vec::new());
    encode_request(&mut plain, 1, &Request::Eval(Box::new(eval())));
    encode_request(&mut notes, 1, &Request::EvalExplain(Box::new(eval()), wire::Explain::Notes));
    encode_request(&mut full, 1, &Request::EvalExplain(Box::new(eval()), wire::Explain::Full));
    // The same bytes but for the flags: an EVAL without explain is unchanged.
    assert_eq!(plain.len(), notes.len());
    assert_eq!((&plain[6..8], &notes[6..8], &full[6..8]), (&[0u8, 0][..], &[1u8, 0][..], &[2u8, 0][..]));
    assert_eq!((&plain[..6], &plain[8..]), (&notes[..6], &notes[8..]));
    // Level 3 is malformed (fatal); reserved bits above the level are ignored, as before.
    let (mut h, p) = frames(&plain)[0];
    h.flags = 3;
    assert_eq!(decode_request(&h, p).unwrap_err().wire_code(), 3004);
    h.flags = 0x0100;
    assert_eq!(decode_request(&h, p).unwrap(), Request::Eval(Box::new(eval())));
    h.flags = 0x0102;
    assert_eq!(decode_request(&h, p).unwrap(), Request::EvalExplain(Box::new(eval()), wire::Explain::Full));
    // EXPLANATION is a DECISION body then the json: an explained decision's body is the
    // DECISION's bytes and one str more.
    let d = Decision { allow: false, reasons: vec![Reason { code: 0, text: "rbac: no".into() }], ..Decision::default() };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    encode_reply(&mut a, 3, &Reply::Decision(d.clone()));
    encode_reply(&mut b, 3, &Reply::Explanation(d, "{}".into()));
    assert_eq!(b[5], wire::opcode::EXPLANATION);
    assert_eq!(&b[HEADER_LEN..a.len()], &a[HEADER_LEN..]);
    assert_eq!(&b[a.len()..], &[2, 0, 0, 0, b'{', b'}']);
}
