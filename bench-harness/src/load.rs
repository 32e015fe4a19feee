//! Load over the binary protocol or HTTP: what each scenario sends, and the closed and
//! open loops that send it. One blocking socket per connection; requests are written in
//! groups and answers parsed as they arrive, checked (a PONG for a PING, an allow for
//! every EVAL of the hit and miss scenarios, a decision for every EVAL of the seed mix, a
//! whole batch for a batch), and timed.
//!
//! Over HTTP (keep-alive, pipelined) a PING is `GET /health` and an EVAL is `POST
//! /v1/data/sark/decision` with the same input document the binary protocol's typed
//! fields make; answers come back in request order, so the n-th answer is request n's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use wire::message::{Eval, Hello};
use wire::{Check, HEADER_LEN, Reply, Request};

/// How the requests travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// The binary protocol (HELLO, then frames; batches as EVAL_BATCH).
    Binary,
    /// HTTP/1.1 keep-alive to the OPA data API (batch 1 only: the data API has no batch).
    Http,
}

/// What the requests ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// PING with an empty payload: the wire and the event loop, no decision.
    Ping,
    /// EVALs over 64 users, asked again and again: cache hits after the first round.
    Hit,
    /// EVALs for a user never seen before, every time: the evaluator decides each.
    Miss,
    /// The seeds' traffic mix: 50% repeated questions (zipf-distributed users × tools, so
    /// cacheable), 30% unique users, 15% critical tools (zipf users; SARK's rules deny
    /// most of them), 5% server operations (`server:read`). Denies are expected and
    /// counted, not wrong.
    SeedMix,
}

/// The seed mix's populations: users and tools asked about again and again (zipf, s = 1),
/// critical tools, servers.
const MIX_USERS: f64 = 1_000.0;
const MIX_TOOLS: f64 = 100.0;
const MIX_CRITICAL_TOOLS: f64 = 20.0;
const MIX_SERVERS: f64 = 50.0;

/// Inputs the hit scenario cycles through.
const HIT_POOL: usize = 64;
/// The most request bytes a closed-loop connection keeps in flight: a blocking writer and
/// a blocking reader on each side must never both wait on full socket buffers.
const MAX_BYTES_IN_FLIGHT: usize = 1 << 20;

/// The request id placeholder in a pre-encoded frame, rewritten on every send.
const REQUEST_ID: &[u8] = b"req-0000000000000000";

/// SARK's typical question: a developer invoking a medium-sensitivity tool of their team,
/// with a request id that differs on every request (the cache key leaves it out).
pub fn sample(user: String) -> Eval {
    sample_with(user, 0)
}

fn sample_with(user: String, request: u64) -> Eval {
    Eval {
        context_json: Some(format!(
            r#"{{"audit_enabled": true, "vpn": true, "geo_country": "US", "request_id": "req-{request:016x}", "session_id": "sess-1"}}"#
        )),
        ..Eval::example(user)
    }
}

/// Where HTTP EVALs go unless told: what SARK's OPA clients ask (a bool).
pub const DEFAULT_HTTP_PATH: &str = "/v1/data/mcp/allow";

