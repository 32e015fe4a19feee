//! One shard's decision point: cache key → shard-local cache → evaluator → cache insert.
//! The composition every front door (binary protocol, HTTP shim, CLI) goes through.
//!
//! Caching assumes the input's `context.now_ns` is the present: the key leaves time out
//! and the TTL bounds how long an answer may outlive the moment it was computed for. An
//! input whose `now_ns` is further than [`DecisionPoint::MAX_CLOCK_SKEW_NS`] from the PDP's
//! own clock (a what-if question about another time) is evaluated but neither served from
//! nor stored in the cache.

use std::sync::Arc;
use std::time::Duration;

use regorus::Value;

use crate::bundle::DECISION_ENTRYPOINT;
use crate::cache::{CacheConfig, DecisionCache, tag};
use crate::decision::{Decision, Sensitivity};
use crate::error::EvalError;
use crate::eval::{CompiledBundle, EnginePreference, Evaluator};
use crate::input::{ContextIds, SarkInput, stamp_now};
use crate::key::{CacheKey, KeyHasher};

/// A decision and how it was reached.
#[derive(Debug, Clone)]
pub struct Answer {
    pub decision: Arc<Decision>,
    pub cache_hit: bool,
    /// How long it stays cached from now (zero: not cached).
    pub ttl: Duration,
}

/// A shard's evaluator and cache, owned by one thread.
#[derive(Debug)]
pub struct DecisionPoint {
    evaluator: Evaluator,
    cache: DecisionCache,
    /// Prefixed with the bundle revision and the decision entrypoint; its buffer is reused.
    hasher: KeyHasher,
    /// Questions whose hit asked for a refresh ahead, to evaluate again off the reply
    /// path ([`Self::refresh_pending`]).
    pending: std::collections::VecDeque<Pending>,
    pub refresh_stats: RefreshStats,
    /// The cache key of the last typed question decided (what pre-warming counts by).
    last_key: Option<CacheKey>,
    /// Sampled stage timing ([`Self::mark_next`]): whether the next decision should note
    /// when its cache lookup ended, and that reading once it has. A bool, so an unsampled
    /// decision pays a byte test (the reading is taken in a cold function).
    mark_wanted: bool,
    mark_at: Option<u64>,
    /// The cache's clock, read only for a marked decision.
    clock: quanta::Clock,
}

/// A question to evaluate again.
#[derive(Debug)]
enum Pending {
    Typed(Box<SarkInput>),
    Document(Value),
}

/// Refresh-ahead counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshStats {
    /// Questions evaluated again and their entries replaced.
    pub refreshed: u64,
    /// Refreshes not queued because [`DecisionPoint::MAX_PENDING`] were waiting (those
    /// entries expire as usual).
    pub dropped: u64,
}

impl DecisionPoint {
    /// How far a caller's `now_ns` may be from the PDP's clock and still be cached.
    pub const MAX_CLOCK_SKEW_NS: i64 = 5_000_000_000;
    /// Refreshes waiting at most.
    pub const MAX_PENDING: usize = 4096;

    pub fn new(
        bundle: Arc<CompiledBundle>,
        engines: EnginePreference,
        cache: CacheConfig,
        clock: quanta::Clock,
    ) -> DecisionPoint {
        DecisionPoint {
            hasher: KeyHasher::new(&bundle.revision, DECISION_ENTRYPOINT),
            evaluator: Evaluator::new(bundle, engines),
            cache: DecisionCache::new(cache, clock.clone()),
            pending: std::collections::VecDeque::new(),
            refresh_stats: RefreshStats::default(),
            last_key: None,
            mark_wanted: false,
            mark_at: None,
            clock,
        }
    }

    /// Serve `bundle` from now on: a new evaluator and key space, an empty cache and no
    /// refreshes waiting (nothing asked under the old bundle is evaluated under the new);
    /// the counters carry on.
    pub fn swap(&mut self, bundle: Arc<CompiledBundle>, engines: EnginePreference) {
        self.hasher = KeyHasher::new(&bundle.revision, DECISION_ENTRYPOINT);
        self.evaluator = Evaluator::new(bundle, engines);
        self.cache.clear();
        self.pending.clear();
    }

    /// The cache key of the last typed question [`Self::decide_typed_ids`] decided (`None`
    /// when it could not be keyed).
    pub fn last_key(&self) -> Option<CacheKey> {
        self.last_key
    }

