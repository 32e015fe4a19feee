//! Pre-warming: the questions asked most often lately, read from the tail of the audit
//! log, so that a shard that starts (or swaps its bundle) with an empty cache can evaluate
//! them before its callers ask.
//!
//! With pre-warming on, each typed decision's record carries its question (`replay`, the
//! line's last field: [`replay`], its cache key in hex, a space, then
//! [`crate::input::SarkInput::write_replay`]). [`scan`] reads the newest segments back to a
//! time or a byte budget, counts the questions by cache key (which leaves out what
//! changes per request: request and session ids, the time; 32 bytes per distinct
//! question), keeps the `top` most frequent, and reads those questions back in a second
//! pass over the same lines. A scan across a bundle swap counts a question under each
//! revision's key: its counts split, and it may be evaluated twice.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::time::Instant;

use crate::audit_log::{replay_of, segments, unescape};
use crate::input::SarkInput;
use crate::key::CacheKey;

/// A record's `replay` for question `input` with cache key `key` (`None`: not replayable).
pub fn replay(key: CacheKey, input: &SarkInput, with_parameters: bool) -> Option<String> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(640);
    write!(out, "{:032x} ", key.0).ok()?;
    input.write_replay(&mut out, with_parameters)?;
    String::from_utf8(out).ok()
}

/// A `replay` (still escaped) split into its key and its question's escaped JSON.
fn split(escaped: &str) -> Option<(u128, &str)> {
    let (hex, json) = escaped.split_at_checked(32)?;
    Some((u128::from_str_radix(hex, 16).ok()?, json.strip_prefix(' ')?))
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Records read (in the window and the budget), and those that carried a question.
    pub records: u64,
    pub replayable: u64,
    /// Distinct questions among them.
    pub distinct: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// The most frequent questions, most frequent first, with their counts.
    pub top: Vec<(u64, SarkInput)>,
}

