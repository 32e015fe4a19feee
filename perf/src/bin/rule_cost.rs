//! Where evaluation time goes in a bundle: time per rule on regorus's interpreter and on
//! its RVM, each rule evaluated alone over the bundle's decision-case inputs. For policy authors tuning
//! the shipped bundle; rules are named on the command line.
//!
//! `cargo run --release -p perf --bin rule_cost -- data.sark.common.input_errors data.sark.rbac.deny …`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use perf::{decision_inputs, shipped_bundle};

fn main() -> anyhow::Result<()> {
    let bundle = shipped_bundle()?;
    let inputs: Vec<pdp::Value> = decision_inputs(&bundle)?
        .iter()
        .map(|i| pdp::eval::input_from_json(i))
        .collect::<Result<_, _>>()?;
    let mut engine = regorus::Engine::new();
    for m in &bundle.modules {
        engine.add_policy(m.path.clone(), m.source.clone())?;
    }
    engine.add_data(pdp::Value::from(bundle.data.clone()))?;
    let clock = quanta::Clock::new();
    let data = pdp::Value::from(bundle.data.clone());
    println!("| rule | interpreter µs | RVM µs | (mean per evaluation over {} inputs) |", inputs.len());
    println!("|---|---:|---:|---|");
    for rule in std::env::args().skip(1) {
        let t0 = clock.raw();
        for input in &inputs {
            engine.set_input(input.clone());
            std::hint::black_box(engine.eval_rule(rule.clone())?);
        }
        let interp_ns = clock.delta_as_nanos(t0, clock.raw());
        let policy = engine.compile_with_entrypoint(&rule.as_str().into())?;
        let program = regorus::languages::rego::compiler::Compiler::compile_from_policy(&policy, &[rule.as_str()])?;
        let mut vm = regorus::rvm::vm::RegoVM::new();
        vm.load_program(program);
        vm.set_max_instructions(100_000_000);
        vm.set_data(data.clone())?;
        let t0 = clock.raw();
        for input in &inputs {
            vm.set_input(input.clone());
            std::hint::black_box(vm.execute()?);
        }
        let rvm_ns = clock.delta_as_nanos(t0, clock.raw());
        let n = inputs.len() as f64;
        println!("| {rule} | {:.1} | {:.1} | |", interp_ns as f64 / 1e3 / n, rvm_ns as f64 / 1e3 / n);
    }
    Ok(())
}
