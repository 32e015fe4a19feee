//! The decision model: what the policy's decision document becomes, and how any failure
//! becomes a deny.

use std::sync::Arc;

use regorus::Value;

use crate::error::EvalError;

/// Which engine produced a value. Reported in the decision's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// regorus's RVM bytecode VM (the fast path).
    Rvm,
    /// regorus's tree-walking interpreter (used where an entrypoint does not compile to RVM).
    Interpreter,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Rvm => "rvm",
            EngineKind::Interpreter => "interpreter",
        }
    }
}

/// A tool's sensitivity, which picks the cache TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sensitivity {
    Low,
    Medium,
    High,
    Critical,
    /// Absent or not one of the four levels: the default TTL applies.
    Unknown,
}

impl Sensitivity {
    pub fn parse(s: &str) -> Sensitivity {
        match s {
            "low" => Sensitivity::Low,
            "medium" => Sensitivity::Medium,
            "high" => Sensitivity::High,
            "critical" => Sensitivity::Critical,
            _ => Sensitivity::Unknown,
        }
    }

    /// The sensitivity of `input.tool.sensitivity_level` in an input document.
    pub fn of_input(input: &Value) -> Sensitivity {
        match &input["tool"]["sensitivity_level"] {
            Value::String(s) => Sensitivity::parse(s),
            _ => Sensitivity::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Low => "low",
            Sensitivity::Medium => "medium",
            Sensitivity::High => "high",
            Sensitivity::Critical => "critical",
            Sensitivity::Unknown => "unknown",
        }
    }
}

/// Restrictions the a2a policy attaches to an allowed agent call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restrictions {
    pub rate_limited: bool,
    pub monitoring_required: bool,
    pub encryption_required: bool,
}

/// One decision, as the caller and the audit record see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allow: bool,
    /// Why; deny reasons first.
    pub reasons: Vec<String>,
    pub policies_evaluated: Vec<String>,
    pub policy_results: Vec<(String, bool)>,
    /// The tool call's parameters with sensitive ones removed (`Undefined` when absent).
    pub filtered_parameters: Value,
    /// The same as JSON text, rendered once when the decision is made (every reply that
    /// carries it, cache hits included, copies this).
    pub filtered_parameters_json: Option<String>,
    /// The policy's own TTL bound; `Some(0)` means do not cache, `None` means no bound.
    pub cache_ttl_s: Option<u64>,
    pub restrictions: Restrictions,
    /// Set when the decision is a deny because evaluation failed.
    pub error: Option<EvalError>,
    pub engine: EngineKind,
    pub bundle_revision: Arc<str>,
}

impl Decision {
    /// The fail-closed answer: deny, with the error as the reason.
    pub fn deny(error: EvalError, engine: EngineKind, bundle_revision: Arc<str>) -> Decision {
        Decision {
            allow: false,
            reasons: vec![error.to_string()],
            policies_evaluated: Vec::new(),
            policy_results: Vec::new(),
            filtered_parameters: Value::Undefined,
            filtered_parameters_json: None,
            cache_ttl_s: Some(0),
            restrictions: Restrictions::default(),
            error: Some(error),
            engine,
            bundle_revision,
        }
    }

    /// Read a decision document (`data.sark.decision`). Anything that is not one — no
    /// boolean `allow`, wrong types — is a deny with [`EvalError::Malformed`].
    pub fn from_document(doc: &Value, engine: EngineKind, bundle_revision: Arc<str>) -> Decision {
        parse_document(doc, engine, bundle_revision.clone())
            .unwrap_or_else(|e| Decision::deny(EvalError::Malformed(e), engine, bundle_revision))
    }

    /// `allow`, `deny` or `error`, as the audit record's `result`.
    pub fn result(&self) -> &'static str {
        match (self.error.is_some(), self.allow) {
            (true, _) => "error",
            (false, true) => "allow",
            (false, false) => "deny",
        }
    }

    /// The decision as JSON, for the CLI and the HTTP shim.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        out.insert("allow".into(), self.allow.into());
        out.insert("result".into(), self.result().into());
        out.insert("reasons".into(), self.reasons.clone().into());
        out.insert("policies_evaluated".into(), self.policies_evaluated.clone().into());
        out.insert(
            "policy_results".into(),
            self.policy_results
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::Bool(*v)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        );
        if let Some(params) = value_to_json(&self.filtered_parameters) {
            out.insert("filtered_parameters".into(), params);
        }
        out.insert("cache_ttl_s".into(), self.cache_ttl_s.into());
        out.insert(
            "restrictions".into(),
            serde_json::json!({
                "rate_limited": self.restrictions.rate_limited,
                "monitoring_required": self.restrictions.monitoring_required,
                "encryption_required": self.restrictions.encryption_required,
            }),
        );
        if let Some(e) = &self.error {
            out.insert(
                "error".into(),
                serde_json::json!({"code": e.wire_code(), "kind": e.kind(), "message": e.to_string()}),
            );
        }
        out.insert(
            "metadata".into(),
            serde_json::json!({"engine": self.engine.as_str(), "bundle_revision": &*self.bundle_revision}),
        );
        out.into()
    }
}

