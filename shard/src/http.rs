//! The HTTP/1.1 front door, on every shard beside the binary protocol (its own
//! SO_REUSEPORT listener, default 127.0.0.1:8181, OPA's port). Same decision path:
//! the shard's decision point (key → cache → evaluator), audit ring and counters.
//!
//! Requests are parsed with `httparse`, bodies with `simd-json` (straight into regorus
//! values); keep-alive and pipelining; every limit answers with a status and a JSON body
//! naming the problem (`{"code": …, "message": …}`, OPA's error shape):
//! 400 malformed request or body, 404 unknown path or entrypoint, 405 wrong method,
//! 408 request not complete within the request timeout (slowloris), 411 no
//! Content-Length (chunked bodies are not accepted), 413 body over the limit, 431 headers
//! over the limit. The endpoints are listed in `shard/HTTP.md`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pdp::Value;
use pdp::audit::AuditRecord;
use pdp::eval::explain::ExplainLevel;
use pdp::point::Answer;
use serde::Deserialize;

use crate::server::{Shard, audited, bump, now_ns};
use crate::stages::Stage;

/// The HTTP front door's limits.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Request line and headers, bytes.
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    /// From a request's first byte to its last (headers and body): slowloris's bound.
    pub request_timeout: Duration,
    /// Requests served on one connection before it is closed (`Connection: close`).
    pub max_requests_per_connection: usize,
}

impl HttpConfig {
    pub fn new(listen: SocketAddr) -> HttpConfig {
        HttpConfig {
            listen,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(10),
            max_requests_per_connection: 100_000,
        }
    }
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// Decisions, health, metrics.
    Public,
    /// Reload and invalidation, behind the bearer token.
    Admin,
}

/// The admin API: its own listener and the token every call must carry.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: String,
}

/// Headers one request may carry.
const MAX_HEADERS: usize = 64;

/// One response, before it is framed.
pub(crate) struct Response {
    status: u16,
    body: String,
    content_type: &'static str,
    allow: Option<&'static str>,
}

impl Response {
    pub(crate) fn json(status: u16, body: &serde_json::Value) -> Response {
        Response { status, body: body.to_string(), content_type: "application/json", allow: None }
    }
    /// No body (204).
    pub(crate) fn empty(status: u16) -> Response {
        Response { status, body: String::new(), content_type: "application/json", allow: None }
    }

