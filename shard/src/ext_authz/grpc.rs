//! The gRPC half of [`super`]: reading a CheckRequest into SARK's input, the
//! CheckResponse for a verdict, and the tonic service on its thread. Built with the
//! `ext-authz` feature (on by default; the perf benches and the fuzz targets build the
//! shard without it, and without tonic).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus,
    OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc::Status;
use pdp::input::{Blob, SarkInput, ServerFields, ToolFields};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::{DECISION_ID_HEADER, ExtAuthzConfig, Job, Mapping, REASONS_HEADER, Shape, Source, Verdict, shape};
use crate::server::owner;

/// The longest `x-sark-reasons` value; longer lists are cut (the body has them all).
const MAX_REASONS_HEADER: usize = 2048;
/// The largest CheckRequest accepted (Envoy's `with_request_body.max_request_bytes` should
/// stay under it).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// google.rpc.Code values used in CheckResponse.status.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const UNAVAILABLE: i32 = 14;
const UNAUTHENTICATED: i32 = 16;

impl Mapping {
    /// SARK's input for `req`.
    ///
    /// # Errors
    /// A value of the wrong shape for its field (a number that is not one, a body or
    /// parameters that are not JSON): the Check is denied with `bad_input`.
    pub fn input(&self, req: &CheckRequest) -> Result<SarkInput, String> {
        let attrs = Attrs::new(req);
        let mut input = SarkInput::default();
        let mut context = serde_json::Map::new();
        let mut tool = ToolFields::default();
        let mut server = ServerFields::default();
        let (mut has_tool, mut has_server) = (false, false);
        for (field, sources) in &self.fields {
            let Some(got) = sources.iter().find_map(|s| attrs.get(s)) else { continue };
            let Some(shape) = shape(field) else { continue };
            let bad = |why: &str| format!("ext_authz mapping: {field}: {why}");
            let text = || as_text(&got).ok_or_else(|| bad("not a string"));
            let list = || as_list(&got).ok_or_else(|| bad("not a list of strings"));
            match (field.as_str(), shape) {
                ("user.id", _) => input.user.id = text()?,
                ("user.roles", _) => input.user.roles = list()?,
                ("user.teams", _) => input.user.teams = list()?,
                ("user.team_manager_of", _) => input.user.team_manager_of = list()?,
                ("user.scopes", _) => input.user.scopes = list()?,
                ("user.mfa_verified", _) => input.user.mfa_verified = Some(as_bool(&got).ok_or_else(|| bad("not true or false"))?),
                ("user.mfa_age_s", _) => input.user.mfa_age_s = Some(as_int(&got).ok_or_else(|| bad("not an integer"))?),
                ("user.email", _) => input.user.email = Some(text()?),
                ("action", _) => input.action = text()?,
                ("tool.name", _) => (tool.name, has_tool) = (text()?, true),
                ("tool.sensitivity_level", _) => tool.sensitivity_level = Some(text()?),
                ("tool.owner", _) => tool.owner = Some(text()?),
                ("tool.managers", _) => tool.managers = list()?,
                ("tool.teams", _) => tool.teams = list()?,
                ("server.id", _) => (server.id, has_server) = (text()?, true),
                ("server.name", _) => server.name = Some(text()?),
                ("server.owner_id", _) => server.owner_id = Some(text()?),
                ("server.teams", _) => server.teams = list()?,
                ("server.managed_by_team", _) => server.managed_by_team = Some(text()?),
                ("context.client_ip", _) => input.client_ip = Some(text()?),
                ("context.now_ns", _) => input.now_ns = Some(as_int(&got).ok_or_else(|| bad("not an integer"))?),
                ("parameters", _) => input.parameters = Blob::Json(as_json(got).map_err(|e| bad(&e))?.to_string()),
                ("agent", _) => input.agent = Blob::Json(as_json(got).map_err(|e| bad(&e))?.to_string()),
                (other, Shape::Json) => {
                    let name = other.strip_prefix("context.").unwrap_or(other);
                    // Text that is JSON (`true`, `3`, `{…}`) is that value; other text a string.
                    let v = match got {
                        Got::Text(t) => serde_json::from_str(&t).unwrap_or(Value::String(t)),
                        Got::Json(v) => v,
                    };
                    context.insert(name.to_string(), v);
                }
                _ => {}
            }
        }
        if has_tool {
            input.tool = Some(tool);
        }
        if has_server {
            input.server = Some(server);
        }
        if !context.is_empty() {
            input.context = Blob::Json(Value::Object(context).to_string());
        }
        Ok(input)
    }
}

