//! The PostgreSQL sink: the audit log as rows of SARK's `policy_decision_logs`.
//!
//! On its first connection the sink runs the schema migrations (under an advisory lock, so
//! nodes starting together do not race): the table with SARK-SPEC's columns plus where each
//! row came from (`node_id`, `seq`), its indexes, and `sark_pdp_sink_cursors`, where each
//! node keeps the next sequence number it will ship.
//!
//! Each batch is one transaction: lock the node's cursor row, write the rows with a binary
//! `COPY`, move the cursor past the batch, commit. A crash anywhere leaves the rows and the
//! cursor together, both before the batch or both after it. A batch sent again — after a
//! restart from an older cursor file, or after a commit whose acknowledgement was lost —
//! overlaps the stored cursor: its records already in the table (same node, sequence
//! number and decision id) are left out, so no crash and no retry writes a row twice, and
//! the cursor does not move back. A record from a different log that reuses a sequence
//! number (a node restarted on an empty audit directory) has another decision id: it is
//! written, and the cursor follows the new log.
//!
//! Errors: PostgreSQL's data and integrity errors (SQLSTATE classes 22, 23) and a record
//! that does not parse refuse the batch (the shipper isolates the record and dead-letters
//! it); anything else — connection refused or lost, timeouts, a server shutting down — is
//! retried on a new connection.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls};
use serde::Deserialize;

use crate::audit::parse_rfc3339;
use crate::sink::{SendError, Sink};

/// Each migration once, in order; the version applied is kept in `sark_pdp_schema_migrations`.
const MIGRATIONS: &[&str] = &["CREATE TABLE IF NOT EXISTS policy_decision_logs (
        id BIGSERIAL PRIMARY KEY,
        decision_id TEXT NOT NULL,
        node_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        timestamp TIMESTAMPTZ NOT NULL,
        allow BOOLEAN NOT NULL,
        result TEXT NOT NULL,
        user_id TEXT NOT NULL,
        user_roles TEXT[] NOT NULL,
        user_teams TEXT[] NOT NULL,
        action TEXT NOT NULL,
        tool_name TEXT,
        sensitivity_level TEXT,
        server_id TEXT,
        server_name TEXT,
        reasons TEXT[] NOT NULL,
        policies_evaluated TEXT[] NOT NULL,
        policy_results JSONB NOT NULL,
        evaluation_duration_us BIGINT NOT NULL,
        cache_hit BOOLEAN NOT NULL,
        client_ip TEXT,
        request_id TEXT,
        session_id TEXT,
        mfa_verified BOOLEAN,
        bundle_revision TEXT NOT NULL,
        error_code INTEGER
    );
    CREATE INDEX IF NOT EXISTS policy_decision_logs_time_action_result
        ON policy_decision_logs (timestamp DESC, action, result) INCLUDE (evaluation_duration_us);
    CREATE INDEX IF NOT EXISTS policy_decision_logs_user_id ON policy_decision_logs (user_id);
    CREATE INDEX IF NOT EXISTS policy_decision_logs_tool_name ON policy_decision_logs (tool_name);
    CREATE INDEX IF NOT EXISTS policy_decision_logs_node_seq ON policy_decision_logs (node_id, seq);
    CREATE TABLE IF NOT EXISTS sark_pdp_sink_cursors (
        node_id TEXT NOT NULL,
        sink TEXT NOT NULL,
        next_seq BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (node_id, sink)
    );"];

/// The columns `COPY` fills, in order, with their types.
const COLUMNS: &str = "decision_id, node_id, seq, timestamp, allow, result, user_id, user_roles, user_teams, action, \
    tool_name, sensitivity_level, server_id, server_name, reasons, policies_evaluated, policy_results, \
    evaluation_duration_us, cache_hit, client_ip, request_id, session_id, mfa_verified, bundle_revision, error_code";
const TYPES: [Type; 25] = [
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::BOOL,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::JSONB,
    Type::INT8,
    Type::BOOL,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BOOL,
    Type::TEXT,
    Type::INT4,
];

/// One audit log line, as the table wants it.
#[derive(Debug, Deserialize)]
struct Row {
    decision_id: String,
    timestamp: String,
    allow: bool,
    result: String,
    user_id: String,
    user_roles: Vec<String>,
    user_teams: Vec<String>,
    action: String,
    tool_name: Option<String>,
    sensitivity_level: Option<String>,
    server_id: Option<String>,
    server_name: Option<String>,
    reasons: Vec<String>,
    policies_evaluated: Vec<String>,
    policy_results: serde_json::Value,
    evaluation_duration_us: i64,
    cache_hit: bool,
    client_ip: Option<String>,
    request_id: Option<String>,
    session_id: Option<String>,
    mfa_verified: Option<bool>,
    bundle_revision: String,
    error_code: Option<i32>,
}