    pub(crate) fn error(status: u16, code: &str, message: impl std::fmt::Display) -> Response {
        Response::json(status, &serde_json::json!({"code": code, "message": message.to_string()}))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

fn frame(out: &mut Vec<u8>, r: &Response, close: bool, request_id: Option<&str>) {
    let mut head = String::with_capacity(160);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    if let Some(a) = r.allow {
        let _ = write!(head, "allow: {a}\r\n");
    }
    if let Some(id) = request_id {
        let _ = write!(head, "x-request-id: {id}\r\n");
    }
    head.push_str(if close { "connection: close\r\n\r\n" } else { "connection: keep-alive\r\n\r\n" });
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(r.body.as_bytes());
}

/// What the parser found at the front of the buffer.
enum Step {
    /// A whole request was answered (its bytes consumed); `close` after it.
    Answered { close: bool },
    /// More bytes are needed.
    Incomplete,
}

/// Serve one HTTP connection until it closes, errs, idles out or asks to close.
pub(crate) async fn connection(shard: &Shard, mut stream: crate::tls::Stream, door: Door) {
    converse(shard, &mut stream, door).await;
    stream.close().await;
}

async fn converse(shard: &Shard, stream: &mut crate::tls::Stream, door: Door) {
    // The admin API takes the HTTP limits, or their defaults when the HTTP door is off.
    let cfg = shard.config.http.clone().unwrap_or_else(|| HttpConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))));
    let mut inbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut served = 0usize;
    // When the request now in the buffer began arriving.
    let mut started: Option<Instant> = None;
    loop {
        let mut close = false;
        // Decisions count as a batch until their answers are written (a control change
        // waits for them); admin calls do not — they wait for control changes themselves.
        let mut batch = None;
        if !inbuf.is_empty() {
            if door == Door::Public {
                batch = Some(shard.begin_batch());
            }
            loop {
                let step = answer_one(shard, &cfg, door, &mut inbuf, &mut out, &mut served).await;
                match step {
                    Step::Answered { close: c } => {
                        started = None;
                        if c {
                            close = true;
                            break;
                        }
                        if inbuf.is_empty() {
                            break;
                        }
                    }
                    Step::Incomplete => break,
                }
            }
        }
        if !out.is_empty() {
            // Replies whose records could not be made durable (sync mode, the shard
            // stopped) are not sent: the connection closes.
            let sent = if crate::server::wait_durable(shard).await {
                let (res, buf) = stream.write_all(std::mem::take(&mut out)).await;
                out = buf;
                res.is_ok()
            } else {
                false
            };
            out.clear();
            if !sent {
                if let Some(g) = batch {
                    shard.end_batch(g);
                }
                return;
            }
        }
        if let Some(g) = batch {
            shard.end_batch(g);
        }
        if close || shard.shutdown.load(Ordering::Relaxed) {
            return;
        }
        if !inbuf.is_empty() && started.is_none() {
            started = Some(Instant::now());
        }
        let wait = match started {
            Some(t) => cfg.request_timeout.saturating_sub(t.elapsed()),
            None => shard.config.idle_timeout,
        };
        if inbuf.capacity() - inbuf.len() < 8 * 1024 {
            inbuf.reserve(16 * 1024);
        }
        let read = monoio::time::timeout(wait, stream.read_more(inbuf)).await;
        let Ok((res, buf)) = read else {
            if started.is_some() {
                let r = Response::error(408, "request_timeout", format!("the request was not complete within {:?}", cfg.request_timeout));
                frame(&mut out, &r, true, None);
                let _ = stream.write_all(out).await;
            }
            return;
        };
        inbuf = buf;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if started.is_none() {
                    started = Some(Instant::now());
                }
            }
        }
    }
}

/// The parts of a request head the handlers need, copied out of the buffer.
pub(crate) struct Head {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    close: bool,
    request_id: Option<String>,
    host: Option<String>,
    pub(crate) authorization: Option<String>,
    body_len: usize,
    head_len: usize,
}

/// Parse (and answer) the request at the front of `inbuf`, if it is all there.
async fn answer_one(shard: &Shard, cfg: &HttpConfig, door: Door, inbuf: &mut Vec<u8>, out: &mut Vec<u8>, served: &mut usize) -> Step {
    let head = match parse_head(cfg, inbuf) {
        Ok(Some(h)) => h,
        Ok(None) => return Step::Incomplete,
        Err(r) => {
            frame(out, &r, true, None);
            inbuf.clear();
            return Step::Answered { close: true };
        }
    };
    let total = head.head_len + head.body_len;
    if inbuf.len() < total {
        return Step::Incomplete;
    }
    *served += 1;
    bump(&shard.stats.http_requests);
    let close = head.close || *served >= cfg.max_requests_per_connection;
    let body = inbuf.get_mut(head.head_len..total).unwrap_or(&mut []);
    let response = match door {
        Door::Public => route(shard, &head, body).await,
        Door::Admin => crate::admin::route(shard, &head, body).await,
    };
    frame(out, &response, close, head.request_id.as_deref());
    inbuf.drain(..total);
    Step::Answered { close }
}

