//! pdp-bench against the real server: `compare` starting two configurations, and the
//! closed loop and the sweep over HTTP with their JSON and plots. `sark-pdp` is the one
//! built beside `pdp-bench` (`cargo test --workspace` builds it; alone: `cargo build -p shard`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn pdp_bench() -> &'static str {
    env!("CARGO_BIN_EXE_pdp-bench")
}

fn sark_pdp() -> PathBuf {
    let path = Path::new(pdp_bench()).with_file_name("sark-pdp");
    assert!(path.exists(), "{} is not built: cargo build -p shard (cargo test --workspace builds it)", path.display());
    path
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pdp-bench-drive-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bench(args: &[&str]) -> Output {
    let out = Command::new(pdp_bench()).args(args).output().unwrap();
    assert!(out.status.success(), "pdp-bench {args:?}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One shard with its HTTP front door on port 0; the binary and HTTP addresses.
fn serve(dir: &Path, extra: &[&str]) -> (Server, String, String) {
    serve_shards(dir, 1, extra)
}

fn serve_shards(dir: &Path, shards: usize, extra: &[&str]) -> (Server, String, String) {
    let mut child = Command::new(sark_pdp())
        .args(["serve", "--shards", &shards.to_string(), "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--audit-dir"])
        .arg(dir.join("audit"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addrs: Vec<&str> = line.split_whitespace().filter(|w| w.parse::<std::net::SocketAddr>().is_ok()).collect();
    assert_eq!(addrs.len(), 2, "{line}");
    (Server(child), addrs[0].to_string(), addrs[1].to_string())
}

#[test]
fn compare_starts_both_configurations_in_turn() {
    let dir = scratch("compare");
    let out = dir.join("compare.json");
    let a = format!("{} serve --shards 1", sark_pdp().display());
    let b = format!("{a} --audit-durability none");
    let shown = bench(&["compare", "--a", &a, "--b", &b, "--pairs", "2", "--scenario", "hit", "--duration", "0.5", "--warmup", "0.3", "--json", out.to_str().unwrap()]);
    let v = json(&out);
    let pairs = v["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 2);
    for p in pairs {
        for side in ["a", "b"] {
            assert!(p[side]["per_s"].as_f64().unwrap() > 0.0 && p[side]["wrong"] == 0, "{p}");
            assert!(p[side]["cpu"]["shard-0"].is_number(), "the started server's threads are sampled: {p}");
        }
        let ratio = p["b"]["per_s"].as_f64().unwrap() / p["a"]["per_s"].as_f64().unwrap();
        assert!((p["ratio"].as_f64().unwrap() - ratio).abs() < 1e-9);
    }
    assert!(String::from_utf8_lossy(&shown.stdout).contains("B ÷ A: median"));
    // A command that cannot start is a clear error, not a hang.
    let bad = Command::new(pdp_bench()).args(["compare", "--a", "/nonexistent/sark-pdp serve", "--b", &a, "--pairs", "1"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("starting"), "{}", String::from_utf8_lossy(&bad.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn http_runs_count_hits_from_the_server_and_sweeps_are_plotted() {
    let dir = scratch("http");
    let (_server, _, http) = serve(&dir, &[]);
    // The hit scenario's 64 inputs, asked 256 times: misses first, then hits; asked again:
    // hits only — as the server's own /metrics counts them.
    let mut ratios = Vec::new();
    for round in ["first", "again"] {
        let out = dir.join(format!("{round}.json"));
        bench(&["closed", "--transport", "http", "--addr", &http, "--scenario", "hit", "--depth", "4", "--requests", "256", "--warmup", "0", "--json", out.to_str().unwrap()]);
        let r = json(&out);
        assert_eq!((r["transport"].as_str(), r["wrong"].as_u64()), (Some("http"), Some(0)), "{r}");
        assert_eq!((r["per_s"].as_f64().unwrap() * r["seconds"].as_f64().unwrap()).round(), 256.0, "{r}");
        ratios.push(r["hit_ratio"].as_f64().unwrap());
        assert!(dir.join(format!("{round}.throughput.svg")).exists());
    }
    assert!(ratios[0] < 1.0 && ratios[0] >= 0.5 && ratios[1] == 1.0, "{ratios:?}");

    // Split over connections that do not divide it; the run ends when they are answered.
    let counted = dir.join("counted.json");
    bench(&["closed", "--transport", "http", "--addr", &http, "--scenario", "miss", "--connections", "3", "--depth", "2", "--requests", "200", "--duration", "60", "--warmup", "0.2", "--json", counted.to_str().unwrap()]);
    let r = json(&counted);
    let seconds = r["seconds"].as_f64().unwrap();
    assert_eq!((r["per_s"].as_f64().unwrap() * seconds).round(), 200.0, "{r}");
    assert!(seconds < 30.0, "not at --duration: {r}");

    let sweep = dir.join("sweep.json");
    let shown = bench(&["sweep", "--transport", "http", "--addr", &http, "--scenario", "seed-mix", "--depth", "2", "--steps", "2", "--duration", "0.5", "--warmup", "0.2", "--json", sweep.to_str().unwrap()]);
    let v = json(&sweep);
    let steps = v["steps"].as_array().unwrap();
    let peak = v["peak_per_s"].as_f64().unwrap();
    assert_eq!(steps.len(), 2);
    assert!((steps[0]["offered"].as_f64().unwrap() - peak / 2.0).abs() < 1e-6 && (steps[1]["offered"].as_f64().unwrap() - peak).abs() < 1e-6);
    for s in steps {
        assert!(s["wrong"] == 0 && s["deny_ratio"].as_f64().unwrap() > 0.0, "the seed mix asks what SARK denies: {s}");
    }
    assert!(String::from_utf8_lossy(&shown.stdout).contains("| 50 |"));
    for plot in ["sweep.latency.svg", "sweep.throughput.svg"] {
        assert!(std::fs::read_to_string(dir.join(plot)).unwrap().starts_with("<svg"), "{plot}");
    }
    // Limits: refused before any load.
    let bad = Command::new(pdp_bench()).args(["closed", "--transport", "http", "--addr", &http, "--scenario", "hit", "--batch", "8"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("batch is 1"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_server_with_a_caller_token_is_driven_with_it() {
    let dir = scratch("token");
    let token = "caller-token-0123456789";
    let (_server, bin, http) = serve(&dir, &["--caller-token", token]);
    for (transport, addr) in [("binary", &bin), ("http", &http)] {
        let out = dir.join(format!("{transport}.json"));
        let common = ["closed", "--transport", transport, "--addr", addr, "--scenario", "hit", "--requests", "64", "--warmup", "0"];
        bench(&[&common[..], &["--token", token, "--json", out.to_str().unwrap()]].concat());
        let r = json(&out);
        assert_eq!((r["wrong"].as_u64(), (r["per_s"].as_f64().unwrap() * r["seconds"].as_f64().unwrap()).round()), (Some(0), 64.0), "{r}");
        // Without the token: refused, and pdp-bench says so.
        let refused = Command::new(pdp_bench()).args(common).args(["--duration", "1"]).env_remove("SARK_PDP_CALLER_TOKEN").output().unwrap();
        assert!(!refused.status.success(), "{transport}: {}", String::from_utf8_lossy(&refused.stdout));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn affine_routing_sends_each_question_to_the_shard_that_owns_it() {
    let dir = scratch("affine");
    let (server, addr, _) = serve_shards(&dir, 3, &["--audit-durability", "none"]);
    let out = dir.join("affine.json");
    bench(&["closed", "--scenario", "seed-mix", "--route", "affine", "--connections", "3", "--depth", "8", "--duration", "1", "--warmup", "0.2", "--addr", &addr, "--json", out.to_str().unwrap()]);
    let v = json(&out);
    let run = if v["runs"].is_array() { v["runs"][0].clone() } else { v.clone() };
    assert_eq!((run["route"].as_str(), run["wrong"].as_u64()), (Some("affine"), Some(0)), "{run}");
    assert!(!run["hit_timeline"].as_array().unwrap().is_empty(), "{run}");
    // SIGTERM: the writer drains the rings before the process exits.
    let mut server = server;
    Command::new("kill").args(["-TERM", &server.0.id().to_string()]).status().unwrap();
    server.0.wait().unwrap();
    // Every decision was made by the shard its user and tool hash to.
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.join("audit")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        for l in std::fs::read_to_string(path).unwrap().lines() {
            let Ok(r) = serde_json::from_str::<serde_json::Value>(l) else { continue };
            let id = u128::from_str_radix(r["decision_id"].as_str().unwrap(), 16).unwrap();
            let owner = wire::route::owner(r["user_id"].as_str().unwrap(), r["tool_name"].as_str().unwrap_or(""), 3);
            assert_eq!((id >> 112) as u16, owner, "{l}");
            checked += 1;
        }
    }
    assert!(checked > 300, "only {checked} records");
}
