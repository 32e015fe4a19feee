//! CPU time per thread from /proc, so a run can say which side was the bottleneck: the
//! server's shards and audit writer (by thread name, given the server's pid) and this
//! process.

use std::collections::BTreeMap;
use std::path::Path;

/// Clock ticks per second of /proc's utime and stime (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// utime + stime, in ticks, of each thread of `pid`, summed by thread name.
pub fn threads(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in dir.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_string();
        if let Some(t) = ticks(&task.path().join("stat")) {
            *out.entry(name).or_insert(0) += t;
        }
    }
    out
}

/// utime + stime of this whole process, in ticks.
pub fn own() -> u64 {
    ticks(Path::new("/proc/self/stat")).unwrap_or(0)
}

fn ticks(stat: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(stat).ok()?;
    // Fields after the ")" closing the command name: state is the first, utime the 12th.
    let mut fields = text.get(text.rfind(')')? + 1..)?.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// Percent of one core each named thread used between two samples `secs` apart.
pub fn percent(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, secs: f64) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(name, t)| {
            let d = t.saturating_sub(before.get(name).copied().unwrap_or(0));
            (name.clone(), (d as f64 / TICKS / secs * 100.0).round())
        })
        .filter(|(_, p)| *p > 0.0)
        .collect()
}
