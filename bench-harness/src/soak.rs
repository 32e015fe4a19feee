//! `pdp-bench soak`: the open loop held at a fraction of the peak (80% unless told) for a
//! long time (10 minutes unless told), with the server sampled every second — its RSS and
//! open file descriptors (from /proc), its audit rings' depth and audit drops (from its
//! /metrics), the unexpected answers so far — and judged at the end: RSS drift under the
//! limit (the last minute's median against the first minute's after warm-up), no
//! unexpected answer, no audit record dropped.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::load::{Scenario, Transport};
use crate::measure::{self, Common, Step};
use crate::plot;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// --duration and --warmup are the peak-finding run's (a warm-up long enough to fill the
    /// cache gives the steady state's peak); the soak itself warms up for at most 5 s.
    #[command(flatten)]
    common: Common,
    #[arg(long, value_enum, default_value_t = Scenario::SeedMix)]
    scenario: Scenario,
    /// Minutes held.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// The fraction of the peak held.
    #[arg(long, default_value_t = 0.8)]
    fraction: f64,
    /// The peak in requests/s, instead of measuring it (closed loop at --depth).
    #[arg(long)]
    peak: Option<f64>,
    #[arg(long, default_value_t = 16)]
    depth: usize,
    /// The server's HTTP address, for its /metrics (ring depth, audit drops).
    #[arg(long)]
    metrics: SocketAddr,
    /// The most RSS may grow from the first minute to the last (0.05: 5%).
    #[arg(long, default_value_t = 0.05)]
    max_rss_drift: f64,
}

/// One second of the soak.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    t: f64,
    decisions_per_s: f64,
    rss_kib: u64,
    fds: usize,
    /// From /metrics; `None` when it did not answer in time.
    ring_depth: Option<f64>,
    audit_drops: Option<f64>,
    /// Decision cache misses in the second before (all shards): a stall that comes with a
    /// jump here is the cache expiring, not the server failing.
    cache_misses_per_s: Option<f64>,
    wrong: u64,
}

/// The process's resident set, KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("the server (pid {pid}) is gone"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// The median of the RSS samples taken in `[from, to)` seconds.
fn median_rss(samples: &[Sample], (from, to): (f64, f64)) -> Option<f64> {
    let mut v: Vec<u64> = samples.iter().filter(|s| s.t >= from && s.t < to).map(|s| s.rss_kib).collect();
    v.sort_unstable();
    v.get(v.len() / 2).map(|&x| x as f64)
}