/// What a connection does with one buffered request before routing it: parse the head,
/// then the body as JSON (simd-json, in place, depth-checked). The request's length and its
/// body (`Null` when empty); `None` while it is incomplete; or the status it is refused
/// with. Public for the perf benches (`perf/benches/http.rs`, `iai_http.rs`).
///
/// # Errors
/// The status a connection would answer (400, 411, 413, 431).
pub fn parse_request(cfg: &HttpConfig, buf: &mut [u8]) -> Result<Option<(usize, serde_json::Value)>, u16> {
    let head = match parse_head(cfg, buf) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err(r) => return Err(r.status),
    };
    let total = head.head_len + head.body_len;
    let Some(body) = buf.get_mut(head.head_len..total) else { return Ok(None) };
    let value = if body.is_empty() { serde_json::Value::Null } else { parse_body::<serde_json::Value>(body).map_err(|r| r.status)? };
    Ok(Some((total, value)))
}

fn parse_head(cfg: &HttpConfig, buf: &[u8]) -> Result<Option<Head>, Response> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > cfg.max_header_bytes {
                return Err(Response::error(431, "headers_too_large", format!("request line and headers exceed {} bytes", cfg.max_header_bytes)));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Response::error(431, "headers_too_large", format!("more than {MAX_HEADERS} headers")));
        }
        Err(e) => return Err(Response::error(400, "bad_request", format!("malformed HTTP request: {e}"))),
    };
    if head_len > cfg.max_header_bytes {
        return Err(Response::error(431, "headers_too_large", format!("request line and headers exceed {} bytes", cfg.max_header_bytes)));
    }
    let method = req.method.unwrap_or("").to_string();
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let http10 = req.version == Some(0);
    let mut close = http10;
    let (mut content_length, mut request_id, mut host, mut authorization) = (None, None, None, None);
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if content_length.is_none_or(|c| c == n) => content_length = Some(n),
                _ => return Err(Response::error(400, "bad_request", format!("bad content-length {value:?}"))),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Response::error(411, "length_required", "chunked bodies are not accepted: send content-length"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                close = true;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("x-request-id") {
            // Echoed back: keep it printable and short.
            if value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic()) {
                request_id = Some(value.to_string());
            }
        } else if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.to_string());
        } else if h.name.eq_ignore_ascii_case("host") && value.len() <= 256 && value.bytes().all(|b| b.is_ascii_graphic()) {
            host = Some(value.to_string());
        }
    }
    let body_len = match (content_length, method.as_str()) {
        (Some(n), _) => n,
        (None, "POST" | "PUT" | "PATCH") => {
            return Err(Response::error(411, "length_required", format!("{method} needs a content-length")));
        }
        (None, _) => 0,
    };
    if body_len > cfg.max_body_bytes {
        return Err(Response::error(413, "body_too_large", format!("body of {body_len} bytes exceeds {} bytes", cfg.max_body_bytes)));
    }
    Ok(Some(Head {
        method,
        path: path.to_string(),
        query: query.to_string(),
        close,
        request_id,
        host,
        authorization,
        body_len,
        head_len,
    }))
}

pub(crate) fn method_not_allowed(allow: &'static str) -> Response {
    Response {
        allow: Some(allow),
        ..Response::error(405, "method_not_allowed", format!("use {allow}"))
    }
}

/// Whether the request may be answered: everything when no caller token is configured,
/// /health always (load balancers probe it), else a bearer token — the caller token or
/// the admin one.
fn caller_allowed(shard: &Shard, head: &Head) -> bool {
    let Some(caller) = &shard.config.caller_token else { return true };
    if matches!(head.path.as_str(), "/health" | "/health/live" | "/health/ready") {
        return true;
    }
    let bearer = |token: &str| crate::admin::bearer_is(head.authorization.as_deref(), token);
    bearer(caller) || shard.config.admin.as_ref().is_some_and(|a| bearer(&a.token))
}

