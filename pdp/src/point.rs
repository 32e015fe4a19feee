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
}

impl DecisionPoint {
    /// How far a caller's `now_ns` may be from the PDP's clock and still be cached.
    pub const MAX_CLOCK_SKEW_NS: i64 = 5_000_000_000;

    pub fn new(
        bundle: Arc<CompiledBundle>,
        engines: EnginePreference,
        cache: CacheConfig,
        clock: quanta::Clock,
    ) -> DecisionPoint {
        DecisionPoint {
            hasher: KeyHasher::new(&bundle.revision, DECISION_ENTRYPOINT),
            evaluator: Evaluator::new(bundle, engines),
            cache: DecisionCache::new(cache, clock),
        }
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
        let (key, ids) = match input.cache_key(&mut self.hasher) {
            Ok(k) => k,
            Err(e) => {
                let refused = Answer {
                    decision: Arc::new(self.evaluator.decide(Err(e))),
                    cache_hit: false,
                    ttl: Duration::ZERO,
                };
                return (refused, ContextIds::default());
            }
        };
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
        // The identifier limits are checked on a miss only: an input past them is never
        // cached (a refusal has no TTL), so its key can never hit.
        let answer = self.decide_keyed(key, cacheable(input.now_ns, now_ns), sensitivity, tags, || {
            input.check_limits()?;
            let mut doc = input.to_value()?;
            stamp_now(&mut doc, now_ns);
            Ok(doc)
        });
        (answer, ids)
    }

    /// Decide an input document (JSON callers). `now_ns` as in [`Self::decide_typed`].
    pub fn decide_document(&mut self, mut input: Value, now_ns: i64) -> Answer {
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
        self.decide_keyed(key, cacheable(given, now_ns), sensitivity, tags, || {
            crate::input::check_document_limits(&input)?;
            stamp_now(&mut input, now_ns);
            Ok(input)
        })
    }

    /// The hit path, else: build the document, tag it (user, tool, server: for targeted
    /// invalidation), evaluate, insert.
    fn decide_keyed(
        &mut self,
        key: CacheKey,
        cacheable: bool,
        s: Sensitivity,
        tags: impl FnOnce(&Value) -> [u64; 3],
        doc: impl FnOnce() -> Result<Value, EvalError>,
    ) -> Answer {
        if cacheable && let Some((decision, ttl)) = self.cache.get(key) {
            return Answer {
                decision,
                cache_hit: true,
                ttl,
            };
        }
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
        let files = vec![("p.rego".to_string(), POLICY.as_bytes().to_vec())];
        let bundle = Bundle::from_files("t", files, BundleLimits::default()).unwrap();
        let compiled = Arc::new(CompiledBundle::compile(&bundle, EvalLimits::default()).unwrap());
        let (clock, mock) = quanta::Clock::mock();
        (DecisionPoint::new(compiled, EnginePreference::Fastest, CacheConfig::default(), clock), mock)
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
}
