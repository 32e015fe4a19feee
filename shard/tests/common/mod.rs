//! Starting and stopping the real `sark-pdp serve` for the black-box tests.

#![allow(dead_code, clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

pub mod postgres;
pub mod siem;
pub mod web;

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
    /// The admin API's, when a token turned it on.
    pub admin: Option<SocketAddr>,
    /// The ext_authz gRPC service's, when `--ext-authz-listen` turned it on.
    pub ext_authz: Option<SocketAddr>,
    pub audit: PathBuf,
    /// Leave the audit directory behind (for a restart on it).
    pub keep_audit: bool,
}

impl Server {
    pub fn start(tag: &str) -> Server {
        Server::start_with(tag, &["--shards", "1", "--audit-ring", "64"])
    }

    /// Both listeners on port 0 (never a fixed port: SO_REUSEPORT would let parallel
    /// tests share it).
    pub fn start_with(tag: &str, args: &[&str]) -> Server {
        Server::launch(tag, args, true)
    }

    /// Start again on the audit directory a killed server left behind.
    pub fn resume(tag: &str, args: &[&str]) -> Server {
        Server::launch(tag, args, false)
    }

    fn launch(tag: &str, args: &[&str], fresh: bool) -> Server {
        Server::launch_env(tag, args, fresh, &[])
    }

    /// Start with extra environment variables (fault injection).
    pub fn start_env(tag: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch_env(tag, args, true, env)
    }

    fn launch_env(tag: &str, args: &[&str], fresh: bool, env: &[(&str, &str)]) -> Server {
        let audit = std::env::temp_dir().join(format!("sark-pdp-serve-{tag}-{}", std::process::id()));
        if fresh {
            let _ = std::fs::remove_dir_all(&audit);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_sark-pdp"))
            .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(args)
            .arg("--audit-dir")
            .arg(&audit)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        // "listening on A (binary) and B (HTTP) [and C (admin)] [and D (ext_authz gRPC)]; …"
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = |label: &str| words.windows(2).find(|w| w[1].trim_start_matches('(').starts_with(label)).and_then(|w| w[0].parse::<SocketAddr>().ok());
        let (Some(addr), Some(http)) = (at("binary"), at("HTTP")) else { panic!("no binary and HTTP addresses in {line:?}") };
        let (admin, ext_authz) = (at("admin"), at("ext_authz"));
        Server { child, addr, http, admin, ext_authz, audit, keep_audit: false }
    }

    /// The server's resident set, KiB (`/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok()).unwrap()
    }

    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args([&format!("-{name}"), &pid]).status().unwrap().success());
    }

    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    }

    /// The audit log's intact lines so far, parsed.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        pdp::audit_log::read_all(&self.audit).unwrap_or_default().iter().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Kill without warning (SIGKILL) and wait.
    pub fn kill(mut self) {
        self.keep_audit = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait up to `timeout` for the server to exit on its own; its status and stderr.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                return (status, err);
            }
            assert!(std::time::Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait, and return the audit log's lines.
    pub fn stop(mut self) -> Vec<serde_json::Value> {
        self.sigterm();
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "exit {status}: {err}");
        assert!(err.contains("driver"), "the shard did not say which driver it runs: {err}");
        self.audit_lines()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_audit {
            let _ = std::fs::remove_dir_all(&self.audit);
        }
    }
}

/// Write `bytes` on a fresh connection, close its sending half (the server answers what
/// it read, then closes) and read until the server closes it.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Every whole reply frame in `bytes`.
pub fn replies(bytes: &[u8]) -> Vec<(u64, wire::Reply)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Ok(wire::Check::Complete { header, total }) = wire::check(rest, wire::DEFAULT_MAX_PAYLOAD) {
        out.push((header.request_id, wire::decode_reply(&header, &rest[wire::HEADER_LEN..total]).unwrap()));
        rest = &rest[total..];
    }
    out
}

/// An ERROR reply's code.
pub fn error_code(r: &wire::Reply) -> u16 {
    match r {
        wire::Reply::Error(e) => e.code,
        other => panic!("not an ERROR: {other:?}"),
    }
}
