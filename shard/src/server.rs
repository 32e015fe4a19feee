//! `sark-pdp serve`: one thread per shard, each pinned to its core, running a monoio
//! runtime (fusion driver: io_uring where the kernel allows it, epoll otherwise) with its
//! own SO_REUSEPORT listener, decision point (evaluator + cache) and audit ring; one
//! writer thread, pinned to the last core, appends every shard's audit records.
//!
//! Per connection: read into the spare capacity of a reused buffer, decode every complete
//! frame in it, answer each, and write the replies at once (every `max_in_flight`
//! requests, so a burst never grows the reply buffer without bound). A full audit ring
//! pauses the connection (it reads nothing more) until the writer makes room: no record
//! is dropped.
//! SIGTERM/SIGINT: shards stop accepting, connections finish the frames they have
//! read, the writer drains the rings, and the process exits 0.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pdp::audit::{AuditRecord, DecisionIds};
use pdp::audit_ring::{AuditProducer, rings};
use pdp::cache::CacheConfig;
use pdp::eval::{CompiledBundle, EnginePreference, Evaluator};
use pdp::point::{Answer, DecisionPoint};
use wire::message::{ErrorReply, HelloOk, MAX_BATCH};
use wire::{Check, HEADER_LEN, Reply, Request, WireError};

use crate::convert::{input_from_eval, view};
use crate::stages::{Sampler, Stage};

/// How long a stopping shard waits for connections still answering what they read.
const DRAIN: Duration = Duration::from_secs(10);

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// Each shard's own binary-protocol port, for key-affine clients.
    pub shard_ports: ShardPorts,
    pub shards: usize,
    /// The durable audit log (directory, durability, segments).
    pub audit: pdp::audit_log::LogConfig,
    /// With a full ring: wait for room (false, the default) or answer without the record,
    /// counting it (true).
    pub audit_drop_when_full: bool,
    pub cache: CacheConfig,
    /// Pre-warm each shard's cache from the audit log's tail (`None`: off).
    pub prewarm: Option<crate::prewarm::PrewarmConfig>,
    /// Records per shard ring.
    pub ring_capacity: usize,
    pub max_connections_per_shard: usize,
    pub idle_timeout: Duration,
    pub max_payload: u32,
    /// Requests (batch items count one each) answered on a connection before their
    /// replies are written and more is read.
    pub max_in_flight: usize,
    /// The HTTP front door (`None`: off).
    pub http: Option<crate::http::HttpConfig>,
    /// The admin API (`None`: off — it needs a token).
    pub admin: Option<crate::http::AdminConfig>,
    /// Envoy's ext_authz gRPC service (`None`: off).
    pub ext_authz: Option<crate::ext_authz::ExtAuthzConfig>,
    /// The token every caller must present — in HELLO on the binary protocol, as
    /// `Authorization: Bearer` over HTTP (all but /health) — or `None`: the decision
    /// listeners are open to whoever reaches them. The admin token is accepted too.
    pub caller_token: Option<String>,
    /// The most explain a caller may ask (`--allow-explain`); `None`: none.
    pub allow_explain: Option<pdp::eval::explain::ExplainLevel>,
    /// TLS on every listener (`None`: plain TCP); see [`crate::tls`].
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Redis URL and this node's id, to share invalidations and data writes with other
    /// nodes (`None`: a single node).
    pub cluster: Option<(String, String)>,
    /// Reload when the `--bundle` directory changes, checking this often (`None`: don't).
    pub bundle_watch: Option<Duration>,
    /// Ship the audit log to these (Splunk HEC, Datadog, PostgreSQL).
    pub sinks: Vec<crate::config::SinkSettings>,
    /// A bundle server to poll (`None`: none).
    pub bundle_poll: Option<crate::control::BundlePoll>,
    /// Where reloads read the bundle (`None`: the embedded one) and its limits.
    pub bundle_path: Option<std::path::PathBuf>,
    pub limits: pdp::eval::EvalLimits,
    /// `[bundle.jwks]`: JWKS files every bundle's data gets ([`crate::control::with_config_data`]).
    pub bundle_jwks: crate::control::ConfigJwks,
    /// One decision in this many is timed stage by stage (`[metrics] stage_sample`, see
    /// [`crate::stages`]; 0: none).
    pub stage_sample: u32,
}

/// Where each shard's own binary-protocol listener is (besides the shared `listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardPorts {
    /// None: only the shared port.
    Off,
    /// The shared port + 1 + shard index; with the shared port 0, ports the kernel picks.
    Auto,
    /// This port + shard index.
    Base(u16),
}

impl ShardPorts {
    /// `off`, `auto` or a base port.
    ///
    /// # Errors
    /// Anything else.
    pub fn parse(s: &str) -> Result<ShardPorts, String> {
        match s {
            "off" => Ok(ShardPorts::Off),
            "auto" => Ok(ShardPorts::Auto),
            n => n.parse().ok().filter(|p| *p > 0).map(ShardPorts::Base).ok_or_else(|| format!("shard ports {s:?}: off, auto or a base port (1-65535)")),
        }
    }

    /// Shard `index`'s address (port 0: the kernel picks), if it has one; `listen` is the
    /// shared port as bound, `asked` as configured.
    fn addr(self, (asked, listen): (SocketAddr, SocketAddr), shards: usize, index: usize) -> Result<Option<SocketAddr>, String> {
        let base = match self {
            ShardPorts::Off => return Ok(None),
            ShardPorts::Auto if asked.port() == 0 => return Ok(Some(SocketAddr::new(listen.ip(), 0))),
            ShardPorts::Auto => usize::from(listen.port()) + 1,
            ShardPorts::Base(b) => usize::from(b),
        };
        let port = u16::try_from(base + index).map_err(|_| format!("shard ports {base}..{} pass 65535", base + shards - 1))?;
        Ok(Some(SocketAddr::new(listen.ip(), port)))
    }
}

/// Each shard's own listener (or none), in shard order.
fn own_listeners(ports: ShardPorts, listen: (SocketAddr, SocketAddr), shards: usize) -> anyhow::Result<Vec<Option<std::net::TcpListener>>> {
    (0..shards)
        .map(|i| {
            let Some(addr) = ports.addr(listen, shards, i).map_err(anyhow::Error::msg)? else { return Ok(None) };
            let domain = if addr.is_ipv6() { socket2::Domain::IPV6 } else { socket2::Domain::IPV4 };
            let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
            s.set_reuse_address(true)?;
            s.set_nonblocking(true)?;
            s.bind(&addr.into()).map_err(|e| anyhow::anyhow!("shard {i}'s own port {addr}: {e} (--shard-ports off, or another base)"))?;
            s.listen(1024)?;
            Ok(Some(s.into()))
        })
        .collect()
}

/// The CPUs this process may run on (its affinity mask: a cpuset, `taskset`, systemd's
/// `CPUAffinity=`), in order; shard i is pinned to the i-th, the audit writer to the last.
fn allowed_cpus() -> Vec<usize> {
    let ids: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect();
    if ids.is_empty() { (0..std::thread::available_parallelism().map_or(1, std::num::NonZero::get)).collect() } else { ids }
}

