//! One measured run: load threads started, a progress bar and a throughput timeline while
//! they go, CPU sampled over the measured window, the tallies merged into a [`Run`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::cpu;
use crate::load::{self, Generator, Meter, Scenario, Tally, Transport};

#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// How requests travel: the binary protocol, or HTTP to the OPA data API.
    #[arg(long, value_enum, default_value_t = Transport::Binary)]
    pub transport: Transport,
    /// The server's address (default 127.0.0.1:7474 for binary, 127.0.0.1:8181 for HTTP).
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    /// Over HTTP, the data API path EVALs are posted to (its answer: SARK's decision, or
    /// its allow).
    #[arg(long, default_value = load::DEFAULT_HTTP_PATH)]
    pub http_path: String,
    /// The server's caller token (HELLO's; HTTP's bearer token, /metrics included).
    #[arg(long, env = "SARK_PDP_CALLER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Connections, one load thread each (two in open loop).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Binary protocol: `shared` connects every connection to --addr (the kernel spreads
    /// them over the shards); `affine` connects connection i to shard i mod N's own port
    /// (HELLO_OK's) and has it ask only what that shard owns (wire/PROTOCOL.md).
    #[arg(long, value_enum, default_value_t = Route::Shared)]
    pub route: Route,
    /// Seconds measured (with --requests: the most).
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Requests measured instead, over all connections (the closed loop stops sending once
    /// they are sent; the open loop runs for requests ÷ rate seconds).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Times each measurement runs; the median is reported with the range (the matrix
    /// interleaves its configurations round by round).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Seconds of load before measuring (fills the cache in the hit scenario).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// The server's pid, to report the CPU its threads used.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Also write the results here as JSON (and plots beside it, as SVG).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Where each connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    Shared,
    Affine,
}

/// Connection `i`'s address and, when affine, (its shard, the shards).
type Placement = Box<dyn Fn(usize) -> (SocketAddr, Option<(u16, u16)>) + Send + Sync>;

impl Common {
    /// Where each connection goes ([`Route`]).
    fn placement(&self) -> anyhow::Result<Placement> {
        let addr = self.addr();
        if self.route == Route::Shared {
            return Ok(Box::new(move |_| (addr, None)));
        }
        anyhow::ensure!(self.transport == Transport::Binary, "--route affine is for the binary protocol");
        let c = wire::Client::connect(addr, self.token.as_deref()).map_err(|e| anyhow::anyhow!("HELLO to {addr}: {e}"))?;
        let (shards, ports) = (c.hello().shards, c.hello().shard_ports.clone());
        anyhow::ensure!(c.hello().route == wire::route::ROUTE_FNV1A64_FMIX && ports.len() == usize::from(shards), "{addr} announces no shard ports (its --shard-ports is off?)");
        Ok(Box::new(move |i| {
            let shard = (i % ports.len().max(1)) as u16;
            (SocketAddr::new(addr.ip(), ports.get(usize::from(shard)).copied().unwrap_or(addr.port())), Some((shard, shards)))
        }))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.unwrap_or_else(|| match self.transport {
            Transport::Binary => SocketAddr::from(([127, 0, 0, 1], 7474)),
            Transport::Http => SocketAddr::from(([127, 0, 0, 1], 8181)),
        })
    }

    pub fn target(&self) -> load::Target {
        load::Target { transport: self.transport, http_path: self.http_path.clone(), token: self.token.clone() }
    }