/// RSS drift: the last minute's median over the first minute's (after the first tenth of
/// the run, which fills the cache and the allocator's pools), less one.
fn rss_drift(samples: &[Sample], seconds: f64) -> Option<f64> {
    let settle = seconds / 10.0;
    let window = 60f64.min(seconds / 4.0);
    let first = median_rss(samples, (settle, settle + window))?;
    let last = median_rss(samples, (seconds - window, f64::INFINITY))?;
    Some(last / first - 1.0)
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let c = &args.common;
    c.check(1)?;
    anyhow::ensure!(c.transport == Transport::Binary, "the soak runs over the binary protocol (its open loop keeps each connection for the whole run)");
    anyhow::ensure!(args.minutes > 0.0 && args.minutes <= 24.0 * 60.0, "need 0 < minutes ≤ 1440");
    anyhow::ensure!(args.fraction > 0.0 && args.fraction <= 1.0, "need 0 < fraction ≤ 1");
    anyhow::ensure!(args.max_rss_drift > 0.0, "need a positive --max-rss-drift");
    let pid = c.server_pid.context("the soak samples the server: give --server-pid")?;
    let metrics = (args.metrics, c.token.as_deref());
    measure::scrape(metrics, ["sark_pdp_audit_drops_total"]).context("the server's /metrics (--metrics)")?;
    let peak = match args.peak {
        Some(p) => p,
        None => {
            eprintln!("pdp-bench: closed loop for the peak ({:?}, depth {})", args.scenario, args.depth);
            measure::closed(c, args.scenario, args.depth, 1)?.frames_per_s
        }
    };
    anyhow::ensure!(peak > 0.0 && peak.is_finite(), "no peak to hold a fraction of");
    let rate = peak * args.fraction;
    let seconds = args.minutes * 60.0;
    eprintln!("pdp-bench: soak at {rate:.0}/s ({:.0}% of {peak:.0}/s) for {:.1} min", args.fraction * 100.0, args.minutes);
    // The peak run's warm-up fills the cache; the soak's own is short.
    let soak = Common { duration: seconds, warmup: c.warmup.min(5.0), requests: None, ..c.clone() };
    let (mut samples, mut unanswered) = (Vec::new(), Vec::new());
    let mut misses_before: Option<(f64, f64)> = None;
    let run = measure::open_observed(&soak, (args.scenario, rate, 1), &mut |s: Step| {
        // A /metrics that does not answer within 5 s is a finding, not the end of the soak.
        let (ring_depth, audit_drops, misses) = match measure::scrape(metrics, ["sark_pdp_audit_ring_depth", "sark_pdp_audit_drops_total", "sark_policy_cache_misses_total"]) {
            Ok([depth, drops, misses]) => (Some(depth), Some(drops), Some(misses)),
            Err(e) => {
                unanswered.push(format!("{:.0} s: {e:#}", s.t));
                (None, None, None)
            }
        };
        let cache_misses_per_s = match (misses, misses_before) {
            (Some(m), Some((t0, m0))) if s.t > t0 => Some((m - m0) / (s.t - t0)),
            _ => None,
        };
        if let Some(m) = misses {
            misses_before = Some((s.t, m));
        }
        samples.push(Sample { t: s.t, decisions_per_s: s.rate, rss_kib: rss_kib(pid)?, fds: fds(pid), ring_depth, audit_drops, cache_misses_per_s, wrong: s.wrong });
        Ok(())
    });
    // A soak that stops early still leaves its samples, to read what led up to the stop.
    let run = match run {
        Ok(run) => run,
        Err(e) => {
            measure::write_json(c.json.as_ref(), &serde_json::json!({"peak_per_s": peak, "rate": rate, "stopped": format!("{e:#}"), "metrics_unanswered": unanswered, "samples": samples}))?;
            return Err(e.context(format!("the soak stopped after {} samples", samples.len())));
        }
    };

    println!("{:?} over the binary protocol, open loop at {rate:.0}/s ({:.0}% of the {peak:.0}/s peak), {} connections, {:.1} min\n", args.scenario, args.fraction * 100.0, c.connections, args.minutes);
    println!("| minute | decisions/s | RSS MiB | open fds | ring depth (max) | audit drops | wrong answers |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for minute in 0..(seconds / 60.0).ceil() as usize {
        let m: Vec<&Sample> = samples.iter().filter(|s| (s.t / 60.0) as usize == minute).collect();
        let Some(last) = m.last() else { continue };
        let rate = m.iter().map(|s| s.decisions_per_s).sum::<f64>() / m.len() as f64;
        let depth = m.iter().filter_map(|s| s.ring_depth).fold(0.0, f64::max);
        let drops = m.iter().rev().find_map(|s| s.audit_drops).map_or("?".into(), |d| format!("{d:.0}"));
        println!("| {} | {rate:.0} | {:.1} | {} | {depth:.0} | {drops} | {} |", minute + 1, last.rss_kib as f64 / 1024.0, last.fds, last.wrong);
    }
    let drift = rss_drift(&samples, seconds);
    let drops_seen: Vec<f64> = samples.iter().filter_map(|s| s.audit_drops).collect();
    let drops = drops_seen.last().zip(drops_seen.first()).map_or(0.0, |(last, first)| last - first);
    let fd_range = (samples.iter().map(|s| s.fds).min().unwrap_or(0), samples.iter().map(|s| s.fds).max().unwrap_or(0));
    println!(
        "\nanswered {:.0}/s of {rate:.0}/s offered; p50 {:.0} µs, p95 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs; RSS drift {}; open fds {}–{}; audit drops {drops:.0}; wrong answers {}",
        run.per_s,
        run.p50_us,
        run.p95_us,
        run.p99_us,
        run.p999_us,
        drift.map_or("unknown (too few samples)".into(), |d| format!("{:+.2}%", d * 100.0)),
        fd_range.0,
        fd_range.1,
        run.wrong
    );
    if !unanswered.is_empty() {
        println!("/metrics did not answer {} of {} times within 5 s; first: {}", unanswered.len(), samples.len(), unanswered.first().map_or("", String::as_str));
    }
    measure::write_json(c.json.as_ref(), &serde_json::json!({"peak_per_s": peak, "rate": rate, "run": run, "rss_drift": drift, "metrics_unanswered": unanswered, "samples": samples}))?;
    if let Some(json) = &c.json {
        let line = |f: fn(&Sample) -> f64| samples.iter().map(|s| [s.t, f(s)]).collect::<Vec<_>>();
        plot::throughput(&measure::beside(json, "throughput"), &format!("soak: {:?} at {rate:.0}/s", args.scenario), &[("answered".into(), line(|s| s.decisions_per_s))], false)?;
        plot::over_time(&measure::beside(json, "rss"), ("soak: the server's resident set", "RSS, MiB"), &[("RSS".into(), line(|s| s.rss_kib as f64 / 1024.0))], false)?;
    }
    let mut failed = Vec::new();
    match drift {
        Some(d) if d < args.max_rss_drift => {}
        Some(d) => failed.push(format!("RSS grew {:.2}% (limit {:.0}%)", d * 100.0, args.max_rss_drift * 100.0)),
        None => failed.push("too few samples to judge RSS drift".into()),
    }
    if drops > 0.0 {
        failed.push(format!("{drops:.0} audit records dropped"));
    }
    if !unanswered.is_empty() {
        failed.push(format!("/metrics did not answer {} times", unanswered.len()));
    }
    if run.wrong > 0 {
        failed.push(format!("{} unexpected answers, first: {}", run.wrong, run.first_wrong.unwrap_or_default()));
    }
    if !failed.is_empty() {
        bail!("the soak failed: {}", failed.join("; "));
    }
    println!("soak: passed (RSS drift < {:.0}%, 0 audit drops, 0 wrong answers)", args.max_rss_drift * 100.0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: f64, rss_kib: u64) -> Sample {
        Sample { t, decisions_per_s: 1.0, rss_kib, fds: 10, ring_depth: Some(0.0), audit_drops: Some(0.0), cache_misses_per_s: None, wrong: 0 }
    }

    #[test]
    fn rss_drift_compares_the_last_minute_with_the_first_settled_one() {
        // 10 minutes: the first minute (cache filling) is left out; 60..120 s at 100 MiB,
        // the last minute at 104 MiB: +4%.
        let mut samples: Vec<Sample> = (0..60).map(|t| at(t as f64, 50 * 1024)).collect();
        samples.extend((60..540).map(|t| at(t as f64, 100 * 1024)));
        samples.extend((540..600).map(|t| at(t as f64, 104 * 1024)));
        let d = rss_drift(&samples, 600.0);
        assert!(d.is_some_and(|d| (d - 0.04).abs() < 1e-9), "{d:?}");
        assert_eq!(rss_drift(&samples[..0], 600.0), None);
        // A short soak compares quarters.
        let short: Vec<Sample> = (0..40).map(|t| at(t as f64, if t < 30 { 1000 } else { 1100 })).collect();
        assert!(rss_drift(&short, 40.0).is_some_and(|d| (d - 0.1).abs() < 1e-9));
    }
}
