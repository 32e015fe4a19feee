//! Decision-cache hit ratio under a zipf workload, for each eviction policy, against an
//! unbounded cache (the ceiling any policy could reach on the same stream).
//!
//! Workload: each request is a (user, tool) pair, user ~ zipf(s) over U users and
//! tool ~ zipf(s) over T tools, independently; the first 10% of requests warm the cache
//! and are not counted. TTLs are not in play (the clock stands still): this measures
//! eviction alone.
//!
//! `cargo run --release -p perf --bin cache_ratio -- [REQUESTS] [S] [USERS] [TOOLS] [ENTRIES]`
//! (defaults: 2,000,000 requests, s = 1.0, 100,000 users, 1,000 tools, 65,536 entries)

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resident set size in bytes (Linux), to measure what a full cache really holds.
fn rss_bytes() -> anyhow::Result<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: f64 = statm.split_whitespace().nth(1).unwrap_or("0").parse()?;
    Ok(pages * 4096.0)
}

use std::collections::HashSet;
use std::sync::Arc;

use pdp::cache::{CacheConfig, DecisionCache, Eviction, entry_bytes};
use pdp::key::KeyHasher;
use pdp::{Decision, EngineKind, Sensitivity};
use rand::SeedableRng;
use rand_distr::{Distribution, Zipf};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let requests: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2_000_000);
    let s: f64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1.0);
    let users: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100_000);
    let tools: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1_000);
    let entries: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(65_536);

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let zu = Zipf::new(users as f64, s)?;
    let zt = Zipf::new(tools as f64, s)?;
    let stream: Vec<(u64, u64)> = (0..requests)
        .map(|_| (zu.sample(&mut rng) as u64, zt.sample(&mut rng) as u64))
        .collect();
    let warm = requests / 10;

    // A realistic cached value: the decision document SARK's policy returns for an allow.
    let decision = Arc::new(Decision {
        allow: true,
        reasons: vec!["allowed: all policies passed".into()],
        policies_evaluated: ["ip_filtering", "mfa", "rate_limits", "rbac", "sensitivity", "team_access", "time_based"]
            .map(String::from)
            .to_vec(),
        policy_results: ["ip_filtering", "mfa", "rate_limits", "rbac", "sensitivity", "team_access", "time_based"]
            .map(|p| (p.to_string(), true))
            .to_vec(),
        filtered_parameters: pdp::Value::from_json_str(r#"{"ticket_id": "T-42", "status": "closed"}"#)?,
        filtered_parameters_json: Some(r#"{"status":"closed","ticket_id":"T-42"}"#.into()),
        cache_ttl_s: Some(300),
        restrictions: Default::default(),
        error: None,
        engine: EngineKind::Rvm,
        bundle_revision: "bench".into(),
    });
    let bytes_per_entry = entry_bytes(&decision);
    // Real bytes per entry: fill a cache with distinct copies of the decision.
    let real_bytes_per_entry = {
        let (clock, _mock) = quanta::Clock::mock();
        let before = rss_bytes()?;
        let mut cache = DecisionCache::new(
            CacheConfig {
                max_entries: entries,
                max_bytes: usize::MAX / 2,
                ..CacheConfig::default()
            },
            clock,
        );
        for i in 0..entries as u128 {
            cache.insert(pdp::key::CacheKey(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)), Arc::new((*decision).clone()), Sensitivity::Low);
        }
        let used = rss_bytes()? - before;
        used / cache.len().max(1) as f64
    };
    let mut hasher = KeyHasher::new("bench", "data.sark.decision");
    let mut key = |u: u64, t: u64| {
        let h = hasher.start();
        h.int(u as i64);
        h.int(t as i64);
        h.finish()
    };

    println!(
        "zipf(s={s}) over {users} users x {tools} tools, {requests} requests ({warm} warm-up), {entries} entries; bytes per entry: {bytes_per_entry} as the byte bound counts them, {real_bytes_per_entry:.0} resident (RSS growth of a full S3-FIFO cache of distinct decisions)"
    );
    println!("| eviction | hit ratio | entries at end |");
    println!("|---|---:|---:|");
    for (name, eviction) in [("S3-FIFO (quick_cache unsync)", Eviction::S3Fifo), ("LRU (lru crate)", Eviction::Lru)] {
        let (clock, _mock) = quanta::Clock::mock();
        let mut cache = DecisionCache::new(
            CacheConfig {
                max_entries: entries,
                max_bytes: usize::MAX / 2,
                eviction,
                ..CacheConfig::default()
            },
            clock,
        );
        let (mut hits, mut counted) = (0u64, 0u64);
        for (i, (u, t)) in stream.iter().enumerate() {
            let k = key(*u, *t);
            let hit = cache.get(k).is_some();
            if !hit {
                cache.insert(k, decision.clone(), Sensitivity::Low);
            }
            if i >= warm {
                counted += 1;
                hits += u64::from(hit);
            }
        }
        println!("| {name} | {:.2}% | {} |", 100.0 * hits as f64 / counted as f64, cache.len());
    }
    // The ceiling: every key ever seen stays.
    let mut seen = HashSet::new();
    let (mut hits, mut counted) = (0u64, 0u64);
    for (i, pair) in stream.iter().enumerate() {
        let hit = !seen.insert(*pair);
        if i >= warm {
            counted += 1;
            hits += u64::from(hit);
        }
    }
    println!("| unbounded (ceiling) | {:.2}% | {} |", 100.0 * hits as f64 / counted as f64, seen.len());
    Ok(())
}
