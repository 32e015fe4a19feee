//! Shipping the audit log to a destination (a SIEM, a database), losing nothing.
//!
//! A [`Shipper`] tails the segmented log ([`crate::audit_log`]) from a persisted cursor —
//! the sequence number of the next record to ship — batches records, hands them to a
//! [`Sink`], and advances the cursor (written to a file atomically: temp file, fsync,
//! rename) only once the destination has acknowledged. Delivery is at least once: after a
//! crash between acknowledgement and cursor write the batch goes again, and every record
//! carries its `decision_id` to de-duplicate by.
//!
//! Failures: a connection error, a timeout, a 5xx or a 429 is retried after
//! min(2^(n-1), 60) s; five in a row open the circuit breaker, which lets one try through
//! after 60 s and closes after two successes. A 4xx other than 429 means the batch itself
//! is refused: it is split in halves until the record at fault is alone, which goes to a
//! dead-letter file, and shipping goes on.
//!
//! Lag, for `/metrics`: records not yet acknowledged (from the cursor), the age of the
//! oldest of them, and the log bytes they take — past `max_lag_bytes` an alarm is raised
//! (the log keeps them whatever its retention says; nothing is dropped to make room).

use std::fs::{File, OpenOptions};
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::audit::parse_rfc3339;
use crate::audit_log::{segments, shipped_body, verify_line};

/// Why a batch was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Try again later (connection, timeout, 5xx, 429).
    Retry(String),
    /// The destination refuses this batch's content (4xx other than 429).
    Refused(String),
}

/// A destination.
pub trait Sink {
    fn name(&self) -> &str;
    /// Deliver `batch` (audit log lines, JSON, with their sequence numbers, in order) or
    /// say why not.
    ///
    /// # Errors
    /// [`SendError`].
    fn send(&mut self, batch: &[(u64, String)]) -> Result<(), SendError>;
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn send(&mut self, batch: &[(u64, String)]) -> Result<(), SendError> {
        (**self).send(batch)
    }
}

/// The next sequence number to ship, kept in a file.
#[derive(Debug)]
pub struct Cursor {
    path: PathBuf,
}

impl Cursor {
    pub fn new(path: impl Into<PathBuf>) -> Cursor {
        Cursor { path: path.into() }
    }

    /// The stored cursor (1: from the start).
    pub fn load(&self) -> u64 {
        std::fs::read_to_string(&self.path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1)
    }

    /// Store atomically: a crash leaves the old value or the new one, never a torn one.
    ///
    /// # Errors
    /// The file cannot be written, synced or renamed.
    pub fn store(&self, next: u64) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        writeln!(f, "{next}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Reads intact lines from the log from a sequence number on, following rotations.
#[derive(Debug)]
pub struct Tail {
    dir: PathBuf,
    /// The segment being read (its first sequence number) and the byte offset in it.
    segment: Option<(u64, u64)>,
    next: u64,
}

impl Tail {
    pub fn new(dir: impl Into<PathBuf>, from_seq: u64) -> Tail {
        Tail { dir: dir.into(), segment: None, next: from_seq }
    }

    /// Bytes of log not read yet: the rest of the segment being read and every later one.
    ///
    /// # Errors
    /// The log's directory cannot be listed.
    pub fn unread_bytes(&self) -> io::Result<u64> {
        let segs = segments(&self.dir)?;
        // Where reading stands: the segment being read, or the one that holds `next`.
        let (current, offset) = self.segment.unwrap_or_else(|| (segs.iter().rev().find(|(f, _)| *f <= self.next).map_or(0, |(f, _)| *f), 0));
        Ok(segs
            .iter()
            .filter(|(first, _)| *first >= current)
            .map(|(first, path)| {
                let len = std::fs::metadata(path).map_or(0, |m| m.len());
                if *first == current { len.saturating_sub(offset) } else { len }
            })
            .sum())
    }

    /// Up to `max` new lines (with their sequence numbers), in order; none when the log has
    /// nothing new yet.
    ///
    /// # Errors
    /// The log cannot be read.
    pub fn read(&mut self, max: usize) -> io::Result<Vec<(u64, String)>> {
        let segs = segments(&self.dir)?;
        let mut out = Vec::new();
        loop {
            let (first, offset) = match self.segment {
                Some(s) => s,
                None => {
                    // The segment holding `next`: the last one starting at or before it.
                    let Some((first, _)) = segs.iter().rev().find(|(f, _)| *f <= self.next).or(segs.first()) else { return Ok(out) };
                    (*first, 0)
                }
            };
            let path = self.dir.join(format!("audit-{first:020}.jsonl"));
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.segment = None;
                    return Ok(out);
                }
                Err(e) => return Err(e),
            };
            f.seek(SeekFrom::Start(offset))?;
            let mut reader = BufReader::new(f);
            let mut pos = offset;
            let mut line = String::new();
            while out.len() < max {
                line.clear();
                let n = reader.read_line(&mut line)?;
                if n == 0 || !line.ends_with('\n') {
                    break; // the end, or a line still being written
                }
                let text = line.trim_end_matches('\n');
                let Some(seq) = verify_line(text) else { break };
                pos += n as u64;
                if seq >= self.next {
                    out.push((seq, text.to_string()));
                    self.next = seq + 1;
                }
            }
            self.segment = Some((first, pos));
            if out.len() >= max {
                return Ok(out);
            }
            // At this segment's end: move on if a later segment exists.
            match segs.iter().find(|(f, _)| *f > first) {
                Some((later, _)) => self.segment = Some((*later, 0)),
                None => return Ok(out),
            }
        }
    }
}

