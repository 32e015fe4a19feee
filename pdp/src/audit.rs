//! Audit records: one per decision, with SARK's fields (SARK-SPEC "Audit record"), encoded
//! as one JSON line. Built on the shard with one allocation — the record's strings copied
//! back to back into one buffer, the decision shared (`Arc`) — and encoded by the writer
//! thread, off the decision path, which also frees it.

use std::fmt::Write as _;
use std::sync::Arc;

use regorus::Value;

use crate::decision::Decision;
use crate::input::{ContextIds, SarkInput};
use crate::point::Answer;

/// One decision's audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// 128-bit id, unique per PDP process and shard (see [`DecisionIds`]).
    pub decision_id: u128,
    /// Wall-clock time of the decision, ns since the epoch.
    pub timestamp_ns: i64,
    /// Allow, reasons, policy results, bundle revision and error come from here.
    pub decision: Arc<Decision>,
    pub evaluation_duration_us: u64,
    pub cache_hit: bool,
    pub mfa_verified: Option<bool>,
    /// The question as [`crate::prewarm::replay`] wrote it, for pre-warming
    /// (only when pre-warming is on): the line's last field, `replay`, which the sinks
    /// leave out ([`crate::audit_log::shipped_body`]).
    pub replay: Option<String>,
    /// The string fields, in [`Fields`] order, each behind a u32 length (`u32::MAX`:
    /// absent); roles and teams behind a u32 count.
    text: Vec<u8>,
}

/// The string fields of a record, borrowed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields<'a> {
    pub user_id: &'a str,
    pub action: &'a str,
    pub tool_name: Option<&'a str>,
    pub sensitivity_level: Option<&'a str>,
    pub server_id: Option<&'a str>,
    pub server_name: Option<&'a str>,
    pub client_ip: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub user_roles: Vec<&'a str>,
    pub user_teams: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    /// For a refused input (bad input: maybe an identifier past its limit), every field
    /// cut to [`crate::input::MAX_ID_BYTES`] (at a character boundary) and the lists to
    /// [`crate::input::MAX_LIST_ITEMS`]: the record keeps the cut field and the reason.
    fn cut_if_refused(self, answer: &Answer) -> Fields<'a> {
        if matches!(answer.decision.error, Some(crate::error::EvalError::BadInput(_))) { self.clipped() } else { self }
    }

    fn clipped(&self) -> Fields<'a> {
        let cut = |s: &'a str| s.get(..s.floor_char_boundary(crate::input::MAX_ID_BYTES)).unwrap_or("");
        let list = |l: &[&'a str]| l.iter().take(crate::input::MAX_LIST_ITEMS).map(|s| cut(s)).collect();
        Fields {
            user_id: cut(self.user_id),
            action: cut(self.action),
            tool_name: self.tool_name.map(cut),
            sensitivity_level: self.sensitivity_level.map(cut),
            server_id: self.server_id.map(cut),
            server_name: self.server_name.map(cut),
            client_ip: self.client_ip.map(cut),
            request_id: self.request_id.map(cut),
            session_id: self.session_id.map(cut),
            user_roles: list(&self.user_roles),
            user_teams: list(&self.user_teams),
        }
    }
}

const ABSENT: u32 = u32::MAX;

/// Writes a record's text.
struct Text(Vec<u8>);

impl Text {
    fn with_capacity(n: usize) -> Text {
        Text(Vec::with_capacity(n))
    }
    fn opt(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.0.extend_from_slice(&u32::try_from(s.len()).unwrap_or(ABSENT - 1).to_le_bytes());
                self.0.extend_from_slice(s.as_bytes().get(..s.len().min((ABSENT - 1) as usize)).unwrap_or(&[]));
            }
            None => self.0.extend_from_slice(&ABSENT.to_le_bytes()),
        }
    }
    fn list<'a>(&mut self, items: impl ExactSizeIterator<Item = &'a str>) {
        self.0.extend_from_slice(&u32::try_from(items.len()).unwrap_or(0).to_le_bytes());
        for s in items {
            self.opt(Some(s));
        }
    }
}

