//! Explain: which rules fired and why a decision is what it is.
//!
//! Two levels, as OPA's `explain=notes|full`:
//!
//! - **notes** come from the decision itself, at no extra evaluation: each applied
//!   sub-policy's verdict (`policy_results`) with the reasons it gave (SARK's reasons carry
//!   their policy's name as a prefix, `"rbac: …"`), every reason, the error that made it a
//!   deny if any, the engine that answered, whether the answer came from the cache, and the
//!   bundle revision.
//! - **full** adds a rule trace. regorus 0.14's RVM records nothing of a run (its
//!   `explanations` feature defines report types only; nothing fills them), so the trace is a
//!   second, fresh evaluation of the same entrypoint on the same input, on a clone of the
//!   shard's interpreter with coverage on: every rule of the bundle with an expression that was
//!   evaluated, with the lines evaluated in each of its definitions, and its value (all of
//!   them asked for in one more evaluation; `Undefined` — no body held and no default — is
//!   shown as absent). Evaluated is not fired: a rule whose body failed is listed with the
//!   lines it reached, and its value says what it gave. `agrees` says whether the fresh
//!   evaluation reached the answer reported: a cached answer was computed earlier, and a
//!   policy that reads the clock may differ across the instant between the two. The AST
//!   that maps lines to rules is `regorus::unstable` (pinned by Cargo.lock).
//!
//! The decision is never changed: it is made first, on the normal path (cache included, so
//! `cache_hit` is what a request without explain would have seen), and explained after. The
//! normal path pays nothing: nothing here runs unless explain is asked for, and the clone that
//! collects coverage is dropped afterwards (the shard's own engines never have coverage on).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use regorus::unstable::{Expr, Rule, RuleHead};
use regorus::{Engine, Value};

use super::Evaluator;
use crate::decision::{Decision, EngineKind, value_to_json};

/// How much to explain (ordered: notes < full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExplainLevel {
    /// The decision's own account: policy results, reasons, engine, cache, revision.
    Notes,
    /// Notes plus the rule trace of a fresh interpreter evaluation.
    Full,
}

impl ExplainLevel {
    /// `notes` or `full`; anything else is `None`.
    pub fn parse(s: &str) -> Option<ExplainLevel> {
        match s {
            "notes" => Some(ExplainLevel::Notes),
            "full" => Some(ExplainLevel::Full),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExplainLevel::Notes => "notes",
            ExplainLevel::Full => "full",
        }
    }
}

/// One applied sub-policy: its verdict and the reasons it gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyNote {
    pub policy: String,
    pub allow: bool,
    /// The decision's reasons prefixed `"<policy>: "`.
    pub reasons: Vec<String>,
}

/// What the decision says about itself (absent for an entrypoint that is not a decision).
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionNotes {
    pub allow: bool,
    /// `allow`, `deny` or `error`.
    pub result: &'static str,
    pub policies: Vec<PolicyNote>,
    pub reasons: Vec<String>,
    /// The code and message of the error that made it a deny.
    pub error: Option<(u16, String)>,
}

/// One definition of a rule (a rule may be defined several times: `deny contains …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub file: String,
    /// The line its head is on.
    pub line: u32,
    /// Its lines with an expression that was evaluated.
    pub evaluated_lines: Vec<u32>,
}

/// A rule with at least one evaluated expression.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleTrace {
    /// `data.pkg.rule`; functions as `data.pkg.f(…)`.
    pub rule: String,
    /// Its value (`None`: undefined, a function, or it failed: see `error`).
    pub value: Option<serde_json::Value>,
    pub error: Option<String>,
    pub definitions: Vec<Definition>,
}

/// The rule trace of a fresh evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Always the interpreter: the only regorus engine that records what it evaluated.
    pub engine: EngineKind,
    /// The entrypoint evaluated for the trace.
    pub entrypoint: String,
    /// Whether the fresh evaluation gave the answer reported (for a decision: the same
    /// `allow`); `None` when there was nothing to compare.
    pub agrees: Option<bool>,
    /// Why the fresh evaluation failed, if it did (the rules it reached are still listed).
    pub error: Option<String>,
    pub rules: Vec<RuleTrace>,
}

