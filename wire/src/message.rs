//! Payload layouts per opcode, and the typed requests and replies they carry.
//! Field order is the layout; see `PROTOCOL.md` for the same in tables.

use crate::codec::{Put, Reader};
use crate::error::WireError;
use crate::frame::{Header, write_frame};
use crate::opcode;

/// Most items one EVAL_BATCH may carry.
pub const MAX_BATCH: u32 = 4096;

/// HELLO: the client's version, the largest payload it will send or accept, and an
/// optional auth token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u8,
    pub max_payload: u32,
    pub token: Option<String>,
}

/// HELLO_OK: what the server agreed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloOk {
    pub version: u8,
    /// The negotiated maximum payload: the smaller of the two sides'.
    pub max_payload: u32,
    pub max_batch: u32,
    /// Shards serving, and which one answered (for key-affine clients).
    pub shards: u16,
    pub shard: u16,
    pub bundle_revision: String,
    /// The answering shard's I/O driver: `io_uring` or `epoll`.
    pub driver: String,
    /// The routing function ([`crate::route`]): which shard owns a question.
    pub route: u8,
    /// Each shard's own port (index = shard), on the address this connection reached;
    /// empty when the server has no per-shard ports.
    pub shard_ports: Vec<u16>,
}

/// SARK's question as typed fields (SARK-SPEC "Input document").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Eval {
    pub user_id: String,
    pub roles: Vec<String>,
    pub teams: Vec<String>,
    pub team_manager_of: Vec<String>,
    pub scopes: Vec<String>,
    pub mfa_verified: Option<bool>,
    pub mfa_age_s: Option<i64>,
    pub email: Option<String>,
    pub action: String,
    pub tool: Option<Tool>,
    pub server: Option<Server>,
    pub client_ip: Option<String>,
    pub now_ns: Option<i64>,
    /// JSON text of `parameters`, `agent` and further `context` fields.
    pub parameters_json: Option<String>,
    pub agent_json: Option<String>,
    pub context_json: Option<String>,
}

impl Eval {
    /// SARK's typical question, for examples, tests and benchmarks: a developer of the
    /// payments team invoking `update_ticket` (medium sensitivity) from 10.20.30.40 over
    /// VPN, with MFA, passing a ticket id and an API token (which the policy filters).
    pub fn example(user_id: impl Into<String>) -> Eval {
        Eval {
            user_id: user_id.into(),
            roles: vec!["developer".into()],
            teams: vec!["payments".into()],
            mfa_verified: Some(true),
            mfa_age_s: Some(120),
            action: "tool:invoke".into(),
            tool: Some(Tool {
                name: "update_ticket".into(),
                sensitivity_level: Some("medium".into()),
                teams: vec!["payments".into()],
                ..Tool::default()
            }),
            client_ip: Some("10.20.30.40".into()),
            parameters_json: Some(r#"{"ticket_id": "T-42", "api_token": "x"}"#.into()),
            context_json: Some(r#"{"audit_enabled": true, "vpn": true, "geo_country": "US"}"#.into()),
            ..Eval::default()
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tool {
    pub name: String,
    pub sensitivity_level: Option<String>,
    pub owner: Option<String>,
    pub managers: Vec<String>,
    pub teams: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Server {
    pub id: String,
    pub name: Option<String>,
    pub owner_id: Option<String>,
    pub teams: Vec<String>,
    pub managed_by_team: Option<String>,
}

/// EVAL_JSON: any entrypoint, any JSON input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalJson {
    pub entrypoint: String,
    pub input_json: String,
}

/// One reason: `code` 0 for a policy's own reason, else the error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: u16,
    pub text: String,
}

/// DECISION: the answer to one EVAL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    pub cache_hit: bool,
    /// Seconds the decision stays cached (0: not cached).
    pub ttl_s: u32,
    pub decision_id: u128,
    /// 0, or the error code that made this a deny.
    pub error_code: u16,
    pub reasons: Vec<Reason>,
    pub filtered_parameters_json: Option<String>,
}

/// ERROR: a stable code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: u16,
    pub message: String,
}

/// How much explanation an EVAL asks for: bits 0–1 of its header's flags (0 none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Explain {
    /// The decision's own account: policy results, reasons, engine, cache, bundle revision.
    Notes = 1,
    /// Notes and a rule trace.
    Full = 2,
}

impl Explain {
    /// The EVAL header flag bits that carry the level.
    pub const MASK: u16 = 0b11;

