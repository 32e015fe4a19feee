//! The `sark-pdp` binary as a user runs it: exit codes, output, one-line errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn sark_pdp(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sark-pdp"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn eval_decides_the_samples_with_the_embedded_bundle() {
    let allow = json(&sark_pdp(&["eval", "--input", "samples/invoke-medium.json"], ""));
    assert_eq!(allow["allow"], true, "{allow}");
    assert_eq!(allow["result"], "allow");
    assert_eq!(allow["metadata"]["engine"], "rvm");
    assert!(allow["metadata"]["bundle_revision"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(allow["filtered_parameters"].get("api_token").is_none(), "{allow}");
    let deny = json(&sark_pdp(&["eval", "--input", "samples/invoke-critical-viewer.json"], ""));
    assert_eq!(deny["allow"], false, "{deny}");
    assert!(!deny["reasons"].as_array().unwrap().is_empty());
}

#[test]
fn the_cache_ttl_follows_sark_variables() {
    // The sample without its fixed time: a question about now, which may be cached.
    let mut sample: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/invoke-medium.json")).unwrap())
            .unwrap();
    sample["context"].as_object_mut().unwrap().remove("now_ns");
    let run = |env: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sark-pdp"));
        cmd.arg("eval").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(v) = env {
            cmd.env("POLICY_CACHE_TTL_MEDIUM", v);
        }
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(sample.to_string().as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let default = json(&run(None));
    // medium: 300 s, unless the policy's own bound (the next time-window edge) is shorter.
    let policy = default["cache_ttl_s"].as_u64().unwrap();
    assert!(policy > 0, "{default}");
    assert_eq!(default["cache"]["ttl_s"].as_u64().unwrap(), policy.min(300), "{default}");
    let shorter = json(&run(Some("1")));
    assert_eq!(shorter["cache"]["ttl_s"], 1, "{shorter}");
    let bad = run(Some("soon"));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("POLICY_CACHE_TTL_MEDIUM"));
    // A question about another time is answered but not cached.
    let fixed = json(&sark_pdp(&["eval", "--input", "samples/invoke-medium.json"], ""));
    assert_eq!(fixed["cache"]["ttl_s"], 0, "{fixed}");
}

#[test]
fn both_engines_give_the_same_decision() {
    for sample in ["samples/invoke-medium.json", "samples/invoke-critical-viewer.json"] {
        let mut a = json(&sark_pdp(&["eval", "--input", sample], ""));
        let mut b = json(&sark_pdp(&["eval", "--input", sample, "--engine", "interpreter"], ""));
        assert_eq!(b["metadata"]["engine"], "interpreter");
        a.as_object_mut().unwrap().remove("metadata");
        b.as_object_mut().unwrap().remove("metadata");
        assert_eq!(a, b, "{sample}");
    }
}

#[test]
fn missing_time_is_stamped_and_other_entrypoints_answer() {
    let out = json(&sark_pdp(&["eval", "-e", "data.mcp.allow"], r#"{"user": {"id": "u", "roles": ["admin"]}, "action": "tool:invoke"}"#));
    assert!(out["result"].is_boolean(), "{out}");
    // An input with no context still decides (now_ns is stamped), and never errors.
    let out = json(&sark_pdp(&["eval"], r#"{"user": {"id": "u"}}"#));
    assert_eq!(out["allow"], false);
    assert!(out.get("error").is_none(), "{out}");
}

#[test]
fn non_object_input_is_a_deny_the_policy_explains_and_is_not_cached() {
    // Evaluated like any input, as OPA would: the shipped bundle checks the input's shape.
    let out = json(&sark_pdp(&["eval"], "[1, 2]"));
    assert_eq!(out["allow"], false);
    assert_eq!(out["result"], "deny");
    assert!(out["reasons"].as_array().unwrap().iter().any(|r| r == "input: must be an object"), "{out}");
    assert_eq!(out["cache"]["ttl_s"], 0);
}

#[test]
fn errors_are_one_line_with_file_and_position() {
    let out = sark_pdp(&["eval"], "{\n  \"user\": \n");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("<stdin>") && err.contains("line 3 column 0"), "{err}");

    let out = sark_pdp(&["eval", "-e", "data.nope.allow"], "{}");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown entrypoint data.nope.allow"));

    let dir = std::env::temp_dir().join(format!("sark-pdp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.rego"), "package sark\n\ndecision := {\"allow\": \n").unwrap();
    let out = sark_pdp(&["check", "--bundle", dir.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("p.rego:4:1"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();

    let out = sark_pdp(&["eval", "--input", "/nonexistent.json"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.json"));
}

#[test]
fn check_and_test_on_the_embedded_bundle() {
    let out = sark_pdp(&["check"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for ep in ["data.sark.decision", "data.mcp.allow", "data.mcp.result", "data.sark.gateway.allow", "data.mcp.gateway.a2a.result"] {
        assert!(text.contains(&format!("entrypoint {ep} ")), "{ep} missing from:\n{text}");
    }
    let out = sark_pdp(&["test"], "");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(text.trim_end().ends_with(" passed, 0 failed"), "{text}");
}

/// Every environment variable the server's code reads is documented in `--help` (the
/// binary's or a command's): the source is scanned for string literals that look like one.
#[test]
fn help_documents_every_flag_and_variable() {
    let mut help = String::new();
    for args in [&["--help"][..], &["serve", "--help"], &["eval", "--help"], &["reload", "--help"], &["test", "--help"], &["check", "--help"]] {
        let out = sark_pdp(args, "");
        assert!(out.status.success());
        help.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    for section in ["ENVIRONMENT", "FILES", "SIGNALS", "EXIT STATUS", "EXAMPLES", "LISTENERS", "SIZING"] {
        assert!(help.contains(section), "no {section} section");
    }
    let mut vars = std::collections::BTreeSet::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut dirs = vec![root.join("src"), root.join("../pdp/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(files.iter().any(|f| f.ends_with("ext_authz/grpc.rs")), "the walk reaches nested modules");
    {
        for path in files {
            let text = std::fs::read_to_string(path).unwrap();
            for piece in text.split('"').skip(1).step_by(2) {
                let prefixed = ["SARK_PDP_", "POLICY_", "SPLUNK_", "DATADOG_", "SIEM_"].iter().any(|p| piece.starts_with(p));
                if prefixed && piece.len() > 8 && piece.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                    vars.insert(piece.to_string());
                }
            }
        }
    }
    // The OPA reference engine's library is for tests and benchmarks; the binary never loads it.
    vars.remove("SARK_PDP_OPA_LIB");
    assert!(vars.len() > 25, "the scan found too few variables: {vars:?}");
    let documented = |v: &str| help.contains(v) || v.strip_prefix("POLICY_CACHE_TTL").is_some_and(|rest| help.contains(rest));
    let missing: Vec<&String> = vars.iter().filter(|v| !documented(v)).collect();
    assert!(missing.is_empty(), "read by the code, not in --help: {missing:?}");
    // Every serve flag has its own line with a description.
    let serve = String::from_utf8_lossy(&sark_pdp(&["serve", "--help"], "").stdout).to_string();
    for flag in ["--listen", "--shards", "--audit-dir", "--http-listen", "--ext-authz-listen", "--admin-token", "--caller-token", "--tls-cert", "--cluster-redis", "--config"] {
        assert!(serve.contains(flag), "{flag}");
    }
}

/// Under an affinity mask (taskset, a cpuset, systemd's CPUAffinity=) shard i is pinned to
/// the i-th CPU the mask allows, not to the machine's CPU i.
#[test]
fn shards_pin_to_the_cpus_the_process_is_allowed() {
    use std::io::BufRead;
    let last = std::thread::available_parallelism().unwrap().get() - 1;
    let audit = std::env::temp_dir().join(format!("sark-pdp-pin-{}", std::process::id()));
    let mut child = Command::new("taskset")
        .args(["-c", &last.to_string(), env!("CARGO_BIN_EXE_sark-pdp"), "serve", "--listen", "127.0.0.1:0", "--http-listen", "off", "--shards", "2", "--audit-dir"])
        .arg(&audit)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        said.push(line.clone());
        // The shards and the writer say where they are in any order.
        if said.iter().filter(|l| l.contains("driver")).count() == 2 && said.iter().any(|l| l.contains("audit writer")) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&audit);
    for who in ["shard 0", "shard 1", "audit writer"] {
        assert!(said.iter().any(|l| l.contains(&format!("{who} on CPU {last}"))), "{who} not on CPU {last}: {said:?}");
    }
}

#[test]
fn eval_explain_prints_why_as_indented_text() {
    let out = sark_pdp(&["eval", "--explain", "--input", "samples/invoke-critical-viewer.json"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("decision: deny (data.sark.decision)\n  engine rvm, freshly evaluated, bundle sark-default-1\npolicies:\n"), "{text}");
    // Each applied policy with its verdict, its reasons indented under it.
    assert!(text.contains("\n  mfa           deny\n                  mfa: multi-factor authentication required (user.mfa_verified)\n"), "{text}");
    assert!(text.contains("\n  rbac          allow\n"), "{text}");
    assert!(text.contains("\nreasons:\n  - ip_filtering: VPN required for critical tool:invoke\n"), "{text}");
    assert!(!text.contains("trace:"), "notes only: {text}");

    let full = sark_pdp(&["eval", "--explain=full", "--input", "samples/invoke-critical-viewer.json", "--engine", "interpreter"], "");
    let full = String::from_utf8(full.stdout).unwrap();
    assert!(full.starts_with("decision: deny (data.sark.decision)\n  engine interpreter,"), "{full}");
    assert!(full.contains("\ntrace: data.sark.decision re-evaluated on the interpreter; agrees with the answer above\n"), "{full}");
    assert!(full.contains("\n  data.sark.mfa.deny = [\"mfa: multi-factor authentication required (user.mfa_verified)\"]\n    mfa.rego:"), "{full}");
    // Another entrypoint: its value, then its explanation.
    let other = sark_pdp(&["eval", "-e", "data.sark.rbac.allow", "--explain=full"], r#"{"user": {"id": "u", "roles": ["admin"]}, "action": "tool:invoke"}"#);
    let other = String::from_utf8(other.stdout).unwrap();
    assert!(other.starts_with("result: true\nentrypoint: data.sark.rbac.allow\n"), "{other}");
    assert!(other.contains("\n  data.sark.rbac.deny = []\n"), "{other}");
    // A value it does not know: exit 2, the values it does.
    let bad = sark_pdp(&["eval", "--explain=fails", "--input", "samples/invoke-medium.json"], "");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("[possible values: notes, full]"), "{}", String::from_utf8_lossy(&bad.stderr));
}
