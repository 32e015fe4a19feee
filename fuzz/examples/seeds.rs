//! Writes the seed corpora under `fuzz/corpus/<target>/` (committed; small by design):
//! `cargo run -p fuzz-bodies --example seeds`. The fuzzer grows its working corpus from
//! these in `target/fuzz/corpus/`, which is not committed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use wire::message::{Eval, EvalJson, Hello, Invalidate, Server, Tool};
use wire::{Reply, Request, encode_reply, encode_request};

fn eval() -> Eval {
    Eval {
        user_id: "alice".into(),
        roles: vec!["developer".into()],
        teams: vec!["platform".into()],
        action: "tool:invoke".into(),
        tool: Some(Tool { name: "github_search".into(), sensitivity_level: Some("medium".into()), owner: Some("bob".into()), managers: vec![], teams: vec!["platform".into()] }),
        server: Some(Server { id: "srv-1".into(), name: Some("github".into()), owner_id: None, teams: vec![], managed_by_team: None }),
        client_ip: Some("10.1.2.3".into()),
        mfa_verified: Some(true),
        parameters_json: Some(r#"{"query":"x","api_key":"k"}"#.into()),
        context_json: Some(r#"{"audit_enabled":true,"request_id":"r1","rate_limit_data":{"minute_count":1}}"#.into()),
        ..Eval::default()
    }
}

fn tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, text) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, text.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let requests = [
        ("hello", Request::Hello(Hello { version: 1, max_payload: 1 << 20, token: Some("caller-token-0123456789".into()) })),
        ("eval", Request::Eval(Box::new(eval()))),
        ("eval_explain", Request::EvalExplain(Box::new(eval()), wire::Explain::Full)),
        ("eval_batch", Request::EvalBatch(vec![eval(), Eval { user_id: "bob".into(), action: "tool:list".into(), ..Eval::default() }])),
        ("eval_json", Request::EvalJson(EvalJson { entrypoint: "data.sark.decision".into(), input_json: r#"{"user":{"id":"a"},"action":"tool:list"}"#.into() })),
        ("ping", Request::Ping(b"ping".to_vec())),
        ("invalidate", Request::Invalidate(Invalidate::User("alice".into()))),
    ];
    let mut stream = Vec::new();
    for (name, r) in &requests {
        let mut f = Vec::new();
        encode_request(&mut f, 1, r);
        stream.extend_from_slice(&f);
        // opcode's layout: opcode, two flag bytes, payload.
        let mut o = vec![*f.get(5).unwrap(), *f.get(6).unwrap(), *f.get(7).unwrap()];
        o.extend_from_slice(f.get(wire::HEADER_LEN..).unwrap());
        put("opcode", name, &o);
    }
    put("frame", "all_requests", &stream);
    let mut replies = Vec::new();
    encode_reply(&mut replies, 2, &Reply::Pong(b"x".to_vec()));
    encode_reply(&mut replies, 3, &Reply::Invalidated(true));
    encode_reply(&mut replies, 4, &Reply::Result(Some("true".into())));
    let explained = wire::message::Decision { allow: false, reasons: vec![wire::message::Reason { code: 0, text: "rbac: no".into() }], ..Default::default() };
    encode_reply(&mut replies, 5, &Reply::Explanation(explained, r#"{"level":"notes","policies":[]}"#.into()));
    put("frame", "replies", &replies);
    let mut one = Vec::new();
    encode_request(&mut one, 9, &Request::Eval(Box::new(eval())));
    put("frame", "eval", &one);
    let mut payload = Vec::new();
    encode_request(&mut payload, 1, &Request::Eval(Box::new(eval())));
    put("input", "eval_payload", payload.get(wire::HEADER_LEN..).unwrap());
    put("input", "document", include_bytes!("../../shard/samples/invoke-medium.json"));
    put("input", "critical", include_bytes!("../../shard/samples/invoke-critical-viewer.json"));
    let body = r#"{"input":{"user":{"id":"alice","roles":["developer"]},"action":"tool:invoke","tool":{"name":"t","sensitivity_level":"low"}}}"#;
    let post = |path: &str, body: &str| format!("POST {path} HTTP/1.1\r\nHost: pdp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    put("http", "opa_data", post("/v1/data/mcp/allow", body).as_bytes());
    put("http", "authzen", post("/access/v1/evaluation", r#"{"subject":{"type":"user","id":"alice","properties":{"roles":["developer"]}},"action":{"name":"tool:invoke"},"resource":{"type":"tool","id":"t","properties":{"sensitivity_level":"low"}},"context":{}}"#).as_bytes());
    put("http", "authzen_batch", post("/access/v1/evaluations", r#"{"subject":{"type":"user","id":"alice"},"action":{"name":"tool:invoke"},"evaluations":[{"resource":{"type":"tool","id":"a"}},{"resource":{"type":"tool","id":"b"}}],"options":{"evaluations_semantic":"deny_on_first_deny"}}"#).as_bytes());
    put("http", "sark_evaluate", post("/api/v1/policy/evaluate", r#"{"user_id":"alice","action":"tool:invoke","tool":"t","context":{}}"#).as_bytes());
    put("http", "get_health", b"GET /health HTTP/1.1\r\nHost: pdp\r\n\r\n");
    let policy = "package sark\n\ndecision := {\"allow\": allow, \"reasons\": []}\n\ndefault allow := false\n\nallow if input.user.id == data.users[_]\n";
    let manifest = r#"{"revision":"r1","roots":["sark","users"]}"#;
    let files = [(".manifest", manifest), ("policy.rego", policy), ("users/data.json", r#"["alice"]"#)];
    let mut t = vec![0u8];
    t.extend_from_slice(&tar(&files));
    put("bundle_tar", "small", &t);
    let mut t = vec![0u8];
    t.extend_from_slice(&tar(&[("a/b/policy.rego", policy)]));
    put("bundle_tar", "nested", &t);
    let mut gz = vec![1u8];
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, &tar(&files)).unwrap();
    gz.extend_from_slice(&enc.finish().unwrap());
    put("bundle_tar", "gzipped", &gz);
    let dir = |files: &[(&str, &str)]| files.iter().flat_map(|(p, t)| [p.as_bytes(), b"\0", t.as_bytes(), b"\0"].concat()).collect::<Vec<u8>>();
    put("bundle_dir", "small", &dir(&files));
    put("bundle_dir", "nested", &dir(&[("a/b/policy.rego", policy), ("a/data.json", r#"{"b":{"x":1}}"#)]));
    put("bundle_dir", "cases", &dir(&[("policy.rego", policy), ("cases/one.yaml", "cases: []\n")]));
}
