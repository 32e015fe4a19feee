"""Decision for decision, the typed path (this client, EVAL over the binary protocol)
against ``sark-pdp eval`` (the JSON document through the same decision point) for every
``data.sark.decision`` case input of policies/cases/*.yaml and every shard/samples input.

A case whose document the typed EVAL cannot carry (``Input.from_dict`` refuses it) is
not sent; those are counted by the reason ``from_dict`` gives and the counts must be
exactly ``UNTYPED`` below, so a change in the cases or in the mapping shows up here.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import yaml

from sark_pdp import Client, Decision, Input, PdpInputError
from support import ROOT, SAMPLES, eval_cli, running, sample

#: How many case inputs cannot be sent typed, by the (first) reason Input.from_dict
#: gives. The first group is structural: the typed EVAL always has a user object with a
#: string id and a string action, lists of strings, a boolean mfa_verified, an object
#: context, an integer context.now_ns; these cases test the policy's checks of malformed
#: JSON documents, which a typed caller cannot send at all. The second group is fields the policies read that
#: the EVAL has no slot for (user.authenticated, tool.allowed_teams, tool.visibility,
#: server.sensitivity_level): over the binary protocol they cannot be expressed.
UNTYPED = {
    # not expressible as typed fields: malformed documents
    "input: must be an object": 3,
    "user: must be an object": 25,
    "user.id: must be a string": 1,
    "action: must be a string": 1,
    "user.roles: must be a list of strings": 2,
    "user.teams: must be a list of strings": 1,
    "user.team_manager_of: must be a list of strings": 1,
    "user.scopes: must be a list of strings": 1,
    "user.mfa_verified: must be a boolean": 1,
    "user.mfa_age_s: must be a 64-bit integer": 1,
    "tool: must be an object": 1,
    "tool.name: must be a string": 1,
    "tool.teams: must be a list of strings": 1,
    "tool.managers: must be a list of strings": 1,
    "server: must be an object": 1,
    "server.teams: must be a list of strings": 1,
    "context: must be an object": 1,
    # not a 64-bit integer: the typed now_ns cannot hold it and the server ignores one in
    # the context JSON (it would decide for the present, where eval denies: input error)
    "context.now_ns: must be a 64-bit integer (nanoseconds since the epoch)": 2,
    # fields the policies read that the typed EVAL has no slot for
    "user.authenticated: the typed EVAL has no such field": 1,
    "tool.allowed_teams: the typed EVAL has no such field": 1,
    "tool.visibility: the typed EVAL has no such field": 2,
    "server.sensitivity_level: the typed EVAL has no such field": 13,
}
#: Case inputs sent typed and compared (223 data.sark.decision cases today, 2 samples).
TYPED = 162


class CaseLoader(yaml.SafeLoader):
    """SafeLoader that keeps unquoted dates and times as strings (JSON has no dates)."""


CaseLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def case_inputs() -> list[tuple[str, Any]]:
    """(name, input document): the samples, then every data.sark.decision case."""
    out = [(p.name, sample(p.stem)) for p in sorted(SAMPLES.glob("*.json"))]
    for path in sorted((ROOT / "policies" / "cases").glob("*.yaml")):
        doc = yaml.load(path.read_text(), Loader=CaseLoader)
        for i, case in enumerate(doc.get("cases") or []):
            if case.get("entrypoint", "data.sark.decision") == "data.sark.decision" and "input" in case:
                out.append((f"{path.name}: {case.get('name', i)}", case["input"]))
    return out


def comparable(d: Decision) -> dict[str, Any]:
    """What both paths must agree on."""
    return {
        "allow": d.allow,
        "reasons": [r.text for r in d.reasons],
        "error_code": d.error_code,
        "filtered_parameters": d.filtered_parameters,
    }


def from_eval(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "allow": doc["allow"],
        "reasons": doc["reasons"],
        "error_code": doc.get("error", {}).get("code", 0),
        "filtered_parameters": doc.get("filtered_parameters"),
    }


@pytest.fixture(scope="module")
def fresh_server():
    """A server of its own, so that its cache holds only these cases' decisions."""
    with running() as s:
        yield s


def test_typed_decisions_equal_sark_pdp_eval(fresh_server) -> None:
    typed: list[tuple[str, dict[str, Any]]] = []
    untyped: Counter[str] = Counter()
    for name, doc in case_inputs():
        try:
            Input.from_dict(doc)
        except PdpInputError as e:
            untyped[str(e)] += 1
            continue
        typed.append((name, doc))
    assert dict(untyped) == UNTYPED
    assert len(typed) == TYPED

    # Each case is sent as soon as its eval is done: cases without context.now_ns are
    # about the present, and some TTLs count down to a time of day.
    def timed_eval(doc: Any) -> tuple[dict[str, Any], float]:
        return eval_cli(doc), time.monotonic()

    expected, got, lag = [], [], []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex, Client.connect(
        "127.0.0.1", fresh_server.port, raise_errors=True, timeout=60
    ) as c:
        for (_, doc), job in list(zip(typed, [ex.submit(timed_eval, doc) for _, doc in typed])):
            want, at = job.result()
            got.append(c.evaluate(doc))
            expected.append(want)
            lag.append(time.monotonic() - at)
        # The same again, pipelined in one go: every answer must be the same decision.
        again = c.evaluate_many([doc for _, doc in typed], depth=32)

    mismatches = []
    allowed = 0
    for (name, _), want, d, d2, late in zip(typed, expected, got, again, lag):
        allowed += d.allow
        problems = []
        if comparable(d) != from_eval(want):
            problems.append(f"typed: {comparable(d)}\n  eval:  {from_eval(want)}")
        if comparable(d2) != comparable(d):
            problems.append(f"again: {comparable(d2)}")
        if any(r.code != d.error_code for r in d.reasons):
            problems.append(f"reason codes {[r.code for r in d.reasons]} with error code {d.error_code}")
        # TTL: what eval says it would cache for (0: not cached, e.g. now_ns not the
        # present), less the seconds since eval decided when it counts down to a time of
        # day; a hit (an earlier case with the same key) has at most that left.
        ttl = want["cache"]["ttl_s"]
        low = 1 if d.cache_hit else ttl - math.ceil(late) - 1
        if not max(low, 0) <= d.ttl_s <= ttl or (ttl == 0) != (d.ttl_s == 0):
            problems.append(f"ttl {d.ttl_s} (cache hit: {d.cache_hit}), eval's {ttl}")
        if problems:
            mismatches.append(f"{name}:\n  " + "\n  ".join(problems))
    assert not mismatches, f"{len(mismatches)} of {len(typed)} differ:\n" + "\n".join(mismatches)
    # Both outcomes are exercised.
    assert 20 < allowed < len(typed) - 20
