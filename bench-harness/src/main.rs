//! `pdp-bench`: drives a running `sark-pdp serve` over the binary protocol or HTTP, and
//! sets the engines side by side.
//!
//! - `closed`: connections × pipeline depth × batch size, each answer replaced by a new
//!   request (throughput);
//! - `open`: a fixed rate, latency from when each request was due (coordinated omission
//!   corrected);
//! - `sweep`: the closed-loop peak, then the open loop from 10% to 100% of it, plotted;
//! - `matrix`: issue 3's table — PING, cache hits and cache misses at depth 1/16/128 and
//!   batch 1/64, then each scenario open-loop at half its peak for p50/p99/p99.9, then
//!   the OPA engine's single-core rate on the same miss inputs, in one run;
//! - `opa`: that OPA measurement alone;
//! - `engines`: regorus RVM, regorus interpreter and OPA on the same inputs, in rounds;
//! - `soak`: the open loop held at 80% of the peak for minutes, the server sampled each
//!   second (RSS, file descriptors, audit ring depth and drops), judged at the end;
//! - `compare`: two server commands (configurations or builds) started in turn, A B A B …,
//!   under the same load, with the ratio per pair.
//!
//! Every run checks its answers (a PONG per PING, an allow per EVAL, whole batches) and,
//! given `--server-pid`, reports the CPU each server thread used, beside this process's:
//! the side at 100% of its core is the bottleneck. `--json` writes the figures, and the
//! plots beside them as SVG.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod compare;
mod cpu;
mod engines;
mod load;
mod measure;
mod plot;
mod soak;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use clap::{Parser, Subcommand};
use load::Scenario;
use measure::{Common, Run, closed, header, median_of, open, repeated, row, write_json};

#[derive(Parser, Debug)]
#[command(name = "pdp-bench", about = "Load generator and benchmark harness for sark-pdp (binary protocol and HTTP)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Closed loop: `depth` requests in flight per connection.
    Closed {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum)]
        scenario: Scenario,
        #[arg(long, default_value_t = 16)]
        depth: usize,
        /// EVALs per frame (1: EVAL; more: EVAL_BATCH; binary protocol only).
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Open loop at a fixed rate of requests per second over all connections.
    Open {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum)]
        scenario: Scenario,
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// The closed-loop peak, then the open loop at 10%, 20% … 100% of it: latency against
    /// offered load (plotted beside --json).
    Sweep {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum)]
        scenario: Scenario,
        /// Depth of the closed-loop run that finds the peak.
        #[arg(long, default_value_t = 16)]
        depth: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Open-loop steps from 1/steps of the peak to the peak.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// The peak in requests/s, instead of measuring it.
        #[arg(long)]
        peak: Option<f64>,
    },
    /// Issue 3's measurements in one run (binary protocol).
    Matrix {
        /// --runs: times each closed-loop configuration runs, interleaved round by round.
        #[command(flatten)]
        common: Common,
        /// Core the OPA measurement runs on (the shard's, idle by then).
        #[arg(long, default_value_t = 0)]
        opa_cpu: usize,
    },
    /// The OPA engine's single-core rate on the miss scenario's inputs.
    Opa {
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long, default_value_t = 0)]
        cpu: usize,
    },
    /// The regorus RVM, the regorus interpreter and the OPA engine deciding the same
    /// inputs in one process, in rounds (no server).
    Engines(engines::Args),
    /// The open loop held at 80% of the peak for 10 minutes, the server's RSS, open file
    /// descriptors, audit ring depth and drops sampled every second; judged at the end.
    Soak(soak::Args),
    /// Two server configurations or builds, started in turn (A B A B …) under the same
    /// closed-loop load; the ratio B ÷ A per pair.
    Compare(compare::Args),
}

/// The open loop from 1/steps of `peak` to `peak` requests/s.
fn sweep_rates(peak: f64, steps: usize) -> Vec<f64> {
    (1..=steps).map(|k| peak * k as f64 / steps as f64).collect()
}