/// An explanation, at the level asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub level: ExplainLevel,
    pub entrypoint: String,
    /// The engine that gave the answer reported.
    pub engine: EngineKind,
    pub cache_hit: bool,
    pub bundle_revision: Arc<str>,
    pub decision: Option<DecisionNotes>,
    /// `full` only.
    pub trace: Option<Trace>,
}

impl Evaluator {
    /// Explain `decision`, which the decision point answered (`cache_hit` as it said) for
    /// the input document `input` as evaluated (stamped with `now_ns`; `None` when no
    /// document could be built, which `full` reports as nothing evaluated). For
    /// `data.sark.decision` and the projections answered from it.
    pub fn explain_decision(&self, level: ExplainLevel, decision: &Decision, cache_hit: bool, input: Option<&Value>) -> Explanation {
        let notes = DecisionNotes {
            allow: decision.allow,
            result: decision.result(),
            policies: decision
                .policy_results
                .iter()
                .map(|(policy, allow)| {
                    let prefix = format!("{policy}: ");
                    PolicyNote {
                        policy: policy.clone(),
                        allow: *allow,
                        reasons: decision.reasons.iter().filter(|r| r.starts_with(&prefix)).cloned().collect(),
                    }
                })
                .collect(),
            reasons: decision.reasons.clone(),
            error: decision.error.as_ref().map(|e| (e.wire_code(), e.to_string())),
        };
        let entrypoint = crate::bundle::DECISION_ENTRYPOINT;
        let trace = (level == ExplainLevel::Full).then(|| {
            let (mut trace, fresh) = self.trace(entrypoint, input);
            trace.agrees = input.map(|_| {
                let fresh = match &fresh {
                    Ok(doc) => Decision::from_document(doc, EngineKind::Interpreter, decision.bundle_revision.clone()),
                    Err(e) => Decision::deny(crate::error::EvalError::Policy(e.clone()), EngineKind::Interpreter, decision.bundle_revision.clone()),
                };
                // Error texts differ between the engines; an error on both sides agrees.
                fresh.allow == decision.allow
                    && match (&fresh.error, &decision.error) {
                        (None, None) => fresh.reasons == decision.reasons,
                        (a, b) => a.is_some() == b.is_some(),
                    }
            });
            trace
        });
        Explanation {
            level,
            entrypoint: entrypoint.to_string(),
            engine: decision.engine,
            cache_hit,
            bundle_revision: decision.bundle_revision.clone(),
            decision: Some(notes),
            trace,
        }
    }

    /// The engine that answers `entrypoint` on this evaluator (`None`: not an entrypoint).
    pub fn engine_for(&self, entrypoint: &str) -> Option<EngineKind> {
        let index = self.bundle.entrypoints.iter().position(|e| e.name == entrypoint)?;
        Some(self.engine_at(index))
    }

    /// Explain an entrypoint evaluated outside the decision path (never cached) by
    /// `engine`, whose value was `result` (`None`: undefined or failed) on `input` as
    /// evaluated.
    pub fn explain_entrypoint(
        &self,
        level: ExplainLevel,
        entrypoint: &str,
        engine: EngineKind,
        input: &Value,
        result: Option<&serde_json::Value>,
    ) -> Explanation {
        let trace = (level == ExplainLevel::Full).then(|| {
            let (mut trace, fresh) = self.trace(entrypoint, Some(input));
            let fresh = fresh.ok().and_then(|v| value_to_json(&v));
            trace.agrees = Some(fresh.as_ref() == result);
            trace
        });
        Explanation {
            level,
            entrypoint: entrypoint.to_string(),
            engine,
            cache_hit: false,
            bundle_revision: self.bundle.revision.clone(),
            decision: None,
            trace,
        }
    }
}

/// `regorus`'s coverage: the lines with an evaluated expression, by file.
type Covered = BTreeMap<String, BTreeSet<u32>>;

/// Whether a rule head names a function (its value cannot be asked for on its own).
fn is_function(rule: &Rule) -> bool {
    match rule {
        Rule::Spec { head: RuleHead::Func { .. }, .. } => true,
        Rule::Default { args, .. } => !args.is_empty(),
        Rule::Spec { .. } => false,
    }
}

/// The head's reference: `deny`, `policy_denies[p]`, `a.b`.
fn head_ref(rule: &Rule) -> &Expr {
    match rule {
        Rule::Spec { head: RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. } | RuleHead::Func { refr, .. }, .. }
        | Rule::Default { refr, .. } => refr,
    }
}

