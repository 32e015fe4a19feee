//! Audit records: one per decision, with SARK's fields (SARK-SPEC "Audit record"), encoded
//! as one JSON line. Built on the shard from data it already holds; the writer core
//! (issue 3 and 5) appends the lines. The record is plain owned data, so it can cross a
//! ring to another thread.

use std::fmt::Write as _;

use regorus::Value;

use crate::input::SarkInput;
use crate::point::Answer;

/// One decision's audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// 128-bit id, unique per PDP process and shard (see [`DecisionIds`]).
    pub decision_id: u128,
    /// Wall-clock time of the decision, ns since the epoch.
    pub timestamp_ns: i64,
    pub allow: bool,
    /// `allow`, `deny` or `error`.
    pub result: &'static str,
    pub user_id: String,
    pub user_roles: Vec<String>,
    pub user_teams: Vec<String>,
    pub action: String,
    pub tool_name: Option<String>,
    pub sensitivity_level: Option<String>,
    pub server_id: Option<String>,
    pub server_name: Option<String>,
    pub reasons: Vec<String>,
    pub policies_evaluated: Vec<String>,
    pub policy_results: Vec<(String, bool)>,
    pub evaluation_duration_us: u64,
    pub cache_hit: bool,
    pub client_ip: Option<String>,
    pub request_id: Option<String>,
    pub session_id: Option<String>,
    pub mfa_verified: Option<bool>,
    pub bundle_revision: String,
    /// The error code when the decision is an error deny.
    pub error_code: Option<u16>,
}

/// Decision ids for one shard: the shard index in the top 16 bits, a process start
/// nonce in the next 48, a counter in the low 64. Unique without coordination.
#[derive(Debug, Clone)]
pub struct DecisionIds {
    prefix: u128,
    next: u64,
}

impl DecisionIds {
    /// `nonce` should differ between process starts (e.g. the start time in ns).
    pub fn new(shard: u16, nonce: u64) -> DecisionIds {
        DecisionIds {
            prefix: (u128::from(shard) << 112) | (u128::from(nonce & 0xffff_ffff_ffff) << 64),
            next: 0,
        }
    }

    pub fn next_id(&mut self) -> u128 {
        self.next = self.next.wrapping_add(1);
        self.prefix | u128::from(self.next)
    }
}

fn ctx_str(context: &Value, key: &str) -> Option<String> {
    match &context[key] {
        Value::String(s) => Some(s.to_string()),
        _ => None,
    }
}

impl AuditRecord {
    /// The record of a typed input's decision.
    pub fn for_typed(input: &SarkInput, answer: &Answer, decision_id: u128, timestamp_ns: i64, duration_us: u64) -> AuditRecord {
        let d = &answer.decision;
        AuditRecord {
            decision_id,
            timestamp_ns,
            allow: d.allow,
            result: d.result(),
            user_id: input.user.id.clone(),
            user_roles: input.user.roles.clone(),
            user_teams: input.user.teams.clone(),
            action: input.action.clone(),
            tool_name: input.tool.as_ref().map(|t| t.name.clone()),
            sensitivity_level: input.tool.as_ref().and_then(|t| t.sensitivity_level.clone()),
            server_id: input.server.as_ref().map(|s| s.id.clone()),
            server_name: input.server.as_ref().and_then(|s| s.name.clone()),
            reasons: d.reasons.clone(),
            policies_evaluated: d.policies_evaluated.clone(),
            policy_results: d.policy_results.clone(),
            evaluation_duration_us: duration_us,
            cache_hit: answer.cache_hit,
            client_ip: input.client_ip.clone().or_else(|| ctx_str(&input.context, "client_ip")),
            request_id: ctx_str(&input.context, "request_id"),
            session_id: ctx_str(&input.context, "session_id"),
            mfa_verified: input.user.mfa_verified,
            bundle_revision: d.bundle_revision.to_string(),
            error_code: d.error.as_ref().map(crate::EvalError::wire_code),
        }
    }

    /// The record of a JSON input document's decision; fields of the wrong type are absent.
    pub fn for_document(input: &Value, answer: &Answer, decision_id: u128, timestamp_ns: i64, duration_us: u64) -> AuditRecord {
        let d = &answer.decision;
        let s = |v: &Value| match v {
            Value::String(s) => Some(s.to_string()),
            _ => None,
        };
        let strs = |v: &Value| match v {
            Value::Array(a) => a.iter().filter_map(&s).collect(),
            _ => Vec::new(),
        };
        let user = &input["user"];
        let ctx = &input["context"];
        AuditRecord {
            decision_id,
            timestamp_ns,
            allow: d.allow,
            result: d.result(),
            user_id: s(&user["id"]).unwrap_or_default(),
            user_roles: strs(&user["roles"]),
            user_teams: strs(&user["teams"]),
            action: s(&input["action"]).unwrap_or_default(),
            tool_name: s(&input["tool"]["name"]),
            sensitivity_level: s(&input["tool"]["sensitivity_level"]),
            server_id: s(&input["server"]["id"]),
            server_name: s(&input["server"]["name"]),
            reasons: d.reasons.clone(),
            policies_evaluated: d.policies_evaluated.clone(),
            policy_results: d.policy_results.clone(),
            evaluation_duration_us: duration_us,
            cache_hit: answer.cache_hit,
            client_ip: s(&ctx["client_ip"]),
            request_id: s(&ctx["request_id"]),
            session_id: s(&ctx["session_id"]),
            mfa_verified: match &user["mfa_verified"] {
                Value::Bool(b) => Some(*b),
                _ => None,
            },
            bundle_revision: d.bundle_revision.to_string(),
            error_code: d.error.as_ref().map(crate::EvalError::wire_code),
        }
    }

