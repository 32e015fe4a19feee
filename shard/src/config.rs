//! `sark-pdp serve --config pdp.toml`: the settings file. Every key is optional; a flag
//! (or its environment variable) overrides the file, and the file overrides the defaults.
//! SARK's `POLICY_CACHE_TTL_*` variables override `[cache.ttl]`. Unknown keys are refused,
//! so a misspelt setting is an error rather than a silent default. Relative paths are
//! resolved against the file's directory.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:7474"
//! shard_ports = "auto"       # each shard's own port: listen port + 1 + shard; "off"; or a base port
//! shards = 3                 # default: cores - 1, at least 1
//! max_connections = 10000    # per shard
//! idle_timeout_s = 300
//! max_in_flight = 1024       # requests answered per connection before replies are written
//! max_payload = 1048576      # bytes per frame
//! caller_token = "…"         # ≥ 16 characters: callers must present it (or SARK_PDP_CALLER_TOKEN)
//! allow_explain = "notes"    # the most a caller may ask explained: off | notes | full (rule trace, data included)
//!
//! [tls]                      # TLS on every listener (off without cert and key)
//! cert = "pdp.crt"           # PEM chain, server certificate first (or SARK_PDP_TLS_CERT)
//! key = "pdp.key"            # PEM private key (or SARK_PDP_TLS_KEY)
//! client_ca = "callers.crt"  # optional: mutual TLS, callers' certificates must chain to it
//!
//! [http]
//! listen = "127.0.0.1:8181"  # or "off"
//! max_header_bytes = 16384
//! max_body_bytes = 1048576
//! request_timeout_s = 10     # first byte to last of one request (slowloris)
//! max_requests_per_connection = 100000
//!
//! [ext_authz]               # Envoy's gRPC Authorization/Check (shard/EXT_AUTHZ.md); off without listen
//! listen = "127.0.0.1:9191"  # or SARK_PDP_EXT_AUTHZ_LISTEN / --ext-authz-listen
//! timeout_ms = 500           # a Check not decided by then is a 503 deny
//! queue = 4096               # Checks waiting per shard; past it a 503 deny
//! [ext_authz.map]            # input field = sources tried in order (replaces that field's default)
//! "user.id" = ["metadata:envoy.filters.http.jwt_authn/jwt_payload/sub"]
//! "tool.name" = ["context:sark_tool", "body:/params/name"]
//!
//! [admin]
//! listen = "127.0.0.1:8282"
//! token = "…"                # ≥ 16 characters; without it the admin API is off
//!
//! [sinks.splunk]             # ship the audit log to Splunk HEC (pdp/src/sink.rs)
//! url = "http://splunk:8088" # or SPLUNK_HEC_URL; http:// only
//! token = "…"                # or SPLUNK_HEC_TOKEN
//! index = "sark_audit"       # or SPLUNK_INDEX
//! batch = 100                # records per request, at most 1000 (SIEM_BATCH_SIZE)
//! max_wait_s = 5             # a partial batch goes after this (SIEM_BATCH_TIMEOUT_SECONDS)
//! timeout_s = 10             # connect and each request (SPLUNK_TIMEOUT_SECONDS)
//! breaker_failures = 5       # failures in a row that open the breaker (SIEM_CIRCUIT_FAILURE_THRESHOLD)
//! breaker_open_s = 60        # then one try after this (SIEM_CIRCUIT_RECOVERY_TIMEOUT)
//! max_lag_bytes = 1073741824 # unshipped log past this raises sark_pdp_sink_lag_alarm
//!
//! [sinks.datadog]            # ship the audit log to Datadog's log intake; the same
//! url = "http://datadog-agent:8080"  # batch/timeout/breaker keys (DATADOG_URL)
//! api_key = "…"              # or DATADOG_API_KEY
//! service = "sark-pdp"       # or DATADOG_SERVICE
//! tags = "team:sec"          # ddtags; DATADOG_ENVIRONMENT adds env:…
//!
//! [sinks.postgres]           # rows of policy_decision_logs (pdp/src/sink_postgres.rs); the
//! url = "postgresql://sark@db/sark"  # same batch/timeout/breaker keys, batch up to 10000
//! node_id = "pdp-1"          # default: --node-id, else the host name
//!
//! [bundle]
//! path = "policies"          # directory or OPA bundle .tar.gz; default: the embedded bundle
//! max_instructions = 1000000 # RVM instructions per evaluation
//! poll_url = "http://bundles.internal:8888/sark.tar.gz"  # an OPA-style bundle server (optional)
//! poll_interval_s = 30       # polled with If-None-Match; a new bundle is validated, then swapped
//! watch = false              # reload when a file in the `path` directory changes
//!
//! [bundle.jwks]              # JWKS files, read at every (re)load: each is the string
//! idp = "/etc/sark-pdp/idp.jwks.json"  # data.sark_pdp.jwks.idp, for io.jwt.decode_verify's cert
//!
//! [audit]
//! dir = "sark-pdp-audit"     # segments audit-<first seq>.jsonl (pdp/src/audit_log.rs)
//! durability = "batch"       # none | batch | sync
//! commit_interval_ms = 10    # batch: fdatasync at least this often…
//! commit_records = 4096      # …or after this many records
//! segment_bytes = 67108864   # rotate a segment at this size…
//! segment_age_s = 3600       # …or this age
//! on_full = "block"          # a full ring pauses the shard; "drop" answers and counts
//! io = "auto"               # io_uring where allowed, else write/fdatasync; "plain": never io_uring
//! retention_days = 30        # delete closed segments older than this… (default: keep)
//! retention_bytes = 10737418240  # …or beyond this total size (default: no bound)
//! ring = 65536               # records per shard ring
//!
//! [cache]
//! max_entries = 65536        # per shard
//! max_bytes = 67108864       # per shard
//! eviction = "s3fifo"        # or "lru"
//! [cache.ttl]                # seconds per tool sensitivity
//! low = 600
//! medium = 300
//! high = 60
//! critical = 30
//! default = 300
//! [cache.refresh]            # refresh ahead: a hit in the last fraction of its TTL is served,
//! low = 0.25                 # and the question evaluated again right after on the same core
//! medium = 0.25              # (0: off). Critical is off by default: README, "Cache warmth"
//! high = 0.25
//! critical = 0
//! default = 0.25
//! [cache.adaptive]           # off without start: an entry starts with start x its TTL and
//! start = 0.25               # hits extend it, never past its TTL or the policy's cache_ttl_s
//! [cache.prewarm]            # off without top: at start and after a bundle swap, warm each
//! top = 10000                # shard with its share of the most frequent recent questions,
//! minutes = 10               # read from the audit log's tail (records then carry the question
//! max_mib = 256              # as a last `replay` field, which the sinks do not ship)
//! parameters = false         # also keep questions that carry parameters (may hold secrets)
//! before_serving = false     # true: each shard warms fully before it accepts connections
//!
//! [metrics]
//! stage_sample = 64          # time 1 decision in 64 stage by stage (sark_pdp_stage_duration_seconds); 0: off
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pdp::cache::{CacheConfig, Eviction};
use pdp::config::TtlConfig;
use serde::Deserialize;

