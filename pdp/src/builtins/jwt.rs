//! `io.jwt.decode`, `io.jwt.decode_verify` and `io.jwt.verify_*`, as OPA v1 documents them:
//! JWS compact serialisation; keys from a PEM certificate, a PEM public key, a JWK or a JWKS
//! (a `kid` that matches picks its key; otherwise every key whose `alg` is absent or equal to
//! the token's is tried); RSA PKCS#1 v1.5 and PSS, ECDSA P-256/P-384/P-521, Ed25519 and HMAC.
//!
//! Keys and signatures are checked with ring (P-521 with RustCrypto's p521, which ring lacks);
//! ring refuses RSA keys under 2048 bits, so such a key never verifies here (Go's does).


use base64::Engine as _;
use regorus::Value;
use ring::signature::{self, UnparsedPublicKey};
use serde_json::{Map, Value as Json};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::{changes_at, hex, string, unix_now_s};

/// base64url, padded or not, as OPA's `base64url.decode` (RFC 7515 appendix C).
pub(super) fn b64url(s: &str) -> Result<Vec<u8>, String> {
    const ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    if !s.ends_with('=') && s.len() % 4 == 1 {
        return Err(format!("illegal base64url string: {s}"));
    }
    ENGINE.decode(s).map_err(|e| format!("illegal base64url string: {e}"))
}

/// The three parts of a compact JWS.
struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl<'a> Parts<'a> {
    fn split(token: &'a str) -> Result<Parts<'a>, String> {
        if !token.contains('.') {
            return Err("encoded JWT had no period separators".into());
        }
        let parts: Vec<&str> = token.split('.').collect();
        match parts.as_slice() {
            [header, payload, signature] => Ok(Parts { header, payload, signature }),
            other => Err(format!("encoded JWT must have 3 sections, found {}", other.len())),
        }
    }

    /// The signed bytes: `header.payload`.
    fn signing_input(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(self.header.len() + 1 + self.payload.len());
        m.extend_from_slice(self.header.as_bytes());
        m.push(b'.');
        m.extend_from_slice(self.payload.as_bytes());
        m
    }

    fn header(&self) -> Result<Map<String, Json>, String> {
        let bytes = b64url(self.header).map_err(|e| format!("JWT header had invalid encoding: {e}"))?;
        match serde_json::from_slice::<Json>(&bytes) {
            Ok(Json::Object(o)) => Ok(o),
            _ => Err("JWT header is not a JSON object".into()),
        }
    }

    fn payload_bytes(&self) -> Result<Vec<u8>, String> {
        b64url(self.payload).map_err(|e| format!("JWT payload had invalid encoding: {e}"))
    }

    fn signature(&self) -> Result<Vec<u8>, String> {
        b64url(self.signature).map_err(|e| format!("JWT signature had invalid encoding: {e}"))
    }
}

fn json_object(bytes: &[u8]) -> Result<Map<String, Json>, String> {
    match serde_json::from_slice::<Json>(bytes) {
        Ok(Json::Object(o)) => Ok(o),
        Ok(_) => Err("JWT payload is not a JSON object".into()),
        Err(e) => Err(format!("JWT payload is not JSON: {e}")),
    }
}

fn to_value(j: Json) -> Value {
    Value::from(j)
}

/// `io.jwt.decode(jwt)`: `[header, payload, signature as hex]`, unverified.
pub(super) fn decode(token: &Value) -> Result<Value, String> {
    let mut token = string(token, "operand 1")?.to_string();
    loop {
        let parts = Parts::split(&token)?;
        let header = parts.header()?;
        let payload = parts.payload_bytes()?;
        if header.get("cty").and_then(Json::as_str) == Some("JWT") {
            // A nested token: its text, without the quotes some encoders add.
            let inner = String::from_utf8_lossy(&payload);
            token = inner.trim_matches(|c| c == '"' || c == '\'').to_string();
            continue;
        }
        let payload = json_object(&payload)?;
        let signature = parts.signature()?;
        return Ok(to_value(Json::Array(vec![
            Json::Object(header),
            Json::Object(payload),
            Json::String(hex(&signature)),
        ])));
    }
}

/// A JWS algorithm OPA knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

impl Alg {
    fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "ES512" => Alg::Es512,
            "EdDSA" => Alg::EdDsa,
            "HS256" => Alg::Hs256,
            "HS384" => Alg::Hs384,
            "HS512" => Alg::Hs512,
            _ => return None,
        })
    }

    /// The algorithm of `io.jwt.verify_<alg>` (asymmetric ones).
    pub(super) fn of_verify(builtin: &str) -> Option<Alg> {
        let alg = builtin.strip_prefix("io.jwt.verify_")?;
        match alg {
            "eddsa" => Some(Alg::EdDsa),
            "hs256" | "hs384" | "hs512" => None,
            other => Alg::parse(&other.to_ascii_uppercase()),
        }
    }
}

