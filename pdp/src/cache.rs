//! The shard-local decision cache.
//!
//! Each shard owns one and no lock is ever taken. Values are `Arc<Decision>` so that an
//! answer's audit record can carry the decision to the writer thread without copying it. Bounded both by entries and by bytes; an entry lives until
//! TTL = min(sensitivity TTL from [`TtlConfig`], the policy's `cache_ttl_s`), measured on
//! an injected [`quanta::Clock`] so tests drive expiry without sleeping. Decisions that
//! carry an error, or whose TTL is zero, are never cached.
//!
//! Two refinements, both measured in BENCHMARKS.md ("Cache warmth"):
//! - **Refresh ahead** ([`RefreshConfig`], "stale-while-revalidate" in SARK's words): a hit
//!   in the last fraction of its entry's TTL is served as usual and reported
//!   ([`Hit::refresh`]) so the caller re-evaluates the question right after its reply and
//!   replaces the entry; a hot key then never misses. An entry is never served past its
//!   TTL. Per sensitivity; off for `critical` by default.
//! - **Adaptive TTL** ([`AdaptiveTtl`], off by default): an entry starts with a fraction of
//!   its TTL and each hit extends it, so a key asked often lives to its full TTL (never
//!   past it, nor past the policy's `cache_ttl_s`) and one asked once leaves early.
//!
//! Two eviction policies, chosen by [`Eviction`]; their hit ratios under a zipf workload
//! are in BENCHMARKS.md (`cargo run --release -p perf --bin cache_ratio`):
//! - [`Eviction::S3Fifo`]: quick_cache's unsync cache (S3-FIFO, scan resistant). Default.
//! - [`Eviction::Lru`]: the `lru` crate, plain least-recently-used.

use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use quanta::{Clock, Instant};

use crate::config::TtlConfig;
use crate::decision::{Decision, Sensitivity};
use crate::key::CacheKey;

/// Eviction policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    S3Fifo,
    Lru,
}

/// Bounds of one shard's cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    pub max_entries: usize,
    pub max_bytes: usize,
    pub eviction: Eviction,
    pub ttl: TtlConfig,
    pub refresh: RefreshConfig,
    /// `None`: every entry lives its whole TTL.
    pub adaptive: Option<AdaptiveTtl>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 65_536,
            max_bytes: 64 << 20,
            eviction: Eviction::S3Fifo,
            ttl: TtlConfig::default(),
            refresh: RefreshConfig::default(),
            adaptive: None,
        }
    }
}

/// Refresh ahead, per sensitivity: the last fraction of an entry's TTL in which a hit
/// asks for the question to be evaluated again (0: never). Indexed by [`Sensitivity`]
/// (low, medium, high, critical, unknown).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshConfig {
    pub fraction: [f64; 5],
}

impl Default for RefreshConfig {
    /// The last quarter of the TTL, except for critical tools: off (README, "Cache
    /// warmth": a refreshed critical answer was computed without a caller present).
    fn default() -> Self {
        RefreshConfig { fraction: [0.25, 0.25, 0.25, 0.0, 0.25] }
    }
}

impl RefreshConfig {
    /// Refresh off for every sensitivity.
    pub const OFF: RefreshConfig = RefreshConfig { fraction: [0.0; 5] };

    fn of(&self, s: Sensitivity) -> f64 {
        self.fraction.get(s as usize).copied().unwrap_or(0.0).clamp(0.0, 1.0)
    }
}

/// Adaptive TTL: an entry starts with `start` × its TTL, and a hit in the second half of
/// what it has left extends it to `start` × TTL from now, up to the TTL from when it was
/// evaluated (never beyond the sensitivity's TTL or the policy's `cache_ttl_s`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveTtl {
    /// 0 < start < 1 (other values turn it off).
    pub start: f64,
}

/// A live cache entry found by [`DecisionCache::get`].
#[derive(Debug, Clone)]
pub struct Hit {
    pub decision: Arc<Decision>,
    /// What is left of its TTL.
    pub ttl: Duration,
    /// Refresh ahead: evaluate this question again (once per entry) and insert the result.
    pub refresh: bool,
}

