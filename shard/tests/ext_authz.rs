//! Envoy's ext_authz gRPC service, black box: the real server, called by the tonic client
//! generated from Envoy's published proto (envoy-types: envoy.service.auth.v3).

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use common::Server;
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{Metadata, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as PbValue, value::Kind};

const NOW: &str = "1795428000000000000"; // a Monday, 10:00 UTC: office hours

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().unwrap()
}

/// Start the server with ext_authz on port 0 and `config` as its settings file.
fn start(tag: &str, config: &str, extra: &[&str]) -> (Server, SocketAddr) {
    let path = std::env::temp_dir().join(format!("sark-pdp-extauthz-{tag}-{}.toml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    let mut args = vec!["--shards", "2", "--ext-authz-listen", "127.0.0.1:0", "--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let server = Server::start_with(tag, &args);
    let at = server.ext_authz.expect("the listening line names the ext_authz address");
    (server, at)
}

/// The tests pin the clock through a header (the PDP's own clock would make office-hours
/// rules depend on when the tests run).
const PINNED_CLOCK: &str = "[ext_authz.map]\n\"context.now_ns\" = [\"header:x-now-ns\"]\n";

fn request(headers: &[(&str, &str)], path: &str, body: &str, peer: &str) -> CheckRequest {
    let mut headers: HashMap<String, String> = headers.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
    headers.entry("x-now-ns".into()).or_insert_with(|| NOW.into());
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(envoy_types::pb::envoy::config::core::v3::Address {
                    address: Some(Address::SocketAddress(SocketAddress { address: peer.into(), ..Default::default() })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest { method: "POST".into(), path: path.into(), host: "gateway".into(), headers, body: body.into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn check(rt: &tokio::runtime::Runtime, at: SocketAddr, req: CheckRequest, token: Option<&str>) -> CheckResponse {
    rt.block_on(async {
        let mut c = AuthorizationClient::connect(format!("http://{at}")).await.unwrap();
        let mut r = tonic::Request::new(req);
        if let Some(t) = token {
            r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        c.check(r).await.unwrap().into_inner()
    })
}

/// What a CheckResponse says: gRPC code, HTTP status (200 for OK), headers, JSON body.
struct Said {
    code: i32,
    http: i32,
    headers: HashMap<String, String>,
    body: serde_json::Value,
}

fn said(r: &CheckResponse) -> Said {
    let code = r.status.as_ref().unwrap().code;
    let to_map = |hs: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]| {
        hs.iter().map(|h| h.header.as_ref().unwrap()).map(|h| (h.key.clone(), h.value.clone())).collect()
    };
    match r.http_response.as_ref().unwrap() {
        HttpResponse::OkResponse(ok) => Said { code, http: 200, headers: to_map(&ok.headers), body: serde_json::Value::Null },
        HttpResponse::DeniedResponse(d) => {
            Said { code, http: d.status.as_ref().unwrap().code, headers: to_map(&d.headers), body: serde_json::from_str(&d.body).unwrap() }
        }
        other => panic!("unexpected response {other:?}"),
    }
}

const ALICE: &[(&str, &str)] = &[
    ("x-sark-user-id", "alice"),
    ("x-sark-user-roles", "developer"),
    ("x-sark-user-teams", "payments"),
    ("x-sark-mfa-verified", "true"),
    ("x-sark-tool", "update_ticket"),
    ("x-sark-tool-sensitivity", "medium"),
    ("x-sark-server-id", "srv-1"),
];

const VIEWER: &[(&str, &str)] = &[
    ("x-sark-user-id", "victor"),
    ("x-sark-user-roles", "viewer"),
    ("x-sark-tool", "rotate_payment_keys"),
    ("x-sark-tool-sensitivity", "critical"),
];

/// The same questions through the binary protocol, as typed EVALs.
fn eval_of(headers: &[(&str, &str)]) -> wire::message::Eval {
    let h: HashMap<&str, &str> = headers.iter().copied().collect();
    let list = |k: &str| h.get(k).map(|v| v.split(',').map(str::to_string).collect()).unwrap_or_default();
    wire::message::Eval {
        user_id: h["x-sark-user-id"].into(),
        roles: list("x-sark-user-roles"),
        teams: list("x-sark-user-teams"),
        team_manager_of: vec![],
        scopes: vec![],
        mfa_verified: h.get("x-sark-mfa-verified").map(|v| *v == "true"),
        mfa_age_s: None,
        email: None,
        action: "tool:invoke".into(),
        tool: Some(wire::message::Tool {
            name: h["x-sark-tool"].into(),
            sensitivity_level: h.get("x-sark-tool-sensitivity").map(|s| (*s).into()),
            owner: None,
            managers: vec![],
            teams: vec![],
        }),
        server: h.get("x-sark-server-id").map(|s| wire::message::Server {
            id: (*s).into(),
            name: None,
            owner_id: None,
            teams: vec![],
            managed_by_team: None,
        }),
        client_ip: Some("10.20.30.40".into()),
        now_ns: Some(NOW.parse().unwrap()),
        parameters_json: None,
        agent_json: None,
        context_json: None,
    }
}

#[test]
fn allow_and_deny_decide_as_the_binary_protocol_does_and_are_audited() {
    let (server, at) = start("decide", PINNED_CLOCK, &[]);
    let rt = runtime();
    let mut c = wire::Client::connect(server.addr, None).unwrap();
    let mut ids = Vec::new();
    for (who, want_allow) in [(ALICE, true), (VIEWER, false)] {
        let s = said(&check(&rt, at, request(who, "/mcp", "", "10.20.30.40"), None));
        let d = c.eval(eval_of(who)).unwrap();
        assert_eq!(d.allow, want_allow, "the binary protocol's answer for {who:?}: {d:?}");
        let reasons: Vec<&str> = d.reasons.iter().map(|r| r.text.as_str()).collect();
        if want_allow {
            assert_eq!((s.code, s.http), (0, 200));
        } else {
            assert_eq!((s.code, s.http), (7, 403), "PERMISSION_DENIED and a 403");
            assert_eq!(s.headers["x-sark-reasons"], reasons.join("; "), "the reasons, in a header");
            assert_eq!(s.body["reasons"], serde_json::json!(reasons));
            assert_eq!(s.body["allow"], false);
            assert_eq!(s.headers["content-type"], "application/json");
        }
        let id = s.headers["x-sark-decision-id"].clone();
        assert_eq!(id.len(), 32);
        ids.push((id, want_allow));
    }
    let lines = server.stop();
    for (id, allow) in ids {
        let line = lines.iter().find(|l| l["decision_id"] == id.as_str()).unwrap_or_else(|| panic!("decision {id} is not in the audit log"));
        assert_eq!(line["allow"], allow);
    }
    // Both doors' decisions are there: two from ext_authz, two from EVAL.
    assert_eq!(lines.len(), 4);
}

#[test]
fn a_configured_mapping_reads_metadata_route_settings_path_and_body() {
    let config = format!(
        "{PINNED_CLOCK}\"user.id\" = [\"metadata:envoy.filters.http.jwt_authn/jwt_payload/sub\"]\n\
         \"user.roles\" = [\"metadata:envoy.filters.http.jwt_authn/jwt_payload/roles\"]\n\
         \"user.teams\" = [\"literal:payments\"]\n\
         \"user.mfa_verified\" = [\"metadata:envoy.filters.http.jwt_authn/jwt_payload/mfa\"]\n\
         \"server.id\" = [\"path:1\"]\n\
         \"tool.sensitivity_level\" = [\"context:sark_sensitivity\"]\n\
         \"context.request_id\" = [\"header:x-request-id\"]\n"
    );
    let (server, at) = start("mapping", &config, &[]);
    let rt = runtime();
    let s = |v: &str| PbValue { kind: Some(Kind::StringValue(v.into())) };
    let payload = Struct {
        fields: [
            ("sub".to_string(), s("alice")),
            ("roles".to_string(), PbValue { kind: Some(Kind::ListValue(ListValue { values: vec![s("developer")] })) }),
            ("mfa".to_string(), PbValue { kind: Some(Kind::BoolValue(true)) }),
        ]
        .into(),
    };
    let jwt = Struct { fields: [("jwt_payload".to_string(), PbValue { kind: Some(Kind::StructValue(payload)) })].into() };
    let mut req = request(&[("x-sark-user-id", "mallory"), ("x-request-id", "req-7")], "/mcp/srv-1?session=3", r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"update_ticket","arguments":{"ticket_id":"T-1"}}}"#, "10.20.30.40");
    let attrs = req.attributes.as_mut().unwrap();
    attrs.metadata_context = Some(Metadata { filter_metadata: [("envoy.filters.http.jwt_authn".to_string(), jwt)].into(), ..Default::default() });
    attrs.context_extensions = [("sark_sensitivity".to_string(), "medium".to_string())].into();
    let got = said(&check(&rt, at, req, None));
    assert_eq!((got.code, got.http), (0, 200), "alice the developer may update tickets: {:?}", got.body);
    let lines = server.stop();
    let l = &lines[0];
    assert_eq!(l["user_id"], "alice", "the JWT's subject, not the forgeable header");
    assert_eq!(l["user_roles"], serde_json::json!(["developer"]));
    assert_eq!(l["user_teams"], serde_json::json!(["payments"]));
    assert_eq!(l["tool_name"], "update_ticket", "from the MCP body");
    assert_eq!(l["server_id"], "srv-1", "the path's second segment, query cut");
    assert_eq!(l["sensitivity_level"], "medium", "from the route's context_extensions");
    assert_eq!(l["client_ip"], "10.20.30.40", "the peer's address");
    assert_eq!(l["request_id"], "req-7", "a context field from a header");
}

#[test]
fn values_of_the_wrong_shape_are_a_bad_input_deny() {
    let config = format!("{PINNED_CLOCK}\"user.mfa_age_s\" = [\"header:x-mfa-age\"]\n");
    let (server, at) = start("shape", &config, &[]);
    let rt = runtime();
    let mut headers = ALICE.to_vec();
    headers.push(("x-mfa-age", "recently"));
    let got = said(&check(&rt, at, request(&headers, "/mcp", "", "10.20.30.40"), None));
    assert_eq!((got.code, got.http), (7, 403));
    assert_eq!(got.body["error_code"], 1002);
    assert!(got.headers["x-sark-reasons"].contains("user.mfa_age_s"), "{:?}", got.headers);
    // MCP arguments that are not JSON: `parameters` reads body:/params/arguments, and a
    // body that is not JSON has no such field, so the request is decided without it.
    let got = said(&check(&rt, at, request(ALICE, "/mcp", "{not json", "10.20.30.40"), None));
    assert_eq!((got.code, got.http), (0, 200));
    drop(server);
}

#[test]
fn a_caller_token_is_needed_in_the_grpc_metadata() {
    let token = "ext-authz-caller-token-0123";
    let (server, at) = start("token", PINNED_CLOCK, &["--caller-token", token]);
    let rt = runtime();
    for given in [None, Some("wrong-token-wrong-token")] {
        let got = said(&check(&rt, at, request(ALICE, "/mcp", "", "10.20.30.40"), given));
        assert_eq!((got.code, got.http), (16, 403), "UNAUTHENTICATED, denied, with {given:?}");
        assert!(got.headers["x-sark-reasons"].contains("caller token"));
    }
    let got = said(&check(&rt, at, request(ALICE, "/mcp", "", "10.20.30.40"), Some(token)));
    assert_eq!((got.code, got.http), (0, 200));
    // Refused calls decide nothing, so only the last is audited.
    assert_eq!(server.stop().len(), 1);
}

#[test]
fn a_pdp_that_cannot_answer_in_time_denies_with_503() {
    // Every record waits 300 ms before it is written, and sync durability holds each reply
    // until its record is on disk: the 50 ms ext_authz timeout runs out first.
    let config = format!("[ext_authz]\ntimeout_ms = 50\n{PINNED_CLOCK}");
    let path = std::env::temp_dir().join(format!("sark-pdp-extauthz-slow-{}.toml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    let args = ["--shards", "1", "--ext-authz-listen", "127.0.0.1:0", "--audit-durability", "sync", "--config", path.to_str().unwrap()];
    let server = Server::start_env("slow", &args, &[("SARK_PDP_FAULT_AUDIT_DELAY_MS", "300")]);
    let rt = runtime();
    let got = said(&check(&rt, server.ext_authz.unwrap(), request(ALICE, "/mcp", "", "10.20.30.40"), None));
    assert_eq!((got.code, got.http), (14, 503), "UNAVAILABLE and a 503, never an allow");
    assert_eq!(got.body["error_code"], 1007);
    assert!(got.headers["x-sark-reasons"].contains("no decision within 50 ms"), "{:?}", got.headers);
}

#[test]
fn many_concurrent_checks_each_get_their_own_answer() {
    // 2000 misses at once: an unoptimised build needs longer than the default 500 ms.
    let (server, at) = start("many", &format!("[ext_authz]\ntimeout_ms = 30000\n{PINNED_CLOCK}"), &[]);
    let t0 = std::time::Instant::now();
    let rt = runtime();
    let answers = rt.block_on(async {
        let c = AuthorizationClient::connect(format!("http://{at}")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..2000 {
            let mut c = c.clone();
            // Even: alice-<i> (allowed); odd: victor-<i> (denied); distinct users, so
            // every one is a miss spread over both shards.
            let (base, user) = if i % 2 == 0 { (ALICE, format!("alice-{i}")) } else { (VIEWER, format!("victor-{i}")) };
            let mut headers = base.to_vec();
            headers.retain(|(k, _)| *k != "x-sark-user-id");
            headers.push(("x-sark-user-id", &user));
            let req = request(&headers, "/mcp", "", "10.20.30.40");
            tasks.push(tokio::spawn(async move { (i, c.check(req).await.unwrap().into_inner()) }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    eprintln!("2000 concurrent checks in {:?}", t0.elapsed());
    for (i, r) in &answers {
        let code = r.status.as_ref().unwrap().code;
        assert_eq!(code == 0, i % 2 == 0, "check {i}: status {code}");
    }
    let lines = server.stop();
    assert_eq!(lines.len(), 2000);
    let users: std::collections::BTreeSet<&str> = lines.iter().map(|l| l["user_id"].as_str().unwrap()).collect();
    assert_eq!(users.len(), 2000, "every check decided its own input");
}

#[test]
fn a_mapping_naming_an_unknown_field_or_source_stops_the_server() {
    for (map, says) in [("\"user.idd\" = [\"header:x\"]", "unknown field \"user.idd\""), ("\"user.id\" = [\"cookie:sid\"]", "unknown source")] {
        let path = std::env::temp_dir().join(format!("sark-pdp-extauthz-bad-{}.toml", std::process::id()));
        std::fs::write(&path, format!("[ext_authz]\nlisten = \"127.0.0.1:0\"\n[ext_authz.map]\n{map}\n")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sark-pdp"))
            .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "off", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{map}: {err}");
    }
}


#[test]
fn mutual_tls_serves_only_callers_with_a_certificate_from_the_client_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let dir = std::env::temp_dir().join(format!("sark-pdp-extauthz-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()]).unwrap().signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let ((server_cert, server_key), (caller_cert, caller_key)) = (leaf("localhost"), leaf("envoy.sark.test"));
    for (name, text) in [("ca.pem", ca.pem()), ("server.pem", server_cert), ("server.key", server_key)] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let f = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let (cert, key, client_ca) = (f("server.pem"), f("server.key"), f("ca.pem"));
    let (server, at) = start("mtls", PINNED_CLOCK, &["--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &client_ca]);
    let rt = runtime();
    let call = |identity: Option<Identity>| {
        rt.block_on(async {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())).domain_name("localhost");
            if let Some(id) = identity {
                tls = tls.identity(id);
            }
            let channel = Channel::from_shared(format!("https://{at}")).unwrap().tls_config(tls).unwrap().connect().await?;
            let r = AuthorizationClient::new(channel).check(request(ALICE, "/mcp", "", "10.20.30.40")).await;
            Ok::<_, Box<dyn std::error::Error>>(r?.into_inner())
        })
    };
    let ok = call(Some(Identity::from_pem(&caller_cert, &caller_key))).unwrap();
    assert_eq!(ok.status.unwrap().code, 0);
    assert!(call(None).is_err(), "no client certificate: no answer");
    assert_eq!(server.stop().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
