"""Prefetch end to end over the real embedded broker (tansu): the proxy as a subprocess
(``only1mcp proxy`` with ``[prefetch] enabled``), the tracker upstream, a ``PrefetchDecision``
published on ``mcp.prefetch`` with aiokafka as the worker would. The decision becomes a background
upstream call with the id the session's last result named; the client's next call is a hit, marked
``prefetch_hit`` in its request event on ``mcp.requests``, and counted used on /metrics."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import httpx
from aiokafka import AIOKafkaProducer

from only1mcp.events import TOPICS, PrefetchDecision, keyed_hash
from only1mcp.infra.broker import EmbeddedBroker
from tests.conftest import PYTHON, Stack, wait_port
from tests.proxy._topics import request_events
from tests.proxy._prefetch_env import TOKENS, TOOLS, Client, until, upstream

HASH_KEY = "prefetch-test-key"


def _publish(bootstrap: str, record: PrefetchDecision) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        try:
            await producer.send_and_wait(TOPICS["prefetch"], record.to_json(), key=record.session_id.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def _metric(url: str, name: str) -> float:
    text = httpx.get(url.replace("/mcp", "/metrics"), headers={"Authorization": f"Bearer {TOKENS[0]}"}).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_published_decision_becomes_a_prefetch_and_a_hit(stack: Stack, tmp_path) -> None:  # noqa: ANN001
    with EmbeddedBroker() as broker:
        broker.create_topics([TOPICS["requests"]], 1)
        broker.create_topics([TOPICS["prefetch"]], 2)
        tracker = upstream(stack)
        body = (f'[auth]\ntokens = ["{TOKENS[0]}"]\n[prefetch]\nenabled = true\n'
                f'[events]\nbootstrap = "{broker.bootstrap}"\nspool_dir = "{tmp_path / "spool"}"\n'
                f'hash_key = "{HASH_KEY}"\nlinger_ms = 1.0\n'
                f'[[servers]]\nname = "t"\n[[servers.replicas]]\nurl = "{tracker}"\n{TOOLS.format(comments="", get_ttl=60.0)}')
        path, port = stack.write_config(body)
        proc = stack.start(f"proxy-{port}", [PYTHON, "-m", "only1mcp.cli", "proxy", "--config", str(path)])
        wait_port(port, proc, timeout=30)
        url = f"http://127.0.0.1:{port}/mcp"
        admin = url.replace("/mcp", "/admin")
        # the proxy reads mcp.prefetch although [decisions] topics does not name it ([prefetch] enabled)
        until(lambda: any(a.startswith("mcp.prefetch/") for a in
                          httpx.get(f"{admin}/upstreams").json()["decisions"]["assigned"]), timeout=20)
        client = Client(url)
        try:
            for i in range(4):
                client.search_then_get(f"warmup-{i}")
            hit = client.call("t__search", query="published")["hits"][0]["id"]
            until(lambda: httpx.get(f"{admin}/prefetch").json()["memory"]["learned"] >= 9)
            now = time.time()
            decision = PrefetchDecision(decision_id=uuid.uuid4().hex, ts=now, valid_until=now + 30,
                                        session_id=keyed_hash(HASH_KEY.encode(), client.sid.encode()),
                                        tool="t__get_issue", confidence=0.9, server="t", model_version="e2e")
            stale = PrefetchDecision(decision_id=uuid.uuid4().hex, ts=now - 60, valid_until=now - 30,
                                     session_id=decision.session_id, tool="t__search", confidence=0.9)
            _publish(broker.bootstrap, stale)
            _publish(broker.bootstrap, decision)
            until(lambda: httpx.get(f"{admin}/prefetch").json()["counts"]["stored"] == 1, timeout=15)
            assert client.executions()[f"get_issue {hit}"] == 1  # fetched in the background
            resp, reply = client.raw.request(client.sid, "tools/call",
                                             {"name": "t__get_issue", "arguments": {"id": hit}})
            assert reply["result"]["content"][0]["text"].find(hit) >= 0
            assert client.executions()[f"get_issue {hit}"] == 1  # the client's call was a hit
            request_id = resp.headers["only1mcp-request-id"]
            event = request_events(broker.bootstrap, {request_id})[request_id]
            assert event.prefetch_hit and event.cache_hit and event.tool == "t__get_issue"
            assert _metric(url, "only1mcp_prefetch_used_total") == 1.0
            assert _metric(url, "only1mcp_prefetch_issued_total") == 1.0
            assert _metric(url, 'only1mcp_decisions_total{kind="prefetch",outcome="applied"}') == 1.0
            assert _metric(url, 'only1mcp_decisions_total{kind="prefetch",outcome="rejected_stale"}') == 1.0
            assert client.executions().get("search published") == 1  # the stale decision never ran
        finally:
            client.close()