/// A public (or, for `oct`, secret) key.
#[derive(Debug)]
enum Key {
    /// Modulus and exponent, big-endian, no leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An uncompressed SEC1 point on the named curve.
    Ec { curve: Curve, point: Vec<u8> },
    Ed25519(Vec<u8>),
    Oct(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
    P521,
}

#[derive(Debug)]
pub(super) struct VerificationKey {
    key: Key,
    alg: Option<String>,
    kid: Option<String>,
}

fn strip_zeros(b: &[u8]) -> Vec<u8> {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or_default().to_vec()
}

/// The key of a DER SubjectPublicKeyInfo.
fn spki_key(der: &[u8]) -> Result<Key, String> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(der).map_err(|e| format!("failed to parse a PEM public key: {e}"))?;
    key_of_spki(&spki)
}

fn key_of_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Key, String> {
    const P256: &str = "1.2.840.10045.3.1.7";
    const P384: &str = "1.3.132.0.34";
    const P521: &str = "1.3.132.0.35";
    match spki.parsed().map_err(|e| format!("unsupported public key: {e}"))? {
        PublicKey::RSA(rsa) => Ok(Key::Rsa {
            n: strip_zeros(rsa.modulus),
            e: strip_zeros(rsa.exponent),
        }),
        PublicKey::EC(point) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            let curve = match curve.as_deref() {
                Some(P256) => Curve::P256,
                Some(P384) => Curve::P384,
                Some(P521) => Curve::P521,
                other => return Err(format!("unsupported elliptic curve {other:?}")),
            };
            Ok(Key::Ec {
                curve,
                point: point.data().to_vec(),
            })
        }
        PublicKey::Unknown(bytes) if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => Ok(Key::Ed25519(bytes.to_vec())),
        _ => Err("unsupported public key type".into()),
    }
}

/// Keys from a PEM certificate, a PEM public key, a JWK or a JWKS.
pub(super) fn keys(text: &str) -> Result<Vec<VerificationKey>, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with("-----BEGIN") {
        let (rest, pem) = x509_parser::pem::parse_x509_pem(trimmed.as_bytes()).map_err(|e| format!("failed to parse a PEM block: {e}"))?;
        if !rest.iter().all(u8::is_ascii_whitespace) {
            return Err("extra data after a PEM certificate block".into());
        }
        let key = match pem.label.as_str() {
            "CERTIFICATE" => {
                let cert = pem.parse_x509().map_err(|e| format!("failed to parse a PEM certificate: {e}"))?;
                key_of_spki(cert.public_key())?
            }
            "PUBLIC KEY" => spki_key(&pem.contents)?,
            _ => return Err("failed to extract a Key from the PEM certificate".into()),
        };
        return Ok(vec![VerificationKey { key, alg: None, kid: None }]);
    }
    let json: Json = serde_json::from_str(text).map_err(|e| format!("failed to parse a JWK key (set): {e}"))?;
    let list = match json.get("keys") {
        Some(Json::Array(keys)) => keys.clone(),
        Some(_) => return Err("failed to parse a JWK key (set): keys is not an array".into()),
        None => vec![json],
    };
    let mut out = Vec::with_capacity(list.len());
    for jwk in &list {
        let alg = jwk.get("alg").and_then(Json::as_str).map(str::to_string);
        // Keys for algorithms OPA does not know are skipped, as OPA does.
        if alg.as_deref().is_some_and(|a| Alg::parse(a).is_none()) {
            continue;
        }
        out.push(VerificationKey {
            key: jwk_key(jwk)?,
            alg,
            kid: jwk.get("kid").and_then(Json::as_str).map(str::to_string),
        });
    }
    Ok(out)
}