/// An HTTP request asking for SARK's decision on `e`: the input document the server
/// builds from the binary protocol's typed fields, posted to the OPA data API at `path`.
fn http_eval((path, auth): (&str, &str), e: Eval) -> Vec<u8> {
    let input = shard::convert::input_from_eval(e);
    let doc = input.to_value().ok().and_then(|v| pdp::decision::value_to_json(&v)).unwrap_or_default();
    let body = serde_json::json!({ "input": doc }).to_string();
    format!(
        "POST {path} HTTP/1.1\r\nHost: sark-pdp\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const HTTP_PING: &str = "GET /health HTTP/1.1\r\nHost: sark-pdp\r\n\r\n";

/// Where a run's requests go, and how.
#[derive(Debug, Clone)]
pub struct Target {
    pub transport: Transport,
    pub http_path: String,
    /// The caller token: HELLO's, or HTTP's bearer token.
    pub token: Option<String>,
}

/// Encodes the next request of a scenario.
pub struct Generator {
    scenario: Scenario,
    transport: Transport,
    http_path: String,
    /// HTTP's Authorization header line (empty without a token), and HELLO's token.
    auth: String,
    token: Option<String>,
    batch: usize,
    /// Pre-encoded frames (ping, hit) whose request id is patched per send, and where
    /// in each the context's request ids are (rewritten per send too).
    frames: Vec<(Vec<u8>, Vec<usize>)>,
    next: usize,
    /// Unique-user prefix for misses: run nonce and connection.
    prefix: String,
    counter: u64,
    /// The seed mix's draws (seeded by the run nonce and connection: reproducible).
    rng: rand::rngs::SmallRng,
    zipf: [rand_distr::Zipf<f64>; 4],
    /// Key-affine: (shard, shards): ask only what that shard owns ([`wire::route`]).
    owned: Option<(u16, u16)>,
}

impl Generator {
    /// A generator whose HTTP EVALs go to [`DEFAULT_HTTP_PATH`] (the tests').
    #[cfg(test)]
    pub fn new(scenario: Scenario, transport: Transport, batch: usize, connection: usize, nonce: u64) -> Generator {
        Generator::for_target(scenario, &Target { transport, http_path: DEFAULT_HTTP_PATH.into(), token: None }, batch, connection, nonce)
    }

    /// As `new`, for a target: its transport, where HTTP EVALs go (a data API path whose
    /// answer is SARK's decision, or its `allow`) and the caller token.
    pub fn for_target(scenario: Scenario, target: &Target, batch: usize, connection: usize, nonce: u64) -> Generator {
        let (transport, path) = (target.transport, target.http_path.as_str());
        let auth = target.token.as_ref().map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let mut g = Generator {
            scenario,
            transport,
            http_path: path.to_string(),
            auth: auth.clone(),
            token: target.token.clone(),
            batch,
            frames: Vec::new(),
            next: 0,
            prefix: format!("miss-{nonce:x}-{connection}-"),
            counter: 0,
            rng: rand::SeedableRng::seed_from_u64(nonce ^ (connection as u64).rotate_left(32)),
            zipf: [MIX_USERS, MIX_TOOLS, MIX_CRITICAL_TOOLS, MIX_SERVERS].map(|n| rand_distr::Zipf::new(n, 1.0).unwrap_or_else(|e| unreachable!("{e}"))),
            owned: None,
        };
        g.build_frames();
        g
    }

    /// Key-affine: this connection goes to `shard`'s own port, so it asks only what that
    /// shard owns — the scenario's draws that another shard owns are drawn again; with a
    /// connection per shard the whole mix is asked, each question of the right shard.
    pub fn only(mut self, shard: u16, shards: u16) -> Generator {
        self.owned = Some((shard, shards));
        self.build_frames();
        self
    }

    fn owns(&self, e: &Eval) -> bool {
        self.owned.is_none_or(|(shard, shards)| wire::route::owner_of(e, shards) == shard)
    }

    /// The pre-encoded frames of the ping and hit scenarios.
    fn build_frames(&mut self) {
        let (transport, path, auth, batch) = (self.transport, self.http_path.clone(), self.auth.clone(), self.batch);
        let path = path.as_str();
        let encode = |req: Request| {
            let b = match (transport, req) {
                (Transport::Http, Request::Eval(e)) => http_eval((path, &auth), *e),
                (Transport::Http, _) => HTTP_PING.as_bytes().to_vec(),
                (Transport::Binary, req) => {
                    let mut b = Vec::new();
                    wire::encode_request(&mut b, 0, &req);
                    b
                }
            };
            let at = b.windows(REQUEST_ID.len()).enumerate().filter(|(_, w)| *w == REQUEST_ID).map(|(i, _)| i + 4).collect();
            (b, at)
        };
        self.frames.clear();
        match self.scenario {
            Scenario::Ping => self.frames.push(encode(Request::Ping(Vec::new()))),
            Scenario::Hit => {
                // The pool's users: hit-0, hit-1, … (those this shard owns, when affine).
                let users: Vec<String> = (0..).map(|k| format!("hit-{k}")).filter(|u| self.owns(&sample(u.clone()))).take(HIT_POOL).collect();
                for i in 0..HIT_POOL {
                    let user = |j: usize| sample(users.get((i + j) % HIT_POOL).cloned().unwrap_or_default());
                    let frame = encode(if batch == 1 { Request::Eval(Box::new(user(0))) } else { Request::EvalBatch((0..batch).map(user).collect()) });
                    self.frames.push(frame);
                }
            }
            Scenario::Miss | Scenario::SeedMix => {}
        }
    }

    /// What every answer must be: a whole batch, an allow unless the seed mix asks (it
    /// asks what SARK's rules deny too), a pong for a ping.
    pub fn expect(&self) -> Expect {
        Expect { batch: self.items(), allow: self.scenario != Scenario::SeedMix, ping: self.scenario == Scenario::Ping }
    }

    /// One question of the seed mix.
    fn seed_mix_eval(&mut self) -> Eval {
        use rand::Rng;
        use rand_distr::Distribution;
        let draw = |rng: &mut rand::rngs::SmallRng, z: &rand_distr::Zipf<f64>| z.sample(rng) as u64;
        self.counter += 1;
        let class = self.rng.random_range(0..100u32);
        let user = match class {
            50..80 => format!("{}{}", self.prefix, self.counter),
            _ => format!("user-{}", draw(&mut self.rng, &self.zipf[0])),
        };
        let mut e = sample_with(user, self.counter);
        match class {
            0..80 => {
                if let Some(t) = e.tool.as_mut() {
                    t.name = format!("tool-{}", draw(&mut self.rng, &self.zipf[1]));
                }
            }
            80..95 => {
                e.tool = Some(wire::message::Tool {
                    name: format!("payments-{}", draw(&mut self.rng, &self.zipf[2])),
                    sensitivity_level: Some("critical".into()),
                    teams: vec!["payments".into()],
                    ..wire::message::Tool::default()
                });
            }
            _ => {
                e.action = "server:read".into();
                e.tool = None;
                e.server = Some(wire::message::Server {
                    id: format!("srv-{}", draw(&mut self.rng, &self.zipf[3])),
                    teams: vec!["payments".into()],
                    ..wire::message::Server::default()
                });
            }
        }
        e
    }

    /// Decisions (or pongs) one frame asks for.
    pub fn items(&self) -> usize {
        if self.scenario == Scenario::Ping { 1 } else { self.batch }
    }

    /// The next miss or seed-mix question.
    fn next_user(&mut self) -> Eval {
        loop {
            let e = if self.scenario == Scenario::SeedMix {
                self.seed_mix_eval()
            } else {
                self.counter += 1;
                sample_with(format!("{}{}", self.prefix, self.counter), self.counter)
            };
            if self.owns(&e) {
                return e;
            }
        }
    }

    fn encode(&mut self, out: &mut Vec<u8>, id: u64) {
        if matches!(self.scenario, Scenario::Miss | Scenario::SeedMix) {
            if self.transport == Transport::Http {
                let e = self.next_user();
                out.extend_from_slice(&http_eval((&self.http_path, &self.auth), e));
                return;
            }
            let req = if self.batch == 1 {
                Request::Eval(Box::new(self.next_user()))
            } else {
                Request::EvalBatch((0..self.batch).map(|_| self.next_user()).collect())
            };
            wire::encode_request(out, id, &req);
            return;
        }
        let Some((frame, ids)) = self.frames.get(self.next % self.frames.len()) else { return };
        self.next += 1;
        let at = out.len();
        out.extend_from_slice(frame);
        if self.transport == Transport::Binary
            && let Some(slot) = out.get_mut(at + 8..at + 16)
        {
            slot.copy_from_slice(&id.to_le_bytes());
        }
        for &i in ids {
            self.counter += 1;
            if let Some(slot) = out.get_mut(at + i..at + i + 16) {
                for (k, b) in slot.iter_mut().enumerate() {
                    let d = ((self.counter >> (60 - 4 * k)) & 0xf) as u8;
                    *b = if d < 10 { b'0' + d } else { b'a' + d - 10 };
                }
            }
        }
    }
}

/// What a scenario's answers must be.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    batch: usize,
    allow: bool,
    ping: bool,
}

/// What one connection saw in the measured window.
#[derive(Debug)]
pub struct Tally {
    /// Decisions (or pongs) answered.
    pub items: u64,
    pub frames: u64,
    /// EVAL answers that came from the cache, and that were denies.
    pub hits: u64,
    pub denies: u64,
    /// Answers that were not what the scenario expects (an ERROR, a deny, a short batch).
    pub wrong: u64,
    pub first_wrong: Option<String>,
    /// Times the server closed a connection at its limit and the loop opened a new one.
    pub reconnects: u64,
    /// Per-frame latency, ns.
    pub latency: Histogram<u64>,
}

impl Tally {
    /// # Errors
    /// Never with these bounds; hdrhistogram checks them.
    pub fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            items: 0,
            frames: 0,
            hits: 0,
            denies: 0,
            wrong: 0,
            first_wrong: None,
            reconnects: 0,
            latency: Histogram::new_with_bounds(1, 120_000_000_000, 3)?,
        })
    }

    pub fn merge(&mut self, o: Tally) {
        self.items += o.items;
        self.frames += o.frames;
        self.hits += o.hits;
        self.denies += o.denies;
        self.wrong += o.wrong;
        self.reconnects += o.reconnects;
        if self.first_wrong.is_none() {
            self.first_wrong = o.first_wrong;
        }
        let _ = self.latency.add(o.latency);
    }

    /// Counts one answer; returns the decisions (or pongs) it carried.
    fn count(&mut self, answer: &Answer, expect: Expect, latency_ns: u64) -> u64 {
        let Expect { batch, allow: allow_expected, ping } = expect;
        let mut wrong = |what: String| {
            self.wrong += 1;
            if self.first_wrong.is_none() {
                self.first_wrong = Some(what);
            }
        };
        let items = match answer {
            Answer::Binary(Reply::Pong(_)) => 1,
            Answer::Http { status: 200, allow: None, .. } if ping => 1,
            Answer::Http { status: 200, allow: Some(allow), .. } => {
                if !allow && allow_expected {
                    wrong("deny over HTTP".into());
                }
                self.denies += u64::from(!allow);
                1
            }
            Answer::Binary(Reply::Decision(d)) => {
                if !d.allow && allow_expected {
                    wrong(format!("deny: {d:?}"));
                }
                self.denies += u64::from(!d.allow);
                self.hits += u64::from(d.cache_hit);
                1
            }
            Answer::Binary(Reply::DecisionBatch(ds)) => {
                if ds.len() != batch {
                    wrong(format!("a batch of {} for {batch}", ds.len()));
                }
                for d in ds {
                    if !d.allow && allow_expected {
                        wrong(format!("deny: {d:?}"));
                    }
                    self.denies += u64::from(!d.allow);
                    self.hits += u64::from(d.cache_hit);
                }
                ds.len()
            }
            Answer::Http { status, body, .. } => {
                wrong(format!("HTTP {status}: {body}"));
                0
            }
            other => {
                wrong(format!("{other:?}"));
                0
            }
        };
        self.items += items as u64;
        self.frames += 1;
        let _ = self.latency.record(latency_ns.max(1));
        items as u64
    }
}

