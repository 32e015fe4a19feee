//! `pdp-bench`: drives a running `sark-pdp serve` over the binary protocol.
//!
//! - `closed`: connections × pipeline depth × batch size, each answer replaced by a new
//!   request (throughput);
//! - `open`: a fixed rate, latency from when each request was due (coordinated omission
//!   corrected);
//! - `matrix`: issue 3's table — PING, cache hits and cache misses at depth 1/16/128 and
//!   batch 1/64, then each scenario open-loop at half its peak for p50/p99/p99.9, then
//!   the OPA engine's single-core rate on the same miss inputs, in one run;
//! - `opa`: that OPA measurement alone.
//!
//! Every run checks its answers (a PONG per PING, an allow per EVAL, whole batches) and,
//! given `--server-pid`, reports the CPU each server thread used, beside this process's:
//! the side at 100% of its core is the bottleneck.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cpu;
mod load;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use load::{Generator, Scenario, Tally};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(name = "pdp-bench", about = "Load generator for sark-pdp (binary protocol)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct Common {
    /// The server's binary-protocol address.
    #[arg(long, default_value = "127.0.0.1:7474")]
    addr: SocketAddr,
    /// Connections, one load thread each (two in open loop).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Seconds of load before measuring (fills the cache in the hit scenario).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// The server's pid, to report the CPU its threads used.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Closed loop: `depth` frames in flight per connection.
    Closed {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum)]
        scenario: Scenario,
        #[arg(long, default_value_t = 16)]
        depth: usize,
        /// EVALs per frame (1: EVAL; more: EVAL_BATCH).
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Open loop at a fixed rate of frames per second over all connections.
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
    /// Issue 3's measurements in one run.
    Matrix {
        #[command(flatten)]
        common: Common,
        /// Times each closed-loop configuration runs (interleaved); medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
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
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
struct Run {
    scenario: Scenario,
    mode: &'static str,
    connections: usize,
    /// Frames in flight per connection (closed loop).
    depth: Option<usize>,
    batch: usize,
    /// Frames/s offered (open loop).
    offered: Option<f64>,
    seconds: f64,
    /// Decisions (PONGs for ping) answered per second.
    per_s: f64,
    frames_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    /// Of the EVAL answers, the fraction from the cache, and the fraction denied.
    hit_ratio: Option<f64>,
    deny_ratio: Option<f64>,
    wrong: u64,
    first_wrong: Option<String>,
    /// % of one core, by server thread name and for the harness.
    cpu: std::collections::BTreeMap<String, f64>,
}

fn nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Run `workers` (each returns its tally) with CPU sampled over the measured window.
fn measure(
    c: &Common,
    spawn: impl Fn(usize, Instant, Instant) -> std::thread::JoinHandle<anyhow::Result<Tally>>,
) -> anyhow::Result<(Tally, std::collections::BTreeMap<String, f64>)> {
    let measure_from = Instant::now() + Duration::from_secs_f64(c.warmup);
    let end = measure_from + Duration::from_secs_f64(c.duration);
    let handles: Vec<_> = (0..c.connections).map(|i| spawn(i, measure_from, end)).collect();
    std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
    let (server0, own0) = (c.server_pid.map(cpu::threads).unwrap_or_default(), cpu::own());
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let (server1, own1) = (c.server_pid.map(cpu::threads).unwrap_or_default(), cpu::own());
    let mut usage = cpu::percent(&server0, &server1, c.duration);
    usage.insert("pdp-bench".into(), ((own1.saturating_sub(own0)) as f64 / c.duration).round());
    let mut total = Tally::new()?;
    for h in handles {
        total.merge(h.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))??);
    }
    Ok((total, usage))
}

/// What a run sent.
struct Shape {
    scenario: Scenario,
    mode: &'static str,
    depth: Option<usize>,
    batch: usize,
    offered: Option<f64>,
}

fn summarize(t: &Tally, c: &Common, shape: Shape, usage: std::collections::BTreeMap<String, f64>) -> Run {
    let Shape { scenario, mode, depth, batch, offered } = shape;
    let us = |q: f64| t.latency.value_at_quantile(q) as f64 / 1000.0;
    Run {
        scenario,
        mode,
        connections: c.connections,
        depth,
        batch,
        offered,
        seconds: c.duration,
        per_s: t.items as f64 / c.duration,
        frames_per_s: t.frames as f64 / c.duration,
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: t.latency.max() as f64 / 1000.0,
        hit_ratio: (scenario != Scenario::Ping && t.items > 0).then(|| t.hits as f64 / t.items as f64),
        deny_ratio: (scenario != Scenario::Ping && t.items > 0).then(|| t.denies as f64 / t.items as f64),
        wrong: t.wrong,
        first_wrong: t.first_wrong.clone(),
        cpu: usage,
    }
}

