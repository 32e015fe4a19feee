//! `wire::Client` against a stand-in server thread that speaks the protocol with this
//! crate's own codec. It stands in for `sark-pdp serve` until the server exists (issue 3);
//! it answers the frames of each read in reverse order, so replies arrive out of order
//! and the client must match them by request id.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use wire::message::{Decision, ErrorReply, Eval, HelloOk, MAX_BATCH, Reason};
use wire::{Check, Client, ClientError, DEFAULT_MAX_PAYLOAD, HEADER_LEN, Reply, Request, check, decode_request, encode_reply};

fn decide(e: &Eval) -> Decision {
    Decision {
        allow: e.user_id == "alice",
        reasons: vec![Reason {
            code: 0,
            text: format!("user {}", e.user_id),
        }],
        ..Decision::default()
    }
}

fn answer(request: Request) -> Option<Reply> {
    Some(match request {
        Request::Hello(h) => Reply::HelloOk(Box::new(HelloOk {
            version: h.version,
            max_payload: h.max_payload.min(DEFAULT_MAX_PAYLOAD),
            max_batch: MAX_BATCH,
            shards: 1,
            shard: 0,
            bundle_revision: "stand-in".into(),
            driver: "epoll".into(),
            route: wire::route::ROUTE_FNV1A64_FMIX,
            shard_ports: Vec::new(),
        })),
        Request::Eval(e) if e.user_id == "hang-up" => return None,
        Request::Eval(e) => Reply::Decision(decide(&e)),
        // "old-server": one that predates explain, which ignores the flags.
        Request::EvalExplain(e, _) if e.user_id == "old-server" => Reply::Decision(decide(&e)),
        Request::EvalExplain(e, level) => Reply::Explanation(decide(&e), format!(r#"{{"level":"{}"}}"#, level.as_str())),
        Request::EvalBatch(items) => Reply::DecisionBatch(items.iter().map(decide).collect()),
        Request::EvalJson(j) if j.entrypoint == "data.mcp.allow" => Reply::Result(Some("true".into())),
        Request::EvalJson(j) => Reply::Error(ErrorReply {
            code: 1001,
            message: format!("unknown entrypoint {}", j.entrypoint),
        }),
        Request::Ping(b) => Reply::Pong(b),
        Request::Invalidate(_) => Reply::Invalidated(true),
    })
}

fn serve(mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut replies = Vec::new();
        while let Check::Complete { header, total } = check(&buf, DEFAULT_MAX_PAYLOAD).unwrap() {
            let req = decode_request(&header, &buf[HEADER_LEN..total]).unwrap();
            buf.drain(..total);
            match answer(req) {
                Some(reply) => replies.push((header.request_id, reply)),
                None => return, // hang up
            }
        }
        let mut out = Vec::new();
        for (id, reply) in replies.into_iter().rev() {
            encode_reply(&mut out, id, &reply);
        }
        if s.write_all(&out).is_err() {
            return;
        }
    }
}

fn stand_in() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let s = s.unwrap();
            std::thread::spawn(move || serve(s));
        }
    });
    addr
}

fn user(id: &str) -> Eval {
    Eval {
        user_id: id.into(),
        action: "tool:invoke".into(),
        ..Eval::default()
    }
}

#[test]
fn hello_eval_batch_json_and_ping() {
    let mut c = Client::connect(stand_in(), Some("token")).unwrap();
    assert_eq!(c.hello().bundle_revision, "stand-in");
    assert!(c.eval(user("alice")).unwrap().allow);
    assert!(!c.eval(user("bob")).unwrap().allow);
    let batch: Vec<Eval> = (0..1000).map(|i| user(if i % 3 == 0 { "alice" } else { "bob" })).collect();
    let got = c.eval_batch(batch).unwrap();
    assert_eq!(got.len(), 1000);
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d.allow, i % 3 == 0, "item {i} out of order");
    }
    assert_eq!(c.eval_json("data.mcp.allow", "{}").unwrap().as_deref(), Some("true"));
    assert_eq!(c.ping(b"xyz").unwrap(), b"xyz");
}

#[test]
fn an_explained_eval_returns_the_decision_and_its_explanation_and_copes_with_an_older_server() {
    let mut c = Client::connect(stand_in(), None).unwrap();
    let (d, json) = c.eval_explain(user("alice"), wire::Explain::Full).unwrap();
    assert!(d.allow);
    assert_eq!(json.as_deref(), Some(r#"{"level":"full"}"#));
    let (d, json) = c.eval_explain(user("old-server"), wire::Explain::Notes).unwrap();
    assert!(!d.allow);
    assert_eq!(json, None, "a plain DECISION: no explanation, the decision all the same");
}

#[test]
fn ten_thousand_pipelined_requests_come_back_matched_by_id() {
    let mut c = Client::connect(stand_in(), None).unwrap();
    let mut expect = std::collections::HashMap::new();
    for i in 0..10_000u32 {
        let name = format!("user-{i}");
        let id = c.send(&Request::Eval(Box::new(user(&name)))).unwrap();
        expect.insert(id, name);
    }
    c.flush().unwrap();
    for _ in 0..10_000 {
        let (id, reply) = c.recv().unwrap();
        let Reply::Decision(d) = reply else { panic!("not a decision") };
        let name = expect.remove(&id).expect("reply to an unknown or repeated id");
        assert_eq!(d.reasons[0].text, format!("user {name}"));
    }
    assert!(expect.is_empty());
}

#[test]
fn server_errors_and_hang_ups_are_errors_not_decisions() {
    let mut c = Client::connect(stand_in(), None).unwrap();
    match c.eval_json("data.nope", "{}") {
        Err(ClientError::Server(e)) => assert_eq!(e.code, 1001),
        other => panic!("{other:?}"),
    }
    assert!(matches!(c.eval(user("hang-up")), Err(ClientError::Closed)));
}
