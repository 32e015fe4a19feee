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
use pdp::eval::{CompiledBundle, EnginePreference, EvalLimits, Evaluator, input_from_json};
use pdp::point::DecisionPoint;
use shard::config::{BundleSection, FileConfig, default_listen, in_range};

/// The long help's DESCRIPTION.
const DESCRIPTION: &str = "SARK policy decision point.

sark-pdp answers SARK's question — may this user do this action on this tool, on this server,
now, from this address? — from a Rego bundle (SARK's own, embedded, unless --bundle names
another), in microseconds, and writes an audit record of every decision before its answer
leaves. `serve` runs one pinned shard per core, each with its own listeners (SO_REUSEPORT),
Rego engine and decision cache, and one audit writer on the last core. `eval`, `test` and
`check` decide, test and validate without a server.

Run `sark-pdp <command> --help` for a command's options.";

/// The long help's closing sections (every variable the binary reads is named here; a test
/// checks that against the source).
const MANUAL: &str = "\
ENVIRONMENT
  Flags win over their variables, variables over --config, --config over the defaults.
  Each serve flag's variable is listed with it (`serve --help`). Besides those:
  POLICY_CACHE_TTL_LOW, _MEDIUM, _HIGH, _CRITICAL, _DEFAULT
      SARK's cache TTLs (seconds) per tool sensitivity; over [cache.ttl].
  SPLUNK_HEC_URL, SPLUNK_HEC_TOKEN, SPLUNK_INDEX, SPLUNK_TIMEOUT_SECONDS
      Ship the audit log to Splunk HEC (URL and token turn it on); over [sinks.splunk].
  DATADOG_URL, DATADOG_API_KEY, DATADOG_SERVICE, DATADOG_ENVIRONMENT, DATADOG_TIMEOUT_SECONDS
      Ship the audit log to Datadog's log intake; over [sinks.datadog].
  SIEM_BATCH_SIZE, SIEM_BATCH_TIMEOUT_SECONDS, SIEM_CIRCUIT_FAILURE_THRESHOLD,
  SIEM_CIRCUIT_RECOVERY_TIMEOUT
      Batching and circuit breaker of both SIEM sinks.
  SARK_PDP_FAULT_AUDIT_DELAY_MS
      Testing only: hold each audit write this long (crash and back-pressure tests).

FILES
  --config FILE       TOML settings; every key documented in shard/src/config.rs and README.
  --audit-dir DIR     audit-<seq>.jsonl segments (checksummed JSON lines) and sinks/ (cursors,
                      dead letters); default ./sark-pdp-audit.
  --bundle PATH       a bundle directory (*.rego, data.json, .manifest, cases/) or .tar.gz.

SIGNALS
  SIGHUP              validate the bundle again (from --bundle), then swap it on every shard;
                      a bundle that fails keeps the old one serving.
  SIGTERM, SIGINT     stop accepting, answer what was read (up to 10 s), drain the audit
                      rings to disk, exit 0.

EXIT STATUS
  0  success (serve: a clean stop); 1  `test`: a case failed, `reload`: refused;
  2  an error (bad flag value, bundle, settings, bind), printed as one line on stderr.

EXAMPLES
  sark-pdp serve                              the embedded bundle on 127.0.0.1:7474/8181
  sark-pdp eval --input shard/samples/invoke-medium.json
  sark-pdp eval --explain=full --input shard/samples/invoke-critical-viewer.json
                                              why it is denied: policies, reasons, rule trace
  SARK_PDP_ADMIN_TOKEN=... sark-pdp reload    reload a running server's bundle
  sark-pdp test --bundle policies             run a bundle's decision cases

SEE ALSO
  README.md (deployment, sizing, monitoring), wire/PROTOCOL.md (binary protocol),
  shard/HTTP.md (OPA data API, AuthZEN), shard/EXT_AUTHZ.md (Envoy), deploy/ (systemd,
  Kubernetes, seccomp).";

