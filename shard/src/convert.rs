//! Between the wire and the decision domain: an EVAL's typed fields become a
//! [`pdp::input::SarkInput`] (JSON blobs parsed once, straight into regorus values), and a
//! decision becomes a DECISION body. A blob that is not JSON is a deny with code 1002,
//! never an error frame and never an allow.

use pdp::input::Blob;
use pdp::error::EvalError;
use pdp::input::{SarkInput, ServerFields, ToolFields, UserFields};
use pdp::point::Answer;
use wire::DecisionView;
use wire::message::Eval;

fn blob(json: Option<String>) -> Blob {
    json.map_or(Blob::Absent, Blob::Json)
}

/// The typed input an EVAL carries. Its JSON parts stay text: the decision point checks
/// them while it hashes the cache key, and parses them only on a miss.
pub fn input_from_eval(e: Eval) -> SarkInput {
    SarkInput {
        parameters: blob(e.parameters_json),
        agent: blob(e.agent_json),
        context: blob(e.context_json),
        user: UserFields {
            id: e.user_id,
            roles: e.roles,
            teams: e.teams,
            team_manager_of: e.team_manager_of,
            mfa_verified: e.mfa_verified,
            mfa_age_s: e.mfa_age_s,
            scopes: e.scopes,
            email: e.email,
        },
        action: e.action,
        tool: e.tool.map(|t| ToolFields {
            name: t.name,
            sensitivity_level: t.sensitivity_level,
            owner: t.owner,
            managers: t.managers,
            teams: t.teams,
        }),
        server: e.server.map(|s| ServerFields {
            id: s.id,
            name: s.name,
            owner_id: s.owner_id,
            teams: s.teams,
            managed_by_team: s.managed_by_team,
        }),
        client_ip: e.client_ip,
        now_ns: e.now_ns,
    }
}

/// The DECISION body for an answer, borrowing the decision's strings.
pub fn view(answer: &Answer, decision_id: u128) -> DecisionView<'_> {
    let d = &answer.decision;
    DecisionView {
        allow: d.allow,
        cache_hit: answer.cache_hit,
        ttl_s: u32::try_from(answer.ttl.as_secs()).unwrap_or(u32::MAX),
        decision_id,
        error_code: d.error.as_ref().map_or(0, EvalError::wire_code),
        reasons: &d.reasons,
        filtered_parameters_json: d.filtered_parameters_json.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pdp::cache::CacheConfig;
    use pdp::eval::{CompiledBundle, EnginePreference, EvalLimits};
    use pdp::point::DecisionPoint;
    use wire::message::{Server, Tool};

    use super::*;

    const NOW: i64 = 1_795_428_000_000_000_000;

    /// shard/samples/invoke-medium.json as EVAL fields.
    fn sample() -> Eval {
        Eval {
            user_id: "alice".into(),
            roles: vec!["developer".into()],
            teams: vec!["payments".into()],
            team_manager_of: vec![],
            scopes: vec![],
            mfa_verified: Some(true),
            mfa_age_s: Some(120),
            email: Some("alice@example.com".into()),
            action: "tool:invoke".into(),
            tool: Some(Tool {
                name: "update_ticket".into(),
                sensitivity_level: Some("medium".into()),
                owner: Some("bob".into()),
                managers: vec!["bob".into()],
                teams: vec!["payments".into()],
            }),
            server: Some(Server {
                id: "srv-1".into(),
                name: Some("ticketing".into()),
                owner_id: Some("bob".into()),
                teams: vec!["payments".into()],
                managed_by_team: Some("payments".into()),
            }),
            client_ip: Some("10.20.30.40".into()),
            now_ns: Some(NOW),
            parameters_json: Some(r#"{"ticket_id": "T-42", "status": "closed", "api_token": "secret"}"#.into()),
            agent_json: None,
            context_json: Some(
                r#"{"audit_enabled": true, "vpn": true, "geo_country": "US", "request_id": "req-1",
                    "rate_limit_data": {"minute_count": 3, "hour_count": 40, "day_count": 200}}"#
                    .into(),
            ),
        }
    }

    fn point() -> DecisionPoint {
        let bundle = pdp::Bundle::embedded().unwrap();
        let compiled = Arc::new(CompiledBundle::compile(&bundle, EvalLimits::default()).unwrap());
        DecisionPoint::new(compiled, EnginePreference::Fastest, CacheConfig::default(), quanta::Clock::new())
    }

    #[test]
    fn typed_fields_decide_as_the_json_document_does() {
        let mut p = point();
        let typed = p.decide_typed(&input_from_eval(sample()), NOW);
        let json = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/invoke-medium.json")).unwrap();
        let doc = p.decide_document(pdp::eval::input_from_json(&json).unwrap(), NOW);
        assert!(typed.decision.allow);
        assert_eq!(*typed.decision, *doc.decision);
        let w = view(&typed, 9);
        assert!(w.allow && !w.cache_hit && w.error_code == 0);
        assert_eq!(w.reasons[0], "allowed: all policies passed");
        let params: serde_json::Value = serde_json::from_str(w.filtered_parameters_json.unwrap()).unwrap();
        assert_eq!(params, serde_json::json!({"ticket_id": "T-42", "status": "closed"}));
        // The repeat is a hit, and says so on the wire.
        let again = p.decide_typed(&input_from_eval(sample()), NOW);
        assert!(view(&again, 10).cache_hit);
    }

    #[test]
    fn blobs_that_are_not_json_are_a_deny_with_code_1002() {
        let mut p = point();
        for (part, set) in [
            ("context", (|e: &mut Eval| e.context_json = Some("{not json".into())) as fn(&mut Eval)),
            ("parameters", |e: &mut Eval| e.parameters_json = Some("[1,".into())),
            ("agent", |e: &mut Eval| e.agent_json = Some("".into())),
        ] {
            let mut e = sample();
            set(&mut e);
            let answer = p.decide_typed(&input_from_eval(e), NOW);
            let w = view(&answer, 1);
            assert!(!w.allow && !w.cache_hit && w.ttl_s == 0, "{w:?}");
            assert_eq!(w.error_code, 1002);
            assert!(w.reasons[0].starts_with(&format!("bad input: {part}: ")), "{}", w.reasons[0]);
        }
    }

    #[test]
    fn error_decisions_carry_their_code_on_every_reason() {
        let mut p = point();
        let mut e = sample();
        e.context_json = Some("[1,".into());
        let input = input_from_eval(e);
        let answer = p.decide_typed(&input, NOW);
        let w = view(&answer, 3);
        assert!(!w.allow);
        assert_eq!(w.error_code, 1002);
        let mut bytes = Vec::new();
        wire::encode_decision(&mut bytes, 1, &w);
        let wire::Check::Complete { header, total } = wire::check(&bytes, wire::DEFAULT_MAX_PAYLOAD).unwrap() else { panic!() };
        let wire::Reply::Decision(d) = wire::decode_reply(&header, &bytes[wire::HEADER_LEN..total]).unwrap() else { panic!() };
        assert!(!d.reasons.is_empty() && d.reasons.iter().all(|r| r.code == 1002));
        assert_eq!(w.ttl_s, 0);
    }
}
