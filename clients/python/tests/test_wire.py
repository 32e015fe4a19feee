"""The codec without a server: byte-for-byte against frames the Rust encoder wrote
(fuzz/corpus, written by fuzz/examples/seeds.rs), strict decoding, and the mapping of
SARK's input document to typed fields."""

from __future__ import annotations

import struct

import pytest

from sark_pdp import Input, PdpInputError, PdpProtocolError, Reason, Server, Tool
from sark_pdp import _wire
from sark_pdp._common import eval_body
from support import ROOT, decision, sample, string

CORPUS = ROOT / "fuzz" / "corpus"


def seeds_eval() -> Input:
    """fuzz/examples/seeds.rs's eval(), field for field."""
    return Input(
        user_id="alice",
        roles=["developer"],
        teams=["platform"],
        action="tool:invoke",
        tool=Tool(name="github_search", sensitivity_level="medium", owner="bob", managers=[], teams=["platform"]),
        server=Server(id="srv-1", name="github"),
        client_ip="10.1.2.3",
        mfa_verified=True,
        parameters={"query": "x", "api_key": "k"},
        context={"audit_enabled": True, "request_id": "r1", "rate_limit_data": {"minute_count": 1}},
    )


def opcode_seed(name: str) -> tuple[int, bytes]:
    """fuzz/corpus/opcode/NAME: the opcode, two flag bytes, the payload."""
    raw = (CORPUS / "opcode" / name).read_bytes()
    assert raw[1:3] == b"\x00\x00"
    return raw[0], raw[3:]


def test_eval_frame_is_byte_for_byte_rusts() -> None:
    assert _wire.frame(_wire.EVAL, 9, _wire.encode_eval(seeds_eval())) == (CORPUS / "frame" / "eval").read_bytes()


def test_batch_hello_and_ping_bodies_are_byte_for_byte_rusts() -> None:
    op, payload = opcode_seed("eval_batch")
    bob = Input(user_id="bob", action="tool:list")
    assert (op, payload) == (_wire.EVAL_BATCH, _wire.encode_batch([_wire.encode_eval(seeds_eval()), _wire.encode_eval(bob)]))
    op, payload = opcode_seed("hello")
    assert (op, payload) == (_wire.HELLO, _wire.encode_hello(1 << 20, "caller-token-0123456789"))
    assert opcode_seed("ping") == (_wire.PING, b"ping")


def test_reply_headers_of_rusts_frames_parse() -> None:
    # PONG "x" (id 2), INVALIDATED (id 3), RESULT (id 4), back to back.
    raw = (CORPUS / "frame" / "replies").read_bytes()
    length, op, rid = _wire.parse_header(raw, 0, 1 << 20)
    assert (length, op, rid, raw[16:17]) == (1, _wire.PONG, 2, b"x")


def test_a_decision_decodes_every_field() -> None:
    body = decision(True, ttl=300, decision_id=(1 << 128) - 2, reasons=("a", "ü"), params='{"k":[1]}')
    d = _wire.decode_decision(body)
    assert (d.allow, d.cache_hit, d.ttl_s, d.decision_id, d.error_code) == (True, False, 300, (1 << 128) - 2, 0)
    assert d.reasons == [Reason(0, "a"), Reason(0, "ü")] and d.filtered_parameters == {"k": [1]} and not d.failed
    hit = bytes([0b11]) + body[1:]
    assert _wire.decode_decision(hit).cache_hit
    deny = _wire.decode_decision(decision(False, error_code=1002, reasons=("bad input: x",)))
    assert (deny.allow, deny.error_code, deny.reasons) == (False, 1002, [Reason(1002, "bad input: x")])


def test_every_truncation_and_any_trailing_byte_is_refused() -> None:
    body = decision(False, reasons=("one", "two"), params="{}")
    for cut in range(len(body)):
        with pytest.raises(PdpProtocolError):
            _wire.decode_decision(body[:cut])
    with pytest.raises(PdpProtocolError, match="trailing"):
        _wire.decode_decision(body + b"\x00")


@pytest.mark.parametrize(
    "body, why",
    [
        (bytes([0b100]) + decision(False)[1:], "flags"),
        (decision(False, reasons=())[:-5] + struct.pack("<I", 0xFFFFFFFF) + b"\x00", "reasons with"),
        (decision(False, reasons=("xyz",)).replace(string("xyz"), struct.pack("<I", 3) + b"\xed\xb2\x80"), "UTF-8"),
        (decision(False, reasons=())[:-1] + b"\x02", "presence tag"),
        (decision(True, error_code=1004), "allow with error code"),
        (decision(True, params="{not json"), "not JSON"),
    ],
)
def test_malformed_decisions_are_refused(body: bytes, why: str) -> None:
    with pytest.raises(PdpProtocolError, match=why):
        _wire.decode_decision(body)


def test_batches_must_hold_as_many_decisions_as_were_asked() -> None:
    two = struct.pack("<I", 2) + decision(True) + decision(False)
    assert [d.allow for d in _wire.decode_decision_batch(two, 2)] == [True, False]
    with pytest.raises(PdpProtocolError, match="2 decisions for a batch of 3"):
        _wire.decode_decision_batch(two, 3)
    with pytest.raises(PdpProtocolError, match="decisions with"):
        _wire.decode_decision_batch(struct.pack("<I", 1000), 1000)