/// A value found in a CheckRequest.
enum Got {
    Text(String),
    Json(Value),
}

fn as_text(g: &Got) -> Option<String> {
    match g {
        Got::Text(t) | Got::Json(Value::String(t)) => Some(t.clone()),
        Got::Json(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
        Got::Json(_) => None,
    }
}

fn as_list(g: &Got) -> Option<Vec<String>> {
    match g {
        Got::Text(t) | Got::Json(Value::String(t)) => Some(t.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()),
        Got::Json(Value::Array(items)) => items.iter().map(|i| i.as_str().map(str::to_string)).collect(),
        Got::Json(_) => None,
    }
}

fn as_bool(g: &Got) -> Option<bool> {
    match g {
        Got::Json(Value::Bool(b)) => Some(*b),
        _ => match as_text(g)?.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
    }
}

fn as_int(g: &Got) -> Option<i64> {
    match g {
        Got::Json(v) if v.is_i64() => v.as_i64(),
        _ => as_text(g)?.trim().parse().ok(),
    }
}

fn as_json(g: Got) -> Result<Value, String> {
    match g {
        Got::Json(v) => Ok(v),
        Got::Text(t) => serde_json::from_str(&t).map_err(|e| format!("not JSON ({e})")),
    }
}

/// A CheckRequest's attributes, with its body parsed once when a source asks for it.
struct Attrs<'a> {
    req: &'a CheckRequest,
    body: std::cell::OnceCell<Option<Value>>,
}

impl<'a> Attrs<'a> {
    fn new(req: &'a CheckRequest) -> Attrs<'a> {
        Attrs { req, body: std::cell::OnceCell::new() }
    }

    fn http(&self) -> Option<&'a envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest> {
        self.req.attributes.as_ref()?.request.as_ref()?.http.as_ref()
    }

    fn get(&self, s: &Source) -> Option<Got> {
        let attrs = self.req.attributes.as_ref()?;
        let nonempty = |t: &str| (!t.is_empty()).then(|| Got::Text(t.to_string()));
        match s {
            Source::Header(name) => {
                let http = self.http()?;
                if let Some(v) = http.headers.get(name) {
                    return Some(Got::Text(v.clone()));
                }
                let h = http.header_map.as_ref()?.headers.iter().find(|h| h.key.eq_ignore_ascii_case(name))?;
                let v = if h.raw_value.is_empty() { h.value.clone() } else { String::from_utf8_lossy(&h.raw_value).into_owned() };
                Some(Got::Text(v))
            }
            Source::Context(key) => attrs.context_extensions.get(key).map(|v| Got::Text(v.clone())),
            Source::Metadata { filter, pointer } => {
                let s = attrs.metadata_context.as_ref()?.filter_metadata.get(filter)?;
                struct_json(s).pointer(pointer).filter(|v| !v.is_null()).cloned().map(Got::Json)
            }
            Source::Body(pointer) => {
                let body = self.body.get_or_init(|| {
                    let http = self.http()?;
                    let bytes = if http.raw_body.is_empty() { http.body.as_bytes() } else { &http.raw_body };
                    serde_json::from_slice(bytes).ok()
                });
                body.as_ref()?.pointer(pointer).filter(|v| !v.is_null()).cloned().map(Got::Json)
            }
            Source::Principal => nonempty(&attrs.source.as_ref()?.principal),
            Source::Peer => match attrs.source.as_ref()?.address.as_ref()?.address.as_ref()? {
                Address::SocketAddress(a) => nonempty(&a.address),
                _ => None,
            },
            Source::Method => nonempty(&self.http()?.method),
            Source::Path => nonempty(path_only(&self.http()?.path)),
            Source::PathSegment(n) => path_only(&self.http()?.path).split('/').filter(|p| !p.is_empty()).nth(*n).map(|p| Got::Text(p.to_string())),
            Source::Host => nonempty(&self.http()?.host),
            Source::Literal(t) => Some(Got::Text(t.clone())),
        }
    }
}

