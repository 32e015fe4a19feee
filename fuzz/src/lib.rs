//! The fuzz targets' bodies (issue 9): one function per target, taking the fuzzer's bytes
//! and checking what must hold for *any* bytes. A panic here is a finding: libFuzzer
//! (`fuzz/libfuzzer`, run by `scripts/fuzz.sh`) saves the input that caused it, and the
//! input is committed under `fuzz/regressions/<target>/` where `tests/corpus.rs` replays
//! it (with the seed corpora) on every test run.
//!
//! What is checked beyond "no panic, no hang":
//! - `frame`, `opcode`: a request that decodes encodes back to bytes that decode to the
//!   same request (the server and a client read a frame alike).
//! - `http`, `input`, `bundle_*`: a decision that carries an evaluation error is a deny
//!   (fail closed).
//! - `input`: the typed path (binary EVAL) and the JSON path (its document as text) reach
//!   the same allow or deny for the same input.

#![allow(clippy::panic)] // a broken property is reported as a panic, which the fuzzer records

use std::cell::RefCell;
use std::io::Write;
use std::sync::Arc;

use pdp::bundle::{BundleLimits, DECISION_ENTRYPOINT};
use pdp::cache::CacheConfig;
use pdp::point::{Answer, DecisionPoint};
use pdp::{Bundle, CompiledBundle, EnginePreference, EvalLimits, Value};
use wire::{Check, DEFAULT_MAX_PAYLOAD, HEADER_LEN, Header, Request, VERSION};

/// A target's body.
pub type Body = fn(&[u8]);

/// The targets, by name: what `scripts/fuzz.sh` builds and the corpus test replays.
pub const TARGETS: &[(&str, Body)] =
    &[("frame", frame), ("opcode", opcode), ("http", http), ("input", input), ("bundle_tar", bundle_tar), ("bundle_dir", bundle_dir)];

/// A fixed present (a Tuesday, 10:00 UTC) so a run is reproducible.
const NOW: i64 = 1_764_669_600_000_000_000;

thread_local! {
    /// One decision point on the embedded bundle per thread, as a shard has.
    static POINT: RefCell<Option<DecisionPoint>> = const { RefCell::new(None) };
}

fn with_point<R>(f: impl FnOnce(&mut DecisionPoint) -> R) -> R {
    POINT.with(|p| {
        let mut p = p.borrow_mut();
        let point = p.get_or_insert_with(|| {
            let bundle = Bundle::embedded().unwrap_or_else(|e| panic!("the embedded bundle: {e}"));
            let compiled = CompiledBundle::compile(&bundle, EvalLimits::default()).unwrap_or_else(|e| panic!("the embedded bundle: {e}"));
            DecisionPoint::new(Arc::new(compiled), EnginePreference::Fastest, CacheConfig::default(), quanta::Clock::new())
        });
        f(point)
    })
}

fn fail_closed(a: &Answer, what: &str) {
    if let Some(e) = &a.decision.error {
        assert!(!a.decision.allow, "{what}: an allow that carries an evaluation error ({e})");
    }
}

/// A request that decoded must survive encode → check → decode unchanged.
fn round_trip(req: &Request) {
    let mut out = Vec::new();
    wire::encode_request(&mut out, 7, req);
    match wire::check(&out, u32::MAX) {
        Ok(Check::Complete { header, total }) => {
            assert_eq!(total, out.len(), "an encoded frame is one whole frame");
            let again = wire::decode_request(&header, out.get(HEADER_LEN..).unwrap_or(&[]));
            assert_eq!(again.as_ref().ok(), Some(req), "decode(encode(request)) differs: {again:?}");
        }
        other => panic!("an encoded request does not check as a whole frame: {other:?}"),
    }
}

/// The frame decoder on a stream of bytes: frames one after another as a connection reads
/// them, each decoded as a request (what the server does) and as a reply (a client).
pub fn frame(data: &[u8]) {
    let mut rest = data;
    while let Ok(Check::Complete { header, total }) = wire::check(rest, DEFAULT_MAX_PAYLOAD) {
        assert!(total >= HEADER_LEN && total <= rest.len(), "check's total {total} is outside the buffer of {}", rest.len());
        let payload = rest.get(HEADER_LEN..total).unwrap_or(&[]);
        if let Ok(req) = wire::decode_request(&header, payload) {
            round_trip(&req);
        }
        let _ = wire::decode_reply(&header, payload);
        rest = rest.get(total..).unwrap_or(&[]);
    }
}

/// Every opcode's payload parser: the first byte is the opcode, the next two the flags,
/// the rest the payload (the header is made to fit, so every input reaches a parser).
pub fn opcode(data: &[u8]) {
    let [op, f0, f1, payload @ ..] = data else { return };
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let header = Header { len, version: VERSION, opcode: *op, flags: u16::from_le_bytes([*f0, *f1]), request_id: 1 };
    if let Ok(req) = wire::decode_request(&header, payload) {
        round_trip(&req);
    }
    let _ = wire::decode_reply(&header, payload);
}