/// Counters a shard exports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries found but past their TTL (counted in `misses` too).
    pub expired: u64,
    pub inserts: u64,
    /// Decisions not cached: errors or a zero TTL.
    pub uncacheable: u64,
    /// Hits in the refresh window (each asked for one refresh), by sensitivity.
    pub stale_hits: [u64; 5],
    /// Live entries pushed out to make room, by sensitivity.
    pub evictions: [u64; 5],
}

#[derive(Debug, Clone)]
struct Entry {
    decision: Arc<Decision>,
    expires_at: Instant,
    /// When it was evaluated + its whole TTL: it is never served later than this.
    ceiling: Instant,
    /// From here on a hit asks for a refresh (`ceiling`: never).
    refresh_at: Instant,
    /// The earliest time a hit has more to do than answer (ask for a refresh, slide the
    /// expiry on): before it, the hit path is two comparisons.
    attention_at: Instant,
    /// Adaptive TTL: how far a hit extends it (zero: off).
    slide: Duration,
    /// Approximate bytes this entry holds, fixed when inserted.
    bytes: u64,
    sensitivity: Sensitivity,
    /// A hit has asked for its refresh already.
    refresh_asked: bool,
}

/// When a hit on `e` next has more to do than answer ([`DecisionCache::get`]).
fn attention(e: &Entry) -> Instant {
    let mut at = e.ceiling;
    if !e.refresh_asked {
        at = at.min(e.refresh_at);
    }
    if !e.slide.is_zero() && e.expires_at < e.ceiling {
        at = at.min(e.expires_at.checked_sub(e.slide / 2).unwrap_or(e.expires_at));
    }
    at
}

/// Counts S3-FIFO's evictions by sensitivity, per insert.
#[derive(Debug, Clone, Copy, Default)]
struct CountEvictions;

/// One insert's evictions, and the key it inserts: quick_cache reports the value an
/// insert replaces as evicted too, which is not one.
#[derive(Debug, Default)]
struct Evicted {
    inserting: Option<CacheKey>,
    by_sensitivity: [u64; 5],
}

impl Evicted {
    /// Count `e`, put out under `key`, unless it is the value the insert replaces.
    fn count(&mut self, key: CacheKey, e: &Entry) {
        if self.inserting != Some(key)
            && let Some(n) = self.by_sensitivity.get_mut(e.sensitivity as usize)
        {
            *n += 1;
        }
    }
}

impl quick_cache::Lifecycle<CacheKey, Entry> for CountEvictions {
    type RequestState = Evicted;

    fn on_evict(&self, state: &mut Evicted, key: CacheKey, e: Entry) {
        state.count(key, &e);
    }
}

/// The key is already a uniform hash: use its low bits instead of hashing it again.
#[derive(Debug, Default, Clone, Copy)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than `CacheKey`, which we never use.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        // Fold both halves, so keys that differ only in one half still spread.
        self.0 = (n as u64) ^ ((n >> 64) as u64);
    }
}

type Build = BuildHasherDefault<PassThrough>;

/// quick_cache weighs entries; counting each as at least `bytes_per_slot` (= max_bytes /
/// max_entries) bounds the entry count and the bytes with one weight.
#[derive(Debug, Clone, Copy)]
struct Weigh {
    min_weight: u64,
}

impl quick_cache::Weighter<CacheKey, Entry> for Weigh {
    fn weight(&self, _: &CacheKey, e: &Entry) -> u64 {
        e.bytes.max(self.min_weight)
    }
}

enum Backend {
    S3Fifo(quick_cache::unsync::Cache<CacheKey, Entry, Weigh, Build, CountEvictions>),
    Lru {
        map: lru::LruCache<CacheKey, Entry, Build>,
        bytes: u64,
        max_bytes: u64,
    },
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::S3Fifo(c) => write!(f, "S3Fifo({} entries)", c.len()),
            Backend::Lru { map, bytes, .. } => write!(f, "Lru({} entries, {bytes} bytes)", map.len()),
        }
    }
}

