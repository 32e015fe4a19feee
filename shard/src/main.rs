//! `sark-pdp`: the SARK policy decision point.
//!
//! It serves the binary protocol (`serve`), decides from the command line (`eval`), runs a
//! bundle's cases (`test`) and validates bundles (`check`). With no `--bundle`, the SARK
//! bundle embedded from `policies/` is used.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use pdp::bundle::{Bundle, BundleLimits, DECISION_ENTRYPOINT};
use pdp::cache::CacheConfig;
use pdp::config::TtlConfig;
use pdp::eval::{CompiledBundle, EnginePreference, EvalLimits, Evaluator, input_from_json};
use pdp::point::DecisionPoint;

#[derive(Parser, Debug)]
#[command(name = "sark-pdp", version, about = "SARK policy decision point")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Decide one input and print the decision as JSON.
    Eval {
        #[command(flatten)]
        bundle: BundleArg,
        /// Input document (JSON); `-` reads standard input.
        #[arg(long, short, default_value = "-")]
        input: String,
        /// Entrypoint to evaluate; the default returns SARK's decision document.
        #[arg(long, short, default_value = DECISION_ENTRYPOINT)]
        entrypoint: String,
        /// Which regorus engine answers.
        #[arg(long, value_enum, default_value_t = Engine::Fastest)]
        engine: Engine,
    },
    /// Serve the binary protocol: one pinned shard per core, until SIGTERM/SIGINT.
    Serve {
        #[command(flatten)]
        bundle: BundleArg,
        /// Address of the binary protocol (every shard listens on it, SO_REUSEPORT).
        #[arg(long, default_value = "127.0.0.1:7474", env = "SARK_PDP_LISTEN")]
        listen: std::net::SocketAddr,
        /// Shards (one pinned thread each); default: cores - 1, at least 1.
        #[arg(long)]
        shards: Option<usize>,
        /// Audit log: one JSON line per decision, appended.
        #[arg(long, default_value = "sark-pdp-audit.jsonl")]
        audit_log: PathBuf,
        /// Records each shard's audit ring holds before the shard waits for the writer.
        #[arg(long, default_value_t = 65_536)]
        audit_ring: usize,
        /// Connections each shard accepts at once.
        #[arg(long, default_value_t = 10_000)]
        max_connections: usize,
        /// Seconds a connection may stay silent before it is closed.
        #[arg(long, default_value_t = 300)]
        idle_timeout_s: u64,
    },
    /// Run the bundle's decision cases (cases/*.yaml) and report.
    Test {
        #[command(flatten)]
        bundle: BundleArg,
        /// Run only cases whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Load and compile a bundle, print its revision and entrypoints, and exit.
    Check {
        #[command(flatten)]
        bundle: BundleArg,
    },
}

#[derive(clap::Args, Debug)]
struct BundleArg {
    /// Bundle directory or OPA bundle .tar.gz (default: the embedded SARK bundle).
    #[arg(long, short, env = "SARK_PDP_BUNDLE")]
    bundle: Option<PathBuf>,
    /// RVM instructions allowed per evaluation.
    #[arg(long, default_value_t = EvalLimits::default().max_instructions)]
    max_instructions: usize,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Engine {
    /// regorus RVM where the entrypoint compiles to it, the interpreter otherwise.
    Fastest,
    /// regorus's interpreter only.
    Interpreter,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            // One line: the error chain joined.
            let msg = e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ");
            eprintln!("sark-pdp: {}", msg.lines().map(str::trim).collect::<Vec<_>>().join(" "));
            ExitCode::from(2)
        }
    }
}

fn load(arg: &BundleArg) -> anyhow::Result<(Bundle, Arc<CompiledBundle>)> {
    let bundle = match &arg.bundle {
        Some(path) => Bundle::load(path, BundleLimits::default())?,
        None => Bundle::embedded()?,
    };
    let limits = EvalLimits {
        max_instructions: arg.max_instructions,
    };
    let compiled = CompiledBundle::compile(&bundle, limits)?;
    Ok((bundle, Arc::new(compiled)))
}

fn read_input(path: &str) -> anyhow::Result<(String, String)> {
    if path == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        return Ok(("<stdin>".into(), s));
    }
    let text = std::fs::read_to_string(Path::new(path)).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    Ok((path.to_string(), text))
}

