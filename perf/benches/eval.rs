//! Time per evaluation of the shipped bundle's `data.sark.decision` over all its case
//! inputs (one iteration = one pass over every input), per engine. For the side-by-side
//! table with percentiles, see `pdp-bench engines` (`bench-harness/src/engines.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pdp::eval::{CompiledBundle, EnginePreference, EvalLimits, Evaluator, input_from_json};
use pdp::opa::OpaEngine;
use perf::{decision_inputs, shipped_bundle};

fn eval(c: &mut Criterion) {
    let bundle = shipped_bundle().unwrap();
    let inputs = decision_inputs(&bundle).unwrap();
    let parsed: Vec<pdp::Value> = inputs.iter().map(|i| input_from_json(i).unwrap()).collect();
    let compiled = Arc::new(CompiledBundle::compile(&bundle, EvalLimits::default()).unwrap());
    let mut rvm = Evaluator::new(compiled.clone(), EnginePreference::Fastest);
    let mut interp = Evaluator::new(compiled, EnginePreference::Interpreter);

    let mut g = c.benchmark_group("eval");
    g.throughput(Throughput::Elements(inputs.len() as u64));
    g.bench_function("rvm_preparsed", |b| {
        b.iter(|| {
            for v in &parsed {
                black_box(rvm.decide(Ok(v.clone())));
            }
        })
    });
    g.bench_function("rvm_json", |b| {
        b.iter(|| {
            for text in &inputs {
                black_box(rvm.decide(input_from_json(text)));
            }
        })
    });
    g.bench_function("interpreter_json", |b| {
        b.iter(|| {
            for text in &inputs {
                black_box(interp.decide(input_from_json(text)));
            }
        })
    });
    // The OPA engine is optional here (scripts/fetch-opa.sh); say so when absent.
    match OpaEngine::from_bundle(&bundle) {
        Ok(opa) => {
            g.bench_function("opa_json", |b| {
                b.iter(|| {
                    for text in &inputs {
                        black_box(opa.eval_document("data.sark.decision", text).unwrap());
                    }
                })
            });
        }
        Err(e) => eprintln!("eval/opa_json skipped: {e}"),
    }
    g.finish();
}

criterion_group!(benches, eval);
criterion_main!(benches);
