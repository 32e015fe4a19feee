//! Envoy's external authorization service (`envoy.service.auth.v3.Authorization/Check`,
//! gRPC) on a listener of its own: `--ext-authz-listen` or `[ext_authz] listen`.
//!
//! tonic runs on one thread of its own (a current-thread tokio runtime, pinned with the
//! audit writer to the last CPU the process may use); it does not decide. Each Check is mapped to SARK's typed input ([`Mapping`]: which
//! header, route setting, peer attribute, metadata or body field fills which input field)
//! and handed to the shard that owns its user and tool ([`wire::route`], as key-affine clients route)
//! over a bounded channel; the shard decides it on its own thread through the same path
//! as an EVAL (its cache, its evaluator, its audit ring, its durability wait) and sends
//! the answer back. An allow is an OK CheckResponse; a deny is PERMISSION_DENIED with an
//! HTTP 403 whose `x-sark-reasons` header carries the reasons; a PDP that cannot answer
//! in time (full queue, timeout, stopping) is UNAVAILABLE with a 503: never an allow, so
//! Envoy denies even with `failure_mode_allow` set.

use std::net::SocketAddr;
use std::time::Duration;

use pdp::input::SarkInput;
use tokio::sync::{mpsc, oneshot};

#[cfg(feature = "ext-authz")]
mod grpc;
#[cfg(feature = "ext-authz")]
pub use grpc::{MAX_MESSAGE_BYTES, response, spawn};

/// The header a deny's reasons travel in.
pub const REASONS_HEADER: &str = "x-sark-reasons";
/// The header every answer's decision id (32 hex digits) travels in.
pub const DECISION_ID_HEADER: &str = "x-sark-decision-id";
/// The ext_authz listener's settings.
#[derive(Debug, Clone)]
pub struct ExtAuthzConfig {
    pub listen: SocketAddr,
    /// How long a Check waits for its shard; past it the answer is a 503 deny.
    pub timeout: Duration,
    /// Checks waiting for each shard; a full queue is a 503 deny.
    pub queue: usize,
    pub mapping: Mapping,
    /// TLS (and mutual TLS) from the same files as the other listeners.
    pub tls: Option<crate::tls::TlsFiles>,
}

impl ExtAuthzConfig {
    pub fn new(listen: SocketAddr) -> ExtAuthzConfig {
        ExtAuthzConfig { listen, timeout: Duration::from_millis(500), queue: 4096, mapping: Mapping::default(), tls: None }
    }
}

/// One Check for a shard: the input, and where its answer goes.
#[derive(Debug)]
pub struct Job {
    pub input: SarkInput,
    pub reply: oneshot::Sender<Verdict>,
}

/// A shard's answer to a [`Job`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allow: bool,
    pub decision_id: u128,
    /// 0, or the code that made this a deny (1001–1007).
    pub error_code: u16,
    pub reasons: Vec<String>,
}

impl Verdict {
    /// A deny the front door gives itself (nothing was decided, so no decision id).
    #[cfg_attr(not(feature = "ext-authz"), allow(dead_code))]
    fn refused(code: u16, why: impl Into<String>) -> Verdict {
        Verdict { allow: false, decision_id: 0, error_code: code, reasons: vec![why.into()] }
    }
}

/// The channels to every shard, and each shard's end.
pub fn channels(shards: usize, depth: usize) -> (Vec<mpsc::Sender<Job>>, Vec<mpsc::Receiver<Job>>) {
    (0..shards).map(|_| mpsc::channel(depth.max(1))).unzip()
}

// ---------------------------------------------------------------------------------------
// The mapping