    /// The header flags that ask for this level.
    pub fn flags(self) -> u16 {
        self as u16
    }

    /// `notes` or `full`, as the HTTP `explain=` parameter spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Explain::Notes => "notes",
            Explain::Full => "full",
        }
    }
}

/// Any request frame's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello(Hello),
    Eval(Box<Eval>),
    /// An EVAL whose header flags ask for an explanation; answered with EXPLANATION (a
    /// server that predates it ignores the flags and answers DECISION).
    EvalExplain(Box<Eval>, Explain),
    EvalJson(EvalJson),
    EvalBatch(Vec<Eval>),
    /// Opaque bytes echoed in the PONG.
    Ping(Vec<u8>),
    /// Drop cached decisions on every shard (needs the admin token in HELLO).
    Invalidate(Invalidate),
}

/// What INVALIDATE drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidate {
    All,
    User(String),
    Tool(String),
    Server(String),
}

/// The ERROR code for a request the connection's HELLO token does not allow.
pub const ERROR_UNAUTHORIZED: u16 = 3006;

/// Any reply frame's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Boxed: the largest reply, and the rarest (once per connection).
    HelloOk(Box<HelloOk>),
    Decision(Decision),
    /// An explained EVAL's answer: the DECISION and the explanation as JSON text.
    Explanation(Decision, String),
    /// EVAL_JSON's answer: the entrypoint's value as JSON text (`None`: undefined).
    Result(Option<String>),
    DecisionBatch(Vec<Decision>),
    Pong(Vec<u8>),
    /// INVALIDATE's answer: whether every shard acknowledged in time.
    Invalidated(bool),
    Error(ErrorReply),
}

/// Once per connection: kept out of line, off the replies that are sent per request.
#[cold]
#[inline(never)]
fn put_hello_ok(o: &mut Vec<u8>, h: &HelloOk) {
    o.u8(h.version);
    o.u32(h.max_payload);
    o.u32(h.max_batch);
    o.u16(h.shards);
    o.u16(h.shard);
    o.str(&h.bundle_revision);
    o.str(&h.driver);
    o.u8(h.route);
    o.u16(u16::try_from(h.shard_ports.len()).unwrap_or(u16::MAX));
    for p in h.shard_ports.iter().take(usize::from(u16::MAX)) {
        o.u16(*p);
    }
}

fn put_eval(o: &mut Vec<u8>, e: &Eval) {
    o.str(&e.user_id);
    o.strs(&e.roles);
    o.strs(&e.teams);
    o.strs(&e.team_manager_of);
    o.strs(&e.scopes);
    match e.mfa_verified {
        None => o.u8(0),
        Some(false) => o.u8(1),
        Some(true) => o.u8(2),
    }
    match e.mfa_age_s {
        Some(v) => {
            o.u8(1);
            o.i64(v);
        }
        None => o.u8(0),
    }
    o.opt_str(e.email.as_deref());
    o.str(&e.action);
    match &e.tool {
        Some(t) => {
            o.u8(1);
            o.str(&t.name);
            o.opt_str(t.sensitivity_level.as_deref());
            o.opt_str(t.owner.as_deref());
            o.strs(&t.managers);
            o.strs(&t.teams);
        }
        None => o.u8(0),
    }
    match &e.server {
        Some(s) => {
            o.u8(1);
            o.str(&s.id);
            o.opt_str(s.name.as_deref());
            o.opt_str(s.owner_id.as_deref());
            o.strs(&s.teams);
            o.opt_str(s.managed_by_team.as_deref());
        }
        None => o.u8(0),
    }
    o.opt_str(e.client_ip.as_deref());
    match e.now_ns {
        Some(v) => {
            o.u8(1);
            o.i64(v);
        }
        None => o.u8(0),
    }
    o.opt_str(e.parameters_json.as_deref());
    o.opt_str(e.agent_json.as_deref());
    o.opt_str(e.context_json.as_deref());
}

