//! The `io.jwt.*` and `crypto.*` extensions (`pdp::builtins`) decide as the real OPA engine
//! (Go, v1.20.2, `.opa/libopabridge.so` from `scripts/fetch-opa.sh`) does, on both of our
//! engines (RVM and interpreter), over `tests/builtins/corpus.json`: tokens of every
//! algorithm, good, expired, not yet valid, signed by the wrong key, under the wrong
//! algorithm, tampered, malformed, with JWKS key selection, and certificates. The corpus is
//! made by `scripts/gen-builtins-corpus.py`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use pdp::bundle::{Bundle, BundleLimits};
use pdp::eval::{CompiledBundle, EnginePreference, EvalLimits, Evaluator};
use pdp::opa::OpaEngine;
use serde_json::{Value as Json, json};

const POLICY: &str = r#"package builtins

import rego.v1

decode := io.jwt.decode(input.token)

decode_verify := io.jwt.decode_verify(input.token, input.constraints)

# Each verify_* builtin: true, false, or undefined on an error.
verify_rs256 := io.jwt.verify_rs256(input.token, input.cert)
verify_rs384 := io.jwt.verify_rs384(input.token, input.cert)
verify_rs512 := io.jwt.verify_rs512(input.token, input.cert)
verify_ps256 := io.jwt.verify_ps256(input.token, input.cert)
verify_ps384 := io.jwt.verify_ps384(input.token, input.cert)
verify_ps512 := io.jwt.verify_ps512(input.token, input.cert)
verify_es256 := io.jwt.verify_es256(input.token, input.cert)
verify_es384 := io.jwt.verify_es384(input.token, input.cert)
verify_es512 := io.jwt.verify_es512(input.token, input.cert)
verify_eddsa := io.jwt.verify_eddsa(input.token, input.cert)
verify_hs256 := io.jwt.verify_hs256(input.token, input.secret)
verify_hs384 := io.jwt.verify_hs384(input.token, input.secret)
verify_hs512 := io.jwt.verify_hs512(input.token, input.secret)

# A decision as a SARK policy would write it: keys from a JWKS in data.
default allow := false

allow if {
	[valid, _, claims] := io.jwt.decode_verify(input.token, {"cert": data.keys.jwks, "aud": "pdp"})
	valid
	claims.sub == "alice"
}

digests := {
	"md5": crypto.md5(input.text),
	"sha1": crypto.sha1(input.text),
	"sha256": crypto.sha256(input.text),
	"hmac_md5": crypto.hmac.md5(input.text, input.key),
	"hmac_sha1": crypto.hmac.sha1(input.text, input.key),
	"hmac_sha256": crypto.hmac.sha256(input.text, input.key),
	"hmac_sha512": crypto.hmac.sha512(input.text, input.key),
	"equal_self": crypto.hmac.equal(input.text, input.text),
	"equal_other": crypto.hmac.equal(input.text, input.key),
}

# The fields of Go's x509.Certificate that pdp::builtins produces.
fields := ["Raw", "Version", "SerialNumber", "Subject", "Issuer", "NotBefore", "NotAfter",
	"KeyUsage", "ExtKeyUsage", "BasicConstraintsValid", "IsCA", "MaxPathLen", "MaxPathLenZero",
	"DNSNames", "EmailAddresses", "IPAddresses", "SubjectKeyId", "AuthorityKeyId",
	"PublicKeyAlgorithm", "SignatureAlgorithm"]

certificates := [object.filter(c, fields) | some c in crypto.x509.parse_certificates(input.certs)]
"#;

const ENTRYPOINTS: &[&str] = &[
    "data.builtins.decode",
    "data.builtins.decode_verify",
    "data.builtins.verify_rs256",
    "data.builtins.verify_rs384",
    "data.builtins.verify_rs512",
    "data.builtins.verify_ps256",
    "data.builtins.verify_ps384",
    "data.builtins.verify_ps512",
    "data.builtins.verify_es256",
    "data.builtins.verify_es384",
    "data.builtins.verify_es512",
    "data.builtins.verify_eddsa",
    "data.builtins.verify_hs256",
    "data.builtins.verify_hs384",
    "data.builtins.verify_hs512",
    "data.builtins.allow",
    "data.builtins.digests",
    "data.builtins.certificates",
];