/// The largest settings file read.
const MAX_FILE: u64 = 1 << 20;

/// The settings file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub server: ServerSection,
    pub sinks: SinksSection,
    pub http: HttpSection,
    pub admin: AdminSection,
    pub bundle: BundleSection,
    pub audit: AuditSection,
    pub cache: CacheSection,
    pub tls: TlsSection,
    pub ext_authz: ExtAuthzSection,
    pub metrics: MetricsSection,
}

/// `[metrics]`: what `/metrics` measures beyond counting.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// One decision in this many is timed stage by stage ([`crate::stages`]); 0: none.
    pub stage_sample: Option<u32>,
}

impl MetricsSection {
    /// `stage_sample`, default [`crate::stages::DEFAULT_SAMPLE`].
    ///
    /// # Errors
    /// Past 2^20 (a rate that rare measures nothing).
    pub fn stage_sample(&self) -> anyhow::Result<u32> {
        in_range("metrics.stage_sample", self.stage_sample.unwrap_or(crate::stages::DEFAULT_SAMPLE), 0, 1 << 20)
    }
}

/// `[ext_authz]`: Envoy's external authorization gRPC service.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtAuthzSection {
    pub listen: Option<String>,
    pub timeout_ms: Option<u64>,
    pub queue: Option<usize>,
    /// Input field → sources (see [`crate::ext_authz::Source`]).
    pub map: std::collections::BTreeMap<String, Vec<String>>,
}

impl ExtAuthzSection {
    /// The service's settings: `flag` (an address or "off") over the file's `listen`; off
    /// when neither is given.
    ///
    /// # Errors
    /// An address that does not parse, a limit out of range, or a mapping that names an
    /// unknown field or source.
    pub fn resolve(&self, flag: Option<&str>, tls: Option<crate::tls::TlsFiles>) -> anyhow::Result<Option<crate::ext_authz::ExtAuthzConfig>> {
        let Some(listen) = flag.or(self.listen.as_deref()) else { return Ok(None) };
        if listen.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let addr: SocketAddr = listen.parse().map_err(|e| anyhow::anyhow!("ext_authz listen address {listen:?}: {e}"))?;
        let d = crate::ext_authz::ExtAuthzConfig::new(addr);
        let timeout_ms = in_range("ext_authz.timeout_ms", self.timeout_ms.unwrap_or(d.timeout.as_millis() as u64), 1, 60_000)?;
        Ok(Some(crate::ext_authz::ExtAuthzConfig {
            timeout: Duration::from_millis(timeout_ms),
            queue: in_range("ext_authz.queue", self.queue.unwrap_or(d.queue), 1, 1 << 20)?,
            mapping: crate::ext_authz::Mapping::with(&self.map).map_err(anyhow::Error::msg)?,
            tls,
            ..d
        }))
    }
}

/// `[tls]`: TLS on every listener (binary, HTTP, admin); `client_ca` asks callers for a
/// certificate that chains to it (mutual TLS).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
}