fn path_only(p: &str) -> &str {
    p.split(['?', '#']).next().unwrap_or(p)
}

/// A protobuf Struct as JSON.
fn struct_json(s: &Struct) -> Value {
    Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), pb_json(v))).collect())
}

fn pb_json(v: &PbValue) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => {
            // Integral numbers as integers, so `mfa_age_s` and friends read as Rego ints.
            if n.fract() == 0.0 && n.abs() < 9.0e15 { Value::from(*n as i64) } else { serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number) }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_json(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(pb_json).collect()),
    }
}

// ---------------------------------------------------------------------------------------
// The answer

fn header(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption { header: Some(HeaderValue { key: key.to_string(), value, ..Default::default() }), ..Default::default() }
}

/// The reasons as one header value: printable ASCII only, cut to [`MAX_REASONS_HEADER`].
fn reasons_header(reasons: &[String]) -> String {
    let mut out = String::new();
    for r in reasons {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.extend(r.chars().map(|c| if (' '..='~').contains(&c) { c } else { '?' }));
    }
    if out.len() > MAX_REASONS_HEADER {
        out.truncate(MAX_REASONS_HEADER - 3);
        out.push_str("...");
    }
    out
}

/// The CheckResponse for a verdict: OK, or a deny with 403 (503 when the PDP could not
/// decide: code 1007), the reasons in a header and the decision as a JSON body.
pub fn response(v: &Verdict, unauthenticated: bool) -> CheckResponse {
    let id = format!("{:032x}", v.decision_id);
    if v.allow {
        return CheckResponse {
            status: Some(Status { code: OK, ..Default::default() }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse { headers: vec![header(DECISION_ID_HEADER, id)], ..Default::default() })),
            ..Default::default()
        };
    }
    let unavailable = v.error_code == 1007;
    let (grpc, http) = match (unauthenticated, unavailable) {
        (true, _) => (UNAUTHENTICATED, 403),
        (false, true) => (UNAVAILABLE, 503),
        (false, false) => (PERMISSION_DENIED, 403),
    };
    let body = serde_json::json!({"allow": false, "decision_id": id, "error_code": v.error_code, "reasons": v.reasons});
    CheckResponse {
        status: Some(Status { code: grpc, message: reasons_header(&v.reasons), ..Default::default() }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: http }),
            headers: vec![header(REASONS_HEADER, reasons_header(&v.reasons)), header(DECISION_ID_HEADER, id), header("content-type", "application/json".into())],
            body: body.to_string(),
        })),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------
// The service

struct Service {
    shards: Vec<mpsc::Sender<Job>>,
    mapping: Mapping,
    timeout: Duration,
    /// Bearer tokens accepted in the call's `authorization` metadata (the caller and the
    /// admin token); empty: any caller.
    tokens: Vec<String>,
}

impl Service {
    fn authorized(&self, md: &tonic::metadata::MetadataMap) -> bool {
        if self.tokens.is_empty() {
            return true;
        }
        let given = md.get("authorization").and_then(|v| v.to_str().ok());
        self.tokens.iter().any(|t| crate::admin::bearer_is(given, t))
    }

    async fn decide(&self, req: &CheckRequest) -> Verdict {
        let input = match self.mapping.input(req) {
            Ok(i) => i,
            Err(why) => return Verdict::refused(1002, why),
        };
        let Some(shard) = self.shards.get(owner(&input, self.shards.len())) else {
            return Verdict::refused(1007, "ext_authz: no shard");
        };
        let (tx, rx) = oneshot::channel();
        match shard.try_send(Job { input, reply: tx }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Verdict::refused(1007, "ext_authz: the shard's queue is full"),
            Err(mpsc::error::TrySendError::Closed(_)) => return Verdict::refused(1007, "the PDP is shutting down"),
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => Verdict::refused(1007, "the PDP is shutting down"),
            Err(_) => Verdict::refused(1007, format!("ext_authz: no decision within {} ms", self.timeout.as_millis())),
        }
    }
}

#[tonic::async_trait]
impl Authorization for Service {
    async fn check(&self, request: tonic::Request<CheckRequest>) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        if !self.authorized(request.metadata()) {
            let v = Verdict::refused(0, "this PDP needs the caller token: authorization: Bearer <token> in the gRPC metadata (Envoy: grpc_service.initial_metadata)");
            return Ok(tonic::Response::new(response(&v, true)));
        }
        let v = self.decide(request.get_ref()).await;
        Ok(tonic::Response::new(response(&v, false)))
    }
}