/// Pin the calling thread to `cpu`, saying so (or why not) as `who`.
pub(crate) fn pin(who: &str, cpu: Option<usize>) -> String {
    match cpu.map(|c| (c, monoio::utils::bind_to_cpu_set([c]))) {
        Some((c, Ok(()))) => format!("{who} on CPU {c}"),
        Some((c, Err(e))) => format!("{who} not pinned (CPU {c}: {e})"),
        None => format!("{who} not pinned"),
    }
}

/// Raise the open-files soft limit to the hard one (runtimes often leave it at 1024, a
/// tenth of one shard's `max_connections`); the limit in force.
fn raise_nofile() -> u64 {
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap_or((0, 0));
    rlimit::increase_nofile_limit(hard).unwrap_or(soft)
}

/// The shard that owns `input`'s user and tool: the one a key-affine client sends it to
/// ([`wire::route`]), whose cache has seen them. Envoy's Checks and pre-warming's
/// questions go there.
pub fn owner(input: &pdp::input::SarkInput, shards: usize) -> usize {
    let tool = input.tool.as_ref().map_or("", |t| t.name.as_str());
    usize::from(wire::route::owner(&input.user.id, tool, u16::try_from(shards).unwrap_or(u16::MAX)))
}

/// Shards by default: every core but one (the audit writer's), at least one.
pub fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// The wall clock, ns since the epoch: what `context.now_ns` is stamped with.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Bind a listener with SO_REUSEPORT (so every shard can bind the same address).
fn reuse_port_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv6() { socket2::Domain::IPV6 } else { socket2::Domain::IPV4 };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// The sink `s` describes, built (nothing is connected yet).
///
/// # Errors
/// A PostgreSQL URL that does not parse.
fn build_sink(s: &crate::config::SinkSettings, host: &str) -> anyhow::Result<Box<dyn pdp::sink::Sink + Send>> {
    use crate::config::SinkKind;
    let (url, timeout, host) = (s.url.clone(), s.timeout, host.to_string());
    Ok(match &s.kind {
        SinkKind::Splunk { token, index } => Box::new(pdp::sink::SplunkHec { url, token: token.clone(), index: index.clone(), host, timeout }),
        SinkKind::Datadog { api_key, service, tags } => {
            Box::new(pdp::sink::Datadog { url, api_key: api_key.clone(), service: service.clone(), tags: tags.clone(), host, timeout })
        }
        SinkKind::Postgres { node_id } => Box::new(pdp::sink_postgres::Postgres::new(&url, node_id, timeout).map_err(|e| anyhow::anyhow!("sinks.postgres: {e}"))?),
    })
}