/// The `top` questions asked most often since `since_ns` in the audit log at `dir`,
/// reading at most `max_bytes` of its newest segments.
///
/// # Errors
/// The directory or a segment cannot be read.
pub fn scan(dir: &Path, since_ns: i64, max_bytes: u64, top: usize) -> io::Result<Scan> {
    let started = Instant::now();
    // The newest segments that fit the budget (the newest one always).
    let mut chosen = Vec::new();
    let mut bytes = 0u64;
    for (_, path) in segments(dir)?.into_iter().rev() {
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        if !chosen.is_empty() && bytes + len > max_bytes {
            break;
        }
        bytes += len;
        chosen.push(path);
    }
    let mut counts: HashMap<u128, u64> = HashMap::new();
    let mut found = Scan { bytes, ..Scan::default() };
    let each = |f: &mut dyn FnMut(&str)| -> io::Result<()> {
        for path in &chosen {
            // A segment being written ends in a partial line; it is left out.
            let text = std::fs::read(path)?;
            let text = String::from_utf8_lossy(&text);
            for line in text.split_inclusive('\n').filter_map(|l| l.strip_suffix('\n')) {
                f(line);
            }
        }
        Ok(())
    };
    each(&mut |line| {
        found.records += 1;
        if let Some((replay, ts)) = replay_of(line)
            && ts >= since_ns
            && let Some((key, _)) = split(replay)
        {
            found.replayable += 1;
            *counts.entry(key).or_default() += 1;
        }
    })?;
    found.distinct = counts.len() as u64;
    let mut ranked: Vec<(u64, u128)> = counts.into_iter().map(|(k, n)| (n, k)).collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked.truncate(top);
    let wanted: std::collections::HashSet<u128> = ranked.iter().map(|(_, k)| *k).collect();
    let mut questions: HashMap<u128, SarkInput> = HashMap::new();
    each(&mut |line| {
        if questions.len() < wanted.len()
            && let Some((replay, ts)) = replay_of(line)
            && ts >= since_ns
            && let Some((key, json)) = split(replay)
            && wanted.contains(&key)
            && !questions.contains_key(&key)
            && let Some(input) = unescape(json).and_then(|t| SarkInput::from_replay(&t).ok())
        {
            questions.insert(key, input);
        }
    })?;
    found.top = ranked.into_iter().filter_map(|(n, h)| questions.remove(&h).map(|q| (n, q))).collect();
    found.seconds = started.elapsed().as_secs_f64();
    Ok(found)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::audit::AuditRecord;
    use crate::audit_log::{AuditLog, LogConfig};
    use crate::input::{Blob, ToolFields, UserFields};
    use crate::point::Answer;

    fn question(user: &str) -> SarkInput {
        SarkInput {
            user: UserFields { id: user.into(), roles: vec!["dev".into()], ..UserFields::default() },
            action: "tool:invoke".into(),
            tool: Some(ToolFields { name: "t".into(), sensitivity_level: Some("medium".into()), ..ToolFields::default() }),
            context: Blob::Json(r#"{"vpn": true, "request_id": "r"}"#.into()),
            ..SarkInput::default()
        }
    }

    fn record(input: &SarkInput, ts: i64, id: u128) -> AuditRecord {
        let answer = Answer { decision: Arc::new(crate::Decision::deny(crate::EvalError::Policy("x".into()), crate::EngineKind::Rvm, "r".into())), cache_hit: false, ttl: Duration::ZERO };
        let mut r = AuditRecord::for_typed(input, &crate::input::ContextIds::default(), &answer, id, ts, 1);
        let mut h = crate::key::KeyHasher::new("rev", "data.sark.decision");
        r.replay = replay(input.cache_key(&mut h).unwrap().0, input, false);
        r
    }

    #[test]
    fn the_most_frequent_recent_questions_come_back_exactly() {
        let dir = std::env::temp_dir().join(format!("pdp-prewarm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut log = AuditLog::open(LogConfig::new(&dir)).unwrap();
        let now = 1_795_428_000_000_000_000i64;
        let mut id = 0;
        let mut push = |log: &mut AuditLog, input: &SarkInput, ts: i64, n: usize| {
            for _ in 0..n {
                id += 1;
                // Each asking has its own request id: the same question all the same.
                let mut asked = input.clone();
                asked.context = Blob::Json(format!(r#"{{"vpn": true, "request_id": "r-{id}"}}"#));
                log.append(&record(&asked, ts, id)).unwrap();
            }
        };
        // Old traffic (outside the window) is the most frequent of all; it does not count.
        push(&mut log, &question("old"), now - 3_600_000_000_000, 50);
        for (user, n) in [("a", 9), ("b", 5), ("c", 7), ("d", 1)] {
            push(&mut log, &question(user), now, n);
        }
        // A question with parameters is not replayable unless asked for.
        let mut with_params = question("p");
        with_params.parameters = Blob::Json(r#"{"api_token": "s3cret"}"#.into());
        push(&mut log, &with_params, now, 20);
        log.flush().unwrap();
        drop(log);
        let s = scan(&dir, now - 600_000_000_000, 1 << 30, 3).unwrap();
        assert_eq!((s.records, s.replayable, s.distinct), (92, 22, 4), "{s:?}");
        let users: Vec<(u64, &str)> = s.top.iter().map(|(n, q)| (*n, q.user.id.as_str())).collect();
        assert_eq!(users, [(9, "a"), (7, "c"), (5, "b")]);
        // Exactly the question that was asked: the same cache key.
        let mut h = crate::key::KeyHasher::new("rev", "data.sark.decision");
        let key = |q: &SarkInput, h: &mut crate::key::KeyHasher| q.cache_key(h).unwrap().0;
        assert_eq!(key(&s.top[0].1, &mut h), key(&question("a"), &mut h));
        let text = std::fs::read_to_string(crate::audit_log::segments(&dir).unwrap()[0].1.clone()).unwrap();
        assert!(!text.contains("s3cret"), "parameters stay out of the log unless asked for");
        // The sinks ship each line without its replay, as valid JSON; the checksum holds.
        let line = text.lines().nth(60).unwrap();
        assert!(crate::audit_log::verify_line(line).is_some() && line.contains(",\"replay\":\""));
        let shipped = crate::audit_log::shipped_body(line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&format!("{shipped}}}")).unwrap();
        assert!(v.get("replay").is_none() && v["user_id"] == "b" && v["bundle_revision"] == "r", "{v}");
        // A byte budget smaller than the log still reads the newest segment.
        assert!(scan(&dir, 0, 1, 3).unwrap().records > 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
