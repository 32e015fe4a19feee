//! Runs every decision case of the shipped bundle (`policies/cases/*.yaml`) on three
//! engines — regorus's RVM, regorus's interpreter and the real OPA engine (Go, v1.20.2,
//! loaded from `.opa/libopabridge.so`; `scripts/fetch-opa.sh` fetches it) — and requires
//! that each case's expectations hold on all three and that the three results are equal.
//!
//! `harness = false`: one runner, one line per failure, a closing `N passed, N failed`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use pdp::bundle::{Bundle, BundleLimits};
use pdp::cases::{self, Case, json_eq};
use pdp::eval::{CompiledBundle, EnginePreference, EvalLimits, Evaluator};
use pdp::opa::OpaEngine;

/// SARK's policies are specified by at least this many cases (issue 2).
const MIN_CASES: usize = 150;

/// Deny reasons no input can produce with the shipped data (they guard against a broken
/// `sark_config.action_policies`); every other reason must come out of some case.
const UNREACHABLE_WITH_SHIPPED_DATA: &[&str] = &[
    "decision: no policy applies to this action",
    "decision: configuration names an unknown policy",
];

/// The reason templates the bundle declares: the string of every
/// `deny|input_errors|decision_errors contains "…"` or `… contains sprintf("…", …)`.
fn declared_reasons(bundle: &Bundle) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for m in &bundle.modules {
        for line in m.source.lines() {
            let Some(rest) = ["deny contains ", "input_errors contains ", "decision_errors contains "]
                .iter()
                .find_map(|p| line.strip_prefix(p))
            else {
                continue;
            };
            let rest = rest.strip_prefix("sprintf(").unwrap_or(rest);
            if let Some(text) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                out.push((m.path.clone(), text.to_string()));
            }
        }
    }
    out
}

/// Whether a produced reason matches a template (`%s`, `%d`, `%v` match any text).
fn matches_template(template: &str, reason: &str) -> bool {
    let mut pieces = template.split('%');
    let Some(mut rest) = reason.strip_prefix(pieces.next().unwrap_or("")) else {
        return false;
    };
    // Each later piece starts with the verb's letter; the literal follows it.
    let literals: Vec<&str> = pieces.map(|p| p.get(1..).unwrap_or("")).collect();
    let Some((last, middle)) = literals.split_last() else {
        return rest.is_empty();
    };
    for lit in middle.iter().filter(|l| !l.is_empty()) {
        match rest.find(lit) {
            Some(pos) => rest = rest.get(pos + lit.len()..).unwrap_or(""),
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Every string anywhere in a result.
fn strings_in(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::String(s) => {
            out.insert(s.clone());
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings_in(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| strings_in(x, out)),
        _ => {}
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("policy_cases: {e}");
            println!("0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let bundle = Bundle::load(&dir, BundleLimits::default()).map_err(|e| e.to_string())?;
    let compiled = Arc::new(CompiledBundle::compile(&bundle, EvalLimits::default()).map_err(|e| e.to_string())?);
    let all = cases::load(&bundle)?;
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let selected: Vec<&Case> = all
        .iter()
        .filter(|c| filter.as_ref().is_none_or(|f| c.name.contains(f.as_str())))
        .collect();

    let opa = OpaEngine::from_bundle(&bundle).map_err(|e| e.to_string())?;
    let mut rvm = Evaluator::new(compiled.clone(), EnginePreference::Fastest);
    let mut interp = Evaluator::new(compiled, EnginePreference::Interpreter);

    let (mut passed, mut failed) = (0usize, 0usize);
    let mut produced = BTreeSet::new();
    for case in &selected {
        match run_case(case, &mut rvm, &mut interp, &opa, &mut produced) {
            Ok(()) => passed += 1,
            Err(why) => {
                failed += 1;
                println!("FAIL {} [{}]: {why}", case.name, case.file);
            }
        }
    }
    // Decisions must be reproducible and cacheable: time comes from input.context.now_ns.
    for m in &bundle.modules {
        for (n, line) in m.source.lines().enumerate() {
            let code = line.split('#').next().unwrap_or("");
            if let Some(call) = ["time.now_ns(", "http.send(", "rand.intn(", "uuid.rfc4122("].iter().find(|c| code.contains(*c)) {
                failed += 1;
                println!("FAIL {}:{}: calls {call}…) — decisions must not depend on the evaluation's moment or the network", m.path, n + 1);
            }
        }
    }
    // Every deny reason the bundle declares is produced by at least one case.
    if filter.is_none() {
        for (file, template) in declared_reasons(&bundle) {
            let covered = produced.iter().any(|r| matches_template(&template, r));
            let exempt = UNREACHABLE_WITH_SHIPPED_DATA.contains(&template.as_str());
            if covered == exempt {
                failed += 1;
                if exempt {
                    println!("FAIL {file}: {template:?} is listed as unreachable but a case produces it");
                } else {
                    println!("FAIL {file}: no case produces the reason {template:?}");
                }
            }
        }
    }
    if filter.is_none() && all.len() < MIN_CASES {
        failed += 1;
        println!("FAIL case count: {} cases, want at least {MIN_CASES}", all.len());
    }
    println!("policy cases on RVM, interpreter and OPA v1.20.2: {} cases", selected.len());
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

fn run_case(
    case: &Case,
    rvm: &mut Evaluator,
    interp: &mut Evaluator,
    opa: &OpaEngine,
    produced: &mut BTreeSet<String>,
) -> Result<(), String> {
    let r = cases::evaluate(rvm, case).map_err(|e| format!("rvm: {e}"))?;
    if let Some(v) = &r {
        strings_in(v, produced);
    }
    let i = cases::evaluate(interp, case).map_err(|e| format!("interpreter: {e}"))?;
    let o = opa
        .eval_document(&case.entrypoint, &case.input.to_string())
        .map_err(|e| format!("opa: {e}"))?;
    cases::check(case, o.as_ref()).map_err(|e| format!("opa: {e}"))?;
    for (engine, got) in [("rvm", &r), ("interpreter", &i)] {
        cases::check(case, got.as_ref()).map_err(|e| format!("{engine}: {e}"))?;
        let same = match (got, &o) {
            (Some(a), Some(b)) => json_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            return Err(format!(
                "{engine} disagrees with OPA:\n  {engine}: {}\n  opa: {}",
                got.as_ref().map_or("undefined".into(), |v| v.to_string()),
                o.as_ref().map_or("undefined".into(), |v| v.to_string())
            ));
        }
    }
    Ok(())
}
