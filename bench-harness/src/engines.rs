//! Engines side by side in one run: regorus's RVM, regorus's interpreter and the real OPA
//! engine (Go v1.20.2, `scripts/fetch-opa.sh`) decide the same inputs — the shipped
//! bundle's `data.sark.decision` case inputs — on one thread, in rounds A B C A B C …
//! so machine noise hits all three alike. Every engine parses the input JSON itself
//! (equal terms); the RVM is also measured on pre-parsed input (what the binary protocol's
//! typed fields give it).
//!
//! `pdp-bench engines [--rounds 5] [--passes 20] [--bundle DIR]` prints, per engine: evaluations/s
//! (median over rounds), p50 and p99 per evaluation (over all timed evaluations), and the
//! ratio to OPA per round (median, min, max); every engine must allow the same inputs.

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

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Timed rounds per engine (after one untimed warm-up round).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Passes over the inputs per round.
    #[arg(long, default_value_t = 20)]
    passes: usize,
    /// Also write the rows here as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Another bundle (a directory) whose `data.sark.decision` cases are the inputs, e.g.
    /// examples/jwt-a2a (io.jwt.decode_verify against a JWKS); default: the shipped one.
    #[arg(long)]
    bundle: Option<std::path::PathBuf>,
}

/// One engine's row.
#[derive(Debug, serde::Serialize)]
struct Row {
    engine: &'static str,
    per_s: f64,
    p50_us: f64,
    p99_us: f64,
    x_opa: f64,
    x_opa_min: f64,
    x_opa_max: f64,
    allows: usize,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let (rounds, passes) = (args.rounds.clamp(1, 1000), args.passes.clamp(1, 100_000));

    let bundle = match &args.bundle {
        Some(dir) => pdp::Bundle::load(dir, pdp::bundle::BundleLimits::default())?,
        None => shipped_bundle()?,
    };
    let inputs = decision_inputs(&bundle)?;
    let parsed: Vec<pdp::Value> = inputs.iter().map(|i| input_from_json(i)).collect::<Result<_, _>>()?;
    let compiled = Arc::new(CompiledBundle::compile(&bundle, EvalLimits::default())?);
    let mut rvm = Evaluator::new(compiled.clone(), EnginePreference::Fastest);
    let mut interp = Evaluator::new(compiled, EnginePreference::Interpreter);
    let opa = OpaEngine::from_bundle(&bundle)?;
    let clock = quanta::Clock::new();

    struct Timed {
        which: Which,
        name: &'static str,
        /// Every timed evaluation, ns.
        samples: Vec<u64>,
        /// Evaluations per second, one per round.
        rates: Vec<f64>,
        allows: usize,
    }
    let mut runs: Vec<Timed> = ALL
        .iter()
        .map(|(which, name)| Timed {
            which: *which,
            name,
            samples: Vec::new(),
            rates: Vec::new(),
            allows: 0,
        })
        .collect();
    eprintln!(
        "engines: {} inputs x {passes} passes x {rounds} rounds per engine, one thread",
        inputs.len()
    );
    // Round 0 is the warm-up, untimed.
    for round in 0..=rounds {
        for run in runs.iter_mut() {
            let (mut total_ns, mut n, mut allows) = (0u64, 0u64, 0usize);
            let mut samples = Vec::with_capacity(passes * inputs.len());
            for _ in 0..passes {
                for (text, value) in inputs.iter().zip(&parsed) {
                    let t0 = clock.raw();
                    let allow = match run.which {
                        Which::RvmParsed => rvm.decide(Ok(value.clone())).allow,
                        Which::Rvm => rvm.decide(Ok(input_from_json(text)?)).allow,
                        Which::Interpreter => interp.decide(Ok(input_from_json(text)?)).allow,
                        Which::Opa => opa
                            .eval_document("data.sark.decision", text)?
                            .and_then(|d| d.get("allow").and_then(serde_json::Value::as_bool))
                            .unwrap_or(false),
                    };
                    let ns = clock.delta_as_nanos(t0, clock.raw());
                    samples.push(ns);
                    allows += usize::from(allow);
                    total_ns += ns;
                    n += 1;
                }
            }
            if round > 0 {
                run.samples.extend(samples);
                run.rates.push(n as f64 / (total_ns as f64 / 1e9));
                run.allows += allows;
            }
        }
        if round > 0 {
            eprintln!("  round {round}/{rounds} done");
        }
    }

    let opa_rates = runs.iter().find(|r| r.which == Which::Opa).map(|r| r.rates.clone()).unwrap_or_default();
    println!("| engine | evaluations/s (median of {rounds} rounds) | p50 | p99 | × OPA (median [min–max] per round) | allows |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for run in &mut runs {
        run.samples.sort_unstable();
        let ratios: Vec<f64> = run.rates.iter().zip(&opa_rates).map(|(a, b)| a / b).collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        let row = Row {
            engine: run.name,
            per_s: median(run.rates.clone()),
            p50_us: quantile(&run.samples, 0.50) as f64 / 1e3,
            p99_us: quantile(&run.samples, 0.99) as f64 / 1e3,
            x_opa: median(ratios),
            x_opa_min: lo,
            x_opa_max: hi,
            allows: run.allows,
        };
        println!(
            "| {} | {:.0} | {:.1} µs | {:.1} µs | {:.1}× [{:.1}–{:.1}] | {} |",
            row.engine, row.per_s, row.p50_us, row.p99_us, row.x_opa, row.x_opa_min, row.x_opa_max, row.allows
        );
        rows.push(row);
    }
    // Same decisions from every engine, or the comparison is meaningless.
    let allows: Vec<usize> = runs.iter().map(|r| r.allows).collect();
    anyhow::ensure!(allows.windows(2).all(|w| w.first() == w.last()), "engines disagree on the number of allows: {allows:?}");
    crate::measure::write_json(args.json.as_ref(), &rows)
}