/// Closed → open after `threshold` failures in a row (SARK: 5) → half-open after
/// `open_for` (SARK: 60 s) → closed after 2 successes; between failures, retries wait
/// min(2^(n-1), 60) s.
#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    /// When the next try may go (after a failure).
    next_try: Option<Instant>,
    /// Open: set when the `threshold`th failure in a row opened it.
    open: bool,
    half_open_successes: u32,
    pub threshold: u32,
    pub open_for: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker { failures: 0, next_try: None, open: false, half_open_successes: 0, threshold: 5, open_for: Duration::from_secs(60) }
    }
}

impl Breaker {
    /// How long until the next try may go.
    pub fn wait(&self) -> Duration {
        self.next_try.map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now()))
    }

    /// Whether the breaker is open (no try before `open_for` has passed).
    pub fn is_open(&self) -> bool {
        self.open && !self.wait().is_zero()
    }

    pub fn failure(&mut self) {
        self.failures += 1;
        self.half_open_successes = 0;
        let backoff = if self.failures >= self.threshold.max(1) {
            self.open = true;
            self.open_for
        } else {
            Duration::from_secs(1u64 << (self.failures - 1).min(6)).min(Duration::from_secs(60))
        };
        self.next_try = Some(Instant::now() + backoff);
    }

    pub fn success(&mut self) {
        self.next_try = None;
        if self.open {
            self.half_open_successes += 1;
            if self.half_open_successes < 2 {
                return;
            }
        }
        self.failures = 0;
        self.open = false;
        self.half_open_successes = 0;
    }
}

/// A shipper's counters, readable from other threads (for `/metrics`).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Records acknowledged by the destination.
    pub sent: std::sync::atomic::AtomicU64,
    pub dead_lettered: std::sync::atomic::AtomicU64,
    /// Batches that failed and will be retried.
    pub failures: std::sync::atomic::AtomicU64,
    pub breaker_open: std::sync::atomic::AtomicBool,
    /// The next sequence number to ship.
    pub cursor: std::sync::atomic::AtomicU64,
    /// When the oldest record not yet acknowledged was decided (ns since the epoch; 0: none
    /// waiting), for the lag in seconds.
    pub oldest_pending_ns: std::sync::atomic::AtomicU64,
    /// Bytes of log not yet acknowledged, and whether that is past the sink's bound (an
    /// alarm: the log keeps them whatever its retention says).
    pub lag_bytes: std::sync::atomic::AtomicU64,
    pub lag_alarm: std::sync::atomic::AtomicBool,
}

/// Ships the log to one sink.
pub struct Shipper<S: Sink> {
    pub sink: S,
    tail: Tail,
    cursor: Cursor,
    dead_letter: PathBuf,
    pub batch: usize,
    pub max_wait: Duration,
    pub breaker: Breaker,
    pending: Vec<(u64, String)>,
    first_pending: Option<Instant>,
    /// Records delivered and dead-lettered since start.
    pub shipped: u64,
    pub dead_lettered: u64,
    /// Published after each acknowledged batch: the next sequence number to ship (the
    /// log's retention keeps every segment from it on).
    pub published: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    pub stats: std::sync::Arc<SinkStats>,
    /// Told how long each send took (for `siem_batch_send_duration_seconds`).
    pub on_send: Option<Box<dyn Fn(Duration) + Send>>,
    /// Unshipped log bytes past which [`SinkStats::lag_alarm`] is raised.
    pub max_lag_bytes: u64,
    /// When the lag in bytes was last measured.
    lag_checked: Option<Instant>,
}