/// One shard's decision cache.
#[derive(Debug)]
pub struct DecisionCache {
    backend: Backend,
    clock: Clock,
    ttl: TtlConfig,
    refresh: RefreshConfig,
    adaptive: Option<AdaptiveTtl>,
    stats: CacheStats,
    /// Which keys were inserted for a user, a tool or a server ([`tag`]), so they can be
    /// invalidated. Written on inserts (the miss path) only; keys the cache has since
    /// evicted are pruned when the index outgrows the cache.
    index: std::collections::HashMap<u64, Vec<CacheKey>>,
    index_len: usize,
    max_entries: usize,
}

/// The tag of a user id (`kind` "user"), tool name ("tool") or server id ("server").
pub fn tag(kind: &str, value: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(kind.as_bytes());
    h.update(&[0]);
    h.update(value.as_bytes());
    h.digest()
}

/// Approximate heap and inline bytes of a cached decision plus its key and entry.
pub fn entry_bytes(d: &Decision) -> u64 {
    let strings = |v: &[String]| v.iter().map(|s| s.len() + 24).sum::<usize>();
    let fixed = std::mem::size_of::<Decision>() + std::mem::size_of::<Entry>() + 16 + 16;
    // The parameters' JSON text, held twice: as text, and (estimated) as a value tree.
    let params = d.filtered_parameters_json.as_ref().map_or(0, |j| j.len() * 3);
    (fixed
        + strings(&d.reasons)
        + strings(&d.policies_evaluated)
        + d.policy_results.iter().map(|(k, _)| k.len() + 32).sum::<usize>()
        + params) as u64
}

impl DecisionCache {
    pub fn new(config: CacheConfig, clock: Clock) -> DecisionCache {
        let max_entries = config.max_entries.max(1);
        let max_bytes = config.max_bytes.max(1) as u64;
        let backend = match config.eviction {
            Eviction::S3Fifo => Backend::S3Fifo(quick_cache::unsync::Cache::with(
                max_entries,
                max_bytes,
                Weigh {
                    min_weight: (max_bytes / max_entries as u64).max(1),
                },
                Build::default(),
                CountEvictions,
            )),
            Eviction::Lru => Backend::Lru {
                map: lru::LruCache::with_hasher(NonZeroUsize::new(max_entries).unwrap_or(NonZeroUsize::MIN), Build::default()),
                bytes: 0,
                max_bytes,
            },
        };
        DecisionCache {
            backend,
            clock,
            ttl: config.ttl,
            refresh: config.refresh,
            adaptive: config.adaptive.filter(|a| a.start > 0.0 && a.start < 1.0),
            stats: CacheStats::default(),
            index: std::collections::HashMap::new(),
            index_len: 0,
            max_entries,
        }
    }

    /// A live decision for `key`, if any. Expired entries are removed and count as
    /// misses.
    pub fn get(&mut self, key: CacheKey) -> Option<Hit> {
        let now = self.clock.now();
        let found = match &mut self.backend {
            Backend::S3Fifo(c) => c.get(&key),
            Backend::Lru { map, .. } => map.get(&key),
        };
        let (mut hit, attend) = match found {
            None => {
                self.stats.misses += 1;
                return None;
            }
            Some(e) if now < e.expires_at => (Hit { decision: e.decision.clone(), ttl: e.expires_at - now, refresh: false }, now >= e.attention_at),
            Some(_) => {
                self.stats.expired += 1;
                self.stats.misses += 1;
                self.remove(key);
                return None;
            }
        };
        self.stats.hits += 1;
        if attend {
            self.attend(key, now, &mut hit);
        }
        Some(hit)
    }