    /// The limits every run checks before it starts.
    pub fn check(&self, batch: usize) -> anyhow::Result<()> {
        anyhow::ensure!((1..=4096).contains(&batch), "need 1 ≤ batch ≤ 4096");
        anyhow::ensure!((1..=1024).contains(&self.connections), "need 1 ≤ connections ≤ 1024");
        anyhow::ensure!((1..=100).contains(&self.runs), "need 1 ≤ runs ≤ 100");
        anyhow::ensure!(self.requests.is_none_or(|n| n >= self.connections as u64), "--requests must be at least one per connection");
        anyhow::ensure!(self.duration > 0.0 && self.duration <= 86_400.0 && (0.0..=3600.0).contains(&self.warmup), "need 0 < duration ≤ 86400 s, 0 ≤ warm-up ≤ 3600 s");
        anyhow::ensure!(self.transport == Transport::Binary || batch == 1, "over HTTP the batch is 1 (the OPA data API has no batch form)");
        anyhow::ensure!(self.http_path.starts_with("/v1/data/") && self.http_path.len() < 1024 && self.http_path.bytes().all(|b| b.is_ascii_graphic()), "--http-path must be a /v1/data/… path");
        Ok(())
    }
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub scenario: Scenario,
    pub transport: Transport,
    pub mode: &'static str,
    pub connections: usize,
    /// Requests in flight per connection (closed loop).
    pub depth: Option<usize>,
    pub batch: usize,
    /// Requests/s offered (open loop).
    pub offered: Option<f64>,
    pub seconds: f64,
    /// Decisions (PONGs for ping) answered per second.
    pub per_s: f64,
    /// Runs of this measurement, and the least and greatest `per_s` among them (the
    /// figures are the median run's; its percentiles the medians over the runs).
    pub runs: usize,
    pub per_s_range: [f64; 2],
    pub frames_per_s: f64,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Of the decisions, the fraction from the cache (over HTTP: from the server's
    /// /metrics, read at the window's ends), and the fraction denied.
    pub hit_ratio: Option<f64>,
    pub deny_ratio: Option<f64>,
    pub wrong: u64,
    pub first_wrong: Option<String>,
    /// Connections the server closed at its requests-per-connection limit (HTTP), reopened.
    pub reconnects: u64,
    /// % of one core, by server thread name and for the harness.
    pub cpu: BTreeMap<String, f64>,
    /// Decisions answered per second in each step of the measured window (a second, or a
    /// twentieth of a shorter window): [seconds from its start, per second].
    pub timeline: Vec<[f64; 2]>,
    /// `shared` or `affine` (--route).
    pub route: Route,
    /// Per step: [seconds, fraction of its decisions that were cache hits].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hit_timeline: Vec<[f64; 2]>,
}

pub fn nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The server's cache hits and misses so far, summed over shards, from its /metrics.
pub fn scrape_cache(addr: SocketAddr, token: Option<&str>) -> anyhow::Result<(f64, f64)> {
    let [hits, misses] = scrape((addr, token), ["sark_policy_cache_hits_total", "sark_policy_cache_misses_total"])?;
    Ok((hits, misses))
}

/// Metric families from the server's /metrics, each summed over its series (shards).
pub fn scrape<const N: usize>((addr, token): (SocketAddr, Option<&str>), names: [&str; N]) -> anyhow::Result<[f64; N]> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr} for /metrics"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: sark-pdp\r\n{auth}Connection: close\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    s.take(16 << 20).read_to_string(&mut text).context("reading /metrics")?;
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(['{', ' '])))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    anyhow::ensure!(text.starts_with("HTTP/1.1 200"), "/metrics answered {}", text.lines().next().unwrap_or(""));
    Ok(names.map(sum))
}

/// What a run sends.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub scenario: Scenario,
    pub mode: &'static str,
    pub depth: Option<usize>,
    pub batch: usize,
    pub offered: Option<f64>,
}

impl Shape {
    fn label(&self) -> String {
        match (self.depth, self.offered) {
            (Some(d), _) => format!("{:?} depth {d} batch {}", self.scenario, self.batch),
            (_, Some(r)) => format!("{:?} open {r:.0}/s", self.scenario),
            _ => format!("{:?}", self.scenario),
        }
    }
}

/// One step of a run's timeline, as it happens.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Seconds since the measured window began.
    pub t: f64,
    /// Decisions answered per second over the step.
    pub rate: f64,
    /// Unexpected answers so far (warm-up included).
    pub wrong: u64,
}

