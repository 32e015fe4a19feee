//! Changes that must reach every shard — a new bundle, a cache invalidation — and the
//! acknowledgement that they have.
//!
//! A change is published with the next epoch. Each shard's watcher task looks at the epoch
//! every millisecond (one relaxed load: the request path pays nothing), applies what it has
//! not applied yet between two requests, then waits for the batches it was answering when
//! the change arrived to be written, and only then records the epoch as applied. So once
//! [`Control::wait`] returns, no shard answers from before the change.
//!
//! A bundle is validated before it is published ([`validate`]: load, compile, run its
//! cases), off the request path; one that fails changes nothing and its error is kept for
//! `/health?bundles` and the log.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pdp::bundle::{Bundle, BundleLimits};
use pdp::eval::{CompiledBundle, EnginePreference, EvalLimits, Evaluator};

/// One change for every shard.
#[derive(Clone)]
pub enum Change {
    /// Serve this bundle from now on (with an empty cache: keys carry the revision).
    Swap(Arc<CompiledBundle>),
    /// Forget every cached decision.
    InvalidateAll,
    /// Forget the decisions made for these tags ([`pdp::cache::tag`]: a user id, a tool
    /// name, a server id).
    Invalidate(Vec<u64>),
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Swap(b) => write!(f, "Swap({})", b.revision),
            Change::InvalidateAll => f.write_str("InvalidateAll"),
            Change::Invalidate(tags) => write!(f, "Invalidate({} tags)", tags.len()),
        }
    }
}

/// The shards' shared control state.
#[derive(Debug)]
pub struct Control {
    epoch: AtomicU64,
    /// Every change with its epoch (a shard applies those past its own).
    changes: Mutex<Vec<(u64, Change)>>,
    applied: Vec<AtomicU64>,
    /// What the last reload attempt said (revision loaded, or why it was refused).
    pub last_reload: Mutex<Option<Result<String, String>>>,
    /// Reloads and data writes that were served / refused.
    pub changes_ok: AtomicU64,
    pub changes_refused: AtomicU64,
    /// Where reloads read the bundle from (`None`: the embedded one).
    pub bundle_path: Option<PathBuf>,
    pub limits: EvalLimits,
    /// The bundle now served, as loaded (data writes change a copy of it), and how many
    /// data writes it has had.
    current: Mutex<(Bundle, u64)>,
    /// The audit log's next sequence number (for the sinks' lag in `/metrics`).
    pub log_next_seq: std::sync::OnceLock<Arc<AtomicU64>>,
    /// The audit sinks' counters, by sink name (for `/metrics`).
    pub sinks: Mutex<Vec<(String, Arc<pdp::sink::SinkStats>)>>,
    /// How long each sink's sends take (`siem_batch_send_duration_seconds`).
    pub(crate) sink_send_seconds: crate::metrics::SinkHistograms,
    /// Other nodes to tell about invalidations and data writes (`--cluster-redis`).
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// Pre-warming's lists for the shards (`[cache.prewarm]`; unset: off).
    pub prewarm: std::sync::OnceLock<Arc<crate::prewarm::Prewarm>>,
    /// `[bundle.jwks]`: JWKS files added to every bundle's data ([`with_config_data`]).
    jwks: ConfigJwks,
}

/// `[bundle.jwks]`: name → JWKS file.
pub type ConfigJwks = std::collections::BTreeMap<String, PathBuf>;

/// Where [`with_config_data`] puts the configured JWKS: `data.sark_pdp.jwks.<name>`.
pub const CONFIG_JWKS_PATH: [&str; 2] = ["sark_pdp", "jwks"];

/// Add the configured JWKS to a bundle's data, each at `data.sark_pdp.jwks.<name>` as the
/// file's text (a string, which is what `io.jwt.decode_verify`'s `cert` takes). The files
/// are read at every load, so a reload (SIGHUP, the admin API, a polled bundle) picks up
/// rotated keys.
///
/// # Errors
/// A file that cannot be read or is not a JWKS, or a bundle whose own data has
/// `sark_pdp.jwks`.
pub fn with_config_data(mut bundle: Bundle, jwks: &ConfigJwks) -> Result<Bundle, String> {
    if jwks.is_empty() {
        return Ok(bundle);
    }
    let mut keys = serde_json::Map::new();
    for (name, path) in jwks {
        let text = std::fs::read_to_string(path).map_err(|e| format!("[bundle.jwks] {name}: {}: {e}", path.display()))?;
        let n = pdp::builtins::check_keys(&text).map_err(|e| format!("[bundle.jwks] {name}: {}: {e}", path.display()))?;
        if n == 0 {
            return Err(format!("[bundle.jwks] {name}: {}: no key OPA can use", path.display()));
        }
        keys.insert(name.clone(), serde_json::Value::String(text));
    }
    let [root, leaf] = CONFIG_JWKS_PATH;
    let Some(data) = bundle.data.as_object_mut() else {
        return Err("the bundle's data is not an object".into());
    };
    let ours = data.entry(root).or_insert_with(|| serde_json::json!({}));
    match ours.as_object_mut() {
        Some(o) if !o.contains_key(leaf) => {
            o.insert(leaf.into(), serde_json::Value::Object(keys));
        }
        _ => return Err(format!("the bundle's own data has data.{root}.{leaf}, which [bundle.jwks] fills")),
    }
    Ok(bundle)
}