/// Ship the audit log to a sink on a thread of its own (never on a shard), until shutdown;
/// the cursor and dead letters live in `<audit dir>/sinks/`, and `shipped` tells the log's
/// retention what is not shipped yet.
fn spawn_sink(
    (sink, s): (Box<dyn pdp::sink::Sink + Send>, &crate::config::SinkSettings),
    log_dir: &std::path::Path,
    shipped: Arc<AtomicU64>,
    (stop, control): (Arc<AtomicBool>, &crate::control::Control),
) -> anyhow::Result<()> {
    let name = s.name();
    let mut shipper = pdp::sink::Shipper::new(sink, log_dir, &log_dir.join("sinks"))?;
    let from = shipper.cursor();
    shipper.stats.cursor.store(from, Ordering::Relaxed);
    control.sinks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((name.to_string(), shipper.stats.clone()));
    let histogram = control.sink_send_seconds.get_or_create(&crate::metrics::SinkLabel { sink: name.to_string() }).clone();
    shipper.on_send = Some(Box::new(move |took| histogram.observe(took.as_secs_f64())));
    shipper.batch = s.batch;
    shipper.max_wait = s.max_wait;
    shipper.breaker.threshold = s.breaker_failures;
    shipper.breaker.open_for = s.breaker_open;
    shipper.max_lag_bytes = s.max_lag_bytes;
    shipped.store(from, Ordering::Release);
    shipper.published = Some(shipped);
    pdp::say!("sark-pdp: shipping the audit log to {name} from seq {from}");
    std::thread::Builder::new().name(format!("sink-{name}")).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match shipper.step(false) {
                Ok(wait) => std::thread::sleep(wait),
                Err(e) => {
                    pdp::say!("sark-pdp: sink {name}: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    })?;
    Ok(())
}

/// This machine's name (for SIEM events and the default cluster node id).
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname").map_or_else(|_| "sark-pdp".into(), |h| h.trim().to_string())
}

/// One SO_REUSEPORT listener per shard on `addr`: shard 0's binds first (port 0 picks
/// one), the others share the address it got.
fn shard_listeners(addr: SocketAddr, shards: usize) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let first = reuse_port_listener(addr)?;
    let bound = first.local_addr()?;
    let mut out = vec![first];
    for _ in 1..shards {
        out.push(reuse_port_listener(bound)?);
    }
    Ok((bound, out))
}

/// [`shard_listeners`] for a front door that may be off.
fn optional_listeners(addr: Option<SocketAddr>, shards: usize) -> std::io::Result<(Option<SocketAddr>, Vec<Option<std::net::TcpListener>>)> {
    match addr {
        Some(a) => shard_listeners(a, shards).map(|(bound, ls)| (Some(bound), ls.into_iter().map(Some).collect())),
        None => Ok((None, (0..shards).map(|_| None).collect())),
    }
}

/// The addresses `serve` listens on (port 0 resolved).
#[derive(Debug, Clone)]
pub struct Bound {
    pub binary: SocketAddr,
    /// Each shard's own binary-protocol port (empty: off).
    pub shard_ports: Vec<u16>,
    pub http: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub ext_authz: Option<SocketAddr>,
}

/// Run until SIGTERM/SIGINT. `ready` is called with the bound addresses once every shard
/// listens.
///
/// # Errors
/// Binding, the audit log, or a shard's runtime failing to start.
pub fn serve(config: ServeConfig, (source, bundle): (pdp::Bundle, Arc<CompiledBundle>), ready: impl FnOnce(&Bound)) -> anyhow::Result<()> {
    let shutdown = Arc::new(AtomicBool::new(false));
    let control = Arc::new(crate::control::Control::new(config.shards, source, config.bundle_path.clone(), config.limits, config.bundle_jwks.clone()));
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        let (flag, control) = (shutdown.clone(), control.clone());
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    // Validate off the shards, then swap on every one.
                    match control.reload() {
                        Ok((revision, epoch)) => {
                            let acked = control.wait_blocking(epoch, Duration::from_secs(30));
                            pdp::say!("sark-pdp: SIGHUP: bundle {revision} {}", if acked { "serving on every shard" } else { "not acknowledged by every shard within 30 s" });
                        }
                        Err(why) => pdp::say!("sark-pdp: SIGHUP: bundle refused, the old one keeps serving: {why}"),
                    }
                    continue;
                }
                pdp::say!("sark-pdp: signal {signal}: stopping");
                flag.store(true, Ordering::SeqCst);
                break;
            }
        })?;
    }
    if let Some((url, node)) = &config.cluster {
        let cluster = crate::cluster::Cluster::connect(url, node.clone()).map_err(|e| anyhow::anyhow!("cluster {url}: {e}"))?;
        cluster.start(control.clone())?;
        pdp::say!("sark-pdp: cluster: node {node} on {url}");
        let _ = control.cluster.set(cluster);
    }
    let (addr, listeners) = shard_listeners(config.listen, config.shards)?;
    let own = own_listeners(config.shard_ports, (config.listen, addr), config.shards)?;
    let shard_ports: Vec<u16> = own.iter().flatten().map(|l| l.local_addr().map(|a| a.port())).collect::<std::io::Result<_>>()?;
    let (http_addr, http_listeners) = optional_listeners(config.http.as_ref().map(|h| h.listen), config.shards)?;
    let (admin_addr, admin_listeners) = optional_listeners(config.admin.as_ref().map(|a| a.listen), config.shards)?;
    if let Some(at) = admin_addr {
        pdp::say!("sark-pdp: admin API on {at} (bearer token required)");
    }
    let cpus = Arc::new(allowed_cpus());
    let ext_authz = match &config.ext_authz {
        Some(x) => Some(crate::ext_authz::bind(x.listen).map_err(|e| anyhow::anyhow!("ext_authz listen {}: {e}", x.listen))?),
        None => None,
    };
    let ext_authz_addr = ext_authz.as_ref().map(std::net::TcpListener::local_addr).transpose()?;
    let (to_shards, inboxes) = crate::ext_authz::channels(if ext_authz.is_some() { config.shards } else { 0 }, config.ext_authz.as_ref().map_or(1, |x| x.queue));
    let mut inboxes = inboxes.into_iter();
    if let (Some(x), Some(listener)) = (&config.ext_authz, ext_authz) {
        // As on the other doors: with a caller token, it or the admin token; else anyone.
        let tokens = match &config.caller_token {
            Some(c) => std::iter::once(c.clone()).chain(config.admin.as_ref().map(|a| a.token.clone())).collect(),
            None => Vec::new(),
        };
        // Before the shards start, so a bad TLS file stops the server before it serves;
        // Checks that come first wait in the shards' queues.
        // On the audit writer's CPU, off the shards'.
        crate::ext_authz::spawn(x, (listener, cpus.last().copied()), to_shards, tokens, shutdown.clone())?;
    }
    let stats: Arc<Vec<Arc<ShardStats>>> = Arc::new((0..config.shards).map(|_| Arc::new(ShardStats::default())).collect());
    // Retention keeps what a sink has not shipped yet.
    let host = host_name();
    let sinks = config.sinks.iter().map(|s| Ok((build_sink(s, &host)?, s, Arc::new(AtomicU64::new(1))))).collect::<anyhow::Result<Vec<_>>>()?;
    let mut log_config = config.audit.clone();
    log_config.shipped.extend(sinks.iter().map(|(_, _, at)| at.clone()));
    let mut log = pdp::audit_log::AuditLog::open(log_config).map_err(|e| anyhow::anyhow!("audit log {}: {e}", config.audit.dir.display()))?;
    let rec = &log.recovery;
    pdp::say!(
        "sark-pdp: audit log {} ({} segments, next seq {}, durability {}, {}{})",
        config.audit.dir.display(),
        rec.segments,
        rec.next_seq,
        config.audit.durability.as_str(),
        log.io_name(),
        if rec.truncated_bytes > 0 { format!("; cut a torn tail of {} bytes", rec.truncated_bytes) } else { String::new() }
    );
    let audit_io = log.io_name();
    if let Some(p) = config.prewarm {
        let shared = Arc::new(crate::prewarm::Prewarm::new(config.shards));
        let _ = control.prewarm.set(shared.clone());
        // On the audit writer's CPU, off the shards'.
        crate::prewarm::spawn(p, (config.audit.dir.clone(), cpus.last().copied()), shared, shutdown.clone())?;
    }
    let (producers, drain) = rings(config.shards, config.ring_capacity);
    drain.next_seq.store(log.next_seq(), Ordering::Release);
    let _ = control.log_next_seq.set(drain.next_seq.clone());
    let nofile = raise_nofile();
    let wanted = config.shards * config.max_connections_per_shard + 64;
    if nofile < wanted as u64 {
        pdp::say!("sark-pdp: open files limited to {nofile}, fewer than {} shards x {} connections need (raise LimitNOFILE / ulimit -n)", config.shards, config.max_connections_per_shard);
    }
    let stop_all = shutdown.clone();
    let writer_cpu = cpus.last().copied();
    let writer = std::thread::Builder::new().name("audit-writer".into()).spawn(move || {
        pdp::say!("sark-pdp: {}", pin("audit writer", writer_cpu));
        let result = drain.run(&mut log, 1024);
        if let Err(e) = &result {
            // Nothing more can be audited, so nothing more may be answered: stop. Shards
            // finish what they hold; what cannot be audited is answered with error 1007.
            pdp::say!("sark-pdp: audit log write failed ({e}): stopping");
            stop_all.store(true, Ordering::SeqCst);
        }
        result
    })?;
    let nonce = u64::try_from(now_ns()).unwrap_or(0);
    let mut shards = Vec::new();
    let ports = Arc::new(shard_ports.clone());
    for (index, ((((listener, own), http), admin), producer)) in listeners.into_iter().zip(own).zip(http_listeners).zip(admin_listeners).zip(producers).enumerate() {
        let (bundle, config, shutdown, stats, control, ports) = (bundle.clone(), config.clone(), shutdown.clone(), stats.clone(), control.clone(), ports.clone());
        let inbox = inboxes.next();
        let cpu = cpus.get(index % cpus.len().max(1)).copied();
        shards.push(std::thread::Builder::new().name(format!("shard-{index}")).spawn(move || {
            run_shard((index, cpu), ((listener, own), http, admin, inbox), producer, bundle, config, (shutdown, control), (nonce, audit_io, ports), stats)
        })?);
    }
    if let Some(every) = config.bundle_watch {
        crate::control::spawn_watcher(control.clone(), every, shutdown.clone())?;
    }
    if let Some(poll) = config.bundle_poll.clone() {
        crate::control::spawn_poller(control.clone(), poll, shutdown.clone())?;
    }
    ready(&Bound { binary: addr, shard_ports, http: http_addr, admin: admin_addr, ext_authz: ext_authz_addr });
    for (sink, settings, at) in sinks {
        spawn_sink((sink, settings), &config.audit.dir, at, (shutdown.clone(), &control))?;
    }
    let mut result = Ok(());
    for s in shards {
        match s.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(anyhow::anyhow!("a shard panicked")),
        }
    }
    let written = writer.join().map_err(|_| anyhow::anyhow!("the audit writer panicked"))??;
    pdp::say!("sark-pdp: stopped; {written} audit records written to {}", config.audit.dir.display());
    result
}

