//! Closed-loop load on a running server's ext_authz listener, with the client Envoy's proto
//! generates (envoy-types): `CONCURRENCY` Checks in flight over one HTTP/2 connection for
//! `SECONDS`, after one second of warm-up; prints Checks/s and the allow count.
//!
//! ```sh
//! taskset -c 1 cargo run --release -p shard --example ext_authz_load -- 127.0.0.1:9191 hit 64 10
//! ```
//!
//! `hit`: one user and tool, so every Check after the first is a cache hit; `miss`: a new
//! user each Check. One thread (tokio's current-thread runtime): pin it to a core of its own
//! and watch both sides' CPU to tell which is the bottleneck.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{Address as EnvoyAddress, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

fn check_request(user: &str) -> CheckRequest {
    let headers: HashMap<String, String> = [
        ("x-sark-user-id", user),
        ("x-sark-user-roles", "developer"),
        ("x-sark-user-teams", "payments"),
        ("x-sark-mfa-verified", "true"),
        ("x-sark-tool", "update_ticket"),
        ("x-sark-tool-sensitivity", "medium"),
        ("x-sark-server-id", "srv-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let peer = EnvoyAddress { address: Some(Address::SocketAddress(SocketAddress { address: "10.20.30.40".into(), ..Default::default() })) };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer { address: Some(peer), ..Default::default() }),
            request: Some(Request { http: Some(HttpRequest { method: "POST".into(), path: "/mcp".into(), headers, ..Default::default() }), ..Default::default() }),
            ..Default::default()
        }),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:9191".into());
    let miss = args.get(2).is_some_and(|s| s == "miss");
    let concurrency: usize = args.get(3).map_or(64, |s| s.parse().expect("concurrency"));
    let seconds: u64 = args.get(4).map_or(10, |s| s.parse().expect("seconds"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().unwrap();
    let (done, allowed) = rt.block_on(async move {
        let client = AuthorizationClient::connect(format!("http://{addr}")).await.expect("connect");
        let (counted, done, allowed, next) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (mut c, counted, done, allowed, next, stop) = (client.clone(), counted.clone(), done.clone(), allowed.clone(), next.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let user = if miss { format!("user-{}", next.fetch_add(1, Ordering::Relaxed)) } else { "alice".to_string() };
                    let r = c.check(check_request(&user)).await.expect("check").into_inner();
                    if counted.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                        if r.status.is_some_and(|s| s.code == 0) {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        counted.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (n, a) = (done.load(Ordering::Relaxed), allowed.load(Ordering::Relaxed));
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        (n as f64 / t0.elapsed().as_secs_f64(), a as f64 / n.max(1) as f64)
    });
    println!("{{\"checks_per_s\": {done:.0}, \"allowed\": {allowed:.3}, \"concurrency\": {concurrency}, \"scenario\": \"{}\"}}", if miss { "miss" } else { "hit" });
}