async fn route(shard: &Shard, head: &Head, body: &mut [u8]) -> Response {
    if !caller_allowed(shard, head) {
        return Response::error(401, "unauthorized", "this PDP needs the caller token: Authorization: Bearer <token>");
    }
    let (m, p) = (head.method.as_str(), head.path.as_str());
    let query_flag = |name: &str| head.query.split('&').any(|kv| kv == name || kv == format!("{name}=true"));
    match p {
        "/health" | "/health/live" | "/health/ready" => match m {
            "GET" if shard.shutdown.load(Ordering::Relaxed) && p == "/health/ready" => {
                Response::error(503, "shutting_down", "the PDP is stopping")
            }
            "GET" if p == "/health" && query_flag("bundles") => {
                let last = shard.control.last_reload.lock().map(|l| l.clone()).unwrap_or(None);
                let last = match last {
                    None => serde_json::Value::Null,
                    Some(Ok(rev)) => serde_json::json!({"ok": true, "revision": rev}),
                    Some(Err(why)) => serde_json::json!({"ok": false, "error": why}),
                };
                Response::json(200, &serde_json::json!({"bundles": {"revision": shard.revision.borrow().clone(), "last_reload": last}}))
            }
            "GET" => Response::json(200, &serde_json::json!({})),
            _ => method_not_allowed("GET"),
        },
        "/metrics" => match m {
            "GET" => Response {
                status: 200,
                body: crate::metrics::render(&shard.all_stats, &shard.revision.borrow(), shard.config.audit.durability.as_str(), shard.audit_io, &shard.control),
                content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
                allow: None,
            },
            _ => method_not_allowed("GET"),
        },
        "/.well-known/authzen-configuration" => match m {
            "GET" => {
                let base = format!("http://{}", head.host.as_deref().unwrap_or("127.0.0.1:8181"));
                Response::json(200, &crate::authzen::configuration(&base))
            }
            _ => method_not_allowed("GET"),
        },
        "/access/v1/evaluation" | "/access/v1/evaluations" | "/api/v1/policy/evaluate" | "/api/v1/policy/batch-evaluate"
        | "/api/v1/gateway/authorize" => match m {
            "POST" => {
                let mut timing = Timing::begin(shard, false);
                match parse_body::<serde_json::Value>(body) {
                    Ok(req) => {
                        timing.parsed(shard);
                        shaped(shard, p, req, timing).await
                    }
                    Err(r) => r,
                }
            }
            _ => method_not_allowed("POST"),
        },
        _ => {
            if let Some(rest) = p.strip_prefix("/v1/data") {
                match m {
                    "POST" | "GET" => {
                        let explain = match explain_param(&head.query) {
                            Ok(e) => e,
                            Err(r) => return r,
                        };
                        if let Some(why) = explain.and_then(|l| crate::server::explain_refused(shard, l)) {
                            return Response::error(403, "forbidden", why);
                        }
                        let mut timing = Timing::begin(shard, query_flag("metrics"));
                        let input = if m == "POST" && !body.is_empty() {
                            match parse_body::<DataRequest>(body) {
                                Ok(r) => {
                                    timing.parsed(shard);
                                    r.input.unwrap_or(Value::Undefined)
                                }
                                Err(r) => return r,
                            }
                        } else {
                            Value::Undefined
                        };
                        data(shard, rest, input, timing, explain, false).await
                    }
                    _ => method_not_allowed("GET, POST"),
                }
            } else if let Some(rest) = p.strip_prefix("/v0/data") {
                match m {
                    "POST" => {
                        let mut timing = Timing::begin(shard, false);
                        let input = if body.is_empty() {
                            Value::Undefined
                        } else {
                            match parse_body::<Value>(body) {
                                Ok(v) => {
                                    timing.parsed(shard);
                                    v
                                }
                                Err(r) => return r,
                            }
                        };
                        data(shard, rest, input, timing, None, true).await
                    }
                    _ => method_not_allowed("POST"),
                }
            } else {
                Response::error(404, "not_found", format!("no endpoint {p}"))
            }
        }
    }
}

