//! Pre-warming (`[cache.prewarm]`): when the server starts, and after each bundle swap, a
//! thread of its own reads the tail of the audit log ([`pdp::prewarm::scan`]: the `top`
//! questions asked most often in the last `minutes`), splits them by the shard that owns
//! each ([`wire::route`]) and hands each shard its share; the shard evaluates them while it
//! serves, for up to [`BUDGET`] in each millisecond tick and at most [`SHARE`] of its core
//! (so its callers keep the rest), or, with `before_serving`,
//! all at once before it accepts a connection; and says how long its warm-up took. Pre-warming evaluations answer no one, so they leave no audit record; the
//! hits they make possible do.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pdp::input::SarkInput;

/// `[cache.prewarm]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrewarmConfig {
    /// Questions warmed in all (each shard its share).
    pub top: usize,
    /// How far back the log is read.
    pub window: Duration,
    /// The most log bytes read (the newest segments).
    pub max_bytes: u64,
    /// Whether records keep questions that carry `parameters` (they may hold secrets; off:
    /// such questions are not warmed).
    pub parameters: bool,
    /// Warm before accepting connections (callers wait in the listen backlog, /health
    /// included) instead of while serving.
    pub before_serving: bool,
}

/// How long a shard warms per millisecond tick at most: a request arriving meanwhile
/// waits at most this long (plus the one evaluation that runs past it).
pub const BUDGET: Duration = Duration::from_micros(500);

/// The most of its core a shard spends warming while it serves.
pub const SHARE: f64 = 0.25;

/// The warm-up lists waiting for each shard, and the requests for new ones.
#[derive(Debug)]
pub struct Prewarm {
    /// Bumped by each shard that swapped its bundle (and once at start).
    wanted: AtomicU64,
    lists: Mutex<Vec<Option<Vec<SarkInput>>>>,
}

impl Prewarm {
    pub fn new(shards: usize) -> Prewarm {
        Prewarm { wanted: AtomicU64::new(1), lists: Mutex::new((0..shards).map(|_| None).collect()) }
    }

    /// Ask for a new scan (a shard swapped its bundle: its cache is empty).
    pub fn request(&self) {
        self.wanted.fetch_add(1, Ordering::Release);
    }

    /// Shard `index`'s list, once it is ready.
    pub fn take(&self, index: usize) -> Option<Vec<SarkInput>> {
        self.lists.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_mut(index)?.take()
    }
}

/// Scan on the prewarm thread (pinned to `cpu`: the audit writer's) whenever asked, until
/// `stop`.
///
/// # Errors
/// The thread cannot start.
pub fn spawn(config: PrewarmConfig, (dir, cpu): (PathBuf, Option<usize>), shared: Arc<Prewarm>, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("prewarm".into()).spawn(move || {
        pdp::say!("sark-pdp: {}", crate::server::pin("pre-warm thread", cpu));
        let mut done = 0;
        while !stop.load(Ordering::Relaxed) {
            let wanted = shared.wanted.load(Ordering::Acquire);
            if wanted == done {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            // Let every shard's swap land before reading, so one scan serves them all.
            std::thread::sleep(Duration::from_millis(20));
            done = shared.wanted.load(Ordering::Acquire);
            let since = crate::server::now_ns().saturating_sub(i64::try_from(config.window.as_nanos()).unwrap_or(i64::MAX));
            let scan = match pdp::prewarm::scan(&dir, since, config.max_bytes, config.top) {
                Ok(s) => s,
                Err(e) => {
                    pdp::say!("sark-pdp: pre-warm: reading the audit log {}: {e}", dir.display());
                    continue;
                }
            };
            let mut lists = shared.lists.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut split: Vec<Vec<SarkInput>> = (0..lists.len()).map(|_| Vec::new()).collect();
            for (_, q) in scan.top {
                if let Some(l) = split.get_mut(crate::server::owner(&q, lists.len())) {
                    l.push(q);
                }
            }
            let counts: Vec<String> = split.iter().map(|l| l.len().to_string()).collect();
            for (slot, l) in lists.iter_mut().zip(split) {
                *slot = Some(l);
            }
            drop(lists);
            pdp::say!(
                "sark-pdp: pre-warm: {} records read ({} MiB, {} with a question, {} distinct) in {:.0} ms; warming {} per shard",
                scan.records,
                scan.bytes >> 20,
                scan.replayable,
                scan.distinct,
                scan.seconds * 1000.0,
                counts.join("/")
            );
        }
    })
}
