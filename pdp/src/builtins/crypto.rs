//! `crypto.md5`, `crypto.sha1`, `crypto.sha256`, `crypto.hmac.{md5,sha1,sha256,sha512}`,
//! `crypto.hmac.equal` and `crypto.x509.parse_certificates`.
//!
//! `parse_certificates` answers, for each certificate, the fields of Go's `x509.Certificate`
//! (which is what OPA returns) that policies read, under Go's names and in Go's JSON
//! encoding: `Raw`, `Version`, `SerialNumber`, `Subject`, `Issuer` (pkix.Name with `Names`),
//! `NotBefore`, `NotAfter`, `KeyUsage`, `ExtKeyUsage`, `BasicConstraintsValid`, `IsCA`,
//! `MaxPathLen`, `MaxPathLenZero`, `DNSNames`, `EmailAddresses`, `IPAddresses`,
//! `SubjectKeyId`, `AuthorityKeyId`, `PublicKeyAlgorithm` and `SignatureAlgorithm`. Go's
//! raw sub-encodings, `PublicKey`, `Extensions`, URIs and name constraints are not produced.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use md5::Digest;
use regorus::Value;
use serde_json::{Value as Json, json};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::X509Name;

use super::{hex, string};

/// `crypto.md5|sha1|sha256(x)`: the digest of the string's bytes, in hex.
pub(super) fn digest(name: &str, x: &Value) -> Result<Value, String> {
    let x = string(x, "operand 1")?.as_bytes();
    let out = match name {
        "crypto.md5" => md5::Md5::digest(x).to_vec(),
        "crypto.sha1" => ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, x).as_ref().to_vec(),
        "crypto.sha256" => ring::digest::digest(&ring::digest::SHA256, x).as_ref().to_vec(),
        other => return Err(format!("unknown builtin {other}")),
    };
    Ok(Value::String(hex(&out).into()))
}

/// `crypto.hmac.<hash>(x, key)`: the HMAC of the string under the key, in hex.
pub(super) fn hmac(name: &str, x: &Value, key: &Value) -> Result<Value, String> {
    let x = string(x, "operand 1")?.as_bytes();
    let key = string(key, "operand 2")?.as_bytes();
    let ring_mac = |alg| ring::hmac::sign(&ring::hmac::Key::new(alg, key), x).as_ref().to_vec();
    let out = match name {
        "crypto.hmac.md5" => {
            let mut mac = hmac::Hmac::<md5::Md5>::new_from_slice(key).map_err(|e| e.to_string())?;
            mac.update(x);
            mac.finalize().into_bytes().to_vec()
        }
        "crypto.hmac.sha1" => ring_mac(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY),
        "crypto.hmac.sha256" => ring_mac(ring::hmac::HMAC_SHA256),
        "crypto.hmac.sha512" => ring_mac(ring::hmac::HMAC_SHA512),
        other => return Err(format!("unknown builtin {other}")),
    };
    Ok(Value::String(hex(&out).into()))
}

/// `crypto.hmac.equal(mac1, mac2)`: equality in constant time.
pub(super) fn hmac_equal(a: &Value, b: &Value) -> Result<Value, String> {
    let (a, b) = (string(a, "operand 1")?.as_bytes(), string(b, "operand 2")?.as_bytes());
    let diff = a.len() ^ b.len();
    let folded = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    Ok(Value::Bool(diff == 0 && folded == 0))
}

/// Certificates as OPA reads them: PEM, base64 of PEM, or base64 of DER (one or several).
fn certificate_ders(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let bytes = if text.starts_with("-----BEGIN") {
        text.as_bytes().to_vec()
    } else {
        base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|e| format!("illegal base64 data: {e}"))?
    };
    if bytes.starts_with(b"-----BEGIN") {
        let mut out = Vec::new();
        for pem in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
            let pem = pem.map_err(|e| format!("failed to parse a PEM block: {e}"))?;
            if pem.label == "CERTIFICATE" {
                out.push(pem.contents);
            }
        }
        return Ok(out);
    }
    // Concatenated DER certificates.
    let mut out = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let (next, _) = X509Certificate::from_der(rest).map_err(|e| format!("x509: malformed certificate: {e}"))?;
        let used = rest.len() - next.len();
        out.push(rest.get(..used).unwrap_or_default().to_vec());
        rest = next;
    }
    Ok(out)
}

/// `crypto.x509.parse_certificates(certs)`.
pub(super) fn parse_certificates(certs: &Value) -> Result<Value, String> {
    let ders = certificate_ders(string(certs, "operand 1")?)?;
    let mut out = Vec::with_capacity(ders.len());
    for der in &ders {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("x509: malformed certificate: {e}"))?;
        let mut v = Value::from(certificate_json(&cert, der)?);
        // Go's big.Int serial is a JSON number of any size: regorus's numbers keep it whole.
        let serial = Value::from_json_str(&cert.tbs_certificate.serial.to_string()).map_err(|e| e.to_string())?;
        if let Ok(o) = v.as_object_mut() {
            o.insert(Value::String("SerialNumber".into()), serial);
        }
        out.push(v);
    }
    Ok(Value::from(out))
}

