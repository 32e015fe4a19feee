//! Benchmarks of the hot paths: `benches/` (criterion: time per operation; iai-callgrind:
//! instructions, gated by `perf/check`) and `src/bin/` (measurements criterion does not
//! make: cache hit ratios, rule costs, the audit writer alone). Shared helpers live here;
//! `pdp-bench engines` uses them too.

use std::path::Path;

use pdp::bundle::{Bundle, BundleLimits, DECISION_ENTRYPOINT};

/// The shipped bundle, read from `policies/` (what `sark-pdp` embeds).
///
/// # Errors
/// The bundle does not load.
pub fn shipped_bundle() -> anyhow::Result<Bundle> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    Ok(Bundle::load(&dir, BundleLimits::default())?)
}

/// The inputs of the bundle's `data.sark.decision` cases, as JSON text: the benchmark
/// workload (every rule, every deny reason, allows and denies).
///
/// # Errors
/// The cases do not load, or there are none.
pub fn decision_inputs(bundle: &Bundle) -> anyhow::Result<Vec<String>> {
    let cases = pdp::cases::load(bundle).map_err(anyhow::Error::msg)?;
    let inputs: Vec<String> = cases
        .iter()
        .filter(|c| c.entrypoint == DECISION_ENTRYPOINT)
        .map(|c| c.input.to_string())
        .collect();
    anyhow::ensure!(!inputs.is_empty(), "no data.sark.decision cases to benchmark");
    Ok(inputs)
}

/// The `q`-quantile of sorted samples (nearest rank).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied().unwrap_or(0)
}

/// The median of a few values.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(0.0),
        n => (v.get(n / 2 - 1).copied().unwrap_or(0.0) + v.get(n / 2).copied().unwrap_or(0.0)) / 2.0,
    }
}

/// SARK's typical audit fields (a developer invoking `update_ticket`), for the audit
/// benches.
pub fn sample_audit_fields() -> pdp::audit::Fields<'static> {
    pdp::audit::Fields {
        user_id: "alice",
        action: "tool:invoke",
        tool_name: Some("update_ticket"),
        sensitivity_level: Some("medium"),
        server_id: None,
        server_name: None,
        client_ip: Some("10.20.30.40"),
        request_id: Some("req-0000000000000001"),
        session_id: Some("sess-1"),
        user_roles: vec!["developer"],
        user_teams: vec!["payments"],
    }
}

/// SARK's typical question as typed fields (a developer invoking `update_ticket`), for the
/// cache and decision-path benches.
pub fn sample_input() -> pdp::input::SarkInput {
    use pdp::input::{Blob, SarkInput, ToolFields, UserFields};
    SarkInput {
        user: UserFields {
            id: "alice".into(),
            roles: vec!["developer".into()],
            teams: vec!["payments".into()],
            mfa_verified: Some(true),
            mfa_age_s: Some(120),
            ..UserFields::default()
        },
        action: "tool:invoke".into(),
        tool: Some(ToolFields {
            name: "update_ticket".into(),
            sensitivity_level: Some("medium".into()),
            teams: vec!["payments".into()],
            ..ToolFields::default()
        }),
        client_ip: Some("10.20.30.40".into()),
        now_ns: Some(1_795_428_000_000_000_000),
        parameters: Blob::Json(r#"{"ticket_id": "T-42", "status": "closed"}"#.into()),
        context: Blob::Json(r#"{"audit_enabled": true, "vpn": true, "request_id": "r"}"#.into()),
        ..SarkInput::default()
    }
}

/// An allow, as a cache entry.
pub fn sample_decision() -> std::sync::Arc<pdp::Decision> {
    std::sync::Arc::new(pdp::Decision {
        allow: true,
        reasons: vec!["allowed".into()],
        policies_evaluated: vec!["rbac".into()],
        policy_results: vec![("rbac".into(), true)],
        filtered_parameters: pdp::Value::Undefined,
        filtered_parameters_json: None,
        cache_ttl_s: Some(300),
        restrictions: Default::default(),
        error: None,
        engine: pdp::EngineKind::Rvm,
        bundle_revision: "bench".into(),
    })
}

/// A cache of 60,000 entries (keys spread like real hashes) and a key present in it.
pub fn full_cache(eviction: pdp::cache::Eviction) -> (pdp::cache::DecisionCache, pdp::key::CacheKey) {
    use pdp::key::CacheKey;
    let mut cache = pdp::cache::DecisionCache::new(pdp::cache::CacheConfig { eviction, ..pdp::cache::CacheConfig::default() }, quanta::Clock::new());
    for i in 0..60_000u128 {
        cache.insert(CacheKey(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)), sample_decision(), pdp::Sensitivity::Low);
    }
    (cache, CacheKey(1234u128.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

/// SARK's typical question as a binary-protocol EVAL (`Eval::example` with these
/// benches' parameters and context).
pub fn sample_eval() -> wire::message::Eval {
    wire::message::Eval {
        parameters_json: Some(r#"{"ticket_id": "T-42", "status": "closed"}"#.into()),
        context_json: Some(r#"{"audit_enabled": true, "vpn": true}"#.into()),
        ..wire::message::Eval::example("alice")
    }
}

/// An allow as a binary-protocol DECISION reply.
pub fn sample_reply() -> wire::Reply {
    wire::Reply::Decision(wire::message::Decision {
        allow: true,
        cache_hit: true,
        ttl_s: 300,
        decision_id: 42,
        error_code: 0,
        reasons: vec![wire::message::Reason { code: 0, text: "allowed: all policies passed".into() }],
        filtered_parameters_json: Some(r#"{"ticket_id": "T-42", "status": "closed"}"#.into()),
    })
}

/// The header and payload of the one whole frame in `buf`.
///
/// # Panics
/// `buf` is not exactly one whole frame (a bench fixture's bug).
#[allow(clippy::panic)]
pub fn one_frame(buf: &[u8]) -> (wire::Header, &[u8]) {
    match wire::check(buf, wire::DEFAULT_MAX_PAYLOAD) {
        Ok(wire::Check::Complete { header, total }) if total == buf.len() => (header, buf.get(wire::HEADER_LEN..total).unwrap_or(&[])),
        other => panic!("not one whole frame: {other:?}"),
    }
}

/// SARK's typical question as HTTP requests: OPA's data API (`POST /v1/data/mcp/allow`
/// with `{"input": …}`) and AuthZEN's `POST /access/v1/evaluation`.
pub fn sample_http_requests() -> [(&'static str, Vec<u8>); 2] {
    let input = sample_input().to_value().map(|v| v.to_string()).unwrap_or_default();
    let opa = format!(r#"{{"input":{input}}}"#);
    let authzen = r#"{"subject":{"type":"user","id":"alice","properties":{"roles":["developer"],"teams":["payments"],"mfa_verified":true}},"action":{"name":"tool:invoke"},"resource":{"type":"tool","id":"update_ticket","properties":{"sensitivity_level":"medium","teams":["payments"]}},"context":{"client_ip":"10.20.30.40","audit_enabled":true,"vpn":true}}"#;
    let request = |path: &str, body: &str| {
        format!("POST {path} HTTP/1.1\r\nhost: pdp:8181\r\ncontent-type: application/json\r\nx-request-id: req-1\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
    };
    [("opa_data", request("/v1/data/mcp/allow", &opa)), ("authzen_evaluation", request("/access/v1/evaluation", authzen))]
}
