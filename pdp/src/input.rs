//! SARK's input document as typed fields (what the binary protocol's EVAL carries), turned
//! into a regorus value directly, without a JSON round trip, and hashed into a cache key
//! without building the value at all (the hit path allocates nothing).
//!
//! The document shape is SARK-SPEC's "Input document". Fields the caller leaves out are
//! absent from the document, exactly as in JSON.

use std::borrow::Cow;
use std::collections::BTreeMap;

use regorus::Value;

use crate::error::EvalError;
use crate::key::{CacheKey, EXCLUDED_CONTEXT_FIELDS, KeyHasher};

/// A JSON part of a typed input (`parameters`, `agent`, `context`). Callers on the wire
/// send it as text, which stays text until the evaluator needs it: the cache key is hashed
/// from the text (`parameters` and `agent` as bytes; `context` in one streaming pass that
/// leaves out the per-request fields and picks up the request and session ids), so a
/// cache hit never builds it. Text that is not JSON is refused when a miss parses it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Blob {
    #[default]
    Absent,
    Json(String),
    Value(Value),
}

impl Blob {
    /// The value (`Undefined` when absent).
    ///
    /// # Errors
    /// [`EvalError::BadInput`] naming the part, when the text is not JSON.
    pub fn to_value(&self, name: &str) -> Result<Value, EvalError> {
        match self {
            Blob::Absent => Ok(Value::Undefined),
            Blob::Json(text) => crate::eval::input_from_json(text).map_err(|e| bad(name, &e)),
            Blob::Value(v) => Ok(v.clone()),
        }
    }

    /// Hash a part with nothing left out.
    fn hash(&self, h: &mut KeyHasher) {
        match self {
            Blob::Absent => h.absent(),
            Blob::Json(text) => h.raw(text),
            Blob::Value(v) => h.value(v),
        }
    }

    /// Hash a `context`, leaving out [`EXCLUDED_CONTEXT_FIELDS`] and picking up the ids.
    fn hash_context(&self, h: &mut KeyHasher) -> Result<ContextIds<'_>, EvalError> {
        let [request_id, session_id] = match self {
            Blob::Absent => {
                h.absent();
                [None, None]
            }
            Blob::Json(text) => h.json(text, &EXCLUDED_CONTEXT_FIELDS, ["request_id", "session_id"]).map_err(|e| bad("context", &e))?,
            Blob::Value(v) => {
                h.context(v);
                self.top_strs(["request_id", "session_id"])
            }
        };
        Ok(ContextIds { request_id, session_id })
    }

    /// The strings at `keys` of a top-level object, where there are strings, borrowed.
    pub fn top_strs<const N: usize>(&self, keys: [&str; N]) -> [Option<Cow<'_, str>>; N] {
        match self {
            Blob::Absent => [const { None }; N],
            Blob::Json(text) => crate::key::json_top_strs(text, keys),
            Blob::Value(Value::Object(fields)) => keys.map(|key| {
                fields.iter().find_map(|(k, v)| match (k, v) {
                    (Value::String(k), Value::String(s)) if &**k == key => Some(Cow::Borrowed(&**s)),
                    _ => None,
                })
            }),
            Blob::Value(_) => [const { None }; N],
        }
    }
}

/// The context's request and session ids (left out of the cache key; kept for the audit
/// record), borrowed from the input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextIds<'a> {
    pub request_id: Option<Cow<'a, str>>,
    pub session_id: Option<Cow<'a, str>>,
}

/// The longest identifier the PDP decides on (user, tool and server ids and names, the
/// action, every role, team, scope and manager), in bytes. Longer is refused as bad input
/// (a deny, code 1002, never cached) before it is evaluated, on a cache miss — a refused
/// input's key is never stored, so it cannot hit; its audit record keeps the field cut to
/// this. No real id is this long, and without a bound the frame or body size is the only one.
pub const MAX_ID_BYTES: usize = 1024;

/// The most items in one list of identifiers (roles, teams, scopes, managers, …).
pub const MAX_LIST_ITEMS: usize = 1024;

