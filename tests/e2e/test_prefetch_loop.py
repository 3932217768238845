"""Prefetch decisions end to end, real parts only: the embedded broker, Redis, a toolbox MCP server
(jobs/servers/toolbox.py, the issue tracker), ``only1mcp proxy`` emitting request events and
``only1mcp worker`` learning from them. MCP client sessions call a repeated pattern (search issues →
get an issue → list its comments) through the proxy; a PrefetchDecision for a probe session, named
by the keyed hash of its MCP session id as the proxy's events carry it, names the next tool.
The proxy's executor (which would apply the decision) is not involved."""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer

from only1mcp.events import TOPICS, PrefetchDecision, keyed_hash
from only1mcp.infra.broker import EmbeddedBroker
from only1mcp.jobs.bench._loadgen import McpSession, new_http_client
from only1mcp.jobs.bench._procs import Managed, free_port

pytestmark = pytest.mark.timeout(180)

PY = [sys.executable, "-m", "only1mcp.cli"]
HASH_KEY = "e2e-prefetch"
PATTERN = (("search_issues", {"query": "crash on start"}), ("get_issue", {"issue_id": "ISS-1042"}),
           ("list_comments", {"issue_id": "ISS-1042"}))


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return resp.status == 200
    except OSError:
        return False


def _wait(proc: Managed, check, what: str, timeout: float = 40.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.alive(), f"{proc.name} died waiting for {what}:\n{proc.log_tail(30)}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{proc.log_tail(30)}"
        time.sleep(0.2)


async def _session(http: aiohttp.ClientSession, url: str, calls: list[tuple[str, dict]]) -> str:
    session = McpSession(http, url, client_name="prefetch-e2e")
    await session.open()
    for tool, args in calls:
        message = await session._request("tools/call", {"name": tool, "arguments": args})
        assert "result" in message and not message["result"].get("isError"), message
    assert session.session_id
    return session.session_id


def test_a_repeated_pattern_through_the_proxy_yields_decisions_for_its_session(stack, tmp_path: Path,  # noqa: ANN001
                                                                                  shared_redis: str) -> None:
    with EmbeddedBroker() as broker:
        broker.create_topics([TOPICS["requests"], TOPICS["dead_letter"], TOPICS["feature_events"],
                              TOPICS["prefetch"]], 2)
        upstream_port, proxy_port, data = free_port(), free_port(), tmp_path / "data"
        config = tmp_path / "only1mcp.toml"
        config.write_text(
            f'[proxy]\nlisten = "127.0.0.1:{proxy_port}"\n\n'
            f'[[servers]]\nname = "tracker"\nnamespace = ""\n[[servers.replicas]]\n'
            f'url = "http://127.0.0.1:{upstream_port}/mcp"\n\n'
            f'[events]\nbootstrap = "{broker.bootstrap}"\nhash_key = "{HASH_KEY}"\nspool_dir = "{tmp_path / "spool"}"\n\n'
            f'[worker]\nbootstrap = "{broker.bootstrap}"\ngroup = "e2e-{uuid.uuid4().hex[:8]}"\npartitions = 2\n'
            "flush_interval = 0.3\ncompact_interval = 0\nmerge_interval = 0\n\n"
            "[learning]\nenabled = false\n[anomaly]\nenabled = false\n\n"
            f'[store]\nredis_url = "{shared_redis}"\nkey_prefix = "e2e-{uuid.uuid4().hex[:8]}"\ndata_dir = "{data}"\n')
        upstream = stack.start("toolbox", [sys.executable, "-m", "only1mcp.jobs.servers.toolbox",
                                           "--port", str(upstream_port), "--servers", "tracker"])
        worker = stack.start("worker", [*PY, "worker", "--config", str(config)])
        proxy = stack.start("proxy", [*PY, "proxy", "--config", str(config)])
        _wait(proxy, lambda: _ready(f"http://127.0.0.1:{proxy_port}/readyz"), "the proxy ready")
        assert upstream.alive()
        url = f"http://127.0.0.1:{proxy_port}/mcp"

        async def scenario() -> tuple[str, list[PrefetchDecision]]:
            consumer = AIOKafkaConsumer(TOPICS["prefetch"], bootstrap_servers=broker.bootstrap,
                                        auto_offset_reset="earliest", enable_auto_commit=False)
            await consumer.start()
            found: list[PrefetchDecision] = []
            try:
                async with new_http_client() as http:
                    await asyncio.gather(*[_session(http, url, list(PATTERN) * 3) for _ in range(12)])
                    probe = await _session(http, url, [*PATTERN, *PATTERN[:2]])  # now after get_issue
                probe_hash = keyed_hash(HASH_KEY.encode(), probe.encode())
                deadline = time.monotonic() + 40.0
                while not any(d.session_id == probe_hash and d.tool == "list_comments" for d in found):
                    assert worker.alive(), worker.log_tail(30)
                    assert time.monotonic() < deadline, f"no decision for the probe session:\n{worker.log_tail(30)}"
                    for batch in (await consumer.getmany(timeout_ms=300)).values():
                        found += [PrefetchDecision.from_json(r.value) for r in batch]
            finally:
                await consumer.stop()
            return probe_hash, found

        probe_hash, found = asyncio.run(scenario())
        decision = next(d for d in found if d.session_id == probe_hash and d.tool == "list_comments")
        assert decision.confidence >= 0.5 and decision.server == "tracker"
        assert decision.valid_until > time.time() - 5 and decision.model_version.endswith("+online")
        assert all(d.tool in {tool for tool, _ in PATTERN} for d in found)
        assert len({d.session_id for d in found}) >= 10  # the other sessions were decided for too