impl<S: Sink> std::fmt::Debug for Shipper<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shipper({}, {} shipped)", self.sink.name(), self.shipped)
    }
}

impl<S: Sink> Shipper<S> {
    /// Ship `log_dir` to `sink`, keeping the cursor and dead letters in `state_dir`.
    ///
    /// # Errors
    /// `state_dir` cannot be created.
    pub fn new(sink: S, log_dir: &Path, state_dir: &Path) -> io::Result<Shipper<S>> {
        std::fs::create_dir_all(state_dir)?;
        let cursor = Cursor::new(state_dir.join(format!("{}.cursor", sink.name())));
        let dead_letter = state_dir.join(format!("{}.dead-letter.jsonl", sink.name()));
        let from = cursor.load();
        Ok(Shipper {
            sink,
            tail: Tail::new(log_dir, from),
            cursor,
            dead_letter,
            batch: 100,
            max_wait: Duration::from_secs(5),
            breaker: Breaker::default(),
            pending: Vec::new(),
            first_pending: None,
            shipped: 0,
            dead_lettered: 0,
            published: None,
            stats: std::sync::Arc::default(),
            on_send: None,
            max_lag_bytes: 1 << 30,
            lag_checked: None,
        })
    }

    /// The next sequence number to ship.
    pub fn cursor(&self) -> u64 {
        self.cursor.load()
    }

    /// One step: read what is new, and send a batch when it is full or old enough (or
    /// `flush`). Returns how long the caller may sleep before the next step.
    ///
    /// # Errors
    /// The log or the state files cannot be read or written.
    pub fn step(&mut self, flush: bool) -> io::Result<Duration> {
        let room = self.batch.saturating_sub(self.pending.len());
        if room > 0 {
            let new = self.tail.read(room)?;
            if !new.is_empty() && self.first_pending.is_none() {
                self.first_pending = Some(Instant::now());
            }
            self.pending.extend(new);
        }
        self.measure_lag()?;
        if self.pending.is_empty() {
            return Ok(Duration::from_millis(20));
        }
        let due = flush || self.pending.len() >= self.batch || self.first_pending.is_some_and(|t| t.elapsed() >= self.max_wait);
        if !due {
            return Ok(Duration::from_millis(5));
        }
        let wait = self.breaker.wait();
        if !wait.is_zero() {
            return Ok(wait.min(Duration::from_millis(200)));
        }
        let batch = std::mem::take(&mut self.pending);
        match self.deliver(&batch) {
            Ok(()) => {
                self.breaker.success();
                let last = batch.last().map_or(0, |(s, _)| *s);
                self.cursor.store(last + 1)?;
                if let Some(p) = &self.published {
                    p.store(last + 1, std::sync::atomic::Ordering::Release);
                }
                self.shipped += batch.len() as u64;
                self.first_pending = None;
                use std::sync::atomic::Ordering::Relaxed;
                self.stats.sent.store(self.shipped, Relaxed);
                self.stats.dead_lettered.store(self.dead_lettered, Relaxed);
                self.stats.cursor.store(last + 1, Relaxed);
                self.stats.breaker_open.store(self.breaker.is_open(), Relaxed);
                self.stats.oldest_pending_ns.store(0, Relaxed);
                Ok(Duration::ZERO)
            }
            Err(why) => {
                self.breaker.failure();
                self.stats.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.stats.breaker_open.store(self.breaker.is_open(), std::sync::atomic::Ordering::Relaxed);
                crate::say!("sark-pdp: sink {}: {why}; retrying in {:?}", self.sink.name(), self.breaker.wait());
                self.pending = batch;
                Ok(Duration::from_millis(10))
            }
        }
    }