fn id_limit(name: &str, v: &str) -> Result<(), EvalError> {
    if v.len() > MAX_ID_BYTES {
        return Err(EvalError::BadInput(format!("{name}: {} bytes, more than the {MAX_ID_BYTES} an identifier may have", v.len())));
    }
    Ok(())
}

fn count_limit(name: &str, items: usize) -> Result<(), EvalError> {
    if items > MAX_LIST_ITEMS {
        return Err(EvalError::BadInput(format!("{name}: {items} items, more than {MAX_LIST_ITEMS}")));
    }
    Ok(())
}

fn list_limit(name: &str, items: &[String]) -> Result<(), EvalError> {
    count_limit(name, items.len())?;
    items.iter().try_for_each(|i| id_limit(name, i))
}

/// The identifier limits on an input document (JSON callers): the same fields as the
/// typed input's, where they are strings and lists of strings.
///
/// # Errors
/// [`EvalError::BadInput`] naming the field.
pub fn check_document_limits(doc: &Value) -> Result<(), EvalError> {
    let one = |name: &str, v: &Value| match v {
        Value::String(s) => id_limit(name, s),
        _ => Ok(()),
    };
    let many = |name: &str, v: &Value| match v {
        Value::Array(items) => {
            count_limit(name, items.len())?;
            items.iter().try_for_each(|i| one(name, i))
        }
        _ => Ok(()),
    };
    let (u, t, v) = (&doc["user"], &doc["tool"], &doc["server"]);
    one("action", &doc["action"])?;
    for (name, f) in [("user.id", &u["id"]), ("user.email", &u["email"]), ("tool.name", &t["name"]), ("tool.owner", &t["owner"]), ("tool.sensitivity_level", &t["sensitivity_level"])] {
        one(name, f)?;
    }
    for (name, f) in [("server.id", &v["id"]), ("server.name", &v["name"]), ("server.owner_id", &v["owner_id"]), ("server.managed_by_team", &v["managed_by_team"])] {
        one(name, f)?;
    }
    for (name, f) in [("user.roles", &u["roles"]), ("user.teams", &u["teams"]), ("user.team_manager_of", &u["team_manager_of"]), ("user.scopes", &u["scopes"])] {
        many(name, f)?;
    }
    for (name, f) in [("tool.managers", &t["managers"]), ("tool.teams", &t["teams"]), ("server.teams", &v["teams"])] {
        many(name, f)?;
    }
    Ok(())
}

