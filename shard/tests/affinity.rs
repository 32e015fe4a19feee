//! Cache warmth across shards (issue 11), against the real binary: per-shard ports and
//! key-affine routing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::Server;
use wire::message::Eval;
use wire::{Client, Router};

fn ask(user: &str, tool: &str) -> Eval {
    let mut e = Eval::example(user);
    if let Some(t) = e.tool.as_mut() {
        t.name = tool.into();
    }
    e
}

/// The shard a decision id says decided it (its top 16 bits).
fn decided_by(id: u128) -> u16 {
    (id >> 112) as u16
}

#[test]
fn every_shard_has_its_own_port_and_routed_questions_reach_their_owner() {
    let server = Server::start_with("affine", &["--shards", "3"]);
    let first = Client::connect(server.addr, None).unwrap();
    let h = first.hello().clone();
    assert_eq!((h.shards, h.route, h.shard_ports.len()), (3, wire::route::ROUTE_FNV1A64_FMIX, 3), "{h:?}");
    for (i, port) in h.shard_ports.iter().enumerate() {
        let c = Client::connect(("127.0.0.1", *port), None).unwrap();
        assert_eq!(usize::from(c.hello().shard), i, "port {port}");
        assert_eq!(c.hello().shard_ports, h.shard_ports, "every shard announces the same ports");
    }

    let mut router = Router::connect(server.addr, None).unwrap();
    assert!(router.routing());
    let mut owners = std::collections::BTreeSet::new();
    for u in 0..24 {
        let (user, tool) = (format!("user-{u}"), format!("tool-{}", u % 5));
        let owner = wire::route::owner(&user, &tool, 3);
        owners.insert(owner);
        let a = router.eval(ask(&user, &tool)).unwrap();
        let b = router.eval(ask(&user, &tool)).unwrap();
        assert_eq!((decided_by(a.decision_id), decided_by(b.decision_id)), (owner, owner), "{user}/{tool}");
        assert!(!a.cache_hit && b.cache_hit, "{user}/{tool}: the owner's cache answers the repeat");
    }
    assert_eq!(owners.len(), 3, "24 questions spread over every shard");

    // A batch is split by owner and put back in order.
    let inputs: Vec<Eval> = (0..40).map(|u| ask(&format!("batch-{u}"), "tool-1")).collect();
    let decisions = router.eval_batch(inputs.clone()).unwrap();
    assert_eq!(decisions.len(), 40);
    for (e, d) in inputs.iter().zip(&decisions) {
        assert_eq!(decided_by(d.decision_id), wire::route::owner(&e.user_id, "tool-1", 3), "{}", e.user_id);
    }
    let again = router.eval_batch(inputs).unwrap();
    assert!(again.iter().all(|d| d.cache_hit), "the repeat batch is all hits");
    assert_eq!(again.iter().map(|d| d.allow).collect::<Vec<_>>(), decisions.iter().map(|d| d.allow).collect::<Vec<_>>());

    // A question sent to a shard that does not own it is answered all the same.
    let (user, tool) = ("stray", "tool-9");
    let owner = wire::route::owner(user, tool, 3);
    let other = h.shard_ports[usize::from((owner + 1) % 3)];
    let d = Client::connect(("127.0.0.1", other), None).unwrap().eval(ask(user, tool)).unwrap();
    assert_eq!(decided_by(d.decision_id), (owner + 1) % 3);
    assert_eq!(d.allow, router.eval(ask(user, tool)).unwrap().allow);
    let records = server.stop();
    assert_eq!(records.len(), 24 * 2 + 80 + 2, "every decision audited once");
}

#[test]
fn shard_ports_can_be_off_or_based_and_a_taken_port_stops_the_server() {
    let server = Server::start_with("affine-off", &["--shards", "2", "--shard-ports", "off"]);
    let router = Router::connect(server.addr, None).unwrap();
    assert!(router.hello().shard_ports.is_empty() && !router.routing());
    drop(router);
    server.stop();

    // A base port: shard i on base + i. Take a port, then ask for it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sark-pdp"))
        .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "off", "--shards", "1", "--shard-ports", &port])
        .arg("--audit-dir")
        .arg(std::env::temp_dir().join(format!("sark-pdp-affine-taken-{}", std::process::id())))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("own port") && err.contains(&port), "{err}");
    for bad in ["0", "65536", "some"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sark-pdp")).args(["serve", "--shard-ports", bad]).output().unwrap();
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("shard ports"), "{bad}");
    }
}

