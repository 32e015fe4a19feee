//! Request and response shapes of the HTTP front door's non-OPA endpoints, mapped to and
//! from SARK's input document (SARK-SPEC "Input document") — pure functions, no I/O.
//!
//! **AuthZEN Authorization API 1.0** (`/access/v1/evaluation`, `/access/v1/evaluations`):
//! - `subject` → `user`: `subject.id` is `user.id`; `subject.properties` supplies the other
//!   user fields (`roles`, `teams`, `team_manager_of`, `mfa_verified`, `mfa_age_s`,
//!   `scopes`, `email`). A subject of type `agent` becomes `agent` instead (`id` plus its
//!   properties: `type`, `trust_level`, `environment`, `capabilities`, …).
//! - `action.name` → `action` (`tool:invoke`, `server:read`, `gateway:tool:invoke`, …);
//!   `action.properties.parameters` → `parameters` (the tool call's arguments).
//! - `resource` of type `tool` → `tool` (`resource.id` is its name, properties its other
//!   fields, `properties.server` → `server`); of type `server` → `server` (`id` plus
//!   properties); of type `agent` → `agent.target` (`id` plus properties).
//! - `context` → `context` as is (`client_ip`, `request_id`, `vpn`, …).
//! - The answer: `{"decision": allow, "context": {"reasons": […], "decision_id": …,
//!   "filtered_parameters": …}}`; a deny is `decision: false` with status 200.
//!
//! **SARK** (`/api/v1/policy/evaluate`, `/api/v1/policy/batch-evaluate`,
//! `/api/v1/gateway/authorize`): SARK's request fields (`user_id` or a `user` object,
//! `action`, `tool` as a name or an object, `server_id`, `parameters`, `context`; the
//! gateway's `server_name`, `tool_name`, `gateway_metadata.tool_sensitivity`), answered
//! with SARK's fields (`decision` or `allow`, `reason`, `filtered_parameters`, `audit_id`,
//! `cache_ttl`).

use pdp::decision::Decision;
use pdp::point::Answer;
use serde_json::{Map, Value, json};

/// Items one batch request may carry.
pub const MAX_ITEMS: usize = 1000;

/// How `/access/v1/evaluations` runs its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

impl Semantic {
    /// Whether evaluation stops after an item decided `allow`.
    pub fn stops_after(self, allow: bool) -> bool {
        match self {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !allow,
            Semantic::PermitOnFirstPermit => allow,
        }
    }
}

/// `/.well-known/authzen-configuration` for a PDP reachable at `base`.
pub fn configuration(base: &str) -> Value {
    json!({
        "policy_decision_point": base,
        "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
    })
}

/// `v[key]`, or null.
fn at<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

/// A SARK request's input so far, and the request object.
type Started<'a> = (Map<String, Value>, &'a Map<String, Value>);

fn object<'a>(v: &'a Value, what: &str) -> Result<Option<&'a Map<String, Value>>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Object(o) => Ok(Some(o)),
        other => Err(format!("{what} must be an object, not {other}")),
    }
}

fn id_of(o: &Map<String, Value>, what: &str) -> Result<Value, String> {
    match o.get("id") {
        Some(Value::String(s)) => Ok(Value::String(s.clone())),
        _ => Err(format!("{what}.id must be a string")),
    }
}

/// `{id, …properties}`.
fn with_properties(id: Value, o: &Map<String, Value>, what: &str) -> Result<Map<String, Value>, String> {
    let mut out = match o.get("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return Err(format!("{what}.properties must be an object")),
    };
    out.insert("id".into(), id);
    Ok(out)
}

