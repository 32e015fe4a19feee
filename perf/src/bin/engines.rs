//! Engines side by side in one run: regorus's RVM, regorus's interpreter and the real OPA
//! engine (Go v1.20.2, `scripts/fetch-opa.sh`) decide the same inputs — the shipped
//! bundle's `data.sark.decision` case inputs — on one thread, in rounds A B C A B C …
//! so machine noise hits all three alike. Every engine parses the input JSON itself
//! (equal terms); the RVM is also measured on pre-parsed input (what the binary protocol's
//! typed fields give it).
//!
//! `cargo run --release -p perf --bin engines -- [ROUNDS] [PASSES_PER_ROUND]`
//!
//! Prints, per engine: evaluations/s (median over rounds), p50 and p99 per evaluation
//! (over all timed evaluations), and the ratio to OPA per round (median, min, max).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;

use pdp::eval::{CompiledBundle, EnginePreference, EvalLimits, Evaluator, input_from_json};
use pdp::opa::OpaEngine;
use perf::{decision_inputs, median, quantile, shipped_bundle};

#[derive(Clone, Copy, PartialEq)]
enum Which {
    RvmParsed,
    Rvm,
    Interpreter,
    Opa,
}

const ALL: [(Which, &str); 4] = [
    (Which::Rvm, "regorus RVM (parses JSON)"),
    (Which::RvmParsed, "regorus RVM (pre-parsed input)"),
    (Which::Interpreter, "regorus interpreter (parses JSON)"),
    (Which::Opa, "OPA v1.20.2 engine (parses JSON)"),
];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let passes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20);

    let bundle = shipped_bundle()?;
    let inputs = decision_inputs(&bundle)?;
    let parsed: Vec<pdp::Value> = inputs.iter().map(|i| input_from_json(i)).collect::<Result<_, _>>()?;
    let compiled = Arc::new(CompiledBundle::compile(&bundle, EvalLimits::default())?);
    let mut rvm = Evaluator::new(compiled.clone(), EnginePreference::Fastest);
    let mut interp = Evaluator::new(compiled, EnginePreference::Interpreter);
    let opa = OpaEngine::from_bundle(&bundle)?;
    let clock = quanta::Clock::new();

    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); ALL.len()];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); ALL.len()];
    let mut allows = vec![0usize; ALL.len()];
    eprintln!(
        "engines: {} inputs x {passes} passes x {rounds} rounds per engine, one thread",
        inputs.len()
    );
    // Warm-up: one pass each, untimed.
    for round in 0..=rounds {
        for (slot, (which, _)) in ALL.iter().enumerate() {
            let mut total_ns = 0u64;
            let mut n = 0u64;
            for _ in 0..passes {
                for (text, value) in inputs.iter().zip(&parsed) {
                    let t0 = clock.raw();
                    let allow = match which {
                        Which::RvmParsed => rvm.decide(value.clone()).allow,
                        Which::Rvm => rvm.decide(input_from_json(text)?).allow,
                        Which::Interpreter => interp.decide(input_from_json(text)?).allow,
                        Which::Opa => opa
                            .eval_document("data.sark.decision", text)?
                            .and_then(|d| d.get("allow").and_then(serde_json::Value::as_bool))
                            .unwrap_or(false),
                    };
                    let ns = clock.delta_as_nanos(t0, clock.raw());
                    if round > 0 {
                        if let Some(s) = samples.get_mut(slot) {
                            s.push(ns);
                        }
                        if allow {
                            if let Some(a) = allows.get_mut(slot) {
                                *a += 1;
                            }
                        }
                    }
                    total_ns += ns;
                    n += 1;
                }
            }
            if round > 0 {
                if let Some(r) = rates.get_mut(slot) {
                    r.push(n as f64 / (total_ns as f64 / 1e9));
                }
            }
        }
        if round > 0 {
            eprintln!("  round {round}/{rounds} done");
        }
    }

    let opa_slot = ALL.iter().position(|(w, _)| *w == Which::Opa).unwrap_or(0);
    let opa_rates = rates.get(opa_slot).cloned().unwrap_or_default();
    println!("| engine | evaluations/s (median of {rounds} rounds) | p50 | p99 | × OPA (median [min–max] per round) | allows |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (slot, (_, name)) in ALL.iter().enumerate() {
        let mut s = samples.get(slot).cloned().unwrap_or_default();
        s.sort_unstable();
        let r = rates.get(slot).cloned().unwrap_or_default();
        let ratios: Vec<f64> = r.iter().zip(&opa_rates).map(|(a, b)| a / b).collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        println!(
            "| {name} | {:.0} | {:.1} µs | {:.1} µs | {:.1}× [{:.1}–{:.1}] | {} |",
            median(r.clone()),
            quantile(&s, 0.50) as f64 / 1e3,
            quantile(&s, 0.99) as f64 / 1e3,
            median(ratios.clone()),
            lo,
            hi,
            allows.get(slot).copied().unwrap_or(0),
        );
    }
    // Same decisions from every engine, or the comparison is meaningless.
    let first = allows.first().copied().unwrap_or(0);
    anyhow::ensure!(allows.iter().all(|a| *a == first), "engines disagree on the number of allows: {allows:?}");
    Ok(())
}
