//! `GET /metrics`: every shard's counters, summed at scrape time, in the OpenMetrics text
//! format (prometheus-client). Nothing is shared on the request path: each shard writes
//! only its own cells ([`crate::server::ShardStats`]); a scrape reads them all.
//!
//! SARK's names are kept: `sark_policy_evaluations_total{sensitivity_level,result}`,
//! `sark_policy_cache_hits_total` / `sark_policy_cache_misses_total` /
//! `sark_policy_cache_stale_hits_total` (hits that asked for a refresh ahead) /
//! `sark_policy_cache_evictions_total{sensitivity_level,shard}`, `sark_pdp_cache_refreshes_total{shard,result}`,
//! `sark_pdp_cache_prewarmed_entries{shard}`, `sark_pdp_cache_prewarm_milliseconds{shard}`, `sark_pdp_cache_prewarms_total{shard}`,
//! `sark_policy_denials_total`; and the PDP's own, per shard: `sark_pdp_shard_info{shard,
//! driver}`, `sark_pdp_connections`, `sark_pdp_cache_entries`, `sark_pdp_audit_ring_depth`,
//! `sark_pdp_http_requests_total`, `sark_pdp_audit_info{durability,io}`,
//! `sark_pdp_bundle_changes_total{result}` (reloads and data writes, ok or refused), and `sark_pdp_audit_drops_total` (0 unless
//! `audit.on_full = "drop"`: by default a full ring pauses the shard, it never drops).
//! `sark_pdp_stage_duration_seconds{stage,shard}` is a histogram of the sampled decisions'
//! stages ([`crate::stages`]), built here from each shard's bucket counts.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::server::ShardStats;