/// One AuthZEN evaluation (subject, action, resource, context) as a SARK input.
fn authzen_input(subject: &Value, action: &Value, resource: &Value, context: &Value) -> Result<Value, String> {
    let mut input = Map::new();
    let subject = object(subject, "subject")?.ok_or("subject is required")?;
    let who = with_properties(id_of(subject, "subject")?, subject, "subject")?;
    let mut agent = if subject.get("type").and_then(Value::as_str) == Some("agent") {
        Some(who)
    } else {
        input.insert("user".into(), Value::Object(who));
        None
    };
    let action = object(action, "action")?.ok_or("action is required")?;
    match action.get("name") {
        Some(Value::String(name)) => input.insert("action".into(), Value::String(name.clone())),
        _ => return Err("action.name must be a string".into()),
    };
    if let Some(params) = action.get("properties").and_then(|p| p.get("parameters")) {
        input.insert("parameters".into(), params.clone());
    }
    if let Some(resource) = object(resource, "resource")? {
        let mut r = with_properties(id_of(resource, "resource")?, resource, "resource")?;
        match resource.get("type").and_then(Value::as_str) {
            Some("tool") => {
                if let Some(id) = r.remove("id") {
                    r.insert("name".into(), id);
                }
                if let Some(server) = r.remove("server") {
                    input.insert("server".into(), server);
                }
                input.insert("tool".into(), Value::Object(r));
            }
            Some("server") => {
                input.insert("server".into(), Value::Object(r));
            }
            Some("agent") => {
                agent.get_or_insert_with(Map::new).insert("target".into(), Value::Object(r));
            }
            other => return Err(format!("resource.type must be tool, server or agent, not {other:?}")),
        }
    }
    if let Some(a) = agent {
        input.insert("agent".into(), Value::Object(a));
    }
    match context {
        Value::Null => {}
        Value::Object(_) => {
            input.insert("context".into(), context.clone());
        }
        _ => return Err("context must be an object".into()),
    }
    Ok(Value::Object(input))
}

/// `POST /access/v1/evaluation`.
pub fn evaluation(req: &Value) -> Result<Value, String> {
    authzen_input(at(req, "subject"), at(req, "action"), at(req, "resource"), at(req, "context"))
}

/// `POST /access/v1/evaluations`: each item's fields override the top-level defaults.
pub fn evaluations(req: &Value) -> Result<(Vec<Value>, Semantic), String> {
    let semantic = match at(at(req, "options"), "evaluations_semantic").as_str() {
        None | Some("execute_all") => Semantic::ExecuteAll,
        Some("deny_on_first_deny") => Semantic::DenyOnFirstDeny,
        Some("permit_on_first_permit") => Semantic::PermitOnFirstPermit,
        Some(other) => return Err(format!("options.evaluations_semantic {other:?} is not one of execute_all, deny_on_first_deny, permit_on_first_permit")),
    };
    let items = match at(req, "evaluations") {
        Value::Null => return Ok((vec![evaluation(req)?], semantic)),
        Value::Array(a) if a.len() <= MAX_ITEMS => a,
        Value::Array(a) => return Err(format!("{} evaluations exceed the limit of {MAX_ITEMS}", a.len())),
        _ => return Err("evaluations must be an array".into()),
    };
    let pick = |item: &Value, field: &str| -> Value {
        match at(item, field) {
            Value::Null => at(req, field).clone(),
            v => v.clone(),
        }
    };
    let inputs = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            authzen_input(&pick(item, "subject"), &pick(item, "action"), &pick(item, "resource"), &pick(item, "context"))
                .map_err(|e| format!("evaluations[{i}]: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((inputs, semantic))
}

/// An AuthZEN decision.
pub fn evaluation_response(a: &Answer, decision_id: u128) -> Value {
    let d = &a.decision;
    let mut ctx = Map::new();
    ctx.insert("reasons".into(), json!(d.reasons));
    ctx.insert("decision_id".into(), format!("{decision_id:032x}").into());
    if let Some(p) = pdp::decision::value_to_json(&d.filtered_parameters) {
        ctx.insert("filtered_parameters".into(), p);
    }
    if let Some(e) = &d.error {
        ctx.insert("error".into(), json!({"code": e.wire_code(), "message": e.to_string()}));
    }
    json!({"decision": d.allow, "context": ctx})
}

/// SARK's `user_id`/`user` fields as the input's `user`.
fn sark_user(req: &Map<String, Value>) -> Result<Value, String> {
    let mut user = match req.get("user") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(u)) => u.clone(),
        Some(_) => return Err("user must be an object".into()),
    };
    if let Some(id) = req.get("user_id") {
        if !id.is_string() {
            return Err("user_id must be a string".into());
        }
        user.insert("id".into(), id.clone());
    }
    if !user.get("id").is_some_and(Value::is_string) {
        return Err("user_id (or user.id) is required".into());
    }
    Ok(Value::Object(user))
}

