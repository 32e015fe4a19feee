#!/usr/bin/env python3
"""Writes pdp/tests/builtins/corpus.json: keys, tokens and certificates on which
pdp/tests/builtins_opa.rs compares our io.jwt.* / crypto.* extensions with the real OPA
engine. Run once by hand (it needs Python's `cryptography`); the output is committed, so
the tests need neither this script nor its package. Keys are made fresh on each run."""

import base64
import datetime
import ipaddress
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

FAR = 4102444800  # 2100-01-01
PAST = 1000000000  # 2001-09-09


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64u_json(o):
    return b64u(json.dumps(o, separators=(",", ":")).encode())


def pem_pub(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def jwk(key, kid=None, alg=None):
    pub = key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        n = pub.public_numbers()
        out = {"kty": "RSA", "n": b64u(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")), "e": b64u(n.e.to_bytes(3, "big"))}
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        n = pub.public_numbers()
        size = (pub.curve.key_size + 7) // 8
        crv = {256: "P-256", 384: "P-384", 521: "P-521"}[pub.curve.key_size]
        out = {"kty": "EC", "crv": crv, "x": b64u(n.x.to_bytes(size, "big")), "y": b64u(n.y.to_bytes(size, "big"))}
    else:
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        out = {"kty": "OKP", "crv": "Ed25519", "x": b64u(raw)}
    if kid:
        out["kid"] = kid
    if alg:
        out["alg"] = alg
    return out


HASH = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def sign(alg, key, msg):
    if alg.startswith("HS"):
        h = hmac.HMAC(key, HASH[alg[2:]]())
        h.update(msg)
        return h.finalize()
    if alg.startswith("RS"):
        return key.sign(msg, padding.PKCS1v15(), HASH[alg[2:]]())
    if alg.startswith("PS"):
        h = HASH[alg[2:]]()
        return key.sign(msg, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    if alg.startswith("ES"):
        der = key.sign(msg, ec.ECDSA(HASH[alg[2:]]()))
        r, s = utils.decode_dss_signature(der)
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "EdDSA":
        return key.sign(msg)
    raise ValueError(alg)


def token(alg, key, claims, header_extra=None, sign_alg=None):
    header = {"alg": alg, "typ": "JWT", **(header_extra or {})}
    signing_input = (b64u_json(header) + "." + (claims if isinstance(claims, str) else b64u_json(claims))).encode()
    return signing_input.decode() + "." + b64u(sign(sign_alg or alg, key, signing_input))


def cert(subject_key, issuer_key, subject, issuer, serial, ca, sans, usages, eku, ski_aki):
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(subject_key.public_key())
        .serial_number(serial)
        .not_valid_before(datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
        .not_valid_after(datetime.datetime(2099, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc))
    )
    b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=1 if ca else None), critical=True)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    b = b.add_extension(x509.KeyUsage(**usages), critical=True)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if ski_aki:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    return b.sign(issuer_key, None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256())


def main(out):
    rsa1 = rsa.generate_private_key(65537, 2048)
    rsa2 = rsa.generate_private_key(65537, 2048)
    keys = {
        "RS": rsa1, "PS": rsa1,
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "ES384": ec.generate_private_key(ec.SECP384R1()),
        "ES512": ec.generate_private_key(ec.SECP521R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }
    secret = b"correct horse battery staple"

    def key_of(alg):
        return keys.get(alg) or keys[alg[:2]]

    claims = {"iss": "sark", "aud": "pdp", "sub": "alice", "exp": FAR, "nbf": 1600000000, "iat": 1600000000}
    ca_name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SARK"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "SARK Test CA")])
    ca = cert(rsa1, rsa1, ca_name, ca_name, 0x1F2E3D4C5B6A79880011223344556677, True, None,
              dict(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
                   key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False), None, True)
    leaf_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SARK"), x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "agents"),
                           x509.NameAttribute(NameOID.COMMON_NAME, "agent-7.sark.example")])
    leaf = cert(keys["ES256"], rsa1, leaf_name, ca_name, 4242, False,
                [x509.DNSName("agent-7.sark.example"), x509.DNSName("*.agents.sark.example"), x509.RFC822Name("ops@sark.example"),
                 x509.IPAddress(ipaddress.ip_address("10.1.2.3")), x509.IPAddress(ipaddress.ip_address("2001:db8::7"))],
                dict(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=True,
                     key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], True)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
    leaf_pem = leaf.public_bytes(serialization.Encoding.PEM).decode()

    jwks = {"keys": [jwk(rsa1, "k1", "RS256"), jwk(rsa2, "k2", "RS256"), jwk(keys["ES256"], "e1"), jwk(keys["EdDSA"], "ed", "EdDSA")]}
    cases = []

    def case(name, tok, constraints, cert_text=None):
        cases.append({"name": name, "token": tok, "constraints": constraints, "cert": cert_text, "secret": secret.decode()})

    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512"]:
        k = secret if alg.startswith("HS") else key_of(alg)
        good = token(alg, k, claims)
        cons = {"secret": secret.decode()} if alg.startswith("HS") else {"cert": pem_pub(k)}
        pem = None if alg.startswith("HS") else pem_pub(k)
        both = dict(cons, iss="sark", aud="pdp")
        case(f"{alg} good", good, both, pem)
        case(f"{alg} good, jwk", good, {"secret": secret.decode()} if alg.startswith("HS") else {"cert": json.dumps(jwk(k)), "aud": "pdp"}, pem)
        case(f"{alg} expired", token(alg, k, dict(claims, exp=PAST)), both, pem)
        case(f"{alg} not yet valid", token(alg, k, dict(claims, nbf=FAR - 10)), both, pem)
        case(f"{alg} tampered payload", good.split(".")[0] + "." + b64u_json(dict(claims, sub="mallory")) + "." + good.split(".")[2], both, pem)
        case(f"{alg} explicit time inside", good, dict(both, time=2_000_000_000 * 10**9), pem)
        case(f"{alg} explicit time past exp", good, dict(both, time=FAR * 10**9 + 1), pem)
        case(f"{alg} explicit time before nbf", good, dict(both, time=1_500_000_000 * 10**9), pem)
        case(f"{alg} wrong alg constraint", good, dict(both, alg="ES256" if alg != "ES256" else "RS256"), pem)

    rs_pem = pem_pub(rsa1)
    base = {"cert": rs_pem, "iss": "sark", "aud": "pdp"}
    good = token("RS256", rsa1, claims)
    case("RS256 wrong key", token("RS256", rsa2, claims), base, rs_pem)
    case("RS256 verified by certificate", good, dict(base, cert=ca_pem), ca_pem)
    case("RS256 wrong key, certificate", token("RS256", rsa2, claims), dict(base, cert=ca_pem), ca_pem)
    case("HS256 signed with the RSA public key (alg confusion)", token("HS256", rs_pem.encode(), claims), base, rs_pem)
    case("HS256 wrong secret", token("HS256", b"not the secret", claims), {"secret": secret.decode(), "aud": "pdp"}, rs_pem)
    case("RS256 token, secret constraint", good, {"secret": secret.decode(), "aud": "pdp"}, rs_pem)
    case("alg none", b64u_json({"alg": "none", "typ": "JWT"}) + "." + b64u_json(claims) + ".", base, rs_pem)
    case("no alg", b64u_json({"typ": "JWT"}) + "." + b64u_json(claims) + "." + good.split(".")[2], base, rs_pem)
    case("unknown critical header", token("RS256", rsa1, claims, {"crit": ["x-sark"], "x-sark": 1}), base, rs_pem)
    case("known critical header", token("RS256", rsa1, claims, {"crit": ["kid"], "kid": "k1"}), base, rs_pem)
    case("iss mismatch", token("RS256", rsa1, dict(claims, iss="evil")), base, rs_pem)
    case("iss missing", token("RS256", rsa1, {k: v for k, v in claims.items() if k != "iss"}), base, rs_pem)
    case("aud mismatch", token("RS256", rsa1, dict(claims, aud="other")), base, rs_pem)
    case("aud array containing", token("RS256", rsa1, dict(claims, aud=["x", "pdp"])), base, rs_pem)
    case("aud array not containing", token("RS256", rsa1, dict(claims, aud=["x", "y"])), base, rs_pem)
    case("aud in token, none asked", good, {"cert": rs_pem}, rs_pem)
    case("aud asked, none in token", token("RS256", rsa1, {k: v for k, v in claims.items() if k != "aud"}), base, rs_pem)
    case("no exp, no nbf", token("RS256", rsa1, {"sub": "alice", "aud": "pdp"}), {"cert": rs_pem, "aud": "pdp"}, rs_pem)
    case("float exp", token("RS256", rsa1, dict(claims, exp=FAR + 0.5)), base, rs_pem)
    case("string exp", token("RS256", rsa1, dict(claims, exp="tomorrow")), base, rs_pem)
    case("string nbf", token("RS256", rsa1, dict(claims, nbf="yesterday")), base, rs_pem)
    case("payload not an object", token("RS256", rsa1, b64u(b"[1,2,3]")), base, rs_pem)
    case("payload not JSON", token("RS256", rsa1, b64u(b"not json")), base, rs_pem)
    case("header not JSON", b64u(b"{oops") + "." + b64u_json(claims) + "." + good.split(".")[2], base, rs_pem)
    case("header not an object", b64u(b"\"RS256\"") + "." + b64u_json(claims) + "." + good.split(".")[2], base, rs_pem)
    case("bad base64 header", "!!!." + good.split(".", 1)[1], base, rs_pem)
    case("bad base64 signature", good.rsplit(".", 1)[0] + ".*&^", base, rs_pem)
    case("two sections", "abc.def", base, rs_pem)
    case("four sections", good + ".x", base, rs_pem)
    case("no periods", "garbage", base, rs_pem)
    case("empty token", "", base, rs_pem)
    case("padded base64url header", good.split(".")[0] + "=" * (-len(good.split(".")[0]) % 4) + "." + good.split(".", 1)[1], base, rs_pem)
    # Keys from a JWKS (as a policy reads it from data).
    case("jwks kid k1", token("RS256", rsa1, claims, {"kid": "k1"}), {"cert": json.dumps(jwks), "aud": "pdp"}, json.dumps(jwks))
    case("jwks kid k2", token("RS256", rsa2, claims, {"kid": "k2"}), {"cert": json.dumps(jwks), "aud": "pdp"}, json.dumps(jwks))
    case("jwks kid k1 signed by k2's key", token("RS256", rsa2, claims, {"kid": "k1"}), {"cert": json.dumps(jwks), "aud": "pdp"}, json.dumps(jwks))
    case("jwks unknown kid, some key fits", token("RS256", rsa2, claims, {"kid": "zz"}), {"cert": json.dumps(jwks), "aud": "pdp"}, json.dumps(jwks))
    case("jwks no kid, ES256", token("ES256", keys["ES256"], claims), {"cert": json.dumps(jwks), "aud": "pdp"}, json.dumps(jwks))
    case("jwks no kid, EdDSA", token("EdDSA", keys["EdDSA"], claims), {"cert": json.dumps(jwks), "aud": "pdp"}, json.dumps(jwks))
    case("jwks, key of no listed alg", token("RS384", rsa1, claims), {"cert": json.dumps(jwks), "aud": "pdp"}, json.dumps(jwks))
    # Constraint errors.
    case("no key constraint", good, {"aud": "pdp"}, rs_pem)
    case("two key constraints", good, {"cert": rs_pem, "secret": "x", "aud": "pdp"}, rs_pem)
    case("unknown constraint", good, {"cert": rs_pem, "aud": "pdp", "leeway": 5}, rs_pem)
    case("negative time", good, {"cert": rs_pem, "aud": "pdp", "time": -1}, rs_pem)
    case("cert not a key", good, {"cert": "not a key", "aud": "pdp"}, "not a key")
    # Nested token: the outer one's payload is the inner token.
    inner = token("RS256", rsa1, claims)
    case("nested JWT", token("RS256", rsa1, b64u(inner.encode()), {"cty": "JWT"}), base, rs_pem)

    corpus = {
        "generated_by": "scripts/gen-builtins-corpus.py",
        "cases": cases,
        "jwks": json.dumps(jwks),
        "certificates": {
            "ca_pem": ca_pem,
            "leaf_pem": leaf_pem,
            "chain_pem": leaf_pem + ca_pem,
            "ca_der_b64": base64.b64encode(ca.public_bytes(serialization.Encoding.DER)).decode(),
            "chain_pem_b64": base64.b64encode((leaf_pem + ca_pem).encode()).decode(),
        },
        "texts": ["", "hello", "ünïcødé ✓", "x" * 1000],
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(corpus, f, indent=1)
        f.write("\n")
    print(f"{out}: {len(cases)} token cases")


def example_bundle(root):
    """examples/jwt-a2a: its data (the IdP's JWKS) and its cases (signed agent tokens)."""
    idp = rsa.generate_private_key(65537, 2048)
    old = ec.generate_private_key(ec.SECP256R1())
    other = rsa.generate_private_key(65537, 2048)
    jwks = {"keys": [jwk(idp, "idp-2026", "RS256"), jwk(old, "idp-2025", "ES256")]}
    with open(os.path.join(root, "data.json"), "w") as f:
        json.dump({"sark_jwt": {"jwks": json.dumps(jwks)}}, f, indent=1)
        f.write("\n")
    base = {"iss": "sark-idp", "aud": "sark-pdp", "sub": "agent-1", "caps": ["execute", "query"], "exp": FAR, "nbf": 1600000000}

    def tok(claims, key=idp, alg="RS256", kid="idp-2026"):
        return token(alg, key, claims, {"kid": kid})

    allow = lambda cap: {"allow": True, "cache_ttl_s": 300, "reasons": [f"a2a: the token of agent-1 grants {cap}"]}
    refuse = lambda cap: {"allow": False, "cache_ttl_s": 300, "reasons": [f"a2a: the token does not grant {cap} to agent-1"]}
    none = {"allow": False, "cache_ttl_s": 60, "reasons": ["a2a: no verified agent token"]}
    cases = [
        ("token grants execute", "a2a:execute", tok(base), allow("execute")),
        ("token grants query", "a2a:query", tok(base), allow("query")),
        ("older ES256 key still verifies", "a2a:query", tok(base, old, "ES256", "idp-2025"), allow("query")),
        ("token does not grant delegate", "a2a:delegate", tok(base), refuse("delegate")),
        ("token of another agent", "a2a:execute", tok(dict(base, sub="agent-2")), {"allow": False}),
        ("expired token", "a2a:execute", tok(dict(base, exp=PAST)), none),
        ("token not yet valid", "a2a:execute", tok(dict(base, nbf=FAR - 10)), none),
        ("token from another issuer", "a2a:execute", tok(dict(base, iss="elsewhere")), none),
        ("token for another audience", "a2a:execute", tok(dict(base, aud="other-pdp")), none),
        ("token signed by an unknown key", "a2a:execute", tok(base, other), none),
        ("tampered claims", "a2a:delegate", tok(base).split(".")[0] + "." + b64u_json(dict(base, caps=["delegate"])) + "." + tok(base).split(".")[2], none),
        ("alg none", "a2a:execute", b64u_json({"alg": "none"}) + "." + b64u_json(base) + ".", none),
    ]
    lines = ["# Signed agent tokens against the IdP's JWKS (data.json); made by scripts/gen-builtins-corpus.py.", "cases:"]
    for name, action, t, want in cases:
        lines.append(f"- name: {json.dumps('jwt: ' + name)}")
        lines.append("  input:")
        lines.append(f"    action: {json.dumps(action)}")
        lines.append(f"    agent: {{id: agent-1, token: {json.dumps(t)}}}")
        lines.append(f"  want: {json.dumps(want)}")
    with open(os.path.join(root, "cases", "a2a_jwt.yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{root}: {len(cases)} cases")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "pdp/tests/builtins/corpus.json")
    example_bundle("examples/jwt-a2a")
