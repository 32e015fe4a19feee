//! `pdp-bench compare`: two server commands — two configurations, or two builds — each
//! started in turn on a fresh port and audit directory, measured under the same
//! closed-loop load, stopped; A B A B … so the machine's drift hits both alike. Reports
//! B ÷ A per pair and the median of the pairs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::load::{Scenario, Transport};
use crate::measure::{self, Common, Run};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Server command A, words split on spaces (no quoting), e.g.
    /// "target/release/sark-pdp serve --shards 1". `--listen`, `--http-listen` and
    /// `--audit-dir` are added unless given.
    #[arg(long)]
    a: String,
    /// Server command B, as A.
    #[arg(long)]
    b: String,
    /// A-B pairs measured.
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    #[arg(long, value_enum, default_value_t = Scenario::Hit)]
    scenario: Scenario,
    #[arg(long, default_value_t = 16)]
    depth: usize,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seconds a server has to start listening.
    #[arg(long, default_value_t = 60.0)]
    start_timeout: f64,
    /// --addr and --server-pid are chosen by compare.
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Serialize)]
struct Pair {
    a: Run,
    b: Run,
    /// b.per_s ÷ a.per_s.
    ratio: f64,
}

/// A server command's words, with what compare chooses added: both listeners on port 0
/// (the server prints what it bound), HTTP off unless measured, an audit directory
/// unless given.
fn command_words(line: &str, transport: Transport, audit_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    anyhow::ensure!(!words.is_empty(), "an empty server command");
    let has = |w: &[String], flag: &str| w.iter().any(|x| x == flag || x.starts_with(&format!("{flag}=")));
    anyhow::ensure!(!has(&words, "--listen") && !has(&words, "--http-listen"), "leave --listen and --http-listen to compare (it binds port 0)");
    let http = if transport == Transport::Http { "127.0.0.1:0" } else { "off" };
    words.extend(["--listen", "127.0.0.1:0", "--http-listen", http].map(String::from));
    if !has(&words, "--audit-dir") {
        words.extend(["--audit-dir".into(), audit_dir.display().to_string()]);
    }
    Ok(words)
}

/// The address to load, from the server's "listening on A (binary) and B (HTTP)" line.
fn bound(line: &str, transport: Transport) -> Option<SocketAddr> {
    let mut addrs = line.split_whitespace().filter_map(|w| w.parse::<SocketAddr>().ok());
    match transport {
        Transport::Binary => addrs.next(),
        Transport::Http => addrs.nth(1),
    }
}