/// The data API's `explain=` parameter: `notes` or `full` (`off`, or none, explains
/// nothing); OPA's `fails` and `debug`, and anything else, are refused with a 400.
fn explain_param(query: &str) -> Result<Option<ExplainLevel>, Response> {
    let Some(value) = query.split('&').find_map(|kv| if kv == "explain" { Some("") } else { kv.strip_prefix("explain=") }) else {
        return Ok(None);
    };
    match (value, ExplainLevel::parse(value)) {
        ("off", _) => Ok(None),
        (_, Some(level)) => Ok(Some(level)),
        ("fails" | "debug", None) => Err(Response::error(400, "invalid_parameter", format!("explain={value} is not supported: use explain=notes or explain=full"))),
        (_, None) => Err(Response::error(400, "invalid_parameter", format!("unknown explain value {value:?}: use explain=notes or explain=full"))),
    }
}

/// OPA's `{"input": …}` request body.
#[derive(Deserialize)]
struct DataRequest {
    #[serde(default)]
    input: Option<Value>,
}

/// Parse a JSON body with simd-json (in place), refusing nesting deeper than
/// [`pdp::json_guard::MAX_DEPTH`] and keys named twice before building anything.
fn parse_body<'a, T: Deserialize<'a>>(body: &'a mut [u8]) -> Result<T, Response> {
    if let Err(why) = pdp::json_guard::check(body, pdp::json_guard::MAX_DEPTH) {
        return Err(Response::error(400, "invalid_parameter", format!("request body refused: {why}")));
    }
    simd_json::serde::from_slice(body).map_err(|e| Response::error(400, "invalid_parameter", format!("error(s) occurred while decoding request body: {e}")))
}

/// One decision request's clock readings (the shard's quanta clock): OPA's
/// `?metrics=true` timers, and the stage histograms when the shard samples the request
/// ([`crate::stages`]; every decision of a sampled request is timed). A request that is
/// neither reads no clock for them.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// `?metrics=true` was asked.
    metrics: bool,
    /// The shard sampled this request.
    sampled: bool,
    /// When the handler began (read only when `metrics` or `sampled`).
    began: Option<u64>,
    /// `timer_rego_input_parse_ns`: the body's parse (`None`: no body was parsed).
    input_parse_ns: Option<u64>,
    /// `timer_rego_query_eval_ns`: the decision point's work (key, cache, evaluator), or
    /// the evaluator's for another entrypoint.
    eval_ns: u64,
}

impl Timing {
    /// A request on the data API (`metrics`: `?metrics=true`) or a decision endpoint begins.
    fn begin(shard: &Shard, metrics: bool) -> Timing {
        let sampled = shard.sampler.tick();
        Timing { metrics, sampled, began: shard.lap_start(metrics || sampled), input_parse_ns: None, eval_ns: 0 }
    }

    /// The body is parsed: the decode stage, and `timer_rego_input_parse_ns`.
    fn parsed(&mut self, shard: &Shard) {
        if let Some(began) = self.began {
            let ns = shard.clock.delta_as_nanos(began, shard.clock.raw());
            if self.sampled {
                shard.stats.stages.observe(Stage::Decode, ns);
            }
            if self.metrics {
                self.input_parse_ns = Some(ns);
            }
        }
    }

    /// The clock, when either wants it.
    fn now(&self, shard: &Shard) -> Option<u64> {
        shard.lap_start(self.metrics || self.sampled)
    }
}

/// Decide a SARK input document on the shard's decision path (cache, evaluator, audit),
/// timing it as `timing` asks.
async fn decide_document(shard: &Shard, input: Value, timing: &mut Timing) -> (Answer, u128) {
    let t0 = shard.clock.raw();
    let now = now_ns();
    let id = shard.ids.borrow_mut().next_id();
    let sensitivity = pdp::Sensitivity::of_input(&input);
    let (answer, from, looked_up) = {
        let mut point = shard.point.borrow_mut();
        let from = timing.now(shard);
        if timing.sampled {
            point.mark_next();
        }
        let answer = point.decide_document(input.clone(), now);
        let looked_up = if timing.sampled { from.zip(point.take_mark()) } else { None };
        (answer, from, looked_up)
    };
    let t1 = shard.clock.raw();
    shard.point_stages(looked_up, t1, answer.cache_hit);
    if let Some(from) = from {
        timing.eval_ns += shard.clock.delta_as_nanos(from, t1);
    }
    let us = shard.clock.delta_as_nanos(t0, t1) / 1000;
    let record = AuditRecord::for_document(&input, &answer, id, now, us);
    let out = audited(shard, record, answer, sensitivity).await;
    shard.lap(Stage::AuditPush, timing.sampled.then_some(t1));
    out
}