/// A regorus value as serde JSON; `None` for `Undefined`.
pub fn value_to_json(v: &Value) -> Option<serde_json::Value> {
    if *v == Value::Undefined {
        return None;
    }
    serde_json::to_value(v).ok()
}

fn parse_document(doc: &Value, engine: EngineKind, bundle_revision: Arc<str>) -> Result<Decision, String> {
    let obj = doc.as_object().map_err(|_| "decision is not an object".to_string())?;
    let field = |name: &str| obj.get(&Value::from(name));
    let allow = match field("allow") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("allow is not a boolean".into()),
        None => return Err("allow is missing".into()),
    };
    let strings = |name: &str| -> Result<Vec<String>, String> {
        match field(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(|v| as_str(v).map(str::to_string)).collect(),
            Some(Value::Set(s)) => s.iter().map(|v| as_str(v).map(str::to_string)).collect(),
            Some(_) => Err(format!("{name} is not an array of strings")),
        }
    };
    let reasons = strings("reasons")?;
    let policies_evaluated = strings("policies_evaluated")?;
    let policy_results = match field("policy_results") {
        None => Vec::new(),
        Some(v) => v
            .as_object()
            .map_err(|_| "policy_results is not an object".to_string())?
            .iter_sorted()
            .map(|(k, v)| match v {
                Value::Bool(b) => Ok((as_str(k)?.to_string(), *b)),
                _ => Err("policy_results values must be booleans".to_string()),
            })
            .collect::<Result<_, _>>()?,
    };
    let cache_ttl_s = match field("cache_ttl_s") {
        None => None,
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .map(|v| v.max(0).unsigned_abs())
                .ok_or("cache_ttl_s is not an integer")?,
        ),
        Some(_) => return Err("cache_ttl_s is not a number".into()),
    };
    let restrictions = match field("restrictions") {
        None => Restrictions::default(),
        Some(v) => {
            let flag = |name: &str| matches!(v[name], Value::Bool(true));
            Restrictions {
                rate_limited: flag("rate_limited"),
                monitoring_required: flag("monitoring_required"),
                encryption_required: flag("encryption_required"),
            }
        }
    };
    let filtered_parameters = field("filtered_parameters").cloned().unwrap_or(Value::Undefined);
    Ok(Decision {
        allow,
        reasons,
        policies_evaluated,
        policy_results,
        filtered_parameters_json: value_to_json(&filtered_parameters).map(|v| v.to_string()),
        filtered_parameters,
        cache_ttl_s,
        restrictions,
        error: None,
        engine,
        bundle_revision,
    })
}

fn as_str(v: &Value) -> Result<&str, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(format!("expected a string, got {other}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn doc(json: &str) -> Value {
        Value::from_json_str(json).unwrap()
    }

    #[test]
    fn a_full_document_is_read() {
        let d = Decision::from_document(
            &doc(r#"{"allow": true, "reasons": ["ok"], "policies_evaluated": ["rbac"], "policy_results": {"rbac": true},
                     "filtered_parameters": {"q": 1}, "cache_ttl_s": 42, "restrictions": {"rate_limited": true}}"#),
            EngineKind::Rvm,
            "r1".into(),
        );
        assert!(d.allow);
        assert_eq!(d.error, None);
        assert_eq!(d.cache_ttl_s, Some(42));
        assert_eq!(d.policy_results, vec![("rbac".to_string(), true)]);
        assert!(d.restrictions.rate_limited && !d.restrictions.encryption_required);
        assert_eq!(d.to_json()["filtered_parameters"], serde_json::json!({"q": 1}));
        assert_eq!(d.result(), "allow");
    }

    #[test]
    fn anything_malformed_is_a_deny() {
        for bad in [
            r#"true"#,
            r#"{"reasons": []}"#,
            r#"{"allow": "yes"}"#,
            r#"{"allow": true, "reasons": [1]}"#,
            r#"{"allow": true, "policy_results": {"a": 1}}"#,
            r#"{"allow": true, "cache_ttl_s": "60"}"#,
            r#"{"allow": true, "cache_ttl_s": 1.5}"#,
        ] {
            let d = Decision::from_document(&doc(bad), EngineKind::Rvm, "r".into());
            assert!(!d.allow, "{bad} allowed");
            assert_eq!(d.result(), "error", "{bad}");
            assert_eq!(d.error.as_ref().map(EvalError::wire_code), Some(1006), "{bad}");
            assert_eq!(d.cache_ttl_s, Some(0), "{bad}");
        }
    }

    #[test]
    fn negative_ttl_means_do_not_cache() {
        let d = Decision::from_document(&doc(r#"{"allow": false, "cache_ttl_s": -5}"#), EngineKind::Rvm, "r".into());
        assert_eq!(d.cache_ttl_s, Some(0));
    }
}