    /// Publish the lag: when the oldest unacknowledged record was decided (each step), and
    /// how many log bytes are unshipped (once a second), raising the alarm past
    /// `max_lag_bytes`.
    fn measure_lag(&mut self) -> io::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some((_, line)) = self.pending.first()
            && self.stats.oldest_pending_ns.load(Relaxed) == 0
        {
            let ns = field_str(line, "timestamp").and_then(parse_rfc3339).unwrap_or(1);
            self.stats.oldest_pending_ns.store(u64::try_from(ns).unwrap_or(1).max(1), Relaxed);
        }
        if self.lag_checked.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return Ok(());
        }
        self.lag_checked = Some(Instant::now());
        let pending: u64 = self.pending.iter().map(|(_, l)| l.len() as u64 + 1).sum();
        let bytes = self.tail.unread_bytes()? + pending;
        self.stats.lag_bytes.store(bytes, Relaxed);
        let alarm = bytes > self.max_lag_bytes;
        if alarm != self.stats.lag_alarm.swap(alarm, Relaxed) {
            if alarm {
                crate::say!("sark-pdp: sink {}: {bytes} bytes of audit log not shipped, past its bound of {} (they are kept)", self.sink.name(), self.max_lag_bytes);
            } else {
                crate::say!("sark-pdp: sink {}: back under its lag bound", self.sink.name());
            }
        }
        Ok(())
    }

    /// Send `batch`; a refused batch is bisected down to the record at fault, which goes
    /// to the dead-letter file. Errors only for what must be retried.
    fn deliver(&mut self, batch: &[(u64, String)]) -> Result<(), String> {
        let started = Instant::now();
        let sent = self.sink.send(batch);
        if let Some(observe) = &self.on_send {
            observe(started.elapsed());
        }
        match sent {
            Ok(()) => Ok(()),
            Err(SendError::Retry(why)) => Err(why),
            Err(SendError::Refused(why)) if batch.len() == 1 => {
                let mut f = OpenOptions::new().create(true).append(true).open(&self.dead_letter).map_err(|e| e.to_string())?;
                let line = batch.first().map_or("", |(_, l)| l.as_str());
                writeln!(f, "{}", serde_json::json!({"sink": self.sink.name(), "reason": why, "record": line})).map_err(|e| e.to_string())?;
                f.sync_data().map_err(|e| e.to_string())?;
                self.dead_lettered += 1;
                Ok(())
            }
            Err(SendError::Refused(_)) => {
                let (a, b) = batch.split_at(batch.len() / 2);
                self.deliver(a)?;
                self.deliver(b)
            }
        }
    }
}

/// Splunk's HTTP Event Collector: `POST /services/collector/event` with
/// `Authorization: Splunk <token>`, newline-joined events `{time, host, source, sourcetype,
/// index, event}` (SARK-SPEC), gzip above 1 KiB; success is 200 with `{"code":0}`.
#[derive(Debug)]
pub struct SplunkHec {
    /// `http://host:port` of the collector.
    pub url: String,
    pub token: String,
    pub index: String,
    pub host: String,
    pub timeout: Duration,
}

impl Sink for SplunkHec {
    fn name(&self) -> &str {
        "splunk"
    }

    fn send(&mut self, batch: &[(u64, String)]) -> Result<(), SendError> {
        // Each event is spliced around the log line (whose JSON the log wrote and its CRC
        // vouches for) rather than parsed and printed again: about a quarter of the cost
        // (BENCHMARKS.md).
        let head = format!(
            ",\"host\":{},\"source\":\"sark\",\"sourcetype\":\"sark:audit:event\",\"index\":{},\"event\":",
            json_string(&self.host),
            json_string(&self.index)
        );
        let mut body = String::with_capacity(batch.iter().map(|(_, l)| l.len() + head.len() + 32).sum());
        for (seq, l) in batch {
            let record = shipped_body(l).ok_or_else(|| SendError::Refused(format!("record {seq} is not an audit log line")))?;
            let ns = field_str(record, "timestamp").and_then(parse_rfc3339).unwrap_or(0);
            let _ = writeln!(body, "{{\"time\":{}.{:09}{head}{record}}}}}", ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
        }
        let headers = [("authorization", format!("Splunk {}", self.token))];
        let (status, reply) = post(&self.url, "/services/collector/event", &headers, body.as_bytes(), self.timeout)?;
        match status {
            200 if serde_json::from_slice::<serde_json::Value>(&reply).is_ok_and(|v| v.get("code") == Some(&serde_json::json!(0))) => Ok(()),
            200 => Err(SendError::Retry(format!("200 without code 0: {}", String::from_utf8_lossy(&reply)))),
            429 | 500..=599 => Err(SendError::Retry(format!("HTTP {status}"))),
            _ => Err(SendError::Refused(format!("HTTP {status}: {}", String::from_utf8_lossy(&reply)))),
        }
    }
}

/// Datadog's log intake: `POST /api/v2/logs` with `DD-API-KEY`, a JSON array of
/// `{ddsource, ddtags, service, hostname, message, …the record's fields}` (at most 1000
/// entries and 5 MB uncompressed per request: larger batches are split), gzip above 1 KiB;
/// success is 202.
#[derive(Debug)]
pub struct Datadog {
    /// `http://host:port` of the intake (or a local agent/proxy).
    pub url: String,
    pub api_key: String,
    pub service: String,
    pub tags: String,
    pub host: String,
    pub timeout: Duration,
}

/// Datadog's per-request limits.
const DD_MAX_ENTRIES: usize = 1000;
const DD_MAX_BYTES: usize = 5 << 20;

impl Sink for Datadog {
    fn name(&self) -> &str {
        "datadog"
    }