/// Run one load thread per connection (`spawn(connection, measure_from, end, meter)`),
/// with a progress bar, a timeline of each measured second (each step also given to
/// `on_step`), and CPU sampled over the measured window; merge what they saw.
pub fn measure(
    c: &Common,
    shape: Shape,
    spawn: impl Fn(usize, Instant, Instant, Meter) -> std::thread::JoinHandle<anyhow::Result<Tally>>,
    on_step: &mut dyn FnMut(Step) -> anyhow::Result<()>,
) -> anyhow::Result<Run> {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(c.warmup);
    let end = measure_from + Duration::from_secs_f64(c.duration);
    let meter: Meter = Arc::new(load::Progress::default());
    let handles: Vec<_> = (0..c.connections).map(|i| spawn(i, measure_from, end, meter.clone())).collect();
    let bar = progress_bar(c.warmup + c.duration, &shape.label());
    // The timeline's step: a second on long runs, finer on short ones.
    let sample = Duration::from_secs_f64((c.duration / 20.0).clamp(0.1, 1.0));
    let mut timeline = Vec::new();
    let (mut server0, mut own0, mut cache0) = (BTreeMap::new(), 0, None);
    let (mut last_t, mut last_n, mut last_hits, mut measuring) = (measure_from, 0, 0, false);
    let mut hit_timeline = Vec::new();
    loop {
        let now = Instant::now();
        if !measuring && now >= measure_from {
            measuring = true;
            (server0, own0) = (c.server_pid.map(cpu::threads).unwrap_or_default(), cpu::own());
            cache0 = (c.transport == Transport::Http).then(|| scrape_cache(c.addr(), c.token.as_deref())).transpose()?;
            (last_t, last_n, last_hits) = (now, meter.answered.load(Ordering::Relaxed), meter.hits.load(Ordering::Relaxed));
        }
        if measuring && (now - last_t >= sample || now >= end) {
            let (n, hits) = (meter.answered.load(Ordering::Relaxed), meter.hits.load(Ordering::Relaxed));
            let dt = (now - last_t).as_secs_f64();
            if dt > 0.05 {
                let (t, rate) = ((now - measure_from).as_secs_f64(), (n - last_n) as f64 / dt);
                let hit_ratio = (hits - last_hits) as f64 / (n - last_n).max(1) as f64;
                timeline.push([t, rate]);
                hit_timeline.push([t, hit_ratio]);
                bar.set_message(format!("{rate:.0} decisions/s, {:.0}% hits", hit_ratio * 100.0));
                on_step(Step { t, rate, wrong: meter.wrong.load(Ordering::Relaxed) })?;
            }
            (last_t, last_n, last_hits) = (now, n, hits);
        }
        bar.set_position((now - start).as_millis() as u64);
        if now >= end || (measuring && handles.iter().all(|h| h.is_finished())) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100).min(end.saturating_duration_since(now).max(Duration::from_millis(1))));
    }
    let (server1, own1) = (c.server_pid.map(cpu::threads).unwrap_or_default(), cpu::own());
    let cache1 = (c.transport == Transport::Http).then(|| scrape_cache(c.addr(), c.token.as_deref())).transpose()?;
    bar.finish_and_clear();
    // The window measured: to its end, or to when a request quota was answered.
    let seconds = Instant::now().min(end).saturating_duration_since(measure_from).as_secs_f64().max(1e-3);
    let mut usage = cpu::percent(&server0, &server1, seconds);
    usage.insert("pdp-bench".into(), ((own1.saturating_sub(own0)) as f64 / seconds).round());
    let mut total = Tally::new()?;
    for h in handles {
        total.merge(h.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))??);
    }
    let mut run = summarize(&total, (c, seconds), shape, usage, timeline);
    if c.transport == Transport::Binary && shape.scenario != Scenario::Ping {
        run.hit_timeline = hit_timeline;
    }
    if let (Some((h0, m0)), Some((h1, m1))) = (cache0, cache1)
        && shape.scenario != Scenario::Ping
    {
        run.hit_ratio = Some((h1 - h0) / (h1 - h0 + m1 - m0).max(1.0));
    }
    Ok(run)
}