fn certificate_json(cert: &X509Certificate<'_>, der: &[u8]) -> Result<Json, String> {
    let b64 = |b: &[u8]| Json::String(base64::engine::general_purpose::STANDARD.encode(b));
    let mut key_usage = 0u16;
    let mut ext_key_usage: Option<Vec<u8>> = None;
    let (mut bc_valid, mut is_ca, mut max_path_len) = (false, false, 0i64);
    let (mut dns, mut email, mut ips) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ski, mut aki) = (Json::Null, Json::Null);
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::KeyUsage(k) => key_usage = k.flags,
            ParsedExtension::ExtendedKeyUsage(e) => {
                // Go's ExtKeyUsage numbers, in their order.
                let flags = [
                    (e.any, 0),
                    (e.server_auth, 1),
                    (e.client_auth, 2),
                    (e.code_signing, 3),
                    (e.email_protection, 4),
                    (e.time_stamping, 8),
                    (e.ocsp_signing, 9),
                ];
                ext_key_usage = Some(flags.iter().filter(|(on, _)| *on).map(|&(_, n)| n).collect());
            }
            ParsedExtension::BasicConstraints(b) => {
                bc_valid = true;
                is_ca = b.ca;
                max_path_len = b.path_len_constraint.map_or(-1, i64::from);
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => dns.push(Json::String((*d).to_string())),
                        GeneralName::RFC822Name(e) => email.push(Json::String((*e).to_string())),
                        GeneralName::IPAddress(ip) => ips.push(Json::String(ip_text(ip))),
                        _ => {}
                    }
                }
            }
            ParsedExtension::SubjectKeyIdentifier(k) => ski = b64(k.0),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                if let Some(k) = &a.key_identifier {
                    aki = b64(k.0);
                }
            }
            _ => {}
        }
    }
    let list = |v: Vec<Json>| if v.is_empty() { Json::Null } else { Json::Array(v) };
    let validity = cert.validity();
    Ok(json!({
        "Raw": b64(der),
        "Version": cert.version().0 + 1,
        "Subject": name_json(cert.subject()),
        "Issuer": name_json(cert.issuer()),
        "NotBefore": rfc3339(&validity.not_before),
        "NotAfter": rfc3339(&validity.not_after),
        "KeyUsage": key_usage,
        "ExtKeyUsage": ext_key_usage,
        "BasicConstraintsValid": bc_valid,
        "IsCA": is_ca,
        "MaxPathLen": max_path_len,
        "MaxPathLenZero": bc_valid && max_path_len == 0,
        "DNSNames": list(dns),
        "EmailAddresses": list(email),
        "IPAddresses": list(ips),
        "SubjectKeyId": ski,
        "AuthorityKeyId": aki,
        "PublicKeyAlgorithm": public_key_algorithm(&cert.public_key().algorithm.algorithm.to_id_string()),
        "SignatureAlgorithm": signature_algorithm(&cert.signature_algorithm.algorithm.to_id_string()),
    }))
}

/// Go's `crypto/x509.PublicKeyAlgorithm`.
fn public_key_algorithm(oid: &str) -> u8 {
    match oid {
        "1.2.840.113549.1.1.1" => 1,
        "1.2.840.10040.4.1" => 2,
        "1.2.840.10045.2.1" => 3,
        "1.3.101.112" => 4,
        _ => 0,
    }
}

/// Go's `crypto/x509.SignatureAlgorithm` (RSASSA-PSS's hash is in its parameters, which
/// are not read: 0).
fn signature_algorithm(oid: &str) -> u8 {
    match oid {
        "1.2.840.113549.1.1.5" => 3,
        "1.2.840.113549.1.1.11" => 4,
        "1.2.840.113549.1.1.12" => 5,
        "1.2.840.113549.1.1.13" => 6,
        "1.2.840.10045.4.3.2" => 10,
        "1.2.840.10045.4.3.3" => 11,
        "1.2.840.10045.4.3.4" => 12,
        "1.3.101.112" => 16,
        _ => 0,
    }
}

fn ip_text(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::from([b.first().copied().unwrap_or(0), b.get(1).copied().unwrap_or(0), b.get(2).copied().unwrap_or(0), b.get(3).copied().unwrap_or(0)]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b.get(..16).unwrap_or(&[0; 16]));
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => hex(b),
    }
}

/// Go's time.Time in JSON (RFC 3339, UTC, no fraction for whole seconds).
fn rfc3339(t: &x509_parser::time::ASN1Time) -> String {
    let d = t.to_datetime();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

/// Go's pkix.Name: the attribute lists, the last common name and serial, and `Names`.
fn name_json(name: &X509Name<'_>) -> Json {
    let mut fields: [(&str, &str, Vec<Json>); 7] = [
        ("Country", "2.5.4.6", Vec::new()),
        ("Organization", "2.5.4.10", Vec::new()),
        ("OrganizationalUnit", "2.5.4.11", Vec::new()),
        ("Locality", "2.5.4.7", Vec::new()),
        ("Province", "2.5.4.8", Vec::new()),
        ("StreetAddress", "2.5.4.9", Vec::new()),
        ("PostalCode", "2.5.4.17", Vec::new()),
    ];
    let (mut cn, mut serial) = (String::new(), String::new());
    let mut names = Vec::new();
    for attr in name.iter_attributes() {
        let oid = attr.attr_type().to_id_string();
        let value = attr.as_str().unwrap_or_default().to_string();
        let arcs: Vec<u64> = attr.attr_type().iter().map(|a| a.collect()).unwrap_or_default();
        names.push(json!({"Type": arcs, "Value": value}));
        match oid.as_str() {
            "2.5.4.3" => cn = value,
            "2.5.4.5" => serial = value,
            _ => {
                if let Some((_, _, list)) = fields.iter_mut().find(|(_, o, _)| *o == oid) {
                    list.push(Json::String(value));
                }
            }
        }
    }
    let mut out = serde_json::Map::new();
    for (key, _, list) in fields {
        out.insert(key.into(), if list.is_empty() { Json::Null } else { Json::Array(list) });
    }
    out.insert("SerialNumber".into(), Json::String(serial));
    out.insert("CommonName".into(), Json::String(cn));
    out.insert("Names".into(), if names.is_empty() { Json::Null } else { Json::Array(names) });
    out.insert("ExtraNames".into(), Json::Null);
    Json::Object(out)
}