/// Where a value comes from in a CheckRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `header:<name>`: a request header (Envoy lower-cases the names).
    Header(String),
    /// `context:<key>`: a `context_extensions` entry, set per route in Envoy's config —
    /// the place for settings the caller cannot forge.
    Context(String),
    /// `metadata:<filter><pointer>`: a JSON pointer into a filter's dynamic metadata, e.g.
    /// `metadata:envoy.filters.http.jwt_authn/jwt_payload/sub` (a verified JWT's subject).
    Metadata { filter: String, pointer: String },
    /// `body:<pointer>`: a JSON pointer into the request body (Envoy's `with_request_body`),
    /// e.g. `body:/params/name` for an MCP `tools/call`.
    Body(String),
    /// `principal`: the downstream peer's principal (its certificate's SAN under mTLS).
    Principal,
    /// `peer`: the downstream peer's IP address.
    Peer,
    Method,
    /// `path`: the path without its query.
    Path,
    /// `path:<n>`: the n-th non-empty segment of the path, from 0.
    PathSegment(usize),
    Host,
    /// `literal:<text>`.
    Literal(String),
}

impl Source {
    /// Parse one source as written in the settings.
    ///
    /// # Errors
    /// An unknown kind, or a malformed argument.
    pub fn parse(s: &str) -> Result<Source, String> {
        let (kind, arg) = s.split_once(':').map_or((s, None), |(k, a)| (k, Some(a)));
        let need = |what: &str| arg.filter(|a| !a.is_empty()).map(str::to_string).ok_or_else(|| format!("{s:?}: {kind} needs {what}"));
        let pointer = |p: String| if p.starts_with('/') { Ok(p) } else { Err(format!("{s:?}: a JSON pointer starts with '/'")) };
        Ok(match kind {
            "header" => Source::Header(need("a header name")?.to_ascii_lowercase()),
            "context" => Source::Context(need("a key")?),
            "metadata" => {
                let a = need("a filter name and a JSON pointer")?;
                let (filter, pointer) = a.find('/').map(|i| a.split_at(i)).ok_or_else(|| format!("{s:?}: metadata needs <filter>/<pointer>"))?;
                Source::Metadata { filter: filter.to_string(), pointer: pointer.to_string() }
            }
            "body" => Source::Body(pointer(need("a JSON pointer")?)?),
            "principal" if arg.is_none() => Source::Principal,
            "peer" if arg.is_none() => Source::Peer,
            "method" if arg.is_none() => Source::Method,
            "host" if arg.is_none() => Source::Host,
            "path" => match arg {
                None => Source::Path,
                Some(n) => Source::PathSegment(n.parse().map_err(|_| format!("{s:?}: path:<n> needs a segment number"))?),
            },
            "literal" => Source::Literal(arg.unwrap_or("").to_string()),
            _ => return Err(format!("{s:?}: unknown source (header:, context:, metadata:, body:, principal, peer, method, path, path:<n>, host, literal:)")),
        })
    }
}

/// The kind of value an input field takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    List,
    Bool,
    Int,
    Json,
}

/// The input fields a mapping can fill, with their names in the settings.
const FIELDS: &[(&str, Shape)] = &[
    ("user.id", Shape::Text),
    ("user.roles", Shape::List),
    ("user.teams", Shape::List),
    ("user.team_manager_of", Shape::List),
    ("user.scopes", Shape::List),
    ("user.mfa_verified", Shape::Bool),
    ("user.mfa_age_s", Shape::Int),
    ("user.email", Shape::Text),
    ("action", Shape::Text),
    ("tool.name", Shape::Text),
    ("tool.sensitivity_level", Shape::Text),
    ("tool.owner", Shape::Text),
    ("tool.managers", Shape::List),
    ("tool.teams", Shape::List),
    ("server.id", Shape::Text),
    ("server.name", Shape::Text),
    ("server.owner_id", Shape::Text),
    ("server.teams", Shape::List),
    ("server.managed_by_team", Shape::Text),
    ("context.client_ip", Shape::Text),
    ("context.now_ns", Shape::Int),
    ("parameters", Shape::Json),
    ("agent", Shape::Json),
];