/// Ships to `policy_decision_logs` (see the module doc).
pub struct Postgres {
    config: postgres::Config,
    /// Whose log this is: the cursor row's key and each row's `node_id`.
    node_id: String,
    /// The connection, made on first use and dropped after any error.
    client: Option<Client>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Postgres(node {}, {})", self.node_id, if self.client.is_some() { "connected" } else { "not connected" })
    }
}

impl Postgres {
    /// A sink for `url` (`postgresql://…` or `host=… port=…`), shipping as `node_id`, with
    /// `timeout` for connecting and for each statement.
    ///
    /// # Errors
    /// `url` does not parse.
    pub fn new(url: &str, node_id: &str, timeout: Duration) -> Result<Postgres, String> {
        let mut config: postgres::Config = url.parse().map_err(|e| format!("postgres url: {e}"))?;
        config.connect_timeout(timeout);
        config.options(&format!("-c statement_timeout={}", timeout.as_millis().max(1)));
        config.application_name("sark-pdp");
        Ok(Postgres { config, node_id: node_id.to_string(), client: None })
    }

    fn connect(&mut self) -> Result<&mut Client, postgres::Error> {
        let client = match self.client.take() {
            Some(c) => c,
            None => {
                let mut c = self.config.connect(NoTls)?;
                migrate(&mut c)?;
                c
            }
        };
        Ok(self.client.insert(client))
    }

    /// One batch in one transaction: rows (with their sequence numbers) and cursor together.
    fn write(&mut self, rows: &[(i64, Row)]) -> Result<(), postgres::Error> {
        let node = self.node_id.clone();
        let client = self.connect()?;
        let mut tx = client.transaction()?;
        tx.execute("INSERT INTO sark_pdp_sink_cursors (node_id, sink, next_seq) VALUES ($1, 'postgres', 1) ON CONFLICT DO NOTHING", &[&node])?;
        let stored: i64 = tx.query_one("SELECT next_seq FROM sark_pdp_sink_cursors WHERE node_id = $1 AND sink = 'postgres' FOR UPDATE", &[&node])?.get(0);
        let first = rows.first().map_or(0, |(s, _)| *s);
        // Overlapping the cursor: leave out what is already there.
        let mut present = HashMap::new();
        if first < stored {
            for r in tx.query("SELECT seq, decision_id FROM policy_decision_logs WHERE node_id = $1 AND seq >= $2 AND seq < $3", &[&node, &first, &stored])? {
                present.insert(r.get::<_, i64>(0), r.get::<_, String>(1));
            }
        }
        // A row at one of this batch's sequence numbers with another decision id: the stored
        // cursor is another log's (this node restarted on an empty audit directory).
        let foreign = rows.iter().any(|(seq, r)| present.get(seq).is_some_and(|id| *id != r.decision_id));
        let copy = tx.copy_in(&format!("COPY policy_decision_logs ({COLUMNS}) FROM STDIN BINARY"))?;
        let mut w = BinaryCopyInWriter::new(copy, &TYPES);
        for (seq, r) in rows {
            if present.get(seq) == Some(&r.decision_id) {
                continue;
            }
            let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(parse_rfc3339(&r.timestamp).and_then(|n| u64::try_from(n).ok()).unwrap_or(0));
            let values: [&(dyn ToSql + Sync); 25] = [
                &r.decision_id,
                &node,
                seq,
                &at,
                &r.allow,
                &r.result,
                &r.user_id,
                &r.user_roles,
                &r.user_teams,
                &r.action,
                &r.tool_name,
                &r.sensitivity_level,
                &r.server_id,
                &r.server_name,
                &r.reasons,
                &r.policies_evaluated,
                &r.policy_results,
                &r.evaluation_duration_us,
                &r.cache_hit,
                &r.client_ip,
                &r.request_id,
                &r.session_id,
                &r.mfa_verified,
                &r.bundle_revision,
                &r.error_code,
            ];
            w.write(&values)?;
        }
        w.finish()?;
        // Past the batch; never back over what this log shipped before (a batch sent again).
        let past = rows.last().map_or(stored, |(s, _)| s.saturating_add(1));
        let next = if foreign { past } else { past.max(stored) };
        tx.execute("UPDATE sark_pdp_sink_cursors SET next_seq = $2, updated_at = now() WHERE node_id = $1 AND sink = 'postgres'", &[&node, &next])?;
        tx.commit()
    }
}

