//! Starting and stopping the real `sark-pdp serve` for the black-box tests.

#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Server {
    child: Child,
    /// The binary protocol's address.
    pub addr: SocketAddr,
    /// The HTTP front door's.
    pub http: SocketAddr,
    pub audit: PathBuf,
}

impl Server {
    pub fn start(tag: &str) -> Server {
        Server::start_with(tag, &["--shards", "1", "--audit-ring", "64"])
    }

    /// Both listeners on port 0 (never a fixed port: SO_REUSEPORT would let parallel
    /// tests share it).
    pub fn start_with(tag: &str, args: &[&str]) -> Server {
        let audit = std::env::temp_dir().join(format!("sark-pdp-serve-{tag}-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&audit);
        let mut child = Command::new(env!("CARGO_BIN_EXE_sark-pdp"))
            .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(args)
            .arg("--audit-log")
            .arg(&audit)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addrs: Vec<SocketAddr> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        let [addr, http] = addrs[..] else { panic!("no binary and HTTP addresses in {line:?}") };
        Server { child, addr, http, audit }
    }

    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    }

    /// SIGTERM, wait, and return the audit log's lines.
    pub fn stop(mut self) -> Vec<serde_json::Value> {
        self.sigterm();
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "exit {status}: {err}");
        assert!(err.contains("driver"), "the shard did not say which driver it runs: {err}");
        std::fs::read_to_string(&self.audit)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = std::fs::remove_file(&self.audit);
    }
}
