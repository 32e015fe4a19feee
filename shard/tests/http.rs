//! The HTTP front door as a black box: the real binary, raw HTTP/1.1 over real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::time::Duration;

use common::Server;
use common::web::{call, exchange, request, sample_input};
use serde_json::{Value, json};

#[test]
fn opa_data_api_answers_as_opa_and_sark_expect() {
    let server = Server::start("http-opa");
    let a = server.http;
    let input = json!({"input": sample_input()}).to_string();

    let r = call(a, "GET", "/health", "");
    assert_eq!((r.status, r.json()), (200, json!({})));
    assert_eq!(call(a, "GET", "/health/ready", "").status, 200);
    assert_eq!(call(a, "GET", "/health/live", "").status, 200);

    // SARK's legacy paths: a bool, an object, on the decision path (audited: a decision id).
    let r = call(a, "POST", "/v1/data/mcp/allow", &input).json();
    assert_eq!(r["result"], true);
    assert_eq!(r["decision_id"].as_str().unwrap().len(), 32);
    let r = call(a, "POST", "/v1/data/mcp/result", &input).json();
    assert_eq!(r["result"]["allow"], true);
    assert_eq!(r["result"]["filtered_parameters"], json!({"ticket_id": "T-42", "status": "closed"}));
    let r = call(a, "POST", "/v1/data/sark/decision?metrics=true", &input).json();
    assert_eq!(r["result"]["allow"], true);
    let m = &r["metrics"];
    let ns = |k: &str| m[k].as_u64().unwrap_or_else(|| panic!("no {k} in {m}"));
    // OPA's timers for what we do per request: the body's parse and the decision point,
    // two disjoint parts of the handler; nothing else (no query is parsed or compiled).
    assert!(ns("timer_rego_input_parse_ns") > 0 && ns("timer_rego_query_eval_ns") > 0, "{m}");
    assert!(ns("timer_server_handler_ns") >= ns("timer_rego_input_parse_ns") + ns("timer_rego_query_eval_ns"), "{m}");
    assert_eq!(m.as_object().unwrap().len(), 3, "{m}");
    // No body, no input parse; another entrypoint is timed by its evaluator.
    let g = call(a, "GET", "/v1/data/sark/classification/level?metrics=true", "").json();
    assert!(g["metrics"].get("timer_rego_input_parse_ns").is_none() && g["metrics"]["timer_rego_query_eval_ns"].as_u64().unwrap() > 0, "{g}");
    assert!(g["metrics"]["timer_server_handler_ns"].as_u64().unwrap() >= g["metrics"]["timer_rego_query_eval_ns"].as_u64().unwrap(), "{g}");
    assert_eq!(call(a, "POST", "/v1/data/sark/gateway/allow", &input).json(), json!({"result": false}));
    assert_eq!(call(a, "POST", "/v1/data/mcp/gateway/a2a/result", &input).json()["result"]["allow"], false);
    // Undefined is {}; GET has no input; v0 answers the bare value, 404 when undefined.
    assert_eq!(call(a, "GET", "/v1/data/sark/rbac/applies", "").json(), json!({}));
    assert_eq!(call(a, "GET", "/v1/data/sark/classification/level", "").json(), json!({"result": "medium"}));
    let v0 = call(a, "POST", "/v0/data/mcp/allow", &sample_input().to_string());
    assert_eq!((v0.status, v0.json()), (200, json!(true)));
    assert_eq!(call(a, "POST", "/v0/data/sark/rbac/applies", "{}").status, 404);
    // Errors in OPA's shape.
    let bad = call(a, "POST", "/v1/data/mcp/allow", "{nope");
    assert_eq!((bad.status, bad.json()["code"].as_str()), (400, Some("invalid_parameter")));
    let deep = format!("{{\"input\": {}{}}}", "[".repeat(5000), "]".repeat(5000));
    assert_eq!(call(a, "POST", "/v1/data/mcp/allow", &deep).status, 400);
    let unknown = call(a, "POST", "/v1/data/no/such/rule", &input);
    assert_eq!((unknown.status, unknown.json()["code"].as_str()), (404, Some("undefined_document")));

    // mcp.allow and mcp.result are answered from SARK's decision: for every shipped case
    // they equal what the bundle's own mcp rules evaluate to.
    let bundle = pdp::Bundle::embedded().unwrap();
    let compiled = std::sync::Arc::new(pdp::CompiledBundle::compile(&bundle, pdp::EvalLimits::default()).unwrap());
    let mut local = pdp::Evaluator::new(compiled, pdp::EnginePreference::Fastest);
    let mut compared = 0;
    for case in pdp::cases::load(&bundle).unwrap() {
        if case.entrypoint != pdp::bundle::DECISION_ENTRYPOINT || case.input["context"].get("now_ns").is_none() {
            continue;
        }
        let body = json!({"input": case.input}).to_string();
        for (path, rule) in [("/v1/data/mcp/allow", "data.mcp.allow"), ("/v1/data/mcp/result", "data.mcp.result")] {
            let remote = call(a, "POST", path, &body).json().get("result").cloned();
            let value = pdp::eval::input_from_json(&case.input.to_string()).unwrap();
            let mine = match local.evaluate(rule, value) {
                Ok((v, _)) => pdp::decision::value_to_json(&v),
                Err(pdp::EvalError::Undefined(_)) => None,
                Err(e) => panic!("{}: {e}", case.name),
            };
            assert_eq!(remote, mine, "case {} on {path}", case.name);
            compared += 1;
        }
    }
    assert!(compared >= 200, "only {compared} comparisons");

    // Every decision answered on the decision path was audited exactly once.
    let records = server.stop();
    let ids: std::collections::BTreeSet<&str> = records.iter().map(|r| r["decision_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), records.len(), "a decision was audited twice");
    // mcp/allow, mcp/result, sark/decision, v0 mcp/allow, plus the per-case calls.
    assert_eq!(records.len(), 4 + compared);
}

fn authzen_request(user: &str, roles: &[&str]) -> Value {
    json!({
        "subject": {"type": "user", "id": user, "properties": {"roles": roles, "teams": ["payments"], "mfa_verified": true, "mfa_age_s": 60}},
        "action": {"name": "tool:invoke", "properties": {"parameters": {"ticket_id": "T-1", "api_token": "x"}}},
        "resource": {"type": "tool", "id": "update_ticket", "properties": {"sensitivity_level": "medium", "teams": ["payments"]}},
        "context": {"client_ip": "10.20.30.40", "vpn": true, "audit_enabled": true, "geo_country": "US"}
    })
}

#[test]
fn authzen_and_sark_endpoints() {
    let server = Server::start("http-authzen");
    let a = server.http;
    let conf = call(a, "GET", "/.well-known/authzen-configuration", "").json();
    assert_eq!(conf["policy_decision_point"], "http://pdp.test");
    assert_eq!(conf["access_evaluation_endpoint"], "http://pdp.test/access/v1/evaluation");
    assert_eq!(conf["access_evaluations_endpoint"], "http://pdp.test/access/v1/evaluations");

    let allow = exchange(a, &request("POST", "/access/v1/evaluation", &authzen_request("alice", &["developer"]).to_string(), "x-request-id: r-77\r\n"), 1)
        .pop()
        .unwrap();
    assert_eq!(allow.header("x-request-id"), Some("r-77"));
    let v = allow.json();
    assert_eq!(v["decision"], true, "{v}");
    assert_eq!(v["context"]["filtered_parameters"], json!({"ticket_id": "T-1"}));
    let deny = call(a, "POST", "/access/v1/evaluation", &authzen_request("vic", &["viewer"]).to_string());
    assert_eq!((deny.status, deny.json()["decision"].clone()), (200, json!(false)));
    assert!(!deny.json()["context"]["reasons"].as_array().unwrap().is_empty());
    let bad = call(a, "POST", "/access/v1/evaluation", r#"{"action": {"name": "x"}}"#);
    assert_eq!(bad.status, 400);
    assert!(bad.json()["message"].as_str().unwrap().contains("subject"));

    // Batch: defaults at the top level, an item's subject overrides; allow, deny, allow.
    let items = json!([{}, {"subject": {"type": "user", "id": "vic", "properties": {"roles": ["viewer"]}}}, {}]);
    let base = authzen_request("alice", &["developer"]);
    for (semantic, want) in [
        ("execute_all", vec![true, false, true]),
        ("deny_on_first_deny", vec![true, false]),
        ("permit_on_first_permit", vec![true]),
    ] {
        let mut req = base.clone();
        req["evaluations"] = items.clone();
        req["options"] = json!({"evaluations_semantic": semantic});
        let got = call(a, "POST", "/access/v1/evaluations", &req.to_string()).json();
        let decisions: Vec<bool> = got["evaluations"].as_array().unwrap().iter().map(|e| e["decision"].as_bool().unwrap()).collect();
        assert_eq!(decisions, want, "{semantic}");
    }

    // SARK's own endpoints and shapes.
    let user = json!({"id": "alice", "roles": ["developer"], "teams": ["payments"], "mfa_verified": true, "mfa_age_s": 60});
    let ctx = json!({"client_ip": "10.20.30.40", "vpn": true, "audit_enabled": true, "geo_country": "US"});
    let eval = json!({"user": user, "action": "tool:invoke", "tool": {"name": "update_ticket", "sensitivity_level": "medium", "teams": ["payments"]},
                      "parameters": {"ticket_id": "T-1", "api_token": "x"}, "context": ctx});
    let r = call(a, "POST", "/api/v1/policy/evaluate", &eval.to_string()).json();
    assert_eq!(r["decision"], "allow", "{r}");
    assert_eq!(r["filtered_parameters"], json!({"ticket_id": "T-1"}));
    assert_eq!(r["audit_id"].as_str().unwrap().len(), 32);
    assert!((1..=300).contains(&r["cache_ttl"].as_u64().unwrap()), "{r}");
    let batch = json!([eval, {"user_id": "nobody", "action": "tool:invoke", "tool": "update_ticket"}]);
    let r = call(a, "POST", "/api/v1/policy/batch-evaluate", &batch.to_string()).json();
    assert_eq!(r.as_array().unwrap().iter().map(|d| d["decision"].as_str().unwrap()).collect::<Vec<_>>(), ["allow", "deny"]);
    let gw = json!({"user": {"id": "root", "roles": ["admin"], "mfa_verified": true, "mfa_age_s": 60}, "action": "gateway:server:list",
                    "server_name": "fin", "context": ctx});
    let r = call(a, "POST", "/api/v1/gateway/authorize", &gw.to_string()).json();
    assert!(r["allow"].is_boolean() && r["reason"].is_string() && r["audit_id"].is_string(), "{r}");
    let r = call(a, "POST", "/api/v1/policy/evaluate", r#"{"action": "tool:invoke"}"#);
    assert_eq!(r.status, 400);
}

#[test]
fn limits_errors_keep_alive_and_metrics() {
    let dir = std::env::temp_dir().join(format!("sark-pdp-http-conf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("pdp.toml");
    std::fs::write(&conf, "[http]\nrequest_timeout_s = 1\nmax_header_bytes = 4096\nmax_body_bytes = 65536\n").unwrap();
    let server = Server::start_with("http-limits", &["--shards", "1", "--config", conf.to_str().unwrap()]);
    let a = server.http;

    let status = |raw: &[u8]| exchange(a, raw, 1).pop().map(|r| (r.status, r.json()["code"].as_str().unwrap_or("").to_string()));
    assert_eq!(status(b"POST /v1/data/mcp/allow HTTP/1.1\r\nhost: x\r\n\r\n"), Some((411, "length_required".into())));
    assert_eq!(status(b"POST /v1/data/mcp/allow HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"), Some((411, "length_required".into())));
    assert_eq!(status(b"POST /v1/data/mcp/allow HTTP/1.1\r\ncontent-length: 70000\r\n\r\n"), Some((413, "body_too_large".into())));
    let big = format!("GET /health HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(8000));
    assert_eq!(status(big.as_bytes()), Some((431, "headers_too_large".into())));
    assert_eq!(status(b"BLAH\x01 / HTTP/1.1\r\n\r\n"), Some((400, "bad_request".into())));
    assert_eq!(status(b"POST /v1/data/x HTTP/1.1\r\ncontent-length: abc\r\n\r\n"), Some((400, "bad_request".into())));
    let r = exchange(a, b"DELETE /health HTTP/1.1\r\n\r\n", 1).pop().unwrap();
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    assert_eq!(status(b"GET /nowhere HTTP/1.1\r\n\r\n"), Some((404, "not_found".into())));
    // Slowloris: a request that never completes is answered 408 after the timeout.
    let started = std::time::Instant::now();
    assert_eq!(status(b"GET /health HTTP/1.1\r\nhost: x\r\n"), Some((408, "request_timeout".into())));
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Keep-alive and pipelining: 100 requests in one write, 100 answers in order. (The
    // input is about the present, so its decision is cached.)
    let mut present = sample_input();
    present["context"].as_object_mut().unwrap().remove("now_ns");
    let input = json!({"input": present}).to_string();
    let mut raw = Vec::new();
    for i in 0..100 {
        if i % 2 == 0 {
            raw.extend(request("GET", "/health", "", &format!("x-request-id: q{i}\r\n")));
        } else {
            raw.extend(request("POST", "/v1/data/mcp/allow", &input, &format!("x-request-id: q{i}\r\n")));
        }
    }
    let got = exchange(a, &raw, 100);
    assert_eq!(got.len(), 100);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.header("x-request-id"), Some(format!("q{i}").as_str()));
        assert_eq!(r.header("connection"), Some("keep-alive"));
        if i % 2 == 1 {
            assert_eq!(r.json()["result"], true);
        }
    }
    // HTTP/1.0 closes after its answer.
    let r = exchange(a, b"GET /health HTTP/1.0\r\n\r\nGET /health HTTP/1.0\r\n\r\n", 2);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].header("connection"), Some("close"));

    // Metrics: OpenMetrics text, every sample line `name{labels} value`, with the 50
    // decisions above counted (the first a miss, then hits).
    let m = call(a, "GET", "/metrics", "");
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l:?}"));
                let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {l:?}"));
                (series.split('{').next().unwrap().to_string(), v)
            })
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(sum("sark_policy_evaluations_total"), 50.0);
    assert_eq!(sum("sark_policy_cache_misses_total") + sum("sark_policy_cache_hits_total"), 50.0);
    assert!(sum("sark_policy_cache_hits_total") >= 48.0);
    assert_eq!(sum("sark_pdp_shard_info"), 1.0);
    assert!(text.contains("driver=\""));
    assert_eq!(sum("sark_pdp_audit_drops_total"), 0.0);
    assert!(sum("sark_pdp_http_requests_total") >= 100.0);
    assert_eq!(server.stop().len(), 50);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_ring_with_on_full_drop_answers_and_counts_every_drop() {
    // A one-record ring and a writer that holds each pass 5 ms (fault injection): most
    // records find the ring full. Told to drop, the shard answers anyway and counts them.
    let server = Server::start_env(
        "http-drop",
        &["--shards", "1", "--audit-ring", "1", "--audit-on-full", "drop"],
        &[("SARK_PDP_FAULT_AUDIT_DELAY_MS", "5")],
    );
    let mut c = wire::Client::connect(server.addr, None).unwrap();
    let ids: Vec<u64> = (0..1000).map(|i| c.send(&wire::Request::Eval(Box::new(wire::message::Eval::example(format!("d{i}"))))).unwrap()).collect();
    c.flush().unwrap();
    for id in ids {
        assert!(matches!(c.recv_id(id).unwrap(), wire::Reply::Decision(_)));
    }
    let text = String::from_utf8(call(server.http, "GET", "/metrics", "").body).unwrap();
    let drops: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("sark_pdp_audit_drops_total "))
        .and_then(|v| v.parse().ok())
        .expect("no sark_pdp_audit_drops_total");
    let logged = server.stop().len() as f64;
    assert!(drops > 0.0, "nothing was dropped: the test did not fill the ring");
    assert_eq!(logged + drops, 1000.0, "every answer is either in the log or counted as dropped");
}

/// Every metric README's "What to monitor" table tells operators to alert on is exported
/// (with a sink configured, so the sink series exist too).
#[test]
fn the_monitoring_table_names_only_exported_metrics() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let table = readme.split("### What to monitor").nth(1).unwrap().split("\n### ").next().unwrap();
    let names: std::collections::BTreeSet<&str> =
        table.split('`').skip(1).step_by(2).filter(|w| w.starts_with("sark_")).map(|w| w.split('{').next().unwrap()).collect();
    assert!(names.len() >= 10, "{names:?}");
    let server = Server::start_env("monitor", &["--shards", "1"], &[("SPLUNK_HEC_URL", "http://127.0.0.1:9"), ("SPLUNK_HEC_TOKEN", "t")]);
    let metrics = call(server.http, "GET", "/metrics", "").body;
    let metrics = String::from_utf8_lossy(&metrics);
    for name in names {
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(metrics.contains(&format!("# TYPE {family} ")), "README names {name}, /metrics has no such family");
    }
}