fn closed(c: &Common, scenario: Scenario, depth: usize, batch: usize) -> anyhow::Result<Run> {
    let n = nonce();
    let (t, usage) = measure(c, |i, from, end| {
        let (addr, g) = (c.addr, Generator::new(scenario, batch, i, n));
        std::thread::spawn(move || load::closed(addr, g, depth, from, end))
    })?;
    let shape = Shape { scenario, mode: "closed", depth: Some(depth), batch, offered: None };
    Ok(summarize(&t, c, shape, usage))
}

fn open(c: &Common, scenario: Scenario, rate: f64, batch: usize) -> anyhow::Result<Run> {
    let n = nonce();
    let per_conn = rate / c.connections as f64;
    let (warmup, duration) = (Duration::from_secs_f64(c.warmup), Duration::from_secs_f64(c.duration));
    let (t, usage) = measure(c, |i, _, _| {
        let (addr, g) = (c.addr, Generator::new(scenario, batch, i, n));
        std::thread::spawn(move || load::open(addr, g, per_conn, warmup, duration))
    })?;
    let shape = Shape { scenario, mode: "open", depth: None, batch, offered: Some(rate) };
    Ok(summarize(&t, c, shape, usage))
}

fn header() {
    println!("| scenario | loop | conns | depth | batch | decisions/s | frames/s | p50 µs | p99 µs | p99.9 µs | hits | CPU % (server threads; harness) |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
}

fn row(r: &Run, note: &str) {
    let cpu: Vec<String> = r.cpu.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let depth = r.depth.map_or_else(|| format!("{:.0}/s", r.offered.unwrap_or(0.0)), |d| d.to_string());
    println!(
        "| {:?} | {} | {} | {} | {} | {:.0}{note} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} |",
        r.scenario,
        r.mode,
        r.connections,
        depth,
        r.batch,
        r.per_s,
        r.frames_per_s,
        r.p50_us,
        r.p99_us,
        r.p999_us,
        r.hit_ratio.map_or("-".into(), |h| format!("{:.1}%", h * 100.0)),
        cpu.join(", ")
    );
    if r.wrong > 0 {
        eprintln!("pdp-bench: {} unexpected answers, first: {}", r.wrong, r.first_wrong.as_deref().unwrap_or("?"));
    }
}

fn write_json(path: Option<&PathBuf>, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(value)?).with_context(|| p.display().to_string())?;
        eprintln!("pdp-bench: results in {}", p.display());
    }
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

fn median_run(mut runs: Vec<Run>) -> Option<(Run, f64, f64)> {
    runs.sort_by(|a, b| a.per_s.total_cmp(&b.per_s));
    let (lo, hi) = (runs.first()?.per_s, runs.last()?.per_s);
    Some((runs.get(runs.len() / 2)?.clone(), lo, hi))
}

fn matrix(c: &Common, rounds: usize, opa_cpu: usize) -> anyhow::Result<()> {
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
        if let Some((m, lo, hi)) = median_run(set) {
            row(&m, &format!(" [{lo:.0}–{hi:.0}]"));
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
        row(&r, "");
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
            anyhow::ensure!((1..=4096).contains(&batch) && depth >= 1 && common.connections >= 1, "need 1 ≤ batch ≤ 4096, depth ≥ 1, connections ≥ 1");
            let r = closed(&common, scenario, depth, batch)?;
            header();
            row(&r, "");
            write_json(common.json.as_ref(), &r)
        }
        Command::Open { common, scenario, rate, batch } => {
            anyhow::ensure!((1..=4096).contains(&batch) && rate > 0.0 && common.connections >= 1, "need 1 ≤ batch ≤ 4096, rate > 0, connections ≥ 1");
            let r = open(&common, scenario, rate, batch)?;
            header();
            row(&r, "");
            write_json(common.json.as_ref(), &r)
        }
        Command::Matrix { common, rounds, opa_cpu } => matrix(&common, rounds.max(1), opa_cpu),
        Command::Opa { duration, cpu } => {
            println!("OPA v1.20.2 engine, one core: {:.0} decisions/s", opa_rate(duration, cpu)?);
            Ok(())
        }
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