/// One shard's state, owned by its thread (the HTTP front door shares it).
pub(crate) struct Shard {
    pub(crate) index: u16,
    pub(crate) shards: u16,
    pub(crate) point: RefCell<DecisionPoint>,
    pub(crate) evaluator: RefCell<Evaluator>,
    /// Taken (and so dropped, which tells the writer this shard is done) when the shard
    /// stops; monoio does not drop tasks still pending when its runtime goes away.
    audit: RefCell<Option<AuditProducer>>,
    pub(crate) ids: RefCell<DecisionIds>,
    pub(crate) clock: quanta::Clock,
    /// Picks the decisions whose stages are timed ([`crate::stages`]).
    pub(crate) sampler: Sampler,
    connections: Cell<usize>,
    /// Connections answering what they have read (not waiting to read), by the parity of
    /// the control generation they started in (see [`Shard::begin_batch`]).
    busy: [Cell<usize>; 2],
    /// Bumped each time the shard applies control changes.
    generation: Cell<u64>,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) config: ServeConfig,
    pub(crate) revision: RefCell<String>,
    pub(crate) driver: &'static str,
    /// This shard's counters (it alone writes them) and every shard's, for `/metrics`.
    pub(crate) stats: Arc<ShardStats>,
    pub(crate) all_stats: Arc<Vec<Arc<ShardStats>>>,
    /// The highest record number on this shard's ring that some reply is waiting on.
    pub(crate) durable_needed: Cell<u64>,
    /// How the audit writer writes (for /metrics).
    pub(crate) audit_io: &'static str,
    /// Every shard's own port (HELLO_OK announces them).
    pub(crate) shard_ports: Arc<Vec<u16>>,
    pub(crate) control: Arc<crate::control::Control>,
}

impl Shard {
    /// A connection starts answering what it read; returns the generation to end it with.
    pub(crate) fn begin_batch(&self) -> u64 {
        let g = self.generation.get();
        if let Some(c) = self.busy.get((g % 2) as usize) {
            c.set(c.get() + 1);
        }
        g
    }

    pub(crate) fn end_batch(&self, g: u64) {
        if let Some(c) = self.busy.get((g % 2) as usize) {
            c.set(c.get().saturating_sub(1));
        }
    }

    /// The clock's reading when `timed` (a sampled decision), to time a stage from.
    #[inline]
    pub(crate) fn lap_start(&self, timed: bool) -> Option<u64> {
        if timed { Some(self.clock.raw()) } else { None }
    }

    /// Count `stage` as lasting from `since` (when timed) until now.
    #[inline]
    pub(crate) fn lap(&self, stage: Stage, since: Option<u64>) {
        if let Some(since) = since {
            self.stage(stage, since, self.clock.raw());
        }
    }

    /// Count `stage` as lasting from one raw reading to another.
    pub(crate) fn stage(&self, stage: Stage, from: u64, to: u64) {
        self.stats.stages.observe(stage, self.clock.delta_as_nanos(from, to));
    }

    /// A timed decision's stages on the decision point: the cache lookup from `from` to
    /// the point's mark ([`DecisionPoint::take_mark`]), and on a miss the evaluation from
    /// the mark to `to`.
    pub(crate) fn point_stages(&self, looked_up: Option<(u64, u64)>, to: u64, hit: bool) {
        if let Some((from, mark)) = looked_up {
            self.stage(Stage::CacheLookup, from, mark);
            if !hit {
                self.stage(Stage::Evaluate, mark, to);
            }
        }
    }

    fn busy_total(&self) -> usize {
        self.busy.iter().map(Cell::get).sum()
    }