    /// A hit past its entry's `attention_at`: ask for the refresh (once), slide an
    /// adaptive expiry on (a hit in the second half of what is left).
    #[cold]
    fn attend(&mut self, key: CacheKey, now: Instant, hit: &mut Hit) {
        let update = |e: &mut Entry| {
            let refresh = !e.refresh_asked && now >= e.refresh_at;
            e.refresh_asked |= refresh;
            if !e.slide.is_zero() && e.expires_at < e.ceiling && e.expires_at - now < e.slide / 2 {
                e.expires_at = (now + e.slide).min(e.ceiling);
            }
            e.attention_at = attention(e);
            (refresh, e.expires_at, e.sensitivity)
        };
        let seen = match &mut self.backend {
            Backend::S3Fifo(c) => c.get_mut(&key).map(|mut e| update(&mut e)),
            Backend::Lru { map, .. } => map.get_mut(&key).map(update),
        };
        let Some((refresh, expires_at, s)) = seen else { return };
        hit.ttl = expires_at - now;
        hit.refresh = refresh;
        if refresh && let Some(n) = self.stats.stale_hits.get_mut(s as usize) {
            *n += 1;
        }
    }

    /// The TTL a decision would be cached for: the sensitivity's, shortened by the
    /// policy's `cache_ttl_s`; zero for errors.
    pub fn ttl_for(&self, d: &Decision, sensitivity: Sensitivity) -> Duration {
        if d.error.is_some() {
            return Duration::ZERO;
        }
        let configured = self.ttl.for_sensitivity(sensitivity);
        match d.cache_ttl_s {
            Some(policy) => configured.min(Duration::from_secs(policy)),
            None => configured,
        }
    }

    /// Remember a decision. Returns the TTL it got (zero: not cached, and whatever was
    /// cached under `key` is forgotten — a refresh whose answer may no longer be cached
    /// leaves no older one behind; with an adaptive TTL, what it starts with).
    pub fn insert(&mut self, key: CacheKey, decision: Arc<Decision>, sensitivity: Sensitivity) -> Duration {
        let ttl = self.ttl_for(&decision, sensitivity);
        if ttl.is_zero() {
            self.stats.uncacheable += 1;
            self.remove(key);
            return ttl;
        }
        let now = self.clock.now();
        let ceiling = now + ttl;
        let slide = self.adaptive.map_or(Duration::ZERO, |a| ttl.mul_f64(a.start).max(Duration::from_millis(1)));
        let first = if slide.is_zero() { ttl } else { slide };
        let mut entry = Entry {
            bytes: entry_bytes(&decision),
            decision,
            expires_at: now + first,
            ceiling,
            refresh_at: ceiling - ttl.mul_f64(self.refresh.of(sensitivity)),
            attention_at: ceiling,
            slide,
            sensitivity,
            refresh_asked: false,
        };
        entry.attention_at = attention(&entry);
        self.stats.inserts += 1;
        let mut evicted = Evicted { inserting: Some(key), by_sensitivity: [0; 5] };
        match &mut self.backend {
            Backend::S3Fifo(c) => c.insert_with_lifecycle(key, entry, &mut evicted),
            Backend::Lru { map, bytes, max_bytes } => {
                *bytes += entry.bytes;
                if let Some((k, old)) = map.push(key, entry) {
                    *bytes -= old.bytes;
                    evicted.count(k, &old);
                }
                while *bytes > *max_bytes {
                    match map.pop_lru() {
                        Some((k, old)) => {
                            *bytes -= old.bytes;
                            evicted.count(k, &old);
                        }
                        None => break,
                    }
                }
            }
        }
        for (total, n) in self.stats.evictions.iter_mut().zip(evicted.by_sensitivity) {
            *total += n;
        }
        first
    }

    /// [`Self::insert`], remembering the key under each of `tags` for
    /// [`Self::invalidate_tag`].
    pub fn insert_tagged(&mut self, key: CacheKey, decision: Arc<Decision>, sensitivity: Sensitivity, tags: &[u64]) -> Duration {
        let ttl = self.insert(key, decision, sensitivity);
        if !ttl.is_zero() {
            // Tag 0 is "no such field" (a question without a tool or server).
            for t in tags.iter().filter(|t| **t != 0) {
                self.index.entry(*t).or_default().push(key);
                self.index_len += 1;
            }
            if self.index_len > 4 * self.max_entries {
                self.prune_index();
            }
        }
        ttl
    }