    /// Ask the next decision to note when its cache lookup (key and lookup, hit or miss)
    /// ends, for a caller timing its stages ([`Self::take_mark`]); unasked, a decision pays
    /// one byte test for this.
    pub fn mark_next(&mut self) {
        self.mark_wanted = true;
        self.mark_at = None;
    }

    /// The clock's raw reading ([`quanta::Clock::raw`]) as the decision after
    /// [`Self::mark_next`] ended its cache lookup: before it, key and lookup; after it, on a
    /// miss, the evaluation and cache insert. `None` when it never looked (an input that
    /// could not be keyed).
    pub fn take_mark(&mut self) -> Option<u64> {
        self.mark_wanted = false;
        self.mark_at.take()
    }

    /// Refreshes waiting.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn queue(&mut self, p: Pending) {
        if self.pending.len() < Self::MAX_PENDING {
            self.pending.push_back(p);
        } else {
            self.refresh_stats.dropped += 1;
        }
    }

    /// Evaluate up to `max` of the questions whose hits asked for a refresh, at `now_ns`
    /// (the PDP's clock, whatever time the question carried), and replace their entries;
    /// an answer that may no longer be cached (an error, a zero TTL) removes the entry
    /// ([`DecisionCache::insert`]). Returns how many were evaluated. A bundle swap empties
    /// the queue ([`Self::swap`]), so nothing queued under one bundle is evaluated under
    /// another.
    pub fn refresh_pending(&mut self, now_ns: i64, max: usize) -> usize {
        let mut done = 0;
        while done < max {
            let Some(p) = self.pending.pop_front() else { break };
            done += 1;
            match p {
                Pending::Typed(mut input) => {
                    input.now_ns = None;
                    self.typed(&input, now_ns, false);
                }
                Pending::Document(mut input) => {
                    if let Ok(top) = input.as_object_mut()
                        && let Some(ctx) = top.get_mut(&Value::from("context"))
                        && let Ok(ctx) = ctx.as_object_mut()
                    {
                        ctx.remove(&Value::from("now_ns"));
                    }
                    self.document(input, now_ns, false);
                }
            }
            self.refresh_stats.refreshed += 1;
        }
        done
    }

    pub fn cache(&self) -> &DecisionCache {
        &self.cache
    }

    pub fn cache_mut(&mut self) -> &mut DecisionCache {
        &mut self.cache
    }

    /// Decide typed fields. `now_ns` is the PDP's wall clock, used when the input has none.
    pub fn decide_typed(&mut self, input: &SarkInput, now_ns: i64) -> Answer {
        self.decide_typed_ids(input, now_ns).0
    }

    /// [`Self::decide_typed`], also returning the context's request and session ids
    /// (found while keying; the audit record wants them).
    pub fn decide_typed_ids<'a>(&mut self, input: &'a SarkInput, now_ns: i64) -> (Answer, ContextIds<'a>) {
        self.typed(input, now_ns, true)
    }

    /// [`Self::decide_typed_ids`]; `lookup` false skips the cache lookup (a refresh).
    fn typed<'a>(&mut self, input: &'a SarkInput, now_ns: i64, lookup: bool) -> (Answer, ContextIds<'a>) {
        let (key, ids) = match input.cache_key(&mut self.hasher) {
            Ok(k) => k,
            Err(e) => {
                let refused = Answer {
                    decision: Arc::new(self.evaluator.decide(Err(e))),
                    cache_hit: false,
                    ttl: Duration::ZERO,
                };
                self.last_key = None;
                return (refused, ContextIds::default());
            }
        };
        self.last_key = Some(key);
        let sensitivity = input
            .tool
            .as_ref()
            .and_then(|t| t.sensitivity_level.as_deref())
            .map_or(Sensitivity::Unknown, Sensitivity::parse);
        let tags = |_: &Value| {
            [
                tag("user", &input.user.id),
                input.tool.as_ref().map_or(0, |t| tag("tool", &t.name)),
                input.server.as_ref().map_or(0, |s| tag("server", &s.id)),
            ]
        };
        let cacheable = cacheable(input.now_ns, now_ns);
        if let Some((answer, refresh)) = self.lookup(key, cacheable && lookup) {
            if refresh {
                self.queue(Pending::Typed(Box::new(input.clone())));
            }
            return (answer, ids);
        }
        // The identifier limits are checked on a miss only: an input past them is never
        // cached (a refusal has no TTL), so its key can never hit.
        let answer = self.evaluate(key, cacheable, sensitivity, tags, || {
            input.check_limits()?;
            let mut doc = input.to_value()?;
            stamp_now(&mut doc, now_ns);
            Ok(doc)
        });
        (answer, ids)
    }

    /// Decide an input document (JSON callers). `now_ns` as in [`Self::decide_typed`].
    pub fn decide_document(&mut self, input: Value, now_ns: i64) -> Answer {
        self.document(input, now_ns, true)
    }

    /// [`Self::decide_document`]; `lookup` false skips the cache lookup (a refresh).
    fn document(&mut self, mut input: Value, now_ns: i64, lookup: bool) -> Answer {
        let given = match &input["context"]["now_ns"] {
            Value::Undefined => None,
            // Present but not an integer (a string, 1.5, …): the policy will deny; never
            // let the key, which leaves now_ns out, find an answer for another time.
            Value::Number(n) => Some(n.as_i64().unwrap_or(i64::MIN)),
            _ => Some(i64::MIN),
        };
        let key = self.hasher.document_key(&input);
        let sensitivity = Sensitivity::of_input(&input);
        let tags = |doc: &Value| {
            let at = |kind: &str, v: &Value| match v {
                Value::String(s) => tag(kind, s),
                _ => 0,
            };
            [at("user", &doc["user"]["id"]), at("tool", &doc["tool"]["name"]), at("server", &doc["server"]["id"])]
        };
        let cacheable = cacheable(given, now_ns);
        if let Some((answer, refresh)) = self.lookup(key, cacheable && lookup) {
            if refresh {
                self.queue(Pending::Document(input));
            }
            return answer;
        }
        self.evaluate(key, cacheable, sensitivity, tags, || {
            crate::input::check_document_limits(&input)?;
            stamp_now(&mut input, now_ns);
            Ok(input)
        })
    }

    /// The hit path: the cached answer, and whether it asks for a refresh ahead.
    fn lookup(&mut self, key: CacheKey, cacheable: bool) -> Option<(Answer, bool)> {
        let found = if cacheable { self.cache.get(key) } else { None };
        if self.mark_wanted {
            self.note_mark();
        }
        let hit = found?;
        Some((Answer { decision: hit.decision, cache_hit: true, ttl: hit.ttl }, hit.refresh))
    }

    /// [`Self::mark_next`]'s reading, kept out of the hit path's code.
    #[cold]
    #[inline(never)]
    fn note_mark(&mut self) {
        self.mark_wanted = false;
        self.mark_at = Some(self.clock.raw());
    }

    /// The miss path: build the document, tag it (user, tool, server: for targeted
    /// invalidation), evaluate, insert.
    fn evaluate(
        &mut self,
        key: CacheKey,
        cacheable: bool,
        s: Sensitivity,
        tags: impl FnOnce(&Value) -> [u64; 3],
        doc: impl FnOnce() -> Result<Value, EvalError>,
    ) -> Answer {
        let doc = doc();
        let tags = doc.as_ref().map_or([0; 3], tags);
        let decision = Arc::new(self.evaluator.decide(doc));
        let ttl = if cacheable {
            self.cache.insert_tagged(key, decision.clone(), s, &tags)
        } else {
            Duration::ZERO
        };
        Answer {
            decision,
            cache_hit: false,
            ttl,
        }
    }
}