    fn send(&mut self, batch: &[(u64, String)]) -> Result<(), SendError> {
        // Spliced around the log line, as for Splunk: only the three fields of `message`
        // are read.
        let head = format!(
            "{{\"ddsource\":\"sark\",\"ddtags\":{},\"service\":{},\"hostname\":{},\"message\":",
            json_string(&self.tags),
            json_string(&self.service),
            json_string(&self.host)
        );
        let mut entries = Vec::with_capacity(batch.len());
        for (seq, l) in batch {
            let refused = || SendError::Refused(format!("record {seq} is not an audit log line"));
            let record = shipped_body(l).ok_or_else(refused)?;
            let summary: Summary<'_> = serde_json::from_str(l).map_err(|_| refused())?;
            let message = json_string(&format!("{} {} {}", summary.result, summary.user_id, summary.action));
            entries.push(format!("{head}{message},{}}}", record.get(1..).unwrap_or("")));
        }
        // Within Datadog's limits: at most 1000 entries and 5 MB per request.
        let mut start = 0;
        while start < entries.len() {
            let (mut end, mut bytes) = (start, 2);
            while end < entries.len() && end - start < DD_MAX_ENTRIES && bytes + entries.get(end).map_or(0, |e| e.len() + 1) <= DD_MAX_BYTES {
                bytes += entries.get(end).map_or(0, |e| e.len() + 1);
                end += 1;
            }
            if end == start {
                return Err(SendError::Refused("a record is larger than Datadog's 5 MB limit".into()));
            }
            let body = format!("[{}]", entries.get(start..end).unwrap_or(&[]).join(","));
            let headers = [("dd-api-key", self.api_key.clone())];
            let (status, reply) = post(&self.url, "/api/v2/logs", &headers, body.as_bytes(), self.timeout)?;
            match status {
                202 => {}
                429 | 500..=599 => return Err(SendError::Retry(format!("HTTP {status}"))),
                _ => return Err(SendError::Refused(format!("HTTP {status}: {}", String::from_utf8_lossy(&reply)))),
            }
            start = end;
        }
        Ok(())
    }
}

/// What Datadog's `message` says of a record.
#[derive(serde::Deserialize)]
struct Summary<'a> {
    #[serde(borrow)]
    result: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    user_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    action: std::borrow::Cow<'a, str>,
}