    fn contains(&self, key: CacheKey) -> bool {
        match &self.backend {
            Backend::S3Fifo(c) => c.contains_key(&key),
            Backend::Lru { map, .. } => map.contains(&key),
        }
    }

    fn prune_index(&mut self) {
        let mut index = std::mem::take(&mut self.index);
        // A key cached again after it expired (every hot key, once per TTL) is listed
        // again: sort, so every repeat goes, and the live index is at most one key per
        // tag per entry (≤ 3 × max_entries, under the 4× that triggers a prune). Keeping
        // the repeats made the index outgrow the trigger, and every insert a full prune.
        index.retain(|_, keys| {
            keys.retain(|k| self.contains(*k));
            keys.sort_unstable_by_key(|k| k.0);
            keys.dedup();
            !keys.is_empty()
        });
        self.index_len = index.values().map(Vec::len).sum();
        self.index = index;
    }

    /// Forget every decision inserted under `tag`; how many were still cached.
    pub fn invalidate_tag(&mut self, tag: u64) -> usize {
        let keys = self.index.remove(&tag).unwrap_or_default();
        self.index_len -= keys.len().min(self.index_len);
        let mut removed = 0;
        for k in keys {
            if self.contains(k) {
                self.remove(k);
                removed += 1;
            }
        }
        removed
    }

    pub fn remove(&mut self, key: CacheKey) {
        match &mut self.backend {
            Backend::S3Fifo(c) => {
                c.remove(&key);
            }
            Backend::Lru { map, bytes, .. } => {
                if let Some(old) = map.pop(&key) {
                    *bytes -= old.bytes;
                }
            }
        }
    }

    /// Drop everything (bundle swap, invalidate-all).
    pub fn clear(&mut self) {
        self.index.clear();
        self.index_len = 0;
        match &mut self.backend {
            Backend::S3Fifo(c) => c.clear(),
            Backend::Lru { map, bytes, .. } => {
                map.clear();
                *bytes = 0;
            }
        }
    }