/// Bring the schema to the latest version (each migration once, under an advisory lock).
fn migrate(client: &mut Client) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    // An arbitrary constant: the lock every sark-pdp migration takes.
    tx.execute("SELECT pg_advisory_xact_lock(7474001)", &[])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS sark_pdp_schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")?;
    let done: i32 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM sark_pdp_schema_migrations", &[])?.get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        if version > done {
            tx.batch_execute(sql)?;
            tx.execute("INSERT INTO sark_pdp_schema_migrations (version) VALUES ($1)", &[&version])?;
        }
    }
    tx.commit()
}

impl Sink for Postgres {
    fn name(&self) -> &str {
        "postgres"
    }

    fn send(&mut self, batch: &[(u64, String)]) -> Result<(), SendError> {
        let mut rows = Vec::with_capacity(batch.len());
        for (seq, line) in batch {
            let row: Row = serde_json::from_str(line).map_err(|e| SendError::Refused(format!("record {seq}: {e}")))?;
            rows.push((i64::try_from(*seq).map_err(|e| SendError::Refused(format!("record {seq}: {e}")))?, row));
        }
        self.write(&rows).map_err(|e| {
            let refused = e.code().is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"));
            // A new connection for whatever comes next: this one may be broken or mid-transaction.
            self.client = None;
            let why = match e.as_db_error() {
                Some(db) => format!("{} ({}): {}", db.code().code(), db.severity(), db.message()),
                None => e.to_string(),
            };
            if refused { SendError::Refused(why) } else { SendError::Retry(why) }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
pub(crate) mod tests {
    use super::*;
    use crate::audit::test_record;
    use crate::audit_log::{AuditLog, LogConfig};
    use crate::sink::Shipper;
    use std::path::PathBuf;
    use std::time::Instant;

    /// A throwaway PostgreSQL cluster (scripts/postgres.sh), stopped and deleted on drop.
    pub(crate) struct Pg {
        dir: PathBuf,
        pub url: String,
    }

    impl Pg {
        pub(crate) fn start(tag: &str) -> Pg {
            let dir = std::env::temp_dir().join(format!("sark-pdp-pg-{tag}-{}", std::process::id()));
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/postgres.sh");
            let _ = std::process::Command::new(script).arg("stop").arg(&dir).status();
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
            let out = std::process::Command::new(script).arg("start").arg(&dir).args([&port, "fast"]).output().unwrap();
            assert!(out.status.success(), "PostgreSQL did not start (scripts/test-deps.sh installs it): {}", String::from_utf8_lossy(&out.stderr));
            Pg { dir, url: String::from_utf8(out.stdout).unwrap().trim().to_string() }
        }

        pub(crate) fn client(&self) -> Client {
            self.url.parse::<postgres::Config>().unwrap().connect(NoTls).unwrap()
        }
    }

    impl Drop for Pg {
        fn drop(&mut self) {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/postgres.sh");
            let _ = std::process::Command::new(script).arg("stop").arg(&self.dir).status();
        }
    }

    fn ship_until(s: &mut Shipper<Postgres>, next: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.cursor() < next {
            assert!(Instant::now() < deadline, "stuck at {}", s.cursor());
            let wait = s.step(true).unwrap();
            std::thread::sleep(wait.min(Duration::from_millis(20)));
        }
    }

    #[test]
    fn rows_land_once_with_their_cursor_and_a_poisoned_record_is_dead_lettered() {
        let pg = Pg::start("sink");
        let root = std::env::temp_dir().join(format!("sark-pdp-pgsink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (log_dir, state) = (root.join("log"), root.join("state"));
        let mut log = AuditLog::open(LogConfig::new(&log_dir)).unwrap();
        for n in 1..=60u64 {
            // PostgreSQL's text cannot hold NUL: record 23 is refused by the database itself.
            let user = if n == 23 { "nul\u{0}user".to_string() } else { format!("u{n}") };
            log.append(&test_record(u128::from(n), &user, n % 4 != 0)).unwrap();
        }
        log.sync().unwrap();
        let sink = Postgres::new(&pg.url, "node-a", Duration::from_secs(5)).unwrap();
        let mut s = Shipper::new(sink, &log_dir, &state).unwrap();
        s.batch = 16;
        ship_until(&mut s, 61);
        assert_eq!(s.dead_lettered, 1);
        let dead = std::fs::read_to_string(state.join("postgres.dead-letter.jsonl")).unwrap();
        assert!(dead.contains("nul\\\\u0000user") && dead.contains("22021"), "{dead}");

        let mut db = pg.client();
        let count = |db: &mut Client| -> (i64, i64) {
            let r = db.query_one("SELECT count(*), count(DISTINCT decision_id) FROM policy_decision_logs", &[]).unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!(count(&mut db), (59, 59));
        let cursor: i64 = db.query_one("SELECT next_seq FROM sark_pdp_sink_cursors WHERE node_id = 'node-a' AND sink = 'postgres'", &[]).unwrap().get(0);
        assert_eq!(cursor, 61);
        // Every column as the log has it.
        let line: serde_json::Value = serde_json::from_str(&crate::audit_log::read_all(&log_dir).unwrap()[3]).unwrap();
        let row = db
            .query_one(
                "SELECT decision_id, seq, allow, result, user_id, user_roles, action, reasons, policies_evaluated, policy_results, \
                 bundle_revision, error_code, to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') FROM policy_decision_logs WHERE seq = 4",
                &[],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), line["decision_id"].as_str().unwrap());
        assert_eq!(row.get::<_, i64>(1), 4);
        assert_eq!(row.get::<_, bool>(2), line["allow"].as_bool().unwrap());
        assert_eq!(row.get::<_, String>(3), line["result"].as_str().unwrap());
        assert_eq!(row.get::<_, String>(4), "u4");
        assert_eq!(row.get::<_, Vec<String>>(5), Vec::<String>::new());
        assert_eq!(row.get::<_, String>(6), "tool:invoke");
        assert_eq!(serde_json::json!(row.get::<_, Vec<String>>(7)), line["reasons"]);
        assert_eq!(serde_json::json!(row.get::<_, Vec<String>>(8)), line["policies_evaluated"]);
        assert_eq!(row.get::<_, serde_json::Value>(9), line["policy_results"]);
        assert_eq!(row.get::<_, String>(10), line["bundle_revision"].as_str().unwrap());
        assert_eq!(row.get::<_, Option<i32>>(11).map(i64::from), line["error_code"].as_i64());
        assert!(line["timestamp"].as_str().unwrap().starts_with(&row.get::<_, String>(12)), "{line} vs {:?}", row.get::<_, String>(12));

        // The cursor file lost (a crash between the commit and its write): the shipper starts
        // again from 1, and the table's cursor keeps every row single.
        std::fs::remove_file(state.join("postgres.cursor")).unwrap();
        for n in 61..=70u64 {
            log.append(&test_record(u128::from(n), &format!("u{n}"), true)).unwrap();
        }
        log.sync().unwrap();
        let sink = Postgres::new(&pg.url, "node-a", Duration::from_secs(5)).unwrap();
        let mut again = Shipper::new(sink, &log_dir, &state).unwrap();
        again.batch = 7;
        ship_until(&mut again, 71);
        assert_eq!(count(&mut db), (69, 69));
        // The migration ran twice (two sinks) and is recorded once.
        let versions: i64 = db.query_one("SELECT count(*) FROM sark_pdp_schema_migrations", &[]).unwrap().get(0);
        assert_eq!(versions, 1);
        // A node started on an empty audit directory reuses sequence numbers; its records
        // are other decisions and are written, not taken for the old ones.
        let fresh = root.join("fresh");
        let mut log2 = AuditLog::open(LogConfig::new(&fresh)).unwrap();
        for n in 1..=5u64 {
            log2.append(&test_record(u128::from(1000 + n), "new", true)).unwrap();
        }
        log2.sync().unwrap();
        let sink = Postgres::new(&pg.url, "node-a", Duration::from_secs(5)).unwrap();
        let mut third = Shipper::new(sink, &fresh, &root.join("state2")).unwrap();
        ship_until(&mut third, 6);
        assert_eq!(count(&mut db), (74, 74));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_unreachable_database_is_retried_not_refused() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut sink = Postgres::new(&format!("host=127.0.0.1 port={port} user=postgres"), "n", Duration::from_secs(1)).unwrap();
        let line = {
            let mut l = String::new();
            test_record(1, "u", true).write_json_line(&mut l);
            l
        };
        assert!(matches!(sink.send(&[(1, line)]), Err(SendError::Retry(_))));
        // A line that is not a record is refused before any connection.
        assert!(matches!(sink.send(&[(2, "{}".into())]), Err(SendError::Refused(_))));
        assert!(Postgres::new("postgresql://[", "n", Duration::from_secs(1)).is_err());
    }
}