const SENSITIVITIES: [&str; 5] = ["low", "medium", "high", "critical", "unknown"];
const RESULTS: [&str; 3] = ["allow", "deny", "error"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Evaluation {
    sensitivity_level: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelShard {
    sensitivity_level: &'static str,
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshResult {
    shard: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SinkLabel {
    pub(crate) sink: String,
}

/// `siem_batch_send_duration_seconds`, per sink: observed by the sink threads, read here.
pub(crate) type SinkHistograms = Family<SinkLabel, Histogram, fn() -> Histogram>;

/// A send's duration, 1 ms to 30 s.
pub(crate) fn send_seconds_histogram() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeResult {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditInfo {
    durability: &'static str,
    io: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardInfo {
    shard: String,
    driver: &'static str,
    bundle_revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageShard {
    stage: &'static str,
    shard: String,
}

/// `sark_pdp_stage_duration_seconds`: each shard's stage cells as histograms (sum, count,
/// per-bucket counts), read at scrape time. prometheus-client's own `Histogram` can only be
/// observed into, not filled from counts; its encoder writes these the same way
/// (cumulative `_bucket{le}`, `_sum`, `_count`).
#[derive(Debug, Default)]
struct StageHistograms(Vec<(StageShard, crate::stages::Snapshot)>);

impl EncodeMetric for StageHistograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, (sum, count, buckets)) in &self.0 {
            encoder.encode_family(labels)?.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn u(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The scrape.
pub(crate) fn render(all: &Arc<Vec<Arc<ShardStats>>>, revision: &str, durability: &'static str, io: &'static str, control: &crate::control::Control) -> String {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut r = Registry::default();
    let evaluations = Family::<Evaluation, Counter>::default();
    let denials = Counter::<u64>::default();
    let hits = Family::<LevelShard, Counter>::default();
    let misses = Family::<LevelShard, Counter>::default();
    let stale = Family::<LevelShard, Counter>::default();
    let evictions = Family::<LevelShard, Counter>::default();
    let refreshes = Family::<RefreshResult, Counter>::default();
    let prewarmed = Family::<ShardLabel, Gauge>::default();
    let prewarm_ms = Family::<ShardLabel, Gauge>::default();
    let prewarms = Family::<ShardLabel, Counter>::default();
    let info = Family::<ShardInfo, Gauge>::default();
    let connections = Family::<ShardLabel, Gauge>::default();
    let entries = Family::<ShardLabel, Gauge>::default();
    let depth = Family::<ShardLabel, Gauge>::default();
    let requests = Family::<ShardLabel, Counter>::default();
    let drops = Counter::<u64>::default();
    let bundle_changes = Family::<ChangeResult, Counter>::default();
    bundle_changes.get_or_create(&ChangeResult { result: "ok" }).inc_by(control.changes_ok.load(Ordering::Relaxed));
    bundle_changes.get_or_create(&ChangeResult { result: "refused" }).inc_by(control.changes_refused.load(Ordering::Relaxed));
    let sent = Family::<SinkLabel, Counter>::default();
    let dead = Family::<SinkLabel, Counter>::default();
    let failures = Family::<SinkLabel, Counter>::default();
    let breaker = Family::<SinkLabel, Gauge>::default();
    let cursor = Family::<SinkLabel, Gauge>::default();
    let lag = Family::<SinkLabel, Gauge>::default();
    let lag_seconds = Family::<SinkLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let lag_bytes = Family::<SinkLabel, Gauge>::default();
    let lag_alarm = Family::<SinkLabel, Gauge>::default();
    let now_ns = crate::server::now_ns();
    let next = control.log_next_seq.get().map_or(0, |n| n.load(Ordering::Acquire));
    for (name, st) in control.sinks.lock().map(|s| s.clone()).unwrap_or_default() {
        let l = SinkLabel { sink: name };
        sent.get_or_create(&l).inc_by(st.sent.load(Ordering::Relaxed));
        dead.get_or_create(&l).inc_by(st.dead_lettered.load(Ordering::Relaxed));
        failures.get_or_create(&l).inc_by(st.failures.load(Ordering::Relaxed));
        breaker.get_or_create(&l).set(i64::from(st.breaker_open.load(Ordering::Relaxed)));
        cursor.get_or_create(&l).set(u(st.cursor.load(Ordering::Relaxed)));
        lag.get_or_create(&l).set(u(next.saturating_sub(st.cursor.load(Ordering::Relaxed))));
        let oldest = i64::try_from(st.oldest_pending_ns.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        lag_seconds.get_or_create(&l).set(if oldest == 0 { 0.0 } else { now_ns.saturating_sub(oldest).max(0) as f64 / 1e9 });
        lag_bytes.get_or_create(&l).set(u(st.lag_bytes.load(Ordering::Relaxed)));
        lag_alarm.get_or_create(&l).set(i64::from(st.lag_alarm.load(Ordering::Relaxed)));
    }
    let mut stages = StageHistograms::default();
    let audit = Family::<AuditInfo, Gauge>::default();
    audit.get_or_create(&AuditInfo { durability, io }).set(1);
    for (i, st) in all.iter().enumerate() {
        for (s, level) in SENSITIVITIES.iter().enumerate() {
            for (k, result) in RESULTS.iter().enumerate() {
                let n = st.decisions.get(s).and_then(|row| row.get(k)).map_or(0, load);
                evaluations.get_or_create(&Evaluation { sensitivity_level: level, result }).inc_by(n);
                if *result != "allow" {
                    denials.inc_by(n);
                }
            }
            let l = LevelShard { sensitivity_level: level, shard: i.to_string() };
            hits.get_or_create(&l).inc_by(st.hits.get(s).map_or(0, load));
            misses.get_or_create(&l).inc_by(st.misses.get(s).map_or(0, load));
            stale.get_or_create(&l).inc_by(st.stale_hits.get(s).map_or(0, load));
            evictions.get_or_create(&l).inc_by(st.evictions.get(s).map_or(0, load));
        }
        refreshes.get_or_create(&RefreshResult { shard: i.to_string(), result: "evaluated" }).inc_by(load(&st.refreshed));
        refreshes.get_or_create(&RefreshResult { shard: i.to_string(), result: "dropped" }).inc_by(load(&st.refresh_dropped));
        let shard = ShardLabel { shard: i.to_string() };
        let driver = if st.io_uring.load(Ordering::Relaxed) { "io_uring" } else { "epoll" };
        info.get_or_create(&ShardInfo { shard: i.to_string(), driver, bundle_revision: revision.to_string() }).set(1);
        connections.get_or_create(&shard).set(u(load(&st.connections)));
        prewarmed.get_or_create(&shard).set(u(load(&st.prewarmed)));
        prewarm_ms.get_or_create(&shard).set(u(load(&st.prewarm_ms)));
        prewarms.get_or_create(&shard).inc_by(load(&st.prewarms));
        entries.get_or_create(&shard).set(u(load(&st.cache_entries)));
        depth.get_or_create(&shard).set(u(load(&st.ring_depth)));
        requests.get_or_create(&shard).inc_by(load(&st.http_requests));
        drops.inc_by(load(&st.audit_drops));
        for (s, stage) in crate::stages::STAGES.iter().enumerate() {
            stages.0.push((StageShard { stage, shard: i.to_string() }, st.stages.snapshot(s)));
        }
    }
    r.register("sark_policy_evaluations", "Decisions answered, by tool sensitivity and result", evaluations);
    r.register("sark_policy_denials", "Decisions that were not an allow (deny or error)", denials);
    r.register("sark_policy_cache_hits", "Decisions answered from a shard's cache", hits);
    r.register("sark_policy_cache_misses", "Decisions the evaluator made", misses);
    r.register("sark_policy_cache_stale_hits", "Hits in the last part of their TTL, served and then evaluated again (refresh ahead)", stale);
    r.register("sark_policy_cache_evictions", "Live cache entries pushed out to make room", evictions);
    r.register("sark_pdp_cache_refreshes", "Refreshes ahead: evaluated, or dropped because too many were waiting", refreshes);
    r.register("sark_pdp_cache_prewarmed_entries", "Entries the shard's last warm-up cached ([cache.prewarm])", prewarmed);
    r.register("sark_pdp_cache_prewarm_milliseconds", "How long the shard's last warm-up took", prewarm_ms);
    r.register("sark_pdp_cache_prewarms", "Warm-ups finished (at start and after each bundle swap)", prewarms);
    r.register("sark_pdp_shard_info", "One per shard: its I/O driver and bundle revision", info);
    r.register("sark_pdp_connections", "Open connections per shard (binary and HTTP)", connections);
    r.register("sark_pdp_cache_entries", "Entries in each shard's decision cache", entries);
    r.register("sark_pdp_audit_ring_depth", "Audit records waiting in each shard's ring", depth);
    r.register("sark_pdp_http_requests", "HTTP requests answered per shard", requests);
    r.register("sark_pdp_bundle_changes", "Bundle reloads and data writes, served or refused (refused ones change nothing)", bundle_changes);
    r.register("siem_events_sent", "Audit records acknowledged by each sink", sent);
    r.register("siem_events_dead_lettered", "Audit records a sink refused, kept in its dead-letter file", dead);
    r.register("siem_batch_failures", "Batches that failed and were retried", failures);
    r.register("sark_pdp_sink_breaker_open", "1 while a sink's circuit breaker is open", breaker);
    r.register("sark_pdp_sink_cursor", "The next audit sequence number each sink will ship", cursor);
    r.register("sark_pdp_sink_lag_records", "Audit records written but not yet shipped, per sink", lag);
    r.register("sark_pdp_sink_lag_seconds", "Age of the oldest audit record a sink has not had acknowledged (0: caught up)", lag_seconds);
    r.register("sark_pdp_sink_lag_bytes", "Audit log bytes a sink has not shipped (measured once a second)", lag_bytes);
    r.register("sark_pdp_sink_lag_alarm", "1 while a sink's unshipped bytes are past its max_lag_bytes (the log keeps them)", lag_alarm);
    r.register_with_unit(
        "siem_batch_send_duration",
        "How long each batch send took, per sink (failed ones included)",
        prometheus_client::registry::Unit::Seconds,
        control.sink_send_seconds.clone(),
    );
    r.register_with_unit(
        "sark_pdp_stage_duration",
        "Sampled decisions' time per stage of the decision path ([metrics] stage_sample: 1 in 64 by default)",
        prometheus_client::registry::Unit::Seconds,
        stages,
    );
    r.register("sark_pdp_audit_info", "The audit log's durability mode and how it writes", audit);
    r.register("sark_pdp_audit_drops", "Audit records dropped because a ring was full (only with audit.on_full = drop)", drops);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &r).is_err() {
        out = "# encoding failed\n# EOF\n".into();
    }
    out
}