/// One answer off the wire.
#[derive(Debug)]
pub enum Answer {
    Binary(Reply),
    /// An HTTP response: its status, the decision's `allow` when the body has one, and the
    /// body when the status is not 200 (for the report).
    /// `close`: the server said `Connection: close` (its requests-per-connection limit).
    Http { status: u16, allow: Option<bool>, body: String, close: bool },
}

impl Answer {
    fn closes(&self) -> bool {
        matches!(self, Answer::Http { close: true, .. })
    }
}

/// Connect, and over the binary protocol say HELLO (with the token, when there is one).
pub fn connect(addr: SocketAddr, (transport, token): (Transport, Option<&str>)) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    if transport == Transport::Http {
        return Ok(s);
    }
    let mut out = Vec::new();
    let hello = Hello {
        version: wire::VERSION,
        max_payload: wire::DEFAULT_MAX_PAYLOAD,
        token: token.map(str::to_string),
    };
    wire::encode_request(&mut out, 0, &Request::Hello(hello));
    s.write_all(&out)?;
    let mut buf = Vec::new();
    let mut answers = Answers::new(Transport::Binary);
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    loop {
        if !read_some(&mut s, &mut buf)? {
            bail!("no HELLO_OK within 10 s");
        }
        if let Some((_, answer)) = answers.next(&mut buf)? {
            let Answer::Binary(Reply::HelloOk(_)) = answer else { bail!("HELLO answered with {answer:?}") };
            s.set_read_timeout(None)?;
            return Ok(s);
        }
    }
}