impl TlsSection {
    /// The files, flags (`Some`) over the file's keys; `None`: TLS is off.
    ///
    /// # Errors
    /// A certificate without a key or the other way round, or a client CA without either.
    pub fn resolve(&self, cert: Option<PathBuf>, key: Option<PathBuf>, client_ca: Option<PathBuf>) -> anyhow::Result<Option<crate::tls::TlsFiles>> {
        let cert = cert.or_else(|| self.cert.clone());
        let key = key.or_else(|| self.key.clone());
        let client_ca = client_ca.or_else(|| self.client_ca.clone());
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsFiles { cert, key, client_ca })),
            (None, None) if client_ca.is_none() => Ok(None),
            (None, None) => anyhow::bail!("a TLS client CA needs TLS itself: give the certificate and key too"),
            (Some(_), None) => anyhow::bail!("a TLS certificate needs its key (--tls-key or [tls] key)"),
            (None, Some(_)) => anyhow::bail!("a TLS key needs its certificate (--tls-cert or [tls] cert)"),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: Option<SocketAddr>,
    /// Each shard's own port: "auto" (the listen port + 1 + shard), "off", or a base port.
    pub shard_ports: Option<String>,
    pub shards: Option<usize>,
    pub max_connections: Option<usize>,
    pub idle_timeout_s: Option<u64>,
    pub max_in_flight: Option<usize>,
    pub max_payload: Option<u32>,
    /// At least 16 characters; callers present it in HELLO or as a bearer token.
    pub caller_token: Option<String>,
    /// `--allow-explain`: off, notes (default) or full.
    pub allow_explain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksSection {
    pub splunk: Option<SinkSection>,
    pub datadog: Option<SinkSection>,
    pub postgres: Option<SinkSection>,
}

/// `[sinks.splunk]`, `[sinks.datadog]`, `[sinks.postgres]`: ship the audit log there. Which
/// keys each takes is checked in [`SinksSection::resolve`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkSection {
    /// `http://host:port` (Splunk's collector, Datadog's intake or a local agent), or a
    /// PostgreSQL connection string.
    pub url: Option<String>,
    /// Splunk: the HEC token, and the index.
    pub token: Option<String>,
    pub index: Option<String>,
    /// Datadog: the API key, `service` and `ddtags`.
    pub api_key: Option<String>,
    pub service: Option<String>,
    pub tags: Option<String>,
    /// PostgreSQL: whose rows and cursor these are (default: `--node-id`, else the host name).
    pub node_id: Option<String>,
    /// Records per batch (SARK: 100; at most 1000, 10000 for PostgreSQL).
    pub batch: Option<usize>,
    /// Seconds a partial batch may wait (SARK: 5).
    pub max_wait_s: Option<u64>,
    /// Seconds to connect and for each request or statement.
    pub timeout_s: Option<u64>,
    /// Failures in a row that open the circuit breaker (SARK: 5), and seconds it stays
    /// open (SARK: 60).
    pub breaker_failures: Option<u32>,
    pub breaker_open_s: Option<u64>,
    /// Unshipped log bytes that raise `sark_pdp_sink_lag_alarm` (default 1 GiB).
    pub max_lag_bytes: Option<u64>,
}

/// Where a sink ships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkKind {
    Splunk { token: String, index: String },
    Datadog { api_key: String, service: String, tags: String },
    Postgres { node_id: String },
}

/// One sink, resolved and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSettings {
    pub url: String,
    pub kind: SinkKind,
    pub batch: usize,
    pub max_wait: Duration,
    pub timeout: Duration,
    pub breaker_failures: u32,
    pub breaker_open: Duration,
    pub max_lag_bytes: u64,
}

impl SinkSettings {
    pub fn name(&self) -> &'static str {
        match self.kind {
            SinkKind::Splunk { .. } => "splunk",
            SinkKind::Datadog { .. } => "datadog",
            SinkKind::Postgres { .. } => "postgres",
        }
    }
}

