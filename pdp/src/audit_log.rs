//! The durable audit log: numbered segment files of JSON lines in one directory, written
//! by the audit writer thread alone.
//!
//! Every line is one record with a sequence number that grows by one across segments and
//! restarts, and a CRC32C of the line so a torn tail is found:
//!
//! ```text
//! {"seq":42,"decision_id":"…",…,"bundle_revision":"sark-default-1","crc32c":"1a2b3c4d"}\n
//! ```
//!
//! The checksum covers the line's bytes before `,"crc32c":` — each line stays plain JSON
//! for anyone reading the files. Segments are named `audit-<first seq, 20 digits>.jsonl`
//! and rotate by size and age. On open, the last segment is scanned: a tail that is torn
//! (no newline, a bad checksum, a sequence gap) is cut off, what was cut is reported, and
//! the sequence continues after the last good line.
//!
//! Durability ([`Durability`]): `none` leaves lines in the page cache; `batch` (default)
//! makes them durable (`fdatasync`) every `commit_interval` or `commit_records`; `sync`
//! makes every pass durable before the writer reports it, so a shard can hold a reply until
//! its record is on disk.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::audit::AuditRecord;

/// When lines are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Page cache only: a machine crash can lose the last seconds.
    None,
    /// Group commit every `commit_interval` or `commit_records` (the default).
    Batch,
    /// Every record durable before its shard may answer.
    Sync,
}

impl Durability {
    pub fn parse(s: &str) -> Option<Durability> {
        match s {
            "none" => Some(Durability::None),
            "batch" => Some(Durability::Batch),
            "sync" => Some(Durability::Sync),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Batch => "batch",
            Durability::Sync => "sync",
        }
    }
}

/// Where and how the log is written.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    pub commit_interval: Duration,
    pub commit_records: usize,
    pub segment_bytes: u64,
    pub segment_age: Duration,
    /// Closed segments older than this are deleted (never one holding a record a sink has
    /// not shipped: see `shipped`).
    pub retention_age: Option<Duration>,
    /// Closed segments are deleted, oldest first, while all segments together exceed this.
    pub retention_bytes: Option<u64>,
    /// Each sink's next sequence number to ship ([`crate::sink`]): segments holding the
    /// lowest of them or later records are kept whatever their age and size.
    pub shipped: Vec<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// Write with plain syscalls even where io_uring is available.
    pub plain_io: bool,
    /// Fault injection for tests: hold each pass's lines this long before writing them
    /// (`SARK_PDP_FAULT_AUDIT_DELAY_MS`), so a crash finds records still in memory.
    pub fault_delay: Duration,
}

impl LogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            durability: Durability::Batch,
            commit_interval: Duration::from_millis(10),
            commit_records: 4096,
            segment_bytes: 64 << 20,
            segment_age: Duration::from_secs(3600),
            retention_age: None,
            retention_bytes: None,
            shipped: Vec::new(),
            plain_io: false,
            fault_delay: Duration::ZERO,
        }
    }
}

/// What opening the log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The sequence number the next record gets.
    pub next_seq: u64,
    /// Bytes cut off the last segment's torn tail (0: it was whole).
    pub truncated_bytes: u64,
    pub segments: usize,
}

/// The writer's handle on the log.
#[derive(Debug)]
pub struct AuditLog {
    cfg: LogConfig,
    file: File,
    seq: u64,
    segment_bytes: u64,
    segment_opened: Instant,
    buf: String,
    io: crate::audit_io::AuditIo,
    unsynced: usize,
    last_sync: Instant,
    pub recovery: Recovery,
}

const SUFFIX: &str = ",\"crc32c\":\"";
/// Bytes handed to the kernel per write.
const WRITE_CHUNK: usize = 64 * 1024;

fn segment_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.jsonl")
}