/// The HTTP request parser and every body mapping: OPA's data API (`{"input": …}`),
/// AuthZEN's evaluation and evaluations, SARK's evaluate, batch-evaluate and gateway
/// shapes; each input that maps is decided on the embedded bundle (at most 8 a run).
pub fn http(data: &[u8]) {
    let cfg = shard::http::HttpConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut buf = data.to_vec();
    let Ok(Some((total, body))) = shard::http::parse_request(&cfg, &mut buf) else { return };
    assert!(total <= data.len(), "parse_request's length {total} is past the {} bytes read", data.len());
    use shard::authzen as az;
    let mut inputs: Vec<serde_json::Value> = Vec::new();
    if let Some(i) = body.get("input") {
        inputs.push(i.clone());
    }
    inputs.extend(az::evaluation(&body).ok());
    inputs.extend(az::evaluations(&body).map(|(v, _)| v).unwrap_or_default());
    inputs.extend(az::sark_evaluate(&body).ok());
    inputs.extend(az::sark_batch(&body).unwrap_or_default());
    inputs.extend(az::sark_gateway(&body).ok());
    for i in inputs.into_iter().take(8) {
        let a = with_point(|p| p.decide_document(Value::from(i), NOW));
        fail_closed(&a, "http");
    }
}

/// The input-document mapping: the bytes as a JSON input document (the HTTP and
/// EVAL_JSON path), and as an EVAL payload (the typed path), whose document, written as
/// JSON and read back, must be decided alike.
pub fn input(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(doc) = pdp::eval::input_from_json(text)
    {
        let a = with_point(|p| p.decide_document(doc, NOW));
        fail_closed(&a, "input (JSON)");
    }
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let header = Header { len, version: VERSION, opcode: wire::opcode::EVAL, flags: 0, request_id: 1 };
    let Ok(Request::Eval(e)) = wire::decode_request(&header, data) else { return };
    let typed = shard::convert::input_from_eval(*e);
    let a = with_point(|p| p.decide_typed(&typed, NOW));
    fail_closed(&a, "input (typed)");
    let Ok(doc) = typed.to_value() else {
        assert!(!a.decision.allow, "input (typed): allowed although its document cannot be built");
        return;
    };
    let text = doc.to_json_str().unwrap_or_else(|e| panic!("a built document is not JSON: {e}"));
    let Ok(again) = pdp::eval::input_from_json(&text) else { return }; // e.g. nested past the depth limit
    let b = with_point(|p| p.decide_document(again, NOW));
    assert_eq!(a.decision.allow, b.decision.allow, "typed and JSON paths disagree on {text}: {:?} / {:?}", a.decision.reasons, b.decision.reasons);
}

/// Small limits so a run stays fast; the checks are the same at any size.
const LIMITS: BundleLimits = BundleLimits { max_bytes: 1 << 20, max_files: 64, max_data_depth: 64, max_rego_nesting: 12 };

/// A bundle that loaded: compile it and, when that works, ask its decision entrypoint once.
fn compile_and_ask(bundle: &Bundle) {
    let Ok(compiled) = CompiledBundle::compile(bundle, EvalLimits::default()) else { return };
    let mut point = DecisionPoint::new(Arc::new(compiled), EnginePreference::Fastest, CacheConfig::default(), quanta::Clock::new());
    let doc = serde_json::json!({"user": {"id": "u1", "roles": ["developer"]}, "action": "tool:invoke", "tool": {"name": "t", "sensitivity_level": "low"}});
    let a = point.decide_document(Value::from(doc), NOW);
    fail_closed(&a, DECISION_ENTRYPOINT);
}

/// Bundle loading from an OPA bundle `.tar.gz`. The first byte chooses: even, the rest is
/// a tar archive that is gzipped first (so the fuzzer works on tar's structure, not on
/// gzip's checksums); odd, the rest is the `.tar.gz` itself.
pub fn bundle_tar(data: &[u8]) {
    let [mode, rest @ ..] = data else { return };
    let bytes = if mode % 2 == 0 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if gz.write_all(rest).is_err() {
            return;
        }
        match gz.finish() {
            Ok(b) => b,
            Err(_) => return,
        }
    } else {
        rest.to_vec()
    };
    if let Ok(b) = Bundle::from_tar_gz("fuzz.tar.gz", &bytes, LIMITS) {
        compile_and_ask(&b);
    }
}

/// Bundle loading from a directory. The bytes are files, `path NUL contents NUL` after
/// one another; paths are kept to `[a-z0-9._/-]` with no `..` or leading `/` (the
/// harness must not write outside its directory), then the directory is loaded as
/// `sark-pdp serve --bundle DIR` would.
pub fn bundle_dir(data: &[u8]) {
    let dir = std::env::temp_dir().join(format!("sark-fuzz-bundle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let mut parts = data.split(|b| *b == 0);
    let mut written = 0;
    while let (Some(name), Some(contents)) = (parts.next(), parts.next()) {
        let name: String = String::from_utf8_lossy(name).chars().filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._/-".contains(*c)).collect();
        let name = name.trim_start_matches('/');
        if name.is_empty() || name.split('/').any(|c| c.is_empty() || c == "..") || written >= 32 {
            continue;
        }
        let path = dir.join(name);
        if let Some(parent) = path.parent()
            && std::fs::create_dir_all(parent).is_ok()
            && std::fs::write(&path, contents).is_ok()
        {
            written += 1;
        }
    }
    if let Ok(b) = Bundle::load(&dir, LIMITS) {
        compile_and_ask(&b);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