#[test]
fn explain_notes_and_full_on_the_data_api_and_bad_values_are_refused() {
    // By default a server explains notes only: full (the rule trace shows every rule's
    // value, data included) is refused, and so is everything with --allow-explain off.
    let doc = json!({"input": sample_input()}).to_string();
    for (allow, level, status) in [(None, "notes", 200), (None, "full", 403), (Some("off"), "notes", 403)] {
        let mut args = vec!["--shards", "1", "--audit-ring", "64"];
        args.extend(allow.map(|a| ["--allow-explain", a]).into_iter().flatten());
        let server = Server::start_with("http-explain-allow", &args);
        let r = call(server.http, "POST", &format!("/v1/data/sark/decision?explain={level}"), &doc);
        assert_eq!(r.status, status, "--allow-explain {allow:?}, explain={level}: {:?}", r.json());
        if status == 403 {
            assert!(r.json()["message"].as_str().unwrap().contains("--allow-explain"), "{:?}", r.json());
        }
        drop(server);
    }
    let server = Server::start_with("http-explain", &["--shards", "1", "--audit-ring", "64", "--allow-explain", "full"]);
    let a = server.http;
    // The sample about now (no now_ns of its own), so its answer is cached.
    let mut doc = sample_input();
    doc["context"].as_object_mut().unwrap().remove("now_ns");
    let input = json!({"input": doc}).to_string();
    let plain = call(a, "POST", "/v1/data/sark/decision", &input).json();
    assert!(plain.get("explanation").is_none(), "{plain}");

    // notes: the decision's own account; the answer is the one a plain request gets (here
    // from the cache the plain request filled).
    let notes = call(a, "POST", "/v1/data/sark/decision?explain=notes", &input).json();
    assert_eq!(notes["result"], plain["result"]);
    let x = &notes["explanation"];
    assert_eq!((&x["level"], &x["entrypoint"], &x["engine"], &x["cache_hit"]), (&json!("notes"), &json!("data.sark.decision"), &json!("rvm"), &json!(true)), "{x}");
    assert_eq!(x["bundle_revision"], "sark-default-1");
    assert_eq!((&x["allow"], &x["result"]), (&json!(true), &json!("allow")));
    assert_eq!(x["reasons"], json!(["allowed: all policies passed"]));
    let policies = x["policies"].as_array().unwrap();
    assert!(!policies.is_empty() && policies.iter().all(|p| p["allow"] == true && p["reasons"] == json!([])), "{x}");
    assert!(x.get("trace").is_none());

    // A deny names the denying policies and their reasons.
    let viewer: Value = serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/invoke-critical-viewer.json")).unwrap()).unwrap();
    let deny_body = json!({"input": viewer}).to_string();
    let deny = call(a, "POST", "/v1/data/sark/decision?explain=full&metrics=true", &deny_body).json();
    assert_eq!(deny["result"]["allow"], false);
    assert!(deny["metrics"]["timer_rego_query_eval_ns"].as_u64().is_some(), "explain and metrics together: {deny}");
    let x = &deny["explanation"];
    assert_eq!((&x["level"], &x["cache_hit"], &x["result"]), (&json!("full"), &json!(false), &json!("deny")));
    let policy = |name: &str| x["policies"].as_array().unwrap().iter().find(|p| p["policy"] == name).cloned().unwrap_or_else(|| panic!("no {name} in {x}"));
    let mfa = policy("mfa");
    assert_eq!(mfa["allow"], false);
    assert_eq!(mfa["reasons"], json!(["mfa: multi-factor authentication required (user.mfa_verified)"]));
    assert_eq!(policy("rbac"), json!({"policy": "rbac", "allow": true, "reasons": []}));
    // full: the rule trace, and it agrees with the answer.
    let t = &x["trace"];
    assert_eq!((&t["engine"], &t["agrees"]), (&json!("interpreter"), &json!(true)), "{t}");
    let rules = t["rules"].as_array().unwrap();
    let rule = |name: &str| rules.iter().find(|r| r["rule"] == name).cloned();
    let mfa_deny = rule("data.sark.mfa.deny").unwrap();
    assert_eq!(mfa_deny["value"], json!(["mfa: multi-factor authentication required (user.mfa_verified)"]));
    let def = &mfa_deny["definitions"][0];
    assert_eq!(def["file"], "mfa.rego");
    assert!(def["line"].as_u64().unwrap() > 0 && !def["evaluated_lines"].as_array().unwrap().is_empty(), "{def}");
    assert!(rule("data.sark.a2a.deny").is_none(), "a2a does not apply to tool:invoke: never evaluated");

    // The projections explain the decision they come from; another entrypoint its own.
    let r = call(a, "POST", "/v1/data/mcp/allow?explain=notes", &deny_body).json();
    assert_eq!((&r["result"], &r["explanation"]["entrypoint"]), (&json!(false), &json!("data.sark.decision")));
    let r = call(a, "POST", "/v1/data/sark/rbac/allow?explain=full", &deny_body).json();
    let x = &r["explanation"];
    assert_eq!((&x["entrypoint"], &x["cache_hit"], &x["trace"]["agrees"]), (&json!("data.sark.rbac.allow"), &json!(false), &json!(true)), "{r}");
    assert!(x.get("policies").is_none() && x["trace"]["rules"].as_array().unwrap().iter().any(|r| r["rule"] == "data.sark.rbac.deny"), "{x}");
    // Undefined is still {} but for the explanation.
    let r = call(a, "GET", "/v1/data/sark/rbac/applies?explain=notes", "").json();
    assert!(r.get("result").is_none() && r["explanation"]["entrypoint"] == "data.sark.rbac.applies", "{r}");
    // Off is no explanation.
    assert!(call(a, "POST", "/v1/data/sark/decision?explain=off", &input).json().get("explanation").is_none());

    // Anything else: a 400 that says what to use, and nothing is decided.
    for bad in ["explain=fails", "explain=debug", "explain=yes", "explain=", "explain"] {
        let r = call(a, "POST", &format!("/v1/data/sark/decision?{bad}"), &input);
        assert_eq!((r.status, r.json()["code"].as_str()), (400, Some("invalid_parameter")), "{bad}");
        assert!(r.json()["message"].as_str().unwrap().contains("explain=notes or explain=full"), "{bad}: {}", r.json());
    }
    // Every answer on the decision path was audited once: plain, notes, full, mcp/allow,
    // off; the refused ones never reached it.
    let records = server.stop();
    assert_eq!(records.len(), 5, "{records:?}");
}