fn sweep(c: &Common, scenario: Scenario, depth: usize, batch: usize, steps: usize, peak: Option<f64>) -> anyhow::Result<()> {
    anyhow::ensure!((1..=100).contains(&steps), "need 1 ≤ steps ≤ 100");
    let closed_peak = match peak {
        Some(p) => {
            anyhow::ensure!(p > 0.0 && p.is_finite(), "--peak must be a positive rate");
            None
        }
        None => {
            eprintln!("pdp-bench: closed loop for the peak ({scenario:?}, depth {depth}, batch {batch})");
            let r = repeated(c, || closed(c, scenario, depth, batch))?;
            if r.wrong > 0 {
                bail!("the peak run had {} unexpected answers, first: {}", r.wrong, r.first_wrong.unwrap_or_default());
            }
            Some(r)
        }
    };
    let peak = peak.or(closed_peak.as_ref().map(|r| r.frames_per_s)).unwrap_or(0.0);
    anyhow::ensure!(peak > 0.0, "the closed loop answered nothing: no peak to sweep");
    let mut runs = Vec::new();
    for (k, rate) in sweep_rates(peak, steps).into_iter().enumerate() {
        eprintln!("pdp-bench: [{}/{steps}] open loop at {rate:.0}/s ({}% of peak)", k + 1, (k + 1) * 100 / steps);
        runs.push(repeated(c, || open(c, scenario, rate, batch))?);
    }
    println!("{scenario:?} over {:?}, {} connections, batch {batch}; peak {peak:.0} requests/s{}; each step: median of {} run(s) of {} s after {} s warm-up\n", c.transport, c.connections, closed_peak.as_ref().map_or(" (given)".to_string(), |_| format!(" (closed loop, depth {depth})")), c.runs, c.duration, c.warmup);
    println!("| % of peak | offered/s | answered decisions/s | p50 µs | p95 µs | p99 µs | p99.9 µs | max µs | wrong |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (k, r) in runs.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            (k + 1) * 100 / steps,
            r.offered.unwrap_or(0.0),
            r.per_s,
            r.p50_us,
            r.p95_us,
            r.p99_us,
            r.p999_us,
            r.max_us,
            r.wrong
        );
    }
    let wrong: u64 = runs.iter().map(|r| r.wrong).sum();
    write_json(c.json.as_ref(), &serde_json::json!({"peak_per_s": peak, "peak_run": closed_peak, "steps": runs}))?;
    if let Some(json) = &c.json {
        let what = format!("{scenario:?} over {:?}: latency against offered load (peak {peak:.0}/s)", c.transport);
        plot::latency_vs_load(&measure::beside(json, "latency"), &what, &runs)?;
        let series: Vec<(String, Vec<[f64; 2]>)> = runs.iter().map(|r| (format!("{:.0}/s", r.offered.unwrap_or(0.0)), r.timeline.clone())).collect();
        plot::throughput(&measure::beside(json, "throughput"), &format!("{scenario:?} over {:?}: decisions answered per second, step by step", c.transport), &series, true)?;
        eprintln!("pdp-bench: plots beside {}", json.display());
    }
    anyhow::ensure!(wrong == 0, "{wrong} unexpected answers in the sweep");
    Ok(())
}

/// One closed or open run: its table row, its JSON and its throughput plot.
fn single(c: &Common, r: &Run) -> anyhow::Result<()> {
    header();
    row(r);
    write_json(c.json.as_ref(), r)?;
    if let Some(json) = &c.json {
        let label = format!("{:?} {} over {:?}", r.scenario, r.mode, r.transport);
        plot::throughput(&measure::beside(json, "throughput"), &format!("{label}: decisions answered per second"), &[(label.clone(), r.timeline.clone())], false)?;
    }
    anyhow::ensure!(r.wrong == 0, "{} unexpected answers, first: {}", r.wrong, r.first_wrong.as_deref().unwrap_or("?"));
    Ok(())
}

/// The OPA engine (libopabridge, `scripts/fetch-opa.sh`) deciding the miss scenario's
/// inputs (each user new; OPA parses the JSON) on one thread pinned to `cpu`.
fn opa_rate(seconds: f64, cpu: usize) -> anyhow::Result<f64> {
    let bundle = pdp::Bundle::embedded()?;
    let engine = pdp::opa::OpaEngine::from_bundle(&bundle)?;
    let now = shard::server::now_ns();
    let inputs = (0..2000)
        .map(|i| {
            let input = shard::convert::input_from_eval(load::sample(format!("opa-{i}")));
            let mut v = input.to_value()?;
            pdp::input::stamp_now(&mut v, now);
            Ok(pdp::decision::value_to_json(&v).unwrap_or_default().to_string())
        })
        .collect::<anyhow::Result<Vec<String>>>()?;
    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        eprintln!("pdp-bench: could not pin the OPA thread to core {cpu}");
    }
    let mut decided = 0u64;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        for input in &inputs {
            let out = engine.eval_document(pdp::bundle::DECISION_ENTRYPOINT, input)?;
            if out.as_ref().and_then(|v| v.get("allow")) != Some(&serde_json::Value::Bool(true)) {
                bail!("OPA did not allow the miss scenario's input: {out:?}");
            }
            decided += 1;
            if decided.is_multiple_of(64) && start.elapsed().as_secs_f64() >= seconds {
                break;
            }
        }
    }
    Ok(decided as f64 / start.elapsed().as_secs_f64())
}