/// A change to the data document.
#[derive(Debug)]
pub enum DataWrite {
    /// Replace the value at the path (creating objects on the way).
    Put(serde_json::Value),
    /// Apply a JSON Patch (RFC 6902) to the value at the path.
    Patch(json_patch::Patch),
}

impl Control {
    pub fn new(shards: usize, bundle: Bundle, bundle_path: Option<PathBuf>, limits: EvalLimits, jwks: ConfigJwks) -> Control {
        Control {
            current: Mutex::new((bundle, 0)),
            cluster: std::sync::OnceLock::new(),
            prewarm: std::sync::OnceLock::new(),
            sinks: Mutex::new(Vec::new()),
            sink_send_seconds: crate::metrics::SinkHistograms::new_with_constructor(crate::metrics::send_seconds_histogram),
            log_next_seq: std::sync::OnceLock::new(),
            epoch: AtomicU64::new(0),
            changes: Mutex::new(Vec::new()),
            applied: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            last_reload: Mutex::new(None),
            changes_ok: AtomicU64::new(0),
            changes_refused: AtomicU64::new(0),
            bundle_path,
            limits,
            jwks,
        }
    }

    /// Publish a change; its epoch.
    pub fn publish(&self, change: Change) -> u64 {
        let mut changes = self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let epoch = self.epoch.load(Ordering::Acquire) + 1;
        // Only the latest bundle matters; older swaps need not be kept.
        if matches!(change, Change::Swap(_)) {
            changes.retain(|(_, c)| !matches!(c, Change::Swap(_)));
        }
        changes.push((epoch, change));
        // Changes every shard has applied are dropped.
        let low = self.applied.iter().map(|a| a.load(Ordering::Acquire)).min().unwrap_or(0);
        changes.retain(|(e, c)| *e > low || matches!(c, Change::Swap(_)));
        self.epoch.store(epoch, Ordering::Release);
        epoch
    }

    /// The newest epoch (a shard compares it with its own).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The changes after `applied`, oldest first.
    pub fn since(&self, applied: u64) -> Vec<(u64, Change)> {
        let changes = self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        changes.iter().filter(|(e, _)| *e > applied).cloned().collect()
    }

    pub fn set_applied(&self, shard: usize, epoch: u64) {
        if let Some(a) = self.applied.get(shard) {
            a.store(epoch, Ordering::Release);
        }
    }

    /// Whether every shard has applied `epoch`.
    pub fn acked(&self, epoch: u64) -> bool {
        self.applied.iter().all(|a| a.load(Ordering::Acquire) >= epoch)
    }

