//! The Grafana dashboard (`deploy/grafana/sark-pdp.json`) against the real binary's
//! `GET /metrics`, and the sampled stage histograms it charts
//! (`sark_pdp_stage_duration_seconds{stage,shard}`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::Server;
use common::web::{call, sample_input};
use serde_json::{Value, json};
use wire::message::Eval;
use wire::{Client, Request};

/// PromQL words that are not metric names: aggregations, keywords, set operators.
const KEYWORDS: &[&str] = &[
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "sum", "avg", "min", "max",
    "count", "rate", "irate", "increase", "histogram_quantile", "topk", "bottomk", "le", "inf", "nan",
];

/// The metric names a PromQL expression (or a Grafana `label_values(metric, label)` query)
/// reads: identifiers that are not functions (followed by `(`), not label names (inside
/// `{…}`, `by (…)`, `without (…)`, `on (…)`, `ignoring (…)`, `group_left/right (…)`, or
/// `label_values`' second argument), not keywords, not Grafana variables (`$x`, `${x}`),
/// strings, durations (`[5m]`) or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Strings and Grafana variables go first (either may hold anything), then label
    // matchers and ranges, which hold label names and durations, never metrics.
    let mut flat = String::new();
    let (mut chars, mut depth) = (expr.chars().peekable(), 0);
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let _ = chars.by_ref().find(|d| *d == c);
            }
            '$' if chars.peek() == Some(&'{') => {
                let _ = chars.by_ref().find(|d| *d == '}');
            }
            '$' => {
                while chars.next_if(|d| d.is_alphanumeric() || *d == '_').is_some() {}
            }
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth > 0 => {}
            _ => flat.push(c),
        }
    }
    let text: Vec<char> = flat.chars().collect();
    let next_char = |from: usize| text.get(from..).and_then(|r| r.iter().copied().find(|c| !c.is_whitespace()));
    let close_of = |from: usize| text.get(from..).and_then(|r| r.iter().position(|c| *c == ')')).map_or(text.len(), |p| from + p + 1);
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        if c.is_ascii_digit() || c == '.' {
            // A number (0.99, 1e-7), exponent included.
            i += 1;
            while i < text.len() && (text[i].is_ascii_alphanumeric() || text[i] == '.' || (matches!(text[i], '-' | '+') && matches!(text[i - 1], 'e' | 'E'))) {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len() && (text[i].is_ascii_alphanumeric() || text[i] == '_' || text[i] == ':') {
            i += 1;
        }
        let word: String = text[start..i].iter().collect();
        let lower = word.to_ascii_lowercase();
        let call = next_char(i) == Some('(');
        if call && matches!(lower.as_str(), "by" | "without" | "on" | "ignoring" | "group_left" | "group_right") {
            i = close_of(i); // a list of label names
        } else if call && lower == "label_values" {
            // label_values(metric, label): the metric, then a label name.
            let inside: String = text[i..close_of(i)].iter().collect();
            if let Some(metric) = inside.trim_start_matches(|c: char| c == '(' || c.is_whitespace()).split([',', ')']).next() {
                names.insert(metric.trim().to_string());
            }
            i = close_of(i);
        } else if !call && !KEYWORDS.contains(&lower.as_str()) {
            names.insert(word);
        }
    }
    names
}

/// A scrape's families (name → type) and samples (name, labels, value).
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn of(server: &Server) -> Scrape {
        let r = call(server.http, "GET", "/metrics", "");
        assert_eq!(r.status, 200);
        let text = String::from_utf8(r.body).unwrap();
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').unwrap();
                types.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let (name, labels) = match series.split_once('{') {
                    Some((n, l)) => (n, l.trim_end_matches('}')),
                    None => (series, ""),
                };
                let labels = labels
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (k, v) = l.split_once('=').unwrap();
                        (k.to_string(), v.trim_matches('"').to_string())
                    })
                    .collect();
                let value = if value == "+Inf" { f64::INFINITY } else { value.parse().unwrap() };
                samples.push((name.to_string(), labels, value));
            }
        }
        Scrape { types, samples }
    }

    /// The sum of `name`'s samples whose labels include `with`.
    fn total(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && with.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Whether a query's metric `name` is a series this scrape has: the exact sample name,
    /// in a family of the type its suffix implies (`_bucket`/`_sum`/`_count`: histogram,
    /// `_total`: counter, none: gauge).
    fn exports(&self, name: &str) -> Result<(), String> {
        if !self.samples.iter().any(|(n, _, _)| n == name) {
            return Err(format!("no sample named {name}"));
        }
        let (family, kind) = match ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)) {
            Some(f) => (f, "histogram"),
            None => match name.strip_suffix("_total") {
                Some(f) => (f, "counter"),
                None => (name, "gauge"),
            },
        };
        match self.types.get(family) {
            Some(t) if t == kind => Ok(()),
            other => Err(format!("{name}: family {family} is {other:?}, not {kind}")),
        }
    }
}