fn get_eval(r: &mut Reader<'_>) -> Result<Eval, WireError> {
    Ok(Eval {
        user_id: r.str()?,
        roles: r.strs()?,
        teams: r.strs()?,
        team_manager_of: r.strs()?,
        scopes: r.strs()?,
        mfa_verified: match r.u8()? {
            0 => None,
            1 => Some(false),
            2 => Some(true),
            t => return Err(r.malformed(format!("mfa_verified tag {t}"))),
        },
        mfa_age_s: if r.present()? { Some(r.i64()?) } else { None },
        email: r.opt_str()?,
        action: r.str()?,
        tool: if r.present()? {
            Some(Tool {
                name: r.str()?,
                sensitivity_level: r.opt_str()?,
                owner: r.opt_str()?,
                managers: r.strs()?,
                teams: r.strs()?,
            })
        } else {
            None
        },
        server: if r.present()? {
            Some(Server {
                id: r.str()?,
                name: r.opt_str()?,
                owner_id: r.opt_str()?,
                teams: r.strs()?,
                managed_by_team: r.opt_str()?,
            })
        } else {
            None
        },
        client_ip: r.opt_str()?,
        now_ns: if r.present()? { Some(r.i64()?) } else { None },
        parameters_json: r.opt_str()?,
        agent_json: r.opt_str()?,
        context_json: r.opt_str()?,
    })
}

fn put_decision(o: &mut Vec<u8>, d: &Decision) {
    o.u8(u8::from(d.allow) | (u8::from(d.cache_hit) << 1));
    o.u32(d.ttl_s);
    o.u128(d.decision_id);
    o.u16(d.error_code);
    o.u32(u32::try_from(d.reasons.len()).unwrap_or(u32::MAX));
    for reason in &d.reasons {
        o.u16(reason.code);
        o.str(&reason.text);
    }
    o.opt_str(d.filtered_parameters_json.as_deref());
}

/// A DECISION body that borrows its strings, so a server encodes its own decision
/// without copying it into a [`Decision`]. Every reason carries `error_code`.
#[derive(Debug, Clone, Copy)]
pub struct DecisionView<'a> {
    pub allow: bool,
    pub cache_hit: bool,
    pub ttl_s: u32,
    pub decision_id: u128,
    pub error_code: u16,
    pub reasons: &'a [String],
    pub filtered_parameters_json: Option<&'a str>,
}

fn put_view(o: &mut Vec<u8>, d: &DecisionView<'_>) {
    o.u8(u8::from(d.allow) | (u8::from(d.cache_hit) << 1));
    o.u32(d.ttl_s);
    o.u128(d.decision_id);
    o.u16(d.error_code);
    o.u32(u32::try_from(d.reasons.len()).unwrap_or(u32::MAX));
    for text in d.reasons {
        o.u16(d.error_code);
        o.str(text);
    }
    o.opt_str(d.filtered_parameters_json);
}

/// Append a DECISION frame from a view (the same bytes as [`Reply::Decision`]).
pub fn encode_decision(out: &mut Vec<u8>, request_id: u64, d: &DecisionView<'_>) {
    write_frame(out, opcode::DECISION, 0, request_id, |o| put_view(o, d));
}

/// Append an EXPLANATION frame from a view and the explanation's JSON text (the same bytes
/// as [`Reply::Explanation`]).
pub fn encode_explanation(out: &mut Vec<u8>, request_id: u64, d: &DecisionView<'_>, explanation_json: &str) {
    write_frame(out, opcode::EXPLANATION, 0, request_id, |o| {
        put_view(o, d);
        o.str(explanation_json);
    });
}