/// Reads a record's text back.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn u32(&mut self) -> u32 {
        let (head, rest) = self.0.split_at_checked(4).unwrap_or((&[], &[]));
        self.0 = rest;
        head.try_into().map_or(ABSENT, u32::from_le_bytes)
    }
    fn opt(&mut self) -> Option<&'a str> {
        let n = self.u32();
        if n == ABSENT {
            return None;
        }
        let (head, rest) = self.0.split_at_checked(n as usize).unwrap_or((&[], &[]));
        self.0 = rest;
        // Written from `&str`s by `Text`, so always UTF-8.
        std::str::from_utf8(head).ok()
    }
    fn list(&mut self) -> Vec<&'a str> {
        let n = self.u32();
        let mut out = Vec::with_capacity((n as usize).min(self.0.len() / 4));
        for _ in 0..n {
            out.push(self.opt().unwrap_or(""));
        }
        out
    }
}

/// Decision ids for one shard: the shard index in the top 16 bits, a process start
/// nonce in the next 48, a counter in the low 64. Unique without coordination.
#[derive(Debug, Clone)]
pub struct DecisionIds {
    prefix: u128,
    next: u64,
}

impl DecisionIds {
    /// `nonce` should differ between process starts (e.g. the start time in ns).
    pub fn new(shard: u16, nonce: u64) -> DecisionIds {
        DecisionIds {
            prefix: (u128::from(shard) << 112) | (u128::from(nonce & 0xffff_ffff_ffff) << 64),
            next: 0,
        }
    }

    pub fn next_id(&mut self) -> u128 {
        self.next = self.next.wrapping_add(1);
        self.prefix | u128::from(self.next)
    }
}

/// A minimal record for tests elsewhere in the crate: user `user`, decision id `id`,
/// an allow or a deny.
#[cfg(test)]
pub(crate) fn test_record(id: u128, user: &str, allow: bool) -> AuditRecord {
    let answer = Answer {
        decision: Arc::new(Decision {
            allow,
            ..Decision::deny(crate::EvalError::Policy("x".into()), crate::EngineKind::Rvm, "r".into())
        }),
        cache_hit: false,
        ttl: std::time::Duration::ZERO,
    };
    let f = Fields {
        user_id: user,
        action: "tool:invoke",
        tool_name: None,
        sensitivity_level: None,
        server_id: None,
        server_name: None,
        client_ip: None,
        request_id: None,
        session_id: None,
        user_roles: vec![],
        user_teams: vec![],
    };
    AuditRecord::new(id, 0, &answer, 1, None, &f)
}

impl AuditRecord {
    /// A record from its parts (the string fields in [`Fields`]).
    pub fn new(decision_id: u128, timestamp_ns: i64, answer: &Answer, duration_us: u64, mfa_verified: Option<bool>, f: &Fields<'_>) -> AuditRecord {
        let strs = [f.user_id, f.action].into_iter().chain([f.tool_name, f.sensitivity_level, f.server_id, f.server_name, f.client_ip, f.request_id, f.session_id].into_iter().flatten());
        let len: usize = strs.chain(f.user_roles.iter().copied()).chain(f.user_teams.iter().copied()).map(|s| s.len() + 4).sum::<usize>() + 9 * 4 + 8;
        let mut t = Text::with_capacity(len);
        for s in [Some(f.user_id), Some(f.action), f.tool_name, f.sensitivity_level, f.server_id, f.server_name, f.client_ip, f.request_id, f.session_id] {
            t.opt(s);
        }
        t.list(f.user_roles.iter().copied());
        t.list(f.user_teams.iter().copied());
        AuditRecord {
            decision_id,
            timestamp_ns,
            decision: answer.decision.clone(),
            evaluation_duration_us: duration_us,
            cache_hit: answer.cache_hit,
            mfa_verified,
            replay: None,
            text: t.0,
        }
    }

