//! The SARK PDP decision domain, independent of any runtime.
//!
//! The path of one decision through this crate:
//!
//! 1. [`bundle`] loads the policies and data ([`bundle::Bundle`]), from a directory, an OPA
//!    `.tar.gz` bundle, or the SARK bundle embedded from `policies/`.
//! 2. [`eval::CompiledBundle`] parses and compiles it once; each shard builds its own
//!    [`eval::Evaluator`] from it (RVM bytecode per entrypoint, interpreter fallback).
//! 3. [`input`] turns the caller's typed fields into a regorus input document without a
//!    JSON round trip; [`key`] hashes the decision-relevant fields into a 128-bit
//!    [`key::CacheKey`].
//! 4. [`cache::DecisionCache`], shard-local, answers repeats until
//!    TTL = min(sensitivity TTL from [`config::TtlConfig`], the policy's `cache_ttl_s`).
//! 5. [`decision::Decision`] is the answer; every failure is a deny with an
//!    [`error::EvalError`] code.
//! 6. [`point::DecisionPoint`] composes steps 3–5 for one shard: the path every front
//!    door uses.
//! 7. [`audit::AuditRecord`] is the record each decision leaves (one JSON line);
//!    [`audit_ring`] hands it to the writer thread over a lock-free ring per shard.
//!
//! 8. [`audit_log`] makes the records durable; [`sink`] ships the log to Splunk HEC and
//!    Datadog, [`sink_postgres`] to PostgreSQL, each from a persisted cursor.
//!
//! [`eval::explain`] says why a decision is what it is (its policy results and reasons,
//! and a rule trace from a second, interpreted evaluation).
//!
//! [`cases`] runs a bundle's decision cases; [`opa`] loads the real OPA engine, our
//! reference for decisions and peer for speed.

pub mod audit;
pub mod audit_io;
pub mod audit_log;
pub mod audit_ring;
pub mod builtins;
pub mod bundle;
pub mod cache;
pub mod cases;
pub mod config;
pub mod decision;
pub mod error;
pub mod eval;
pub mod input;
pub mod json_guard;
pub mod key;
pub mod opa;
pub mod point;
pub mod prewarm;
pub mod sink;
pub mod sink_postgres;

pub use bundle::Bundle;
pub use decision::{Decision, EngineKind, Sensitivity};
pub use error::{BundleError, EvalError};
pub use eval::{CompiledBundle, EnginePreference, EvalLimits, Evaluator};
pub use regorus::Value;

/// Write one line on standard error with a single write: `eprintln!` writes each formatted
/// piece with a write(2) of its own, so where stdout and stderr share a pipe (journald,
/// a container runtime) another thread's line could land inside it.
pub fn say_line(line: &str) {
    use std::io::Write as _;
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let _ = std::io::stderr().lock().write_all(buf.as_bytes());
}

/// `eprintln!`, one write per line: see [`say_line`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::say_line(&format!($($arg)*)) };
}
