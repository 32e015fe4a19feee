//! Properties of the HTTP shim's mappings (proptest): for any SARK input, the request
//! each shape would carry it in (OPA's data API, AuthZEN's evaluation and evaluations,
//! SARK's evaluate, batch-evaluate and gateway) parses through the server's own request
//! parser and maps back to that input; and every response shape says what the decision
//! says (allow, reasons, filtered parameters only on an allow, the error).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use pdp::point::Answer;
use pdp::{Decision, EngineKind, EvalError};
use proptest::collection::{btree_map, vec};
use proptest::option::of;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use shard::authzen as az;

fn id() -> impl Strategy<Value = String> {
    // Printable, with the characters JSON must escape.
    "[a-zA-Z0-9 _:@.\"\\\\/é-]{1,16}"
}

fn ids() -> impl Strategy<Value = Vec<String>> {
    vec(id(), 0..4)
}

/// JSON values a context or parameters object may hold (a few levels deep).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::from), any::<i64>().prop_map(Value::from), id().prop_map(Value::from)];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![vec(inner.clone(), 0..4).prop_map(Value::Array), btree_map(id(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))]
    })
}

fn object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(id(), json_value(), 0..4).prop_map(|m| m.into_iter().collect())
}

/// A SARK input document (SARK-SPEC's shape) with a user, an action, a tool, maybe a
/// server, parameters and a context.
#[derive(Debug, Clone)]
struct Input {
    user: Map<String, Value>,
    action: String,
    tool: Map<String, Value>,
    server: Option<Map<String, Value>>,
    parameters: Map<String, Value>,
    context: Map<String, Value>,
}

fn input() -> impl Strategy<Value = Input> {
    let user = (id(), ids(), ids(), of(any::<bool>())).prop_map(|(id, roles, teams, mfa)| {
        let mut u = Map::new();
        u.insert("id".into(), id.into());
        u.insert("roles".into(), json!(roles));
        u.insert("teams".into(), json!(teams));
        if let Some(m) = mfa {
            u.insert("mfa_verified".into(), m.into());
        }
        u
    });
    let tool = (id(), of(prop_oneof![Just("low"), Just("medium"), Just("high"), Just("critical")]), ids()).prop_map(|(name, s, teams)| {
        let mut t = Map::new();
        t.insert("name".into(), name.into());
        if let Some(s) = s {
            t.insert("sensitivity_level".into(), s.into());
        }
        t.insert("teams".into(), json!(teams));
        t
    });
    let server = of((id(), id()).prop_map(|(id, name)| {
        let mut s = Map::new();
        s.insert("id".into(), id.into());
        s.insert("name".into(), name.into());
        s
    }));
    (user, id(), tool, server, object(), object()).prop_map(|(user, action, tool, server, parameters, context)| Input { user, action, tool, server, parameters, context })
}

impl Input {
    /// The document the PDP decides on.
    fn document(&self) -> Value {
        let mut d = Map::new();
        d.insert("user".into(), Value::Object(self.user.clone()));
        d.insert("action".into(), self.action.clone().into());
        d.insert("tool".into(), Value::Object(self.tool.clone()));
        if let Some(s) = &self.server {
            d.insert("server".into(), Value::Object(s.clone()));
        }
        d.insert("parameters".into(), Value::Object(self.parameters.clone()));
        d.insert("context".into(), Value::Object(self.context.clone()));
        Value::Object(d)
    }

    fn without(m: &Map<String, Value>, key: &str) -> Map<String, Value> {
        let mut m = m.clone();
        m.remove(key);
        m
    }

    /// AuthZEN: the user as the subject, the tool as the resource (its server among the
    /// resource's properties), the parameters among the action's properties.
    fn authzen(&self) -> Value {
        let mut resource_props = Input::without(&self.tool, "name");
        if let Some(s) = &self.server {
            resource_props.insert("server".into(), Value::Object(s.clone()));
        }
        json!({
            "subject": {"type": "user", "id": self.user["id"], "properties": Input::without(&self.user, "id")},
            "action": {"name": self.action, "properties": {"parameters": self.parameters}},
            "resource": {"type": "tool", "id": self.tool["name"], "properties": resource_props},
            "context": self.context,
        })
    }

    /// SARK's evaluate request.
    fn sark(&self) -> Value {
        let mut r = json!({
            "user_id": self.user["id"],
            "user": Input::without(&self.user, "id"),
            "action": self.action,
            "tool": self.tool,
            "parameters": self.parameters,
            "context": self.context,
        });
        if let Some(s) = &self.server {
            r["server"] = Value::Object(s.clone());
        }
        r
    }
}