/// The lines `[first, last]` a span covers in its source.
fn lines_of(contents: &str, line: u32, start: u32, end: u32) -> (u32, u32) {
    let (start, end) = (start as usize, end as usize);
    let newlines = contents.get(start..end.max(start)).map_or(0, |s| s.matches('\n').count());
    (line, line.saturating_add(u32::try_from(newlines).unwrap_or(u32::MAX)))
}

impl Evaluator {
    /// A fresh interpreter evaluation of `entrypoint` on `input` with coverage on, the
    /// rules it evaluated, and the value it gave (`Err`: why it failed). `agrees` is left
    /// `None` for the caller to fill.
    fn trace(&self, entrypoint: &str, input: Option<&Value>) -> (Trace, Result<Value, String>) {
        let mut trace = Trace { engine: EngineKind::Interpreter, entrypoint: entrypoint.to_string(), agrees: None, error: None, rules: Vec::new() };
        let Some(input) = input else {
            let why = "no input document could be built: nothing was evaluated".to_string();
            trace.error = Some(why.clone());
            return (trace, Err(why));
        };
        let mut engine: Engine = self.interpreter.clone();
        engine.set_enable_coverage(true);
        engine.set_input(input.clone());
        let fresh = match engine.eval_rule(entrypoint.to_string()) {
            Ok(Value::Undefined) => Err(format!("{entrypoint} is undefined")),
            Ok(v) => Ok(v),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = &fresh {
            trace.error = Some(e.clone());
        }
        let covered: Covered = match engine.get_coverage_report() {
            Ok(report) => report.files.into_iter().map(|f| (f.path, f.covered)).collect(),
            Err(e) => {
                trace.error.get_or_insert_with(|| format!("no coverage report: {e}"));
                return (trace, fresh);
            }
        };
        // Values are asked for with coverage off: nothing more is recorded.
        engine.set_enable_coverage(false);
        trace.rules = rules_evaluated(&mut engine, &covered);
        (trace, fresh)
    }
}

/// Every rule with an evaluated line, in module order then line order, with its value.
fn rules_evaluated(engine: &mut Engine, covered: &Covered) -> Vec<RuleTrace> {
    let mut order: Vec<String> = Vec::new();
    let mut found: BTreeMap<String, (bool, Vec<Definition>)> = BTreeMap::new();
    for module in engine.get_modules().iter() {
        let source = &module.package.span.source;
        let Some(lines) = covered.get(source.file()) else { continue };
        let Ok(package) = regorus::utils::get_path_string(&module.package.refr, Some("data")) else { continue };
        for rule in &module.policy {
            let span = rule.span();
            let (first, last) = lines_of(source.contents(), span.line, span.start, span.end);
            let evaluated: Vec<u32> = lines.range(first..=last).copied().collect();
            if evaluated.is_empty() {
                continue;
            }
            let Ok(path) = regorus::utils::get_path_string(head_ref(rule), Some(&package)) else { continue };
            let function = is_function(rule);
            let name = if function { format!("{path}(…)") } else { path };
            let entry = found.entry(name.clone()).or_insert_with(|| {
                order.push(name.clone());
                (function, Vec::new())
            });
            entry.1.push(Definition { file: source.file().clone(), line: first, evaluated_lines: evaluated });
        }
    }
    let values: Vec<&str> = order.iter().filter(|n| found.get(*n).is_some_and(|(f, _)| !*f)).map(String::as_str).collect();
    let mut together = values_at_once(engine, &values).unwrap_or_default().into_iter();
    let together_ok = together.len() == values.len();
    order
        .into_iter()
        .filter_map(|name| {
            let (function, definitions) = found.remove(&name)?;
            let (value, error) = if function {
                (None, None)
            } else if together_ok {
                (together.next().flatten(), None)
            } else {
                // One rule failed the query that asks for all of them: ask each on its own.
                match engine.eval_rule(name.clone()) {
                    Ok(v) => (value_to_json(&v), None),
                    Err(e) => (None, Some(e.to_string())),
                }
            };
            Some(RuleTrace { rule: name, value, error, definitions })
        })
        .collect()
}

/// Every rule's value in one evaluation (rules shared between them are evaluated once):
/// `[[x | x := data.a.r1],\n[x | x := data.b.r2], …]` (one line each: regorus refuses lines
/// past 1,000 columns), each inner array empty when its rule is undefined. `None` when the
/// query fails (a rule's error fails them all) or a path is not a plain chain of names.
fn values_at_once(engine: &mut Engine, rules: &[&str]) -> Option<Vec<Option<serde_json::Value>>> {
    let plain = |p: &str| p.split('.').all(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'));
    if rules.is_empty() || !rules.iter().all(|r| plain(r)) {
        return None;
    }
    let query = format!("[{}]", rules.iter().map(|r| format!("[x | x := {r}]")).collect::<Vec<_>>().join(",\n"));
    let results = engine.eval_query(query, false).ok()?;
    let all = results.result.first()?.expressions.first()?.value.as_array().ok()?.clone();
    let values: Vec<Option<serde_json::Value>> = all
        .iter()
        .map(|v| match v.as_array() {
            Ok(one) => one.first().and_then(value_to_json),
            Err(_) => None,
        })
        .collect();
    (values.len() == rules.len()).then_some(values)
}

impl Explanation {
    /// The explanation as JSON: what HTTP returns under `explanation` and EXPLANATION
    /// carries (layout in `shard/HTTP.md`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        out.insert("level".into(), self.level.as_str().into());
        out.insert("entrypoint".into(), self.entrypoint.clone().into());
        out.insert("engine".into(), self.engine.as_str().into());
        out.insert("cache_hit".into(), self.cache_hit.into());
        out.insert("bundle_revision".into(), (*self.bundle_revision).into());
        if let Some(d) = &self.decision {
            out.insert("allow".into(), d.allow.into());
            out.insert("result".into(), d.result.into());
            let policies = d
                .policies
                .iter()
                .map(|p| serde_json::json!({"policy": p.policy, "allow": p.allow, "reasons": p.reasons}))
                .collect::<Vec<_>>();
            out.insert("policies".into(), policies.into());
            out.insert("reasons".into(), d.reasons.clone().into());
            if let Some((code, message)) = &d.error {
                out.insert("error".into(), serde_json::json!({"code": code, "message": message}));
            }
        }
        if let Some(t) = &self.trace {
            let rules = t
                .rules
                .iter()
                .map(|r| {
                    let mut o = serde_json::Map::new();
                    o.insert("rule".into(), r.rule.clone().into());
                    if let Some(v) = &r.value {
                        o.insert("value".into(), v.clone());
                    }
                    if let Some(e) = &r.error {
                        o.insert("error".into(), e.clone().into());
                    }
                    let defs = r
                        .definitions
                        .iter()
                        .map(|d| serde_json::json!({"file": d.file, "line": d.line, "evaluated_lines": d.evaluated_lines}))
                        .collect::<Vec<_>>();
                    o.insert("definitions".into(), defs.into());
                    serde_json::Value::Object(o)
                })
                .collect::<Vec<_>>();
            let mut o = serde_json::Map::new();
            o.insert("engine".into(), t.engine.as_str().into());
            o.insert("entrypoint".into(), t.entrypoint.clone().into());
            o.insert("agrees".into(), t.agrees.into());
            if let Some(e) = &t.error {
                o.insert("error".into(), e.clone().into());
            }
            o.insert("rules".into(), rules.into());
            out.insert("trace".into(), o.into());
        }
        out.into()
    }

    /// The explanation as indented text, for `sark-pdp eval --explain`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let cached = if self.cache_hit { "from the cache" } else { "freshly evaluated" };
        match &self.decision {
            Some(d) => {
                let _ = writeln!(s, "decision: {} ({})", d.result, self.entrypoint);
                let _ = writeln!(s, "  engine {}, {cached}, bundle {}", self.engine.as_str(), self.bundle_revision);
                if let Some((code, message)) = &d.error {
                    let _ = writeln!(s, "  error {code}: {message}");
                }
                let _ = writeln!(s, "policies:");
                if d.policies.is_empty() {
                    let _ = writeln!(s, "  (none applied)");
                }
                let width = d.policies.iter().map(|p| p.policy.len()).max().unwrap_or(0);
                for p in &d.policies {
                    let verdict = if p.allow { "allow" } else { "deny" };
                    let _ = writeln!(s, "  {:width$}  {verdict}", p.policy);
                    for r in &p.reasons {
                        let _ = writeln!(s, "  {:width$}    {r}", "");
                    }
                }
                let _ = writeln!(s, "reasons:");
                for r in &d.reasons {
                    let _ = writeln!(s, "  - {r}");
                }
            }
            None => {
                let _ = writeln!(s, "entrypoint: {}", self.entrypoint);
                let _ = writeln!(s, "  engine {}, {cached}, bundle {}", self.engine.as_str(), self.bundle_revision);
            }
        }
        if let Some(t) = &self.trace {
            let agrees = match t.agrees {
                Some(true) => "agrees with the answer above",
                Some(false) => "DIFFERS from the answer above",
                None => "nothing to compare",
            };
            let _ = writeln!(s, "trace: {} re-evaluated on the {}; {agrees}", t.entrypoint, t.engine.as_str());
            if let Some(e) = &t.error {
                let _ = writeln!(s, "  error: {e}");
            }
            for r in &t.rules {
                let value = match (&r.value, &r.error) {
                    (_, Some(e)) => format!(" — error: {e}"),
                    (Some(v), None) => format!(" = {}", clip(&v.to_string(), 160)),
                    (None, None) if r.rule.ends_with("(…)") => String::new(),
                    (None, None) => " (undefined)".to_string(),
                };
                let _ = writeln!(s, "  {}{value}", r.rule);
                for d in &r.definitions {
                    let _ = writeln!(s, "    {}:{}  lines {}", d.file, d.line, ranges(&d.evaluated_lines));
                }
            }
        }
        s
    }
}