fn matrix(c: &Common, opa_cpu: usize) -> anyhow::Result<()> {
    let rounds = c.runs;
    const SHAPES: [(usize, usize); 5] = [(1, 1), (16, 1), (128, 1), (1, 64), (16, 64)];
    let scenarios = [Scenario::Ping, Scenario::Hit, Scenario::Miss];
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); scenarios.len() * SHAPES.len()];
    let total = rounds * (runs.len() - SHAPES.iter().filter(|(_, b)| *b > 1).count());
    let mut done = 0;
    for _ in 0..rounds {
        for (si, &scenario) in scenarios.iter().enumerate() {
            for (hi, &(depth, batch)) in SHAPES.iter().enumerate() {
                if scenario == Scenario::Ping && batch > 1 {
                    continue; // PING has no batch form
                }
                done += 1;
                eprintln!("pdp-bench: [{done}/{total}] {scenario:?} depth {depth} batch {batch}");
                let r = closed(c, scenario, depth, batch)?;
                if r.wrong > 0 {
                    bail!("{scenario:?} depth {depth} batch {batch}: {} unexpected answers, first: {}", r.wrong, r.first_wrong.unwrap_or_default());
                }
                if let Some(slot) = runs.get_mut(si * SHAPES.len() + hi) {
                    slot.push(r);
                }
            }
        }
    }
    println!("Closed loop, {} connections, {} s measured after {} s warm-up; decisions/s: median of {rounds} [min–max]\n", c.connections, c.duration, c.warmup);
    header();
    let mut medians = Vec::new();
    for set in runs {
        if let Some(m) = median_of(set) {
            row(&m);
            medians.push(m);
        }
    }
    let rate = |s: Scenario, depth: usize, batch: usize| {
        medians.iter().find(|r| r.scenario == s && r.depth == Some(depth) && r.batch == batch).map_or(0.0, |r| r.per_s)
    };
    println!("\nHit path ÷ PING rate at the same depth (batch 1; target ≥ 80%):");
    for depth in [1, 16, 128] {
        println!("- depth {depth}: {:.0}%", rate(Scenario::Hit, depth, 1) / rate(Scenario::Ping, depth, 1).max(1.0) * 100.0);
    }
    // What one shard core does per second of its own CPU time: the rate divided by the
    // shard threads' share of a core (the load generator may saturate first on a small box).
    let per_core = |s: Scenario, depth: usize, batch: usize| {
        medians.iter().find(|r| r.scenario == s && r.depth == Some(depth) && r.batch == batch).map_or(0.0, |r| {
            let shard: f64 = r.cpu.iter().filter(|(k, _)| k.starts_with("shard-")).map(|(_, v)| v).sum();
            r.per_s / (shard / 100.0).max(0.01)
        })
    };
    println!(
        "\nHit decisions/s at depth 128: {:.0} ({:.0} per shard-core second); at batch 64 (depth 16): {:.0} ({:.0} per shard-core second); target ≥ 1,000,000 on one shard core",
        rate(Scenario::Hit, 128, 1),
        per_core(Scenario::Hit, 128, 1),
        rate(Scenario::Hit, 16, 64),
        per_core(Scenario::Hit, 16, 64)
    );

    println!("\nOpen loop at 50% of each scenario's peak (batch 1), {} connections:\n", c.connections);
    header();
    let mut latency = Vec::new();
    for s in scenarios {
        let peak = [1, 16, 128].iter().map(|&d| rate(s, d, 1)).fold(0.0, f64::max);
        eprintln!("pdp-bench: open loop {s:?} at {:.0}/s", peak / 2.0);
        let r = open(c, s, peak / 2.0, 1)?;
        row(&r);
        latency.push(r);
    }

    eprintln!("pdp-bench: OPA engine on core {opa_cpu}");
    let opa = opa_rate(c.duration.max(5.0), opa_cpu)?;
    let best_miss = medians.iter().filter(|r| r.scenario == Scenario::Miss).map(|r| r.per_s).fold(0.0, f64::max);
    println!(
        "\nOPA v1.20.2 engine, one core, same inputs: {opa:.0} decisions/s. Cache-miss path over the wire, best shape: {best_miss:.0}/s = {:.1}× OPA (target ≥ 10×)",
        best_miss / opa.max(1.0)
    );
    write_json(c.json.as_ref(), &serde_json::json!({"closed": medians, "open": latency, "opa_per_s": opa}))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Closed { common, scenario, depth, batch } => {
            common.check(batch)?;
            anyhow::ensure!((1..=65_536).contains(&depth), "need 1 ≤ depth ≤ 65536");
            single(&common, &repeated(&common, || closed(&common, scenario, depth, batch))?)
        }
        Command::Open { common, scenario, rate, batch } => {
            common.check(batch)?;
            anyhow::ensure!(rate > 0.0 && rate.is_finite(), "need a positive --rate");
            single(&common, &repeated(&common, || open(&common, scenario, rate, batch))?)
        }
        Command::Sweep { common, scenario, depth, batch, steps, peak } => {
            common.check(batch)?;
            anyhow::ensure!((1..=65_536).contains(&depth), "need 1 ≤ depth ≤ 65536");
            sweep(&common, scenario, depth, batch, steps, peak)
        }
        Command::Matrix { common, opa_cpu } => {
            anyhow::ensure!(common.transport == load::Transport::Binary, "the matrix runs over the binary protocol (PING and batches have no HTTP form)");
            common.check(64)?;
            matrix(&common, opa_cpu)
        }
        Command::Opa { duration, cpu } => {
            println!("OPA v1.20.2 engine, one core: {:.0} decisions/s", opa_rate(duration, cpu)?);
            Ok(())
        }
        Command::Engines(args) => engines::run(&args),
        Command::Compare(args) => compare::run(&args),
        Command::Soak(args) => soak::run(&args),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pdp-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