impl SinksSection {
    /// The sinks to run: each section, with SARK's variables from `env` over it — Splunk's
    /// `SPLUNK_HEC_URL` (a path `/services/collector[/event]` is cut), `SPLUNK_HEC_TOKEN`,
    /// `SPLUNK_INDEX`, `SPLUNK_TIMEOUT_SECONDS`; Datadog's `DATADOG_API_KEY`,
    /// `DATADOG_SERVICE`, `DATADOG_ENVIRONMENT` (adds the tag `env:…`),
    /// `DATADOG_TIMEOUT_SECONDS`, and `DATADOG_URL` (ours: SARK derives the intake from
    /// `DATADOG_SITE`, over TLS, which this build does not speak); for both SIEMs
    /// `SIEM_BATCH_SIZE`, `SIEM_BATCH_TIMEOUT_SECONDS`, `SIEM_CIRCUIT_FAILURE_THRESHOLD`,
    /// `SIEM_CIRCUIT_RECOVERY_TIMEOUT`. The variables alone turn a SIEM on (URL and
    /// token or key). `node_id` is PostgreSQL's default node id.
    ///
    /// # Errors
    /// A required key missing, a key the sink does not take, a URL of the wrong scheme, or
    /// a value out of range, each named.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>, node_id: &str) -> anyhow::Result<Vec<SinkSettings>> {
        let num = |var: &str| -> anyhow::Result<Option<u64>> {
            env(var).map(|v| v.trim().parse::<u64>().map_err(|e| anyhow::anyhow!("{var}={v:?}: {e}"))).transpose()
        };
        let mut out = Vec::new();
        // Splunk.
        let mut splunk = self.splunk.clone();
        let hec_url = env("SPLUNK_HEC_URL").map(|u| {
            let u = u.trim().trim_end_matches('/');
            u.strip_suffix("/services/collector/event").or_else(|| u.strip_suffix("/services/collector")).unwrap_or(u).to_string()
        });
        if splunk.is_some() || hec_url.is_some() || env("SPLUNK_HEC_TOKEN").is_some() {
            let s = splunk.get_or_insert_with(SinkSection::default);
            s.url = hec_url.or(s.url.take());
            s.token = env("SPLUNK_HEC_TOKEN").or(s.token.take());
            s.index = env("SPLUNK_INDEX").or(s.index.take());
            s.timeout_s = num("SPLUNK_TIMEOUT_SECONDS")?.or(s.timeout_s);
            siem_env(s, &num)?;
        }
        if let Some(s) = &splunk {
            only(s, "splunk", &["token", "index"])?;
            let kind = SinkKind::Splunk { token: required(&s.token, "sinks.splunk.token (or SPLUNK_HEC_TOKEN)")?, index: s.index.clone().unwrap_or_else(|| "sark_audit".into()) };
            out.push(settings(s, "splunk", kind, 1000)?);
        }
        // Datadog.
        let mut datadog = self.datadog.clone();
        if datadog.is_some() || env("DATADOG_API_KEY").is_some() || env("DATADOG_URL").is_some() {
            let s = datadog.get_or_insert_with(SinkSection::default);
            s.url = env("DATADOG_URL").or(s.url.take());
            s.api_key = env("DATADOG_API_KEY").or(s.api_key.take());
            s.service = env("DATADOG_SERVICE").or(s.service.take());
            if let Some(e) = env("DATADOG_ENVIRONMENT") {
                let tags = s.tags.take().unwrap_or_default();
                s.tags = Some(if tags.is_empty() { format!("env:{e}") } else { format!("{tags},env:{e}") });
            }
            s.timeout_s = num("DATADOG_TIMEOUT_SECONDS")?.or(s.timeout_s);
            siem_env(s, &num)?;
        }
        if let Some(s) = &datadog {
            only(s, "datadog", &["api_key", "service", "tags"])?;
            let kind = SinkKind::Datadog {
                api_key: required(&s.api_key, "sinks.datadog.api_key (or DATADOG_API_KEY)")?,
                service: s.service.clone().unwrap_or_else(|| "sark-pdp".into()),
                tags: s.tags.clone().unwrap_or_default(),
            };
            out.push(settings(s, "datadog", kind, 1000)?);
        }
        // PostgreSQL.
        if let Some(s) = &self.postgres {
            only(s, "postgres", &["node_id"])?;
            let node_id = s.node_id.clone().unwrap_or_else(|| node_id.to_string());
            anyhow::ensure!(!node_id.is_empty() && node_id.len() <= 200, "sinks.postgres.node_id: 1 to 200 characters");
            out.push(settings(s, "postgres", SinkKind::Postgres { node_id }, 10_000)?);
        }
        Ok(out)
    }
}

/// SARK's `SIEM_*` variables over a SIEM sink's section.
fn siem_env(s: &mut SinkSection, num: &dyn Fn(&str) -> anyhow::Result<Option<u64>>) -> anyhow::Result<()> {
    if let Some(b) = num("SIEM_BATCH_SIZE")? {
        s.batch = Some(usize::try_from(b).unwrap_or(usize::MAX));
    }
    s.max_wait_s = num("SIEM_BATCH_TIMEOUT_SECONDS")?.or(s.max_wait_s);
    if let Some(f) = num("SIEM_CIRCUIT_FAILURE_THRESHOLD")? {
        s.breaker_failures = Some(u32::try_from(f).unwrap_or(u32::MAX));
    }
    s.breaker_open_s = num("SIEM_CIRCUIT_RECOVERY_TIMEOUT")?.or(s.breaker_open_s);
    Ok(())
}

fn required(v: &Option<String>, name: &str) -> anyhow::Result<String> {
    v.clone().filter(|v| !v.is_empty()).ok_or_else(|| anyhow::anyhow!("{name} is required"))
}

/// Refuse the sink-specific keys that belong to another sink.
fn only(s: &SinkSection, sink: &str, allowed: &[&str]) -> anyhow::Result<()> {
    let given = [
        ("token", s.token.is_some()),
        ("index", s.index.is_some()),
        ("api_key", s.api_key.is_some()),
        ("service", s.service.is_some()),
        ("tags", s.tags.is_some()),
        ("node_id", s.node_id.is_some()),
    ];
    for (key, set) in given {
        anyhow::ensure!(!set || allowed.contains(&key), "sinks.{sink}.{key}: not a setting of this sink");
    }
    Ok(())
}