/// The cache configuration, with TTLs from SARK's `POLICY_CACHE_TTL_*` variables.
fn cache_config() -> anyhow::Result<CacheConfig> {
    Ok(CacheConfig {
        ttl: TtlConfig::from_env(|v| std::env::var(v).ok())?,
        ..CacheConfig::default()
    })
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Eval {
            bundle,
            input,
            entrypoint,
            engine,
        } => {
            let (_, compiled) = load(&bundle)?;
            if compiled.entrypoints().all(|(ep, _, _)| ep != entrypoint) {
                let known: Vec<&str> = compiled.entrypoints().map(|(ep, _, _)| ep).collect();
                anyhow::bail!("unknown entrypoint {entrypoint} (this bundle has: {})", known.join(", "));
            }
            let (name, text) = read_input(&input)?;
            let doc = input_from_json(&text).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            let pref = match engine {
                Engine::Fastest => EnginePreference::Fastest,
                Engine::Interpreter => EnginePreference::Interpreter,
            };
            let out = if entrypoint == DECISION_ENTRYPOINT {
                // The decision path a shard runs, so the output shows the TTL the decision
                // would be cached for under this environment's POLICY_CACHE_TTL_*.
                let cache = cache_config()?;
                let mut point = DecisionPoint::new(compiled, pref, cache, quanta::Clock::new());
                let answer = point.decide_document(doc, shard::server::now_ns());
                let mut out = answer.decision.to_json();
                if let Some(obj) = out.as_object_mut() {
                    obj.insert("cache".into(), serde_json::json!({"ttl_s": answer.ttl.as_secs()}));
                }
                out
            } else {
                let mut doc = doc;
                pdp::input::stamp_now(&mut doc, shard::server::now_ns());
                match Evaluator::new(compiled.clone(), pref).evaluate(&entrypoint, doc) {
                    Ok((v, kind)) => serde_json::json!({
                        "result": pdp::decision::value_to_json(&v),
                        "metadata": {"engine": kind.as_str(), "bundle_revision": &*compiled.revision},
                    }),
                    Err(e) => serde_json::json!({
                        "error": {"code": e.wire_code(), "kind": e.kind(), "message": e.to_string()},
                        "metadata": {"bundle_revision": &*compiled.revision},
                    }),
                }
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            bundle,
            listen,
            shards,
            audit_log,
            audit_ring,
            max_connections,
            idle_timeout_s,
        } => {
            let (bundle, compiled) = load(&bundle)?;
            let shards = shards.unwrap_or_else(shard::server::default_shards);
            anyhow::ensure!((1..=1024).contains(&shards), "--shards must be between 1 and 1024");
            let config = shard::server::ServeConfig {
                listen,
                shards,
                audit_log,
                cache: cache_config()?,
                ring_capacity: audit_ring.max(1),
                max_connections_per_shard: max_connections.max(1),
                idle_timeout: std::time::Duration::from_secs(idle_timeout_s.max(1)),
                max_payload: wire::DEFAULT_MAX_PAYLOAD,
            };
            let revision = bundle.revision.clone();
            shard::server::serve(config, compiled, |addr| {
                println!("sark-pdp: listening on {addr} ({shards} shards, bundle {revision})");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { bundle, filter } => {
            let (bundle, compiled) = load(&bundle)?;
            let all = pdp::cases::load(&bundle).map_err(|e| anyhow::anyhow!(e))?;
            if all.is_empty() {
                anyhow::bail!("{}: no cases (cases/*.yaml)", bundle.origin);
            }
            let mut ev = Evaluator::new(compiled, EnginePreference::Fastest);
            let (mut passed, mut failed) = (0, 0);
            for case in all.iter().filter(|c| filter.as_ref().is_none_or(|f| c.name.contains(f.as_str()))) {
                let outcome = pdp::cases::evaluate(&mut ev, case).and_then(|r| pdp::cases::check(case, r.as_ref()));
                match outcome {
                    Ok(()) => passed += 1,
                    Err(why) => {
                        failed += 1;
                        println!("FAIL {} [{}]: {why}", case.name, case.file);
                    }
                }
            }
            println!("{passed} passed, {failed} failed");
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Check { bundle } => {
            let (bundle, compiled) = load(&bundle)?;
            let cases = pdp::cases::load(&bundle).map_err(|e| anyhow::anyhow!(e))?;
            println!("bundle {}", bundle.origin);
            println!("revision {}", if bundle.revision.is_empty() { "(none)" } else { &bundle.revision });
            println!("modules {}", bundle.modules.len());
            println!("cases {}", cases.len());
            for (ep, kind, refusal) in compiled.entrypoints() {
                match refusal {
                    Some(why) => println!("entrypoint {ep} {} (RVM refused: {why})", kind.as_str()),
                    None => println!("entrypoint {ep} {}", kind.as_str()),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