/// Serve Checks on `listener` from a thread of its own, pinned to `cpu`, until `stop`.
///
/// # Errors
/// The thread or its runtime cannot start, or the TLS files cannot be read.
pub fn spawn(
    config: &ExtAuthzConfig,
    (listener, cpu): (std::net::TcpListener, Option<usize>),
    shards: Vec<mpsc::Sender<Job>>,
    tokens: Vec<String>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("ext_authz TLS {}: {e}", p.display()));
        let mut t = tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
        if let Some(ca) = &tls.client_ca {
            t = t.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
        }
        builder = builder.tls_config(t).map_err(|e| anyhow::anyhow!("ext_authz TLS: {e}"))?;
    }
    let service = Service { shards, mapping: config.mapping.clone(), timeout: config.timeout, tokens };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    Ok(std::thread::Builder::new().name("ext-authz".into()).spawn(move || {
        pdp::say!("sark-pdp: {}", crate::server::pin("ext_authz thread", cpu));
        let served = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let stopped = async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            let svc = AuthorizationServer::new(service).max_decoding_message_size(MAX_MESSAGE_BYTES);
            builder.add_service(svc).serve_with_incoming_shutdown(incoming, stopped).await.map_err(anyhow::Error::from)
        });
        if let Err(e) = served {
            pdp::say!("sark-pdp: ext_authz listener stopped: {e}");
        }
    })?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::collections::BTreeMap;

    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};

    use super::*;

    fn req(headers: &[(&str, &str)], path: &str) -> CheckRequest {
        let headers = headers.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        let http = HttpRequest { path: path.into(), headers, ..Default::default() };
        CheckRequest { attributes: Some(AttributeContext { request: Some(Request { http: Some(http), ..Default::default() }), ..Default::default() }) }
    }

    #[test]
    fn the_first_present_source_wins_and_lists_split() {
        let m = Mapping::with(&BTreeMap::from([("user.id".to_string(), vec!["header:a".to_string(), "header:b".to_string()])])).unwrap();
        let i = m.input(&req(&[("b", "bee"), ("x-sark-user-roles", "dev, ops,,")], "/")).unwrap();
        assert_eq!(i.user.id, "bee");
        assert_eq!(i.user.roles, ["dev", "ops"]);
        let i = m.input(&req(&[("a", "ay"), ("b", "bee")], "/")).unwrap();
        assert_eq!(i.user.id, "ay");
        // Nothing names a tool: no tool block at all (not an empty one).
        assert!(i.tool.is_none() && i.server.is_none());
        assert_eq!(i.action, "tool:invoke", "the default action");
    }

    #[test]
    fn an_empty_list_unmaps_a_field() {
        let m = Mapping::with(&BTreeMap::from([("action".to_string(), vec![])])).unwrap();
        assert_eq!(m.input(&req(&[], "/")).unwrap().action, "");
    }

    #[test]
    fn the_owner_depends_on_user_and_tool_only() {
        let m = Mapping::default();
        let a = m.input(&req(&[("x-sark-user-id", "u"), ("x-sark-tool", "t")], "/one")).unwrap();
        let b = m.input(&req(&[("x-sark-user-id", "u"), ("x-sark-tool", "t"), ("x-sark-user-roles", "r")], "/two")).unwrap();
        assert_eq!(owner(&a, 7), owner(&b, 7));
        let spread: std::collections::BTreeSet<usize> = (0..64).map(|i| owner(&SarkInput { user: pdp::input::UserFields { id: format!("u{i}"), ..Default::default() }, ..Default::default() }, 4)).collect();
        assert_eq!(spread.len(), 4, "users spread over every shard");
    }

    #[test]
    fn the_reasons_header_is_printable_and_bounded() {
        let h = reasons_header(&["caf\u{e9}\r\nx: y".into(), "b".repeat(5000)]);
        assert!(h.starts_with("caf???x: y; bbb"));
        assert!(h.len() <= MAX_REASONS_HEADER && h.ends_with("..."));
        assert!(h.bytes().all(|c| (b' '..=b'~').contains(&c)));
    }
}