/// The mapping when the settings say nothing: SARK's gateway headers, the route's
/// `context_extensions`, the MCP body, and the peer's address.
const DEFAULTS: &[(&str, &[&str])] = &[
    ("user.id", &["header:x-sark-user-id", "principal"]),
    ("user.roles", &["header:x-sark-user-roles"]),
    ("user.teams", &["header:x-sark-user-teams"]),
    ("user.scopes", &["header:x-sark-user-scopes"]),
    ("user.mfa_verified", &["header:x-sark-mfa-verified"]),
    ("user.email", &["header:x-sark-user-email"]),
    ("action", &["context:sark_action", "header:x-sark-action", "literal:tool:invoke"]),
    ("tool.name", &["context:sark_tool", "header:x-sark-tool", "body:/params/name"]),
    ("tool.sensitivity_level", &["context:sark_sensitivity", "header:x-sark-tool-sensitivity"]),
    ("server.id", &["context:sark_server", "header:x-sark-server-id"]),
    ("context.client_ip", &["peer"]),
    ("parameters", &["body:/params/arguments"]),
];

/// Which CheckRequest attributes fill which input fields: for each field, sources tried in
/// order, the first present one winning. Lists take a comma-separated text or a JSON array;
/// booleans `true`/`false`/`1`/`0`; `parameters` and `agent` JSON. `context.<name>` (other
/// than `client_ip` and `now_ns`) adds a field to the input's `context`: text that parses
/// as JSON is that value, other text a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    fields: Vec<(String, Vec<Source>)>,
}

impl Default for Mapping {
    fn default() -> Mapping {
        let fields = DEFAULTS
            .iter()
            .map(|(f, sources)| ((*f).to_string(), sources.iter().filter_map(|s| Source::parse(s).ok()).collect()))
            .collect();
        Mapping { fields }
    }
}

fn shape(field: &str) -> Option<Shape> {
    if let Some((_, s)) = FIELDS.iter().find(|(f, _)| *f == field) {
        return Some(*s);
    }
    match field.strip_prefix("context.") {
        Some(name) if !name.is_empty() => Some(Shape::Json),
        _ => None,
    }
}

impl Mapping {
    /// The default mapping with `overrides` applied: each names a field and its sources;
    /// an empty list leaves the field unmapped.
    ///
    /// # Errors
    /// An unknown field or a source that does not parse.
    pub fn with(overrides: &std::collections::BTreeMap<String, Vec<String>>) -> Result<Mapping, String> {
        let mut m = Mapping::default();
        for (field, sources) in overrides {
            if shape(field).is_none() {
                let known: Vec<&str> = FIELDS.iter().map(|(f, _)| *f).collect();
                return Err(format!("ext_authz.map: unknown field {field:?} (known: {}, context.<name>)", known.join(", ")));
            }
            let parsed = sources.iter().map(|s| Source::parse(s)).collect::<Result<Vec<_>, _>>().map_err(|e| format!("ext_authz.map.{field}: {e}"))?;
            m.fields.retain(|(f, _)| f != field);
            if !parsed.is_empty() {
                m.fields.push((field.clone(), parsed));
            }
        }
        Ok(m)
    }
}

/// Bind the listener now (so its address is known before the server says it listens).
///
/// # Errors
/// The address cannot be bound.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// This build has no gRPC stack (the `ext-authz` feature is off): a configured ext_authz
/// listener stops the server at start.
///
/// # Errors
/// Always.
#[cfg(not(feature = "ext-authz"))]
pub fn spawn(
    _: &ExtAuthzConfig,
    _: (std::net::TcpListener, Option<usize>),
    _: Vec<mpsc::Sender<Job>>,
    _: Vec<String>,
    _: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    anyhow::bail!("this sark-pdp was built without ext_authz (cargo feature ext-authz)")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sources_parse_and_refuse() {
        assert_eq!(Source::parse("header:X-User").unwrap(), Source::Header("x-user".into()));
        assert_eq!(Source::parse("path:2").unwrap(), Source::PathSegment(2));
        assert_eq!(Source::parse("literal:tool:invoke").unwrap(), Source::Literal("tool:invoke".into()));
        assert_eq!(
            Source::parse("metadata:envoy.filters.http.jwt_authn/p/sub").unwrap(),
            Source::Metadata { filter: "envoy.filters.http.jwt_authn".into(), pointer: "/p/sub".into() }
        );
        for bad in ["header:", "body:params", "metadata:nofilterpointer", "path:x", "peer:1", "cookie:a"] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }
}