/// At most `max` characters of `text`, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", text.get(..at).unwrap_or(text)),
        None => text.to_string(),
    }
}

/// `3-5, 9` for `[3, 4, 5, 9]`.
fn ranges(lines: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(u32, u32)> = None;
    for &l in lines {
        run = match run {
            Some((a, b)) if l == b.saturating_add(1) => Some((a, l)),
            Some((a, b)) => {
                out.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
                Some((l, l))
            }
            None => Some((l, l)),
        };
    }
    if let Some((a, b)) = run {
        out.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
    }
    out.join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::bundle::Bundle;
    use crate::error::EvalError;
    use crate::eval::{CompiledBundle, EnginePreference, EvalLimits, input_from_json};

    /// A viewer invoking a critical tool from outside, without MFA: denied by several
    /// policies, allowed by rbac.
    const VIEWER: &str = include_str!("../../../shard/samples/invoke-critical-viewer.json");
    /// A developer of the tool's team, over VPN with MFA: allowed.
    const MEDIUM: &str = include_str!("../../../shard/samples/invoke-medium.json");

    fn shipped() -> Arc<CompiledBundle> {
        Arc::new(CompiledBundle::compile(&Bundle::embedded().unwrap(), EvalLimits::default()).unwrap())
    }

    fn decided(ev: &mut Evaluator, json: &str) -> (Decision, Value) {
        let input = input_from_json(json).unwrap();
        (ev.decide(Ok(input.clone())), input)
    }

    fn rule<'a>(t: &'a Trace, name: &str) -> Option<&'a RuleTrace> {
        t.rules.iter().find(|r| r.rule == name)
    }

    #[test]
    fn notes_show_each_policy_with_its_verdict_and_the_reasons_it_gave() {
        let mut ev = Evaluator::new(shipped(), EnginePreference::Fastest);
        let (d, input) = decided(&mut ev, VIEWER);
        assert!(!d.allow);
        let x = ev.explain_decision(ExplainLevel::Notes, &d, true, Some(&input));
        assert_eq!(x.trace, None, "notes carry no trace");
        assert_eq!((x.engine, x.cache_hit, &*x.bundle_revision), (EngineKind::Rvm, true, "sark-default-1"));
        let notes = x.decision.as_ref().unwrap();
        assert_eq!((notes.allow, notes.result), (false, "deny"));
        let policy = |name: &str| notes.policies.iter().find(|p| p.policy == name).unwrap();
        let ip = policy("ip_filtering");
        assert!(!ip.allow);
        assert!(ip.reasons.contains(&"ip_filtering: VPN required for critical tool:invoke".to_string()), "{ip:?}");
        assert!(ip.reasons.iter().all(|r| r.starts_with("ip_filtering: ")));
        let rbac = policy("rbac");
        assert!(rbac.allow && rbac.reasons.is_empty(), "{rbac:?}");
        assert_eq!(notes.reasons, d.reasons);
        // Every reason is a policy's (this input is well formed).
        assert_eq!(notes.policies.iter().map(|p| p.reasons.len()).sum::<usize>(), d.reasons.len());
        let json = x.to_json();
        assert_eq!(json["level"], "notes");
        assert_eq!(json["result"], "deny");
        assert_eq!(json["cache_hit"], true);
        assert_eq!(json["engine"], "rvm");
        assert!(json.get("trace").is_none());
        let ipj = json["policies"].as_array().unwrap().iter().find(|p| p["policy"] == "ip_filtering").unwrap();
        assert_eq!(ipj["allow"], false);
        let text = x.to_text();
        assert!(text.starts_with("decision: deny (data.sark.decision)\n  engine rvm, from the cache, bundle sark-default-1\n"), "{text}");
        assert!(text.contains("  ip_filtering  deny\n                  ip_filtering: VPN required for critical tool:invoke\n"), "{text}");
        assert!(text.contains("  rbac          allow\n"), "{text}");

        let (d, input) = decided(&mut ev, MEDIUM);
        assert!(d.allow, "{d:?}");
        let x = ev.explain_decision(ExplainLevel::Notes, &d, false, Some(&input));
        let notes = x.decision.unwrap();
        assert!(!notes.policies.is_empty() && notes.policies.iter().all(|p| p.allow && p.reasons.is_empty()), "{notes:?}");
        assert_eq!(notes.reasons, vec!["allowed: all policies passed".to_string()]);
    }

    #[test]
    fn full_lists_the_rules_that_were_evaluated_with_their_lines_and_values() {
        for pref in [EnginePreference::Fastest, EnginePreference::Interpreter] {
            let mut ev = Evaluator::new(shipped(), pref);
            let (d, input) = decided(&mut ev, VIEWER);
            let x = ev.explain_decision(ExplainLevel::Full, &d, false, Some(&input));
            let t = x.trace.as_ref().unwrap();
            assert_eq!((t.engine, t.entrypoint.as_str(), t.agrees, &t.error), (EngineKind::Interpreter, "data.sark.decision", Some(true), &None), "{pref:?}");
            // The denying policy's deny set, with its reason, each definition in its file.
            let ip = rule(t, "data.sark.ip_filtering.deny").unwrap();
            let reasons = ip.value.as_ref().unwrap().as_array().unwrap();
            assert!(reasons.iter().any(|r| r == "ip_filtering: VPN required for critical tool:invoke"), "{ip:?}");
            assert!(ip.definitions.len() > 1 && ip.definitions.iter().all(|d| d.file == "ip_filtering.rego" && !d.evaluated_lines.is_empty()), "{ip:?}");
            for def in &ip.definitions {
                assert!(def.evaluated_lines.iter().all(|l| *l >= def.line), "{def:?}");
            }
            // An allowing policy's rules: evaluated, empty deny set.
            assert_eq!(rule(t, "data.sark.rbac.deny").unwrap().value, Some(serde_json::json!([])));
            assert_eq!(rule(t, "data.sark.rbac.permitted").unwrap().value, Some(serde_json::json!(true)));
            // A function is listed without a value; an undefined rule without one too.
            let permits = rule(t, "data.sark.rbac.permits(…)").unwrap();
            assert_eq!((&permits.value, &permits.error), (&None, &None));
            assert_eq!(rule(t, "data.sark.rbac.permitted_by_scope").unwrap().value, None);
            // The decision's own rules, and its verdict.
            assert_eq!(rule(t, "data.sark.allow").unwrap().value, Some(serde_json::json!(false)));
            assert!(rule(t, "data.sark.decision").is_some());
            // a2a is not configured for tool:invoke: its deny rules were never evaluated.
            assert!(rule(t, "data.sark.a2a.deny").is_none(), "{:?}", rule(t, "data.sark.a2a.deny"));
            // The compat packages are not on data.sark.decision's path.
            assert!(t.rules.iter().all(|r| !r.rule.starts_with("data.mcp.")), "{:?}", t.rules.iter().map(|r| &r.rule).collect::<Vec<_>>());
            // Notes are still there.
            assert!(x.decision.as_ref().is_some_and(|n| !n.policies.is_empty()));
            let json = x.to_json();
            assert_eq!(json["trace"]["agrees"], true);
            let ipj = json["trace"]["rules"].as_array().unwrap().iter().find(|r| r["rule"] == "data.sark.ip_filtering.deny").unwrap();
            assert_eq!(ipj["definitions"][0]["file"], "ip_filtering.rego");
            let text = x.to_text();
            assert!(text.contains("trace: data.sark.decision re-evaluated on the interpreter; agrees with the answer above\n"), "{text}");
            assert!(text.contains("\n  data.sark.rbac.deny = []\n    rbac.rego:"), "{text}");
        }
    }

    #[test]
    fn explaining_never_changes_the_decision_nor_the_evaluator() {
        for pref in [EnginePreference::Fastest, EnginePreference::Interpreter] {
            let mut ev = Evaluator::new(shipped(), pref);
            for json in [VIEWER, MEDIUM] {
                let (before, input) = decided(&mut ev, json);
                let x = ev.explain_decision(ExplainLevel::Full, &before, false, Some(&input));
                let (after, _) = decided(&mut ev, json);
                assert_eq!(before, after, "{pref:?}");
                let notes = x.decision.unwrap();
                assert_eq!((notes.allow, &notes.reasons), (before.allow, &before.reasons));
                assert_eq!(x.trace.unwrap().agrees, Some(true));
            }
            // The shard's own interpreter never collects coverage.
            assert!(ev.interpreter.get_coverage_report().unwrap().files.iter().all(|f| f.covered.is_empty()));
        }
    }

    #[test]
    fn rule_values_asked_all_at_once_are_each_rules_own_value() {
        let ev = Evaluator::new(shipped(), EnginePreference::Fastest);
        let input = input_from_json(VIEWER).unwrap();
        let (trace, _) = ev.trace("data.sark.decision", Some(&input));
        let mut engine = ev.interpreter.clone();
        engine.set_input(input);
        let mut asked = 0;
        for r in trace.rules.iter().filter(|r| !r.rule.ends_with("(…)")) {
            let own = engine.eval_rule(r.rule.clone()).map(|v| value_to_json(&v)).unwrap();
            assert_eq!(r.value, own, "{}", r.rule);
            asked += 1;
        }
        assert!(asked > 50, "{asked}");
    }

    #[test]
    fn an_input_that_could_not_be_built_is_explained_without_evaluating_anything() {
        let mut ev = Evaluator::new(shipped(), EnginePreference::Fastest);
        let d = ev.decide(Err(EvalError::BadInput("user.id: over 256 bytes".into())));
        let x = ev.explain_decision(ExplainLevel::Full, &d, false, None);
        let notes = x.decision.as_ref().unwrap();
        assert_eq!((notes.result, notes.error.as_ref().map(|e| e.0)), ("error", Some(1002)));
        let t = x.trace.unwrap();
        assert_eq!((t.agrees, t.rules.len()), (None, 0));
        assert!(t.error.unwrap().contains("nothing was evaluated"));
    }

    #[test]
    fn other_entrypoints_are_explained_and_compared_with_their_value() {
        let mut ev = Evaluator::new(shipped(), EnginePreference::Fastest);
        let input = input_from_json(VIEWER).unwrap();
        let (v, engine) = ev.evaluate("data.sark.rbac.allow", input.clone()).unwrap();
        let v = value_to_json(&v);
        let x = ev.explain_entrypoint(ExplainLevel::Full, "data.sark.rbac.allow", engine, &input, v.as_ref());
        assert_eq!((x.decision.is_none(), x.cache_hit), (true, false));
        let t = x.trace.unwrap();
        assert_eq!(t.agrees, Some(true));
        assert!(rule(&t, "data.sark.rbac.deny").is_some());
        // Only what rbac.allow needs: no other policy's rules.
        assert!(rule(&t, "data.sark.ip_filtering.deny").is_none());
        let wrong = serde_json::json!("something else");
        let x = ev.explain_entrypoint(ExplainLevel::Full, "data.sark.rbac.allow", engine, &input, Some(&wrong));
        assert_eq!(x.trace.unwrap().agrees, Some(false));
        assert_eq!(ExplainLevel::parse("full"), Some(ExplainLevel::Full));
        assert_eq!(ExplainLevel::parse("fails"), None);
    }

    #[test]
    fn line_ranges_read_as_runs() {
        assert_eq!(ranges(&[3, 4, 5, 9, 11, 12]), "3-5, 9, 11-12");
        assert_eq!(ranges(&[]), "");
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("ab", 3), "ab");
    }
}