/// A bar over the run's seconds on a terminal (none when stderr is not one).
fn progress_bar(seconds: f64, label: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new((seconds * 1000.0) as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{prefix:>32} [{bar:30}] {elapsed:>3}/{duration} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar
}

fn summarize(t: &Tally, (c, seconds): (&Common, f64), shape: Shape, usage: BTreeMap<String, f64>, timeline: Vec<[f64; 2]>) -> Run {
    let Shape { scenario, mode, depth, batch, offered } = shape;
    let us = |q: f64| t.latency.value_at_quantile(q) as f64 / 1000.0;
    let decisions = scenario != Scenario::Ping && t.items > 0;
    Run {
        scenario,
        transport: c.transport,
        mode,
        connections: c.connections,
        depth,
        batch,
        offered,
        seconds,
        per_s: t.items as f64 / seconds,
        runs: 1,
        per_s_range: [t.items as f64 / seconds; 2],
        frames_per_s: t.frames as f64 / seconds,
        p50_us: us(0.5),
        p95_us: us(0.95),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: t.latency.max() as f64 / 1000.0,
        hit_ratio: (decisions && c.transport == Transport::Binary).then(|| t.hits as f64 / t.items as f64),
        deny_ratio: decisions.then(|| t.denies as f64 / t.items as f64),
        wrong: t.wrong,
        first_wrong: t.first_wrong.clone(),
        reconnects: t.reconnects,
        cpu: usage,
        timeline,
        route: c.route,
        hit_timeline: Vec::new(),
    }
}

/// Closed loop: `depth` requests in flight on each connection.
pub fn closed(c: &Common, scenario: Scenario, depth: usize, batch: usize) -> anyhow::Result<Run> {
    let (n, place, target) = (nonce(), c.placement()?, c.target());
    let shape = Shape { scenario, mode: "closed", depth: Some(depth), batch, offered: None };
    let conns = c.connections as u64;
    measure(c, shape, |i, from, end, meter| {
        let (addr, owned) = place(i);
        let g = Generator::for_target(scenario, &target, batch, i, n);
        let g = match owned {
            Some((shard, shards)) => g.only(shard, shards),
            None => g,
        };
        // The quota split over connections, the remainder to the first ones.
        let quota = c.requests.map(|r| r / conns + u64::from((i as u64) < r % conns));
        std::thread::spawn(move || load::closed(addr, g, depth, (from, end), quota, meter))
    }, &mut |_| Ok(()))
}

/// Open loop: `rate` requests/s over all connections (for requests ÷ rate seconds, given
/// a request count).
pub fn open(c: &Common, scenario: Scenario, rate: f64, batch: usize) -> anyhow::Result<Run> {
    open_observed(c, (scenario, rate, batch), &mut |_| Ok(()))
}

/// The open loop, each step of its timeline given to `on_step` as it happens.
pub fn open_observed(c: &Common, (scenario, rate, batch): (Scenario, f64, usize), on_step: &mut dyn FnMut(Step) -> anyhow::Result<()>) -> anyhow::Result<Run> {
    let with_count;
    let c = match c.requests {
        Some(n) => {
            with_count = Common { duration: n as f64 / rate, requests: None, ..c.clone() };
            &with_count
        }
        None => c,
    };
    let (n, place, target) = (nonce(), c.placement()?, c.target());
    let per_conn = rate / c.connections as f64;
    let window = (Duration::from_secs_f64(c.warmup), Duration::from_secs_f64(c.duration));
    let shape = Shape { scenario, mode: "open", depth: None, batch, offered: Some(rate) };
    measure(c, shape, |i, _, _, meter| {
        let (addr, owned) = place(i);
        let g = Generator::for_target(scenario, &target, batch, i, n);
        let g = match owned {
            Some((shard, shards)) => g.only(shard, shards),
            None => g,
        };
        std::thread::spawn(move || load::open(addr, g, per_conn, window, meter))
    }, on_step)
}

pub fn header() {
    println!("| scenario | transport | loop | conns | depth | batch | decisions/s | frames/s | p50 µs | p95 µs | p99 µs | p99.9 µs | hits | CPU % (server threads; harness) |");
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
}

/// A table row; with several runs, the range of rates beside the median.
pub fn row(r: &Run) {
    let cpu: Vec<String> = r.cpu.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let depth = r.depth.map_or_else(|| format!("{:.0}/s", r.offered.unwrap_or(0.0)), |d| d.to_string());
    let note = if r.runs > 1 { format!(" [{:.0}–{:.0}]", r.per_s_range[0], r.per_s_range[1]) } else { String::new() };
    println!(
        "| {:?} | {:?} | {} | {} | {} | {} | {:.0}{note} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
        r.scenario,
        r.transport,
        r.mode,
        r.connections,
        depth,
        r.batch,
        r.per_s,
        r.frames_per_s,
        r.p50_us,
        r.p95_us,
        r.p99_us,
        r.p999_us,
        r.hit_ratio.map_or("-".into(), |h| format!("{:.1}%", h * 100.0)),
        cpu.join(", ")
    );
    if r.wrong > 0 {
        eprintln!("pdp-bench: {} unexpected answers, first: {}", r.wrong, r.first_wrong.as_deref().unwrap_or("?"));
    }
}

pub fn write_json(path: Option<&PathBuf>, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(value)?).with_context(|| p.display().to_string())?;
        eprintln!("pdp-bench: results in {}", p.display());
    }
    Ok(())
}

