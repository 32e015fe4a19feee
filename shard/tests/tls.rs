//! TLS and mutual TLS (`--tls-cert`, `--tls-key`, `--tls-client-ca`) against the real
//! server with a real rustls client: every listener speaks TLS, decisions come back over
//! it (pipelined, more than one TLS record each way), a plaintext caller or one that does
//! not trust the server gets no decision, and with a client CA only callers whose
//! certificate chains to it get one. Certificates are made per test run (rcgen).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use wire::message::{Eval, Hello};
use wire::{Check, Reply, Request};

/// A CA, the server's certificate from it, a caller's certificate from it, and a caller's
/// certificate from another CA, written as PEM files in a directory of their own.
struct Pki {
    dir: PathBuf,
    ca: CertificateDer<'static>,
    caller: (CertificateDer<'static>, PrivateKeyDer<'static>),
    stranger: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(names: &[&str], issuer: &CertifiedIssuer<'static, KeyPair>) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap().signed_by(&key, issuer).unwrap();
    (cert, key)
}

fn der(c: &rcgen::Certificate, k: &KeyPair) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    (c.der().clone(), PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.serialize_der())))
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("sark-pdp-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ours = ca("sark-pdp test CA");
        let (server, server_key) = leaf(&["localhost"], &ours);
        let (caller, caller_key) = leaf(&["gateway.sark.test"], &ours);
        let other = ca("someone else's CA");
        let (stranger, stranger_key) = leaf(&["gateway.sark.test"], &other);
        std::fs::write(dir.join("ca.pem"), ours.pem()).unwrap();
        // The chain as servers usually hold it: leaf first, then the CA.
        std::fs::write(dir.join("server.pem"), format!("{}{}", server.pem(), ours.pem())).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        Pki { dir, ca: ours.der().clone(), caller: der(&caller, &caller_key), stranger: der(&stranger, &stranger_key) }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn args(&self, mutual: bool) -> Vec<String> {
        let mut a = vec!["--shards".into(), "1".into(), "--tls-cert".into(), self.path("server.pem"), "--tls-key".into(), self.path("server.key")];
        if mutual {
            a.extend(["--tls-client-ca".into(), self.path("ca.pem")]);
        }
        a
    }

    /// A client that trusts `trusted` and shows `cert` when asked.
    fn client(&self, trusted: &CertificateDer<'static>, cert: Option<&(CertificateDer<'static>, PrivateKeyDer<'static>)>) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(trusted.clone()).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots);
        Arc::new(match cert {
            Some((c, k)) => b.with_client_auth_cert(vec![c.clone()], k.clone_key()).unwrap(),
            None => b.with_no_client_auth(),
        })
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Send `requests` pipelined in one write and read as many replies back, or the error
/// that ended the exchange (a failed handshake, a closed connection).
fn exchange(s: &mut Tls, requests: &[Request]) -> Result<Vec<(u64, Reply)>, String> {
    let mut bytes = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        wire::encode_request(&mut bytes, i as u64 + 1, r);
    }
    s.write_all(&bytes).map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while got.len() < requests.len() {
        match wire::check(&buf, u32::MAX).unwrap() {
            Check::Complete { header, total } => {
                got.push((header.request_id, wire::decode_reply(&header, &buf[wire::HEADER_LEN..total]).unwrap()));
                buf.drain(..total);
            }
            Check::Incomplete => match s.read(&mut chunk) {
                Ok(0) => return Err(format!("closed after {} replies", got.len())),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            },
        }
    }
    Ok(got)
}

fn hello() -> Request {
    Request::Hello(Hello { version: wire::VERSION, max_payload: wire::DEFAULT_MAX_PAYLOAD, token: None })
}

fn eval(user: &str) -> Request {
    Request::Eval(Box::new(Eval::example(user)))
}

fn allowed(replies: &[(u64, Reply)]) -> Vec<bool> {
    replies.iter().filter_map(|(_, r)| if let Reply::Decision(d) = r { Some(d.allow) } else { None }).collect()
}

/// One HTTP/1.1 request over TLS; the status and body of the answer.
fn https(addr: SocketAddr, config: Arc<rustls::ClientConfig>, method: &str, path: &str, headers: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = connect(addr, config);
    let req = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n{headers}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    // The server closes with close_notify after `connection: close`.
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

#[test]
fn every_listener_speaks_tls_and_a_plaintext_or_distrustful_caller_gets_nothing() {
    let pki = Pki::new("plain");
    const ADMIN: &str = "admin-token-0123456789";
    let mut args = pki.args(false);
    args.extend(["--admin-token".into(), ADMIN.into(), "--admin-listen".into(), "127.0.0.1:0".into()]);
    let server = Server::start_with("tls", &args.iter().map(String::as_str).collect::<Vec<_>>());
    let trusting = pki.client(&pki.ca, None);

    // The binary protocol: HELLO, then 2,000 pipelined EVALs (~300 KiB each way, many
    // TLS records), every one answered, in order.
    let mut s = connect(server.addr, trusting.clone());
    let mut requests = vec![hello()];
    requests.extend((0..2000).map(|i| eval(if i % 2 == 0 { "alice" } else { "bob" })));
    let got = exchange(&mut s, &requests).unwrap();
    assert!(matches!(got[0].1, Reply::HelloOk(_)), "{:?}", got[0]);
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), (1..=2001).collect::<Vec<u64>>());
    assert_eq!(allowed(&got), vec![true; 2000]);
    drop(s);

    // HTTP and the admin API.
    let body = serde_json::json!({"input": common::web::sample_input()}).to_string();
    let (status, answer) = https(server.http, trusting.clone(), "POST", "/v1/data/mcp/allow", "", &body);
    assert_eq!((status, answer["result"].as_bool()), (200, Some(true)), "{answer}");
    let admin = server.admin.unwrap();
    assert_eq!(https(admin, trusting.clone(), "GET", "/v1/admin/none", "", "").0, 401, "the admin API still needs its token");
    let (status, why) = https(admin, trusting.clone(), "GET", "/v1/admin/none", &format!("authorization: Bearer {ADMIN}\r\n"), "");
    assert_eq!((status, why["code"].as_str()), (404, Some("not_found")), "the token is read over TLS: {why}");

    // Plaintext on the TLS port: no frame comes back (the handshake fails, the
    // connection closes).
    let mut plain = Vec::new();
    wire::encode_request(&mut plain, 1, &hello());
    wire::encode_request(&mut plain, 2, &eval("mallory"));
    let back = common::raw(server.addr, &plain);
    assert!(common::replies(&back).is_empty(), "a plaintext caller got {back:?}");
    let back = common::raw(server.http, format!("POST /v1/data/mcp/allow HTTP/1.1\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes());
    assert!(!String::from_utf8_lossy(&back).contains("result"), "a plaintext HTTP caller got {back:?}");

    // A client that does not trust the server's CA stops at the handshake.
    let mut s = connect(server.addr, pki.client(&pki.stranger.0, None));
    let e = exchange(&mut s, &[hello(), eval("mallory")]).unwrap_err();
    assert!(e.contains("certificate") || e.contains("UnknownIssuer"), "{e}");

    let users: Vec<String> = server.stop().iter().map(|r| r["user_id"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(users.len(), 2001, "2,000 binary decisions and one over HTTP");
    assert!(!users.iter().any(|u| u == "mallory"));
}

#[test]
fn mutual_tls_serves_only_callers_whose_certificate_chains_to_the_client_ca() {
    let pki = Pki::new("mutual");
    let server = Server::start_with("mtls", &pki.args(true).iter().map(String::as_str).collect::<Vec<_>>());
    let mut s = connect(server.addr, pki.client(&pki.ca, Some(&pki.caller)));
    assert_eq!(allowed(&exchange(&mut s, &[hello(), eval("alice")]).unwrap()), [true]);
    let body = serde_json::json!({"input": common::web::sample_input()}).to_string();
    let (status, answer) = https(server.http, pki.client(&pki.ca, Some(&pki.caller)), "POST", "/v1/data/mcp/allow", "", &body);
    assert_eq!((status, answer["result"].as_bool()), (200, Some(true)));
    // No certificate, or one from another CA: the handshake fails and nothing is decided.
    for (what, cert) in [("no certificate", None), ("another CA's certificate", Some(&pki.stranger))] {
        let mut s = connect(server.addr, pki.client(&pki.ca, cert));
        let r = exchange(&mut s, &[hello(), eval("mallory")]);
        assert!(r.is_err(), "{what}: {r:?}");
    }
    let users: Vec<String> = server.stop().iter().map(|r| r["user_id"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(users.len(), 2, "{users:?}");
    assert!(!users.iter().any(|u| u == "mallory"));
}

#[test]
fn a_handshake_that_never_finishes_is_closed_at_the_idle_timeout() {
    let pki = Pki::new("slow");
    let mut args = pki.args(false);
    args.extend(["--idle-timeout-s".into(), "1".into()]);
    let server = Server::start_with("tls-slow", &args.iter().map(String::as_str).collect::<Vec<_>>());
    // Half a ClientHello's record header, then silence.
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.write_all(&[0x16, 0x03]).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t = Instant::now();
    let mut back = Vec::new();
    let _ = tcp.read_to_end(&mut back);
    assert!(t.elapsed() < Duration::from_secs(10), "closed only after {:?}", t.elapsed());
    // At most an alert (close_notify: content type 21), never a handshake message.
    assert!(back.is_empty() || back[0] == 21, "the server sent {back:?} to half a record");
    // And it still serves.
    let mut s = connect(server.addr, pki.client(&pki.ca, None));
    assert_eq!(allowed(&exchange(&mut s, &[hello(), eval("alice")]).unwrap()), [true]);
    server.stop();
}

#[test]
fn bad_tls_settings_stop_the_server_before_it_listens() {
    let pki = Pki::new("bad");
    std::fs::write(pki.dir.join("empty.pem"), "").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sark-pdp")).arg("serve").args(["--listen", "127.0.0.1:0", "--http-listen", "off"]).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let (cert, key, ca, empty) = (pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem"), pki.path("empty.pem"));
    assert!(run(&["--tls-cert", &cert]).contains("needs its key"));
    assert!(run(&["--tls-key", &key]).contains("needs its certificate"));
    assert!(run(&["--tls-client-ca", &ca]).contains("needs TLS itself"));
    assert!(run(&["--tls-cert", &empty, "--tls-key", &key]).contains("no PEM certificate"));
    assert!(run(&["--tls-cert", &cert, "--tls-key", &empty]).contains("TLS key"));
    // A key that is not the certificate's.
    assert!(run(&["--tls-cert", &ca, "--tls-key", &key]).contains("TLS certificate"));
    assert!(run(&["--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &empty]).contains("no PEM certificate"));
}
