//! Load over the binary protocol: what each scenario sends, and the closed and open loops
//! that send it. One blocking socket per connection; frames are written in groups and
//! replies parsed as they arrive, checked (a PONG for a PING, an allow for every EVAL of
//! the hit and miss scenarios, a decision for every EVAL of the seed mix, a whole batch
//! for a batch), and timed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use wire::message::{Eval, Hello, HelloOk};
use wire::{Check, HEADER_LEN, Reply, Request};

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

/// Encodes the next request of a scenario.
pub struct Generator {
    scenario: Scenario,
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
}

impl Generator {
    pub fn new(scenario: Scenario, batch: usize, connection: usize, nonce: u64) -> Generator {
        let mut g = Generator {
            scenario,
            batch,
            frames: Vec::new(),
            next: 0,
            prefix: format!("miss-{nonce:x}-{connection}-"),
            counter: 0,
            rng: rand::SeedableRng::seed_from_u64(nonce ^ (connection as u64).rotate_left(32)),
            zipf: [MIX_USERS, MIX_TOOLS, MIX_CRITICAL_TOOLS, MIX_SERVERS].map(|n| rand_distr::Zipf::new(n, 1.0).unwrap_or_else(|e| unreachable!("{e}"))),
        };
        let encode = |req: &Request| {
            let mut b = Vec::new();
            wire::encode_request(&mut b, 0, req);
            let at = b.windows(REQUEST_ID.len()).enumerate().filter(|(_, w)| *w == REQUEST_ID).map(|(i, _)| i + 4).collect();
            (b, at)
        };
        match scenario {
            Scenario::Ping => g.frames.push(encode(&Request::Ping(Vec::new()))),
            Scenario::Hit => {
                for i in 0..HIT_POOL {
                    let user = |j: usize| sample(format!("hit-{}", (i + j) % HIT_POOL));
                    g.frames.push(encode(&if batch == 1 {
                        Request::Eval(Box::new(user(0)))
                    } else {
                        Request::EvalBatch((0..batch).map(user).collect())
                    }));
                }
            }
            Scenario::Miss | Scenario::SeedMix => {}
        }
        g
    }

    /// Whether every EVAL must be answered with an allow (the seed mix asks what SARK's
    /// rules deny too).
    pub fn allow_expected(&self) -> bool {
        self.scenario != Scenario::SeedMix
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

    fn encode(&mut self, out: &mut Vec<u8>, id: u64) {
        if matches!(self.scenario, Scenario::Miss | Scenario::SeedMix) {
            let batch = self.batch;
            let mut user = || {
                if self.scenario == Scenario::SeedMix {
                    return self.seed_mix_eval();
                }
                self.counter += 1;
                sample_with(format!("{}{}", self.prefix, self.counter), self.counter)
            };
            let req = if batch == 1 {
                Request::Eval(Box::new(user()))
            } else {
                Request::EvalBatch((0..batch).map(|_| user()).collect())
            };
            wire::encode_request(out, id, &req);
            return;
        }
        let Some((frame, ids)) = self.frames.get(self.next % self.frames.len()) else { return };
        self.next += 1;
        let at = out.len();
        out.extend_from_slice(frame);
        if let Some(slot) = out.get_mut(at + 8..at + 16) {
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
            latency: Histogram::new_with_bounds(1, 120_000_000_000, 3)?,
        })
    }

    pub fn merge(&mut self, o: Tally) {
        self.items += o.items;
        self.frames += o.frames;
        self.hits += o.hits;
        self.denies += o.denies;
        self.wrong += o.wrong;
        if self.first_wrong.is_none() {
            self.first_wrong = o.first_wrong;
        }
        let _ = self.latency.add(o.latency);
    }