/// `body` as the server's parser reads it off the wire, in a request to `path`.
fn through_the_parser(path: &str, body: &Value) -> Value {
    let text = body.to_string();
    let mut raw = format!("POST {path} HTTP/1.1\r\nHost: pdp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}", text.len()).into_bytes();
    let total = raw.len();
    let cfg = shard::http::HttpConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let (len, parsed) = shard::http::parse_request(&cfg, &mut raw).unwrap().unwrap();
    assert_eq!(len, total);
    parsed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn opa_data_api_bodies_carry_the_input_unchanged(i in input()) {
        let parsed = through_the_parser("/v1/data/mcp/allow", &json!({"input": i.document()}));
        prop_assert_eq!(&parsed["input"], &i.document());
    }

    #[test]
    fn an_authzen_evaluation_maps_to_the_input_it_describes(i in input()) {
        let parsed = through_the_parser("/access/v1/evaluation", &i.authzen());
        prop_assert_eq!(az::evaluation(&parsed).unwrap(), i.document());
    }

    #[test]
    fn authzen_evaluations_take_top_level_defaults_and_per_item_resources(items in vec(input(), 1..5), semantic in 0..3usize) {
        // One subject, action and context for all; each item names its own resource.
        let first = items[0].authzen();
        let evaluations: Vec<Value> = items.iter().map(|i| json!({"resource": i.authzen()["resource"]})).collect();
        let name = ["execute_all", "deny_on_first_deny", "permit_on_first_permit"][semantic];
        let req = json!({"subject": first["subject"], "action": first["action"], "context": first["context"], "evaluations": evaluations, "options": {"evaluations_semantic": name}});
        let (inputs, _) = az::evaluations(&through_the_parser("/access/v1/evaluations", &req)).unwrap();
        prop_assert_eq!(inputs.len(), items.len());
        for (got, i) in inputs.iter().zip(&items) {
            let want = Input { user: items[0].user.clone(), action: items[0].action.clone(), parameters: items[0].parameters.clone(), context: items[0].context.clone(), ..i.clone() };
            prop_assert_eq!(got, &want.document());
        }
    }

    #[test]
    fn sark_evaluate_and_batch_map_to_the_inputs(items in vec(input(), 1..5)) {
        for i in &items {
            prop_assert_eq!(az::sark_evaluate(&through_the_parser("/api/v1/policy/evaluate", &i.sark())).unwrap(), i.document());
        }
        let batch = Value::Array(items.iter().map(Input::sark).collect());
        let got = az::sark_batch(&through_the_parser("/api/v1/policy/batch-evaluate", &batch)).unwrap();
        prop_assert_eq!(got, items.iter().map(Input::document).collect::<Vec<_>>());
    }

    #[test]
    fn the_gateway_shape_names_tool_and_server(i in input(), sensitivity in of(id())) {
        let tool = i.tool["name"].clone();
        let mut req = json!({"user_id": i.user["id"], "action": i.action, "tool_name": tool, "server_name": "srv", "context": i.context});
        if let Some(s) = &sensitivity {
            req["gateway_metadata"] = json!({"tool_sensitivity": s});
        }
        let got = az::sark_gateway(&through_the_parser("/api/v1/gateway/authorize", &req)).unwrap();
        let mut want_tool = json!({"name": tool});
        if let Some(s) = &sensitivity {
            want_tool["sensitivity_level"] = json!(s);
        }
        prop_assert_eq!(&got["tool"], &want_tool);
        prop_assert_eq!(&got["server"], &json!({"id": "srv", "name": "srv"}));
        prop_assert_eq!(&got["user"], &json!({"id": i.user["id"]}));
        prop_assert_eq!(&got["context"], &Value::Object(i.context.clone()));
    }

    #[test]
    fn every_response_shape_says_what_the_decision_says(allow in any::<bool>(), reasons in ids(), params in of(object()), failed in any::<bool>(), ttl in 0..600u64, id in any::<u128>()) {
        let mut d = Decision::deny(EvalError::BadInput("x".into()), EngineKind::Rvm, Arc::from("r1"));
        d.allow = allow && !failed;
        d.reasons = reasons.clone();
        d.error = failed.then(|| EvalError::BadInput("user.id: too long".into()));
        d.filtered_parameters = params.clone().map_or(pdp::Value::Undefined, |p| pdp::Value::from(Value::Object(p)));
        let a = Answer { decision: Arc::new(d), cache_hit: false, ttl: Duration::from_secs(ttl) };
        let allowed = allow && !failed;
        let params = params.map(Value::Object);

        let z = az::evaluation_response(&a, id);
        prop_assert_eq!(&z["decision"], &json!(allowed));
        prop_assert_eq!(&z["context"]["reasons"], &json!(reasons));
        prop_assert_eq!(z["context"]["decision_id"].as_str().map(|s| u128::from_str_radix(s, 16).ok()), Some(Some(id)));
        prop_assert_eq!(z["context"]["error"]["code"].as_u64(), failed.then_some(1002));
        prop_assert_eq!(z["context"].get("filtered_parameters"), params.as_ref());

        for (r, key, yes) in [(az::sark_response(&a, id), "decision", json!("allow")), (az::gateway_response(&a, id), "allow", json!(true))] {
            prop_assert_eq!(r[key] == yes, allowed);
            let joined = reasons.join("; ");
            prop_assert_eq!(r["reason"].as_str(), Some(joined.as_str()));
            prop_assert_eq!(&r["filtered_parameters"], params.as_ref().filter(|_| allowed).unwrap_or(&Value::Null));
            prop_assert_eq!(r["cache_ttl"].as_u64(), Some(ttl));
            prop_assert_eq!(r["audit_id"].as_str().map(|s| u128::from_str_radix(s, 16).ok()), Some(Some(id)));
        }
    }
}