/// The data API: `path` is what follows `/v1/data` (or `/v0/data`).
async fn data(shard: &Shard, path: &str, input: Value, mut timing: Timing, explain: Option<ExplainLevel>, bare: bool) -> Response {
    let entrypoint = format!("data{}", path.trim_end_matches('/').replace('/', "."));
    // An explanation is built after the answer, from it (outside timer_rego_query_eval_ns;
    // see shard/HTTP.md, Explain).
    let mut explanation = None;
    // SARK's decision and its legacy projections share the decision path; any other
    // entrypoint of the bundle goes to the evaluator (not cached, not audited).
    let (result, decision_id) = match entrypoint.as_str() {
        pdp::bundle::DECISION_ENTRYPOINT | "data.mcp.allow" | "data.mcp.result" => {
            // The document as evaluated, for a full trace (the PDP's clock a moment later).
            let evaluated = (explain == Some(ExplainLevel::Full)).then(|| {
                let mut doc = input.clone();
                pdp::input::stamp_now(&mut doc, now_ns());
                doc
            });
            let (answer, id) = decide_document(shard, input, &mut timing).await;
            let d = &answer.decision;
            if let Some(level) = explain {
                // An input the PDP refused (over its limits) was never evaluated: nor is it for the trace.
                let traced = evaluated.as_ref().filter(|_| !matches!(d.error, Some(pdp::EvalError::BadInput(_))));
                explanation = Some(shard.evaluator.borrow().explain_decision(level, d, answer.cache_hit, traced).to_json());
            }
            let v = match entrypoint.as_str() {
                "data.mcp.allow" => Some(serde_json::Value::Bool(d.allow)),
                "data.mcp.result" => crate::authzen::mcp_result(d),
                _ => Some(d.to_json()),
            };
            (v, Some(id))
        }
        _ => {
            let mut input = input;
            pdp::input::stamp_now(&mut input, now_ns());
            let known = shard.evaluator.borrow().bundle().entrypoints().any(|(ep, _, _)| ep == entrypoint);
            if !known {
                return Response::error(404, "undefined_document", format!("{entrypoint} is not an entrypoint of bundle {}", shard.revision.borrow()));
            }
            let explained = explain.map(|level| (level, input.clone()));
            let t = shard.lap_start(timing.metrics);
            let evaluated = shard.evaluator.borrow_mut().evaluate(&entrypoint, input);
            if let Some(t) = t {
                timing.eval_ns = shard.clock.delta_as_nanos(t, shard.clock.raw());
            }
            let explain_value = |v: Option<&serde_json::Value>| {
                explained.as_ref().map(|(level, doc)| {
                    let ev = shard.evaluator.borrow();
                    let engine = ev.engine_for(&entrypoint).unwrap_or(pdp::EngineKind::Interpreter);
                    ev.explain_entrypoint(*level, &entrypoint, engine, doc, v).to_json()
                })
            };
            match evaluated {
                Ok((v, _)) => {
                    let v = pdp::decision::value_to_json(&v);
                    explanation = explain_value(v.as_ref());
                    (v, None)
                }
                Err(pdp::EvalError::Undefined(_)) => {
                    explanation = explain_value(None);
                    (None, None)
                }
                Err(e) => {
                    return Response::json(
                        500,
                        &serde_json::json!({"code": "internal_error", "message": e.to_string(), "sark_pdp_code": e.wire_code()}),
                    );
                }
            }
        }
    };
    // The encode stage: a decision's answer to the response body.
    let encoding = shard.lap_start(timing.sampled && decision_id.is_some());
    if bare {
        let response = match result {
            Some(v) => Response::json(200, &v),
            None => Response::error(404, "undefined_document", format!("{entrypoint} is undefined")),
        };
        shard.lap(Stage::Encode, encoding);
        return response;
    }
    let mut out = serde_json::Map::new();
    if let Some(v) = result {
        out.insert("result".into(), v);
    }
    if let Some(id) = decision_id {
        out.insert("decision_id".into(), format!("{id:032x}").into());
    }
    if let Some(x) = explanation {
        out.insert("explanation".into(), x);
    }
    if let (true, Some(began)) = (timing.metrics, timing.began) {
        // OPA's timer names, for the stages we have: the body's parse (when there was a
        // body), the decision point (key, cache, evaluator) or the evaluator, and the whole
        // handler from the request's routing on. No query or module is parsed or compiled
        // per request (the bundle is compiled when loaded), so those timers are left out.
        let mut m = serde_json::Map::new();
        if let Some(ns) = timing.input_parse_ns {
            m.insert("timer_rego_input_parse_ns".into(), ns.into());
        }
        m.insert("timer_rego_query_eval_ns".into(), timing.eval_ns.into());
        m.insert("timer_server_handler_ns".into(), shard.clock.delta_as_nanos(began, shard.clock.raw()).into());
        out.insert("metrics".into(), serde_json::Value::Object(m));
    }
    let response = Response::json(200, &serde_json::Value::Object(out));
    shard.lap(Stage::Encode, encoding);
    response
}