/// Append what the socket has to `buf`; false when a read timeout passed with nothing.
fn read_some(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<bool> {
    let len = buf.len();
    if buf.capacity() - len < 64 * 1024 {
        buf.reserve(256 * 1024);
    }
    buf.resize(buf.capacity(), 0);
    let n = s.read(buf.get_mut(len..).unwrap_or(&mut []));
    buf.truncate(len + *n.as_ref().unwrap_or(&0));
    match n {
        Ok(0) => bail!("the server closed the connection"),
        Ok(_) => Ok(true),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The largest HTTP response body accepted (a decision is well under 4 KiB).
const MAX_HTTP_BODY: usize = 1 << 20;

/// Pulls whole answers off the front of a read buffer, with the request id each answers
/// (HTTP answers in order: the n-th response is request n's).
pub struct Answers {
    transport: Transport,
    consumed: usize,
    responses: u64,
}

impl Answers {
    pub fn new(transport: Transport) -> Answers {
        Answers::from_id(transport, 1)
    }

    /// Over HTTP, the first answer is request `id`'s.
    fn from_id(transport: Transport, id: u64) -> Answers {
        Answers { transport, consumed: 0, responses: id - 1 }
    }

    pub fn next(&mut self, buf: &mut Vec<u8>) -> anyhow::Result<Option<(u64, Answer)>> {
        let rest = buf.get(self.consumed..).unwrap_or(&[]);
        let found = match self.transport {
            Transport::Binary => match wire::check(rest, wire::DEFAULT_MAX_PAYLOAD)? {
                Check::Incomplete => None,
                Check::Complete { header, total } => {
                    let reply = wire::decode_reply(&header, rest.get(HEADER_LEN..total).unwrap_or(&[]))?;
                    Some((total, header.request_id, Answer::Binary(reply)))
                }
            },
            Transport::Http => http_response(rest)?.map(|(total, answer)| {
                self.responses += 1;
                (total, self.responses, answer)
            }),
        };
        let Some((total, id, answer)) = found else {
            buf.drain(..self.consumed);
            self.consumed = 0;
            return Ok(None);
        };
        self.consumed += total;
        Ok(Some((id, answer)))
    }
}

/// One whole HTTP response at the front of `rest`: its length and what it says.
fn http_response(rest: &[u8]) -> anyhow::Result<Option<(usize, Answer)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = resp.parse(rest).context("a malformed HTTP response")? else { return Ok(None) };
    let status = resp.code.unwrap_or(0);
    let close = resp.headers.iter().any(|h| h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close"));
    let length = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
        .context("an HTTP response without a Content-Length")?;
    anyhow::ensure!(length <= MAX_HTTP_BODY, "an HTTP response body of {length} B");
    let Some(body) = rest.get(head..head + length) else { return Ok(None) };
    // The decision's JSON has one "allow" key; `mcp/allow`'s result is the bool itself
    // (compact, as serde_json writes it).
    let after = |key: &[u8]| body.windows(key.len()).position(|w| w == key).and_then(|at| body.get(at + key.len()..));
    let boolean = |v: &[u8]| if v.starts_with(b"true") { Some(true) } else if v.starts_with(b"false") { Some(false) } else { None };
    let allow = after(b"\"allow\":").and_then(boolean).or_else(|| after(b"\"result\":").and_then(boolean));
    let body = if status == 200 && allow.is_some() { String::new() } else { String::from_utf8_lossy(body).into_owned() };
    Ok(Some((head + length, Answer::Http { status, allow, body, close })))
}

/// What every connection has seen so far, warm-up included: what the progress bar, the
/// throughput timeline and a soak's samples read while a run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    /// Decisions (or pongs) answered.
    pub answered: AtomicU64,
    /// Answers that were not what the scenario expects.
    pub wrong: AtomicU64,
    /// Decisions answered from the cache (binary protocol).
    pub hits: AtomicU64,
}

pub type Meter = Arc<Progress>;

/// One closed-loop connection: `depth` requests in flight, each answered one replaced by a
/// new one, until `end` (or, given a quota, once that many were sent after `measure_from`);
/// only answers to requests sent after `measure_from` count.
pub fn closed(addr: SocketAddr, mut g: Generator, depth: usize, (measure_from, end): (Instant, Instant), quota: Option<u64>, meter: Meter) -> anyhow::Result<Tally> {
    let mut s = connect(addr, (g.transport, g.token.as_deref()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut probe = Vec::new();
    g.encode(&mut probe, 0);
    if probe.len() * depth > MAX_BYTES_IN_FLIGHT {
        bail!("depth {depth} × {} B per request is over {MAX_BYTES_IN_FLIGHT} B in flight: lower the depth or the batch", probe.len());
    }
    let slots = (depth * 2).next_power_of_two();
    let mut sent_at = vec![measure_from; slots];
    let mask = slots as u64 - 1;
    let (mut out, mut buf) = (Vec::with_capacity(256 * 1024), Vec::with_capacity(256 * 1024));
    let mut answers = Answers::new(g.transport);
    let mut tally = Tally::new()?;
    let (mut next_id, mut in_flight, mut measured) = (1u64, 0usize, 0u64);
    let expect = g.expect();
    let more = |measured: u64| quota.is_none_or(|q| measured < q);
    loop {
        let now = Instant::now();
        if now < end && more(measured) {
            while in_flight < depth && more(measured) {
                measured += u64::from(now >= measure_from);
                g.encode(&mut out, next_id);
                if let Some(slot) = sent_at.get_mut((next_id & mask) as usize) {
                    *slot = now;
                }
                next_id += 1;
                in_flight += 1;
            }
            s.write_all(&out)?;
            out.clear();
        }
        if in_flight == 0 {
            return Ok(tally);
        }
        if !read_some(&mut s, &mut buf)? {
            bail!("no answer for 10 s with {in_flight} requests in flight");
        }
        let now = Instant::now();
        let (mut items, mut closing, wrong, hits) = (0, false, tally.wrong, tally.hits);
        while let Some((id, answer)) = answers.next(&mut buf)? {
            in_flight -= 1;
            let sent = sent_at.get((id & mask) as usize).copied().unwrap_or(now);
            let latency = u64::try_from((now - sent).as_nanos()).unwrap_or(u64::MAX);
            if sent >= measure_from && sent < end {
                items += tally.count(&answer, expect, latency);
            } else {
                items += expect.batch as u64;
            }
            if answer.closes() {
                closing = true;
                break;
            }
        }
        meter.answered.fetch_add(items, Ordering::Relaxed);
        meter.wrong.fetch_add(tally.wrong - wrong, Ordering::Relaxed);
        meter.hits.fetch_add(tally.hits - hits, Ordering::Relaxed);
        if closing {
            // The server answered its last request on this connection (HTTP's requests-per-
            // connection limit); what was pipelined after it goes unanswered and uncounted.
            s = connect(addr, (g.transport, g.token.as_deref()))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            buf.clear();
            answers = Answers::from_id(g.transport, next_id);
            (in_flight, tally.reconnects) = (0, tally.reconnects + 1);
        }
    }
}

/// One open-loop connection at `rate` requests/s for `duration`: request `i` is due at
/// `start + i / rate` and sent then whether or not earlier ones were answered; its latency
/// runs from when it was due (so a stalled server cannot hide its queue: coordinated
/// omission corrected). Requests due in the first `warmup` are not counted.
pub fn open(addr: SocketAddr, mut g: Generator, rate: f64, (warmup, duration): (Duration, Duration), meter: Meter) -> anyhow::Result<Tally> {
    let s = connect(addr, (g.transport, g.token.as_deref()))?;
    let mut rx = s.try_clone()?;
    rx.set_read_timeout(Some(Duration::from_millis(50)))?;
    let interval_ns = 1e9 / rate;
    let total = warmup + duration;
    let start = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let expect = g.expect();
    let transport = g.transport;
    let receiver = {
        let (sent, answered, done) = (sent.clone(), answered.clone(), done.clone());
        std::thread::spawn(move || -> anyhow::Result<Tally> {
            let mut tally = Tally::new()?;
            let mut buf = Vec::with_capacity(256 * 1024);
            let mut answers = Answers::new(transport);
            let mut received = 0u64;
            let warm_ns = warmup.as_nanos() as f64;
            let mut done_at = None;
            loop {
                if done.load(Ordering::Acquire) {
                    let missing = sent.load(Ordering::Acquire).saturating_sub(received);
                    if missing == 0 {
                        return Ok(tally);
                    }
                    if done_at.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(10) {
                        bail!("{missing} answers still missing 10 s after the last request");
                    }
                }
                if !read_some(&mut rx, &mut buf).context("waiting for answers")? {
                    continue;
                }
                let now_ns = start.elapsed().as_nanos() as f64;
                let (mut items, wrong, hits) = (0, tally.wrong, tally.hits);
                while let Some((id, answer)) = answers.next(&mut buf)? {
                    if answer.closes() {
                        bail!("the server closed the connection after {id} requests (its [http] max_requests_per_connection): the open loop keeps one connection, so raise that limit or shorten the run");
                    }
                    received += 1;
                    answered.store(received, Ordering::Release);
                    let due_ns = (id - 1) as f64 * interval_ns;
                    if due_ns >= warm_ns {
                        items += tally.count(&answer, expect, (now_ns - due_ns).max(1.0) as u64);
                    } else {
                        items += expect.batch as u64;
                    }
                }
                meter.answered.fetch_add(items, Ordering::Relaxed);
                meter.wrong.fetch_add(tally.wrong - wrong, Ordering::Relaxed);
                meter.hits.fetch_add(tally.hits - hits, Ordering::Relaxed);
            }
        })
    };
    let mut tx = s;
    let mut out = Vec::with_capacity(256 * 1024);
    let mut n = 0u64;
    // More unanswered than this (5 s of load) and the server cannot sustain the rate: say
    // so rather than queue without bound.
    let max_behind = ((rate * 5.0) as u64).max(1000);
    let result = (|| -> anyhow::Result<()> {
        loop {
            let elapsed = start.elapsed();
            if elapsed >= total {
                return Ok(());
            }
            let behind = n.saturating_sub(answered.load(Ordering::Acquire));
            if behind > max_behind {
                bail!("{behind} requests unanswered {:.0} s into the run, over 5 s of the offered {rate:.0}/s on this connection: the server cannot sustain this rate", elapsed.as_secs_f64());
            }
            let due = (elapsed.as_nanos() as f64 / interval_ns) as u64 + 1;
            while n < due && n - answered.load(Ordering::Relaxed) <= max_behind {
                n += 1;
                g.encode(&mut out, n);
            }
            if !out.is_empty() {
                tx.write_all(&out)?;
                out.clear();
                sent.store(n, Ordering::Release);
            }
            // Sleep when the next request is far off; otherwise give the core away briefly.
            let next_ns = n as f64 * interval_ns - start.elapsed().as_nanos() as f64;
            if next_ns > 100_000.0 {
                std::thread::sleep(Duration::from_nanos((next_ns - 60_000.0) as u64));
            } else {
                std::thread::yield_now();
            }
        }
    })();
    done.store(true, Ordering::Release);
    result?;
    receiver.join().map_err(|_| anyhow::anyhow!("receiver panicked"))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn an_affine_generator_asks_only_what_its_shard_owns() {
        let owner = |e: &Eval| wire::route::owner_of(e, 3);
        for shard in 0..3u16 {
            let mut g = Generator::new(Scenario::SeedMix, Transport::Binary, 1, 0, 7).only(shard, 3);
            assert!((0..2000).all(|_| owner(&g.next_user()) == shard));
            let g = Generator::new(Scenario::Hit, Transport::Binary, 4, 0, 7).only(shard, 3);
            for (frame, _) in &g.frames {
                let header = wire::Header::peek(frame).unwrap();
                let Request::EvalBatch(items) = wire::decode_request(&header, &frame[HEADER_LEN..]).unwrap() else { panic!() };
                assert!(items.iter().all(|e| owner(e) == shard));
            }
            assert_eq!(g.frames.len(), HIT_POOL);
        }
    }

    #[test]
    fn the_seed_mix_asks_in_its_documented_proportions() {
        let mut g = Generator::new(Scenario::SeedMix, Transport::Binary, 1, 0, 42);
        let (mut repeated, mut unique, mut critical, mut server) = (0, 0, 0, 0);
        let mut seen = std::collections::HashSet::new();
        let mut repeats = 0;
        for _ in 0..20_000 {
            let e = g.seed_mix_eval();
            match (&e.tool, e.action.as_str()) {
                (None, "server:read") => server += 1,
                (Some(t), _) if t.sensitivity_level.as_deref() == Some("critical") => critical += 1,
                (Some(_), _) if e.user_id.starts_with("miss-") => unique += 1,
                (Some(t), _) => {
                    repeated += 1;
                    repeats += usize::from(!seen.insert((e.user_id.clone(), t.name.clone())));
                }
                other => panic!("{other:?}"),
            }
        }
        // 50 / 30 / 15 / 5 %, within sampling noise.
        for (got, want) in [(repeated, 10_000), (unique, 6_000), (critical, 3_000), (server, 1_000)] {
            assert!((got as f64 - want as f64).abs() < want as f64 * 0.08, "{got} for {want}: {repeated} {unique} {critical} {server}");
        }
        // zipf users × tools: in only 10,000 draws, ~half the repeated class was asked
        // before (uniform draws over the 100,000 pairs would repeat ~5%).
        assert!(repeats > repeated * 2 / 5, "{repeats} repeats of {repeated}");
        // The same nonce and connection draw the same questions; only the mix accepts denies.
        let mut again = Generator::new(Scenario::SeedMix, Transport::Binary, 1, 0, 42);
        assert_eq!(again.seed_mix_eval(), Generator::new(Scenario::SeedMix, Transport::Binary, 1, 0, 42).seed_mix_eval(), "reproducible per nonce");
        assert!(!again.expect().allow && Generator::new(Scenario::Hit, Transport::Binary, 1, 0, 1).expect().allow);
    }

    /// Over HTTP every scenario sends what the server's own parser accepts, carrying the
    /// input document the binary protocol's typed fields would give the evaluator.
    #[test]
    fn http_requests_are_what_the_server_parses() {
        let cfg = shard::http::HttpConfig::new("127.0.0.1:0".parse().unwrap());
        for scenario in [Scenario::Ping, Scenario::Hit, Scenario::Miss, Scenario::SeedMix] {
            let mut g = Generator::new(scenario, Transport::Http, 1, 0, 7);
            let mut out = Vec::new();
            g.encode(&mut out, 1);
            g.encode(&mut out, 2);
            let (first, body) = shard::http::parse_request(&cfg, &mut out.clone()).unwrap().unwrap();
            assert!(first < out.len(), "{scenario:?}: two pipelined requests");
            let rest = &mut out[first..].to_vec();
            let (second, _) = shard::http::parse_request(&cfg, rest).unwrap().unwrap();
            assert_eq!(second, rest.len());
            if scenario == Scenario::Ping {
                assert!(out.starts_with(b"GET /health HTTP/1.1\r\n"));
                continue;
            }
            assert!(out.starts_with(b"POST /v1/data/mcp/allow HTTP/1.1\r\n"), "{scenario:?}");
            if scenario == Scenario::Miss {
                let binary = shard::convert::input_from_eval(sample_with(format!("{}1", g.prefix), 1)).to_value().unwrap();
                assert_eq!(body["input"], pdp::decision::value_to_json(&binary).unwrap());
            }
        }
        // The hit pool's request ids are rewritten per send, as over the binary protocol.
        let mut g = Generator::new(Scenario::Hit, Transport::Http, 1, 0, 7);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        g.encode(&mut a, 1);
        g.next = 0;
        g.encode(&mut b, 2);
        assert_eq!(a.len(), b.len());
        assert_ne!(a, b);
    }

    #[test]
    fn http_responses_are_split_and_read() {
        let ok = |allow: &str| {
            let body = format!(r#"{{"decision_id":"ab","result":{{"allow":{allow},"reasons":[]}}}}"#);
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
        };
        let err = r#"{"code":"invalid_parameter","message":"no"}"#;
        let bare = r#"{"decision_id":"ab","result":true}"#;
        let bare = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{bare}", bare.len());
        let text = format!("{}{}HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{err}{bare}", ok("true"), ok("false"), err.len());
        let mut buf = text.clone().into_bytes();
        let mut answers = Answers::new(Transport::Http);
        let mut got = Vec::new();
        while let Some((id, a)) = answers.next(&mut buf).unwrap() {
            got.push((id, format!("{a:?}")));
        }
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [1, 2, 3, 4], "answers in request order");
        assert!(got[3].1.contains("allow: Some(true)"), "mcp/allow's bare result: {got:?}");
        assert!(got[0].1.contains("allow: Some(true)") && got[1].1.contains("allow: Some(false)"), "{got:?}");
        assert!(got[2].1.contains("status: 400") && got[2].1.contains("invalid_parameter"), "{got:?}");
        // Counted as the scenario expects: an allow, a deny where allows are expected, an error.
        let mut t = Tally::new().unwrap();
        let expect = Generator::new(Scenario::Hit, Transport::Http, 1, 0, 1).expect();
        let mut buf = text.into_bytes();
        let mut answers = Answers::new(Transport::Http);
        let mut items = 0;
        while let Some((_, a)) = answers.next(&mut buf).unwrap() {
            items += t.count(&a, expect, 10);
        }
        assert_eq!((items, t.denies, t.wrong, t.frames), (3, 1, 2, 4));
        // A response cut short waits for the rest.
        let whole = ok("true").into_bytes();
        let mut part = whole[..whole.len() - 3].to_vec();
        let mut answers = Answers::new(Transport::Http);
        assert!(answers.next(&mut part).unwrap().is_none());
        part.extend_from_slice(&whole[whole.len() - 3..]);
        assert!(answers.next(&mut part).unwrap().is_some());
        // No Content-Length, or a huge one: refused, not guessed.
        assert!(http_response(b"HTTP/1.1 200 OK\r\n\r\n{}").is_err());
        assert!(http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n").is_err());
    }
}