    /// Apply control changes past `applied` (between two requests: this runs on the shard's
    /// own thread), then wait until every batch begun before them has been written; the
    /// epoch now applied.
    async fn apply_changes(&self, applied: u64) -> (u64, bool) {
        let changes = self.control.since(applied);
        let Some(last) = changes.last().map(|(e, _)| *e) else { return (applied, false) };
        let mut swapped = false;
        for (_, change) in changes {
            match change {
                crate::control::Change::Swap(bundle) => {
                    swapped = true;
                    self.point.borrow_mut().swap(bundle.clone(), EnginePreference::Fastest);
                    *self.evaluator.borrow_mut() = Evaluator::new(bundle.clone(), EnginePreference::Fastest);
                    *self.revision.borrow_mut() = bundle.revision.to_string();
                }
                crate::control::Change::InvalidateAll => self.point.borrow_mut().cache_mut().clear(),
                crate::control::Change::Invalidate(tags) => {
                    let mut point = self.point.borrow_mut();
                    for t in tags {
                        point.cache_mut().invalidate_tag(t);
                    }
                }
            }
        }
        let old = self.generation.get();
        self.generation.set(old + 1);
        while self.busy.get((old % 2) as usize).map_or(0, Cell::get) > 0 {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
        (last, swapped)
    }
}

/// A shard's counters for `/metrics`. Each cell has one writer, its shard (a plain load
/// and store, no locked instruction); a scrape reads every shard's with relaxed loads.
#[derive(Debug, Default)]
pub(crate) struct ShardStats {
    /// Decisions by tool sensitivity (low, medium, high, critical, unknown) and result
    /// (allow, deny, error).
    pub(crate) decisions: [[AtomicU64; 3]; 5],
    pub(crate) hits: [AtomicU64; 5],
    pub(crate) misses: [AtomicU64; 5],
    /// Published from the cache every 20 ms, by sensitivity: hits that asked for a
    /// refresh ahead, and evictions.
    pub(crate) stale_hits: [AtomicU64; 5],
    pub(crate) evictions: [AtomicU64; 5],
    /// Refreshes evaluated, and not queued (too many waiting).
    pub(crate) refreshed: AtomicU64,
    pub(crate) refresh_dropped: AtomicU64,
    /// The last warm-up: entries it cached, and how long it took (ms).
    pub(crate) prewarmed: AtomicU64,
    pub(crate) prewarm_ms: AtomicU64,
    /// Warm-ups finished.
    pub(crate) prewarms: AtomicU64,
    pub(crate) http_requests: AtomicU64,
    /// Records not written because the ring was full and the shard was told to drop.
    pub(crate) audit_drops: AtomicU64,
    /// Published by the shard every 20 ms.
    pub(crate) connections: AtomicU64,
    pub(crate) cache_entries: AtomicU64,
    pub(crate) ring_depth: AtomicU64,
    pub(crate) io_uring: AtomicBool,
    /// The sampled decisions' stage histograms.
    pub(crate) stages: crate::stages::StageCells,
}

/// Add one to a cell this thread alone writes.
pub(crate) fn bump(cell: &AtomicU64) {
    cell.store(cell.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl ShardStats {
    /// Count one answered decision.
    pub(crate) fn decided(&self, sensitivity: pdp::Sensitivity, answer: &Answer) {
        let s = sensitivity as usize;
        let r = match answer.decision.result() {
            "allow" => 0,
            "deny" => 1,
            _ => 2,
        };
        if let Some(cell) = self.decisions.get(s).and_then(|row| row.get(r)) {
            bump(cell);
        }
        let hm = if answer.cache_hit { &self.hits } else { &self.misses };
        if let Some(cell) = hm.get(s) {
            bump(cell);
        }
    }
}

/// A shard's listeners: the shared binary one and its own, HTTP, admin, and its
/// ext_authz inbox.
type ShardDoors = (
    (std::net::TcpListener, Option<std::net::TcpListener>),
    Option<std::net::TcpListener>,
    Option<std::net::TcpListener>,
    Option<tokio::sync::mpsc::Receiver<crate::ext_authz::Job>>,
);

#[allow(clippy::too_many_arguments)]
fn run_shard(
    (index, cpu): (usize, Option<usize>),
    ((listener, own), http, admin, inbox): ShardDoors,
    audit: AuditProducer,
    bundle: Arc<CompiledBundle>,
    config: ServeConfig,
    (shutdown, control): (Arc<AtomicBool>, Arc<crate::control::Control>),
    (nonce, audit_io, shard_ports): (u64, &'static str, Arc<Vec<u16>>),
    all_stats: Arc<Vec<Arc<ShardStats>>>,
) -> anyhow::Result<()> {
    let pinned = pin(&format!("shard {index}"), cpu);
    let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build()?;
    let driver = match &runtime {
        monoio::FusionRuntime::Uring(_) => "io_uring",
        monoio::FusionRuntime::Legacy(_) => "epoll",
    };
    pdp::say!("sark-pdp: {pinned}, {driver} driver");
    let clock = quanta::Clock::new();
    let shard = Rc::new(Shard {
        index: u16::try_from(index).unwrap_or(u16::MAX),
        shards: u16::try_from(config.shards).unwrap_or(u16::MAX),
        point: RefCell::new(DecisionPoint::new(bundle.clone(), EnginePreference::Fastest, config.cache, clock.clone())),
        evaluator: RefCell::new(Evaluator::new(bundle.clone(), EnginePreference::Fastest)),
        audit: RefCell::new(Some(audit)),
        ids: RefCell::new(DecisionIds::new(u16::try_from(index).unwrap_or(u16::MAX), nonce)),
        sampler: Sampler::new(config.stage_sample),
        clock,
        connections: Cell::new(0),
        busy: [Cell::new(0), Cell::new(0)],
        generation: Cell::new(0),
        shutdown,
        config,
        revision: RefCell::new(bundle.revision.to_string()),
        driver,
        stats: all_stats.get(index).cloned().unwrap_or_default(),
        all_stats,
        durable_needed: Cell::new(0),
        audit_io,
        shard_ports,
        control,
    });
    shard.stats.io_uring.store(driver == "io_uring", Ordering::Relaxed);
    runtime.block_on(async move {
        if let (Some(p), Some(c)) = (shard.control.prewarm.get(), shard.config.prewarm)
            && c.before_serving
        {
            // The listeners are bound: callers wait in their backlogs meanwhile.
            Warming::before_serving(&shard, p).await;
        }
        let listener = monoio::net::TcpListener::from_std(listener)?;
        spawn_acceptor(shard.clone(), listener, |s, stream| async move { connection(&s, stream).await });
        if let Some(own) = own {
            let own = monoio::net::TcpListener::from_std(own)?;
            spawn_acceptor(shard.clone(), own, |s, stream| async move { connection(&s, stream).await });
        }
        if let Some(http) = http {
            let http = monoio::net::TcpListener::from_std(http)?;
            spawn_acceptor(shard.clone(), http, |s, stream| async move { crate::http::connection(&s, stream, crate::http::Door::Public).await });
        }
        if let Some(admin) = admin {
            let admin = monoio::net::TcpListener::from_std(admin)?;
            spawn_acceptor(shard.clone(), admin, |s, stream| async move { crate::http::connection(&s, stream, crate::http::Door::Admin).await });
        }
        if let Some(inbox) = inbox {
            monoio::spawn(ext_authz_inbox(shard.clone(), inbox));
        }
        watch(shard).await;
        Ok(())
    })
}

/// Accept connections on `listener` and run `handle` for each, as a task of its own that
/// is never cancelled mid-accept (a cancelled io_uring accept can lose a connection the
/// kernel already completed).
fn spawn_acceptor<F, Fut>(shard: Rc<Shard>, listener: monoio::net::TcpListener, handle: F)
where
    F: Fn(Rc<Shard>, crate::tls::Stream) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    monoio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors or similar: back off instead of spinning.
                monoio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if shard.shutdown.load(Ordering::Relaxed) || shard.connections.get() >= shard.config.max_connections_per_shard {
                drop(stream); // refused by closing: shutting down, or over the limit
                continue;
            }
            let _ = stream.set_nodelay(true);
            let Ok(stream) = crate::tls::Stream::new(stream, shard.config.tls.as_ref()) else { continue };
            shard.connections.set(shard.connections.get() + 1);
            let s = shard.clone();
            let task = handle(s.clone(), stream);
            monoio::spawn(async move {
                task.await;
                s.connections.set(s.connections.get() - 1);
            });
        }
    });
}

/// How long a shard evaluates refreshes per millisecond tick at most (the rest wait for
/// the next tick).
const REFRESH_BUDGET: Duration = Duration::from_millis(1);

/// A shard's warm-up in progress.
#[derive(Default)]
struct Warming {
    queue: std::collections::VecDeque<pdp::input::SarkInput>,
    started: Option<std::time::Instant>,
    cached: u64,
    /// Time spent evaluating, against [`crate::prewarm::SHARE`] of the time since it began.
    spent: Duration,
}

impl Warming {
    /// Take the shard's list when it is ready, then evaluate of it for up to `budget`; say
    /// how it went once done (and return true).
    fn step(&mut self, shard: &Shard, p: &crate::prewarm::Prewarm, (budget, share): (Duration, f64)) -> bool {
        if self.started.is_none() {
            let Some(list) = p.take(usize::from(shard.index)) else { return false };
            *self = Warming { queue: list.into(), started: Some(std::time::Instant::now()), ..Warming::default() };
        }
        let Some(started) = self.started else { return false };
        let (now, tick) = (now_ns(), std::time::Instant::now());
        let mut point = shard.point.borrow_mut();
        while tick.elapsed() < budget && self.spent.as_secs_f64() <= started.elapsed().as_secs_f64() * share {
            let Some(q) = self.queue.pop_front() else { break };
            let t = std::time::Instant::now();
            let a = point.decide_typed(&q, now);
            self.spent += t.elapsed();
            self.cached += u64::from(!a.cache_hit && !a.ttl.is_zero());
        }
        if self.queue.is_empty() {
            let ms = started.elapsed().as_millis() as u64;
            shard.stats.prewarmed.store(self.cached, Ordering::Relaxed);
            shard.stats.prewarm_ms.store(ms, Ordering::Relaxed);
            bump(&shard.stats.prewarms);
            pdp::say!("sark-pdp: shard {} pre-warmed {} entries in {ms} ms", shard.index, self.cached);
            self.started = None;
            return true;
        }
        false
    }