fn jwk_key(jwk: &Json) -> Result<Key, String> {
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let s = jwk.get(name).and_then(Json::as_str).ok_or_else(|| format!("failed to parse a JWK key (set): missing {name}"))?;
        b64url(s).map_err(|e| format!("failed to parse a JWK key (set): {name}: {e}"))
    };
    match jwk.get("kty").and_then(Json::as_str) {
        Some("RSA") => Ok(Key::Rsa {
            n: strip_zeros(&field("n")?),
            e: strip_zeros(&field("e")?),
        }),
        Some("EC") => {
            let (curve, size) = match jwk.get("crv").and_then(Json::as_str) {
                Some("P-256") => (Curve::P256, 32),
                Some("P-384") => (Curve::P384, 48),
                Some("P-521") => (Curve::P521, 66),
                other => return Err(format!("failed to parse a JWK key (set): unsupported curve {other:?}")),
            };
            let (x, y) = (field("x")?, field("y")?);
            if x.len() != size || y.len() != size {
                return Err("failed to parse a JWK key (set): bad EC coordinates".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Ok(Key::Ec { curve, point })
        }
        Some("OKP") if jwk.get("crv").and_then(Json::as_str) == Some("Ed25519") => Ok(Key::Ed25519(field("x")?)),
        Some("oct") => Ok(Key::Oct(field("k")?)),
        other => Err(format!("failed to parse a JWK key (set): unsupported key type {other:?}")),
    }
}

/// Whether `sig` is `alg`'s signature of `msg` under `key` (false for a key of another type).
fn verify_with(key: &Key, alg: Alg, msg: &[u8], sig: &[u8]) -> bool {
    use signature::VerificationAlgorithm;
    let rsa: Option<&signature::RsaParameters> = match alg {
        Alg::Rs256 => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
        Alg::Rs384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
        Alg::Rs512 => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
        Alg::Ps256 => Some(&signature::RSA_PSS_2048_8192_SHA256),
        Alg::Ps384 => Some(&signature::RSA_PSS_2048_8192_SHA384),
        Alg::Ps512 => Some(&signature::RSA_PSS_2048_8192_SHA512),
        _ => None,
    };
    match (key, alg) {
        (Key::Rsa { n, e }, _) => rsa.is_some_and(|params| signature::RsaPublicKeyComponents { n, e }.verify(params, msg, sig).is_ok()),
        (Key::Ec { curve: Curve::P256, point }, Alg::Es256) => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(msg, sig).is_ok()
        }
        (Key::Ec { curve: Curve::P384, point }, Alg::Es384) => {
            UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point).verify(msg, sig).is_ok()
        }
        (Key::Ec { curve: Curve::P521, point }, Alg::Es512) => verify_p521(point, msg, sig),
        (Key::Ed25519(pk), Alg::EdDsa) => signature::ED25519.verify(pk.as_slice().into(), msg.into(), sig.into()).is_ok(),
        (Key::Oct(secret), Alg::Hs256 | Alg::Hs384 | Alg::Hs512) => hmac_ok(alg, secret, msg, sig),
        _ => false,
    }
}

fn verify_p521(point: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    use p521::ecdsa::signature::Verifier;
    let Ok(key) = p521::ecdsa::VerifyingKey::from_sec1_bytes(point) else {
        return false;
    };
    let Ok(sig) = p521::ecdsa::Signature::from_slice(sig) else {
        return false;
    };
    key.verify(msg, &sig).is_ok()
}

fn hmac_ok(alg: Alg, secret: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let algorithm = match alg {
        Alg::Hs256 => ring::hmac::HMAC_SHA256,
        Alg::Hs384 => ring::hmac::HMAC_SHA384,
        Alg::Hs512 => ring::hmac::HMAC_SHA512,
        _ => return false,
    };
    ring::hmac::verify(&ring::hmac::Key::new(algorithm, secret), msg, sig).is_ok()
}

