"""Prefetch decisions end to end, real parts only: the embedded broker, Redis, a toolbox MCP server
(jobs/servers/toolbox.py, the issue tracker), ``only1mcp proxy`` emitting request events and
``only1mcp worker`` learning from them. MCP client sessions call a repeated pattern (search issues →
get an issue → list its comments, each time another issue) through the proxy; a PrefetchDecision for a
probe session, named by the keyed hash of its MCP session id as the proxy's events carry it, names the
next tool, and the proxy (``[prefetch] enabled``) fills its argument from the probe's own last call,
fetches it in the background, and answers the probe's next call from it: the whole loop."""

from __future__ import annotations

import asyncio
import json
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
TOOLS = ("search_issues", "get_issue", "list_comments")


def pattern(issue: str) -> list[tuple[str, dict]]:
    """One round of the pattern about ``issue`` (another each time: the id flows from call to call, so the
    proxy's argument model learns where list_comments' issue_id comes from, not a constant)."""
    return [("search_issues", {"query": f"crash {issue}"}), ("get_issue", {"issue_id": issue}),
            ("list_comments", {"issue_id": issue})]


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


async def _call(session: McpSession, tool: str, args: dict) -> dict:
    message = await session._request("tools/call", {"name": tool, "arguments": args})
    assert "result" in message and not message["result"].get("isError"), message
    return message["result"]


async def _session(http: aiohttp.ClientSession, url: str, calls: list[tuple[str, dict]]) -> str:
    session = McpSession(http, url, client_name="prefetch-e2e")
    await session.open()
    for tool, args in calls:
        await _call(session, tool, args)
    assert session.session_id
    return session.session_id


def _admin(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_the_loop_learns_a_pattern_decides_and_the_proxy_prefetches_the_next_call(stack, tmp_path: Path,  # noqa: ANN001
                                                                                  shared_redis: str) -> None:
    with EmbeddedBroker() as broker:
        broker.create_topics([TOPICS["requests"], TOPICS["dead_letter"], TOPICS["feature_events"],
                              TOPICS["prefetch"]], 2)
        upstream_port, proxy_port, data = free_port(), free_port(), tmp_path / "data"
        config = tmp_path / "only1mcp.toml"
        config.write_text(
            f'[proxy]\nlisten = "127.0.0.1:{proxy_port}"\n\n'
            f'[[servers]]\nname = "tracker"\nnamespace = ""\n[[servers.replicas]]\n'
            f'url = "http://127.0.0.1:{upstream_port}/mcp"\n'
            "[servers.tools.get_issue]\ncache_ttl = 60.0\n[servers.tools.list_comments]\ncache_ttl = 60.0\n\n"
            f'[events]\nbootstrap = "{broker.bootstrap}"\nhash_key = "{HASH_KEY}"\nspool_dir = "{tmp_path / "spool"}"\n\n'
            f'[worker]\nbootstrap = "{broker.bootstrap}"\ngroup = "e2e-{uuid.uuid4().hex[:8]}"\npartitions = 2\n'
            "flush_interval = 0.3\ncompact_interval = 0\nmerge_interval = 0\n\n"
            "[learning]\nenabled = false\n[anomaly]\nenabled = false\n\n"
            # every call learned, the budget no limit here (the test sessions would spend it)
            "[prefetch]\nenabled = true\nmax_share = 1.0\nmax_concurrent = 32\n\n"
            f'[store]\nredis_url = "{shared_redis}"\nkey_prefix = "e2e-{uuid.uuid4().hex[:8]}"\ndata_dir = "{data}"\n')
        upstream = stack.start("toolbox", [sys.executable, "-m", "only1mcp.jobs.servers.toolbox",
                                           "--port", str(upstream_port), "--servers", "tracker"])
        worker = stack.start("worker", [*PY, "worker", "--config", str(config)])
        proxy = stack.start("proxy", [*PY, "proxy", "--config", str(config)])
        _wait(proxy, lambda: _ready(f"http://127.0.0.1:{proxy_port}/readyz"), "the proxy ready")
        assert upstream.alive()
        url = f"http://127.0.0.1:{proxy_port}/mcp"

        admin = f"http://127.0.0.1:{proxy_port}/admin/prefetch"

        async def scenario() -> tuple[str, list[PrefetchDecision], dict, dict]:
            consumer = AIOKafkaConsumer(TOPICS["prefetch"], bootstrap_servers=broker.bootstrap,
                                        auto_offset_reset="earliest", enable_auto_commit=False)
            await consumer.start()
            found: list[PrefetchDecision] = []
            try:
                async with new_http_client() as http:
                    await asyncio.gather(*[_session(http, url, [c for r in range(3) for c in pattern(f"ISS-{s}{r}")])
                                           for s in range(12)])
                    probe = McpSession(http, url, client_name="prefetch-e2e")
                    await probe.open()
                    for tool, args in [*pattern("ISS-500"), *pattern("ISS-777")[:2]]:  # now after get_issue
                        await _call(probe, tool, args)
                    probe_hash = keyed_hash(HASH_KEY.encode(), probe.session_id.encode())
                    deadline = time.monotonic() + 40.0
                    while not any(d.session_id == probe_hash and d.tool == "list_comments" for d in found):
                        assert worker.alive(), worker.log_tail(30)
                        assert time.monotonic() < deadline, f"no decision for the probe session:\n{worker.log_tail(30)}"
                        for batch in (await consumer.getmany(timeout_ms=300)).values():
                            found += [PrefetchDecision.from_json(r.value) for r in batch]
                    # the proxy read the same record; its prefetch is stored (or in flight: the call joins it)
                    await asyncio.sleep(1.0)
                    before = _admin(admin)
                    reply = await _call(probe, "list_comments", {"issue_id": "ISS-777"})
                    after = _admin(admin)
            finally:
                await consumer.stop()
            return probe_hash, found, before, {**after, "reply": reply}

        probe_hash, found, before, after = asyncio.run(scenario())
        decision = next(d for d in found if d.session_id == probe_hash and d.tool == "list_comments")
        assert decision.confidence >= 0.5 and decision.server == "tracker"
        assert decision.valid_until > time.time() - 5 and decision.model_version.endswith("+online")
        assert all(d.tool in TOOLS for d in found)
        assert len({d.session_id for d in found}) >= 10  # the other sessions were decided for too
        # the loop closed: the probe's call was answered by the prefetch the decision started
        assert after["counts"]["issued"] >= 1 and after["counts"]["stored"] + after["counts"]["joined"] >= 1, after
        assert after["counts"]["used"] == before["counts"]["used"] + 1, (before, after)
        assert "ISS-777" not in str(after["memory"])  # the admin view counts; it never shows an argument
