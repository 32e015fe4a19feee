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
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use pdp::audit::{AuditRecord, DecisionIds};
use pdp::audit_ring::{AuditProducer, rings};
use pdp::cache::CacheConfig;
use pdp::eval::{CompiledBundle, EnginePreference, Evaluator};
use pdp::point::{Answer, DecisionPoint};
use wire::message::{ErrorReply, HelloOk, MAX_BATCH};
use wire::{Check, HEADER_LEN, Reply, Request, WireError};

use crate::convert::{input_from_eval, view};

/// How long a stopping shard waits for connections still answering what they read.
const DRAIN: Duration = Duration::from_secs(10);

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub shards: usize,
    pub audit_log: PathBuf,
    pub cache: CacheConfig,
    /// Records per shard ring.
    pub ring_capacity: usize,
    pub max_connections_per_shard: usize,
    pub idle_timeout: Duration,
    pub max_payload: u32,
    /// Requests (batch items count one each) answered on a connection before their
    /// replies are written and more is read.
    pub max_in_flight: usize,
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

/// Run until SIGTERM/SIGINT. `ready` is called with the bound address once every shard
/// listens.
///
/// # Errors
/// Binding, the audit log, or a shard's runtime failing to start.
pub fn serve(config: ServeConfig, bundle: Arc<CompiledBundle>, ready: impl FnOnce(SocketAddr)) -> anyhow::Result<()> {
    let shutdown = Arc::new(AtomicBool::new(false));
    {
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])?;
        let flag = shutdown.clone();
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            if let Some(signal) = signals.forever().next() {
                eprintln!("sark-pdp: signal {signal}: stopping");
                flag.store(true, Ordering::SeqCst);
            }
        })?;
    }
    // Shard 0 binds first (port 0 picks one); the others share that address.
    let first = reuse_port_listener(config.listen)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..config.shards {
        listeners.push(reuse_port_listener(addr)?);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.audit_log)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.audit_log.display()))?;
    let (producers, drain) = rings(config.shards, config.ring_capacity);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let writer = std::thread::Builder::new().name("audit-writer".into()).spawn(move || {
        let _ = monoio::utils::bind_to_cpu_set([cores - 1]);
        drain.run(std::io::BufWriter::with_capacity(1 << 20, file), 1024)
    })?;
    let nonce = u64::try_from(now_ns()).unwrap_or(0);
    let mut shards = Vec::new();
    for (index, (listener, producer)) in listeners.into_iter().zip(producers).enumerate() {
        let (bundle, config, shutdown) = (bundle.clone(), config.clone(), shutdown.clone());
        shards.push(std::thread::Builder::new().name(format!("shard-{index}")).spawn(move || {
            run_shard(index, listener, producer, bundle, config, shutdown, nonce)
        })?);
    }
    ready(addr);
    let mut result = Ok(());
    for s in shards {
        match s.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(anyhow::anyhow!("a shard panicked")),
        }
    }
    let written = writer.join().map_err(|_| anyhow::anyhow!("the audit writer panicked"))??;
    eprintln!("sark-pdp: stopped; {written} audit records written to {}", config.audit_log.display());
    result
}

/// One shard's state, owned by its thread.
struct Shard {
    index: u16,
    shards: u16,
    point: RefCell<DecisionPoint>,
    evaluator: RefCell<Evaluator>,
    /// Taken (and so dropped, which tells the writer this shard is done) when the shard
    /// stops; monoio does not drop tasks still pending when its runtime goes away.
    audit: RefCell<Option<AuditProducer>>,
    ids: RefCell<DecisionIds>,
    clock: quanta::Clock,
    connections: Cell<usize>,
    /// Connections answering frames they have read (not waiting to read).
    busy: Cell<usize>,
    shutdown: Arc<AtomicBool>,
    config: ServeConfig,
    revision: String,
    driver: &'static str,
}

