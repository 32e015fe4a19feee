//! Shipping the audit log from a running `sark-pdp serve`, losing nothing: a real
//! PostgreSQL (scripts/postgres.sh) and a stand-in Splunk collector that fails on command,
//! under load, through an outage of both and a kill -9.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Server;
use common::postgres::Pg;
use common::siem::{Mode, Receiver};
use wire::message::Eval;
use wire::{Client, Reply, Request};

/// A client keeping 50 EVALs in flight (for `users` users in turn: misses, then hits),
/// pausing `pause` between rounds, until told to stop; every answer's time and decision id.
/// Any error ends it (the test then finds too few answers).
struct Load {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(Instant, String)>>,
}

impl Load {
    fn start(addr: SocketAddr, tag: &'static str, users: u64, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut got = Vec::new();
            let Ok(mut c) = Client::connect(addr, None) else { return got };
            for round in 0u64.. {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let ids: Vec<u64> =
                    (0..50).map(|i| c.send(&Request::Eval(Box::new(Eval::example(format!("{tag}{}", (round * 50 + i) % users))))).unwrap()).collect();
                if c.flush().is_err() {
                    break;
                }
                for id in ids {
                    match c.recv_id(id) {
                        Ok(Reply::Decision(d)) => got.push((Instant::now(), format!("{:032x}", d.decision_id))),
                        _ => return got,
                    }
                }
                std::thread::sleep(pause);
            }
            got
        });
        Load { stop, handle }
    }

    fn finish(self) -> Vec<(Instant, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

fn write_config(tag: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sark-pdp-sinkconf-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pdp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn metrics(server: &Server) -> String {
    String::from_utf8(common::web::call(server.http, "GET", "/metrics", "").body).unwrap()
}

fn metric(text: &str, name: &str, sink: &str) -> Option<f64> {
    let prefix = format!("{name}{{sink=\"{sink}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok())
}

/// Wait until neither sink has anything left to ship.
fn wait_shipped(server: &Server, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let m = metrics(server);
        let lag = |sink| metric(&m, "sark_pdp_sink_lag_records", sink);
        if lag("postgres") == Some(0.0) && lag("splunk") == Some(0.0) {
            return;
        }
        assert!(Instant::now() < deadline, "the sinks did not catch up:\n{m}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every logged decision is in PostgreSQL once (minus those named in `dead`), and in
/// Splunk at least once.
fn check_delivery(pg: &Pg, hec: &Receiver, node: &str, logged: &[serde_json::Value], dead: &BTreeSet<String>) -> usize {
    let ids: Vec<String> = logged.iter().map(|r| r["decision_id"].as_str().unwrap().to_string()).collect();
    let want: BTreeSet<String> = ids.iter().filter(|id| !dead.contains(*id)).cloned().collect();
    let rows = pg.query(&format!("SELECT decision_id FROM policy_decision_logs WHERE node_id = '{node}'"));
    let in_pg: Vec<String> = rows.into_iter().map(|r| r[0].clone()).collect();
    let distinct: BTreeSet<String> = in_pg.iter().cloned().collect();
    assert_eq!(in_pg.len(), distinct.len(), "{} rows written twice in PostgreSQL", in_pg.len() - distinct.len());
    assert_eq!(distinct, want, "PostgreSQL holds exactly the logged decisions");
    let cursor = pg.query(&format!("SELECT next_seq FROM sark_pdp_sink_cursors WHERE node_id = '{node}'"));
    assert_eq!(cursor[0][0], (logged.len() + 1).to_string(), "the cursor stands past the last record");
    let got = hec.ids.lock().unwrap().clone();
    let all: BTreeSet<String> = ids.into_iter().collect();
    assert_eq!(hec.distinct(), all, "Splunk got every logged decision, and nothing else");
    got.len() - all.len()
}

#[test]
fn both_sinks_down_for_30_s_under_load_then_back_get_every_record() {
    let pg = Pg::start("outage");
    let hec = Receiver::start();
    let conf = write_config(
        "outage",
        &format!(
            "[sinks.splunk]\nurl = \"{}\"\ntoken = \"tok\"\nbatch = 1000\nmax_wait_s = 1\ntimeout_s = 1\nbreaker_open_s = 2\n\
             [sinks.postgres]\nurl = \"{}\"\nnode_id = \"outage\"\nbatch = 1000\nmax_wait_s = 1\ntimeout_s = 2\nbreaker_open_s = 2\n",
            hec.url, pg.url
        ),
    );
    let server = Server::start_with("sink-outage", &["--shards", "1", "--config", conf.to_str().unwrap()]);
    let load = Load::start(server.addr, "o", 5000, Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(2));
    // 30 s without either: Splunk answers 503 for 10 s, resets connections for 10 s, then
    // hangs for 10 s; PostgreSQL is stopped for all 30.
    let down = Instant::now();
    pg.down();
    let mut seen_open = false;
    for (mode, secs) in [(Mode::Unavailable, 10), (Mode::Reset, 10), (Mode::Hang, 10)] {
        hec.set(mode);
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            let m = metrics(&server);
            let open = |sink| metric(&m, "sark_pdp_sink_breaker_open", sink) == Some(1.0);
            seen_open |= open("splunk") && open("postgres") && metric(&m, "sark_pdp_sink_lag_records", "postgres").unwrap_or(0.0) > 0.0;
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let up = Instant::now();
    hec.set(Mode::Ok);
    pg.back();
    assert!(seen_open, "both breakers were never seen open, with records waiting, during the outage");
    std::thread::sleep(Duration::from_secs(2));
    let answered = load.finish();
    wait_shipped(&server, Duration::from_secs(60));
    let m = metrics(&server);
    assert!(metric(&m, "siem_batch_failures_total", "postgres").unwrap() >= 5.0, "{m}");
    assert!(m.contains("siem_batch_send_duration_seconds_count{sink=\"postgres\"}"), "{m}");
    let logged = server.stop();

    // Decisions never waited for the sinks: answers kept coming through the outage.
    let during = answered.iter().filter(|(t, _)| *t > down && *t < up).count();
    // (The client asks for at most 2,500 a second.)
    assert!(during > 15_000, "only {during} decisions answered during the 30 s outage");
    let logged_ids: BTreeSet<&str> = logged.iter().map(|r| r["decision_id"].as_str().unwrap()).collect();
    assert!(answered.iter().all(|(_, id)| logged_ids.contains(id.as_str())), "an answered decision is not in the log");
    let duplicates = check_delivery(&pg, &hec, "outage", &logged, &BTreeSet::new());
    eprintln!("{} records, {during} answered during the outage, {duplicates} sent twice to Splunk", logged.len());
    std::fs::remove_dir_all(conf.parent().unwrap()).unwrap();
}

#[test]
fn kill_9_mid_batch_resumes_from_the_cursor_and_a_poisoned_record_is_dead_lettered() {
    let pg = Pg::start("kill");
    let hec = Receiver::start();
    let conf = write_config(
        "kill",
        &format!(
            "[sinks.splunk]\nurl = \"{}\"\ntoken = \"tok\"\nbatch = 50\nmax_wait_s = 1\n\
             [sinks.postgres]\nurl = \"{}\"\nnode_id = \"kill\"\nbatch = 50\nmax_wait_s = 1\n",
            hec.url, pg.url
        ),
    );
    let args = ["--shards", "1", "--config", conf.to_str().unwrap()];
    // Slow Splunk answers, so the kill finds a batch in flight.
    hec.set(Mode::Slow);
    let server = Server::start_with("sink-kill", &args);
    // PostgreSQL's text cannot hold NUL: this decision's row is refused by the database.
    let mut c = Client::connect(server.addr, None).unwrap();
    let poisoned = format!("{:032x}", c.eval(Eval::example("nul\u{0}user")).unwrap().decision_id);
    let load = Load::start(server.addr, "k", 100, Duration::from_millis(5));
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&metrics(&server), "siem_events_dead_lettered_total", "postgres") != Some(1.0) {
        assert!(Instant::now() < deadline, "the poisoned record was not dead-lettered:\n{}", metrics(&server));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    server.kill();
    let before = load.finish();
    assert!(before.len() >= 1000, "only {} answers before the kill", before.len());

    hec.set(Mode::Ok);
    let again = Server::resume("sink-kill", &args);
    let load = Load::start(again.addr, "r", 100, Duration::from_millis(5));
    std::thread::sleep(Duration::from_secs(1));
    let after = load.finish();
    assert!(!after.is_empty());
    wait_shipped(&again, Duration::from_secs(60));
    let dead = std::fs::read_to_string(again.audit.join("sinks/postgres.dead-letter.jsonl")).unwrap();
    assert!(dead.lines().all(|l| l.contains(&poisoned)) && dead.contains("22021"), "{dead}");
    let audit = again.audit.clone();
    let logged = again.stop();
    let duplicates = check_delivery(&pg, &hec, "kill", &logged, &BTreeSet::from([poisoned]));
    eprintln!("{} records across the kill, {duplicates} sent twice to Splunk", logged.len());
    let _ = std::fs::remove_dir_all(audit);
    std::fs::remove_dir_all(conf.parent().unwrap()).unwrap();
}