/// `serve --help`'s closing sections.
const SERVE_MANUAL: &str = "\
LISTENERS
  binary (--listen)      SARK's binary protocol, pipelined and batched (wire/PROTOCOL.md).
  HTTP (--http-listen)   OPA's data API, AuthZEN 1.0, SARK's endpoints, /health, /metrics.
  admin (--admin-listen) reload, invalidate, data writes; only with --admin-token.
  ext_authz              Envoy's gRPC Authorization/Check; only with --ext-authz-listen.
  per shard (--shard-ports) the binary protocol again, one port per shard, for key-affine
                         clients (HELLO_OK lists them; wire/PROTOCOL.md, Key-affine routing).
  Every shard listens on the binary, HTTP and admin addresses itself (SO_REUSEPORT); ext_authz
  runs on one thread of its own and hands each Check to a shard. TLS (--tls-*) covers all four.

SIZING
  --shards defaults to cores - 1: one pinned thread per core, the audit writer on the last.
  Each shard holds [cache] max_entries decisions (65536) and an audit ring of --audit-ring
  records (65536). See README, Deployment.

Every setting not shown as a flag is a key of --config (see `sark-pdp --help`, FILES).";
#[derive(Parser, Debug)]
#[command(name = "sark-pdp", version, about = "SARK policy decision point", long_about = DESCRIPTION, after_long_help = MANUAL)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
// Parsed once at start; the size of `Serve` does not matter.
#[allow(clippy::large_enum_variant)]
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
        /// Print why, as indented text instead of JSON: the decision, each applied policy
        /// with allow/deny and its reasons, every reason, the engine, the bundle revision;
        /// `full` adds the rule trace (every rule evaluated, its lines and value, from a
        /// second evaluation on the interpreter). `--explain` alone is `notes`.
        #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "notes")]
        explain: Option<Explain>,
    },
    /// Serve the binary protocol: one pinned shard per core, until SIGTERM/SIGINT.
    ///
    /// Settings come from the flags, then their environment variables, then `--config`,
    /// then the defaults shown.
    #[command(after_long_help = SERVE_MANUAL)]
    Serve {
        #[command(flatten)]
        bundle: BundleArg,
        /// Settings file (TOML; see shard/src/config.rs or the README).
        #[arg(long, env = "SARK_PDP_CONFIG")]
        config: Option<PathBuf>,
        /// Address of the binary protocol, every shard listening on it (SO_REUSEPORT)
        /// [default: 127.0.0.1:7474].
        #[arg(long, env = "SARK_PDP_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Each shard's own binary-protocol port, announced in HELLO_OK so key-affine
        /// clients send each question to the shard that owns it: "auto" (the --listen
        /// port + 1 + shard index; kernel-chosen when --listen's port is 0), "off", or a
        /// base port (base + shard index) [default: auto].
        #[arg(long, env = "SARK_PDP_SHARD_PORTS")]
        shard_ports: Option<String>,
        /// Shards, one pinned thread each: shard i on the i-th CPU this process may use,
        /// the audit writer on the last [default: those CPUs - 1, at least 1].
        #[arg(long, env = "SARK_PDP_SHARDS")]
        shards: Option<usize>,
        /// Audit log directory: numbered segments of checksummed JSON lines
        /// [default: sark-pdp-audit].
        #[arg(long, env = "SARK_PDP_AUDIT_DIR")]
        audit_dir: Option<PathBuf>,
        /// When audit records are made durable: none, batch (group commit) or sync (a
        /// reply waits for its record) [default: batch].
        #[arg(long)]
        audit_durability: Option<String>,
        /// A full audit ring: block (pause the shard) or drop (answer, count the drop)
        /// [default: block].
        #[arg(long)]
        audit_on_full: Option<String>,
        /// Records each shard's audit ring holds before the shard waits for the writer
        /// [default: 65536].
        #[arg(long)]
        audit_ring: Option<usize>,
        /// Connections each shard accepts at once [default: 10000].
        #[arg(long)]
        max_connections: Option<usize>,
        /// Seconds a connection may stay silent before it is closed [default: 300].
        #[arg(long)]
        idle_timeout_s: Option<u64>,
        /// Requests answered on one connection before their replies are written and more
        /// is read (a batch counts its items) [default: 1024].
        #[arg(long)]
        max_in_flight: Option<usize>,
        /// Address of the HTTP front door (OPA's data API, AuthZEN, SARK's endpoints,
        /// /health, /metrics), or "off" [default: 127.0.0.1:8181].
        #[arg(long, env = "SARK_PDP_HTTP_LISTEN")]
        http_listen: Option<String>,
        /// Address of Envoy's ext_authz gRPC service (envoy.service.auth.v3.Authorization/Check),
        /// or "off" [default: off]; its input mapping is `[ext_authz.map]` in --config.
        #[arg(long, env = "SARK_PDP_EXT_AUTHZ_LISTEN")]
        ext_authz_listen: Option<String>,
        /// Address of the admin API (reload, invalidate) [default: 127.0.0.1:8282]; it is
        /// on only with a token.
        #[arg(long, env = "SARK_PDP_ADMIN_LISTEN")]
        admin_listen: Option<std::net::SocketAddr>,
        /// The bearer token every admin call must carry (prefer the variable: flags show in
        /// `ps`).
        #[arg(long, env = "SARK_PDP_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// The token every caller must present (HELLO's token; HTTP's `Authorization:
        /// Bearer`, /health excepted), at least 16 characters; without it the decision
        /// listeners are open to whoever reaches them.
        #[arg(long, env = "SARK_PDP_CALLER_TOKEN", hide_env_values = true)]
        caller_token: Option<String>,
        /// The most a caller may ask explained: off, notes (policy results and reasons;
        /// the default) or full (adds the rule trace: every rule's value, data included,
        /// and 5-15 ms of the shard per request). Above it: HTTP 403, binary ERROR 3005.
        #[arg(long, env = "SARK_PDP_ALLOW_EXPLAIN")]
        allow_explain: Option<String>,
        /// TLS on every listener: the server's PEM certificate chain (with --tls-key).
        #[arg(long, env = "SARK_PDP_TLS_CERT")]
        tls_cert: Option<std::path::PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, env = "SARK_PDP_TLS_KEY")]
        tls_key: Option<std::path::PathBuf>,
        /// Mutual TLS: callers must show a certificate that chains to this PEM CA.
        #[arg(long, env = "SARK_PDP_TLS_CLIENT_CA")]
        tls_client_ca: Option<std::path::PathBuf>,
        /// An OPA-style bundle server to poll: http://host:port/path of a bundle .tar.gz.
        #[arg(long, env = "SARK_PDP_BUNDLE_URL")]
        bundle_url: Option<String>,
        /// Seconds between polls of the bundle server [default: 30].
        #[arg(long)]
        bundle_poll_s: Option<u64>,
        /// Reload when a file in the --bundle directory changes (checked every second).
        #[arg(long)]
        watch: bool,
        /// Redis (redis://host:port) through which nodes share invalidations and data
        /// writes.
        #[arg(long, env = "SARK_PDP_CLUSTER_REDIS")]
        cluster_redis: Option<String>,
        /// This node's name in the cluster [default: host name and process id].
        #[arg(long, env = "SARK_PDP_NODE_ID")]
        node_id: Option<String>,
    },
    /// Ask a running server to reload its bundle (validate, then swap on every shard):
    /// POST /v1/admin/reload with the bearer token from SARK_PDP_ADMIN_TOKEN.
    Reload {
        /// The server's admin API address.
        #[arg(long, default_value = "127.0.0.1:8282", env = "SARK_PDP_ADMIN_LISTEN")]
        admin: std::net::SocketAddr,
        #[arg(long, env = "SARK_PDP_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
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
    /// RVM instructions allowed per evaluation [default: 1000000].
    #[arg(long)]
    max_instructions: Option<usize>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Explain {
    /// The decision's own account (policy results, reasons, engine, revision).
    Notes,
    /// Notes and the rule trace.
    Full,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Engine {
    /// regorus RVM where the entrypoint compiles to it, the interpreter otherwise.
    Fastest,
    /// regorus's interpreter only.
    Interpreter,
}

/// `eval --explain`: decide as `eval` does (the decision path for SARK's decision, the
/// evaluator for any other entrypoint), then explain the answer as indented text.
fn explained(compiled: Arc<CompiledBundle>, pref: EnginePreference, entrypoint: &str, doc: pdp::Value, explain: Explain) -> anyhow::Result<String> {
    use pdp::eval::explain::ExplainLevel;
    let level = match explain {
        Explain::Notes => ExplainLevel::Notes,
        Explain::Full => ExplainLevel::Full,
    };
    let now = shard::server::now_ns();
    let mut evaluated = doc.clone();
    pdp::input::stamp_now(&mut evaluated, now);
    let explanation = if entrypoint == DECISION_ENTRYPOINT {
        let cache = FileConfig::default().cache(|v| std::env::var(v).ok())?;
        let mut point = DecisionPoint::new(compiled.clone(), pref, cache, quanta::Clock::new());
        let answer = point.decide_document(doc, now);
        let traced = (!matches!(answer.decision.error, Some(pdp::EvalError::BadInput(_)))).then_some(&evaluated);
        Evaluator::new(compiled, pref).explain_decision(level, &answer.decision, answer.cache_hit, traced)
    } else {
        let mut ev = Evaluator::new(compiled, pref);
        let (value, engine) = match ev.evaluate(entrypoint, evaluated.clone()) {
            Ok((v, kind)) => (pdp::decision::value_to_json(&v), kind),
            Err(pdp::EvalError::Undefined(_)) => (None, ev.engine_for(entrypoint).unwrap_or(pdp::EngineKind::Interpreter)),
            Err(e) => anyhow::bail!("{entrypoint}: {e}"),
        };
        let x = ev.explain_entrypoint(level, entrypoint, engine, &evaluated, value.as_ref());
        let value = value.map_or_else(|| "undefined".to_string(), |v| v.to_string());
        return Ok(format!("result: {value}\n{}", x.to_text()));
    };
    Ok(explanation.to_text())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            // One line: the error chain joined.
            let msg = e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ");
            pdp::say!("sark-pdp: {}", msg.lines().map(str::trim).collect::<Vec<_>>().join(" "));
            ExitCode::from(2)
        }
    }
}