    /// `[cache.prewarm] before_serving`: wait for the shard's list (up to a minute) and
    /// warm all of it before the shard accepts connections.
    async fn before_serving(shard: &Shard, p: &crate::prewarm::Prewarm) {
        let (mut w, deadline) = (Warming::default(), std::time::Instant::now() + Duration::from_secs(60));
        while !w.step(shard, p, (Duration::MAX, 1.0)) {
            if std::time::Instant::now() > deadline {
                pdp::say!("sark-pdp: shard {}: no pre-warm list within 60 s; serving cold", shard.index);
                return;
            }
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Apply control changes as they come (checked every millisecond), evaluate the refreshes
/// ahead that hits asked for (off the reply path: between the connections' turns), and
/// publish the gauges every 20 ms until shutdown, then drain.
async fn watch(shard: Rc<Shard>) {
    let mut applied = 0u64;
    let mut tick = 0u64;
    let mut warming = Warming::default();
    let prewarm = shard.control.prewarm.get().cloned();
    while !shard.shutdown.load(Ordering::Relaxed) {
        monoio::time::sleep(Duration::from_millis(1)).await;
        if shard.control.epoch() > applied {
            let swapped;
            (applied, swapped) = shard.apply_changes(applied).await;
            shard.control.set_applied(usize::from(shard.index), applied);
            if swapped && let Some(p) = &prewarm {
                // An empty cache under the new bundle: warm it again, from a new scan.
                warming = Warming::default();
                p.request();
            }
        }
        // While serving: a slice per tick, a quarter of the core at most.
        if let Some(p) = &prewarm {
            warming.step(&shard, p, (crate::prewarm::BUDGET, crate::prewarm::SHARE));
        }
        if shard.point.borrow().pending() > 0 {
            let (now, tick) = (now_ns(), std::time::Instant::now());
            let mut point = shard.point.borrow_mut();
            while tick.elapsed() < REFRESH_BUDGET && point.refresh_pending(now, 1) > 0 {}
        }
        tick += 1;
        if !tick.is_multiple_of(20) {
            continue;
        }
        let st = &shard.stats;
        st.connections.store(shard.connections.get() as u64, Ordering::Relaxed);
        {
            let point = shard.point.borrow();
            let cache = point.cache();
            st.cache_entries.store(cache.len() as u64, Ordering::Relaxed);
            let c = cache.stats();
            for (cells, counts) in [(&st.stale_hits, c.stale_hits), (&st.evictions, c.evictions)] {
                for (cell, n) in cells.iter().zip(counts) {
                    cell.store(n, Ordering::Relaxed);
                }
            }
            st.refreshed.store(point.refresh_stats.refreshed, Ordering::Relaxed);
            st.refresh_dropped.store(point.refresh_stats.dropped, Ordering::Relaxed);
        }
        let depth = shard.audit.borrow().as_ref().map_or(0, |p| shard.config.ring_capacity.saturating_sub(p.slots()));
        st.ring_depth.store(depth as u64, Ordering::Relaxed);
    }
    // Busy connections finish what they have read, write the replies and close; idle
    // ones are closed when the runtime goes (which cancels their reads). A decision is
    // audited before its reply is written, so the log never lacks an answered one.
    let deadline = std::time::Instant::now() + DRAIN;
    while shard.busy_total() > 0 && std::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(shard.audit.borrow_mut().take());
}

/// Decide the ext_authz thread's Checks for this shard, as they come: every one waiting is
/// decided (the same path as an EVAL), then, once their records are as durable as the
/// settings ask, answered. A Check whose caller stopped waiting (its timeout) is skipped,
/// so nothing is audited that no one was told.
async fn ext_authz_inbox(shard: Rc<Shard>, mut inbox: tokio::sync::mpsc::Receiver<crate::ext_authz::Job>) {
    use crate::ext_authz::Verdict;
    let mut jobs = Vec::new();
    let mut answered = Vec::new();
    while inbox.recv_many(&mut jobs, shard.config.max_in_flight).await > 0 {
        let g = shard.begin_batch();
        for job in jobs.drain(..) {
            if job.reply.is_closed() {
                continue;
            }
            let (answer, decision_id) = decide_input(&shard, job.input, shard.sampler.tick()).await;
            let v = view(&answer, decision_id);
            answered.push((job.reply, Verdict { allow: v.allow, decision_id, error_code: v.error_code, reasons: v.reasons.to_vec() }));
        }
        let durable = wait_durable(&shard).await;
        shard.end_batch(g);
        for (reply, v) in answered.drain(..) {
            let v = if durable { v } else { Verdict { allow: false, error_code: 1007, reasons: vec!["the PDP is shutting down".into()], ..v } };
            let _ = reply.send(v);
        }
    }
}

/// What to do after answering the frames at the front of the input buffer.
enum After {
    /// Every whole frame was answered: read more.
    Read,
    /// `max_in_flight` requests were answered: write their replies, then answer on.
    Full,
    /// A fatal frame: write what is pending and close.
    Close,
    /// An authorized INVALIDATE (request id, change): write what is pending, then publish
    /// the change and wait for every shard outside this connection's batch.
    Control(u64, crate::control::Change),
}

/// One connection's protocol state.
struct Conn {
    /// The negotiated maximum payload.
    max_payload: u32,
    /// HELLO carried the admin token: INVALIDATE is allowed.
    admin: bool,
    /// The caller may ask (no caller token is configured, or HELLO carried it).
    authenticated: bool,
}

async fn connection(shard: &Shard, mut stream: crate::tls::Stream) {
    converse(shard, &mut stream).await;
    stream.close().await;
}

async fn converse(shard: &Shard, stream: &mut crate::tls::Stream) {
    let mut inbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut conn = Conn { max_payload: shard.config.max_payload, admin: false, authenticated: shard.config.caller_token.is_none() };
    loop {
        // Read straight into the buffer's spare capacity, after any partial frame.
        if inbuf.capacity() - inbuf.len() < 16 * 1024 {
            inbuf.reserve(64 * 1024);
        }
        let read = monoio::time::timeout(shard.config.idle_timeout, stream.read_more(inbuf)).await;
        let Ok((res, buf)) = read else { return }; // idle
        inbuf = buf;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut g = shard.begin_batch();
        let answered = answer_and_write(shard, stream, &mut inbuf, &mut out, &mut conn, &mut g).await;
        shard.end_batch(g);
        if !answered || shard.shutdown.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// Answer every whole frame in `inbuf` and write the replies; false when the connection
/// must close.
async fn answer_and_write(
    shard: &Shard,
    stream: &mut crate::tls::Stream,
    inbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    conn: &mut Conn,
    batch: &mut u64,
) -> bool {
    loop {
        let after = answer_all(shard, inbuf, out, conn).await;
        if !out.is_empty() {
            if !wait_durable(shard).await {
                return false;
            }
            let (res, buf) = stream.write_all(std::mem::take(out)).await;
            *out = buf;
            out.clear();
            if res.is_err() {
                return false;
            }
        }
        match after {
            After::Full => {}
            After::Read => return true,
            After::Close => return false,
            After::Control(id, change) => {
                // This connection's earlier replies are written; it must not hold up the
                // acknowledgement it is waiting for.
                shard.end_batch(*batch);
                let epoch = shard.control.publish(change);
                let acked = shard.control.wait(epoch, Duration::from_secs(30)).await;
                *batch = shard.begin_batch();
                wire::encode_reply(out, id, &Reply::Invalidated(acked));
            }
        }
    }
}

/// Decode and answer the whole frames at the front of `inbuf`, stopping once
/// `max_in_flight` requests (a batch counts its items) have replies waiting to be written.
async fn answer_all(shard: &Shard, inbuf: &mut Vec<u8>, out: &mut Vec<u8>, conn: &mut Conn) -> After {
    let mut consumed = 0;
    let mut answered = 0;
    let after = loop {
        if answered >= shard.config.max_in_flight {
            break After::Full;
        }
        let rest = inbuf.get(consumed..).unwrap_or(&[]);
        let (header, total) = match wire::check(rest, conn.max_payload) {
            Ok(Check::Incomplete) => break After::Read,
            Ok(Check::Complete { header, total }) => (header, total),
            Err(e) => {
                error_reply(out, wire::Header::peek(rest).map_or(0, |h| h.request_id), &e);
                break After::Close;
            }
        };
        let payload = rest.get(HEADER_LEN..total).unwrap_or(&[]);
        let id = header.request_id;
        // Frames are sampled; a sampled EVAL_BATCH times each of its decisions.
        let timed = shard.sampler.tick();
        let decoding = shard.lap_start(timed);
        let request = wire::decode_request(&header, payload);
        consumed += total;
        if !conn.authenticated && !matches!(request, Ok(Request::Hello(_))) {
            let message = "this PDP needs the caller token: say HELLO with it first".to_string();
            wire::encode_reply(out, id, &Reply::Error(ErrorReply { code: wire::message::ERROR_UNAUTHORIZED, message }));
            break After::Close;
        }
        match request {
            Ok(Request::Eval(e)) => {
                answered += 1;
                shard.lap(Stage::Decode, decoding);
                let (answer, decision_id) = decide(shard, *e, timed).await;
                let encoding = shard.lap_start(timed);
                wire::encode_decision(out, id, &view(&answer, decision_id));
                shard.lap(Stage::Encode, encoding);
            }
            Ok(Request::EvalExplain(e, level)) => {
                // Not timed: an explanation's work is no measure of the decision path.
                answered += 1;
                let level = explain_level(level);
                if let Some(why) = explain_refused(shard, level) {
                    error_reply(out, id, &WireError::Limit(why));
                    continue;
                }
                let (answer, decision_id, explanation) = explained(shard, *e, level).await;
                let start = out.len();
                wire::encode_explanation(out, id, &view(&answer, decision_id), &explanation);
                let payload = out.len() - start - HEADER_LEN;
                if payload > conn.max_payload as usize {
                    out.truncate(start);
                    let why = format!("the explanation makes a {payload}-byte reply, over the negotiated maximum payload of {}: ask for notes, or negotiate more", conn.max_payload);
                    error_reply(out, id, &WireError::Limit(why));
                }
            }
            Ok(Request::EvalBatch(items)) => {
                answered += items.len().max(1);
                shard.lap(Stage::Decode, decoding);
                let mut answers = Vec::with_capacity(items.len());
                for e in items {
                    answers.push(decide(shard, e, timed).await);
                }
                let encoding = shard.lap_start(timed);
                let views: Vec<_> = answers.iter().map(|(a, decision_id)| view(a, *decision_id)).collect();
                let start = out.len();
                wire::encode_decision_batch(out, id, &views);
                shard.lap(Stage::Encode, encoding);
                // Replies keep to the negotiated maximum too: a caller may refuse a larger
                // frame from its header alone. The decisions stand (and are audited); the
                // caller is told to send smaller batches.
                let payload = out.len() - start - HEADER_LEN;
                if payload > conn.max_payload as usize {
                    out.truncate(start);
                    let why = format!(
                        "the batch's {} decisions make a {payload}-byte reply, over the negotiated maximum payload of {}: send smaller batches",
                        views.len(),
                        conn.max_payload
                    );
                    error_reply(out, id, &WireError::Limit(why));
                }
            }
            Ok(Request::Hello(h)) => {
                answered += 1;
                conn.admin = shard.config.admin.as_ref().is_some_and(|a| h.token.as_deref().is_some_and(|t| crate::admin::same(t.as_bytes(), a.token.as_bytes())));
                let caller = shard.config.caller_token.as_ref().is_none_or(|c| h.token.as_deref().is_some_and(|t| crate::admin::same(t.as_bytes(), c.as_bytes())));
                if !(caller || conn.admin) {
                    let message = "HELLO's token is not this PDP's caller token".to_string();
                    wire::encode_reply(out, id, &Reply::Error(ErrorReply { code: wire::message::ERROR_UNAUTHORIZED, message }));
                    break After::Close;
                }
                conn.authenticated = true;
                wire::encode_reply(out, id, &hello(shard, &h, &mut conn.max_payload));
            }
            Ok(Request::Ping(b)) => {
                answered += 1;
                wire::encode_reply(out, id, &Reply::Pong(b));
            }
            Ok(Request::EvalJson(j)) => {
                answered += 1;
                wire::encode_reply(out, id, &eval_json(shard, &j));
            }
            Ok(Request::Invalidate(what)) => {
                answered += 1;
                if !conn.admin {
                    let message = "INVALIDATE needs the admin token in HELLO".to_string();
                    wire::encode_reply(out, id, &Reply::Error(ErrorReply { code: wire::message::ERROR_UNAUTHORIZED, message }));
                    continue;
                }
                use wire::message::Invalidate as I;
                let change = match what {
                    I::All => crate::control::Change::InvalidateAll,
                    I::User(v) => crate::control::Change::Invalidate(vec![pdp::cache::tag("user", &v)]),
                    I::Tool(v) => crate::control::Change::Invalidate(vec![pdp::cache::tag("tool", &v)]),
                    I::Server(v) => crate::control::Change::Invalidate(vec![pdp::cache::tag("server", &v)]),
                };
                break After::Control(id, change);
            }
            Err(e) => {
                answered += 1;
                error_reply(out, id, &e);
                if e.is_fatal() {
                    break After::Close;
                }
            }
        }
    };
    inbuf.drain(..consumed.min(inbuf.len()));
    after
}

fn error_reply(out: &mut Vec<u8>, id: u64, e: &WireError) {
    wire::encode_reply(
        out,
        id,
        &Reply::Error(ErrorReply {
            code: e.wire_code(),
            message: e.to_string(),
        }),
    );
}

fn hello(shard: &Shard, h: &wire::message::Hello, max_payload: &mut u32) -> Reply {
    *max_payload = h.max_payload.min(shard.config.max_payload);
    Reply::HelloOk(Box::new(HelloOk {
        version: wire::VERSION,
        max_payload: *max_payload,
        max_batch: MAX_BATCH,
        shards: shard.shards,
        shard: shard.index,
        bundle_revision: shard.revision.borrow().clone(),
        driver: shard.driver.to_string(),
        route: wire::route::ROUTE_FNV1A64_FMIX,
        shard_ports: shard.shard_ports.to_vec(),
    }))
}

/// EVAL_JSON: any entrypoint, straight to the evaluator (not cached, not audited).
fn eval_json(shard: &Shard, j: &wire::message::EvalJson) -> Reply {
    let mut input = match pdp::eval::input_from_json(&j.input_json) {
        Ok(v) => v,
        Err(e) => return Reply::Error(ErrorReply { code: e.wire_code(), message: e.to_string() }),
    };
    pdp::input::stamp_now(&mut input, now_ns());
    let result = shard.evaluator.borrow_mut().evaluate(&j.entrypoint, input);
    match result {
        Ok((v, _)) => Reply::Result(pdp::decision::value_to_json(&v).map(|v| v.to_string())),
        Err(pdp::EvalError::Undefined(_)) => Reply::Result(None),
        Err(e) => Reply::Error(ErrorReply { code: e.wire_code(), message: e.to_string() }),
    }
}

/// One EVAL: [`decide_input`] on its typed fields.
async fn decide(shard: &Shard, e: wire::message::Eval, timed: bool) -> (Answer, u128) {
    decide_input(shard, input_from_eval(e), timed).await
}

/// `--allow-explain`: `off`, `notes` or `full`.
///
/// # Errors
/// Any other value.
pub fn parse_allow_explain(s: &str) -> Result<Option<pdp::eval::explain::ExplainLevel>, String> {
    match s {
        "off" => Ok(None),
        other => pdp::eval::explain::ExplainLevel::parse(other)
            .map(Some)
            .ok_or_else(|| format!("--allow-explain {other:?}: use off, notes or full")),
    }
}

/// Why this server will not explain at `asked`, or `None` if it will.
pub(crate) fn explain_refused(shard: &Shard, asked: pdp::eval::explain::ExplainLevel) -> Option<String> {
    let allowed = shard.config.allow_explain;
    (allowed < Some(asked)).then(|| {
        let most = allowed.map_or("off", pdp::eval::explain::ExplainLevel::as_str);
        format!("explain={} is beyond what this server allows (--allow-explain {most})", asked.as_str())
    })
}

/// The binary protocol's explain level as the evaluator's.
fn explain_level(level: wire::Explain) -> pdp::eval::explain::ExplainLevel {
    match level {
        wire::Explain::Notes => pdp::eval::explain::ExplainLevel::Notes,
        wire::Explain::Full => pdp::eval::explain::ExplainLevel::Full,
    }
}

/// An explained EVAL: decided exactly as a plain one (cache, audit), then explained from
/// its answer on the shard's evaluator; the explanation as JSON text. For `full`, the
/// trace evaluates the document the typed fields make (stamped with the PDP's clock a
/// moment after the decision's, where the EVAL has no now_ns), unless the PDP refused them.
async fn explained(shard: &Shard, e: wire::message::Eval, level: pdp::eval::explain::ExplainLevel) -> (Answer, u128, String) {
    use pdp::eval::explain::ExplainLevel;
    let input = input_from_eval(e);
    let doc = if level == ExplainLevel::Full {
        input.check_limits().and_then(|()| input.to_value()).ok().map(|mut d| {
            pdp::input::stamp_now(&mut d, now_ns());
            d
        })
    } else {
        None
    };
    let (answer, id) = decide_input(shard, input, false).await;
    let explanation = shard.evaluator.borrow().explain_decision(level, &answer.decision, answer.cache_hit, doc.as_ref());
    (answer, id, explanation.to_json().to_string())
}

/// Decide a typed input (cache or evaluator), audit it (waiting for ring room), and return
/// the answer to reply with and its decision id; `timed`: a sampled decision, whose stages
/// are counted ([`crate::stages`]).
async fn decide_input(shard: &Shard, input: pdp::input::SarkInput, timed: bool) -> (Answer, u128) {
    let t0 = shard.clock.raw();
    let now = now_ns();
    let id = shard.ids.borrow_mut().next_id();
    let (answer, ids, key, looked_up) = {
        let mut point = shard.point.borrow_mut();
        let from = shard.lap_start(timed);
        if timed {
            point.mark_next();
        }
        let (answer, ids) = point.decide_typed_ids(&input, now);
        let looked_up = if timed { from.zip(point.take_mark()) } else { None };
        (answer, ids, point.last_key(), looked_up)
    };
    let t1 = shard.clock.raw();
    shard.point_stages(looked_up, t1, answer.cache_hit);
    let us = shard.clock.delta_as_nanos(t0, t1) / 1000;
    let mut record = AuditRecord::for_typed(&input, &ids, &answer, id, now, us);
    if let (Some(p), Some(key)) = (&shard.config.prewarm, key) {
        record.replay = pdp::prewarm::replay(key, &input, p.parameters);
    }
    let sensitivity = input
        .tool
        .as_ref()
        .and_then(|t| t.sensitivity_level.as_deref())
        .map_or(pdp::Sensitivity::Unknown, pdp::Sensitivity::parse);
    drop(ids);
    drop(input); // freed here, on the thread that allocated it
    let out = audited(shard, record, answer, sensitivity).await;
    shard.lap(Stage::AuditPush, timed.then_some(t1));
    out
}

/// Hand a decision's record to the audit ring (waiting for room: a full ring holds the
/// reply, and the connection, rather than drop a record — unless told to drop, which is
/// counted) and count it; the answer to give and its decision id. In `sync` durability the
/// record's number is noted in `durable_needed`: the connection writes its replies only once
/// the writer has made that many of this shard's records durable ([`wait_durable`]). Once
/// the shard has stopped nothing is answered without its record: the answer becomes a deny
/// with code 1007.
pub(crate) async fn audited(shard: &Shard, mut record: AuditRecord, answer: Answer, sensitivity: pdp::Sensitivity) -> (Answer, u128) {
    let id = record.decision_id;
    loop {
        let pushed = match shard.audit.borrow_mut().as_mut() {
            Some(ring) => ring.try_push(record),
            None => {
                let stopping = pdp::EvalError::Unavailable("the PDP is shutting down".into());
                let refused = Answer {
                    decision: Arc::new(shard.evaluator.borrow_mut().decide(Err(stopping))),
                    cache_hit: false,
                    ttl: Duration::ZERO,
                };
                shard.stats.decided(sensitivity, &refused);
                return (refused, id);
            }
        };
        match pushed {
            Ok(number) => {
                shard.durable_needed.set(shard.durable_needed.get().max(number));
                break;
            }
            Err(_) if shard.config.audit_drop_when_full => {
                bump(&shard.stats.audit_drops);
                break;
            }
            Err(back) => {
                record = back;
                monoio::time::sleep(Duration::from_micros(50)).await;
            }
        }
    }
    shard.stats.decided(sensitivity, &answer);
    (answer, id)
}

/// In `sync` durability, wait until the writer has made this shard's records up to
/// `durable_needed` durable (other connections keep being served meanwhile). False when
/// the shard stopped first (the writer failed, or shutdown outlasted the drain): those
/// replies must not be sent.
pub(crate) async fn wait_durable(shard: &Shard) -> bool {
    if shard.config.audit.durability != pdp::audit_log::Durability::Sync {
        return true;
    }
    let need = shard.durable_needed.get();
    loop {
        match shard.audit.borrow().as_ref().map(|p| p.durable() >= need) {
            Some(true) => return true,
            None => return false,
            Some(false) => {}
        }
        monoio::time::sleep(Duration::from_micros(100)).await;
    }
}