fn corpus() -> Json {
    serde_json::from_str(include_str!("builtins/corpus.json")).unwrap()
}

struct Engines {
    opa: OpaEngine,
    rvm: Evaluator,
    interpreter: Evaluator,
}

fn engines(corpus: &Json) -> Engines {
    let manifest = json!({"revision": "builtins", "metadata": {"entrypoints": ENTRYPOINTS}});
    let data = json!({"keys": {"jwks": corpus["jwks"]}});
    let bundle = Bundle::from_files(
        "builtins",
        vec![
            ("builtins.rego".into(), POLICY.as_bytes().to_vec()),
            ("data.json".into(), data.to_string().into_bytes()),
            (".manifest".into(), manifest.to_string().into_bytes()),
        ],
        BundleLimits::default(),
    )
    .unwrap();
    let compiled = Arc::new(CompiledBundle::compile(&bundle, EvalLimits::default()).unwrap());
    // Every entrypoint runs on the RVM: the extensions do not push a policy onto the interpreter.
    for (name, kind, refusal) in compiled.entrypoints() {
        assert_eq!(kind, pdp::decision::EngineKind::Rvm, "{name} fell back to the interpreter: {refusal:?}");
    }
    Engines {
        opa: OpaEngine::from_bundle(&bundle).unwrap(),
        rvm: Evaluator::new(compiled.clone(), EnginePreference::Fastest),
        interpreter: Evaluator::new(compiled, EnginePreference::Interpreter),
    }
}

/// What an engine made of one entrypoint on one input.
#[derive(Debug, PartialEq)]
enum Outcome {
    Value(Json),
    Undefined,
    /// A builtin error (OPA's `eval_builtin_error`; ours, the same message in an
    /// evaluation error), compared by the message's first clause.
    Error(String),
}

/// The part of a builtin error both engines word alike: `name: what`, up to the details
/// each library adds after a colon of its own.
fn error_head(message: &str) -> String {
    // regorus's interpreter quotes the source line first; the message follows "error: ".
    let message = message.rsplit("error: ").next().unwrap_or(message);
    let at = message.find("io.jwt.").or_else(|| message.find("crypto.")).unwrap_or(0);
    message[at..].splitn(3, ": ").take(2).collect::<Vec<_>>().join(": ")
}

/// One entrypoint on one input on the three engines; a difference is described.
fn compare(e: &mut Engines, entrypoint: &str, input: &Json, what: &str) -> Result<Outcome, String> {
    let opa = match e.opa.eval_document(entrypoint, &input.to_string()) {
        Ok(Some(v)) => Outcome::Value(v),
        Ok(None) => Outcome::Undefined,
        Err(pdp::opa::OpaError::Engine { message, .. }) if message.contains("eval_builtin_error") || message.contains("eval_type_error") => Outcome::Error(error_head(&message)),
        Err(err) => return Err(format!("{what}: OPA failed: {err}")),
    };
    let ours = |ev: &mut Evaluator| -> Result<Outcome, String> {
        match ev.evaluate(entrypoint, regorus::Value::from(input.clone())) {
            Ok((v, _)) => Ok(Outcome::Value(serde_json::to_value(&v).map_err(|err| err.to_string())?)),
            Err(pdp::EvalError::Undefined(_)) => Ok(Outcome::Undefined),
            Err(pdp::EvalError::Policy(message)) => Ok(Outcome::Error(error_head(&message))),
            Err(err) => Err(format!("{what}: {entrypoint}: {err}")),
        }
    };
    let rvm = ours(&mut e.rvm)?;
    let interpreter = ours(&mut e.interpreter)?;
    // Error messages: the builtin's name must agree; the wording after it is each library's.
    let same = |a: &Outcome, b: &Outcome| match (a, b) {
        (Outcome::Error(x), Outcome::Error(y)) => x.split(':').next() == y.split(':').next(),
        _ => a == b,
    };
    if !same(&rvm, &opa) || !same(&interpreter, &opa) {
        return Err(format!("{what}: {entrypoint}\n  OPA:         {opa:?}\n  RVM:         {rvm:?}\n  interpreter: {interpreter:?}"));
    }
    Ok(opa)
}

