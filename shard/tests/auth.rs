//! Caller authentication (`--caller-token`): the binary protocol answers nothing but a
//! HELLO that carries the caller token (or the admin token) and closes on anything else;
//! HTTP answers 401 without `Authorization: Bearer` of either, /health excepted. A refused
//! caller never gets a decision, and none is made or audited for it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::web::{call, exchange, request, sample_input};
use common::{Server, error_code, raw, replies};
use wire::message::{ERROR_UNAUTHORIZED, Eval, Hello, Invalidate};
use wire::{Client, Request};

const CALLER: &str = "caller-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn start(tag: &str) -> Server {
    Server::start_with(tag, &["--shards", "1", "--caller-token", CALLER, "--admin-token", ADMIN, "--admin-listen", "127.0.0.1:0"])
}

fn hello(token: Option<&str>) -> Request {
    Request::Hello(Hello { version: wire::VERSION, max_payload: wire::DEFAULT_MAX_PAYLOAD, token: token.map(str::to_string) })
}

#[test]
fn the_binary_protocol_needs_the_caller_token_in_hello() {
    let server = start("auth-binary");
    let eval = Request::Eval(Box::new(Eval::example("alice")));
    // Before any HELLO, and after a HELLO without the token or with a wrong one: one
    // ERROR 3006 for the first request that is not an accepted HELLO, then the connection
    // closes (what was pipelined after it is never read).
    for first in [None, Some(hello(None)), Some(hello(Some("wrong-token-0123456789"))), Some(hello(Some(&CALLER[..CALLER.len() - 1])))] {
        let mut bytes = Vec::new();
        let offered = first.is_some();
        if let Some(h) = &first {
            wire::encode_request(&mut bytes, 1, h);
        }
        wire::encode_request(&mut bytes, 2, &eval);
        wire::encode_request(&mut bytes, 3, &Request::Ping(b"x".to_vec()));
        let got = replies(&raw(server.addr, &bytes));
        assert_eq!(got.len(), 1, "{first:?}: {got:?}");
        assert_eq!((got[0].0, error_code(&got[0].1)), (if offered { 1 } else { 2 }, ERROR_UNAUTHORIZED), "{got:?}");
    }
    // The caller token: decisions, but no INVALIDATE.
    let mut c = Client::connect(server.addr, Some(CALLER)).unwrap();
    assert!(c.eval(Eval::example("alice")).unwrap().allow);
    assert!(c.invalidate(Invalidate::All).is_err(), "INVALIDATE needs the admin token");
    // The admin token is a caller too.
    let mut a = Client::connect(server.addr, Some(ADMIN)).unwrap();
    assert!(a.eval(Eval::example("bob")).unwrap().allow);
    assert!(a.invalidate(Invalidate::All).unwrap());
    // Only the two accepted callers' decisions were made and audited.
    let users: Vec<String> = server.stop().iter().map(|r| r["user_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(users, ["alice", "bob"]);
}

#[test]
fn http_needs_the_caller_token_as_a_bearer_token_except_for_health() {
    let server = start("auth-http");
    let body = serde_json::json!({ "input": sample_input() }).to_string();
    let ask = |headers: &str| exchange(server.http, &request("POST", "/v1/data/mcp/allow", &body, &format!("{headers}connection: close\r\n")), 1).pop().expect("no response");
    for refused in ["", "authorization: Bearer wrong-token-0123456789\r\n", &format!("authorization: {CALLER}\r\n"), &format!("authorization: Bearer {CALLER}x\r\n")] {
        let r = ask(refused);
        assert_eq!((r.status, r.json()["code"].as_str()), (401, Some("unauthorized")), "{refused:?}");
        assert!(r.json().get("result").is_none());
    }
    for token in [CALLER, ADMIN] {
        let r = ask(&format!("authorization: Bearer {token}\r\n"));
        assert_eq!((r.status, r.json()["result"].as_bool()), (200, Some(true)), "{token}");
    }
    // Every door but /health needs it: AuthZEN, SARK's own, the metrics.
    for (m, p) in [("POST", "/access/v1/evaluation"), ("POST", "/api/v1/policy/evaluate"), ("GET", "/metrics"), ("GET", "/v1/data/sark/decision")] {
        assert_eq!(call(server.http, m, p, "{}").status, 401, "{m} {p}");
    }
    for p in ["/health", "/health/live", "/health/ready"] {
        assert_eq!(call(server.http, "GET", p, "").status, 200, "{p}");
    }
    assert_eq!(server.stop().len(), 2, "a decision per accepted request, none for the refused ones");
}

#[test]
fn a_short_caller_token_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sark-pdp"))
        .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "off", "--caller-token", "short"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("caller token must be at least 16 characters"), "{}", String::from_utf8_lossy(&out.stderr));
}