    /// Wait (on a monoio task: the shard keeps serving) until every shard has applied
    /// `epoch`, or `timeout`; whether it was acknowledged.
    pub async fn wait(&self, epoch: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.acked(epoch) {
            if Instant::now() >= deadline {
                return false;
            }
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }

    /// The same from a plain thread (SIGHUP).
    pub fn wait_blocking(&self, epoch: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.acked(epoch) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Load, validate and publish the bundle from `bundle_path` (blocking: call it off the
    /// shards). The new revision and epoch, or why it was refused (nothing changed then).
    pub fn reload(&self) -> Result<(String, u64), String> {
        self.install(validate(self.bundle_path.as_deref(), self.limits, &self.jwks))
    }

    /// Publish a validated bundle, or record why it was refused.
    fn install(&self, result: Result<(Bundle, Arc<CompiledBundle>), String>) -> Result<(String, u64), String> {
        let out = result.map(|(bundle, compiled)| {
            let revision = compiled.revision.to_string();
            *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (bundle, 0);
            (revision, self.publish(Change::Swap(compiled)))
        });
        let mut last = self.last_reload.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = Some(out.as_ref().map(|(r, _)| r.clone()).map_err(Clone::clone));
        self.count(out.is_ok());
        out
    }
}

impl Control {
    /// Change the data document at `path` (segments of `/v1/data/...`) and publish the
    /// result as a new revision, `<bundle revision>+data.<n>` (blocking: call it off the
    /// shards). The bundle's cases are not run — they describe the shipped data. A reload
    /// starts again from the bundle's own data.
    ///
    /// # Errors
    /// An empty path, a patch that does not apply, data nested too deep, or a bundle that
    /// no longer compiles; nothing changes then.
    pub fn write_data(&self, path: &[&str], write: DataWrite) -> Result<(String, u64), String> {
        let out = self.try_write_data(path, write);
        self.count(out.is_ok());
        out
    }

    fn count(&self, ok: bool) {
        let c = if ok { &self.changes_ok } else { &self.changes_refused };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn try_write_data(&self, path: &[&str], write: DataWrite) -> Result<(String, u64), String> {
        if path.is_empty() {
            return Err("say which document to write: /v1/data/<path>".into());
        }
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (bundle, writes) = &*current;
        let mut data = bundle.data.clone();
        let mut at = &mut data;
        for seg in path {
            if !at.is_object() {
                *at = serde_json::Value::Object(serde_json::Map::new());
            }
            let Some(obj) = at.as_object_mut() else { return Err("unreachable".into()) };
            at = obj.entry(seg.to_string()).or_insert(serde_json::Value::Null);
        }
        match write {
            DataWrite::Put(v) => *at = v,
            DataWrite::Patch(p) => json_patch::patch(at, &p).map_err(|e| format!("the patch does not apply: {e}"))?,
        }
        if json_depth(&data) > BundleLimits::default().max_data_depth {
            return Err(format!("data nests deeper than {}", BundleLimits::default().max_data_depth));
        }
        let base = bundle.revision.split("+data.").next().unwrap_or("").to_string();
        let n = writes + 1;
        let next = Bundle {
            data,
            revision: format!("{base}+data.{n}").into(),
            ..bundle.clone()
        };
        let compiled = Arc::new(CompiledBundle::compile(&next, self.limits).map_err(|e| e.to_string())?);
        let revision = next.revision.to_string();
        *current = (next, n);
        drop(current);
        Ok((revision, self.publish(Change::Swap(compiled))))
    }
}

fn json_depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Load and compile a bundle and run its decision cases; every case must pass.
///
/// # Errors
/// Loading, compiling, or a failing case, as one line.
pub fn validate(path: Option<&Path>, limits: EvalLimits, jwks: &ConfigJwks) -> Result<(Bundle, Arc<CompiledBundle>), String> {
    let bundle = match path {
        Some(p) => Bundle::load(p, BundleLimits::default()),
        None => Bundle::embedded(),
    }
    .map_err(|e| e.to_string())?;
    validate_loaded(bundle, limits, jwks)
}

/// [`validate`] for a bundle already loaded.
///
/// # Errors
/// As [`validate`].
pub fn validate_loaded(bundle: Bundle, limits: EvalLimits, jwks: &ConfigJwks) -> Result<(Bundle, Arc<CompiledBundle>), String> {
    let bundle = with_config_data(bundle, jwks)?;
    let compiled = Arc::new(CompiledBundle::compile(&bundle, limits).map_err(|e| e.to_string())?);
    let cases = pdp::cases::load(&bundle)?;
    let mut ev = Evaluator::new(compiled.clone(), EnginePreference::Fastest);
    let failed: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            pdp::cases::evaluate(&mut ev, case)
                .and_then(|r| pdp::cases::check(case, r.as_ref()))
                .err()
                .map(|why| format!("{}: {why}", case.name))
        })
        .collect();
    if let Some(first) = failed.first() {
        return Err(format!("{} of {} cases fail; first: {first}", failed.len(), cases.len()));
    }
    Ok((bundle, compiled))
}

/// Where to poll for bundles: an OPA-style bundle server.
#[derive(Debug, Clone)]
pub struct BundlePoll {
    /// `http://host:port/path` (plain HTTP; the bundle is an OPA bundle `.tar.gz`).
    pub url: String,
    pub interval: Duration,
}

/// What one poll found.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    /// 304: the server still has the bundle we serve.
    NotModified,
    /// A new bundle, validated and now served on every shard (its revision).
    Installed(String),
}

impl Control {
    /// Ask the bundle server for a bundle newer than `etag` (If-None-Match); validate and
    /// publish one that comes (blocking: the poller thread).
    ///
    /// # Errors
    /// The server unreachable or answering anything but 200/304, or a bundle that fails
    /// validation (nothing changes; counted, in `/health?bundles` and the log).
    pub fn poll_once(&self, poll: &BundlePoll, etag: &mut Option<String>) -> Result<Polled, String> {
        let fetched = fetch(&poll.url, etag.as_deref());
        let (new_etag, body) = match fetched {
            Ok(None) => return Ok(Polled::NotModified),
            Ok(Some(b)) => b,
            Err(why) => {
                self.count(false);
                return Err(why);
            }
        };
        let loaded = Bundle::from_tar_gz(&poll.url, &body, BundleLimits::default()).map_err(|e| e.to_string());
        let (revision, epoch) = self.install(loaded.and_then(|b| validate_loaded(b, self.limits, &self.jwks)))?;
        *etag = new_etag;
        self.wait_blocking(epoch, Duration::from_secs(30));
        Ok(Polled::Installed(revision))
    }
}

/// Poll every `interval` on a thread of its own until `stop`.
pub fn spawn_poller(control: Arc<Control>, poll: BundlePoll, stop: Arc<std::sync::atomic::AtomicBool>) -> std::io::Result<()> {
    std::thread::Builder::new().name("bundle-poll".into()).spawn(move || {
        let mut etag = None;
        while !stop.load(Ordering::Relaxed) {
            match control.poll_once(&poll, &mut etag) {
                Ok(Polled::NotModified) => {}
                Ok(Polled::Installed(rev)) => pdp::say!("sark-pdp: bundle {rev} from {} serving on every shard", poll.url),
                Err(why) => pdp::say!("sark-pdp: bundle poll {}: {why} (the current bundle keeps serving)", poll.url),
            }
            let until = Instant::now() + poll.interval;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    })?;
    Ok(())
}

/// A 200's ETag (if any) and body.
type Fetched = (Option<String>, Vec<u8>);

/// `GET url` with `If-None-Match: etag`: `None` on 304, else the ETag and body of a 200.
fn fetch(url: &str, etag: Option<&str>) -> Result<Option<Fetched>, String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// bundle servers are supported"))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host).map_err(|e| format!("{host}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let inm = etag.map_or(String::new(), |e| format!("if-none-match: {e}\r\n"));
    write!(s, "GET {path} HTTP/1.1\r\nhost: {host}\r\n{inm}connection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let max = BundleLimits::default().max_bytes + 64 * 1024;
    let mut raw = Vec::new();
    s.take(max + 1).read_to_end(&mut raw).map_err(|e| e.to_string())?;
    if raw.len() as u64 > max {
        return Err(format!("the bundle is larger than {max} bytes"));
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err("the bundle server's answer is not HTTP".into()),
    };
    let header = |name: &str| resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| String::from_utf8_lossy(h.value).trim().to_string());
    match resp.code {
        Some(304) => Ok(None),
        Some(200) => {
            let body = raw.get(head_len..).unwrap_or(&[]);
            let body = match header("content-length").and_then(|l| l.parse::<usize>().ok()) {
                Some(n) => body.get(..n).ok_or("the bundle was cut short")?,
                None => body,
            };
            Ok(Some((header("etag"), body.to_vec())))
        }
        other => Err(format!("the bundle server answered {}", other.unwrap_or(0))),
    }
}

/// The newest modification time of any file under `dir` (the bundle directory), with the
/// number of files, so that an added or removed file counts as a change too.
fn fingerprint(dir: &Path) -> Option<(std::time::SystemTime, usize)> {
    let mut newest = std::time::UNIX_EPOCH;
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let meta = entry.metadata().ok()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                files += 1;
                newest = newest.max(meta.modified().ok()?);
            }
        }
    }
    Some((newest, files))
}

/// Watch the bundle directory (checked every `every`): when a file in it changes, reload
/// — validated like any reload; a bundle caught mid-edit is refused and the next change
/// tries again.
pub fn spawn_watcher(control: Arc<Control>, every: Duration, stop: Arc<std::sync::atomic::AtomicBool>) -> std::io::Result<()> {
    let Some(dir) = control.bundle_path.clone().filter(|p| p.is_dir()) else { return Ok(()) };
    // Taken now, before the server says it is ready: a change made after that is seen.
    let mut seen = fingerprint(&dir);
    std::thread::Builder::new().name("bundle-watch".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(every);
            let now = fingerprint(&dir);
            if now == seen {
                continue;
            }
            seen = now;
            match control.reload() {
                Ok((revision, epoch)) => {
                    let acked = control.wait_blocking(epoch, Duration::from_secs(30));
                    pdp::say!("sark-pdp: {} changed: bundle {revision}{}", dir.display(), if acked { " serving on every shard" } else { " not acknowledged in time" });
                }
                Err(why) => pdp::say!("sark-pdp: {} changed: bundle refused, the old one keeps serving: {why}", dir.display()),
            }
        }
    })?;
    Ok(())
}
