//! Runs every decision case of the shipped bundle (`policies/cases/*.yaml`) on three
//! engines — regorus's RVM, regorus's interpreter and the real OPA engine (Go, v1.20.2,
//! loaded from `.opa/libopabridge.so`; `scripts/fetch-opa.sh` fetches it) — and requires
//! that each case's expectations hold on all three and that the three results are equal.
//!
//! `harness = false`: one runner, one line per failure, a closing `N passed, N failed`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use pdp::bundle::{Bundle, BundleLimits};
use pdp::cases::{self, Case, json_eq};
use pdp::eval::{CompiledBundle, EnginePreference, EvalLimits, Evaluator};
use pdp::opa::OpaEngine;

/// SARK's policies are specified by at least this many cases (issue 2).
const MIN_CASES: usize = 150;

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
    for case in &selected {
        match run_case(case, &mut rvm, &mut interp, &opa) {
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
    if filter.is_none() && all.len() < MIN_CASES {
        failed += 1;
        println!("FAIL case count: {} cases, want at least {MIN_CASES}", all.len());
    }
    println!("policy cases on RVM, interpreter and OPA v1.20.2: {} cases", selected.len());
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

fn run_case(case: &Case, rvm: &mut Evaluator, interp: &mut Evaluator, opa: &OpaEngine) -> Result<(), String> {
    let r = cases::evaluate(rvm, case).map_err(|e| format!("rvm: {e}"))?;
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
