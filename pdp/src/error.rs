//! Typed errors, one enum per operation, each with stable numeric codes.
//!
//! Codes are part of the wire contract (they travel in ERROR frames and in deny
//! decisions): a number is never reused, never renumbered.

use std::path::PathBuf;

/// Loading or validating a bundle failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A Rego module failed to parse (regorus reports line and column).
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// A data file is not valid JSON.
    #[error("{path}:{line}:{column}: invalid JSON: {message}")]
    Data {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The `.manifest` is malformed.
    #[error("{path}: invalid manifest: {message}")]
    Manifest { path: String, message: String },
    /// A bundle holds no policy at all.
    #[error("{path}: bundle holds no .rego file")]
    Empty { path: String },
    /// An entrypoint does not compile, or is not defined by any module.
    #[error("entrypoint {entrypoint}: {message}")]
    Entrypoint { entrypoint: String, message: String },
    /// Data conflicts with rules (a data key where a package defines a rule), or other
    /// validation of the data against what the policies read failed.
    #[error("{path}: {message}")]
    Validation { path: String, message: String },
    /// The bundle is over a limit (size, files, depth).
    #[error("{path}: {message}")]
    Limit { path: String, message: String },
}

impl BundleError {
    /// The stable numeric code of this error.
    pub fn wire_code(&self) -> u16 {
        match self {
            BundleError::Io { .. } => 2001,
            BundleError::Parse { .. } => 2002,
            BundleError::Data { .. } => 2003,
            BundleError::Manifest { .. } => 2004,
            BundleError::Empty { .. } => 2005,
            BundleError::Entrypoint { .. } => 2006,
            BundleError::Validation { .. } => 2007,
            BundleError::Limit { .. } => 2008,
        }
    }
}

/// Evaluating one input failed. Every variant becomes a deny carrying this error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The entrypoint is not one the bundle compiled.
    #[error("unknown entrypoint {0}")]
    UnknownEntrypoint(String),
    /// The input is not acceptable (not JSON, not an object, too deep …).
    #[error("bad input: {0}")]
    BadInput(String),
    /// The policy produced no value for this input.
    #[error("decision undefined for {0}")]
    Undefined(String),
    /// The engine reported an error while evaluating.
    #[error("policy error: {0}")]
    Policy(String),
    /// The evaluation ran past its instruction or time limit.
    #[error("evaluation limit exceeded: {0}")]
    Limit(String),
    /// The policy returned a value that is not a decision document.
    #[error("malformed decision: {0}")]
    Malformed(String),
    /// The PDP cannot answer right now (shutting down).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl EvalError {
    /// The stable numeric code of this error.
    pub fn wire_code(&self) -> u16 {
        match self {
            EvalError::UnknownEntrypoint(_) => 1001,
            EvalError::BadInput(_) => 1002,
            EvalError::Undefined(_) => 1003,
            EvalError::Policy(_) => 1004,
            EvalError::Limit(_) => 1005,
            EvalError::Malformed(_) => 1006,
            EvalError::Unavailable(_) => 1007,
        }
    }

    /// A short stable name for logs and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            EvalError::UnknownEntrypoint(_) => "unknown_entrypoint",
            EvalError::BadInput(_) => "bad_input",
            EvalError::Undefined(_) => "undefined",
            EvalError::Policy(_) => "policy_error",
            EvalError::Limit(_) => "limit_exceeded",
            EvalError::Malformed(_) => "malformed_decision",
            EvalError::Unavailable(_) => "unavailable",
        }
    }
}

/// Configuration could not be read or is invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable holds something that is not a number of seconds.
    #[error("{var}={value:?}: expected a whole number of seconds")]
    BadEnv { var: String, value: String },
    /// A value is out of its allowed range.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}