fn run_shard(
    index: usize,
    listener: std::net::TcpListener,
    audit: AuditProducer,
    bundle: Arc<CompiledBundle>,
    config: ServeConfig,
    shutdown: Arc<AtomicBool>,
    nonce: u64,
) -> anyhow::Result<()> {
    let _ = monoio::utils::bind_to_cpu_set([index]);
    let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build()?;
    let driver = match &runtime {
        monoio::FusionRuntime::Uring(_) => "io_uring",
        monoio::FusionRuntime::Legacy(_) => "epoll",
    };
    eprintln!("sark-pdp: shard {index} on core {index}, {driver} driver");
    let clock = quanta::Clock::new();
    let shard = Rc::new(Shard {
        index: u16::try_from(index).unwrap_or(u16::MAX),
        shards: u16::try_from(config.shards).unwrap_or(u16::MAX),
        point: RefCell::new(DecisionPoint::new(bundle.clone(), EnginePreference::Fastest, config.cache, clock.clone())),
        evaluator: RefCell::new(Evaluator::new(bundle.clone(), EnginePreference::Fastest)),
        audit: RefCell::new(Some(audit)),
        ids: RefCell::new(DecisionIds::new(u16::try_from(index).unwrap_or(u16::MAX), nonce)),
        clock,
        connections: Cell::new(0),
        busy: Cell::new(0),
        shutdown,
        config,
        revision: bundle.revision.to_string(),
        driver,
    });
    runtime.block_on(accept_loop(shard, listener))
}

async fn accept_loop(shard: Rc<Shard>, listener: std::net::TcpListener) -> anyhow::Result<()> {
    let listener = monoio::net::TcpListener::from_std(listener)?;
    // Accepting runs as its own task and is never cancelled mid-flight (a cancelled
    // io_uring accept can lose a connection the kernel already completed); this task only
    // watches for shutdown.
    let acceptor = shard.clone();
    monoio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors or similar: back off instead of spinning.
                monoio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if acceptor.shutdown.load(Ordering::Relaxed) || acceptor.connections.get() >= acceptor.config.max_connections_per_shard {
                drop(stream); // refused by closing: shutting down, or over the limit
                continue;
            }
            let _ = stream.set_nodelay(true);
            acceptor.connections.set(acceptor.connections.get() + 1);
            let s = acceptor.clone();
            monoio::spawn(async move {
                connection(&s, stream).await;
                s.connections.set(s.connections.get() - 1);
            });
        }
    });
    while !shard.shutdown.load(Ordering::Relaxed) {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    // Busy connections finish the frames they have read, write the replies and close;
    // idle ones are closed when the runtime goes (which cancels their reads). A decision
    // is audited before its reply is written, so the log never lacks an answered one.
    let deadline = std::time::Instant::now() + DRAIN;
    while shard.busy.get() > 0 && std::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(shard.audit.borrow_mut().take());
    Ok(())
}

/// What to do after answering the frames at the front of the input buffer.
enum After {
    /// Every whole frame was answered: read more.
    Read,
    /// `max_in_flight` requests were answered: write their replies, then answer on.
    Full,
    /// A fatal frame: write what is pending and close.
    Close,
}