/// `results.json` → `results.<what>.svg`, beside it.
pub fn beside(json: &Path, what: &str) -> PathBuf {
    let stem = json.file_stem().and_then(|s| s.to_str()).unwrap_or("pdp-bench");
    json.with_file_name(format!("{stem}.{what}.svg"))
}

/// `c.runs` runs of one measurement, as one: the run with the median rate, with each
/// latency percentile the median over the runs, the greatest latency of any, and the
/// range of the rates.
pub fn repeated(c: &Common, mut once: impl FnMut() -> anyhow::Result<Run>) -> anyhow::Result<Run> {
    let runs = (0..c.runs.max(1)).map(|_| once()).collect::<anyhow::Result<Vec<Run>>>()?;
    median_of(runs).context("no runs")
}

/// Several runs of one configuration as one (see [`repeated`]).
pub fn median_of(mut runs: Vec<Run>) -> Option<Run> {
    let mid = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let each = |f: fn(&Run) -> f64| mid(runs.iter().map(f).collect());
    let p = [each(|r| r.p50_us), each(|r| r.p95_us), each(|r| r.p99_us), each(|r| r.p999_us)];
    let max = runs.iter().map(|r| r.max_us).fold(0.0, f64::max);
    let wrong: u64 = runs.iter().map(|r| r.wrong).sum();
    let first_wrong = runs.iter().find_map(|r| r.first_wrong.clone());
    runs.sort_by(|a, b| a.per_s.total_cmp(&b.per_s));
    let range = [runs.first()?.per_s, runs.last()?.per_s];
    let n = runs.len();
    let mut m = runs.swap_remove(n / 2);
    [m.p50_us, m.p95_us, m.p99_us, m.p999_us] = p;
    (m.max_us, m.runs, m.per_s_range, m.wrong, m.first_wrong) = (max, n, range, wrong, first_wrong);
    Some(m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
pub mod tests {
    use super::*;

    /// A run with the given rate and p50/p99/p99.9, offered at `rate` (open loop).
    pub fn run_at(rate: f64, p: [f64; 3]) -> Run {
        let p95 = (p[0] + p[1]) / 2.0;
        Run {
            scenario: Scenario::Hit,
            transport: Transport::Binary,
            mode: "open",
            connections: 4,
            depth: None,
            batch: 1,
            offered: Some(rate),
            seconds: 1.0,
            per_s: rate,
            runs: 1,
            per_s_range: [rate; 2],
            frames_per_s: rate,
            p50_us: p[0],
            p95_us: p95,
            p99_us: p[1],
            p999_us: p[2],
            max_us: p[2],
            hit_ratio: Some(1.0),
            deny_ratio: Some(0.0),
            wrong: 0,
            first_wrong: None,
            reconnects: 0,
            cpu: BTreeMap::new(),
            timeline: vec![[1.0, rate], [2.0, rate * 0.9]],
            route: Route::Shared,
            hit_timeline: Vec::new(),
        }
    }

    #[test]
    fn several_runs_report_the_median_run_with_median_percentiles() {
        let mut slow = run_at(100.0, [50.0, 900.0, 990.0]);
        slow.wrong = 1;
        slow.first_wrong = Some("deny".into());
        let m = median_of(vec![run_at(300.0, [10.0, 100.0, 150.0]), slow, run_at(200.0, [20.0, 80.0, 200.0])]).unwrap();
        assert_eq!((m.per_s, m.runs, m.per_s_range), (200.0, 3, [100.0, 300.0]));
        assert_eq!((m.p50_us, m.p95_us, m.p99_us, m.p999_us), (20.0, 55.0, 100.0, 200.0), "each percentile's own median");
        assert_eq!(m.max_us, 990.0, "the greatest latency of any run");
        assert_eq!((m.wrong, m.first_wrong.as_deref()), (1, Some("deny")), "a wrong answer in any run is reported");
        assert!(median_of(Vec::new()).is_none());
    }

    #[test]
    fn beside_names_the_plot_after_the_json() {
        assert_eq!(beside(Path::new("out/sweep.json"), "latency"), Path::new("out/sweep.latency.svg"));
    }
}