/// The bundle named by the flags, else by a settings file, else the embedded one.
fn load(arg: &BundleArg, file: &BundleSection) -> anyhow::Result<(Bundle, Arc<CompiledBundle>)> {
    let bundle = match arg.bundle.as_ref().or(file.path.as_ref()) {
        Some(path) => Bundle::load(path, BundleLimits::default())?,
        None => Bundle::embedded()?,
    };
    let bundle = shard::control::with_config_data(bundle, &file.jwks).map_err(anyhow::Error::msg)?;
    let max_instructions = arg
        .max_instructions
        .or(file.max_instructions)
        .unwrap_or(EvalLimits::default().max_instructions);
    let limits = EvalLimits {
        max_instructions: in_range("max_instructions", max_instructions, 1, 1 << 30)?,
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


fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Eval {
            bundle,
            input,
            entrypoint,
            engine,
            explain,
        } => {
            let (_, compiled) = load(&bundle, &BundleSection::default())?;
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
            if let Some(explain) = explain {
                print!("{}", explained(compiled, pref, &entrypoint, doc, explain)?);
                return Ok(ExitCode::SUCCESS);
            }
            let out = if entrypoint == DECISION_ENTRYPOINT {
                // The decision path a shard runs, so the output shows the TTL the decision
                // would be cached for under this environment's POLICY_CACHE_TTL_*.
                let cache = FileConfig::default().cache(|v| std::env::var(v).ok())?;
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
            config,
            listen,
            shard_ports,
            shards,
            audit_dir,
            audit_durability,
            audit_on_full,
            audit_ring,
            max_connections,
            idle_timeout_s,
            max_in_flight,
            http_listen,
            ext_authz_listen,
            admin_listen,
            admin_token,
            caller_token,
            allow_explain,
            tls_cert,
            tls_key,
            tls_client_ca,
            bundle_url,
            bundle_poll_s,
            watch,
            cluster_redis,
            node_id,
        } => {
            let file = match &config {
                Some(path) => FileConfig::load(path)?,
                None => FileConfig::default(),
            };
            let bundle_path = bundle.bundle.clone().or(file.bundle.path.clone());
            let (bundle, compiled) = load(&bundle, &file.bundle)?;
            let srv = &file.server;
            let admin = match admin_token.or(file.admin.token.clone()) {
                Some(token) if token.len() >= 16 => Some(shard::http::AdminConfig {
                    listen: admin_listen.or(file.admin.listen).unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8282))),
                    token,
                }),
                Some(_) => anyhow::bail!("the admin token must be at least 16 characters"),
                None => None,
            };
            let caller_token = match caller_token.or(srv.caller_token.clone()) {
                Some(t) if t.len() < 16 => anyhow::bail!("the caller token must be at least 16 characters"),
                t => t,
            };
            let tls = file.tls.resolve(tls_cert, tls_key, tls_client_ca)?;
            let tls_said = tls.as_ref().map_or("", |t| if t.client_ca.is_some() { ", mutual TLS" } else { ", TLS" });
            let ext_authz = file.ext_authz.resolve(ext_authz_listen.as_deref(), tls.clone())?;
            let tls = tls.as_ref().map(shard::tls::server_config).transpose()?;
            let shards = shards.or(srv.shards).unwrap_or_else(shard::server::default_shards);
            let idle = idle_timeout_s.or(srv.idle_timeout_s).unwrap_or(300);
            let (audit, audit_drop_when_full) = file.audit.resolve(audit_dir, audit_durability.as_deref(), audit_on_full.as_deref())?;
            let config = shard::server::ServeConfig {
                listen: listen.or(srv.listen).unwrap_or_else(default_listen),
                shard_ports: shard::server::ShardPorts::parse(shard_ports.as_deref().or(srv.shard_ports.as_deref()).unwrap_or("auto")).map_err(anyhow::Error::msg)?,
                shards: in_range("shards", shards, 1, 1024)?,
                audit,
                audit_drop_when_full,
                cache: file.cache(|v| std::env::var(v).ok())?,
                prewarm: file.prewarm()?,
                ring_capacity: in_range("audit ring", audit_ring.or(file.audit.ring).unwrap_or(65_536), 1, 1 << 24)?,
                max_connections_per_shard: in_range("max_connections", max_connections.or(srv.max_connections).unwrap_or(10_000), 1, 1 << 20)?,
                idle_timeout: std::time::Duration::from_secs(in_range("idle_timeout_s", idle, 1, 86_400)?),
                max_payload: in_range("max_payload", srv.max_payload.unwrap_or(wire::DEFAULT_MAX_PAYLOAD), 4096, 64 << 20)?,
                max_in_flight: in_range("max_in_flight", max_in_flight.or(srv.max_in_flight).unwrap_or(1024), 1, 1 << 20)?,
                http: file.http.resolve(http_listen.as_deref())?,
                admin,
                ext_authz,
                caller_token,
                allow_explain: shard::server::parse_allow_explain(allow_explain.as_deref().or(srv.allow_explain.as_deref()).unwrap_or("notes")).map_err(anyhow::Error::msg)?,
                tls,
                bundle_poll: file.bundle.poll(bundle_url, bundle_poll_s)?,
                sinks: file.sinks.resolve(|v| std::env::var(v).ok(), node_id.as_deref().unwrap_or(&shard::server::host_name()))?,
                bundle_watch: (watch || file.bundle.watch.unwrap_or(false)).then_some(std::time::Duration::from_secs(1)),
                cluster: cluster_redis.map(|url| {
                    (url, node_id.unwrap_or_else(|| format!("{}-{}", shard::server::host_name(), std::process::id())))
                }),
                bundle_path,
                limits: compiled.limits(),
                bundle_jwks: file.bundle.jwks.clone(),
                stage_sample: file.metrics.stage_sample()?,
            };
            let revision = bundle.revision.clone();
            shard::server::serve(config, (bundle, compiled), |b| {
                let (addr, and) = (b.binary, |a: Option<std::net::SocketAddr>, what: &str| a.map_or(String::new(), |a| format!(" and {a} ({what})")));
                let (http, admin, ext_authz) = (and(b.http, "HTTP"), and(b.admin, "admin"), and(b.ext_authz, "ext_authz gRPC"));
                let own = match b.shard_ports.as_slice() {
                    [] => String::new(),
                    ports => format!(" and ports {} (binary, one per shard)", ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")),
                };
                println!("sark-pdp: listening on {addr} (binary){own}{http}{admin}{ext_authz}; {shards} shards, bundle {revision}{tls_said}");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload { admin, token } => {
            use std::io::{Read as _, Write as _};
            let mut s = std::net::TcpStream::connect(admin).map_err(|e| anyhow::anyhow!("{admin}: {e}"))?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
            write!(s, "POST /v1/admin/reload HTTP/1.1\r\nhost: {admin}\r\nauthorization: Bearer {token}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
            println!("{body}");
            let ok = head.starts_with("HTTP/1.1 200");
            if !ok {
                pdp::say!("sark-pdp: reload: {}", head.lines().next().unwrap_or("no answer"));
            }
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Test { bundle, filter } => {
            let (bundle, compiled) = load(&bundle, &BundleSection::default())?;
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
            let (bundle, compiled) = load(&bundle, &BundleSection::default())?;
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