/// One sample of `/metrics` (`name{labels}` exactly), or 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' '))).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

#[test]
fn a_hit_late_in_its_ttl_is_refreshed_on_the_shard_and_the_cache_counts_are_exported() {
    let conf = std::env::temp_dir().join(format!("sark-pdp-refresh-{}.toml", std::process::id()));
    // Medium tools: 6 s, refreshed in the last half. Critical: 6 s, refresh off (default).
    std::fs::write(&conf, "[cache.ttl]\nmedium = 6\ncritical = 6\n[cache.refresh]\nmedium = 0.5\n").unwrap();
    let server = Server::start_with("refresh", &["--shards", "1", "--config", conf.to_str().unwrap()]);
    let mut c = Client::connect(server.addr, None).unwrap();
    let critical = || {
        let mut e = ask("crit", "deploy");
        e.tool.as_mut().unwrap().sensitivity_level = Some("critical".into());
        e
    };
    let medium = c.eval(ask("med", "update_ticket")).unwrap();
    c.eval(critical()).unwrap();
    assert_eq!(medium.ttl_s, 6);
    std::thread::sleep(std::time::Duration::from_millis(3500));
    // In the refresh window: served from the cache, then evaluated again on the shard.
    assert!(c.eval(ask("med", "update_ticket")).unwrap().cache_hit);
    assert!(c.eval(critical()).unwrap().cache_hit);
    std::thread::sleep(std::time::Duration::from_millis(3500));
    // 7 s after the first evaluation: the first entries are gone; the refreshed one lives.
    let late = c.eval(ask("med", "update_ticket")).unwrap();
    assert!(late.cache_hit && late.ttl_s <= 3, "{late:?}");
    assert!(!c.eval(critical()).unwrap().cache_hit, "critical: no refresh by default");

    let text = String::from_utf8(common::web::call(server.http, "GET", "/metrics", "").body).unwrap();
    for (series, want) in [
        (r#"sark_policy_cache_stale_hits_total{sensitivity_level="medium",shard="0"}"#, 1.0),
        (r#"sark_policy_cache_stale_hits_total{sensitivity_level="critical",shard="0"}"#, 0.0),
        (r#"sark_pdp_cache_refreshes_total{shard="0",result="evaluated"}"#, 1.0),
        (r#"sark_policy_cache_hits_total{sensitivity_level="medium",shard="0"}"#, 2.0),
        (r#"sark_policy_cache_misses_total{sensitivity_level="critical",shard="0"}"#, 2.0),
        (r#"sark_policy_cache_evictions_total{sensitivity_level="medium",shard="0"}"#, 0.0),
    ] {
        assert_eq!(sample(&text, series), want, "{series}");
    }
    assert!(text.contains(r#"sark_policy_cache_evictions_total{sensitivity_level="low",shard="0"}"#));
    let records = server.stop();
    assert_eq!(records.len(), 6, "the refresh is not a decision anyone was given: no record");
    let _ = std::fs::remove_file(conf);
}

/// Each shard's finished warm-ups.
fn prewarm_runs(server: &Server, shards: usize) -> Vec<f64> {
    let text = String::from_utf8(common::web::call(server.http, "GET", "/metrics", "").body).unwrap();
    (0..shards).map(|s| sample(&text, &format!(r#"sark_pdp_cache_prewarms_total{{shard="{s}"}}"#))).collect()
}

/// Poll `/metrics` until every shard reports its warm-up (up to 20 s); each shard's entries.
fn prewarmed(server: &Server, shards: usize) -> Vec<f64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = String::from_utf8(common::web::call(server.http, "GET", "/metrics", "").body).unwrap();
        let runs = (0..shards).map(|s| sample(&text, &format!(r#"sark_pdp_cache_prewarms_total{{shard="{s}"}}"#)));
        if runs.into_iter().all(|n| n >= 1.0) {
            return (0..shards).map(|s| sample(&text, &format!(r#"sark_pdp_cache_prewarmed_entries{{shard="{s}"}}"#))).collect();
        }
        assert!(std::time::Instant::now() < deadline, "no warm-up reported: {text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_restarted_server_warms_its_shards_with_the_most_frequent_recent_questions() {
    let conf = std::env::temp_dir().join(format!("sark-pdp-prewarm-{}.toml", std::process::id()));
    std::fs::write(&conf, "[cache.prewarm]\ntop = 20\nminutes = 5\n").unwrap();
    let args = ["--shards", "2", "--config", conf.to_str().unwrap()];
    let mut server = Server::start_with("prewarm", &args);
    let mut router = Router::connect(server.addr, None).unwrap();
    let plain = |u: usize| Eval { parameters_json: None, ..ask(&format!("frequent-{u}"), "update_ticket") };
    // 30 questions, question u asked 30 - u times: the 20 most frequent are 0..20.
    for u in 0..30 {
        for _ in 0..30 - u {
            router.eval(plain(u)).unwrap();
        }
    }
    // Asked most of all, but with parameters: kept out of the log, so not warmed.
    for _ in 0..50 {
        router.eval(ask("with-parameters", "update_ticket")).unwrap();
    }
    drop(router);
    server.keep_audit = true;
    let lines = server.stop();
    assert!(lines.iter().filter(|l| l["user_id"] == "frequent-0").all(|l| l.get("replay").is_some()));
    assert!(lines.iter().filter(|l| l["user_id"] == "with-parameters").all(|l| l.get("replay").is_none()));

    let server = Server::resume("prewarm", &args);
    let entries = prewarmed(&server, 2);
    assert_eq!(entries.iter().sum::<f64>(), 20.0, "{entries:?}");
    let mut router = Router::connect(server.addr, None).unwrap();
    for u in 0..20 {
        assert!(router.eval(plain(u)).unwrap().cache_hit, "question {u} was warmed");
    }
    for u in 20..30 {
        assert!(!router.eval(plain(u)).unwrap().cache_hit, "question {u} is not in the top 20");
    }
    assert!(!router.eval(ask("with-parameters", "update_ticket")).unwrap().cache_hit);

    // A bundle swap empties the caches; the shards warm again, from a new scan.
    server.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while prewarm_runs(&server, 2).iter().any(|n| *n < 2.0) {
        assert!(std::time::Instant::now() < deadline, "no second warm-up");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for u in 0..20 {
        assert!(router.eval(plain(u)).unwrap().cache_hit, "question {u} was warmed again after the swap");
    }
    // The warm-ups' evaluations answered no one: only the questions above are new records.
    drop(router);
    let mut server = server;
    server.keep_audit = true;
    let after = server.stop();
    assert_eq!(after.len(), lines.len() + 51);

    // before_serving: a shard accepts only once warm, so the very first answers are hits.
    std::fs::write(&conf, "[cache.prewarm]\ntop = 20\nminutes = 5\nbefore_serving = true\n").unwrap();
    let server = Server::resume("prewarm", &args);
    let mut router = Router::connect(server.addr, None).unwrap();
    for u in 0..20 {
        assert!(router.eval(plain(u)).unwrap().cache_hit, "question {u}: warm before the first answer");
    }
    drop(router);
    server.stop();
    let _ = std::fs::remove_file(conf);
}

#[test]
fn cache_warmth_settings_out_of_range_stop_the_server_with_the_key_named() {
    for (toml, key) in [
        ("[cache.refresh]\nhigh = 1.5\n", "cache.refresh.high"),
        ("[cache.refresh]\ncritical = -0.1\n", "cache.refresh.critical"),
        ("[cache.adaptive]\nstart = 1.0\n", "cache.adaptive.start"),
        ("[cache.prewarm]\nminutes = 5\n", "set top"),
        ("[cache.prewarm]\ntop = 0\n", "cache.prewarm.top"),
        ("[cache.prewarm]\ntop = 10\nmax_mib = 0\n", "cache.prewarm.max_mib"),
        ("[cache.prewarm]\ntop = 10\nwindow = 3\n", "unknown field"),
    ] {
        let conf = std::env::temp_dir().join(format!("sark-pdp-warmth-bad-{}.toml", std::process::id()));
        std::fs::write(&conf, toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sark-pdp")).args(["serve", "--listen", "127.0.0.1:0", "--config", conf.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(key), "{toml:?}: {err}");
        let _ = std::fs::remove_file(conf);
    }
}
