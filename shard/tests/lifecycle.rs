//! Policy lifecycle as a black box: reload (admin API and SIGHUP) under load, a broken
//! bundle refused, cache invalidation acknowledged by every shard.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Server;
use common::web::{call, exchange, request, sample_input};
use serde_json::json;

const TOKEN: &str = "test-admin-token-0123456789";

/// A copy of the shipped bundle to edit.
fn bundle_copy(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sark-pdp-bundle-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies")), &dir);
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn set_revision(dir: &Path, revision: &str) {
    let path = dir.join(".manifest");
    let text = std::fs::read_to_string(&path).unwrap().replace("sark-default-1", revision);
    std::fs::write(&path, text).unwrap();
}

fn admin(addr: SocketAddr, path: &str, body: &str, token: Option<&str>) -> common::web::Resp {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    exchange(addr, &request("POST", path, body, &format!("{auth}connection: close\r\n")), 1).pop().expect("no answer")
}

fn revision_of(r: &serde_json::Value) -> String {
    r["result"]["metadata"]["bundle_revision"].as_str().unwrap_or("?").to_string()
}

#[test]
fn reload_under_load_switches_every_answer_and_refuses_a_broken_bundle() {
    let dir = bundle_copy("reload");
    let server = Server::start_env(
        "reload",
        &["--shards", "2", "--bundle", dir.to_str().unwrap()],
        &[("SARK_PDP_ADMIN_TOKEN", TOKEN), ("SARK_PDP_ADMIN_LISTEN", "127.0.0.1:0")],
    );
    let admin_addr = server.admin.expect("the admin API is on with a token");
    let http = server.http;
    let input = json!({"input": sample_input()}).to_string();

    // Without the token: 401, nothing happens.
    assert_eq!(admin(admin_addr, "/v1/admin/reload", "", None).status, 401);
    assert_eq!(admin(admin_addr, "/v1/admin/reload", "", Some("wrong-token-wrong-token")).status, 401);

    // Clients keep asking during the reload; every answer must succeed, and each one that
    // began after the reload was acknowledged must carry the new revision.
    let stop = Arc::new(AtomicBool::new(false));
    let acked_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, acked_at, input) = (stop.clone(), acked_at.clone(), input.clone());
            std::thread::spawn(move || {
                let (mut after, mut total) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    let r = call(http, "POST", "/v1/data/sark/decision", &input);
                    assert_eq!(r.status, 200);
                    total += 1;
                    let ack = *acked_at.lock().unwrap();
                    if ack.is_some_and(|a| began > a) {
                        assert_eq!(revision_of(&r.json()), "sark-reloaded-2", "an old answer after the reload was acknowledged");
                        after += 1;
                    }
                }
                (total, after)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    set_revision(&dir, "sark-reloaded-2");
    let r = admin(admin_addr, "/v1/admin/reload", "", Some(TOKEN));
    *acked_at.lock().unwrap() = Some(Instant::now());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"revision": "sark-reloaded-2", "acknowledged": true}));
    std::thread::sleep(Duration::from_millis(300));

    // A broken bundle: refused with the reason, the new-old one keeps serving.
    std::fs::write(dir.join("broken.rego"), "package sark.broken\nallow if {\n").unwrap();
    let r = admin(admin_addr, "/v1/admin/reload", "", Some(TOKEN));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["code"], "bundle_refused");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let (total, after) = c.join().unwrap();
        assert!(total > 10 && after > 0, "{total} answers, {after} after the reload");
    }
    let health = call(http, "GET", "/health?bundles", "").json();
    assert_eq!(health["bundles"]["revision"], "sark-reloaded-2");
    assert_eq!(health["bundles"]["last_reload"]["ok"], false);
    assert!(health["bundles"]["last_reload"]["error"].as_str().unwrap().contains("broken.rego"), "{health}");
    let metrics = String::from_utf8(call(http, "GET", "/metrics", "").body).unwrap();
    assert!(metrics.contains("sark_pdp_bundle_changes_total{result=\"ok\"} 1"), "{metrics}");
    assert!(metrics.contains("sark_pdp_bundle_changes_total{result=\"refused\"} 1"), "{metrics}");

    // SIGHUP reloads too (once the broken file is gone).
    std::fs::remove_file(dir.join("broken.rego")).unwrap();
    let text = std::fs::read_to_string(dir.join(".manifest")).unwrap().replace("sark-reloaded-2", "sark-reloaded-3");
    std::fs::write(dir.join(".manifest"), text).unwrap();
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = call(http, "POST", "/v1/data/sark/decision", &input).json();
        if revision_of(&r) == "sark-reloaded-3" {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every decision is audited with the revision that made it.
    let records = server.stop();
    let revisions: std::collections::BTreeSet<&str> = records.iter().map(|r| r["bundle_revision"].as_str().unwrap()).collect();
    assert!(revisions.contains("sark-default-1") && revisions.contains("sark-reloaded-2") && revisions.contains("sark-reloaded-3"), "{revisions:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalidating_everything_is_acknowledged_by_every_shard() {
    let server = Server::start_env("invalidate", &["--shards", "2"], &[("SARK_PDP_ADMIN_TOKEN", TOKEN), ("SARK_PDP_ADMIN_LISTEN", "127.0.0.1:0")]);
    let admin_addr = server.admin.unwrap();
    let mut c = wire::Client::connect(server.addr, None).unwrap();
    let q = wire::message::Eval::example("inv");
    c.eval(q.clone()).unwrap();
    assert!(c.eval(q.clone()).unwrap().cache_hit);
    let r = admin(admin_addr, "/v1/admin/invalidate", r#"{"all": true}"#, Some(TOKEN));
    assert_eq!((r.status, r.json()), (200, json!({"acknowledged": true})));
    assert!(!c.eval(q.clone()).unwrap().cache_hit, "served from the cache after an acknowledged invalidation");
    assert!(c.eval(q).unwrap().cache_hit);
    // By user: that user's decisions go, everyone else's stay; by tool: every user's on it.
    let other = wire::message::Eval::example("other");
    c.eval(other.clone()).unwrap();
    assert!(c.eval(other.clone()).unwrap().cache_hit);
    let r = admin(admin_addr, "/v1/admin/invalidate", r#"{"user_id": "inv"}"#, Some(TOKEN));
    assert_eq!((r.status, r.json()), (200, json!({"acknowledged": true})));
    assert!(!c.eval(wire::message::Eval::example("inv")).unwrap().cache_hit);
    assert!(c.eval(other.clone()).unwrap().cache_hit, "another user's decision was dropped");
    let r = admin(admin_addr, "/v1/admin/invalidate", r#"{"tool": "update_ticket"}"#, Some(TOKEN));
    assert_eq!(r.status, 200);
    assert!(!c.eval(other).unwrap().cache_hit);
    assert_eq!(admin(admin_addr, "/v1/admin/invalidate", r#"{"user": 5}"#, Some(TOKEN)).status, 400);

    // The same over the binary protocol: INVALIDATE needs the admin token in HELLO.
    let q = wire::message::Eval::example("bin");
    c.eval(q.clone()).unwrap();
    assert!(c.eval(q.clone()).unwrap().cache_hit);
    match c.invalidate(wire::message::Invalidate::User("bin".into())) {
        Err(wire::ClientError::Server(e)) => assert_eq!(e.code, wire::message::ERROR_UNAUTHORIZED),
        other => panic!("{other:?}"),
    }
    assert!(c.eval(q.clone()).unwrap().cache_hit, "a refused INVALIDATE dropped nothing");
    let mut root = wire::Client::connect(server.addr, Some(TOKEN)).unwrap();
    assert!(root.invalidate(wire::message::Invalidate::User("bin".into())).unwrap());
    assert!(!c.eval(q).unwrap().cache_hit, "served from the cache after an acknowledged INVALIDATE");
    assert!(root.ping(b"still").is_ok());
    assert_eq!(admin(admin_addr, "/v1/admin/invalidate", r#"{"all": true}"#, None).status, 401);
    server.stop();
}

#[test]
fn sark_pdp_reload_asks_the_running_server() {
    let server = Server::start_env("cli-reload", &["--shards", "1"], &[("SARK_PDP_ADMIN_TOKEN", TOKEN), ("SARK_PDP_ADMIN_LISTEN", "127.0.0.1:0")]);
    let admin_addr = server.admin.unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sark-pdp"))
        .args(["reload", "--admin", &admin_addr])
        .env("SARK_PDP_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, json!({"revision": "sark-default-1", "acknowledged": true}));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sark-pdp"))
        .args(["reload", "--admin", &admin_addr, "--token", "not-the-token-at-all"])
        .env_remove("SARK_PDP_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    server.stop();
}

#[test]
fn a_data_write_is_honoured_by_every_answer_that_begins_after_it_returns() {
    let server = Server::start_env("data", &["--shards", "2"], &[("SARK_PDP_ADMIN_TOKEN", TOKEN), ("SARK_PDP_ADMIN_LISTEN", "127.0.0.1:0")]);
    let (admin_addr, http) = (server.admin.unwrap(), server.http);
    let put = |body: &str| {
        let auth = format!("authorization: Bearer {TOKEN}\r\nconnection: close\r\n");
        exchange(admin_addr, &request("PUT", "/v1/data/sark_config/ip_filtering/blocklist", body, &auth), 1).pop().unwrap()
    };
    // The client's address (10.20.30.40) is allowed, and the answer cached.
    let mut present = sample_input();
    present["context"].as_object_mut().unwrap().remove("now_ns");
    let input = json!({"input": present}).to_string();
    assert_eq!(call(http, "POST", "/v1/data/mcp/allow", &input).json()["result"], true);

    // Clients hammer that cached allow while the blocklist flips; every answer that began
    // after a "block" returned and ended before the next "unblock" began must be a deny.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, input) = (stop.clone(), input.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    let allow = call(http, "POST", "/v1/data/mcp/allow", &input).json()["result"] == true;
                    seen.push((began, Instant::now(), allow));
                }
                seen
            })
        })
        .collect();
    let mut blocked = Vec::new();
    for _ in 0..5 {
        let r = put(r#"["10.20.30.40"]"#);
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
        let from = Instant::now();
        std::thread::sleep(Duration::from_millis(60));
        let until = Instant::now();
        assert_eq!(put(r#"["203.0.113.66"]"#).status, 204);
        blocked.push((from, until));
        std::thread::sleep(Duration::from_millis(60));
    }
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<(Instant, Instant, bool)> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let inside: Vec<_> = seen.iter().filter(|(b, e, _)| blocked.iter().any(|(f, u)| b > f && e < u)).collect();
    assert!(inside.len() >= 10, "only {} answers fell inside the blocked windows", inside.len());
    let allowed = inside.iter().filter(|(_, _, allow)| *allow).count();
    assert_eq!(allowed, 0, "{allowed} allows after the blocklist write returned");

    // A JSON Patch works the same way, and the revision says what changed.
    let auth = format!("authorization: Bearer {TOKEN}\r\nconnection: close\r\n");
    let patch = r#"[{"op": "add", "path": "/-", "value": "10.20.30.40"}]"#;
    let r = exchange(admin_addr, &request("PATCH", "/v1/data/sark_config/ip_filtering/blocklist", patch, &auth), 1).pop().unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(call(http, "POST", "/v1/data/mcp/allow", &input).json()["result"], false);
    let d = call(http, "POST", "/v1/data/sark/decision", &input).json();
    assert_eq!(d["result"]["metadata"]["bundle_revision"], "sark-default-1+data.11");
    let bad = exchange(admin_addr, &request("PATCH", "/v1/data/sark_config", r#"[{"op": "remove", "path": "/nope"}]"#, &auth), 1).pop().unwrap();
    assert_eq!(bad.status, 400);
    // Without the token: refused.
    assert_eq!(exchange(admin_addr, &request("PUT", "/v1/data/x", "1", "connection: close\r\n"), 1).pop().unwrap().status, 401);
    server.stop();
}

/// A bundle .tar.gz of `dir` (entries at the archive's root, as OPA builds them).
fn tar_gz(dir: &Path) -> Vec<u8> {
    let out = dir.with_extension("tar.gz");
    let names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let status = std::process::Command::new("tar").arg("czf").arg(&out).arg("-C").arg(dir).args(&names).status().unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// A bundle server: serves `bundle` with its ETag, 304 when the client already has it.
/// Returns its address and (requests, 304s) counters.
fn bundle_server(bundle: Arc<std::sync::Mutex<(String, Vec<u8>)>>) -> (SocketAddr, Arc<std::sync::Mutex<(usize, usize)>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counts: Arc<std::sync::Mutex<(usize, usize)>> = Arc::default();
    let c = counts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&req).to_lowercase();
            let (etag, body) = bundle.lock().unwrap().clone();
            let mut counts = c.lock().unwrap();
            counts.0 += 1;
            if text.contains(&format!("if-none-match: {}", etag.to_lowercase())) {
                counts.1 += 1;
                let _ = s.write_all(b"HTTP/1.1 304 Not Modified\r\nconnection: close\r\n\r\n");
            } else {
                let head = format!("HTTP/1.1 200 OK\r\netag: {etag}\r\ncontent-type: application/gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
            }
        }
    });
    (addr, counts)
}

#[test]
fn a_polled_bundle_server_is_followed_with_etags() {
    let dir = bundle_copy("poll");
    set_revision(&dir, "polled-1");
    let served = Arc::new(std::sync::Mutex::new(("\"v1\"".to_string(), tar_gz(&dir))));
    let (addr, counts) = bundle_server(served.clone());
    let url = format!("http://{addr}/bundles/sark.tar.gz");
    let server = Server::start_with("poll", &["--shards", "1", "--bundle-url", &url, "--bundle-poll-s", "1"]);
    let revision = || call(server.http, "GET", "/health?bundles", "").json()["bundles"]["revision"].as_str().unwrap().to_string();
    let wait_for = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while revision() != want {
            assert!(Instant::now() < deadline, "never served {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("polled-1");
    // Unchanged: the next polls are answered 304 and nothing is reloaded.
    std::thread::sleep(Duration::from_millis(2500));
    let (requests, not_modified) = *counts.lock().unwrap();
    assert!(requests >= 2 && not_modified >= 1, "{requests} requests, {not_modified} answered 304");
    assert_eq!(revision(), "polled-1");
    // A broken bundle is refused; the current one keeps serving.
    *served.lock().unwrap() = ("\"v2\"".into(), b"not a tar.gz".to_vec());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(revision(), "polled-1");
    // A new one is validated and swapped in.
    let text = std::fs::read_to_string(dir.join(".manifest")).unwrap().replace("polled-1", "polled-2");
    std::fs::write(dir.join(".manifest"), text).unwrap();
    *served.lock().unwrap() = ("\"v3\"".into(), tar_gz(&dir));
    wait_for("polled-2");
    let metrics = String::from_utf8(call(server.http, "GET", "/metrics", "").body).unwrap();
    assert!(metrics.contains("sark_pdp_bundle_changes_total{result=\"refused\"}"), "{metrics}");
    server.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A real redis-server on a free port, stopped on drop (installed by scripts/test-deps.sh).
struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/test-deps.sh");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_nodes_share_invalidations_and_data_writes_through_redis() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let env = [("SARK_PDP_ADMIN_TOKEN", TOKEN), ("SARK_PDP_ADMIN_LISTEN", "127.0.0.1:0")];
    let a = Server::start_env("node-a", &["--shards", "1", "--cluster-redis", &url, "--node-id", "a"], &env);
    let b = Server::start_env("node-b", &["--shards", "1", "--cluster-redis", &url, "--node-id", "b"], &env);
    let a_admin = a.admin.unwrap();

    // Node B caches a decision; an invalidation on node A that waits for one other node
    // has been applied by B when it returns.
    let mut on_b = wire::Client::connect(b.addr, None).unwrap();
    let q = wire::message::Eval::example("shared");
    on_b.eval(q.clone()).unwrap();
    assert!(on_b.eval(q.clone()).unwrap().cache_hit);
    let r = admin(a_admin, "/v1/admin/invalidate?wait_nodes=1", r#"{"user_id": "shared"}"#, Some(TOKEN));
    assert_eq!((r.status, r.json()), (200, json!({"acknowledged": true, "nodes_acknowledged": 1})));
    assert!(!on_b.eval(q.clone()).unwrap().cache_hit, "node B answered from its cache after A's call returned");

    // A data write on A is served by B too before A's call returns.
    let mut present = sample_input();
    present["context"].as_object_mut().unwrap().remove("now_ns");
    let input = json!({"input": present}).to_string();
    assert_eq!(call(b.http, "POST", "/v1/data/mcp/allow", &input).json()["result"], true);
    let auth = format!("authorization: Bearer {TOKEN}\r\nconnection: close\r\n");
    let put = request("PUT", "/v1/data/sark_config/ip_filtering/blocklist?wait_nodes=1", r#"["10.20.30.40"]"#, &auth);
    let r = exchange(a_admin, &put, 1).pop().unwrap();
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(call(b.http, "POST", "/v1/data/mcp/allow", &input).json()["result"], false, "node B still allows");
    assert_eq!(call(a.http, "POST", "/v1/data/mcp/allow", &input).json()["result"], false);
    // Without a cluster, waiting for other nodes is refused rather than ignored.
    let single = Server::start_env("node-single", &["--shards", "1"], &env);
    let r = admin(single.admin.unwrap(), "/v1/admin/invalidate?wait_nodes=1", r#"{"all": true}"#, Some(TOKEN));
    assert_eq!(r.status, 502);
    single.stop();
    a.stop();
    b.stop();
}

#[test]
fn a_watched_bundle_directory_reloads_when_it_changes() {
    let dir = bundle_copy("watch");
    let server = Server::start_with("watch", &["--shards", "1", "--bundle", dir.to_str().unwrap(), "--watch"]);
    let revision = || call(server.http, "GET", "/health?bundles", "").json()["bundles"]["revision"].as_str().unwrap().to_string();
    assert_eq!(revision(), "sark-default-1");
    set_revision(&dir, "watched-2");
    let deadline = Instant::now() + Duration::from_secs(30);
    while revision() != "watched-2" {
        assert!(Instant::now() < deadline, "the change was not picked up");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A broken edit is refused; the last good bundle keeps serving.
    std::fs::write(dir.join("broken.rego"), "package x\nallow if {\n").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(revision(), "watched-2");
    server.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}
