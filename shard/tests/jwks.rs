//! `[bundle.jwks]`: JWKS files from the configuration reach every bundle's data at
//! `data.sark_pdp.jwks.<name>`, a policy verifies tokens against them on the real server,
//! and a reload picks up a rotated key set. Bad configurations stop the server with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Server, web};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

const POLICY: &str = r#"package sark

import rego.v1

default decision := {"allow": false, "reasons": ["no valid token"]}

decision := {"allow": true, "reasons": [sprintf("token of %s", [claims.sub])]} if {
	[true, _, claims] := io.jwt.decode_verify(input.token, {"cert": data.sark_pdp.jwks.idp})
}
"#;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// An ES256 key, its JWKS (one key, `kid`), and a token it signed.
struct Idp {
    key: EcdsaKeyPair,
    kid: &'static str,
}

impl Idp {
    fn new(kid: &'static str) -> Idp {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Idp { key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap(), kid }
    }

    fn jwks(&self) -> String {
        let point = self.key.public_key().as_ref();
        let (x, y) = (&point[1..33], &point[33..65]);
        serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256", "x": b64(x), "y": b64(y)}]}).to_string()
    }

    fn token(&self, sub: &str) -> String {
        let header = serde_json::json!({"alg": "ES256", "kid": self.kid});
        let signing = format!("{}.{}", b64(header.to_string().as_bytes()), b64(serde_json::json!({"sub": sub}).to_string().as_bytes()));
        let sig = self.key.sign(&ring::rand::SystemRandom::new(), signing.as_bytes()).unwrap();
        format!("{signing}.{}", b64(sig.as_ref()))
    }
}

fn setup(tag: &str, own_data: Option<&str>) -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("sark-pdp-jwks-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bundle")).unwrap();
    std::fs::write(dir.join("bundle/p.rego"), POLICY).unwrap();
    if let Some(data) = own_data {
        std::fs::write(dir.join("bundle/data.json"), data).unwrap();
    }
    let (jwks, config) = (dir.join("idp.jwks.json"), dir.join("sark-pdp.toml"));
    std::fs::write(
        &config,
        format!("[bundle]\npath = {:?}\n\n[bundle.jwks]\nidp = {:?}\n", dir.join("bundle").display().to_string(), jwks.display().to_string()),
    )
    .unwrap();
    (dir, jwks, config)
}

fn allowed(server: &Server, token: &str) -> bool {
    let body = serde_json::json!({"input": {"token": token}}).to_string();
    let r = web::call(server.http, "POST", "/v1/data/sark/decision", &body);
    assert_eq!(r.status, 200, "{:?}", r.json());
    r.json()["result"]["allow"].as_bool().unwrap()
}

fn refused_start(config: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sark-pdp"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the server started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn tokens_verify_against_the_configured_jwks_and_a_reload_rotates_it() {
    let (dir, jwks, config) = setup("rotate", None);
    let (old, new) = (Idp::new("2026-a"), Idp::new("2026-b"));
    std::fs::write(&jwks, old.jwks()).unwrap();
    let server = Server::start_with("jwks-rotate", &["--shards", "1", "--config", config.to_str().unwrap()]);
    assert!(allowed(&server, &old.token("agent-1")));
    assert!(!allowed(&server, &new.token("agent-1")), "a key the JWKS lacks verified");
    assert!(!allowed(&server, &(old.token("agent-1") + "x")), "a damaged signature verified");

    // Rotate: the file now holds only the new key; SIGHUP reloads the bundle and rereads it.
    std::fs::write(&jwks, new.jwks()).unwrap();
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !allowed(&server, &new.token("agent-2")) {
        assert!(Instant::now() < deadline, "the rotated key was never used");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!allowed(&server, &old.token("agent-1")), "the retired key still verifies (a cached answer?)");

    // A reload with a broken file is refused; the last good keys keep serving.
    std::fs::write(&jwks, "{not json").unwrap();
    server.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(allowed(&server, &new.token("agent-3")));
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_jwks_configuration_stops_the_server_with_the_reason() {
    let (dir, jwks, config) = setup("bad", None);
    // Missing file.
    let why = refused_start(&config);
    assert!(why.contains("[bundle.jwks] idp") && why.contains("idp.jwks.json"), "{why}");
    // Not a key set.
    std::fs::write(&jwks, r#"{"keys": [{"kty": "RSA"}]}"#).unwrap();
    let why = refused_start(&config);
    assert!(why.contains("[bundle.jwks] idp") && why.contains("missing n"), "{why}");
    let _ = std::fs::remove_dir_all(dir);
    // A bundle whose own data holds the path the configuration fills.
    let (dir, jwks, config) = setup("clash", Some(r#"{"sark_pdp": {"jwks": {"idp": "mine"}}}"#));
    std::fs::write(&jwks, Idp::new("k").jwks()).unwrap();
    let why = refused_start(&config);
    assert!(why.contains("data.sark_pdp.jwks"), "{why}");
    let _ = std::fs::remove_dir_all(dir);
}
