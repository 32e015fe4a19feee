//! OPA builtins regorus lacks, as engine extensions: `io.jwt.*` (decode, decode_verify and
//! every `verify_*` OPA has) and `crypto.*` (digests, HMACs, X.509 parsing).
//!
//! One table, [`EXTENSIONS`], registers each name on both engines: on the interpreter as an
//! [`regorus::Extension`], on the RVM as a host-await builtin (the VM suspends at the call,
//! [`call`] answers, the VM resumes). The semantics follow OPA v1's documented behaviour and
//! are checked against the real OPA engine (`pdp/tests/builtins_opa.rs`):
//! - a builtin error (a malformed token, a bad key, an operand of the wrong type) is an
//!   evaluation error, as regorus's own builtins and the OPA reference (strict builtin
//!   errors) have it: a decision that meets one is a deny carrying the message;
//! - a token that decodes but does not verify is `[false, {}, {}]` (decode_verify) or
//!   `false` (verify_*).
//!
//! Time: `io.jwt.decode_verify` checks `exp`/`nbf` against its `time` constraint or the
//! wall clock, so its answer changes when the token expires (or becomes valid). The
//! evaluation notes that instant (the boundary's distance from the time checked, from now;
//! [`seconds_left`]) and the evaluator caps the decision's `cache_ttl_s` with it: a
//! verified token's decision is cached only until its expiry.
//!
//! State is thread-local: an evaluation runs start to end on one thread (a shard, the
//! CLI), and the extension closures, shared by every shard through the compiled bundle,
//! carry none.

use std::cell::Cell;

use regorus::Value;

mod crypto;
mod jwt;

/// Every extension: its Rego name and its arity.
pub const EXTENSIONS: &[(&str, u8)] = &[
    ("io.jwt.decode", 1),
    ("io.jwt.decode_verify", 2),
    ("io.jwt.verify_rs256", 2),
    ("io.jwt.verify_rs384", 2),
    ("io.jwt.verify_rs512", 2),
    ("io.jwt.verify_ps256", 2),
    ("io.jwt.verify_ps384", 2),
    ("io.jwt.verify_ps512", 2),
    ("io.jwt.verify_es256", 2),
    ("io.jwt.verify_es384", 2),
    ("io.jwt.verify_es512", 2),
    ("io.jwt.verify_eddsa", 2),
    ("io.jwt.verify_hs256", 2),
    ("io.jwt.verify_hs384", 2),
    ("io.jwt.verify_hs512", 2),
    ("crypto.md5", 1),
    ("crypto.sha1", 1),
    ("crypto.sha256", 1),
    ("crypto.hmac.md5", 2),
    ("crypto.hmac.sha1", 2),
    ("crypto.hmac.sha256", 2),
    ("crypto.hmac.sha512", 2),
    ("crypto.hmac.equal", 2),
    ("crypto.x509.parse_certificates", 1),
];

thread_local! {
    /// The earliest instant (Unix seconds) at which a time-checked answer of this
    /// evaluation changes; `u64::MAX` for none.
    static VALID_UNTIL: Cell<u64> = const { Cell::new(u64::MAX) };
}

/// Start an evaluation: forget the last one's expiry.
pub fn begin() {
    VALID_UNTIL.with(|v| v.set(u64::MAX));
}

/// How many more seconds this evaluation's answer holds, when a token it verified expires
/// (or one it refused becomes valid): the cap on its decision's cache TTL.
pub fn seconds_left() -> Option<u64> {
    let t = VALID_UNTIL.with(Cell::get);
    (t != u64::MAX).then(|| t.saturating_sub(unix_now_s() as u64))
}

/// The wall clock, in seconds since the epoch.
fn unix_now_s() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Note that the evaluation's answer may change at `unix_s`.
fn changes_at(unix_s: f64) {
    // Seconds are rounded down: the entry leaves the cache no later than the token.
    let t = if unix_s <= 0.0 { 0 } else { unix_s.floor() as u64 };
    VALID_UNTIL.with(|v| v.set(v.get().min(t)));
}

/// Call extension `name` on `args`.
///
/// # Errors
/// The builtin's error, prefixed with its name, as OPA words it.
pub fn call(name: &str, args: &[Value]) -> Result<Value, String> {
    let result = match (name, args) {
        ("io.jwt.decode", [t]) => jwt::decode(t),
        ("io.jwt.decode_verify", [t, c]) => jwt::decode_verify(t, c),
        ("io.jwt.verify_hs256", [t, s]) => jwt::verify_hmac(jwt::Alg::Hs256, t, s),
        ("io.jwt.verify_hs384", [t, s]) => jwt::verify_hmac(jwt::Alg::Hs384, t, s),
        ("io.jwt.verify_hs512", [t, s]) => jwt::verify_hmac(jwt::Alg::Hs512, t, s),
        (n, [t, k]) if n.starts_with("io.jwt.verify_") => match jwt::Alg::of_verify(n) {
            Some(alg) => jwt::verify(alg, t, k),
            None => Err(format!("unknown builtin {n}")),
        },
        ("crypto.x509.parse_certificates", [s]) => crypto::parse_certificates(s),
        ("crypto.hmac.equal", [a, b]) => crypto::hmac_equal(a, b),
        (n, [x]) if n.starts_with("crypto.") => crypto::digest(n, x),
        (n, [x, k]) if n.starts_with("crypto.hmac.") => crypto::hmac(n, x, k),
        _ => Err(format!("{name}: {} arguments", args.len())),
    };
    result.map_err(|message| format!("{name}: {message}"))
}

/// Register every extension on an interpreter engine (before its policies are compiled).
///
/// # Errors
/// A name registered twice (not with this table).
pub fn register(engine: &mut regorus::Engine) -> Result<(), String> {
    for &(name, nargs) in EXTENSIONS {
        engine
            .add_extension(name.to_string(), nargs, Box::new(move |args: Vec<Value>| call(name, &args).map_err(anyhow::Error::msg)))
            .map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

/// How many usable keys a PEM key or certificate, JWK or JWKS holds (keys of algorithms
/// OPA does not know are skipped, as OPA skips them).
///
/// # Errors
/// The text is none of those.
pub fn check_keys(text: &str) -> Result<usize, String> {
    jwt::keys(text).map(|k| k.len())
}

/// The table as the RVM compiler takes it.
pub fn host_await_table() -> Vec<(&'static str, usize)> {
    EXTENSIONS.iter().map(|&(n, a)| (n, usize::from(a))).collect()
}

/// A string operand, or the error OPA gives.
fn string<'a>(v: &'a Value, what: &str) -> Result<&'a str, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(format!("{what}: must be a string, got {}", type_name(other))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Set(_) => "set",
        Value::Object(_) => "object",
        Value::Undefined => "undefined",
    }
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