/// The segments in `dir`, oldest first, with their first sequence numbers. Only names
/// exactly as [`segment_name`] writes them count: a stray `audit-1.jsonl` is not a segment
/// (the sinks open segments by that name, and would find nothing under it).
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(n) = name.strip_prefix("audit-").and_then(|n| n.strip_suffix(".jsonl"))
            && let Ok(first) = n.parse::<u64>()
            && segment_name(first) == name
        {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

/// A line's record without its checksum and closing brace: `{"seq":…,"bundle_revision":…`
/// (what a sink splices into its own envelope).
pub fn record_body(line: &str) -> Option<&str> {
    line.get(..line.rfind(SUFFIX)?).filter(|r| r.starts_with('{'))
}

/// What precedes a record's `replay` field, its last ([`crate::audit::AuditRecord::replay`]).
/// The text cannot occur earlier in a line: inside a JSON string a quote is escaped, and
/// no other field has a key followed by a string value named so.
pub const REPLAY_FIELD: &str = ",\"replay\":";

/// [`record_body`] without the `replay` field: what the sinks ship (a replay holds the
/// whole question, which is for this node's pre-warming only).
pub fn shipped_body(line: &str) -> Option<&str> {
    record_body(line).map(|body| split_replay(body).0)
}

/// A record body split at its `replay` field: what comes before it, and the replay's
/// string, still JSON-escaped (`None` without one).
fn split_replay(body: &str) -> (&str, Option<&str>) {
    let at = body.rfind(concat!(",\"replay\":", "\""));
    match at.and_then(|at| Some((body.get(..at)?, body.get(at + REPLAY_FIELD.len() + 1..)?))) {
        Some((before, replay)) => (before, replay.strip_suffix('"')),
        None => (body, None),
    }
}

/// A record line's `replay`, still JSON-escaped (cheap to count; [`unescape`] the few
/// that are used), and its timestamp, ns; `None` without either.
pub fn replay_of(line: &str) -> Option<(&str, i64)> {
    let body = record_body(line)?;
    let escaped = split_replay(body).1?;
    let ts = body.split_once("\"timestamp\":\"")?.1.split_once('"')?.0;
    Some((escaped, crate::audit::parse_rfc3339(ts)?))
}

/// A JSON string's content as [`replay_of`] gives it, unescaped.
pub fn unescape(escaped: &str) -> Option<String> {
    serde_json::from_str(&format!("\"{escaped}\"")).ok()
}

/// The sequence number of a whole, intact line (without its newline); `None` when the
/// checksum or the shape is wrong.
pub fn verify_line(line: &str) -> Option<u64> {
    let body = record_body(line)?;
    let tail = line.get(body.len()..)?;
    let hex = tail.strip_prefix(SUFFIX)?.strip_suffix("\"}")?;
    let want = u32::from_str_radix(hex, 16).ok()?;
    if hex.len() != 8 || crc32c::crc32c(body.as_bytes()) != want {
        return None;
    }
    let rest = body.strip_prefix("{\"seq\":")?;
    let end = rest.find(',')?;
    rest.get(..end)?.parse().ok()
}

/// Every intact line of every segment, in order (what a sink or a test reads).
pub fn read_all(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for (_, path) in segments(dir)? {
        let text = std::fs::read_to_string(&path)?;
        for line in text.split_inclusive('\n') {
            let Some(line) = line.strip_suffix('\n') else { break };
            if verify_line(line).is_none() {
                break;
            }
            out.push(line.to_string());
        }
    }
    Ok(out)
}

impl AuditLog {
    /// Open (or create) the log in `cfg.dir`, recovering the last segment.
    ///
    /// # Errors
    /// The directory or a segment cannot be read, created or truncated.
    pub fn open(cfg: LogConfig) -> io::Result<AuditLog> {
        std::fs::create_dir_all(&cfg.dir)?;
        let segs = segments(&cfg.dir)?;
        let (file, seq, bytes, truncated) = match segs.last() {
            None => {
                let f = OpenOptions::new().create(true).append(true).open(cfg.dir.join(segment_name(1)))?;
                (f, 1, 0, 0)
            }
            Some((first, path)) => {
                let mut f = OpenOptions::new().read(true).write(true).open(path)?;
                let mut text = Vec::new();
                f.read_to_end(&mut text)?;
                let (mut good, mut next) = (0usize, *first);
                for line in text.split_inclusive(|b| *b == b'\n') {
                    let whole = line.strip_suffix(b"\n").and_then(|l| std::str::from_utf8(l).ok());
                    match whole.and_then(verify_line) {
                        Some(s) if s == next => {
                            next += 1;
                            good += line.len();
                        }
                        _ => break,
                    }
                }
                let cut = (text.len() - good) as u64;
                if cut > 0 {
                    f.set_len(good as u64)?;
                    f.sync_data()?;
                }
                f.seek(SeekFrom::End(0))?;
                (f, next, good as u64, cut)
            }
        };
        let now = Instant::now();
        let io = if cfg.plain_io { crate::audit_io::AuditIo::Plain } else { crate::audit_io::AuditIo::probe() };
        Ok(AuditLog {
            recovery: Recovery { next_seq: seq, truncated_bytes: truncated, segments: segs.len().max(1) },
            cfg,
            file,
            seq,
            segment_bytes: bytes,
            segment_opened: now,
            buf: String::with_capacity(WRITE_CHUNK + 4096),
            io,
            unsynced: 0,
            last_sync: now,
        })
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    pub fn durability(&self) -> Durability {
        self.cfg.durability
    }

    /// How lines reach the disk: "io_uring write+fdatasync" or "write+fdatasync".
    pub fn io_name(&self) -> &'static str {
        self.io.name()
    }

    /// Append one record (buffered; written every 64 KiB and by [`Self::flush`]).
    ///
    /// # Errors
    /// A write or a rotation failed.
    pub fn append(&mut self, r: &AuditRecord) -> io::Result<()> {
        let start = self.buf.len();
        let _ = write!(self.buf, "{{\"seq\":{},", self.seq);
        r.write_json_fields(&mut self.buf);
        let crc = crc32c::crc32c(self.buf.get(start..).unwrap_or("").as_bytes());
        let _ = writeln!(self.buf, "{SUFFIX}{crc:08x}\"}}");
        self.seq += 1;
        self.unsynced += 1;
        if self.buf.len() >= WRITE_CHUNK {
            self.write_buf()?;
        }
        Ok(())
    }

    fn write_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.io.write_all(&mut self.file, self.buf.as_bytes())?;
        self.segment_bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Hand every appended line to the kernel, and rotate if the segment is due.
    ///
    /// # Errors
    /// A write or a rotation failed.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.cfg.fault_delay.is_zero() && !self.buf.is_empty() {
            std::thread::sleep(self.cfg.fault_delay);
        }
        self.write_buf()?;
        if self.segment_bytes >= self.cfg.segment_bytes || (self.segment_bytes > 0 && self.segment_opened.elapsed() >= self.cfg.segment_age) {
            self.io.sync_data(&self.file)?;
            self.file = OpenOptions::new().create(true).append(true).open(self.cfg.dir.join(segment_name(self.seq)))?;
            self.segment_bytes = 0;
            self.segment_opened = Instant::now();
            // The new segment's directory entry must survive a crash too.
            File::open(&self.cfg.dir)?.sync_all()?;
            self.retain()?;
        }
        Ok(())
    }

    /// Delete closed segments past the retention age or beyond the retention size, oldest
    /// first, stopping at the first one that holds a record not yet shipped. Returns how
    /// many were deleted.
    ///
    /// # Errors
    /// The directory cannot be listed or a segment removed.
    pub fn retain(&mut self) -> io::Result<usize> {
        if self.cfg.retention_age.is_none() && self.cfg.retention_bytes.is_none() {
            return Ok(0);
        }
        let segs = segments(&self.cfg.dir)?;
        let sizes: Vec<u64> = segs.iter().map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len())).collect();
        let mut total: u64 = sizes.iter().sum();
        let unshipped = self.cfg.shipped.iter().map(|c| c.load(std::sync::atomic::Ordering::Acquire)).min().unwrap_or(u64::MAX);
        let mut removed = 0;
        // The last segment is the one being written.
        for (i, (_, path)) in segs.iter().enumerate().take(segs.len().saturating_sub(1)) {
            // A segment's records run up to the next segment's first sequence number.
            let next_first = segs.get(i + 1).map_or(u64::MAX, |(f, _)| *f);
            if next_first > unshipped {
                break;
            }
            let size = sizes.get(i).copied().unwrap_or(0);
            let old = self.cfg.retention_age.is_some_and(|age| {
                std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|e| e > age)
            });
            let big = self.cfg.retention_bytes.is_some_and(|b| total > b);
            if !old && !big {
                break;
            }
            std::fs::remove_file(path)?;
            total -= size;
            removed += 1;
        }
        Ok(removed)
    }

    /// Whether the durability mode wants an `fdatasync` now.
    pub fn commit_due(&self) -> bool {
        match self.cfg.durability {
            Durability::None => false,
            Durability::Sync => self.unsynced > 0,
            Durability::Batch => self.unsynced > 0 && (self.unsynced >= self.cfg.commit_records || self.last_sync.elapsed() >= self.cfg.commit_interval),
        }
    }

    /// Flush and make everything appended durable.
    ///
    /// # Errors
    /// The write or the `fdatasync` failed.
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        self.io.sync_data(&self.file)?;
        self.unsynced = 0;
        self.last_sync = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sark-pdp-log-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn record(n: u64) -> AuditRecord {
        crate::audit::test_record(u128::from(n), &format!("user-{n}"), false)
    }

    #[test]
    fn only_canonical_names_are_segments() {
        let d = dir("names");
        std::fs::create_dir_all(&d).unwrap();
        for name in ["audit-1.jsonl", "audit-00000000000000000007.jsonl", "audit-x.jsonl", "audit-00000000000000000003.jsonl.bak"] {
            std::fs::write(d.join(name), "").unwrap();
        }
        let found: Vec<u64> = segments(&d).unwrap().into_iter().map(|(first, _)| first).collect();
        assert_eq!(found, [7]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn lines_are_json_with_a_sequence_and_a_checksum() {
        lines_through(false);
        lines_through(true);
    }

    /// Through io_uring where this kernel allows it, and through plain syscalls.
    fn lines_through(plain_io: bool) {
        let d = dir(if plain_io { "lines-plain" } else { "lines-uring" });
        let mut cfg = LogConfig::new(&d);
        cfg.plain_io = plain_io;
        let mut log = AuditLog::open(cfg).unwrap();
        if plain_io {
            assert_eq!(log.io_name(), "write+fdatasync");
        }
        for n in 0..3 {
            log.append(&record(n)).unwrap();
        }
        log.sync().unwrap();
        let lines = read_all(&d).unwrap();
        assert_eq!(lines.len(), 3);
        for (i, l) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["seq"], i as u64 + 1);
            assert_eq!(v["user_id"], format!("user-{i}"));
            assert_eq!(verify_line(l), Some(i as u64 + 1));
        }
        // One flipped byte fails the checksum.
        assert_eq!(verify_line(&lines[0].replace("user-0", "user-9")), None);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_sequence_continues() {
        let d = dir("torn");
        let mut log = AuditLog::open(LogConfig::new(&d)).unwrap();
        for n in 0..10 {
            log.append(&record(n)).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let (_, path) = segments(&d).unwrap().pop().unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        // Tear the last record in half, as a crash mid-write would.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 40).unwrap();
        drop(f);
        let mut log = AuditLog::open(LogConfig::new(&d)).unwrap();
        assert_eq!(log.recovery.next_seq, 10);
        assert!(log.recovery.truncated_bytes > 0);
        log.append(&record(99)).unwrap();
        log.sync().unwrap();
        let lines = read_all(&d).unwrap();
        let seqs: Vec<u64> = lines.iter().map(|l| verify_line(l).unwrap()).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        assert!(lines[9].contains("user-99"));
        // Garbage after the last good line is cut as well.
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":11,\"oops\n").unwrap();
        drop(f);
        let log = AuditLog::open(LogConfig::new(&d)).unwrap();
        assert_eq!(log.recovery.next_seq, 11);
        assert_eq!(log.recovery.truncated_bytes, 16);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn segments_rotate_by_size_and_age_and_read_back_in_order() {
        let d = dir("rotate");
        let mut cfg = LogConfig::new(&d);
        cfg.segment_bytes = 2000;
        let mut log = AuditLog::open(cfg.clone()).unwrap();
        for n in 0..20 {
            log.append(&record(n)).unwrap();
            log.flush().unwrap();
        }
        log.sync().unwrap();
        let segs = segments(&d).unwrap();
        assert!(segs.len() >= 4, "{segs:?}");
        assert_eq!(segs[0].0, 1);
        let lines = read_all(&d).unwrap();
        assert_eq!(lines.iter().map(|l| verify_line(l).unwrap()).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
        // Reopening continues in the last segment.
        drop(log);
        let log = AuditLog::open(cfg.clone()).unwrap();
        assert_eq!(log.next_seq(), 21);
        // By age: a segment older than segment_age rotates at the next flush.
        cfg.segment_bytes = u64::MAX;
        cfg.segment_age = Duration::ZERO;
        drop(log);
        let mut log = AuditLog::open(cfg).unwrap();
        let before = segments(&d).unwrap().len();
        log.append(&record(21)).unwrap();
        log.flush().unwrap();
        assert_eq!(segments(&d).unwrap().len(), before + 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn retention_deletes_old_segments_but_never_unshipped_ones() {
        let d = dir("retain");
        let mut cfg = LogConfig::new(&d);
        cfg.segment_bytes = 2000;
        cfg.retention_bytes = Some(5000);
        let shipped = Arc::new(std::sync::atomic::AtomicU64::new(1));
        cfg.shipped = vec![shipped.clone()];
        let mut log = AuditLog::open(cfg).unwrap();
        for n in 0..40 {
            log.append(&record(n)).unwrap();
            log.flush().unwrap();
        }
        // Nothing shipped yet: every segment stays, over the size bound or not.
        let all = segments(&d).unwrap().len();
        assert!(all >= 8, "{all}");
        assert_eq!(log.retain().unwrap(), 0);
        // Shipped up to seq 20: only segments wholly before it may go, oldest first, and
        // only while the total is over 5000 bytes.
        shipped.store(20, std::sync::atomic::Ordering::Release);
        let removed = log.retain().unwrap();
        assert!(removed > 0);
        let left = segments(&d).unwrap();
        assert_eq!(left.len(), all - removed);
        assert!(left[0].0 <= 20, "a segment holding unshipped records was deleted: {left:?}");
        // Everything shipped: down to the size bound (the active segment always stays).
        shipped.store(u64::MAX, std::sync::atomic::Ordering::Release);
        log.retain().unwrap();
        let total: u64 = segments(&d).unwrap().iter().map(|(_, p)| std::fs::metadata(p).unwrap().len()).sum();
        assert!(total <= 5000 + 2000, "{total}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn durability_modes_ask_for_commits_as_documented() {
        let d = dir("modes");
        let mut cfg = LogConfig::new(&d);
        cfg.durability = Durability::Batch;
        cfg.commit_records = 3;
        cfg.commit_interval = Duration::from_secs(3600);
        let mut log = AuditLog::open(cfg.clone()).unwrap();
        log.append(&record(0)).unwrap();
        assert!(!log.commit_due());
        log.append(&record(1)).unwrap();
        log.append(&record(2)).unwrap();
        assert!(log.commit_due());
        log.sync().unwrap();
        assert!(!log.commit_due());
        drop(log);
        cfg.durability = Durability::Sync;
        let mut log = AuditLog::open(cfg.clone()).unwrap();
        log.append(&record(3)).unwrap();
        assert!(log.commit_due());
        drop(log);
        cfg.durability = Durability::None;
        let mut log = AuditLog::open(cfg).unwrap();
        log.append(&record(4)).unwrap();
        assert!(!log.commit_due());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