/// A started server, stopped (and its directory removed) when dropped.
struct Server {
    child: Child,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(line: &str, transport: Transport, timeout: Duration) -> anyhow::Result<(Server, SocketAddr)> {
    let dir = std::env::temp_dir().join(format!("pdp-bench-compare-{}", measure::nonce()));
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let words = command_words(line, transport, &dir.join("audit"))?;
    let log = dir.join("server.log");
    let mut child = Command::new(words.first().map_or("", String::as_str))
        .args(words.get(1..).unwrap_or(&[]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {words:?}"))?;
    let stdout = child.stdout.take().context("the server's stdout")?;
    let server = Server { child, dir };
    // The server's stdout is read to its end (so it never blocks on a full pipe); its
    // "listening" line comes back here.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = BufReader::new(stdout);
        let mut text = String::new();
        while matches!(out.read_line(&mut text), Ok(n) if n > 0) {
            if text.contains("listening on") {
                let _ = tx.send(text.clone());
            }
            text.clear();
        }
    });
    let said = rx.recv_timeout(timeout).ok();
    let addr = said.as_deref().and_then(|l| bound(l, transport));
    match addr {
        Some(addr) => Ok((server, addr)),
        None => bail!("{line} did not say where it listens within {timeout:?} (stdout: {said:?}):\n{}", std::fs::read_to_string(&log).unwrap_or_default()),
    }
}

fn measure_one(args: &Args, line: &str) -> anyhow::Result<Run> {
    let (server, addr) = start(line, args.common.transport, Duration::from_secs_f64(args.start_timeout))?;
    let c = Common { addr: Some(addr), server_pid: Some(server.child.id()), ..args.common.clone() };
    let r = measure::closed(&c, args.scenario, args.depth, args.batch)?;
    drop(server);
    if r.wrong > 0 {
        bail!("{line}: {} unexpected answers, first: {}", r.wrong, r.first_wrong.unwrap_or_default());
    }
    Ok(r)
}

/// The median of the ratios, and their least and greatest.
fn summary(ratios: &[f64]) -> (f64, f64, f64) {
    let (lo, hi) = ratios.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    (perf::median(ratios.to_vec()), lo, hi)
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    args.common.check(args.batch)?;
    anyhow::ensure!((1..=100).contains(&args.pairs), "need 1 ≤ pairs ≤ 100");
    anyhow::ensure!((1..=65_536).contains(&args.depth), "need 1 ≤ depth ≤ 65536");
    anyhow::ensure!(args.common.addr.is_none() && args.common.server_pid.is_none(), "compare starts the servers: leave out --addr and --server-pid");
    anyhow::ensure!(args.common.runs == 1, "compare repeats by --pairs: leave out --runs");
    let mut pairs = Vec::new();
    for k in 1..=args.pairs {
        eprintln!("pdp-bench: pair {k}/{}: A", args.pairs);
        let a = measure_one(args, &args.a)?;
        eprintln!("pdp-bench: pair {k}/{}: B", args.pairs);
        let b = measure_one(args, &args.b)?;
        let ratio = b.per_s / a.per_s.max(f64::MIN_POSITIVE);
        pairs.push(Pair { a, b, ratio });
    }
    println!("{:?} over {:?}, closed loop, {} connections × depth {} × batch {}, {} s after {} s warm-up, {} pairs A B A B …", args.scenario, args.common.transport, args.common.connections, args.depth, args.batch, args.common.duration, args.common.warmup, args.pairs);
    println!("A: {}\nB: {}\n", args.a, args.b);
    println!("| pair | A decisions/s | B decisions/s | B ÷ A | A p95 µs | B p95 µs | A p99 µs | B p99 µs |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (k, p) in pairs.iter().enumerate() {
        println!("| {} | {:.0} | {:.0} | {:.3} | {:.1} | {:.1} | {:.1} | {:.1} |", k + 1, p.a.per_s, p.b.per_s, p.ratio, p.a.p95_us, p.b.p95_us, p.a.p99_us, p.b.p99_us);
    }
    let ratios: Vec<f64> = pairs.iter().map(|p| p.ratio).collect();
    let (median, lo, hi) = summary(&ratios);
    println!("\nB ÷ A: median {median:.3} [{lo:.3}–{hi:.3}] over {} pairs", pairs.len());
    measure::write_json(args.common.json.as_ref(), &serde_json::json!({"a": args.a, "b": args.b, "pairs": pairs, "median_ratio": median}))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_server_command_gets_port_0_and_the_audit_dir_it_lacks() {
        let dir = Path::new("/tmp/x");
        let w = command_words("sark-pdp serve --shards 1", Transport::Binary, dir).unwrap();
        assert_eq!(w.join(" "), "sark-pdp serve --shards 1 --listen 127.0.0.1:0 --http-listen off --audit-dir /tmp/x");
        let w = command_words("sark-pdp serve --audit-dir=/var/a", Transport::Http, dir).unwrap();
        assert_eq!(w.join(" "), "sark-pdp serve --audit-dir=/var/a --listen 127.0.0.1:0 --http-listen 127.0.0.1:0");
        assert!(command_words("sark-pdp serve --listen 0.0.0.0:1", Transport::Binary, dir).is_err());
        assert!(command_words("  ", Transport::Binary, dir).is_err());
    }

    #[test]
    fn the_address_to_load_comes_from_the_listening_line() {
        let line = "sark-pdp: listening on 127.0.0.1:40001 (binary) and 127.0.0.1:40002 (HTTP); 1 shards, bundle x";
        assert_eq!(bound(line, Transport::Binary), Some("127.0.0.1:40001".parse().unwrap()));
        assert_eq!(bound(line, Transport::Http), Some("127.0.0.1:40002".parse().unwrap()));
        assert_eq!(bound("sark-pdp: listening on 127.0.0.1:40001 (binary); 1 shards", Transport::Http), None);
    }

    #[test]
    fn the_summary_is_the_median_ratio_and_its_range() {
        assert_eq!(summary(&[1.10, 0.90, 1.00, 1.30]), (1.05, 0.90, 1.30));
    }
}