#[test]
fn tokens_decide_as_opa_decides() {
    let corpus = corpus();
    let mut e = engines(&corpus);
    let cases = corpus["cases"].as_array().unwrap();
    assert!(cases.len() >= 150, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    let (mut verified, mut unverified, mut errors, mut allowed) = (0, 0, 0, 0);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let input = json!({
            "token": case["token"], "constraints": case["constraints"],
            "cert": case["cert"], "secret": case["secret"],
        });
        for ep in ENTRYPOINTS.iter().filter(|ep| !ep.ends_with("digests") && !ep.ends_with("certificates")) {
            match compare(&mut e, ep, &input, name) {
                Ok(Outcome::Value(r)) if ep.ends_with("decode_verify") => match r[0].as_bool() {
                    Some(true) => verified += 1,
                    _ => unverified += 1,
                },
                Ok(Outcome::Error(_)) if ep.ends_with("decode_verify") => errors += 1,
                Ok(result) if ep.ends_with("allow") => allowed += usize::from(result == Outcome::Value(Json::Bool(true))),
                Ok(_) => {}
                Err(why) => failures.push(why),
            }
        }
    }
    assert!(failures.is_empty(), "{} differences from OPA:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{} cases: decode_verify verified {verified}, unverified {unverified}, errors {errors}; allowed {allowed}", cases.len());
    // The corpus exercises every outcome: a corpus of only errors would agree trivially.
    assert!(verified >= 20 && unverified >= 60 && errors >= 15 && allowed >= 3, "verified {verified}, unverified {unverified}, errors {errors}, allowed {allowed}");
}