async fn connection(shard: &Shard, mut stream: monoio::net::TcpStream) {
    let mut inbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut max_payload = shard.config.max_payload;
    loop {
        // Read straight into the buffer's spare capacity, after any partial frame.
        if inbuf.capacity() - inbuf.len() < 16 * 1024 {
            inbuf.reserve(64 * 1024);
        }
        let start = inbuf.len();
        let read = monoio::time::timeout(shard.config.idle_timeout, stream.read(inbuf.slice_mut(start..))).await;
        let Ok((res, buf)) = read else { return }; // idle
        inbuf = buf.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        shard.busy.set(shard.busy.get() + 1);
        let answered = answer_and_write(shard, &mut stream, &mut inbuf, &mut out, &mut max_payload).await;
        shard.busy.set(shard.busy.get() - 1);
        if !answered || shard.shutdown.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// Answer every whole frame in `inbuf` and write the replies; false when the connection
/// must close.
async fn answer_and_write(
    shard: &Shard,
    stream: &mut monoio::net::TcpStream,
    inbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    max_payload: &mut u32,
) -> bool {
    loop {
        let after = answer_all(shard, inbuf, out, max_payload).await;
        if !out.is_empty() {
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
        }
    }
}

/// Decode and answer the whole frames at the front of `inbuf`, stopping once
/// `max_in_flight` requests (a batch counts its items) have replies waiting to be written.
async fn answer_all(shard: &Shard, inbuf: &mut Vec<u8>, out: &mut Vec<u8>, max_payload: &mut u32) -> After {
    let mut consumed = 0;
    let mut answered = 0;
    let after = loop {
        if answered >= shard.config.max_in_flight {
            break After::Full;
        }
        let rest = inbuf.get(consumed..).unwrap_or(&[]);
        let (header, total) = match wire::check(rest, *max_payload) {
            Ok(Check::Incomplete) => break After::Read,
            Ok(Check::Complete { header, total }) => (header, total),
            Err(e) => {
                error_reply(out, wire::Header::peek(rest).map_or(0, |h| h.request_id), &e);
                break After::Close;
            }
        };
        let payload = rest.get(HEADER_LEN..total).unwrap_or(&[]);
        let id = header.request_id;
        let request = wire::decode_request(&header, payload);
        consumed += total;
        match request {
            Ok(Request::Eval(e)) => {
                answered += 1;
                let (answer, decision_id) = decide(shard, *e).await;
                wire::encode_decision(out, id, &view(&answer, decision_id));
            }
            Ok(Request::EvalBatch(items)) => {
                answered += items.len().max(1);
                let mut answers = Vec::with_capacity(items.len());
                for e in items {
                    answers.push(decide(shard, e).await);
                }
                let views: Vec<_> = answers.iter().map(|(a, decision_id)| view(a, *decision_id)).collect();
                wire::encode_decision_batch(out, id, &views);
            }
            Ok(Request::Hello(h)) => {
                answered += 1;
                wire::encode_reply(out, id, &hello(shard, &h, max_payload));
            }
            Ok(Request::Ping(b)) => {
                answered += 1;
                wire::encode_reply(out, id, &Reply::Pong(b));
            }
            Ok(Request::EvalJson(j)) => {
                answered += 1;
                wire::encode_reply(out, id, &eval_json(shard, &j));
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
    Reply::HelloOk(HelloOk {
        version: wire::VERSION,
        max_payload: *max_payload,
        max_batch: MAX_BATCH,
        shards: shard.shards,
        shard: shard.index,
        bundle_revision: shard.revision.clone(),
        driver: shard.driver.to_string(),
    })
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

/// One EVAL: decide (cache or evaluator), audit (waiting for ring room), and return the
/// answer to reply with and its decision id.
async fn decide(shard: &Shard, e: wire::message::Eval) -> (Answer, u128) {
    let t0 = shard.clock.raw();
    let now = now_ns();
    let id = shard.ids.borrow_mut().next_id();
    let input = input_from_eval(e);
    let (answer, ids) = shard.point.borrow_mut().decide_typed_ids(&input, now);
    let us = shard.clock.delta_as_nanos(t0, shard.clock.raw()) / 1000;
    let mut record = AuditRecord::for_typed(&input, &ids, &answer, id, now, us);
    drop(ids);
    drop(input); // freed here, on the thread that allocated it
    loop {
        let pushed = match shard.audit.borrow_mut().as_mut() {
            Some(ring) => ring.try_push(record),
            // The shard has stopped: nothing may be answered without its record.
            None => {
                let stopping = pdp::EvalError::Unavailable("the PDP is shutting down".into());
                let refused = Answer {
                    decision: Arc::new(shard.evaluator.borrow_mut().decide(Err(stopping))),
                    cache_hit: false,
                    ttl: Duration::ZERO,
                };
                return (refused, id);
            }
        };
        match pushed {
            Ok(()) => break,
            Err(back) => {
                // The ring is full: hold the reply (and this connection) until there is room.
                record = back;
                monoio::time::sleep(Duration::from_micros(50)).await;
            }
        }
    }
    (answer, id)
}