    /// The record's string fields.
    pub fn fields(&self) -> Fields<'_> {
        let mut c = Cursor(&self.text);
        Fields {
            user_id: c.opt().unwrap_or(""),
            action: c.opt().unwrap_or(""),
            tool_name: c.opt(),
            sensitivity_level: c.opt(),
            server_id: c.opt(),
            server_name: c.opt(),
            client_ip: c.opt(),
            request_id: c.opt(),
            session_id: c.opt(),
            user_roles: c.list(),
            user_teams: c.list(),
        }
    }

    /// The record of a typed input's decision; `ids` from its cache key
    /// ([`crate::point::DecisionPoint::decide_typed_ids`]).
    pub fn for_typed(input: &SarkInput, ids: &ContextIds<'_>, answer: &Answer, decision_id: u128, timestamp_ns: i64, duration_us: u64) -> AuditRecord {
        // The context's client_ip only counts when the typed field is absent.
        let [ctx_ip] = if input.client_ip.is_none() { input.context.top_strs(["client_ip"]) } else { [None] };
        let ContextIds { request_id, session_id } = ids;
        let f = Fields {
            user_id: &input.user.id,
            action: &input.action,
            tool_name: input.tool.as_ref().map(|t| t.name.as_str()),
            sensitivity_level: input.tool.as_ref().and_then(|t| t.sensitivity_level.as_deref()),
            server_id: input.server.as_ref().map(|s| s.id.as_str()),
            server_name: input.server.as_ref().and_then(|s| s.name.as_deref()),
            client_ip: input.client_ip.as_deref().or(ctx_ip.as_deref()),
            request_id: request_id.as_deref(),
            session_id: session_id.as_deref(),
            user_roles: input.user.roles.iter().map(String::as_str).collect(),
            user_teams: input.user.teams.iter().map(String::as_str).collect(),
        };
        AuditRecord::new(decision_id, timestamp_ns, answer, duration_us, input.user.mfa_verified, &f.cut_if_refused(answer))
    }

    /// The record of a JSON input document's decision; fields of the wrong type are absent.
    pub fn for_document(input: &Value, answer: &Answer, decision_id: u128, timestamp_ns: i64, duration_us: u64) -> AuditRecord {
        let s = |v: &Value| match v {
            Value::String(s) => Some(s.to_string()),
            _ => None,
        };
        let strs = |v: &Value| match v {
            Value::Array(a) => a.iter().filter_map(&s).collect(),
            _ => Vec::new(),
        };
        let user = &input["user"];
        let ctx = &input["context"];
        let owned = [
            s(&user["id"]),
            s(&input["action"]),
            s(&input["tool"]["name"]),
            s(&input["tool"]["sensitivity_level"]),
            s(&input["server"]["id"]),
            s(&input["server"]["name"]),
            s(&ctx["client_ip"]),
            s(&ctx["request_id"]),
            s(&ctx["session_id"]),
        ];
        let [user_id, action, tool_name, sensitivity_level, server_id, server_name, client_ip, request_id, session_id] = owned.each_ref().map(Option::as_deref);
        let (roles, teams): (Vec<String>, Vec<String>) = (strs(&user["roles"]), strs(&user["teams"]));
        let f = Fields {
            user_id: user_id.unwrap_or(""),
            action: action.unwrap_or(""),
            tool_name,
            sensitivity_level,
            server_id,
            server_name,
            client_ip,
            request_id,
            session_id,
            user_roles: roles.iter().map(String::as_str).collect(),
            user_teams: teams.iter().map(String::as_str).collect(),
        };
        let mfa = match &user["mfa_verified"] {
            Value::Bool(b) => Some(*b),
            _ => None,
        };
        AuditRecord::new(decision_id, timestamp_ns, answer, duration_us, mfa, &f.cut_if_refused(answer))
    }

    /// One JSON line (newline included) with SARK's field names: `timestamp` in RFC 3339
    /// UTC with nanoseconds, `decision_id` as 32 hex digits, `error_code` only on an error
    /// deny. Parameters are left out on purpose: they may hold the secrets the policy
    /// filtered.
    pub fn to_json_line(&self) -> String {
        let mut line = String::with_capacity(768);
        self.write_json_line(&mut line);
        line
    }

    /// [`Self::to_json_line`], appended to `out` (the writer reuses one buffer).
    pub fn write_json_line(&self, out: &mut String) {
        out.push('{');
        self.write_json_fields(out);
        out.push_str("}\n");
    }

    /// The line's fields, `"decision_id":…` to the last, without the braces (the audit
    /// log adds its own before and after).
    pub fn write_json_fields(&self, out: &mut String) {
        let d = &*self.decision;
        let f = self.fields();
        let _ = write!(out, "\"decision_id\":\"{:032x}\",\"timestamp\":\"", self.decision_id);
        rfc3339_into(out, self.timestamp_ns);
        let _ = write!(out, "\",\"allow\":{},\"result\":\"{}\",\"user_id\":", d.allow, d.result());
        json_str(out, f.user_id);
        out.push_str(",\"user_roles\":");
        json_strs(out, &f.user_roles);
        out.push_str(",\"user_teams\":");
        json_strs(out, &f.user_teams);
        out.push_str(",\"action\":");
        json_str(out, f.action);
        for (name, v) in [
            ("tool_name", f.tool_name),
            ("sensitivity_level", f.sensitivity_level),
            ("server_id", f.server_id),
            ("server_name", f.server_name),
        ] {
            let _ = write!(out, ",\"{name}\":");
            json_opt_str(out, v);
        }
        out.push_str(",\"reasons\":");
        json_strs(out, &d.reasons);
        out.push_str(",\"policies_evaluated\":");
        json_strs(out, &d.policies_evaluated);
        out.push_str(",\"policy_results\":{");
        for (i, (name, ok)) in d.policy_results.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_str(out, name);
            let _ = write!(out, ":{ok}");
        }
        let _ = write!(out, "}},\"evaluation_duration_us\":{},\"cache_hit\":{}", self.evaluation_duration_us, self.cache_hit);
        for (name, v) in [("client_ip", f.client_ip), ("request_id", f.request_id), ("session_id", f.session_id)] {
            let _ = write!(out, ",\"{name}\":");
            json_opt_str(out, v);
        }
        match self.mfa_verified {
            Some(b) => {
                let _ = write!(out, ",\"mfa_verified\":{b}");
            }
            None => out.push_str(",\"mfa_verified\":null"),
        }
        out.push_str(",\"bundle_revision\":");
        json_str(out, &d.bundle_revision);
        if let Some(e) = &d.error {
            let _ = write!(out, ",\"error_code\":{}", e.wire_code());
        }
        // Always last: the sinks cut it off.
        if let Some(r) = &self.replay {
            out.push_str(crate::audit_log::REPLAY_FIELD);
            json_str(out, r);
        }
    }
}

