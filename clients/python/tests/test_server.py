"""Against the real ``sark-pdp serve``: HELLO, single, batch, pipelined, asyncio and pooled
evaluations, the caller token, client-side limits, and the README's script."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sark_pdp import (
    INVALID_INPUT,
    AsyncClient,
    AsyncPool,
    Client,
    Input,
    PdpUnauthorized,
    Pool,
)
from support import TOKEN, mixed, present, sample

README = Path(__file__).resolve().parents[1] / "README.md"


def test_hello_says_what_the_server_agreed(server) -> None:
    with Client.connect("127.0.0.1", server.port, raise_errors=True) as c:
        h = c.hello
        assert h is not None
        assert (h.max_payload, h.max_batch, h.shards, h.shard) == (1 << 20, 4096, 1, 0)
        assert h.bundle_revision and h.driver in ("io_uring", "epoll")
        assert c.ping()


def test_a_dict_and_an_input_get_the_same_decision(server) -> None:
    with Client.connect("127.0.0.1", server.port, raise_errors=True) as c:
        d = c.evaluate(sample())
        assert d.allow and not d.failed and d.error_code == 0 and d.decision_id > 0
        assert [r.text for r in d.reasons] == ["allowed: all policies passed"]
        assert d.filtered_parameters == {"ticket_id": "T-42", "status": "closed"}  # api_token filtered
        typed = c.evaluate(Input.from_dict(sample()))
        assert (typed.allow, typed.reasons, typed.filtered_parameters) == (d.allow, d.reasons, d.filtered_parameters)
        assert typed.decision_id != d.decision_id
        no = c.evaluate(sample("invoke-critical-viewer"))
        assert not no.allow and not no.failed and len(no.reasons) > 3


def test_a_repeat_about_the_present_is_a_cache_hit(server) -> None:
    doc = present(sample(), "hit-user")
    with Client.connect("127.0.0.1", server.port, raise_errors=True) as c:
        first, second = c.evaluate(doc), c.evaluate(doc)
    # 300 s (medium), or less within 5 minutes of a time boundary the policy reads (the
    # day's end, office hours: decision.rego's seconds_to_boundary).
    assert not first.cache_hit and 0 < first.ttl_s <= 300
    assert second.cache_hit and 0 < second.ttl_s <= 300 and second.allow


def test_negotiated_max_payload_is_enforced_before_sending(server) -> None:
    with Client.connect("127.0.0.1", server.port, max_payload=4096) as c:
        hello = c.hello
        assert hello is not None and hello.max_payload == 4096
        big = present(sample(), "big")
        big["parameters"]["blob"] = "x" * 5000
        d = c.evaluate(big)
        # Not sent: the server would have answered ERROR 3001 and closed the connection.
        assert (d.allow, d.failed, d.error_code) == (False, True, INVALID_INPUT)
        assert "over the server's maximum payload of 4096" in d.reasons[0].text
        assert c.evaluate(present(sample(), "small")).allow
        assert c.hello is hello, "the connection was not kept"


@pytest.mark.parametrize("max_batch", [7, 100_000])
def test_batches_are_split_and_keep_their_order(server, max_batch: int) -> None:
    # Small inputs: 5000 of them fit in one 1 MiB frame, so only max_batch splits them.
    docs, want = mixed(5000 if max_batch > 4096 else 60, f"batch-{max_batch}", small=True)
    docs[10] = {"user": {"id": "u"}}  # no action: cannot be sent
    with Client.connect("127.0.0.1", server.port, max_batch=max_batch, timeout=60) as c:
        ds = c.evaluate_batch(docs)
    assert len(ds) == len(docs)
    assert (ds[10].allow, ds[10].error_code) == (False, INVALID_INPUT)
    # Over the server's 4096 an unsplit batch is ERROR 3005: every one would be a deny.
    assert [d.allow for i, d in enumerate(ds) if i != 10] == [w for i, w in enumerate(want) if i != 10]
    assert not any(d.failed for i, d in enumerate(ds) if i != 10)


def test_a_batch_reply_over_max_payload_fails_closed(server) -> None:
    # 4096 decisions of 8 reasons each make a ~3 MB DECISION_BATCH, over the 1 MiB
    # negotiated: the server refuses the batch (ERROR 3005), or, before it did, sent the
    # reply anyway and the client refused it from the header (4004). Denies either way.
    doc = present(sample("invoke-critical-viewer"), "big-reply")
    with Client.connect("127.0.0.1", server.port, max_batch=4096, timeout=60) as c:
        ds = c.evaluate_batch([doc] * 4096)
    assert len(ds) == 4096 and all(d.failed and not d.allow for d in ds)
    assert ds[0].error_code in (3005, 4004) and "maximum payload of 1048576" in ds[0].reasons[0].text
    # The default (1024 a frame) stays within it.
    with Client.connect("127.0.0.1", server.port, raise_errors=True, timeout=60) as c:
        assert not any(d.allow or d.failed for d in c.evaluate_batch([doc] * 4096))


def test_thousands_pipelined_on_one_socket(server) -> None:
    docs, want = mixed(6000, "pipe")
    with Client.connect("127.0.0.1", server.port, raise_errors=True, timeout=60) as c:
        hello = c.hello
        ds = c.evaluate_many(docs, depth=3000)
        assert c.hello is hello
    assert [d.allow for d in ds] == want
    assert len({d.decision_id for d in ds}) == len(ds)


def test_thousands_in_flight_with_asyncio(server) -> None:
    docs, want = mixed(6000, "async")

    async def run() -> None:
        async with await AsyncClient.connect("127.0.0.1", server.port, raise_errors=True, timeout=60, max_in_flight=3000) as c:
            ds = await asyncio.gather(*(c.evaluate(d) for d in docs))
            assert c.in_flight == 0
            assert [d.allow for d in ds] == want
            assert len({d.decision_id for d in ds}) == len(ds)
            batch = await c.evaluate_batch(docs[:2500])
            assert [d.allow for d in batch] == want[:2500]
            assert await c.ping()

    asyncio.run(run())


def test_a_blocking_pool_serves_many_threads(server) -> None:
    pool = Pool("127.0.0.1", server.port, size=4, raise_errors=True, timeout=60)
    docs, want = mixed(300, "pool")
    failures: list[str] = []
    start = threading.Barrier(8)

    def work(k: int) -> None:
        start.wait()
        for i in range(k, len(docs), 8):
            d = pool.evaluate(docs[i]) if i % 2 else pool.evaluate_many([docs[i]], depth=1)[0]
            if d.allow != want[i]:
                failures.append(f"{i}: {d}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with pool:
        assert not failures
        # Eight threads on four connections: every connection was used.
        assert all(c.connected for c in pool.clients)
        assert [d.allow for d in pool.evaluate_batch(docs)] == want


def test_an_async_pool_spreads_over_its_connections(server) -> None:
    docs, want = mixed(2000, "apool")

    async def run() -> None:
        async with AsyncPool("127.0.0.1", server.port, size=4, raise_errors=True, timeout=60) as pool:
            assert [d.allow for d in await pool.evaluate_many(docs)] == want
            assert all(c.connected for c in pool.clients)
            assert [d.allow for d in await pool.evaluate_batch(docs)] == want
            assert await pool.ping()

    asyncio.run(run())


@pytest.mark.parametrize("token", [None, "not-the-caller-token"])
def test_without_the_caller_token_every_answer_is_a_deny(token_server, token: str | None) -> None:
    c = Client.connect("127.0.0.1", token_server.port, token=token)
    assert not c.connected
    d = c.evaluate(sample())
    assert (d.allow, d.failed, d.error_code) == (False, True, 3006)
    assert "caller token" in d.reasons[0].text
    assert not c.ping()
    with pytest.raises(PdpUnauthorized) as e:
        Client.connect("127.0.0.1", token_server.port, token=token, raise_errors=True)
    assert e.value.code == 3006

    async def run() -> None:
        a = await AsyncClient.connect("127.0.0.1", token_server.port, token=token)
        assert (await a.evaluate(sample())).error_code == 3006
        with pytest.raises(PdpUnauthorized):
            await AsyncClient.connect("127.0.0.1", token_server.port, token=token, raise_errors=True)

    asyncio.run(run())


def test_with_the_caller_token_it_works(token_server) -> None:
    with Client.connect("127.0.0.1", token_server.port, token=TOKEN, raise_errors=True) as c:
        assert c.evaluate(sample()).allow

    async def run() -> None:
        async with await AsyncClient.connect("127.0.0.1", token_server.port, token=TOKEN, raise_errors=True) as a:
            assert (await a.evaluate(sample())).allow

    asyncio.run(run())


def test_a_closed_client_denies(server) -> None:
    c = Client.connect("127.0.0.1", server.port)
    c.close()
    d = c.evaluate(sample())
    assert (d.allow, d.failed) == (False, True) and "closed" in d.reasons[0].text


def test_the_readme_script_works(server) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    script = blocks[0]
    assert len(script.strip().splitlines()) == 3 and "7474" in script
    out = subprocess.run([sys.executable, "-c", script.replace("7474", str(server.port))], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (0, "True\n", "")
    # And where nothing listens, the same script prints False: it fails closed.
    refused = subprocess.run([sys.executable, "-c", script.replace("7474", "1")], capture_output=True, text=True, timeout=60)
    assert (refused.returncode, refused.stdout) == (0, "False\n")



def test_a_now_ns_in_the_context_json_does_not_poison_the_cache(server) -> None:
    """A typed EVAL with a now_ns only in its context JSON (which the client itself never
    sends: it moves it to the typed field) must not leave an answer for that time under
    the present's key. Servers before 268e1a6 decided on it and cached it as the present."""
    from sark_pdp import _wire
    from support import eval_cli

    # A viewer on a low tool: time_based allows it in business hours only.
    doc = {"user": {"id": "u-poison", "roles": ["viewer"], "teams": ["payments"], "mfa_verified": True, "mfa_age_s": 60},
           "action": "tool:invoke", "tool": {"name": "list_invoices", "sensitivity_level": "low", "teams": ["payments"]},
           "context": {"client_ip": "10.1.2.3", "audit_enabled": True, "vpn": True}}
    now = eval_cli(doc)["allow"]
    # Monday 10:00 (in hours) or Saturday 10:00 (not): whichever decides otherwise than now.
    other = 1795428000000000000 if not now else 1795428000000000000 + 5 * 86400 * 10**9
    assert eval_cli({**doc, "context": {**doc["context"], "now_ns": other}})["allow"] != now
    poison = Input.from_dict(doc)
    poison.context = {**(poison.context or {}), "now_ns": other}
    with Client.connect("127.0.0.1", server.port, raise_errors=True) as c:
        c._exchange([(_wire.EVAL, _wire.encode_eval(poison), 1)], 1)
        assert c.evaluate(doc).allow == now, "the present got the answer for another time"