#[test]
fn digests_and_hmacs_match_opa() {
    let corpus = corpus();
    let mut e = engines(&corpus);
    for text in corpus["texts"].as_array().unwrap() {
        let input = json!({"text": text, "key": "k€y"});
        let got = compare(&mut e, "data.builtins.digests", &input, &format!("text {text}")).unwrap();
        assert!(matches!(got, Outcome::Value(_)), "digests for {text}: {got:?}");
    }
    // A known answer, not only agreement.
    let Outcome::Value(got) = compare(&mut e, "data.builtins.digests", &json!({"text": "hello", "key": "k"}), "hello").unwrap() else {
        panic!("digests of hello");
    };
    assert_eq!(got["sha256"], "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    assert_eq!(got["md5"], "5d41402abc4b2a76b9719d911017c592");
    assert_eq!(got["equal_self"], true);
    assert_eq!(got["equal_other"], false);
}

#[test]
fn certificates_parse_as_opa_parses_them() {
    let corpus = corpus();
    let mut e = engines(&corpus);
    let certs = &corpus["certificates"];
    for (form, count) in [("ca_pem", 1), ("leaf_pem", 1), ("chain_pem", 2), ("ca_der_b64", 1), ("chain_pem_b64", 2)] {
        let Outcome::Value(got) = compare(&mut e, "data.builtins.certificates", &json!({"certs": certs[form]}), form).unwrap() else {
            panic!("{form}: no certificates");
        };
        assert_eq!(got.as_array().unwrap().len(), count, "{form}");
    }
    let Outcome::Value(leaf) = compare(&mut e, "data.builtins.certificates", &json!({"certs": certs["leaf_pem"]}), "leaf").unwrap() else {
        panic!("leaf");
    };
    assert_eq!(leaf[0]["Subject"]["CommonName"], "agent-7.sark.example");
    assert_eq!(leaf[0]["IPAddresses"], json!(["10.1.2.3", "2001:db8::7"]));
    // Not certificates: an error on every engine.
    for bad in ["not base64!", "aGVsbG8=", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"] {
        let got = compare(&mut e, "data.builtins.certificates", &json!({"certs": bad}), bad).unwrap();
        assert!(matches!(got, Outcome::Error(_)), "{bad}: {got:?}");
    }
}

/// A decision that rests on a verified token is cached no longer than the token lives.
#[test]
fn a_verified_token_caps_the_decisions_ttl_at_its_expiry() {
    let policy = r#"package sark
import rego.v1
default decision := {"allow": false, "reasons": ["no valid token"]}
constraints := {"secret": "s", "time": input.time} if input.time
else := {"secret": "s"}

decision := {"allow": true, "reasons": ["token"], "cache_ttl_s": 600} if {
	[true, _, _] := io.jwt.decode_verify(input.token, constraints)
}
"#;
    let bundle = Bundle::from_files("ttl", vec![("p.rego".into(), policy.as_bytes().to_vec())], BundleLimits::default()).unwrap();
    let compiled = Arc::new(CompiledBundle::compile(&bundle, EvalLimits::default()).unwrap());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let hs256 = |claims: Json| {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let signing = format!("{}.{}", b64(br#"{"alg":"HS256"}"#), b64(claims.to_string().as_bytes()));
        let mac = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s"), signing.as_bytes());
        format!("{signing}.{}", b64(mac.as_ref()))
    };
    for preference in [EnginePreference::Fastest, EnginePreference::Interpreter] {
        let mut ev = Evaluator::new(compiled.clone(), preference);
        let decide = |ev: &mut Evaluator, token: String| ev.decide(Ok(regorus::Value::from(json!({"token": token}))));
        // Expires in 90 s: cached at most 90 s, not the policy's 600.
        let d = decide(&mut ev, hs256(json!({"exp": now + 90})));
        assert!(d.allow, "{:?}", d.reasons);
        assert!(d.cache_ttl_s.unwrap() <= 90 && d.cache_ttl_s.unwrap() >= 85, "{:?}", d.cache_ttl_s);
        // No exp: the policy's TTL stands.
        let d = decide(&mut ev, hs256(json!({"sub": "a"})));
        assert!(d.allow);
        assert_eq!(d.cache_ttl_s, Some(600));
        // Not valid for another 40 s: the deny is cached at most until then.
        let d = decide(&mut ev, hs256(json!({"nbf": now + 40})));
        assert!(!d.allow);
        assert!(d.cache_ttl_s.unwrap() <= 40, "{:?}", d.cache_ttl_s);
        // The time checked may be the caller's (cache keys leave `now_ns` out): a token
        // checked 100 s before its expiry holds for 100 s from now.
        let d = ev.decide(Ok(regorus::Value::from(json!({"token": hs256(json!({"exp": 5_000_000_000u64})), "time": 4_999_999_900_000_000_000u64}))));
        assert!(d.allow, "{:?}", d.reasons);
        assert!((95..=100).contains(&d.cache_ttl_s.unwrap()), "{:?}", d.cache_ttl_s);
        // The next evaluation starts afresh.
        let d = decide(&mut ev, hs256(json!({"sub": "b"})));
        assert_eq!(d.cache_ttl_s, Some(600));
    }
}

/// The example bundle (`examples/jwt-a2a`: agent tokens against a JWKS in data) meets its
/// cases on the RVM, the interpreter and OPA, and the three give the same decision.
#[test]
fn the_jwt_example_bundle_decides_as_opa_does() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jwt-a2a");
    let bundle = Bundle::load(&dir, BundleLimits::default()).unwrap();
    let compiled = Arc::new(CompiledBundle::compile(&bundle, EvalLimits::default()).unwrap());
    let opa = OpaEngine::from_bundle(&bundle).unwrap();
    let mut rvm = Evaluator::new(compiled.clone(), EnginePreference::Fastest);
    let mut interpreter = Evaluator::new(compiled, EnginePreference::Interpreter);
    let cases = pdp::cases::load(&bundle).unwrap();
    assert!(cases.len() >= 10);
    let mut allowed = 0;
    for case in &cases {
        let o = opa.eval_document(&case.entrypoint, &case.input.to_string()).unwrap();
        pdp::cases::check(case, o.as_ref()).unwrap_or_else(|e| panic!("{}: OPA: {e}", case.name));
        for (engine, ev) in [("rvm", &mut rvm), ("interpreter", &mut interpreter)] {
            let got = pdp::cases::evaluate(ev, case).unwrap_or_else(|e| panic!("{}: {engine}: {e}", case.name));
            pdp::cases::check(case, got.as_ref()).unwrap_or_else(|e| panic!("{}: {engine}: {e}", case.name));
            assert!(pdp::cases::json_eq(got.as_ref().unwrap(), o.as_ref().unwrap()), "{}: {engine} {got:?} vs OPA {o:?}", case.name);
        }
        allowed += usize::from(o.as_ref().and_then(|d| d["allow"].as_bool()) == Some(true));
    }
    assert!(allowed >= 3 && allowed < cases.len(), "{allowed} of {} allowed", cases.len());
}