def test_headers_are_checked_before_the_payload_is_read() -> None:
    ok = struct.pack("<IBBHQ", 10, 1, 0x82, 0, 7)
    assert _wire.parse_header(ok, 0, 10) == (10, 0x82, 7)
    with pytest.raises(PdpProtocolError, match="version 2"):
        _wire.parse_header(struct.pack("<IBBHQ", 10, 2, 0x82, 0, 7), 0, 100)
    with pytest.raises(PdpProtocolError, match="flags"):
        _wire.parse_header(struct.pack("<IBBHQ", 10, 1, 0x82, 1, 7), 0, 100)
    with pytest.raises(PdpProtocolError, match="over the maximum"):
        _wire.parse_header(ok, 0, 9)


def test_from_dict_maps_the_document_and_to_dict_gives_it_back() -> None:
    doc = sample()
    inp = Input.from_dict(doc)
    assert inp.user_id == "alice" and inp.tool == Tool(name="update_ticket", sensitivity_level="medium", owner="bob", managers=["bob"], teams=["payments"])
    assert (inp.client_ip, inp.now_ns) == ("10.20.30.40", 1795428000000000000)
    assert "client_ip" not in inp.context and inp.context["vpn"] is True
    doc["user"]["scopes"] = []  # the typed EVAL always carries its lists
    assert inp.to_dict() == doc


def test_context_fields_of_other_types_stay_in_the_context() -> None:
    inp = Input.from_dict({"user": {"id": "u"}, "action": "a", "context": {"client_ip": 7, "vpn": True}})
    assert inp.client_ip is None and inp.context == {"client_ip": 7, "vpn": True}


@pytest.mark.parametrize("now", ["soon", 1.5, None, True, 1 << 63])
def test_a_now_ns_that_is_not_an_i64_is_refused(now: object) -> None:
    # The server takes the time from the typed now_ns alone: one left in the context would
    # be ignored (or, before that fix, decided on and cached as the present's).
    doc = {"user": {"id": "u"}, "action": "a", "context": {"now_ns": now}}
    with pytest.raises(PdpInputError, match="context.now_ns"):
        Input.from_dict(doc)
    with pytest.raises(PdpInputError, match="context.now_ns"):
        eval_body(Input(user_id="u", action="a", context={"now_ns": now}), 1 << 20)


def test_an_integer_now_ns_in_the_context_travels_typed() -> None:
    moved = eval_body(Input(user_id="u", action="a", context={"now_ns": 5, "vpn": True}), 1 << 20)
    assert moved == _wire.encode_eval(Input(user_id="u", action="a", now_ns=5, context={"vpn": True}))
    # The typed field wins over the context's, as on the server.
    kept = eval_body(Input(user_id="u", action="a", now_ns=7, context={"now_ns": 5}), 1 << 20)
    assert kept == _wire.encode_eval(Input(user_id="u", action="a", now_ns=7))


@pytest.mark.parametrize(
    "doc, why",
    [
        ([1], "input: must be an object"),
        ({"action": "a"}, "user: must be an object"),
        ({"user": {"id": "u"}, "action": "a", "extra": 1}, "input.extra: the typed EVAL has no such field"),
        ({"user": {"id": "u", "authenticated": False}, "action": "a"}, "user.authenticated: the typed EVAL has no such field"),
        ({"user": {"id": "u"}, "action": "a", "server": {"id": "s", "sensitivity_level": "high"}}, "server.sensitivity_level"),
        ({"user": {"id": "u", "roles": "admin"}, "action": "a"}, "user.roles: must be a list of strings"),
        ({"user": {"id": "u", "mfa_verified": "yes"}, "action": "a"}, "user.mfa_verified: must be a boolean"),
        ({"user": {"id": "u", "mfa_age_s": True}, "action": "a"}, "user.mfa_age_s"),
        ({"user": {"id": "u"}, "action": 1}, "action: must be a string"),
        ({"user": {"id": "u"}, "action": "a", "context": "x"}, "context: must be an object"),
    ],
)
def test_from_dict_refuses_what_the_typed_eval_cannot_carry(doc: object, why: str) -> None:
    with pytest.raises(PdpInputError, match=why):
        Input.from_dict(doc)


@pytest.mark.parametrize(
    "inp, why",
    [
        (Input(user_id="u", action="a", roles="admin"), "user.roles: must be a list"),  # type: ignore[arg-type]
        (Input(user_id="u", action="a", roles=["ok", 3]), "user.roles: must be a string"),  # type: ignore[list-item]
        (Input(user_id="u\udc80", action="a"), "user.id: not valid UTF-8"),
        (Input(user_id="u", action="a", parameters={"s": {1, 2}}), "parameters: not JSON-able"),
        (Input(user_id="u", action="a", agent={"x": float("nan")}), "agent: not JSON-able"),
        (Input(user_id="u", action="a", mfa_age_s=1 << 63), "user.mfa_age_s: must be a 64-bit integer"),
        (Input(user_id="u", action="a", now_ns=True), "context.now_ns"),  # type: ignore[arg-type]
        (Input(user_id="u", action="a", mfa_verified=1), "user.mfa_verified"),  # type: ignore[arg-type]
        (Input(user_id="u", action="a", tool={"name": "t"}), "tool: must be a Tool"),  # type: ignore[arg-type]
    ],
)
def test_encoding_refuses_wrong_types(inp: Input, why: str) -> None:
    with pytest.raises(PdpInputError, match=why):
        _wire.encode_eval(inp)