/// AuthZEN and SARK's own endpoints: map the request to SARK inputs, decide each on the
/// decision path, shape the answers.
async fn shaped(shard: &Shard, path: &str, req: serde_json::Value, mut timing: Timing) -> Response {
    use crate::authzen as az;
    let plan = match path {
        "/access/v1/evaluation" => az::evaluation(&req).map(|i| (vec![i], az::Semantic::ExecuteAll)),
        "/access/v1/evaluations" => az::evaluations(&req),
        "/api/v1/policy/evaluate" => az::sark_evaluate(&req).map(|i| (vec![i], az::Semantic::ExecuteAll)),
        "/api/v1/policy/batch-evaluate" => az::sark_batch(&req).map(|v| (v, az::Semantic::ExecuteAll)),
        _ => az::sark_gateway(&req).map(|i| (vec![i], az::Semantic::ExecuteAll)),
    };
    let (inputs, semantic) = match plan {
        Ok(p) => p,
        Err(why) => return Response::error(400, "invalid_parameter", why),
    };
    let mut answers = Vec::with_capacity(inputs.len());
    for input in inputs {
        let value = Value::from(input);
        let (answer, id) = decide_document(shard, value, &mut timing).await;
        let stop = semantic.stops_after(answer.decision.allow);
        answers.push((answer, id));
        if stop {
            break;
        }
    }
    let encoding = shard.lap_start(timing.sampled);
    let body = match path {
        "/access/v1/evaluation" => answers.first().map(|(a, id)| az::evaluation_response(a, *id)),
        "/access/v1/evaluations" => Some(serde_json::json!({
            "evaluations": answers.iter().map(|(a, id)| az::evaluation_response(a, *id)).collect::<Vec<_>>()
        })),
        "/api/v1/policy/evaluate" => answers.first().map(|(a, id)| az::sark_response(a, *id)),
        "/api/v1/policy/batch-evaluate" => Some(serde_json::Value::Array(answers.iter().map(|(a, id)| az::sark_response(a, *id)).collect())),
        _ => answers.first().map(|(a, id)| az::gateway_response(a, *id)),
    };
    let response = Response::json(200, &body.unwrap_or_else(|| serde_json::json!({})));
    shard.lap(Stage::Encode, encoding);
    response
}