/// Append a DECISION_BATCH frame from views (the same bytes as [`Reply::DecisionBatch`]).
pub fn encode_decision_batch(out: &mut Vec<u8>, request_id: u64, items: &[DecisionView<'_>]) {
    write_frame(out, opcode::DECISION_BATCH, 0, request_id, |o| {
        o.u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
        for d in items {
            put_view(o, d);
        }
    });
}

fn get_decision(r: &mut Reader<'_>) -> Result<Decision, WireError> {
    let flags = r.u8()?;
    if flags & !0b11 != 0 {
        return Err(r.malformed(format!("decision flags {flags:#04x}")));
    }
    let ttl_s = r.u32()?;
    let decision_id = r.u128()?;
    let error_code = r.u16()?;
    let n = r.count(6)?;
    let reasons = (0..n)
        .map(|_| {
            Ok(Reason {
                code: r.u16()?,
                text: r.str()?,
            })
        })
        .collect::<Result<_, WireError>>()?;
    Ok(Decision {
        allow: flags & 1 != 0,
        cache_hit: flags & 2 != 0,
        ttl_s,
        decision_id,
        error_code,
        reasons,
        filtered_parameters_json: r.opt_str()?,
    })
}

/// Append a request frame.
pub fn encode_request(out: &mut Vec<u8>, request_id: u64, req: &Request) {
    let op = match req {
        Request::Hello(_) => opcode::HELLO,
        Request::Eval(_) | Request::EvalExplain(..) => opcode::EVAL,
        Request::EvalJson(_) => opcode::EVAL_JSON,
        Request::EvalBatch(_) => opcode::EVAL_BATCH,
        Request::Ping(_) => opcode::PING,
        Request::Invalidate(_) => opcode::INVALIDATE,
    };
    let flags = match req {
        Request::EvalExplain(_, level) => level.flags(),
        _ => 0,
    };
    write_frame(out, op, flags, request_id, |o| match req {
        Request::Hello(h) => {
            o.u8(h.version);
            o.u32(h.max_payload);
            o.opt_str(h.token.as_deref());
        }
        Request::Eval(e) | Request::EvalExplain(e, _) => put_eval(o, e),
        Request::EvalJson(e) => {
            o.str(&e.entrypoint);
            o.str(&e.input_json);
        }
        Request::EvalBatch(items) => {
            o.u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
            for e in items {
                put_eval(o, e);
            }
        }
        Request::Ping(b) => o.extend_from_slice(b),
        Request::Invalidate(i) => {
            let (kind, value) = match i {
                Invalidate::All => (0, ""),
                Invalidate::User(v) => (1, v.as_str()),
                Invalidate::Tool(v) => (2, v.as_str()),
                Invalidate::Server(v) => (3, v.as_str()),
            };
            o.u8(kind);
            o.str(value);
        }
    });
}

/// Decode a request frame's payload (`payload` is exactly the header's `len` bytes).
///
/// # Errors
/// [`WireError::UnknownOpcode`] (the connection may go on), [`WireError::Malformed`] and
/// [`WireError::Limit`].
pub fn decode_request(header: &Header, payload: &[u8]) -> Result<Request, WireError> {
    let req = match header.opcode {
        opcode::HELLO => {
            let mut r = Reader::new(payload, "HELLO");
            let h = Hello {
                version: r.u8()?,
                max_payload: r.u32()?,
                token: r.opt_str()?,
            };
            r.finish()?;
            Request::Hello(h)
        }
        opcode::EVAL => {
            let mut r = Reader::new(payload, "EVAL");
            // Flag bits past the explain level are reserved and ignored, as before them.
            let explain = match header.flags & Explain::MASK {
                0 => None,
                1 => Some(Explain::Notes),
                2 => Some(Explain::Full),
                f => return Err(r.malformed(format!("explain level {f}"))),
            };
            let e = Box::new(get_eval(&mut r)?);
            r.finish()?;
            match explain {
                None => Request::Eval(e),
                Some(level) => Request::EvalExplain(e, level),
            }
        }
        opcode::EVAL_JSON => {
            let mut r = Reader::new(payload, "EVAL_JSON");
            let e = EvalJson {
                entrypoint: r.str()?,
                input_json: r.str()?,
            };
            r.finish()?;
            Request::EvalJson(e)
        }
        opcode::EVAL_BATCH => {
            let mut r = Reader::new(payload, "EVAL_BATCH");
            // The smallest EVAL is well over 16 bytes.
            let n = r.count(16)?;
            if n > MAX_BATCH as usize {
                return Err(WireError::Limit(format!("batch of {n} items exceeds the maximum of {MAX_BATCH}")));
            }
            let items = (0..n).map(|_| get_eval(&mut r)).collect::<Result<_, _>>()?;
            r.finish()?;
            Request::EvalBatch(items)
        }
        opcode::PING => Request::Ping(payload.to_vec()),
        opcode::INVALIDATE => {
            let mut r = Reader::new(payload, "INVALIDATE");
            let kind = r.u8()?;
            let value = r.str()?;
            let what = match kind {
                0 => Invalidate::All,
                1 => Invalidate::User(value),
                2 => Invalidate::Tool(value),
                3 => Invalidate::Server(value),
                k => return Err(r.malformed(format!("invalidate kind {k}"))),
            };
            r.finish()?;
            Request::Invalidate(what)
        }
        other => return Err(WireError::UnknownOpcode(other)),
    };
    Ok(req)
}

/// Append a reply frame.
pub fn encode_reply(out: &mut Vec<u8>, request_id: u64, reply: &Reply) {
    let op = match reply {
        Reply::HelloOk(_) => opcode::HELLO_OK,
        Reply::Decision(_) => opcode::DECISION,
        Reply::Explanation(..) => opcode::EXPLANATION,
        Reply::Result(_) => opcode::RESULT,
        Reply::DecisionBatch(_) => opcode::DECISION_BATCH,
        Reply::Pong(_) => opcode::PONG,
        Reply::Invalidated(_) => opcode::INVALIDATED,
        Reply::Error(_) => opcode::ERROR,
    };
    write_frame(out, op, 0, request_id, |o| match reply {
        Reply::HelloOk(h) => put_hello_ok(o, h),
        Reply::Decision(d) => put_decision(o, d),
        Reply::Explanation(d, json) => {
            put_decision(o, d);
            o.str(json);
        }
        Reply::Result(v) => o.opt_str(v.as_deref()),
        Reply::DecisionBatch(items) => {
            o.u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
            for d in items {
                put_decision(o, d);
            }
        }
        Reply::Pong(b) => o.extend_from_slice(b),
        Reply::Invalidated(acked) => o.u8(u8::from(*acked)),
        Reply::Error(e) => {
            o.u16(e.code);
            o.str(&e.message);
        }
    });
}

/// Decode a reply frame's payload.
///
/// # Errors
/// As [`decode_request`].
pub fn decode_reply(header: &Header, payload: &[u8]) -> Result<Reply, WireError> {
    let mut r = Reader::new(payload, "reply");
    let reply = match header.opcode {
        opcode::HELLO_OK => Reply::HelloOk(Box::new(HelloOk {
            version: r.u8()?,
            max_payload: r.u32()?,
            max_batch: r.u32()?,
            shards: r.u16()?,
            shard: r.u16()?,
            bundle_revision: r.str()?,
            driver: r.str()?,
            route: r.u8()?,
            shard_ports: {
                let n = r.u16()?;
                (0..n).map(|_| r.u16()).collect::<Result<_, _>>()?
            },
        })),
        opcode::DECISION => Reply::Decision(get_decision(&mut r)?),
        opcode::EXPLANATION => Reply::Explanation(get_decision(&mut r)?, r.str()?),
        opcode::RESULT => Reply::Result(r.opt_str()?),
        opcode::DECISION_BATCH => {
            let n = r.count(27)?;
            Reply::DecisionBatch((0..n).map(|_| get_decision(&mut r)).collect::<Result<_, _>>()?)
        }
        opcode::PONG => return Ok(Reply::Pong(payload.to_vec())),
        opcode::INVALIDATED => Reply::Invalidated(r.u8()? != 0),
        opcode::ERROR => Reply::Error(ErrorReply {
            code: r.u16()?,
            message: r.str()?,
        }),
        other => return Err(WireError::UnknownOpcode(other)),
    };
    r.finish()?;
    Ok(reply)
}
