//! Issue 9's bad-input corpus: one table of hostile inputs per front door, each with its
//! documented answer (an ERROR code and whether the connection closes, an HTTP status, or
//! a deny). After each, a fresh connection still gets a PONG and an allow for a good
//! question; each table runs twelve times, and the server's memory after the last round
//! stays within 16 MiB of the highest of the first three; at the end the audit log shows that no hostile input
//! was ever allowed.
//! A JSON object that names a key twice is refused everywhere (`pdp::json_guard`): a deny
//! with `bad_input` in a binary EVAL's JSON parts, 400 over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::web::{exchange, request, sample_input};
use common::{Server, raw, replies};
use serde_json::{Value, json};
use wire::message::Eval;
use wire::{Client, HEADER_LEN, Reply, Request};

/// What a hostile input must get.
#[derive(Debug)]
enum Want {
    /// An ERROR with this code, then the connection closes (true) or goes on (false).
    Error(u16, bool),
    /// A DECISION that denies.
    Deny,
    /// Nothing: the server waits for the rest, and the client goes away.
    Nothing,
}

/// Rounds of each table, and how far the server's memory may rise past the highest of
/// the first three rounds by the last. A coarse bound: mimalloc keeps freed segments, so
/// one round can sit ~10 MiB above another with nothing kept; keeping each round's
/// hostile inputs (~3 MiB) would pass it by the ninth round after.
const ROUNDS: usize = 12;
const MAX_GROWTH_KIB: u64 = 16 << 10;

fn assert_grows_less_than(rss: &[u64], max: u64) {
    let warm = rss.iter().take(3).copied().max().unwrap_or(0);
    let last = rss.last().copied().unwrap_or(0);
    assert!(last <= warm + max, "the server's RSS rose from {warm} KiB (the highest of rounds 1-3) to {last} KiB after round {}: {rss:?}", rss.len());
}

fn frame(id: u64, req: &Request) -> Vec<u8> {
    let mut b = Vec::new();
    wire::encode_request(&mut b, id, req);
    b
}

fn eval_frame(id: u64, e: Eval) -> Vec<u8> {
    frame(id, &Request::Eval(Box::new(e)))
}

fn hostile(n: usize) -> Eval {
    Eval::example(format!("hostile-{n}"))
}

fn with_context(n: usize, context: String) -> Eval {
    Eval { context_json: Some(context), ..hostile(n) }
}

/// `{"a":{"a":…1…}}`, `depth` objects deep.
fn nested(depth: usize) -> String {
    format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
}

/// The good question still works on a fresh connection.
fn still_serves(server: &Server, n: usize) {
    let mut c = Client::connect(server.addr, None).unwrap();
    c.set_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(c.ping(b"alive").unwrap(), b"alive");
    assert!(c.eval(Eval::example(format!("good-{n}"))).unwrap().allow, "the good question after case {n}");
}