    pub fn len(&self) -> usize {
        match &self.backend {
            Backend::S3Fifo(c) => c.len(),
            Backend::Lru { map, .. } => map.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held, as the bound counts them.
    pub fn bytes(&self) -> u64 {
        match &self.backend {
            Backend::S3Fifo(c) => c.weight(),
            Backend::Lru { bytes, .. } => *bytes,
        }
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::decision::EngineKind;
    use crate::error::EvalError;

    fn decision(allow: bool, ttl: Option<u64>) -> Arc<Decision> {
        Arc::new(Decision {
            allow,
            reasons: vec!["r".into()],
            policies_evaluated: vec!["rbac".into()],
            policy_results: vec![("rbac".into(), allow)],
            filtered_parameters: regorus::Value::Undefined,
            filtered_parameters_json: None,
            cache_ttl_s: ttl,
            restrictions: Default::default(),
            error: None,
            engine: EngineKind::Rvm,
            bundle_revision: "r".into(),
        })
    }

    fn both(config: CacheConfig) -> Vec<(DecisionCache, std::sync::Arc<quanta::Mock>)> {
        [Eviction::S3Fifo, Eviction::Lru]
            .into_iter()
            .map(|eviction| {
                let (clock, mock) = Clock::mock();
                (DecisionCache::new(CacheConfig { eviction, ..config }, clock), mock)
            })
            .collect()
    }

    #[test]
    fn ttl_is_the_smaller_of_sensitivity_and_policy() {
        for (mut c, mock) in both(CacheConfig::default()) {
            let k = CacheKey(1);
            assert_eq!(c.insert(k, decision(true, None), Sensitivity::Critical), Duration::from_secs(30));
            mock.increment(Duration::from_secs(29));
            assert!(c.get(k).is_some());
            mock.increment(Duration::from_secs(1));
            assert!(c.get(k).is_none(), "served past the critical TTL");
            assert_eq!(c.stats().expired, 1);
            assert!(c.is_empty());

            let k = CacheKey(2);
            assert_eq!(c.insert(k, decision(true, Some(7)), Sensitivity::Low), Duration::from_secs(7));
            mock.increment(Duration::from_secs(6));
            assert!(c.get(k).is_some());
            mock.increment(Duration::from_secs(1));
            assert!(c.get(k).is_none(), "served past the policy's TTL");

            let k = CacheKey(3);
            assert_eq!(c.insert(k, decision(true, Some(9999)), Sensitivity::Low), Duration::from_secs(600));
            assert_eq!(c.insert(CacheKey(4), decision(true, None), Sensitivity::Unknown), Duration::from_secs(300));
            assert_eq!(c.insert(CacheKey(5), decision(true, None), Sensitivity::Medium), Duration::from_secs(300));
            assert_eq!(c.insert(CacheKey(6), decision(true, None), Sensitivity::High), Duration::from_secs(60));
        }
    }

    #[test]
    fn errors_and_zero_ttls_are_not_cached() {
        for (mut c, _) in both(CacheConfig::default()) {
            let err = Arc::new(Decision::deny(EvalError::Policy("x".into()), EngineKind::Rvm, "r".into()));
            assert_eq!(c.insert(CacheKey(1), err, Sensitivity::Low), Duration::ZERO);
            assert_eq!(c.insert(CacheKey(2), decision(false, Some(0)), Sensitivity::Low), Duration::ZERO);
            assert!(c.get(CacheKey(1)).is_none());
            assert!(c.get(CacheKey(2)).is_none());
            assert_eq!(c.stats().uncacheable, 2);
            assert!(c.is_empty());
        }
    }

    #[test]
    fn an_uncacheable_answer_replaces_an_older_cached_one() {
        for (mut c, _) in both(CacheConfig::default()) {
            c.insert(CacheKey(1), decision(true, None), Sensitivity::Low);
            assert!(c.get(CacheKey(1)).is_some());
            // A refresh of the same question now fails (or may no longer be cached).
            let err = Arc::new(Decision::deny(EvalError::Policy("x".into()), EngineKind::Rvm, "r".into()));
            assert_eq!(c.insert(CacheKey(1), err, Sensitivity::Low), Duration::ZERO);
            assert!(c.get(CacheKey(1)).is_none(), "the older allow is gone");
        }
    }

    #[test]
    fn bounded_by_entries_and_bytes() {
        let per = entry_bytes(&decision(true, None));
        let by_entries = CacheConfig {
            max_entries: 100,
            max_bytes: 1 << 30,
            ..CacheConfig::default()
        };
        let by_bytes = CacheConfig {
            max_entries: 1 << 20,
            max_bytes: (per * 50) as usize,
            ..CacheConfig::default()
        };
        for (config, limit) in [(by_entries, 100), (by_bytes, 50)] {
            for (mut c, _) in both(config) {
                for i in 0..10_000u128 {
                    c.insert(CacheKey(i), decision(true, None), Sensitivity::Low);
                }
                assert!(c.len() <= limit, "{} entries > {limit} ({c:?})", c.len());
                assert!(c.len() >= limit / 2, "{} entries, far under {limit}", c.len());
                assert!(c.bytes() <= (limit as u64) * per.max(config.max_bytes as u64 / config.max_entries as u64));
            }
        }
    }

    #[test]
    fn clear_and_remove() {
        for (mut c, _) in both(CacheConfig::default()) {
            c.insert(CacheKey(1), decision(true, None), Sensitivity::Low);
            c.insert(CacheKey(2), decision(true, None), Sensitivity::Low);
            c.remove(CacheKey(1));
            assert!(c.get(CacheKey(1)).is_none());
            assert!(c.get(CacheKey(2)).is_some());
            c.clear();
            assert!(c.is_empty());
            assert_eq!(c.bytes(), 0);
            assert_eq!(c.stats().hits, 1);
        }
    }

    #[test]
    fn tagged_entries_are_invalidated_by_tag_and_the_index_stays_bounded() {
        let clock = Clock::new();
        let mut c = DecisionCache::new(CacheConfig { max_entries: 8, ..CacheConfig::default() }, clock);
        let (alice, bob, db) = (tag("user", "alice"), tag("user", "bob"), tag("tool", "db"));
        c.insert_tagged(CacheKey(1), decision(true, None), Sensitivity::Low, &[alice, db, 0]);
        c.insert_tagged(CacheKey(2), decision(true, None), Sensitivity::Low, &[bob, db, 0]);
        c.insert_tagged(CacheKey(3), decision(true, None), Sensitivity::Low, &[bob, 0, 0]);
        assert_eq!(c.invalidate_tag(alice), 1);
        assert!(c.get(CacheKey(1)).is_none() && c.get(CacheKey(2)).is_some());
        assert_eq!(c.invalidate_tag(db), 1, "key 1 is gone already; key 2 goes");
        assert!(c.get(CacheKey(3)).is_some());
        assert_eq!(c.invalidate_tag(tag("server", "none")), 0);
        // Many inserts into a small cache: the index is pruned of evicted keys.
        for k in 10..1000 {
            c.insert_tagged(CacheKey(k), decision(true, None), Sensitivity::Low, &[bob, 0, 0]);
        }
        assert!(c.index_len <= 4 * 8 + 3, "{}", c.index_len);
        assert!(c.invalidate_tag(bob) >= 1);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn keys_cached_again_after_expiring_do_not_grow_the_index_past_its_bound() {
        // The soak's hot set: the same keys expire and are cached again, cycle after
        // cycle, under a handful of shared tags (one tool, one server).
        let (clock, mock) = Clock::mock();
        let mut c = DecisionCache::new(CacheConfig { max_entries: 64, ..CacheConfig::default() }, clock);
        let (tool, server) = (tag("tool", "db"), tag("server", "s1"));
        for _cycle in 0..50 {
            for k in 0..64 {
                let key = CacheKey(k);
                assert!(c.get(key).is_none());
                c.insert_tagged(key, decision(true, None), Sensitivity::Low, &[tag("user", &k.to_string()), tool, server]);
            }
            mock.increment(Duration::from_secs(601));
        }
        assert!(c.index_len <= 4 * 64 + 3, "the index holds {} keys for 64 entries", c.index_len);
        let listed: usize = c.index.values().map(Vec::len).sum();
        assert_eq!(listed, c.index_len);
        assert!(c.index.get(&tool).is_some_and(|v| v.len() <= 2 * 64), "the tool's list holds repeats: {:?}", c.index.get(&tool).map(Vec::len));
        assert!(!c.index.contains_key(&0), "tag 0 (no such field) is never listed");
    }

    #[test]
    fn evictions_are_counted_by_sensitivity_and_replacements_are_not() {
        for (mut c, _) in both(CacheConfig { max_entries: 8, ..CacheConfig::default() }) {
            for i in 0..100u128 {
                c.insert(CacheKey(i), decision(true, None), if i % 2 == 0 { Sensitivity::High } else { Sensitivity::Low });
            }
            let e = c.stats().evictions;
            assert_eq!(e.iter().sum::<u64>() + c.len() as u64, 100, "every insert is live or was evicted: {e:?} ({c:?})");
            assert!(e[Sensitivity::High as usize] > 30 && e[Sensitivity::Low as usize] > 30, "{e:?}");
            c.clear();
            let before = c.stats().evictions;
            for _ in 0..5 {
                c.insert(CacheKey(7), decision(true, None), Sensitivity::Low);
            }
            assert_eq!(c.stats().evictions, before, "replacing a key evicts nothing ({c:?})");
        }
    }
}
