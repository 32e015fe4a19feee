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
