//! A bundle's decision cases (`cases/*.yaml`): an input, an entrypoint, and what the
//! result must contain. Run by `sark-pdp test` on the bundle's own engine and by the
//! policy-case test on all three engines (RVM, interpreter, OPA).
//!
//! ```yaml
//! cases:
//!   - name: "rbac: viewer may not invoke a medium tool"   # unique across files
//!     entrypoint: data.sark.decision                      # optional; this is the default
//!     input: {user: {...}, action: "tool:invoke", ...}
//!     want: {allow: false, cache_ttl_s: 300}              # subset match
//!     reasons_include: ["rbac: ..."]                      # optional
//! ```
//! `want` is matched against the result: objects as a subset (each key of `want` present
//! and matching, recursively), arrays and scalars exactly, numbers by value.

use serde::Deserialize;

use crate::bundle::{Bundle, DECISION_ENTRYPOINT};
use crate::decision::value_to_json;
use crate::eval::Evaluator;

/// One case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default = "default_entrypoint")]
    pub entrypoint: String,
    pub input: serde_json::Value,
    #[serde(default)]
    pub want: Option<serde_json::Value>,
    #[serde(default)]
    pub reasons_include: Vec<String>,
    /// The file it came from (filled in on load).
    #[serde(skip)]
    pub file: String,
}

fn default_entrypoint() -> String {
    DECISION_ENTRYPOINT.to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFileDoc {
    cases: Vec<Case>,
}

/// Parse every case file of a bundle.
///
/// # Errors
/// A YAML error (with file, line and column), a case with neither `want` nor
/// `reasons_include`, or a duplicate name.
pub fn load(bundle: &Bundle) -> Result<Vec<Case>, String> {
    let mut all: Vec<Case> = Vec::new();
    for f in &bundle.cases {
        let doc: CaseFileDoc = serde_yaml::from_str(&f.text).map_err(|e| match e.location() {
            Some(l) => format!("{}/{}:{}:{}: {e}", bundle.origin, f.path, l.line(), l.column()),
            None => format!("{}/{}: {e}", bundle.origin, f.path),
        })?;
        for mut case in doc.cases {
            if case.want.is_none() && case.reasons_include.is_empty() {
                return Err(format!("{}: case {:?} checks nothing (no want, no reasons_include)", f.path, case.name));
            }
            if let Some(other) = all.iter().find(|c| c.name == case.name) {
                return Err(format!("{}: case name {:?} also used in {}", f.path, case.name, other.file));
            }
            case.file = f.path.clone();
            all.push(case);
        }
    }
    Ok(all)
}

/// Numbers equal by value (an integer and the same float are equal), everything else
/// structurally.
pub fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (J::Array(x), J::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Where `got` fails to contain `want` (see the module doc), or `None`.
pub fn mismatch(want: &serde_json::Value, got: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value as J;
    match (want, got) {
        (J::Object(w), J::Object(g)) => w.iter().find_map(|(k, wv)| match g.get(k) {
            None => Some(format!("{at}.{k}: missing (want {wv})")),
            Some(gv) => mismatch(wv, gv, &format!("{at}.{k}")),
        }),
        _ if json_eq(want, got) => None,
        _ => Some(format!("{at}: want {want}, got {got}")),
    }
}

/// Check one result (`None` = undefined) against a case's expectations.
///
/// # Errors
/// What differs.
pub fn check(case: &Case, result: Option<&serde_json::Value>) -> Result<(), String> {
    let Some(got) = result else {
        return Err("result is undefined".into());
    };
    if let Some(m) = case.want.as_ref().and_then(|want| mismatch(want, got, "result")) {
        return Err(m);
    }
    let reasons = got.get("reasons").and_then(|r| r.as_array());
    for r in &case.reasons_include {
        if !reasons.is_some_and(|list| list.iter().any(|x| x.as_str() == Some(r))) {
            return Err(format!("reasons lack {r:?}; got {}", got.get("reasons").unwrap_or(&serde_json::Value::Null)));
        }
    }
    Ok(())
}

/// Evaluate a case on a regorus evaluator; `Ok(None)` is undefined.
///
/// # Errors
/// The engine's error.
pub fn evaluate(ev: &mut Evaluator, case: &Case) -> Result<Option<serde_json::Value>, String> {
    match ev.evaluate(&case.entrypoint, regorus::Value::from(case.input.clone())) {
        Ok((v, _)) => Ok(value_to_json(&v)),
        Err(crate::EvalError::Undefined(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_matching() {
        let got = json!({"allow": false, "reasons": ["a", "b"], "cache_ttl_s": 60, "x": {"y": 1, "z": 2}});
        assert_eq!(mismatch(&json!({"allow": false}), &got, "r"), None);
        assert_eq!(mismatch(&json!({"cache_ttl_s": 60.0}), &got, "r"), None);
        assert_eq!(mismatch(&json!({"x": {"y": 1}}), &got, "r"), None);
        assert!(mismatch(&json!({"reasons": ["a"]}), &got, "r").is_some(), "arrays match exactly");
        assert_eq!(mismatch(&json!({"allow": true}), &got, "r").unwrap(), "r.allow: want true, got false");
        assert_eq!(mismatch(&json!({"q": 1}), &got, "r").unwrap(), "r.q: missing (want 1)");
    }

    #[test]
    fn cases_load_and_check() {
        let files = vec![
            ("p.rego".to_string(), b"package sark\ndecision := {\"allow\": false}\n".to_vec()),
            (
                "cases/a.yaml".to_string(),
                b"cases:\n  - name: one\n    input: {}\n    want: {allow: false}\n    reasons_include: [nope]\n".to_vec(),
            ),
        ];
        let b = Bundle::from_files("t", files, Default::default()).unwrap();
        let cases = load(&b).unwrap();
        assert_eq!(cases.len(), 1);
        assert_eq!(cases[0].entrypoint, "data.sark.decision");
        let err = check(&cases[0], Some(&json!({"allow": false, "reasons": ["other"]}))).unwrap_err();
        assert!(err.contains("reasons lack \"nope\""), "{err}");
        assert!(check(&cases[0], None).is_err());
    }

    #[test]
    fn bad_case_files_are_refused() {
        let mk = |yaml: &str| {
            let files = vec![
                ("p.rego".to_string(), b"package sark\ndecision := {}\n".to_vec()),
                ("cases/a.yaml".to_string(), yaml.as_bytes().to_vec()),
            ];
            load(&Bundle::from_files("t", files, Default::default()).unwrap())
        };
        assert!(mk("cases:\n  - name: x\n    input: {}\n").unwrap_err().contains("checks nothing"));
        assert!(mk("cases:\n  - name: x\n    input: {}\n    wnat: {}\n").unwrap_err().contains("t/cases/a.yaml:"));
        let dup = "cases:\n  - {name: x, input: {}, want: {}}\n  - {name: x, input: {}, want: {}}\n";
        assert!(mk(dup).unwrap_err().contains("also used"));
    }
}