#[test]
fn metric_names_are_found_in_promql_and_nothing_else_is() {
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    let q = r#"histogram_quantile(0.99, sum by (stage, le) (rate(sark_pdp_stage_duration_seconds_bucket{shard=~"$shard", le!="1e-7"}[$__rate_interval]))) / on (shard) group_left(driver) sark_pdp_shard_info offset 5m + 1e-7"#;
    assert_eq!(metric_names(q), set(&["sark_pdp_stage_duration_seconds_bucket", "sark_pdp_shard_info"]));
    assert_eq!(metric_names("label_values(sark_pdp_shard_info, shard)"), set(&["sark_pdp_shard_info"]));
    let q = r#"sum without (sensitivity_level) (irate(a_total[5m])) and b or ignoring(x) c_count{y="z"} > bool 0.5 unless sum(d_sum) by (le)"#;
    assert_eq!(metric_names(q), set(&["a_total", "b", "c_count", "d_sum"]));
    assert!(metric_names("sum(rate(${x}[1m])) by (shard)").is_empty());
}

#[test]
fn the_dashboard_names_only_exported_metrics() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/sark-pdp.json")).unwrap();
    let d: Value = serde_json::from_str(&text).unwrap();
    for key in ["__inputs", "panels", "templating", "title", "uid", "schemaVersion", "time", "annotations"] {
        assert!(d.get(key).is_some(), "the dashboard has no {key}");
    }
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    assert_eq!((&d["__inputs"][0]["name"], &d["__inputs"][0]["pluginId"]), (&json!("DS_PROMETHEUS"), &json!("prometheus")));
    let ds = json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    // Every metric a query names, with the panels (or variable) naming it.
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let vars = d["templating"]["list"].as_array().unwrap();
    let shard = vars.iter().find(|v| v["name"] == "shard").expect("no shard variable");
    assert_eq!(shard["datasource"], ds);
    for name in metric_names(shard["query"]["query"].as_str().unwrap()) {
        used.entry(name).or_default().push("$shard".into());
    }
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids repeat");
    for p in panels {
        let title = p["title"].as_str().unwrap_or("");
        assert!(!title.is_empty(), "a panel without a title: {p}");
        assert_eq!(p["datasource"], ds, "{title}");
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: a target names no metric: {expr:?}");
            for name in names {
                used.entry(name).or_default().push(title.to_string());
            }
        }
    }
    // What the dashboard is for: decisions by result and sensitivity, stage latency, hit
    // ratio, audit ring and drops, sink lag and breaker, per-shard load, refreshes and
    // evictions.
    for want in [
        "sark_policy_evaluations_total",
        "sark_pdp_stage_duration_seconds_bucket",
        "sark_policy_cache_hits_total",
        "sark_policy_cache_misses_total",
        "sark_pdp_audit_ring_depth",
        "sark_pdp_audit_drops_total",
        "sark_pdp_sink_lag_seconds",
        "sark_pdp_sink_breaker_open",
        "sark_pdp_sink_lag_alarm",
        "sark_pdp_connections",
        "sark_pdp_cache_refreshes_total",
        "sark_policy_cache_evictions_total",
    ] {
        assert!(used.contains_key(want), "no panel shows {want}");
    }
    // A sink, so that its series exist (the endpoint refuses: nothing is shipped).
    let server = Server::start_env("dashboard", &["--shards", "2"], &[("SPLUNK_HEC_URL", "http://127.0.0.1:9"), ("SPLUNK_HEC_TOKEN", "t")]);
    let scrape = Scrape::of(&server);
    let missing: Vec<String> = used.iter().filter_map(|(name, by)| scrape.exports(name).err().map(|e| format!("{e} (in {by:?})"))).collect();
    assert!(missing.is_empty(), "the dashboard reads series /metrics does not export: {missing:#?}");
}