/// The raw text of a string field the log wrote (`timestamp`: never escaped).
fn field_str<'a>(record: &'a str, name: &str) -> Option<&'a str> {
    let (_, rest) = record.split_once(&format!(",\"{name}\":\""))?;
    rest.split_once('"').map(|(v, _)| v)
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// POST `body` (gzipped above 1 KiB) to `base` + `path`; the status and the body.
fn post(base: &str, path: &str, headers: &[(&str, String)], body: &[u8], timeout: Duration) -> Result<(u16, Vec<u8>), SendError> {
    let retry = |e: &dyn std::fmt::Display| SendError::Retry(e.to_string());
    let host = base.strip_prefix("http://").ok_or_else(|| SendError::Refused(format!("{base}: only http:// is supported")))?.trim_end_matches('/');
    let (payload, gzip) = if body.len() > 1024 {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(body).map_err(|e| retry(&e))?;
        (enc.finish().map_err(|e| retry(&e))?, true)
    } else {
        (body.to_vec(), false)
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host).map_err(|e| retry(&e))?.next().ok_or_else(|| SendError::Retry(format!("{host}: no address")))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| retry(&e))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| retry(&e))?;
    s.set_write_timeout(Some(timeout)).map_err(|e| retry(&e))?;
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n", payload.len());
    if gzip {
        head.push_str("content-encoding: gzip\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(|e| retry(&e))?;
    s.write_all(&payload).map_err(|e| retry(&e))?;
    let mut raw = Vec::new();
    s.take(16 << 20).read_to_end(&mut raw).map_err(|e| retry(&e))?;
    let mut hs = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut hs);
    let n = match resp.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(SendError::Retry("no HTTP answer".into())),
    };
    Ok((resp.code.unwrap_or(0), raw.get(n..).unwrap_or(&[]).to_vec()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::audit_log::{AuditLog, LogConfig};

    #[test]
    fn the_breaker_backs_off_opens_and_closes_as_documented() {
        let mut b = Breaker::default();
        assert_eq!(b.wait(), Duration::ZERO);
        b.failure();
        assert!(b.wait() > Duration::from_millis(900) && b.wait() <= Duration::from_secs(1));
        b.failure();
        assert!(b.wait() > Duration::from_millis(1900) && b.wait() <= Duration::from_secs(2));
        for _ in 0..3 {
            b.failure();
        }
        assert!(b.is_open() && b.wait() > Duration::from_secs(59));
        // Half-open: the first success does not close it, the second does.
        b.success();
        assert!(b.open);
        b.success();
        assert!(!b.open && b.wait() == Duration::ZERO && b.failures == 0);
    }

    /// A sink that refuses records containing "poison" and fails its first `fail` sends.
    struct Fake {
        got: Vec<String>,
        fail: usize,
    }

    impl Sink for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        fn send(&mut self, batch: &[(u64, String)]) -> Result<(), SendError> {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(SendError::Retry("down".into()));
            }
            if batch.iter().any(|(_, l)| l.contains("poison")) {
                return Err(SendError::Refused("bad record".into()));
            }
            self.got.extend(batch.iter().map(|(_, l)| l.clone()));
            Ok(())
        }
    }

    #[test]
    fn every_record_is_shipped_once_across_failures_poison_and_restarts() {
        let root = std::env::temp_dir().join(format!("sark-pdp-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (log_dir, state) = (root.join("log"), root.join("state"));
        let mut cfg = LogConfig::new(&log_dir);
        cfg.segment_bytes = 3000;
        let mut log = AuditLog::open(cfg).unwrap();
        for n in 0..50u64 {
            let user = if n == 17 { "poison".to_string() } else { format!("u{n}") };
            log.append(&crate::audit::test_record(u128::from(n), &user, true)).unwrap();
            log.flush().unwrap();
        }
        log.sync().unwrap();
        let mut s = Shipper::new(Fake { got: Vec::new(), fail: 2 }, &log_dir, &state).unwrap();
        s.batch = 8;
        s.breaker.open_for = Duration::ZERO;
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.cursor() <= 50 {
            assert!(Instant::now() < deadline, "stuck at {}", s.cursor());
            let wait = s.step(true).unwrap();
            std::thread::sleep(wait.min(Duration::from_millis(5)));
        }
        assert_eq!(s.sink.got.len(), 49);
        assert_eq!(s.dead_lettered, 1);
        let dead = std::fs::read_to_string(state.join("fake.dead-letter.jsonl")).unwrap();
        assert!(dead.contains("poison") && dead.lines().count() == 1);
        // A restart resumes from the cursor: new records only.
        log.append(&crate::audit::test_record(99, "late", true)).unwrap();
        log.sync().unwrap();
        let mut again = Shipper::new(Fake { got: Vec::new(), fail: 0 }, &log_dir, &state).unwrap();
        while again.cursor() <= 51 {
            again.step(true).unwrap();
        }
        assert_eq!(again.sink.got.len(), 1);
        assert!(again.sink.got[0].contains("late"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn lag_is_published_in_records_seconds_and_bytes_with_its_alarm() {
        use std::sync::atomic::Ordering::Relaxed;
        let root = std::env::temp_dir().join(format!("sark-pdp-sink-lag-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut cfg = LogConfig::new(root.join("log"));
        cfg.segment_bytes = 4096;
        let mut log = AuditLog::open(cfg).unwrap();
        for n in 0..40u64 {
            log.append(&crate::audit::test_record(u128::from(n), &format!("u{n}"), true)).unwrap();
        }
        log.sync().unwrap();
        let total: u64 = segments(&root.join("log")).unwrap().iter().map(|(_, p)| std::fs::metadata(p).unwrap().len()).sum();
        let mut s = Shipper::new(Fake { got: Vec::new(), fail: usize::MAX }, &root.join("log"), &root.join("state")).unwrap();
        s.batch = 10;
        s.max_lag_bytes = total / 2;
        // The destination is down: everything is unshipped, past the bound.
        s.step(true).unwrap();
        assert_eq!(s.stats.lag_bytes.load(Relaxed), total);
        assert!(s.stats.lag_alarm.load(Relaxed));
        // test_record's decisions are stamped at the epoch.
        assert_eq!(s.stats.oldest_pending_ns.load(Relaxed), 1);
        // Back: once everything is shipped, the next measure (a second later) clears it.
        s.sink.fail = 0;
        s.breaker = Breaker::default();
        while s.cursor() <= 40 {
            s.step(true).unwrap();
        }
        assert_eq!(s.stats.oldest_pending_ns.load(Relaxed), 0);
        std::thread::sleep(Duration::from_millis(1100));
        s.step(true).unwrap();
        assert_eq!(s.stats.lag_bytes.load(Relaxed), 0);
        assert!(!s.stats.lag_alarm.load(Relaxed));
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A stand-in for Splunk's collector: checks each request's exact shape and answers 503
    /// to the first one; returns the events it accepted.
    fn hec_receiver() -> (String, std::thread::JoinHandle<Vec<serde_json::Value>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut events = Vec::new();
            for (n, stream) in listener.incoming().enumerate() {
                let mut s = stream.unwrap();
                let mut raw = Vec::new();
                let mut buf = [0u8; 65536];
                let (head_len, body_len) = loop {
                    let k = s.read(&mut buf).unwrap();
                    raw.extend_from_slice(&buf[..k]);
                    let mut hs = [httparse::EMPTY_HEADER; 32];
                    let mut req = httparse::Request::new(&mut hs);
                    if let Ok(httparse::Status::Complete(h)) = req.parse(&raw) {
                        assert_eq!((req.method, req.path), (Some("POST"), Some("/services/collector/event")));
                        let get = |name: &str| req.headers.iter().find(|x| x.name.eq_ignore_ascii_case(name)).map(|x| String::from_utf8_lossy(x.value).to_string());
                        assert_eq!(get("authorization").as_deref(), Some("Splunk tok-123"));
                        let len: usize = get("content-length").unwrap().parse().unwrap();
                        break (h, len);
                    }
                };
                while raw.len() < head_len + body_len {
                    let k = s.read(&mut buf).unwrap();
                    raw.extend_from_slice(&buf[..k]);
                }
                let text = String::from_utf8_lossy(&raw[..head_len]).to_lowercase();
                let body = &raw[head_len..head_len + body_len];
                let body = if text.contains("content-encoding: gzip") {
                    let mut out = String::new();
                    flate2::read::GzDecoder::new(body).read_to_string(&mut out).unwrap();
                    out
                } else {
                    assert!(body.len() <= 1024, "bodies over 1 KiB must be gzipped");
                    String::from_utf8(body.to_vec()).unwrap()
                };
                if n == 0 {
                    s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").unwrap();
                    continue;
                }
                for line in body.lines() {
                    let e: serde_json::Value = serde_json::from_str(line).unwrap();
                    for k in ["time", "host", "source", "sourcetype", "index", "event"] {
                        assert!(e.get(k).is_some(), "{k} missing in {line}");
                    }
                    assert_eq!((e["source"].as_str(), e["sourcetype"].as_str()), (Some("sark"), Some("sark:audit:event")));
                    assert!(e["event"]["decision_id"].is_string() && e["event"].get("crc32c").is_none());
                    events.push(e);
                }
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 27\r\n\r\n{\"text\":\"Success\",\"code\":0}").unwrap();
                if events.len() >= 30 {
                    return events;
                }
            }
            events
        });
        (url, handle)
    }

    #[test]
    fn splunk_hec_gets_its_documented_format_and_a_retry() {
        let root = std::env::temp_dir().join(format!("sark-pdp-hec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut log = AuditLog::open(LogConfig::new(root.join("log"))).unwrap();
        for n in 0..30u64 {
            let mut r = crate::audit::test_record(u128::from(n), &format!("u\"{n}"), n % 3 != 0);
            r.timestamp_ns = 1_795_428_000_123_456_789 + i64::try_from(n).unwrap();
            log.append(&r).unwrap();
        }
        log.sync().unwrap();
        let (url, receiver) = hec_receiver();
        let hec = SplunkHec { url, token: "tok-123".into(), index: "sark_audit".into(), host: "pdp-1".into(), timeout: Duration::from_secs(5) };
        let mut s = Shipper::new(hec, &root.join("log"), &root.join("state")).unwrap();
        s.batch = 10;
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.cursor() <= 30 {
            assert!(Instant::now() < deadline, "stuck at {}", s.cursor());
            let wait = s.step(true).unwrap();
            std::thread::sleep(wait.min(Duration::from_millis(20)));
        }
        let events = receiver.join().unwrap();
        assert_eq!(events.len(), 30);
        let ids: std::collections::BTreeSet<String> = events.iter().map(|e| e["event"]["decision_id"].as_str().unwrap().to_string()).collect();
        assert_eq!(ids.len(), 30, "a record was delivered twice");
        assert_eq!(events[0]["index"], "sark_audit");
        assert_eq!(events[0]["host"], "pdp-1");
        // Each event is the log's record (less its checksum), stamped with its own time.
        let logged: Vec<serde_json::Value> = crate::audit_log::read_all(&root.join("log")).unwrap().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        for (e, mut want) in events.iter().zip(logged) {
            want.as_object_mut().unwrap().remove("crc32c");
            assert_eq!(e["event"], want);
            // (Records n were stamped n ns apart; an f64 of epoch seconds holds ~0.2 µs.)
            assert!((e["time"].as_f64().unwrap() - 1_795_428_000.123_457).abs() < 1e-5, "{}", e["time"]);
        }
        std::fs::remove_dir_all(&root).unwrap();
    }


    #[test]
    fn datadog_gets_json_arrays_within_its_limits() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let receiver = std::thread::spawn(move || {
            let mut all = Vec::new();
            for stream in listener.incoming() {
                let mut s = stream.unwrap();
                let mut raw = Vec::new();
                let mut buf = [0u8; 65536];
                let (head, len) = loop {
                    let k = s.read(&mut buf).unwrap();
                    raw.extend_from_slice(&buf[..k]);
                    if let Some(h) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        let text = String::from_utf8_lossy(&raw[..h]).to_lowercase();
                        assert!(text.starts_with("post /api/v2/logs http/1.1"), "{text}");
                        assert!(text.contains("dd-api-key: key-1"), "{text}");
                        let len: usize = text.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().trim().parse().unwrap();
                        break (h + 4, len);
                    }
                };
                while raw.len() < head + len {
                    let k = s.read(&mut buf).unwrap();
                    raw.extend_from_slice(&buf[..k]);
                }
                let gz = String::from_utf8_lossy(&raw[..head]).to_lowercase().contains("content-encoding: gzip");
                let mut body = String::new();
                if gz {
                    flate2::read::GzDecoder::new(&raw[head..head + len]).read_to_string(&mut body).unwrap();
                } else {
                    body = String::from_utf8_lossy(&raw[head..head + len]).into_owned();
                }
                let entries: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
                assert!(entries.len() <= 1000);
                for e in &entries {
                    assert_eq!((e["ddsource"].as_str(), e["service"].as_str()), (Some("sark"), Some("sark-pdp")));
                    assert_eq!((e["ddtags"].as_str(), e["hostname"].as_str()), (Some("env:test"), Some("pdp-1")));
                    assert!(e["decision_id"].is_string() && e.get("crc32c").is_none());
                    let want = format!("{} {} tool:invoke", e["result"].as_str().unwrap(), e["user_id"].as_str().unwrap());
                    assert_eq!(e["message"].as_str(), Some(want.as_str()));
                }
                all.extend(entries);
                s.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}").unwrap();
                if all.len() >= 1200 {
                    return all;
                }
            }
            all
        });
        let root = std::env::temp_dir().join(format!("sark-pdp-dd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut log = AuditLog::open(LogConfig::new(root.join("log"))).unwrap();
        for n in 0..1200u64 {
            log.append(&crate::audit::test_record(u128::from(n), &format!("u\\{n}"), true)).unwrap();
        }
        log.sync().unwrap();
        let dd = Datadog {
            url,
            api_key: "key-1".into(),
            service: "sark-pdp".into(),
            tags: "env:test".into(),
            host: "pdp-1".into(),
            timeout: Duration::from_secs(5),
        };
        let mut s = Shipper::new(dd, &root.join("log"), &root.join("state")).unwrap();
        s.batch = 1200; // over Datadog's 1000 entries: the sink splits it
        while s.cursor() <= 1200 {
            s.step(true).unwrap();
        }
        let got = receiver.join().unwrap();
        assert_eq!(got.len(), 1200);
        // Every entry is the log's record (less its checksum) with Datadog's fields added.
        let logged: Vec<serde_json::Value> = crate::audit_log::read_all(&root.join("log")).unwrap().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        for (mut e, mut want) in got.into_iter().zip(logged) {
            want.as_object_mut().unwrap().remove("crc32c");
            for k in ["ddsource", "ddtags", "service", "hostname", "message"] {
                e.as_object_mut().unwrap().remove(k);
            }
            assert_eq!(e, want);
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

}
