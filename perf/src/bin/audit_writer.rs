//! The audit writer alone: a producer thread fills one ring as fast as it can with SARK's
//! typical record while the writer drains it into the segmented log, per durability mode;
//! records/s and MB/s of log written, median of the rounds, through io_uring (where the
//! kernel allows it) and through plain write/fdatasync.
//!
//! `cargo run --release -p perf --bin audit_writer -- [RECORDS] [ROUNDS] [DIR]`
//! (DIR defaults to target/audit-writer-bench; it is removed after each run.)

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pdp::audit::{AuditRecord, Fields};
use pdp::audit_log::{AuditLog, Durability, LogConfig};
use pdp::audit_ring::rings;
use pdp::point::Answer;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let records: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1_000_000);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let dir = args.next().map_or_else(|| PathBuf::from("target/audit-writer-bench"), PathBuf::from);
    let bundle = perf::shipped_bundle()?;
    let compiled = Arc::new(pdp::CompiledBundle::compile(&bundle, pdp::EvalLimits::default())?);
    let mut ev = pdp::Evaluator::new(compiled, pdp::EnginePreference::Fastest);
    let input = perf::decision_inputs(&bundle)?.into_iter().next().ok_or_else(|| anyhow::anyhow!("no case inputs"))?;
    let decision = Arc::new(ev.decide(pdp::eval::input_from_json(&input)));
    let answer = Answer { decision, cache_hit: true, ttl: Duration::from_secs(300) };
    let fields = Fields {
        user_id: "alice",
        action: "tool:invoke",
        tool_name: Some("update_ticket"),
        sensitivity_level: Some("medium"),
        server_id: Some("srv-1"),
        server_name: Some("tickets"),
        client_ip: Some("10.20.30.40"),
        request_id: Some("req-0000000000000001"),
        session_id: Some("sess-1"),
        user_roles: vec!["developer"],
        user_teams: vec!["payments"],
    };
    let record = AuditRecord::new(1, 1_795_428_000_000_000_000, &answer, 12, Some(true), &fields);
    println!("| writes through | durability | records/s (median of {rounds}) | MB/s | bytes per line |");
    println!("|---|---|---:|---:|---:|");
    for (plain_io, mode) in [false, true].into_iter().flat_map(|p| [Durability::None, Durability::Batch, Durability::Sync].map(|m| (p, m))) {
        let mut io_name = "";
        let mut rates = Vec::new();
        let mut line_bytes = 0.0;
        for _ in 0..rounds {
            let _ = std::fs::remove_dir_all(&dir);
            let mut cfg = LogConfig::new(&dir);
            cfg.durability = mode;
            cfg.plain_io = plain_io;
            let mut log = AuditLog::open(cfg)?;
            io_name = log.io_name();
            let (mut producers, drain) = rings(1, 65_536);
            let mut p = producers.pop().ok_or_else(|| anyhow::anyhow!("no ring"))?;
            let r = record.clone();
            let start = Instant::now();
            let producer = std::thread::spawn(move || {
                for _ in 0..records {
                    let mut rec = r.clone();
                    loop {
                        match p.try_push(rec) {
                            Ok(_) => break,
                            Err(back) => {
                                rec = back;
                                std::hint::spin_loop();
                            }
                        }
                    }
                }
            });
            let written = drain.run(&mut log, 1024)?;
            let secs = start.elapsed().as_secs_f64();
            producer.join().map_err(|_| anyhow::anyhow!("producer panicked"))?;
            anyhow::ensure!(written == records, "wrote {written} of {records}");
            let bytes: u64 = pdp::audit_log::segments(&dir)?.iter().map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len())).sum();
            line_bytes = bytes as f64 / records as f64;
            rates.push(records as f64 / secs);
        }
        let rate = perf::median(rates);
        println!("| {io_name} | {} | {rate:.0} | {:.0} | {line_bytes:.0} |", mode.as_str(), rate * line_bytes / 1e6);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
