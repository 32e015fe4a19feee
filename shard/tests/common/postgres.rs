//! A real PostgreSQL for the black-box tests: a throwaway cluster on a free port
//! (scripts/postgres.sh; the package is installed by scripts/test-deps.sh), stopped and
//! deleted on drop.

#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/postgres.sh");

pub struct Pg {
    dir: PathBuf,
    port: String,
    /// A libpq connection string.
    pub url: String,
}

impl Pg {
    pub fn start(tag: &str) -> Pg {
        let dir = std::env::temp_dir().join(format!("sark-pdp-pg-{tag}-{}", std::process::id()));
        let _ = Command::new(SCRIPT).arg("stop").arg(&dir).status();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
        let mut pg = Pg { dir, port, url: String::new() };
        pg.url = pg.up();
        pg
    }

    fn up(&self) -> String {
        let out = Command::new(SCRIPT).arg("start").arg(&self.dir).args([&self.port, "fast"]).output().unwrap();
        assert!(out.status.success(), "PostgreSQL did not start (scripts/test-deps.sh installs it): {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Stop the server at once (its data stays), as a crash or an outage would.
    pub fn down(&self) {
        assert!(Command::new(SCRIPT).arg("stop").arg(&self.dir).arg("keep").status().unwrap().success());
    }

    /// Start it again on the same port and data.
    pub fn back(&self) {
        self.up();
    }

    /// One query's rows, each column as text (psql, unaligned).
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        let out = Command::new("psql").args([&self.url, "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql]).output().unwrap();
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(|l| l.split('\t').map(String::from).collect()).collect()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT).arg("stop").arg(&self.dir).status();
    }
}
