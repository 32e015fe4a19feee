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
    pub fn new(shards: usize, bundle: Bundle, bundle_path: Option<PathBuf>, limits: EvalLimits) -> Control {
        Control {
            current: Mutex::new((bundle, 0)),
            epoch: AtomicU64::new(0),
            changes: Mutex::new(Vec::new()),
            applied: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            last_reload: Mutex::new(None),
            changes_ok: AtomicU64::new(0),
            changes_refused: AtomicU64::new(0),
            bundle_path,
            limits,
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
        let result = validate(self.bundle_path.as_deref(), self.limits);
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
pub fn validate(path: Option<&Path>, limits: EvalLimits) -> Result<(Bundle, Arc<CompiledBundle>), String> {
    let bundle = match path {
        Some(p) => Bundle::load(p, BundleLimits::default()),
        None => Bundle::embedded(),
    }
    .map_err(|e| e.to_string())?;
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