fn sark_common(req: &Value) -> Result<Started<'_>, String> {
    let req = req.as_object().ok_or("the request must be a JSON object")?;
    let mut input = Map::new();
    input.insert("user".into(), sark_user(req)?);
    match req.get("action") {
        Some(Value::String(a)) => input.insert("action".into(), Value::String(a.clone())),
        _ => return Err("action must be a string".into()),
    };
    for field in ["parameters", "context", "agent"] {
        match req.get(field) {
            None | Some(Value::Null) => {}
            Some(v @ Value::Object(_)) => {
                input.insert(field.into(), v.clone());
            }
            Some(_) => return Err(format!("{field} must be an object")),
        }
    }
    Ok((input, req))
}

/// `POST /api/v1/policy/evaluate`.
pub fn sark_evaluate(req: &Value) -> Result<Value, String> {
    let (mut input, req) = sark_common(req)?;
    match req.get("tool") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => {
            input.insert("tool".into(), json!({"name": name}));
        }
        Some(t @ Value::Object(_)) => {
            input.insert("tool".into(), t.clone());
        }
        Some(_) => return Err("tool must be a name or an object".into()),
    }
    match (req.get("server"), req.get("server_id")) {
        (Some(s @ Value::Object(_)), _) => {
            input.insert("server".into(), s.clone());
        }
        (_, Some(Value::String(id))) => {
            input.insert("server".into(), json!({"id": id}));
        }
        (None | Some(Value::Null), None | Some(Value::Null)) => {}
        _ => return Err("server must be an object, server_id a string".into()),
    }
    Ok(Value::Object(input))
}

/// `POST /api/v1/policy/batch-evaluate`: an array of evaluate requests.
pub fn sark_batch(req: &Value) -> Result<Vec<Value>, String> {
    match req {
        Value::Array(items) if items.len() <= MAX_ITEMS => {
            items.iter().enumerate().map(|(i, r)| sark_evaluate(r).map_err(|e| format!("[{i}]: {e}"))).collect()
        }
        Value::Array(items) => Err(format!("{} requests exceed the limit of {MAX_ITEMS}", items.len())),
        _ => Err("the request must be a JSON array of evaluate requests".into()),
    }
}

/// `POST /api/v1/gateway/authorize`.
pub fn sark_gateway(req: &Value) -> Result<Value, String> {
    let (mut input, req) = sark_common(req)?;
    let meta = match req.get("gateway_metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err("gateway_metadata must be an object".into()),
    };
    if let Some(name) = req.get("server_name") {
        let name = name.as_str().ok_or("server_name must be a string")?;
        input.insert("server".into(), json!({"id": name, "name": name}));
    }
    if let Some(name) = req.get("tool_name") {
        let name = name.as_str().ok_or("tool_name must be a string")?;
        let mut tool = Map::new();
        tool.insert("name".into(), name.into());
        if let Some(s) = meta.get("tool_sensitivity") {
            tool.insert("sensitivity_level".into(), s.clone());
        }
        input.insert("tool".into(), Value::Object(tool));
    }
    Ok(Value::Object(input))
}

/// SARK's evaluate response.
pub fn sark_response(a: &Answer, decision_id: u128) -> Value {
    let d = &a.decision;
    json!({
        "decision": if d.allow { "allow" } else { "deny" },
        "reason": d.reasons.join("; "),
        "filtered_parameters": pdp::decision::value_to_json(&d.filtered_parameters).filter(|_| d.allow),
        "audit_id": format!("{decision_id:032x}"),
        "cache_ttl": a.ttl.as_secs(),
    })
}

/// SARK's gateway response.
pub fn gateway_response(a: &Answer, decision_id: u128) -> Value {
    let d = &a.decision;
    json!({
        "allow": d.allow,
        "reason": d.reasons.join("; "),
        "filtered_parameters": pdp::decision::value_to_json(&d.filtered_parameters).filter(|_| d.allow),
        "audit_id": format!("{decision_id:032x}"),
        "cache_ttl": a.ttl.as_secs(),
    })
}