/// A settings file for one test.
fn settings(tag: &str, text: &str) -> String {
    let path = std::env::temp_dir().join(format!("sark-pdp-{tag}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// `sark_pdp_stage_duration_seconds_count` of `stage` on shard 0.
fn timed(scrape: &Scrape, stage: &str) -> f64 {
    scrape.total("sark_pdp_stage_duration_seconds_count", &[("stage", stage), ("shard", "0")])
}

const STAGES: [&str; 5] = ["decode", "cache_lookup", "evaluate", "audit_push", "encode"];

#[test]
fn sampled_decisions_fill_the_stage_histograms_stage_by_stage() {
    let conf = settings("stages-every", "[metrics]\nstage_sample = 1\n");
    let server = Server::start_with("stages-every", &["--shards", "1", "--audit-ring", "64", "--config", &conf]);
    // Binary: two EVALs and a batch of three (3 frames, 5 decisions).
    let mut c = Client::connect(server.addr, None).unwrap();
    c.eval(Eval::example("alice")).unwrap();
    c.eval(Eval::example("alice")).unwrap();
    c.eval_batch(vec![Eval::example("alice"), Eval::example("bob"), Eval::example("carol")]).unwrap();
    // HTTP: two bodies, two decisions.
    let input = json!({"input": sample_input()}).to_string();
    for _ in 0..2 {
        assert_eq!(call(server.http, "POST", "/v1/data/sark/decision", &input).status, 200);
    }
    let s = Scrape::of(&server);
    let (hits, misses) = (s.total("sark_policy_cache_hits_total", &[]), s.total("sark_policy_cache_misses_total", &[]));
    assert_eq!((hits + misses, s.total("sark_policy_evaluations_total", &[])), (7.0, 7.0));
    assert!(misses >= 3.0 && hits >= 2.0, "{hits} hits, {misses} misses");
    // Frames and bodies are decoded and encoded once each; every decision looks up and is
    // audited; only misses evaluate.
    assert_eq!(timed(&s, "decode"), 5.0);
    assert_eq!(timed(&s, "encode"), 5.0);
    assert_eq!(timed(&s, "cache_lookup"), 7.0);
    assert_eq!(timed(&s, "audit_push"), 7.0);
    assert_eq!(timed(&s, "evaluate"), misses);
    // Each is a well-formed histogram: cumulative buckets up to +Inf = count, a sum.
    let stages: BTreeSet<&str> =
        s.samples.iter().filter(|(n, _, _)| n.starts_with("sark_pdp_stage_duration_seconds")).map(|(_, l, _)| l["stage"].as_str()).collect();
    assert_eq!(stages, STAGES.into_iter().collect());
    for stage in STAGES {
        let buckets: Vec<(String, f64)> = s
            .samples
            .iter()
            .filter(|(n, l, _)| n == "sark_pdp_stage_duration_seconds_bucket" && l["stage"] == stage)
            .map(|(_, l, v)| (l["le"].clone(), *v))
            .collect();
        assert_eq!(buckets.len(), 14, "{stage}: {buckets:?}");
        assert_eq!(buckets.first().map(|b| b.0.parse::<f64>().unwrap()), Some(1e-7), "{stage}");
        assert_eq!(buckets.last().map(|b| (b.0.as_str(), b.1)), Some(("+Inf", timed(&s, stage))), "{stage}");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{stage}: not cumulative: {buckets:?}");
        let sum = s.total("sark_pdp_stage_duration_seconds_sum", &[("stage", stage)]);
        assert!(sum > 0.0 && sum < 60.0, "{stage}: sum {sum}");
    }
}

#[test]
fn one_frame_in_64_is_timed_by_default_and_zero_times_none() {
    let server = Server::start("stages-default");
    // HELLO is frame 1; then 640 EVAL frames: frames 64, 128, … 640 are timed.
    let mut c = Client::connect(server.addr, None).unwrap();
    for round in 0..5 {
        for i in 0..128 {
            c.send(&Request::Eval(Box::new(Eval::example(format!("user-{round}-{i}"))))).unwrap();
        }
        c.flush().unwrap();
        for _ in 0..128 {
            c.recv().unwrap();
        }
    }
    let s = Scrape::of(&server);
    assert_eq!(s.total("sark_policy_evaluations_total", &[]), 640.0);
    for stage in ["decode", "cache_lookup", "evaluate", "audit_push", "encode"] {
        assert_eq!(timed(&s, stage), 10.0, "{stage}");
    }
    drop(server);

    let conf = settings("stages-off", "[metrics]\nstage_sample = 0\n");
    let off = Server::start_with("stages-off", &["--shards", "1", "--config", &conf]);
    let mut c = Client::connect(off.addr, None).unwrap();
    for i in 0..200 {
        c.eval(Eval::example(format!("u{}", i % 7))).unwrap();
    }
    let input = json!({"input": sample_input()}).to_string();
    assert_eq!(call(off.http, "POST", "/v1/data/sark/decision", &input).status, 200);
    let s = Scrape::of(&off);
    assert_eq!(s.total("sark_policy_evaluations_total", &[]), 201.0);
    assert_eq!(s.types.get("sark_pdp_stage_duration_seconds").map(String::as_str), Some("histogram"), "exported even when off");
    for stage in STAGES {
        assert_eq!(timed(&s, stage), 0.0, "{stage}");
    }
}