/// Whether an input stamped `given` (or unstamped) is about the present, `now_ns`.
fn cacheable(given: Option<i64>, now_ns: i64) -> bool {
    given.is_none_or(|t| t.abs_diff(now_ns) <= DecisionPoint::MAX_CLOCK_SKEW_NS.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{Bundle, BundleLimits};
    use crate::eval::EvalLimits;
    use crate::input::{ToolFields, UserFields};

    /// Allows admins; the TTL comes from the input so tests can steer it.
    const POLICY: &str = r#"package sark
default decision := {"allow": false, "reasons": ["not admin"]}
decision := {"allow": true, "reasons": ["admin"], "cache_ttl_s": object.get(input.context, "ttl", 600)} if "admin" in input.user.roles
"#;

    fn point() -> (DecisionPoint, Arc<quanta::Mock>) {
        point_with(CacheConfig::default())
    }

    fn point_with(cache: CacheConfig) -> (DecisionPoint, Arc<quanta::Mock>) {
        let files = vec![("p.rego".to_string(), POLICY.as_bytes().to_vec())];
        let bundle = Bundle::from_files("t", files, BundleLimits::default()).unwrap();
        let compiled = Arc::new(CompiledBundle::compile(&bundle, EvalLimits::default()).unwrap());
        let (clock, mock) = quanta::Clock::mock();
        (DecisionPoint::new(compiled, EnginePreference::Fastest, cache, clock), mock)
    }

    fn input(roles: &[&str], sensitivity: &str) -> SarkInput {
        SarkInput {
            user: UserFields {
                id: "u".into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                ..UserFields::default()
            },
            action: "tool:invoke".into(),
            tool: Some(ToolFields {
                name: "t".into(),
                sensitivity_level: Some(sensitivity.into()),
                ..ToolFields::default()
            }),
            ..SarkInput::default()
        }
    }

    const NOW: i64 = 1_795_428_000_000_000_000;

    #[test]
    fn repeats_hit_until_the_ttl_and_a_role_change_is_never_stale() {
        let (mut p, mock) = point();
        let admin = input(&["admin"], "high");
        let a = p.decide_typed(&admin, NOW);
        assert!(a.decision.allow && !a.cache_hit);
        assert_eq!(a.ttl, Duration::from_secs(60));
        let b = p.decide_typed(&admin, NOW + 1);
        assert!(b.decision.allow && b.cache_hit);
        // The same user without the admin role: a different key, a fresh deny.
        let c = p.decide_typed(&input(&["viewer"], "high"), NOW);
        assert!(!c.decision.allow && !c.cache_hit);
        mock.increment(Duration::from_secs(60));
        assert!(!p.decide_typed(&admin, NOW).cache_hit, "served past the high TTL");
    }

    #[test]
    fn documents_are_cached_too_and_the_policy_ttl_wins() {
        let (mut p, _) = point();
        let doc = || {
            Value::from_json_str(
                r#"{"user": {"id": "u", "roles": ["admin"]}, "tool": {"sensitivity_level": "low"}, "context": {"ttl": 5, "request_id": "a"}}"#,
            )
            .unwrap()
        };
        let a = p.decide_document(doc(), NOW);
        assert_eq!(a.ttl, Duration::from_secs(5));
        assert!(p.decide_document(doc(), NOW).cache_hit);
    }

    #[test]
    fn questions_about_another_time_bypass_the_cache() {
        let (mut p, _) = point();
        let mut other_time = input(&["admin"], "low");
        other_time.now_ns = Some(NOW - 86_400_000_000_000);
        let a = p.decide_typed(&other_time, NOW);
        assert!(a.decision.allow);
        assert_eq!(a.ttl, Duration::ZERO);
        assert!(!p.decide_typed(&other_time, NOW).cache_hit);
        assert!(p.cache().is_empty());
        // Within the skew it caches.
        other_time.now_ns = Some(NOW - 1_000_000_000);
        p.decide_typed(&other_time, NOW);
        assert!(p.decide_typed(&other_time, NOW).cache_hit);
    }

    #[test]
    fn a_marked_decision_notes_when_its_lookup_ended() {
        let (mut p, mock) = point();
        let admin = input(&["admin"], "low");
        p.decide_typed(&admin, NOW);
        assert_eq!(p.take_mark(), None, "unasked, nothing is noted");
        mock.increment(Duration::from_nanos(700));
        let at = p.clock.raw();
        // A hit and a miss both note the lookup's end; taking it clears it.
        for roles in [["admin"], ["viewer"]] {
            p.mark_next();
            p.decide_typed(&input(&roles, "low"), NOW);
            assert_eq!(p.take_mark(), Some(at));
            assert_eq!(p.take_mark(), None);
        }
        // Documents too; and a question about another time (no lookup) still ends one.
        p.mark_next();
        p.decide_document(Value::from_json_str(r#"{"user": {"id": "u"}, "context": {"now_ns": 1}}"#).unwrap(), NOW);
        assert_eq!(p.take_mark(), Some(at));
        // An input that cannot be keyed never looks.
        let mut bad = input(&["admin"], "low");
        bad.context = crate::input::Blob::Json("{not json".into());
        p.mark_next();
        p.decide_typed(&bad, NOW);
        assert_eq!(p.take_mark(), None);
    }

    #[test]
    fn errors_are_never_cached() {
        let (mut p, _) = point();
        let mut bad = input(&["admin"], "low");
        bad.context = crate::input::Blob::Json("{not json".into());
        let a = p.decide_typed(&bad, NOW);
        assert!(!a.decision.allow && a.decision.error.is_some());
        assert_eq!(a.ttl, Duration::ZERO);
        assert!(!p.decide_typed(&bad, NOW).cache_hit);
    }

    #[test]
    fn a_now_ns_that_is_not_an_integer_never_hits_an_answer_for_the_present() {
        let (mut p, _) = point();
        let doc = |ctx: &str| Value::from_json_str(&format!(r#"{{"user": {{"id": "u", "roles": ["admin"]}}, "context": {ctx}}}"#)).unwrap();
        p.decide_document(doc("{}"), NOW);
        assert!(p.decide_document(doc("{}"), NOW).cache_hit);
        for odd in [r#"{"now_ns": 1795428000.5}"#, r#"{"now_ns": "soon"}"#, r#"{"now_ns": true}"#] {
            assert!(!p.decide_document(doc(odd), NOW).cache_hit, "{odd}");
        }
    }

    #[test]
    fn identifiers_past_their_limits_are_refused_where_the_policy_would_allow() {
        use crate::input::{MAX_ID_BYTES, MAX_LIST_ITEMS};
        let (mut p, _) = point();
        let mut long = input(&["admin"], "low");
        long.user.id = "u".repeat(MAX_ID_BYTES);
        assert!(p.decide_typed(&long, NOW).decision.allow, "at the limit: decided as usual");
        long.user.id.push('u');
        let mut tool = input(&["admin"], "low");
        tool.tool.as_mut().unwrap().name = "é".repeat(MAX_ID_BYTES / 2 + 1);
        let mut roles = input(&["admin"], "low");
        roles.user.roles.extend((0..MAX_LIST_ITEMS).map(|i| format!("r{i}")));
        let mut role = input(&["admin"], "low");
        role.user.roles.push("r".repeat(MAX_ID_BYTES + 1));
        for (what, typed, field) in [("user id", long, "user.id"), ("tool name", tool, "tool.name"), ("roles", roles, "user.roles"), ("one role", role, "user.roles")] {
            for (door, a) in [("typed", p.decide_typed(&typed, NOW)), ("document", p.decide_document(typed.to_value().unwrap(), NOW))] {
                assert!(!a.decision.allow, "{what} ({door}): allowed");
                let e = a.decision.error.as_ref().map(ToString::to_string).unwrap_or_default();
                assert!(matches!(a.decision.error, Some(EvalError::BadInput(_))) && e.contains(field), "{what} ({door}): {e}");
                assert_eq!(a.ttl, Duration::ZERO, "{what} ({door}): refusals are not cached");
            }
        }
    }

    #[test]
    fn a_hit_near_the_end_of_its_ttl_is_served_and_refreshed_once_off_the_reply_path() {
        let (mut p, mock) = point();
        let medium = input(&["admin"], "medium");
        assert_eq!(p.decide_typed(&medium, NOW).ttl, Duration::from_secs(300));
        mock.increment(Duration::from_secs(200));
        assert!(p.decide_typed(&medium, NOW).cache_hit);
        assert_eq!(p.pending(), 0, "not in the last quarter yet");
        mock.increment(Duration::from_secs(30));
        let stale = p.decide_typed(&medium, NOW);
        assert!(stale.cache_hit && stale.decision.allow && stale.ttl == Duration::from_secs(70), "served as it is: {stale:?}");
        assert!(p.decide_typed(&medium, NOW).cache_hit);
        assert_eq!(p.pending(), 1, "one refresh per entry, however many hits");
        assert_eq!(p.cache().stats().stale_hits[Sensitivity::Medium as usize], 1);
        assert_eq!(p.refresh_pending(NOW, 8), 1);
        assert_eq!((p.pending(), p.refresh_stats.refreshed), (0, 1));
        // Re-evaluated at 230 s: alive until 530 s, where the first entry died at 300 s.
        mock.increment(Duration::from_secs(299));
        let later = p.decide_typed(&medium, NOW);
        assert!(later.cache_hit && later.ttl == Duration::from_secs(1), "{later:?}");
        mock.increment(Duration::from_secs(1));
        assert!(!p.decide_typed(&medium, NOW).cache_hit, "never served past its own TTL");

        // Critical: off by default, so the entry simply expires.
        p.refresh_pending(NOW, 8);
        let critical = input(&["admin"], "critical");
        p.decide_typed(&critical, NOW);
        mock.increment(Duration::from_secs(29));
        assert!(p.decide_typed(&critical, NOW).cache_hit);
        assert_eq!(p.pending(), 0);
        mock.increment(Duration::from_secs(1));
        assert!(!p.decide_typed(&critical, NOW).cache_hit);
    }

    #[test]
    fn refreshes_work_for_documents_and_stop_at_the_queue_bound() {
        let (mut p, mock) = point_with(CacheConfig { refresh: crate::cache::RefreshConfig { fraction: [1.0; 5] }, ..CacheConfig::default() });
        let doc = |user: &str| Value::from_json_str(&format!(r#"{{"user": {{"id": "{user}", "roles": ["admin"]}}, "context": {{"now_ns": {NOW}}}}}"#)).unwrap();
        p.decide_document(doc("d"), NOW);
        mock.increment(Duration::from_secs(1));
        assert!(p.decide_document(doc("d"), NOW).cache_hit);
        assert_eq!(p.pending(), 1);
        assert_eq!(p.refresh_pending(NOW + 10_000_000_000, 8), 1, "evaluated at the PDP's time, not the question's");
        mock.increment(Duration::from_secs(299));
        assert!(p.decide_document(doc("d"), NOW).cache_hit, "the refresh restarted the TTL");
        p.refresh_pending(NOW, 8);

        for u in 0..DecisionPoint::MAX_PENDING + 10 {
            p.decide_typed(&SarkInput { user: UserFields { id: format!("q{u}"), ..UserFields::default() }, ..SarkInput::default() }, NOW);
        }
        mock.increment(Duration::from_secs(1));
        for u in 0..DecisionPoint::MAX_PENDING + 10 {
            assert!(p.decide_typed(&SarkInput { user: UserFields { id: format!("q{u}"), ..UserFields::default() }, ..SarkInput::default() }, NOW).cache_hit);
        }
        assert_eq!(p.pending(), DecisionPoint::MAX_PENDING);
        assert_eq!(p.refresh_stats.dropped, 10);
        assert_eq!(p.refresh_pending(NOW, 100), 100, "at most max a call");
    }

    #[test]
    fn an_adaptive_ttl_keeps_hot_keys_to_their_ttl_and_lets_cold_ones_go_early() {
        let (mut p, mock) = point_with(CacheConfig { adaptive: Some(crate::cache::AdaptiveTtl { start: 0.25 }), refresh: crate::cache::RefreshConfig::OFF, ..CacheConfig::default() });
        let (hot, cold) = (input(&["admin"], "low"), input(&["admin", "x"], "low"));
        assert_eq!(p.decide_typed(&hot, NOW).ttl, Duration::from_secs(150), "a quarter of low's 600 s to start");
        p.decide_typed(&cold, NOW);
        // The hot key is asked every 100 s: each hit in the second half of what is left
        // slides it on, up to 600 s after it was evaluated.
        for t in 1..=5 {
            mock.increment(Duration::from_secs(100));
            let a = p.decide_typed(&hot, NOW);
            assert!(a.cache_hit, "at {} s", t * 100);
            assert!(a.ttl <= Duration::from_secs(600 - t * 100), "past its ceiling at {} s: {a:?}", t * 100);
        }
        assert!(!p.decide_typed(&cold, NOW).cache_hit, "the cold key left at 150 s");
        mock.increment(Duration::from_secs(100));
        assert!(!p.decide_typed(&hot, NOW).cache_hit, "600 s after its evaluation even the hot key goes");
        // And the policy's own cache_ttl_s caps it as it caps a fixed TTL.
        let mut short = input(&["admin"], "low");
        short.context = crate::input::Blob::Json(r#"{"ttl": 8}"#.into());
        assert_eq!(p.decide_typed(&short, NOW).ttl, Duration::from_secs(2));
        for _ in 0..4 {
            mock.increment(Duration::from_millis(1900));
            assert!(p.decide_typed(&short, NOW).cache_hit);
        }
        mock.increment(Duration::from_millis(500));
        assert!(!p.decide_typed(&short, NOW).cache_hit, "8 s: the policy's TTL");
    }
}