/// `data.mcp.result` (policies/mcp.rego) from SARK's decision: undefined when the
/// decision has no filtered parameters, as the rule is.
pub fn mcp_result(d: &Decision) -> Option<Value> {
    Some(json!({
        "allow": d.allow,
        "audit_reason": d.reasons.join("; "),
        "filtered_parameters": pdp::decision::value_to_json(&d.filtered_parameters)?,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn authzen_maps_to_sarks_input() {
        let req = json!({
            "subject": {"type": "user", "id": "alice", "properties": {"roles": ["developer"], "teams": ["payments"]}},
            "action": {"name": "tool:invoke", "properties": {"parameters": {"ticket_id": "T-1"}}},
            "resource": {"type": "tool", "id": "update_ticket", "properties": {"sensitivity_level": "medium", "server": {"id": "s1"}}},
            "context": {"client_ip": "10.0.0.1"}
        });
        assert_eq!(
            evaluation(&req).unwrap(),
            json!({
                "user": {"id": "alice", "roles": ["developer"], "teams": ["payments"]},
                "action": "tool:invoke",
                "parameters": {"ticket_id": "T-1"},
                "tool": {"name": "update_ticket", "sensitivity_level": "medium"},
                "server": {"id": "s1"},
                "context": {"client_ip": "10.0.0.1"}
            })
        );
        let agent = json!({
            "subject": {"type": "agent", "id": "a1", "properties": {"trust_level": "trusted"}},
            "action": {"name": "a2a:query"},
            "resource": {"type": "agent", "id": "a2", "properties": {"environment": "prod"}}
        });
        assert_eq!(
            evaluation(&agent).unwrap(),
            json!({"action": "a2a:query", "agent": {"id": "a1", "trust_level": "trusted", "target": {"id": "a2", "environment": "prod"}}})
        );
    }

    #[test]
    fn malformed_requests_name_the_field() {
        for (req, why) in [
            (json!({"action": {"name": "x"}}), "subject is required"),
            (json!({"subject": {"id": 5}, "action": {"name": "x"}}), "subject.id"),
            (json!({"subject": {"id": "u"}, "action": {}}), "action.name"),
            (json!({"subject": {"id": "u"}, "action": {"name": "x"}, "resource": {"type": "file", "id": "f"}}), "resource.type"),
            (json!({"subject": {"id": "u"}, "action": {"name": "x"}, "context": 3}), "context"),
        ] {
            let e = evaluation(&req).unwrap_err();
            assert!(e.contains(why), "{req}: {e}");
        }
        let e = evaluations(&json!({"options": {"evaluations_semantic": "first"}, "evaluations": []})).unwrap_err();
        assert!(e.contains("evaluations_semantic"), "{e}");
        let e = evaluations(&json!({"subject": {"id": "u"}, "evaluations": [{"action": {"name": "x"}}, {}]})).unwrap_err();
        assert!(e.starts_with("evaluations[1]: action"), "{e}");
        assert!(sark_evaluate(&json!({"action": "tool:invoke"})).unwrap_err().contains("user_id"));
        assert!(sark_batch(&json!({})).is_err());
    }

    #[test]
    fn evaluations_take_defaults_and_semantics() {
        let req = json!({
            "subject": {"id": "alice"},
            "action": {"name": "tool:invoke"},
            "options": {"evaluations_semantic": "deny_on_first_deny"},
            "evaluations": [{"resource": {"type": "tool", "id": "a"}}, {"subject": {"id": "bob"}, "resource": {"type": "tool", "id": "b"}}]
        });
        let (inputs, semantic) = evaluations(&req).unwrap();
        assert_eq!(semantic, Semantic::DenyOnFirstDeny);
        assert_eq!(inputs[0]["user"]["id"], "alice");
        assert_eq!(inputs[1]["user"]["id"], "bob");
        assert_eq!(inputs[1]["tool"]["name"], "b");
        assert!(Semantic::DenyOnFirstDeny.stops_after(false) && !Semantic::DenyOnFirstDeny.stops_after(true));
        assert!(Semantic::PermitOnFirstPermit.stops_after(true) && !Semantic::ExecuteAll.stops_after(false));
    }

    #[test]
    fn sark_requests_map_to_inputs() {
        let r = sark_evaluate(&json!({"user_id": "u1", "action": "tool:invoke", "tool": "db", "server_id": "s1", "parameters": {"q": 1}})).unwrap();
        assert_eq!(r, json!({"user": {"id": "u1"}, "action": "tool:invoke", "tool": {"name": "db"}, "server": {"id": "s1"}, "parameters": {"q": 1}}));
        let g = sark_gateway(&json!({"user": {"id": "u1", "roles": ["admin"]}, "action": "gateway:tool:invoke", "server_name": "fin", "tool_name": "q", "gateway_metadata": {"tool_sensitivity": "high"}})).unwrap();
        assert_eq!(g["server"], json!({"id": "fin", "name": "fin"}));
        assert_eq!(g["tool"], json!({"name": "q", "sensitivity_level": "high"}));
    }
}