/// `s` as a JSON string (RFC 8259 escaping).
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(s.get(start..i).unwrap_or(""));
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(esc);
        }
        start = i + c.len_utf8();
    }
    out.push_str(s.get(start..).unwrap_or(""));
    out.push('"');
}

fn json_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

fn json_strs<S: AsRef<str>>(out: &mut String, v: &[S]) {
    out.push('[');
    for (i, s) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, s.as_ref());
    }
    out.push(']');
}

/// `ns` since the epoch as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (proleptic Gregorian, UTC).
pub fn rfc3339(ns: i64) -> String {
    let mut s = String::with_capacity(30);
    rfc3339_into(&mut s, ns);
    s
}

/// `2026-11-23T10:00:00.123456789Z` as nanoseconds since the epoch: [`rfc3339`] read back.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, mi, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    // The fraction's first nine digits, as nanoseconds.
    if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = frac.get(..frac.len().min(9))?;
    let ns: i64 = format!("{digits:0<9}").parse().ok()?;
    (days * 86_400 + h * 3600 + mi * 60 + sec).checked_mul(1_000_000_000)?.checked_add(ns)
}

fn rfc3339_into(out: &mut String, ns: i64) {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::decision::{Decision, EngineKind};
    use crate::input::{ToolFields, UserFields};

    fn answer(allow: bool) -> Answer {
        Answer {
            decision: Arc::new(Decision {
                allow,
                reasons: vec!["r".into()],
                policies_evaluated: vec!["rbac".into()],
                policy_results: vec![("rbac".into(), allow)],
                filtered_parameters: Value::Undefined,
                filtered_parameters_json: None,
                cache_ttl_s: Some(60),
                restrictions: Default::default(),
                error: None,
                engine: EngineKind::Rvm,
                bundle_revision: "rev-1".into(),
            }),
            cache_hit: true,
            ttl: Duration::ZERO,
        }
    }

    #[test]
    fn a_refused_inputs_record_keeps_its_fields_cut_to_the_limits() {
        use crate::input::{MAX_ID_BYTES, MAX_LIST_ITEMS};
        let long = "é".repeat(MAX_ID_BYTES);
        let roles: Vec<&str> = vec!["r"; MAX_LIST_ITEMS + 5];
        let f = Fields { user_id: &long, action: "a", tool_name: Some(&long), sensitivity_level: None, server_id: None, server_name: None, client_ip: None, request_id: None, session_id: None, user_roles: roles, user_teams: Vec::new() };
        let mut refused = answer(false);
        Arc::make_mut(&mut refused.decision).error = Some(crate::error::EvalError::BadInput("user.id: too long".into()));
        let r = AuditRecord::new(1, 0, &refused, 1, None, &f.clone().cut_if_refused(&refused));
        let got = r.fields();
        assert_eq!((got.user_id.len(), got.tool_name.map(str::len)), (MAX_ID_BYTES, Some(MAX_ID_BYTES)), "cut at a character boundary (é is 2 bytes)");
        assert_eq!(got.user_roles.len(), MAX_LIST_ITEMS);
        // A decision without an error keeps its fields whole (its input passed the limits).
        let kept = f.cut_if_refused(&answer(true));
        assert_eq!(AuditRecord::new(2, 0, &answer(true), 1, None, &kept).fields().user_id.len(), long.len());
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_795_428_000_123_456_789), "2026-11-23T10:00:00.123456789Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000000000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn timestamps_read_back_to_epoch_nanoseconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.000000000Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-23T10:00:00.5Z"), Some(1_795_428_000_500_000_000));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400_000_000_000));
        // Nanoseconds survive the round trip through the log's own format.
        for ns in [0, 1, 1_795_428_000_123_456_789, 951_782_400_000_000_001] {
            assert_eq!(parse_rfc3339(&rfc3339(ns)), Some(ns));
        }
        assert_eq!(parse_rfc3339("2026-11-23T10:00:00.5xZ"), None);
        assert_eq!(parse_rfc3339("2026-11-23T10:00:00.Z"), None);
    }

    #[test]
    fn ids_are_unique_per_shard_and_start() {
        let mut a = DecisionIds::new(1, 7);
        let mut b = DecisionIds::new(2, 7);
        let mut c = DecisionIds::new(1, 8);
        let ids = [a.next_id(), a.next_id(), b.next_id(), c.next_id()];
        let unique: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn typed_and_document_records_agree_and_carry_sarks_fields() {
        let input = SarkInput {
            user: UserFields {
                id: "alice".into(),
                roles: vec!["developer".into()],
                teams: vec!["payments".into()],
                mfa_verified: Some(true),
                ..UserFields::default()
            },
            action: "tool:invoke".into(),
            tool: Some(ToolFields {
                name: "db".into(),
                sensitivity_level: Some("high".into()),
                ..ToolFields::default()
            }),
            client_ip: Some("10.0.0.1".into()),
            context: crate::input::Blob::Json(r#"{"request_id": "q-1", "session_id": "s-1"}"#.into()),
            ..SarkInput::default()
        };
        let a = answer(true);
        let doc = AuditRecord::for_document(&input.to_value().unwrap(), &a, 5, 1_795_428_000_000_000_000, 12);
        let (_, ids) = input.cache_key(&mut crate::key::KeyHasher::new("r", "e")).unwrap();
        let typed = AuditRecord::for_typed(&input, &ids, &a, 5, 1_795_428_000_000_000_000, 12);
        assert_eq!(typed, doc);
        let line = typed.to_json_line();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for field in [
            "decision_id", "timestamp", "allow", "result", "user_id", "user_roles", "user_teams", "action", "tool_name",
            "sensitivity_level", "server_id", "server_name", "reasons", "policies_evaluated", "policy_results",
            "evaluation_duration_us", "cache_hit", "client_ip", "request_id", "session_id", "mfa_verified", "bundle_revision",
        ] {
            assert!(v.get(field).is_some(), "{field} missing from {line}");
        }
        assert_eq!(v["decision_id"], "00000000000000000000000000000005");
        assert_eq!(v["timestamp"], "2026-11-23T10:00:00.000000000Z");
        assert_eq!(v["request_id"], "q-1");
        assert_eq!(v["policy_results"]["rbac"], true);
        assert!(v.get("error_code").is_none());
    }

    #[test]
    fn strings_are_escaped_so_every_line_parses_back() {
        let tricky = "a\"b\\c\nd\re\tf\u{1}g é 🎉";
        let input = SarkInput {
            user: UserFields {
                id: tricky.into(),
                roles: vec![tricky.into(), "plain".into()],
                ..UserFields::default()
            },
            action: "tool:invoke".into(),
            ..SarkInput::default()
        };
        let mut a = answer(false);
        a.decision = Arc::new(Decision::deny(crate::EvalError::Policy("boom".into()), EngineKind::Rvm, "rev-\"2".into()));
        let line = AuditRecord::for_typed(&input, &ContextIds::default(), &a, 1, 0, 0).to_json_line();
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["user_id"], tricky);
        assert_eq!(v["user_roles"], serde_json::json!([tricky, "plain"]));
        assert_eq!(v["bundle_revision"], "rev-\"2");
        assert_eq!(v["result"], "error");
        assert_eq!(v["error_code"], 1004);
        assert_eq!(v["tool_name"], serde_json::Value::Null);
    }
}