/// The header fields OPA checks.
struct Header {
    alg: String,
    kid: String,
    cty: String,
    /// Whether the header is usable: `alg` present, and every `crit` parameter understood.
    valid: bool,
}

fn parse_header(h: &Map<String, Json>) -> Result<Header, String> {
    let text = |name: &str| -> Result<String, String> {
        match h.get(name) {
            None => Ok(String::new()),
            Some(Json::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{name}: must be a string")),
        }
    };
    const KNOWN: [&str; 5] = ["alg", "kid", "typ", "cty", "crit"];
    let (alg, kid, cty) = (text("alg")?, text("kid")?, text("cty")?);
    text("typ")?;
    let mut crit = Vec::new();
    if let Some(c) = h.get("crit") {
        let Json::Array(items) = c else {
            return Err("crit: must be a list".into());
        };
        crit = items.iter().filter_map(Json::as_str).collect();
        if crit.is_empty() {
            return Err("crit: must be a nonempty list".into());
        }
    }
    let unknown_critical = h.keys().any(|k| !KNOWN.contains(&k.as_str()) && crit.contains(&k.as_str()));
    Ok(Header {
        valid: !alg.is_empty() && !unknown_critical,
        alg,
        kid,
        cty,
    })
}

/// Verify `msg`/`sig` with a key set under the token's `alg` (OPA's kid-then-any rule).
fn verify_keys(keys: &[VerificationKey], kid: &str, header_alg: &str, alg: Option<Alg>, msg: &[u8], sig: &[u8]) -> bool {
    let Some(alg) = alg else {
        return false;
    };
    if !kid.is_empty()
        && let Some(k) = keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    {
        return verify_with(&k.key, alg, msg, sig);
    }
    keys.iter()
        .filter(|k| k.alg.as_deref().is_none_or(|a| a == header_alg))
        .any(|k| verify_with(&k.key, alg, msg, sig))
}

/// `io.jwt.verify_<alg>(jwt, certificate)`: whether the signature verifies with one of the keys.
pub(super) fn verify(alg: Alg, token: &Value, cert: &Value) -> Result<Value, String> {
    let parts = Parts::split(string(token, "operand 1")?)?;
    let keys = keys(string(cert, "operand 2")?)?;
    let sig = parts.signature()?;
    let header = parse_header(&parts.header()?)?;
    let msg = parts.signing_input();
    Ok(Value::Bool(verify_keys(&keys, &header.kid, &header.alg, Some(alg), &msg, &sig)))
}

/// `io.jwt.verify_hs<n>(jwt, secret)`.
pub(super) fn verify_hmac(alg: Alg, token: &Value, secret: &Value) -> Result<Value, String> {
    let token = string(token, "operand 1")?;
    let secret = string(secret, "operand 2")?;
    let parts = Parts::split(token)?;
    let sig = parts.signature()?;
    Ok(Value::Bool(hmac_ok(alg, secret.as_bytes(), &parts.signing_input(), &sig)))
}

/// The constraints object of `io.jwt.decode_verify`.
struct Constraints {
    keys: Option<Vec<VerificationKey>>,
    secret: String,
    alg: String,
    iss: String,
    aud: String,
    /// Nanoseconds since the epoch, and whether it is the wall clock (not the caller's).
    time_ns: f64,
    wall_clock: bool,
}

fn constraints(v: &Value) -> Result<Constraints, String> {
    let Value::Object(o) = v else {
        return Err("operand 2 must be an object".into());
    };
    let mut c = Constraints {
        keys: None,
        secret: String::new(),
        alg: String::new(),
        iss: String::new(),
        aud: String::new(),
        time_ns: -1.0,
        wall_clock: false,
    };
    for (k, v) in o.iter() {
        let name = string(k, "constraint name")?;
        let text = |what: &str| -> Result<String, String> {
            match v {
                Value::String(s) => Ok(s.to_string()),
                _ => Err(format!("{what} constraint: must be a string")),
            }
        };
        match name {
            "cert" => c.keys = Some(keys(&text("cert")?)?),
            "secret" => c.secret = text("secret")?,
            "alg" => c.alg = text("alg")?,
            "iss" => c.iss = text("iss")?,
            "aud" => c.aud = text("aud")?,
            "time" => {
                let Value::Number(n) = v else {
                    return Err("token time constraint: must be a number".into());
                };
                // Past 2^53 (any time after 1970 + 104 days in ns) regorus gives no f64 directly.
                let t = n
                    .as_f64()
                    .or_else(|| n.as_u64().map(|u| u as f64))
                    .or_else(|| n.as_i64().map(|i| i as f64))
                    .ok_or("token time constraint: invalid float64")?;
                if t < 0.0 {
                    return Err("token time constraint: must not be negative".into());
                }
                c.time_ns = t;
            }
            other => return Err(format!("unknown token validation constraint: {other}")),
        }
    }
    match (c.keys.is_some(), !c.secret.is_empty()) {
        (true, true) => return Err("duplicate key constraints".into()),
        (false, false) => return Err("no key constraint".into()),
        _ => {}
    }
    if c.time_ns < 0.0 {
        c.time_ns = unix_now_s() * 1e9;
        c.wall_clock = true;
    }
    Ok(c)
}

fn unverified() -> Value {
    to_value(serde_json::json!([false, {}, {}]))
}

/// `io.jwt.decode_verify(jwt, constraints)`: `[valid, header, payload]`.
pub(super) fn decode_verify(token: &Value, constraints_v: &Value) -> Result<Value, String> {
    let c = constraints(constraints_v)?;
    let mut token = string(token, "operand 1")?.to_string();
    let (header, payload) = loop {
        let parts = Parts::split(&token)?;
        let header_json = parts.header()?;
        let header = parse_header(&header_json)?;
        if !header.valid || (!c.alg.is_empty() && c.alg != header.alg) {
            return Ok(unverified());
        }
        let sig = parts.signature()?;
        let msg = parts.signing_input();
        let alg = Alg::parse(&header.alg);
        let verified = match &c.keys {
            Some(keys) => verify_keys(keys, &header.kid, &header.alg, alg, &msg, &sig),
            None => alg.is_some_and(|a| hmac_ok(a, c.secret.as_bytes(), &msg, &sig)),
        };
        if !verified {
            return Ok(unverified());
        }
        let payload = parts.payload_bytes()?;
        if header.cty.eq_ignore_ascii_case("JWT") {
            token = String::from_utf8_lossy(&payload).into_owned();
            continue;
        }
        break (header_json, payload);
    };
    let payload = json_object(&payload)?;
    if !c.iss.is_empty() && payload.get("iss").and_then(Json::as_str) != Some(c.iss.as_str()) {
        return Ok(unverified());
    }
    match payload.get("aud") {
        Some(Json::String(a)) if *a == c.aud => {}
        Some(Json::Array(list)) if list.iter().any(|a| a.as_str() == Some(c.aud.as_str())) => {}
        Some(_) => return Ok(unverified()),
        None if !c.aud.is_empty() => return Ok(unverified()),
        None => {}
    }
    let now_s = c.time_ns / 1e9;
    let exp = match payload.get("exp") {
        Some(Json::Number(n)) => n.as_f64(),
        Some(_) => return Err("exp value must be a number".into()),
        None => None,
    };
    let nbf = match payload.get("nbf") {
        Some(Json::Number(n)) => n.as_f64(),
        Some(_) => return Err("nbf value must be a number".into()),
        None => None,
    };
    if exp.is_some_and(|exp| now_s >= exp) {
        return Ok(unverified());
    }
    // The answer changes when the checked time reaches nbf (refused until then) or exp.
    // The time is the wall clock or the caller's (say `input.context.now_ns`, which cache
    // keys leave out): either way the answer holds for (boundary - time) from now.
    let wall_s = if c.wall_clock { now_s } else { unix_now_s() };
    if let Some(nbf) = nbf.filter(|&nbf| now_s < nbf) {
        changes_at(wall_s + (nbf - now_s));
        return Ok(unverified());
    }
    if let Some(exp) = exp {
        changes_at(wall_s + (exp - now_s));
    }
    Ok(to_value(Json::Array(vec![Json::Bool(true), Json::Object(header), Json::Object(payload)])))
}