#[test]
fn hostile_frames_get_their_documented_answer_and_never_an_allow() {
    let server = Server::start_with("hostile-binary", &["--shards", "1", "--max-connections", "16"]);
    let good = eval_frame(1, hostile(0));
    // The user id's first byte is at HEADER_LEN + 4 (after its u32 length); the roles'
    // count right after the user id.
    let user_at = HEADER_LEN + 4;
    let roles_at = user_at + "hostile-0".len();
    let patched = |at: usize, bytes: &[u8]| {
        let mut f = good.clone();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    };
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"xx");
    let len = u32::from_le_bytes(trailing[0..4].try_into().unwrap()) + 2;
    trailing[0..4].copy_from_slice(&len.to_le_bytes());
    let mut bad_version = good.clone();
    bad_version[4] = 99;
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        ("a header cut short", good[..7].to_vec(), Want::Nothing),
        ("a payload cut short", good[..good.len() - 5].to_vec(), Want::Nothing),
        ("a length over the maximum", { let mut f = good.clone(); f[0..4].copy_from_slice(&(64u32 << 20).to_le_bytes()); f }, Want::Error(3001, true)),
        ("a negative (u32::MAX) length", { let mut f = good.clone(); f[0..4].copy_from_slice(&u32::MAX.to_le_bytes()); f }, Want::Error(3001, true)),
        ("an unsupported version", bad_version, Want::Error(3002, true)),
        ("trailing bytes after the EVAL", trailing, Want::Error(3004, true)),
        ("invalid UTF-8 in the user id", patched(user_at, &[0xff, 0xfe]), Want::Error(3004, true)),
        ("a roles count of u32::MAX", patched(roles_at, &u32::MAX.to_le_bytes()), Want::Error(3004, true)),
        ("a batch of 4,097", frame(1, &Request::EvalBatch((0..4097).map(|_| Eval { context_json: None, parameters_json: None, ..hostile(1) }).collect())), Want::Error(3005, false)),
        ("context nested 10,000 deep", eval_frame(1, with_context(2, nested(10_000))), Want::Deny),
        ("context that is not JSON", eval_frame(1, with_context(3, r#"{"vpn": tru"#.into())), Want::Deny),
        ("context of the wrong type", eval_frame(1, with_context(4, r#"["vpn", true]"#.into())), Want::Deny),
        ("a type-checked context field of the wrong type", eval_frame(1, with_context(5, r#"{"audit_enabled": true, "rate_limit_data": "lots"}"#.into())), Want::Deny),
        ("audit_enabled as a string where a high tool needs it", eval_frame(1, {
            let mut e = with_context(12, r#"{"audit_enabled": "true", "vpn": true}"#.into());
            if let Some(t) = e.tool.as_mut() {
                t.sensitivity_level = Some("high".into());
            }
            e
        }), Want::Deny),
        ("a key named twice in the context", eval_frame(1, with_context(6, r#"{"vpn": false, "audit_enabled": true, "geo_country": "US", "vpn": true}"#.into())), Want::Deny),
        ("a key named twice in the parameters", eval_frame(1, Eval { parameters_json: Some(r#"{"ticket_id": "T-1", "ticket_id": "T-2"}"#.into()), ..hostile(11) }), Want::Deny),
        ("parameters nested 10,000 deep", eval_frame(1, Eval { parameters_json: Some(nested(10_000)), ..hostile(7) }), Want::Deny),
        ("50,000 roles, none of them real", eval_frame(1, Eval { roles: (0..50_000).map(|i| format!("r{i}")).collect(), ..hostile(8) }), Want::Deny),
        ("an empty user id and action", eval_frame(1, Eval { user_id: String::new(), action: String::new(), ..hostile(10) }), Want::Deny),
        // Otherwise allowed questions, refused for an identifier past its limit (1 KiB, 1,024 items).
        ("a 512 KiB user id", eval_frame(1, Eval { user_id: "u".repeat(512 << 10), ..hostile(13) }), Want::Deny),
        ("2,000 roles, one of them real", eval_frame(1, Eval { roles: std::iter::once("developer".to_string()).chain((0..1999).map(|i| format!("r{i}"))).collect(), ..hostile(14) }), Want::Deny),
    ];
    // The table twelve times over: once the first rounds have warmed the allocator and
    // the cache, later rounds must not grow the server's memory (nothing kept per input).
    let mut rss = Vec::new();
    for _round in 0..ROUNDS {
    for (n, (name, bytes, want)) in cases.iter().enumerate() {
        let (name, want) = (*name, want);
        let got = match want {
            Want::Nothing => {
                let mut s = TcpStream::connect(server.addr).unwrap();
                s.write_all(bytes).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
                assert!(replies(&rest).is_empty(), "{name}: {:?}", replies(&rest));
                Vec::new()
            }
            _ => {
                let mut with_ping = bytes.clone();
                with_ping.extend(frame(2, &Request::Ping(b"after".to_vec())));
                replies(&raw(server.addr, &with_ping))
            }
        };
        match *want {
            Want::Nothing => {}
            Want::Error(code, closes) => {
                assert!(matches!(&got[0].1, Reply::Error(e) if e.code == code), "{name}: want ERROR {code}, got {got:?}");
                let pong = got.get(1).is_some_and(|r| r.1 == Reply::Pong(b"after".to_vec()));
                assert_eq!(pong, !closes, "{name}: the connection {} after the error: {got:?}", if closes { "closes" } else { "goes on" });
            }
            Want::Deny => {
                let Reply::Decision(d) = &got[0].1 else { panic!("{name}: want a DECISION, got {got:?}") };
                assert!(!d.allow, "{name}: allowed! {d:?}");
                assert_eq!(got.get(1).map(|r| &r.1), Some(&Reply::Pong(b"after".to_vec())), "{name}: the connection goes on");
            }
        }
        still_serves(&server, n);
    }
    rss.push(server.rss_kib());
    }
    assert_grows_less_than(&rss, MAX_GROWTH_KIB);

    // An empty batch: an empty DECISION_BATCH, and the connection goes on.
    let mut empty = frame(12, &Request::EvalBatch(Vec::new()));
    empty.extend(frame(13, &Request::Ping(Vec::new())));
    assert_eq!(replies(&raw(server.addr, &empty)), [(12, Reply::DecisionBatch(Vec::new())), (13, Reply::Pong(Vec::new()))]);

    // A request id used twice: both answered, in order, under that id.
    let mut twice = eval_frame(9, Eval::example("good-twice"));
    twice.extend(eval_frame(9, Eval::example("good-twice")));
    twice.extend(frame(10, &Request::Ping(Vec::new())));
    let got = replies(&raw(server.addr, &twice));
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), [9, 9, 10]);
    assert!(got[..2].iter().all(|r| matches!(&r.1, Reply::Decision(d) if d.allow)), "{got:?}");

    // Half-closed: the client shuts its side after the EVAL; the answer still comes.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(&eval_frame(11, Eval::example("good-half-closed"))).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(matches!(&replies(&rest)[..], [(11, Reply::Decision(d))] if d.allow), "{:?}", replies(&rest));

    // A connection flood past --max-connections 16: the extra ones are closed at once,
    // the ones held keep working, and once they go a new one is served.
    let mut held: Vec<Client> = (0..16).map(|_| Client::connect(server.addr, None).unwrap()).collect();
    for _ in 0..8 {
        let mut extra = TcpStream::connect(server.addr).unwrap();
        extra.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = extra.write_all(&frame(1, &Request::Ping(Vec::new())));
        let mut rest = Vec::new();
        let _ = extra.read_to_end(&mut rest);
        assert!(replies(&rest).is_empty(), "a connection past the limit was served");
    }
    assert_eq!(held[15].ping(b"held").unwrap(), b"held");
    held.clear();
    std::thread::sleep(Duration::from_millis(200));
    still_serves(&server, 99);

    // No hostile input was allowed: every allow in the audit log is a good question's.
    let records = server.stop();
    assert!(records.iter().any(|r| r["user_id"].as_str().unwrap().starts_with("hostile-")), "the hostile decisions were audited too");
    for r in &records {
        let user = r["user_id"].as_str().unwrap_or("");
        if r["allow"] == true {
            assert!(user.starts_with("good-"), "an allow for {user}: {r}");
        }
    }
}

#[test]
fn hostile_http_bodies_get_their_documented_answer_and_never_an_allow() {
    let server = Server::start_with("hostile-http", &["--shards", "1"]);
    let post = |path: &str, body: &[u8]| {
        let mut raw = format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len()).into_bytes();
        raw.extend_from_slice(body);
        exchange(server.http, &raw, 1).pop().expect("no response")
    };
    let input = |f: &dyn Fn(&mut Value)| {
        let mut v = sample_input();
        v["context"].as_object_mut().unwrap().remove("now_ns");
        v["user"]["id"] = json!("hostile");
        f(&mut v);
        json!({ "input": v }).to_string().into_bytes()
    };
    let mut invalid_utf8 = input(&|_| {});
    let at = invalid_utf8.windows(7).position(|w| w == b"hostile").unwrap();
    invalid_utf8[at] = 0xff;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("nested 10,000 deep", format!(r#"{{"input": {}}}"#, nested(10_000)).into_bytes(), 400),
        ("invalid UTF-8", invalid_utf8, 400),
        ("not JSON", b"{\"input\": {".to_vec(), 400),
        ("an input that is an array", br#"{"input": [1, 2]}"#.to_vec(), 200),
        ("roles of the wrong type", input(&|v| v["user"]["roles"] = json!("developer")), 200),
        ("a user id of the wrong type", input(&|v| v["user"]["id"] = json!({"id": "alice"})), 200),
        ("50,000 roles, none of them real", input(&|v| v["user"]["roles"] = json!((0..50_000).map(|i| format!("r{i}")).collect::<Vec<_>>())), 200),
        ("a 512 KiB user id", input(&|v| v["user"]["id"] = json!("u".repeat(512 << 10))), 200),
        ("2,000 roles, one of them real", input(&|v| v["user"]["roles"] = json!(std::iter::once("developer".to_string()).chain((0..1999).map(|i| format!("r{i}"))).collect::<Vec<_>>())), 200),
        ("a key named twice", {
            let body = String::from_utf8(input(&|v| v["user"]["roles"] = json!([]))).unwrap();
            body.replacen(r#""roles":[]"#, r#""roles":[],"roles":["developer"]"#, 1).into_bytes()
        }, 400),
    ];
    let mut rss = Vec::new();
    for _round in 0..ROUNDS {
    for (name, body, status) in &cases {
        let (name, status) = (*name, *status);
        for path in ["/v1/data/mcp/allow", "/v1/data/sark/decision"] {
            let r = post(path, body);
            assert_eq!(r.status, status, "{name} at {path}: {}", String::from_utf8_lossy(&r.body));
            if status == 200 {
                let result = &r.json()["result"];
                let allowed = if path.ends_with("allow") { result.as_bool() } else { result["allow"].as_bool() };
                assert_eq!(allowed, Some(false), "{name} at {path}: allowed! {result}");
            }
        }
        // The front door still answers a good question.
        let good = request("POST", "/v1/data/mcp/allow", &String::from_utf8(input(&|v| v["user"]["id"] = json!("good"))).unwrap(), "connection: close\r\n");
        let r = exchange(server.http, &good, 1).pop().unwrap();
        assert_eq!(r.json()["result"], true, "{name}: the good question after it");
    }
    rss.push(server.rss_kib());
    }
    assert_grows_less_than(&rss, MAX_GROWTH_KIB);
    let records = server.stop();
    for r in &records {
        if r["allow"] == true {
            assert_eq!(r["user_id"], "good", "{r}");
        }
    }
}