fn bad(name: &str, e: &dyn std::fmt::Display) -> EvalError {
    let e = e.to_string();
    EvalError::BadInput(format!("{name}: {}", e.strip_prefix("bad input: ").unwrap_or(&e)))
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserFields {
    pub id: String,
    pub roles: Vec<String>,
    pub teams: Vec<String>,
    pub team_manager_of: Vec<String>,
    pub mfa_verified: Option<bool>,
    pub mfa_age_s: Option<i64>,
    pub scopes: Vec<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolFields {
    pub name: String,
    pub sensitivity_level: Option<String>,
    pub owner: Option<String>,
    pub managers: Vec<String>,
    pub teams: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerFields {
    pub id: String,
    pub name: Option<String>,
    pub owner_id: Option<String>,
    pub teams: Vec<String>,
    pub managed_by_team: Option<String>,
}

/// One SARK authorization question as typed fields.
#[derive(Debug, Clone, PartialEq)]
pub struct SarkInput {
    pub user: UserFields,
    pub action: String,
    pub tool: Option<ToolFields>,
    pub server: Option<ServerFields>,
    /// `context.client_ip`.
    pub client_ip: Option<String>,
    /// `context.now_ns`; the server sets it when the caller does not.
    pub now_ns: Option<i64>,
    /// The tool call's arguments.
    pub parameters: Blob,
    /// The agent-to-agent block.
    pub agent: Blob,
    /// Further `context` fields (an object); `client_ip` above takes precedence over the
    /// same name here, and a `now_ns` here is ignored (only the typed field counts).
    pub context: Blob,
}

impl Default for SarkInput {
    fn default() -> Self {
        SarkInput {
            user: UserFields::default(),
            action: String::new(),
            tool: None,
            server: None,
            client_ip: None,
            now_ns: None,
            parameters: Blob::Absent,
            agent: Blob::Absent,
            context: Blob::Absent,
        }
    }
}

/// A question as the audit log keeps it for pre-warming: written borrowed from the
/// question (no copies on the shard; [`SarkInput::write_replay`]), read back owned
/// ([`SarkInput::from_replay`]). The JSON parts are their text, so the question hashes to
/// the same cache key.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Replay<'a> {
    user: Cow<'a, UserFields>,
    action: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool: Option<Cow<'a, ToolFields>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<Cow<'a, ServerFields>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ip: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Cow<'a, str>>,
}

impl SarkInput {
    /// This question, appended to `out` as JSON text from which [`Self::from_replay`]
    /// rebuilds it (its `now_ns` left out: a replay is asked at its own time). `None` (and
    /// `out` as it was, or longer) for a question with `parameters` unless
    /// `with_parameters` (they may hold secrets), or with a JSON part held as a value
    /// rather than text.
    pub fn write_replay(&self, out: &mut Vec<u8>, with_parameters: bool) -> Option<()> {
        fn text(b: &Blob) -> Result<Option<Cow<'_, str>>, ()> {
            match b {
                Blob::Absent => Ok(None),
                Blob::Json(t) => Ok(Some(Cow::Borrowed(t.as_str()))),
                Blob::Value(_) => Err(()),
            }
        }
        let parameters = text(&self.parameters).ok()?;
        if parameters.is_some() && !with_parameters {
            return None;
        }
        let r = Replay {
            user: Cow::Borrowed(&self.user),
            action: Cow::Borrowed(&self.action),
            tool: self.tool.as_ref().map(Cow::Borrowed),
            server: self.server.as_ref().map(Cow::Borrowed),
            client_ip: self.client_ip.as_deref().map(Cow::Borrowed),
            parameters,
            agent: text(&self.agent).ok()?,
            context: text(&self.context).ok()?,
        };
        serde_json::to_writer(out, &r).ok()
    }

    /// The question [`Self::write_replay`] wrote.
    ///
    /// # Errors
    /// Text that is not such a question.
    pub fn from_replay(text: &str) -> Result<SarkInput, String> {
        let r: Replay<'_> = serde_json::from_str(text).map_err(|e| format!("replay: {e}"))?;
        let blob = |t: Option<Cow<'_, str>>| t.map_or(Blob::Absent, |t| Blob::Json(t.into_owned()));
        Ok(SarkInput {
            user: r.user.into_owned(),
            action: r.action.into_owned(),
            tool: r.tool.map(Cow::into_owned),
            server: r.server.map(Cow::into_owned),
            client_ip: r.client_ip.map(Cow::into_owned),
            now_ns: None,
            parameters: blob(r.parameters),
            agent: blob(r.agent),
            context: blob(r.context),
        })
    }
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn list(items: &[String]) -> Value {
    Value::from(items.iter().map(|i| s(i)).collect::<Vec<_>>())
}

fn object(fields: Vec<(&str, Value)>) -> Value {
    let map: BTreeMap<Value, Value> = fields
        .into_iter()
        .filter(|(_, v)| *v != Value::Undefined)
        .map(|(k, v)| (s(k), v))
        .collect();
    Value::from(map)
}

fn opt_str(v: &Option<String>) -> Value {
    v.as_deref().map_or(Value::Undefined, s)
}

impl SarkInput {
    /// The identifier limits ([`MAX_ID_BYTES`], [`MAX_LIST_ITEMS`]).
    ///
    /// # Errors
    /// [`EvalError::BadInput`] naming the field.
    pub fn check_limits(&self) -> Result<(), EvalError> {
        let u = &self.user;
        id_limit("user.id", &u.id)?;
        id_limit("action", &self.action)?;
        u.email.as_deref().map_or(Ok(()), |e| id_limit("user.email", e))?;
        list_limit("user.roles", &u.roles)?;
        list_limit("user.teams", &u.teams)?;
        list_limit("user.team_manager_of", &u.team_manager_of)?;
        list_limit("user.scopes", &u.scopes)?;
        if let Some(t) = &self.tool {
            id_limit("tool.name", &t.name)?;
            t.owner.as_deref().map_or(Ok(()), |o| id_limit("tool.owner", o))?;
            t.sensitivity_level.as_deref().map_or(Ok(()), |o| id_limit("tool.sensitivity_level", o))?;
            list_limit("tool.managers", &t.managers)?;
            list_limit("tool.teams", &t.teams)?;
        }
        if let Some(v) = &self.server {
            id_limit("server.id", &v.id)?;
            v.name.as_deref().map_or(Ok(()), |o| id_limit("server.name", o))?;
            v.owner_id.as_deref().map_or(Ok(()), |o| id_limit("server.owner_id", o))?;
            v.managed_by_team.as_deref().map_or(Ok(()), |o| id_limit("server.managed_by_team", o))?;
            list_limit("server.teams", &v.teams)?;
        }
        Ok(())
    }

    /// The input document, built directly as regorus values.
    ///
    /// # Errors
    /// [`EvalError::BadInput`] when a JSON part is not JSON.
    pub fn to_value(&self) -> Result<Value, EvalError> {
        let u = &self.user;
        let user = object(vec![
            ("id", s(&u.id)),
            ("roles", list(&u.roles)),
            ("teams", list(&u.teams)),
            ("team_manager_of", list(&u.team_manager_of)),
            ("mfa_verified", u.mfa_verified.map_or(Value::Undefined, Value::from)),
            ("mfa_age_s", u.mfa_age_s.map_or(Value::Undefined, Value::from)),
            ("scopes", list(&u.scopes)),
            ("email", opt_str(&u.email)),
        ]);
        let tool = self.tool.as_ref().map_or(Value::Undefined, |t| {
            object(vec![
                ("name", s(&t.name)),
                ("sensitivity_level", opt_str(&t.sensitivity_level)),
                ("owner", opt_str(&t.owner)),
                ("managers", list(&t.managers)),
                ("teams", list(&t.teams)),
            ])
        });
        let server = self.server.as_ref().map_or(Value::Undefined, |v| {
            object(vec![
                ("id", s(&v.id)),
                ("name", opt_str(&v.name)),
                ("owner_id", opt_str(&v.owner_id)),
                ("teams", list(&v.teams)),
                ("managed_by_team", opt_str(&v.managed_by_team)),
            ])
        });
        // A context that is not an object is refused here, not replaced: the typed
        // `client_ip` and `now_ns` would otherwise make an object of it and hide the
        // caller's mistake from the policy's type checks.
        let mut context: BTreeMap<Value, Value> = match self.context.to_value("context")? {
            Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Value::Undefined | Value::Null => BTreeMap::new(),
            _ => return Err(EvalError::BadInput("context: must be a JSON object".into())),
        };
        if let Some(ip) = &self.client_ip {
            context.insert(s("client_ip"), s(ip));
        }
        // `now_ns` is the typed field's alone: the cache key leaves the context's `now_ns`
        // out and whether a decision may be cached is judged by the typed field, so one in
        // the context text would be decided on but not keyed on — a decision for another
        // time cached as the present's. Without the typed field the PDP's clock is stamped.
        match self.now_ns {
            Some(now) => context.insert(s("now_ns"), Value::from(now)),
            None => context.remove(&s("now_ns")),
        };
        Ok(object(vec![
            ("user", user),
            ("action", s(&self.action)),
            ("tool", tool),
            ("server", server),
            ("parameters", self.parameters.to_value("parameters")?),
            ("agent", self.agent.to_value("agent")?),
            ("context", Value::from(context)),
        ]))
    }

    /// The cache key for this input under `hasher`'s revision and entrypoint, and the
    /// context's ids. Covers every field except `now_ns` and the context's request and
    /// session ids.
    ///
    /// # Errors
    /// [`EvalError::BadInput`] when the context is not JSON (the other parts are checked
    /// when parsed, on a miss).
    pub fn cache_key(&self, h: &mut KeyHasher) -> Result<(CacheKey, ContextIds<'_>), EvalError> {
        let h = h.start();
        // A tag of its own: typed and JSON inputs use separate key spaces.
        h.str("typed-v1");
        let u = &self.user;
        h.str(&u.id);
        h.strs(&u.roles);
        h.strs(&u.teams);
        h.strs(&u.team_manager_of);
        match u.mfa_verified {
            Some(b) => h.bool(b),
            None => h.absent(),
        }
        match u.mfa_age_s {
            Some(n) => h.int(n),
            None => h.absent(),
        }
        h.strs(&u.scopes);
        opt(h, &u.email);
        h.str(&self.action);
        match &self.tool {
            Some(t) => {
                h.str(&t.name);
                opt(h, &t.sensitivity_level);
                opt(h, &t.owner);
                h.strs(&t.managers);
                h.strs(&t.teams);
            }
            None => h.absent(),
        }
        match &self.server {
            Some(v) => {
                h.str(&v.id);
                opt(h, &v.name);
                opt(h, &v.owner_id);
                h.strs(&v.teams);
                opt(h, &v.managed_by_team);
            }
            None => h.absent(),
        }
        opt(h, &self.client_ip);
        self.parameters.hash(h);
        self.agent.hash(h);
        let ids = self.context.hash_context(h)?;
        Ok((h.finish(), ids))
    }
}

fn opt(h: &mut KeyHasher, v: &Option<String>) {
    match v {
        Some(x) => h.str(x),
        None => h.absent(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sample() -> SarkInput {
        SarkInput {
            user: UserFields {
                id: "alice".into(),
                roles: vec!["developer".into()],
                teams: vec!["payments".into()],
                mfa_verified: Some(true),
                ..UserFields::default()
            },
            action: "tool:invoke".into(),
            tool: Some(ToolFields {
                name: "db_query".into(),
                sensitivity_level: Some("high".into()),
                teams: vec!["payments".into()],
                ..ToolFields::default()
            }),
            server: None,
            client_ip: Some("10.1.2.3".into()),
            now_ns: Some(1_795_428_000_000_000_000),
            parameters: Blob::Json(r#"{"query": "select 1", "password": "x"}"#.into()),
            agent: Blob::Absent,
            context: Blob::Json(r#"{"audit_enabled": true, "request_id": "r-1", "client_ip": "ignored"}"#.into()),
        }
    }

    #[test]
    fn typed_fields_build_the_same_document_as_json() {
        let want = Value::from_json_str(
            r#"{"user": {"id": "alice", "roles": ["developer"], "teams": ["payments"], "team_manager_of": [],
                         "mfa_verified": true, "scopes": []},
                "action": "tool:invoke",
                "tool": {"name": "db_query", "sensitivity_level": "high", "managers": [], "teams": ["payments"]},
                "parameters": {"query": "select 1", "password": "x"},
                "context": {"audit_enabled": true, "request_id": "r-1", "client_ip": "10.1.2.3",
                            "now_ns": 1795428000000000000}}"#,
        )
        .unwrap();
        assert_eq!(sample().to_value().unwrap(), want);
    }

    #[test]
    fn only_the_typed_now_ns_reaches_the_policy() {
        // The key leaves the context's now_ns out, so the document must too: else a
        // decision for that time would be cached under the present's key.
        let mut i = sample();
        i.now_ns = None;
        i.context = Blob::Json(r#"{"now_ns": 1796032800000000000, "vpn": true}"#.into());
        let doc = i.to_value().unwrap();
        assert_eq!(doc["context"]["now_ns"], Value::Undefined, "the context's now_ns is dropped, the PDP stamps its own");
        assert_eq!(doc["context"]["vpn"], Value::from(true));
        i.now_ns = Some(7);
        assert_eq!(i.to_value().unwrap()["context"]["now_ns"], Value::from(7), "the typed field wins");
    }

    #[test]
    fn key_ignores_time_and_request_ids_but_nothing_else() {
        let mut hasher = KeyHasher::new("r1", "data.sark.decision");
        let h = &mut hasher;
        let base = sample().cache_key(h).unwrap().0;
        let mut same = sample();
        same.now_ns = Some(5);
        same.context = Blob::Json(r#"{"audit_enabled": true, "request_id": "r-2", "client_ip": "ignored", "session_id": "s"}"#.into());
        assert_eq!(same.cache_key(h).unwrap().0, base);
        // A value and text holding the same JSON: separate key spaces, each stable.
        let mut as_value = sample();
        as_value.context = Blob::Value(Value::from_json_str(r#"{"audit_enabled": true, "request_id": "r-1", "client_ip": "ignored"}"#).unwrap());
        let value_key = as_value.cache_key(h).unwrap().0;
        as_value.context = Blob::Value(Value::from_json_str(r#"{"client_ip": "ignored", "audit_enabled": true, "request_id": "r-3"}"#).unwrap());
        assert_eq!(as_value.cache_key(h).unwrap().0, value_key);
        type Change = Box<dyn Fn(&mut SarkInput)>;
        let changes: Vec<Change> = vec![
            Box::new(|i| i.user.roles.push("admin".into())),
            Box::new(|i| i.user.teams.clear()),
            Box::new(|i| i.user.team_manager_of.push("payments".into())),
            Box::new(|i| i.user.mfa_verified = Some(false)),
            Box::new(|i| i.user.mfa_age_s = Some(10)),
            Box::new(|i| i.action = "tool:delete".into()),
            Box::new(|i| i.tool = None),
            Box::new(|i| i.client_ip = Some("10.1.2.4".into())),
            Box::new(|i| i.parameters = Blob::Json("{}".into())),
            Box::new(|i| i.parameters = Blob::Json(r#"{"query": "select 2", "password": "x"}"#.into())),
            Box::new(|i| i.parameters = Blob::Json(r#"{"query": "select 1", "password": ["x"]}"#.into())),
            Box::new(|i| i.parameters = Blob::Absent),
            Box::new(|i| i.agent = Blob::Json("null".into())),
            Box::new(|i| i.context = Blob::Json("{}".into())),
            Box::new(|i| i.context = Blob::Json(r#"{"audit_enabled": false, "request_id": "r-1", "client_ip": "ignored"}"#.into())),
            // A nested request_id is not the excluded top-level one.
            Box::new(|i| i.context = Blob::Json(r#"{"audit_enabled": true, "request_id": "r-1", "client_ip": "ignored", "x": {"request_id": 1}}"#.into())),
            // Moving a role into teams must not collide (length-prefixed lists).
            Box::new(|i| {
                i.user.roles.clear();
                i.user.teams.insert(0, "developer".into());
            }),
        ];
        for (n, change) in changes.iter().enumerate() {
            let mut i = sample();
            change(&mut i);
            assert_ne!(i.cache_key(h).unwrap().0, base, "change {n} kept the key");
        }
        assert_ne!(sample().cache_key(&mut KeyHasher::new("r2", "data.sark.decision")).unwrap().0, base);
    }

    #[test]
    fn text_that_is_not_json_is_refused() {
        let mut h = KeyHasher::new("r1", "data.sark.decision");
        for bad in ["{nope", "{\"a\": 1} trailing", "", "[1,]"] {
            // The context is checked by the key pass; the other parts when parsed.
            let mut i = sample();
            i.context = Blob::Json(bad.into());
            let e = i.cache_key(&mut h).unwrap_err();
            assert!(matches!(&e, EvalError::BadInput(m) if m.starts_with("context: ")), "{bad:?}: {e}");
            let mut i = sample();
            i.parameters = Blob::Json(bad.into());
            let e = i.to_value().unwrap_err();
            assert!(matches!(&e, EvalError::BadInput(m) if m.starts_with("parameters: ")), "{bad:?}: {e}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let mut i = sample();
        i.context = Blob::Json(deep);
        assert!(i.cache_key(&mut h).is_err(), "nesting beyond serde_json's limit is refused");
    }

    #[test]
    fn the_key_pass_picks_up_the_context_ids() {
        let mut h = KeyHasher::new("r1", "data.sark.decision");
        let mut i = sample();
        i.context = Blob::Json(r#"{"request_id": "q-\u0031", "vpn": true, "session_id": "s-1", "nested": {"request_id": "no"}}"#.into());
        let (_, ids) = i.cache_key(&mut h).unwrap();
        assert_eq!(ids, ContextIds { request_id: Some("q-1".into()), session_id: Some("s-1".into()) });
        i.context = Blob::Value(Value::from_json_str(r#"{"request_id": "v-1"}"#).unwrap());
        let (_, ids) = i.cache_key(&mut h).unwrap();
        assert_eq!(ids, ContextIds { request_id: Some("v-1".into()), session_id: None });
    }

    #[test]
    fn context_strings_are_found_in_text_and_values() {
        let i = sample();
        assert_eq!(i.context.top_strs(["request_id", "session_id"]), [Some("r-1".into()), None]);
        let j = Blob::Json(r#"{"x": {"request_id": "nested"}, "request_id": 7, "session_id": "s\"1", "y": [1, {"a": 2}], "z": "last", "z": "final"}"#.into());
        assert_eq!(j.top_strs(["request_id", "session_id", "z"]), [None, Some("s\"1".into()), Some("final".into())]);
        let v = Blob::Value(Value::from_json_str(r#"{"request_id": "v-1"}"#).unwrap());
        assert_eq!(v.top_strs(["request_id"]), [Some("v-1".into())]);
        assert_eq!(Blob::Json("{bad".into()).top_strs(["request_id"]), [None]);
        assert_eq!(Blob::Json("[1]".into()).top_strs(["request_id"]), [None]);
    }
}

/// Set `context.now_ns` on an input document when the caller left it out, as SARK-SPEC
/// asks of the PDP. Documents that are not objects are left alone (they are denied).
pub fn stamp_now(input: &mut Value, now_ns: i64) {
    let Ok(top) = input.as_object_mut() else {
        return;
    };
    let key = Value::from("context");
    let mut ctx = match top.get(&key) {
        Some(Value::Object(_)) => top.get(&key).cloned().unwrap_or(Value::Undefined),
        Some(_) => return, // a non-object context is the policy's to reject
        None => Value::new_object(),
    };
    if let Ok(c) = ctx.as_object_mut() {
        let now = Value::from("now_ns");
        if c.get(&now).is_none() {
            c.insert(now, Value::from(now_ns));
        }
    }
    top.insert(key, ctx);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod stamp_tests {
    use super::*;

    #[test]
    fn now_is_added_only_when_absent() {
        let mut v = Value::from_json_str(r#"{"user": {"id": "u"}}"#).unwrap();
        stamp_now(&mut v, 7);
        assert_eq!(v, Value::from_json_str(r#"{"user": {"id": "u"}, "context": {"now_ns": 7}}"#).unwrap());
        let mut v = Value::from_json_str(r#"{"context": {"now_ns": 1, "vpn": true}}"#).unwrap();
        stamp_now(&mut v, 7);
        assert_eq!(v, Value::from_json_str(r#"{"context": {"now_ns": 1, "vpn": true}}"#).unwrap());
        let mut v = Value::from_json_str(r#"{"context": "x"}"#).unwrap();
        stamp_now(&mut v, 7);
        assert_eq!(v, Value::from_json_str(r#"{"context": "x"}"#).unwrap());
    }
}