    /// One JSON line (newline included) with SARK's field names: `timestamp` in RFC 3339
    /// UTC with nanoseconds, `decision_id` as 32 hex digits. Parameters are left out on
    /// purpose: they may hold the secrets the policy filtered.
    pub fn to_json_line(&self) -> String {
        let mut v = serde_json::json!({
            "decision_id": format!("{:032x}", self.decision_id),
            "timestamp": rfc3339(self.timestamp_ns),
            "allow": self.allow,
            "result": self.result,
            "user_id": self.user_id,
            "user_roles": self.user_roles,
            "user_teams": self.user_teams,
            "action": self.action,
            "tool_name": self.tool_name,
            "sensitivity_level": self.sensitivity_level,
            "server_id": self.server_id,
            "server_name": self.server_name,
            "reasons": self.reasons,
            "policies_evaluated": self.policies_evaluated,
            "policy_results": self.policy_results.iter().map(|(k, b)| (k.clone(), serde_json::Value::Bool(*b))).collect::<serde_json::Map<_, _>>(),
            "evaluation_duration_us": self.evaluation_duration_us,
            "cache_hit": self.cache_hit,
            "client_ip": self.client_ip,
            "request_id": self.request_id,
            "session_id": self.session_id,
            "mfa_verified": self.mfa_verified,
            "bundle_revision": self.bundle_revision,
        });
        if let (Some(code), Some(obj)) = (self.error_code, v.as_object_mut()) {
            obj.insert("error_code".into(), code.into());
        }
        let mut line = v.to_string();
        let _ = writeln!(line);
        line
    }
}


/// `ns` since the epoch as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (proleptic Gregorian, UTC).
pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::Duration;

    use super::*;
    use crate::decision::{Decision, EngineKind};
    use crate::input::{ToolFields, UserFields};

    fn answer(allow: bool) -> Answer {
        Answer {
            decision: Rc::new(Decision {
                allow,
                reasons: vec!["r".into()],
                policies_evaluated: vec!["rbac".into()],
                policy_results: vec![("rbac".into(), allow)],
                filtered_parameters: Value::Undefined,
                cache_ttl_s: Some(60),
                restrictions: Default::default(),
                error: None,
                engine: EngineKind::Rvm,
                bundle_revision: "rev-1".into(),
            }),
            cache_hit: true,
            ttl: Duration::ZERO,
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_795_428_000_123_456_789), "2026-11-23T10:00:00.123456789Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000000000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn ids_are_unique_per_shard_and_start() {
        let mut a = DecisionIds::new(1, 7);
        let mut b = DecisionIds::new(2, 7);
        let mut c = DecisionIds::new(1, 8);
        let ids = [a.next_id(), a.next_id(), b.next_id(), c.next_id()];
        let unique: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn typed_and_document_records_agree_and_carry_sarks_fields() {
        let input = SarkInput {
            user: UserFields {
                id: "alice".into(),
                roles: vec!["developer".into()],
                teams: vec!["payments".into()],
                mfa_verified: Some(true),
                ..UserFields::default()
            },
            action: "tool:invoke".into(),
            tool: Some(ToolFields {
                name: "db".into(),
                sensitivity_level: Some("high".into()),
                ..ToolFields::default()
            }),
            client_ip: Some("10.0.0.1".into()),
            context: Value::from_json_str(r#"{"request_id": "q-1", "session_id": "s-1"}"#).unwrap(),
            ..SarkInput::default()
        };
        let a = answer(true);
        let typed = AuditRecord::for_typed(&input, &a, 5, 1_795_428_000_000_000_000, 12);
        let doc = AuditRecord::for_document(&input.to_value(), &a, 5, 1_795_428_000_000_000_000, 12);
        assert_eq!(typed, doc);
        let line = typed.to_json_line();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for field in [
            "decision_id", "timestamp", "allow", "result", "user_id", "user_roles", "user_teams", "action", "tool_name",
            "sensitivity_level", "server_id", "server_name", "reasons", "policies_evaluated", "policy_results",
            "evaluation_duration_us", "cache_hit", "client_ip", "request_id", "session_id", "mfa_verified", "bundle_revision",
        ] {
            assert!(v.get(field).is_some(), "{field} missing from {line}");
        }
        assert_eq!(v["decision_id"], "00000000000000000000000000000005");
        assert_eq!(v["timestamp"], "2026-11-23T10:00:00.000000000Z");
        assert_eq!(v["request_id"], "q-1");
        assert_eq!(v["policy_results"]["rbac"], true);
        assert!(v.get("error_code").is_none());
    }
}
