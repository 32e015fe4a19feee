//! Instruction counts (iai-callgrind, under valgrind) of one evaluation of the shipped
//! bundle's `data.sark.decision` on SARK's typical question (a cache miss), per engine:
//! the RVM on the pre-parsed input (what the binary protocol gives it), the RVM parsing
//! the JSON, and the interpreter. Time per evaluation: `benches/eval.rs`.
//! `scripts/install-iai.sh && cargo bench -p perf --bench iai_eval`; `perf/check` compares
//! the counts with `perf/baseline/`.

use std::hint::black_box;
use std::sync::Arc;

use iai_callgrind::{library_benchmark, library_benchmark_group, main};
use pdp::eval::{CompiledBundle, EnginePreference, EvalLimits, Evaluator, input_from_json};

fn evaluator(engine: EnginePreference) -> Evaluator {
    let bundle = perf::shipped_bundle().unwrap_or_else(|e| unreachable!("{e}"));
    let compiled = Arc::new(CompiledBundle::compile(&bundle, EvalLimits::default()).unwrap_or_else(|e| unreachable!("{e}")));
    let mut ev = Evaluator::new(compiled, engine);
    // One evaluation first: what is built lazily is not counted.
    let _ = ev.decide(input_from_json(&input_json()));
    ev
}

fn input_json() -> String {
    perf::sample_input().to_value().map(|v| v.to_string()).unwrap_or_default()
}

#[library_benchmark]
#[bench::typical((evaluator(EnginePreference::Fastest), perf::sample_input().to_value().unwrap_or(pdp::Value::Null)))]
fn rvm_preparsed((mut ev, input): (Evaluator, pdp::Value)) -> Evaluator {
    black_box(ev.decide(Ok(black_box(input))));
    ev
}

#[library_benchmark]
#[bench::typical((evaluator(EnginePreference::Fastest), input_json()))]
fn rvm_json((mut ev, text): (Evaluator, String)) -> Evaluator {
    black_box(ev.decide(input_from_json(black_box(&text))));
    ev
}

#[library_benchmark]
#[bench::typical((evaluator(EnginePreference::Interpreter), input_json()))]
fn interpreter_json((mut ev, text): (Evaluator, String)) -> Evaluator {
    black_box(ev.decide(input_from_json(black_box(&text))));
    ev
}

library_benchmark_group!(name = eval; benchmarks = rvm_preparsed, rvm_json, interpreter_json);
main!(library_benchmark_groups = eval);