/// The settings every sink shares, checked.
fn settings(s: &SinkSection, sink: &str, kind: SinkKind, max_batch: usize) -> anyhow::Result<SinkSettings> {
    let url = required(&s.url, &format!("sinks.{sink}.url"))?;
    match kind {
        SinkKind::Postgres { .. } => anyhow::ensure!(
            url.starts_with("postgres://") || url.starts_with("postgresql://") || url.contains('='),
            "sinks.postgres.url {url:?}: expected postgresql://… or host=… port=…"
        ),
        _ => anyhow::ensure!(url.starts_with("http://"), "sinks.{sink}.url {url:?}: only http:// is supported (put a TLS proxy or agent in between)"),
    }
    Ok(SinkSettings {
        url,
        kind,
        batch: in_range(&format!("sinks.{sink}.batch"), s.batch.unwrap_or(100), 1, max_batch)?,
        max_wait: Duration::from_secs(in_range(&format!("sinks.{sink}.max_wait_s"), s.max_wait_s.unwrap_or(5), 1, 3600)?),
        timeout: Duration::from_secs(in_range(&format!("sinks.{sink}.timeout_s"), s.timeout_s.unwrap_or(10), 1, 300)?),
        breaker_failures: in_range(&format!("sinks.{sink}.breaker_failures"), s.breaker_failures.unwrap_or(5), 1, 1000)?,
        breaker_open: Duration::from_secs(in_range(&format!("sinks.{sink}.breaker_open_s"), s.breaker_open_s.unwrap_or(60), 1, 86_400)?),
        max_lag_bytes: in_range(&format!("sinks.{sink}.max_lag_bytes"), s.max_lag_bytes.unwrap_or(1 << 30), 1 << 20, u64::MAX)?,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub listen: Option<SocketAddr>,
    /// At least 16 characters; without it the admin API is off.
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// An address, or "off".
    pub listen: Option<String>,
    pub max_header_bytes: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub request_timeout_s: Option<u64>,
    pub max_requests_per_connection: Option<usize>,
}

impl HttpSection {
    /// The HTTP front door: `flag` (an address or "off") over the file's `listen` over
    /// 127.0.0.1:8181, with the file's limits.
    ///
    /// # Errors
    /// An address that does not parse, or a limit out of range.
    pub fn resolve(&self, flag: Option<&str>) -> anyhow::Result<Option<crate::http::HttpConfig>> {
        let listen = flag.or(self.listen.as_deref()).unwrap_or("127.0.0.1:8181");
        if listen.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let addr: SocketAddr = listen.parse().map_err(|e| anyhow::anyhow!("http listen address {listen:?}: {e}"))?;
        let d = crate::http::HttpConfig::new(addr);
        Ok(Some(crate::http::HttpConfig {
            listen: addr,
            max_header_bytes: in_range("http.max_header_bytes", self.max_header_bytes.unwrap_or(d.max_header_bytes), 1024, 1 << 20)?,
            max_body_bytes: in_range("http.max_body_bytes", self.max_body_bytes.unwrap_or(d.max_body_bytes), 1024, 64 << 20)?,
            request_timeout: Duration::from_secs(in_range("http.request_timeout_s", self.request_timeout_s.unwrap_or(d.request_timeout.as_secs()), 1, 3600)?),
            max_requests_per_connection: in_range(
                "http.max_requests_per_connection",
                self.max_requests_per_connection.unwrap_or(d.max_requests_per_connection),
                1,
                usize::MAX,
            )?,
        }))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BundleSection {
    pub path: Option<PathBuf>,
    pub max_instructions: Option<usize>,
    /// An OPA-style bundle server to poll (`http://host:port/path` of a bundle .tar.gz).
    pub poll_url: Option<String>,
    pub poll_interval_s: Option<u64>,
    /// Reload when a file in the bundle directory changes.
    pub watch: Option<bool>,
    /// `[bundle.jwks]` name = JWKS file: each at `data.sark_pdp.jwks.<name>` (a string) in
    /// every bundle, for `io.jwt.decode_verify(token, {"cert": data.sark_pdp.jwks.<name>})`.
    pub jwks: crate::control::ConfigJwks,
}

impl BundleSection {
    /// The bundle server to poll: the flags over the file.
    ///
    /// # Errors
    /// A URL that is not `http://…`, or an interval out of range.
    pub fn poll(&self, url: Option<String>, interval_s: Option<u64>) -> anyhow::Result<Option<crate::control::BundlePoll>> {
        let Some(url) = url.or(self.poll_url.clone()) else { return Ok(None) };
        anyhow::ensure!(url.starts_with("http://"), "bundle poll URL {url:?}: only http:// is supported");
        let interval = in_range("bundle.poll_interval_s", interval_s.or(self.poll_interval_s).unwrap_or(30), 1, 86_400)?;
        Ok(Some(crate::control::BundlePoll { url, interval: Duration::from_secs(interval) }))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    pub dir: Option<PathBuf>,
    pub durability: Option<String>,
    pub commit_interval_ms: Option<u64>,
    pub commit_records: Option<usize>,
    pub segment_bytes: Option<u64>,
    pub segment_age_s: Option<u64>,
    pub on_full: Option<String>,
    pub retention_days: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub io: Option<String>,
    pub ring: Option<usize>,
}

impl AuditSection {
    /// The audit log's settings: `dir` and `durability` flags over the file over the
    /// defaults; and whether a full ring drops.
    ///
    /// # Errors
    /// An unknown durability or on_full, or a value out of range.
    pub fn resolve(&self, dir: Option<PathBuf>, durability: Option<&str>, on_full: Option<&str>) -> anyhow::Result<(pdp::audit_log::LogConfig, bool)> {
        let mut c = pdp::audit_log::LogConfig::new(dir.or(self.dir.clone()).unwrap_or_else(|| "sark-pdp-audit".into()));
        let d = durability.or(self.durability.as_deref()).unwrap_or("batch");
        c.durability = pdp::audit_log::Durability::parse(d).ok_or_else(|| anyhow::anyhow!("audit durability {d:?}: expected none, batch or sync"))?;
        c.commit_interval = Duration::from_millis(in_range("audit.commit_interval_ms", self.commit_interval_ms.unwrap_or(10), 1, 60_000)?);
        c.commit_records = in_range("audit.commit_records", self.commit_records.unwrap_or(4096), 1, 1 << 24)?;
        c.segment_bytes = in_range("audit.segment_bytes", self.segment_bytes.unwrap_or(64 << 20), 4096, 1 << 40)?;
        c.segment_age = Duration::from_secs(in_range("audit.segment_age_s", self.segment_age_s.unwrap_or(3600), 1, 365 * 86_400)?);
        c.plain_io = match self.io.as_deref().unwrap_or("auto") {
            "auto" => false,
            "plain" => true,
            other => anyhow::bail!("audit io {other:?}: expected auto or plain"),
        };
        if let Some(days) = self.retention_days {
            c.retention_age = Some(Duration::from_secs(in_range("audit.retention_days", days, 1, 36_500)? * 86_400));
        }
        if let Some(bytes) = self.retention_bytes {
            c.retention_bytes = Some(in_range("audit.retention_bytes", bytes, 1 << 20, u64::MAX)?);
        }
        if let Some(ms) = std::env::var("SARK_PDP_FAULT_AUDIT_DELAY_MS").ok().and_then(|v| v.parse().ok()) {
            c.fault_delay = Duration::from_millis(ms);
        }
        let drop = match on_full.or(self.on_full.as_deref()).unwrap_or("block") {
            "block" => false,
            "drop" => true,
            other => anyhow::bail!("audit on_full {other:?}: expected block or drop"),
        };
        Ok((c, drop))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    pub max_entries: Option<usize>,
    pub max_bytes: Option<usize>,
    pub eviction: Option<EvictionName>,
    pub ttl: TtlSection,
    /// Refresh ahead: per sensitivity, the last fraction of the TTL in which a hit has the
    /// question evaluated again (0: off; default 0.25, critical 0).
    pub refresh: RefreshSection,
    /// Adaptive TTL (off without `start`).
    pub adaptive: AdaptiveSection,
    /// Pre-warming from the audit log (off without `top`).
    pub prewarm: PrewarmSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrewarmSection {
    /// Questions warmed in all, the most frequent first (each shard its share).
    pub top: Option<usize>,
    /// Minutes of the log read back (default 10).
    pub minutes: Option<u64>,
    /// MiB of the newest segments read at most (default 256).
    pub max_mib: Option<u64>,
    /// Keep questions with `parameters` in the log, so they can be warmed (default false:
    /// parameters may hold secrets; the sinks never ship them either way).
    pub parameters: Option<bool>,
    /// Warm each shard fully before it accepts connections (default false: warm while
    /// serving, in the time callers leave idle).
    pub before_serving: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshSection {
    pub low: Option<f64>,
    pub medium: Option<f64>,
    pub high: Option<f64>,
    pub critical: Option<f64>,
    pub default: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveSection {
    /// An entry starts with this fraction of its TTL; hits extend it up to the TTL.
    pub start: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvictionName {
    S3fifo,
    Lru,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtlSection {
    pub low: Option<u64>,
    pub medium: Option<u64>,
    pub high: Option<u64>,
    pub critical: Option<u64>,
    pub default: Option<u64>,
}

impl FileConfig {
    /// Read and parse a settings file; relative paths in it become relative to its
    /// directory.
    ///
    /// # Errors
    /// The file missing, over 1 MiB, not TOML, or holding an unknown key or a wrongly
    /// typed value (the message names the key and line).
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        anyhow::ensure!(meta.len() <= MAX_FILE, "{}: larger than {MAX_FILE} bytes", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut c: FileConfig = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for p in [&mut c.bundle.path, &mut c.audit.dir, &mut c.tls.cert, &mut c.tls.key, &mut c.tls.client_ca].into_iter().flatten() {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        Ok(c)
    }

    /// The cache settings: defaults, then this file, then `POLICY_CACHE_TTL_*` from `env`.
    ///
    /// # Errors
    /// A TTL out of range, a bad variable, or a zero bound.
    /// `[cache.prewarm]`, when `top` turns it on.
    ///
    /// # Errors
    /// A value out of its range.
    pub fn prewarm(&self) -> anyhow::Result<Option<crate::prewarm::PrewarmConfig>> {
        let p = &self.cache.prewarm;
        let Some(top) = p.top else {
            anyhow::ensure!(
                p.minutes.is_none() && p.max_mib.is_none() && p.parameters.is_none() && p.before_serving.is_none(),
                "cache.prewarm: set top (how many questions) to turn pre-warming on"
            );
            return Ok(None);
        };
        Ok(Some(crate::prewarm::PrewarmConfig {
            top: in_range("cache.prewarm.top", top, 1, 1_000_000)?,
            window: Duration::from_secs(60 * in_range("cache.prewarm.minutes", p.minutes.unwrap_or(10), 1, 24 * 60)?),
            max_bytes: in_range("cache.prewarm.max_mib", p.max_mib.unwrap_or(256), 1, 1 << 20)? << 20,
            parameters: p.parameters.unwrap_or(false),
            before_serving: p.before_serving.unwrap_or(false),
        }))
    }

    pub fn cache(&self, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<CacheConfig> {
        let d = CacheConfig::default();
        let t = &self.cache.ttl;
        let secs = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
        let ttl = TtlConfig {
            low: secs(t.low, d.ttl.low),
            medium: secs(t.medium, d.ttl.medium),
            high: secs(t.high, d.ttl.high),
            critical: secs(t.critical, d.ttl.critical),
            default: secs(t.default, d.ttl.default),
        };
        ttl.validate()?;
        let c = CacheConfig {
            max_entries: self.cache.max_entries.unwrap_or(d.max_entries),
            max_bytes: self.cache.max_bytes.unwrap_or(d.max_bytes),
            eviction: match self.cache.eviction {
                None => d.eviction,
                Some(EvictionName::S3fifo) => Eviction::S3Fifo,
                Some(EvictionName::Lru) => Eviction::Lru,
            },
            ttl: ttl.with_env(env)?,
            refresh: {
                let r = &self.cache.refresh;
                let mut fraction = d.refresh.fraction;
                for (slot, (name, v)) in fraction.iter_mut().zip([("low", r.low), ("medium", r.medium), ("high", r.high), ("critical", r.critical), ("default", r.default)]) {
                    if let Some(v) = v {
                        anyhow::ensure!((0.0..=1.0).contains(&v), "cache.refresh.{name} = {v}: a fraction of the TTL, 0 (off) to 1");
                        *slot = v;
                    }
                }
                pdp::cache::RefreshConfig { fraction }
            },
            adaptive: match self.cache.adaptive.start {
                None => None,
                Some(start) if start > 0.0 && start < 1.0 => Some(pdp::cache::AdaptiveTtl { start }),
                Some(start) => anyhow::bail!("cache.adaptive.start = {start}: a fraction of the TTL, above 0 and below 1"),
            },
        };
        anyhow::ensure!(c.max_entries >= 1, "cache.max_entries must be at least 1");
        anyhow::ensure!(c.max_bytes >= 4096, "cache.max_bytes must be at least 4096");
        Ok(c)
    }
}

/// A setting checked against its range, naming it when it is out.
///
/// # Errors
/// `value` outside `lo..=hi`.
pub fn in_range<T: PartialOrd + std::fmt::Display + Copy>(name: &str, value: T, lo: T, hi: T) -> anyhow::Result<T> {
    anyhow::ensure!(value >= lo && value <= hi, "{name} = {value}: must be between {lo} and {hi}");
    Ok(value)
}

/// The listen address when neither flag nor file gives one.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7474))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<FileConfig> {
        let dir = std::env::temp_dir().join(format!("sark-pdp-config-{}-{}", std::process::id(), text.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pdp.toml");
        std::fs::write(&path, text).unwrap();
        let c = FileConfig::load(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        c
    }

    #[test]
    fn the_stage_sample_defaults_to_64_and_zero_turns_it_off() {
        assert_eq!(FileConfig::default().metrics.stage_sample().unwrap(), 64);
        assert_eq!(parse("[metrics]\nstage_sample = 0\n").unwrap().metrics.stage_sample().unwrap(), 0);
        assert!(parse("[metrics]\nstage_sample = 2000000\n").unwrap().metrics.stage_sample().is_err());
        assert!(parse("[metrics]\nstage_samples = 1\n").is_err());
    }

    #[test]
    fn every_section_parses_and_paths_follow_the_file() {
        let c = parse(
            "[server]\nlisten = \"127.0.0.1:9000\"\nshards = 2\nmax_in_flight = 64\n\
             [bundle]\npath = \"policies\"\n[audit]\ndir = \"/var/log/sark\"\nring = 128\ndurability = \"sync\"\n\
             [cache]\neviction = \"lru\"\nmax_entries = 10\n[cache.ttl]\nhigh = 5\n",
        )
        .unwrap();
        assert_eq!(c.server.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!((c.server.shards, c.server.max_in_flight, c.audit.ring), (Some(2), Some(64), Some(128)));
        let bundle = c.bundle.path.as_ref().unwrap();
        assert!(bundle.is_absolute() && bundle.ends_with("policies"), "{bundle:?}");
        assert_eq!(c.audit.dir, Some(PathBuf::from("/var/log/sark")));
        let (log, drop) = c.audit.resolve(None, None, None).unwrap();
        assert_eq!((log.durability, drop), (pdp::audit_log::Durability::Sync, false));
        let (log, drop) = c.audit.resolve(Some("elsewhere".into()), Some("none"), Some("drop")).unwrap();
        assert_eq!((log.dir, log.durability, drop), (PathBuf::from("elsewhere"), pdp::audit_log::Durability::None, true));
        assert!(c.audit.resolve(None, Some("always"), None).unwrap_err().to_string().contains("durability"));
        let cache = c.cache(|_| None).unwrap();
        assert_eq!(cache.eviction, Eviction::Lru);
        assert_eq!(cache.max_entries, 10);
        assert_eq!(cache.ttl.high, Duration::from_secs(5));
        assert_eq!(cache.ttl.low, Duration::from_secs(600));
        // SARK's variable wins over the file.
        let cache = c.cache(|v| (v == "POLICY_CACHE_TTL_HIGH").then(|| "7".into())).unwrap();
        assert_eq!(cache.ttl.high, Duration::from_secs(7));
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("[server]\nshard = 2\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `shard`"), "{e}");
        let e = parse("[server]\nshards = \"two\"\n").unwrap_err().to_string();
        assert!(e.contains("shards"), "{e}");
        let e = parse("[cache]\neviction = \"fifo\"\n").unwrap_err().to_string();
        assert!(e.contains("fifo"), "{e}");
        let e = parse("[cache.ttl]\nlow = 99999999\n").unwrap().cache(|_| None).unwrap_err().to_string();
        assert!(e.contains("low"), "{e}");
        assert!(in_range("server.shards", 0usize, 1, 1024).unwrap_err().to_string().contains("server.shards = 0"));
    }

    #[test]
    fn sinks_come_from_the_file_and_sarks_variables() {
        let c = parse(
            "[sinks.splunk]\nurl = \"http://hec:8088\"\ntoken = \"t\"\nbatch = 50\n\
             [sinks.postgres]\nurl = \"host=db port=5432\"\nbatch = 10000\nbreaker_open_s = 5\n",
        )
        .unwrap();
        let none = |_: &str| None;
        let sinks = c.sinks.resolve(none, "node-7").unwrap();
        assert_eq!(sinks.len(), 2);
        let (splunk, pg) = (&sinks[0], &sinks[1]);
        assert_eq!(splunk.kind, SinkKind::Splunk { token: "t".into(), index: "sark_audit".into() });
        assert_eq!((splunk.batch, splunk.max_wait, splunk.breaker_failures, splunk.breaker_open), (50, Duration::from_secs(5), 5, Duration::from_secs(60)));
        assert_eq!(pg.kind, SinkKind::Postgres { node_id: "node-7".into() });
        assert_eq!((pg.batch, pg.breaker_open), (10_000, Duration::from_secs(5)));
        // SARK's variables win over the file, and alone turn Datadog on.
        let env = |v: &str| {
            match v {
                "SPLUNK_HEC_URL" => Some("http://other:8088/services/collector"),
                "SIEM_BATCH_SIZE" => Some("200"),
                "SIEM_CIRCUIT_FAILURE_THRESHOLD" => Some("3"),
                "SIEM_CIRCUIT_RECOVERY_TIMEOUT" => Some("10"),
                "DATADOG_API_KEY" => Some("k"),
                "DATADOG_URL" => Some("http://agent:8126"),
                "DATADOG_ENVIRONMENT" => Some("prod"),
                _ => None,
            }
            .map(String::from)
        };
        let sinks = c.sinks.resolve(env, "n").unwrap();
        assert_eq!(sinks.iter().map(SinkSettings::name).collect::<Vec<_>>(), ["splunk", "datadog", "postgres"]);
        assert_eq!(sinks[0].url, "http://other:8088");
        assert_eq!((sinks[0].batch, sinks[0].breaker_failures, sinks[0].breaker_open), (200, 3, Duration::from_secs(10)));
        assert_eq!(sinks[1].kind, SinkKind::Datadog { api_key: "k".into(), service: "sark-pdp".into(), tags: "env:prod".into() });
        // SIEM_* are for the SIEMs: PostgreSQL keeps its own.
        assert_eq!(sinks[2].batch, 10_000);
    }

    #[test]
    fn sink_mistakes_are_named() {
        let err = |text: &str, env: &dyn Fn(&str) -> Option<String>| parse(text).unwrap().sinks.resolve(env, "n").unwrap_err().to_string();
        let none = |_: &str| None;
        assert!(err("[sinks.splunk]\nurl = \"http://h:1\"\n", &none).contains("sinks.splunk.token"));
        assert!(err("[sinks.datadog]\nurl = \"http://h:1\"\napi_key = \"k\"\ntoken = \"t\"\n", &none).contains("sinks.datadog.token: not a setting"));
        assert!(err("[sinks.splunk]\nurl = \"https://h:1\"\ntoken = \"t\"\n", &none).contains("only http://"));
        assert!(err("[sinks.splunk]\nurl = \"http://h:1\"\ntoken = \"t\"\nbatch = 1001\n", &none).contains("sinks.splunk.batch = 1001"));
        assert!(err("[sinks.postgres]\nurl = \"mysql://x\"\n", &none).contains("sinks.postgres.url"));
        assert!(err("[sinks.postgres]\nurl = \"host=x\"\nbatch = 10001\n", &none).contains("sinks.postgres.batch"));
        let token_only = |v: &str| (v == "SPLUNK_HEC_TOKEN").then(|| "t".to_string());
        assert!(err("", &token_only).contains("sinks.splunk.url"));
        let bad = |v: &str| (v == "SIEM_BATCH_SIZE").then(|| "many".to_string());
        assert!(err("[sinks.splunk]\nurl = \"http://h:1\"\ntoken = \"t\"\n", &bad).contains("SIEM_BATCH_SIZE"));
        assert!(parse("[sinks.splunk]\nurl = \"http://h:1\"\ntokn = \"t\"\n").unwrap_err().to_string().contains("tokn"));
    }
}