    fn count(&mut self, reply: &Reply, (batch, allow_expected): (usize, bool), latency_ns: u64) {
        let mut wrong = |what: String| {
            self.wrong += 1;
            if self.first_wrong.is_none() {
                self.first_wrong = Some(what);
            }
        };
        let items = match reply {
            Reply::Pong(_) => 1,
            Reply::Decision(d) => {
                if !d.allow && allow_expected {
                    wrong(format!("deny: {d:?}"));
                }
                self.denies += u64::from(!d.allow);
                self.hits += u64::from(d.cache_hit);
                1
            }
            Reply::DecisionBatch(ds) => {
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
            other => {
                wrong(format!("{other:?}"));
                0
            }
        };
        self.items += items as u64;
        self.frames += 1;
        let _ = self.latency.record(latency_ns.max(1));
    }
}

/// Connect and say HELLO.
pub fn connect(addr: SocketAddr) -> anyhow::Result<(TcpStream, HelloOk)> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    let mut out = Vec::new();
    let hello = Hello {
        version: wire::VERSION,
        max_payload: wire::DEFAULT_MAX_PAYLOAD,
        token: None,
    };
    wire::encode_request(&mut out, 0, &Request::Hello(hello));
    s.write_all(&out)?;
    let mut buf = Vec::new();
    let mut replies = Replies::default();
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    loop {
        if !read_some(&mut s, &mut buf)? {
            bail!("no HELLO_OK within 10 s");
        }
        if let Some((_, reply)) = replies.next(&mut buf)? {
            let Reply::HelloOk(h) = reply else { bail!("HELLO answered with {reply:?}") };
            s.set_read_timeout(None)?;
            return Ok((s, h));
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

/// Pulls whole reply frames off the front of a read buffer.
#[derive(Default)]
struct Replies {
    consumed: usize,
}

impl Replies {
    fn next(&mut self, buf: &mut Vec<u8>) -> anyhow::Result<Option<(u64, Reply)>> {
        let rest = buf.get(self.consumed..).unwrap_or(&[]);
        match wire::check(rest, wire::DEFAULT_MAX_PAYLOAD)? {
            Check::Incomplete => {
                buf.drain(..self.consumed);
                self.consumed = 0;
                Ok(None)
            }
            Check::Complete { header, total } => {
                let reply = wire::decode_reply(&header, rest.get(HEADER_LEN..total).unwrap_or(&[]))?;
                self.consumed += total;
                Ok(Some((header.request_id, reply)))
            }
        }
    }
}

/// One closed-loop connection: `depth` frames in flight, each answered frame replaced by a
/// new one, until `end`; only answers to frames sent after `measure_from` count.
pub fn closed(addr: SocketAddr, mut g: Generator, depth: usize, measure_from: Instant, end: Instant) -> anyhow::Result<Tally> {
    let (mut s, _) = connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut probe = Vec::new();
    g.encode(&mut probe, 0);
    if probe.len() * depth > MAX_BYTES_IN_FLIGHT {
        bail!("depth {depth} × {} B per frame is over {MAX_BYTES_IN_FLIGHT} B in flight: lower the depth or the batch", probe.len());
    }
    let slots = (depth * 2).next_power_of_two();
    let mut sent_at = vec![measure_from; slots];
    let mask = slots as u64 - 1;
    let (mut out, mut buf) = (Vec::with_capacity(256 * 1024), Vec::with_capacity(256 * 1024));
    let mut replies = Replies::default();
    let mut tally = Tally::new()?;
    let (mut next_id, mut in_flight) = (1u64, 0usize);
    let batch = (g.items(), g.allow_expected());
    loop {
        let now = Instant::now();
        if now < end {
            while in_flight < depth {
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
            bail!("no reply for 10 s with {in_flight} frames in flight");
        }
        let now = Instant::now();
        while let Some((id, reply)) = replies.next(&mut buf)? {
            in_flight -= 1;
            let sent = sent_at.get((id & mask) as usize).copied().unwrap_or(now);
            if sent >= measure_from && sent < end {
                tally.count(&reply, batch, u64::try_from((now - sent).as_nanos()).unwrap_or(u64::MAX));
            }
        }
    }
}

/// One open-loop connection at `rate` frames/s for `duration`: frame `i` is due at
/// `start + i / rate` and sent then whether or not earlier ones were answered; its latency
/// runs from when it was due (so a stalled server cannot hide its queue: coordinated
/// omission corrected). Frames due in the first `warmup` are not counted.
pub fn open(addr: SocketAddr, mut g: Generator, rate: f64, warmup: Duration, duration: Duration) -> anyhow::Result<Tally> {
    let (s, _) = connect(addr)?;
    let mut rx = s.try_clone()?;
    rx.set_read_timeout(Some(Duration::from_millis(50)))?;
    let interval_ns = 1e9 / rate;
    let total = warmup + duration;
    let start = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let batch = (g.items(), g.allow_expected());
    let receiver = {
        let (sent, done) = (sent.clone(), done.clone());
        std::thread::spawn(move || -> anyhow::Result<Tally> {
            let mut tally = Tally::new()?;
            let mut buf = Vec::with_capacity(256 * 1024);
            let mut replies = Replies::default();
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
                        bail!("{missing} replies still missing 10 s after the last request");
                    }
                }
                if !read_some(&mut rx, &mut buf).context("waiting for replies")? {
                    continue;
                }
                let now_ns = start.elapsed().as_nanos() as f64;
                while let Some((id, reply)) = replies.next(&mut buf)? {
                    received += 1;
                    let due_ns = (id - 1) as f64 * interval_ns;
                    if due_ns >= warm_ns {
                        tally.count(&reply, batch, (now_ns - due_ns).max(1.0) as u64);
                    }
                }
            }
        })
    };
    let mut tx = s;
    let mut out = Vec::with_capacity(256 * 1024);
    let mut n = 0u64;
    let result = (|| -> anyhow::Result<()> {
        loop {
            let elapsed = start.elapsed();
            if elapsed >= total {
                return Ok(());
            }
            let due = (elapsed.as_nanos() as f64 / interval_ns) as u64 + 1;
            while n < due {
                n += 1;
                g.encode(&mut out, n);
            }
            if !out.is_empty() {
                tx.write_all(&out)?;
                out.clear();
                sent.store(n, Ordering::Release);
            }
            // Sleep when the next frame is far off; otherwise give the core away briefly.
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
    fn the_seed_mix_asks_in_its_documented_proportions() {
        let mut g = Generator::new(Scenario::SeedMix, 1, 0, 42);
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
        let mut again = Generator::new(Scenario::SeedMix, 1, 0, 42);
        assert_eq!(again.seed_mix_eval(), Generator::new(Scenario::SeedMix, 1, 0, 42).seed_mix_eval(), "reproducible per nonce");
        assert!(!again.allow_expected() && Generator::new(Scenario::Hit, 1, 0, 1).allow_expected());
    }
}
