"""The response cache through a real proxy: read-only tools are answered from the cache within
their TTL, side-effecting tools never are, the byte bound holds, and tools/list_changed
invalidates the server's entries. Upstream executions are counted by the upstream itself."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

from only1mcp.jobs.bench._procs import free_port
from tests.conftest import wait_port
from tests.proxy._raw import RawClient


def _journal_count(journal: Path, tool: str, key: str) -> int:
    if not journal.exists():
        return 0
    return sum(1 for line in journal.read_text().splitlines() if line.split()[:2] == [tool, key])


def _faults(stack, journal: Path) -> str:  # noqa: ANN001
    port = free_port()
    proc = stack.start(f"faults-{port}", [sys.executable, "-m", "only1mcp.cli", "fixture", "faults",
                                          "--port", str(port), "--journal", str(journal)])
    wait_port(port, proc)
    return f"http://127.0.0.1:{port}/mcp"


def test_read_only_results_are_cached_within_ttl_and_writes_never(stack, tmp_path: Path) -> None:  # noqa: ANN001
    journal = tmp_path / "journal.txt"
    upstream = _faults(stack, journal)
    url, _ = stack.proxy(f"""
[[servers]]
name = "f"
[[servers.replicas]]
url = "{upstream}"
[servers.tools.lookup]
cache_ttl = 1.5
[servers.tools.write]
cache_ttl = 60.0
""")
    with RawClient(url) as client:
        sid = client.initialize()
        first = client.call_tool(sid, "f__lookup", {"key": "a"})
        again = client.call_tool(sid, "f__lookup", {"key": "a"})
        assert first["result"] == again["result"]
        assert _journal_count(journal, "lookup", "a") == 1  # the second came from the cache
        client.call_tool(sid, "f__lookup", {"key": "b"})
        assert _journal_count(journal, "lookup", "b") == 1  # other arguments, other entry
        time.sleep(1.7)
        client.call_tool(sid, "f__lookup", {"key": "a"})
        assert _journal_count(journal, "lookup", "a") == 2  # expired: asked again
        for _ in range(3):
            client.call_tool(sid, "f__write", {"key": "w"})
        assert _journal_count(journal, "write", "w") == 3  # a side-effecting tool is never cached
        stats = httpx.get(url.replace("/mcp", "/admin/cache")).json()
        assert stats["hits"] == 1 and stats["entries"] >= 1, stats


def test_the_byte_bound_holds(stack, tmp_path: Path) -> None:  # noqa: ANN001
    journal = tmp_path / "journal.txt"
    upstream = _faults(stack, journal)
    url, _ = stack.proxy(f"""
[[servers]]
name = "f"
[[servers.replicas]]
url = "{upstream}"
[servers.tools.lookup]
cache_ttl = 60.0

[cache]
max_bytes = 2000
policy = "sieve"
""")
    with RawClient(url) as client:
        sid = client.initialize()
        for i in range(60):
            client.call_tool(sid, "f__lookup", {"key": f"k{i}"})
        stats = httpx.get(url.replace("/mcp", "/admin/cache")).json()
    assert stats["policy"] == "sieve" and 0 < stats["bytes"] <= 2000 and stats["evictions"] > 0, stats


def test_list_changed_invalidates_the_servers_entries(stack) -> None:  # noqa: ANN001
    conformance, _ = stack.fixture("conformance")
    url, _ = stack.proxy(f"""
[[servers]]
name = "c"
[[servers.replicas]]
url = "{conformance}"
[servers.tools.test_simple_text]
safe = true
cache_ttl = 60.0
""")
    admin = url.replace("/mcp", "/admin/cache")
    with RawClient(url) as client:
        sid = client.initialize()
        client.call_tool(sid, "c__test_simple_text", {})
        client.call_tool(sid, "c__test_simple_text", {})
        assert httpx.get(admin).json()["hits"] == 1
        client.call_tool(sid, "c__test_add_tool", {})  # the upstream sends tools/list_changed
        client.poll(lambda: httpx.get(admin).json()["invalidations"] >= 1, timeout=10)
        client.call_tool(sid, "c__test_simple_text", {})
        stats = httpx.get(admin).json()
        assert stats["hits"] == 1 and stats["misses"] == 2, stats


def test_decisions_and_cache_figures_are_visible(stack, tmp_path: Path) -> None:  # noqa: ANN001
    journal = tmp_path / "journal.txt"
    upstreams = [_faults(stack, journal) for _ in range(2)]
    replicas = "".join(f'[[servers.replicas]]\nurl = "{u}"\n' for u in upstreams)
    url, _ = stack.proxy(f'[[servers]]\nname = "f"\n{replicas}[servers.tools.lookup]\ncache_ttl = 30.0\n')
    with RawClient(url) as client:
        sid = client.initialize()
        client.post({"jsonrpc": "2.0", "id": "trace-me-1", "method": "tools/call",
                     "params": {"name": "f__lookup", "arguments": {"key": "x"}}}, sid=sid)
        client.post({"jsonrpc": "2.0", "id": "trace-me-2", "method": "tools/call",
                     "params": {"name": "f__lookup", "arguments": {"key": "x"}}}, sid=sid)
    first = httpx.get(url.replace("/mcp", "/admin/decisions/trace-me-1")).json()
    attempt = first["calls"][0]["attempts"][0]
    assert attempt["policy"] == "p2c_ewma" and attempt["replica"] in ("f/0", "f/1") and attempt["reason"]
    assert sorted(attempt["candidates"]) == ["f/0", "f/1"]
    second = httpx.get(url.replace("/mcp", "/admin/decisions/trace-me-2")).json()
    assert second["calls"][0]["attempts"] == [{"cache": "hit"}]
    assert httpx.get(url.replace("/mcp", "/admin/decisions/never-sent")).status_code == 404
    metrics = httpx.get(url.replace("/mcp", "/metrics")).text
    assert "only1mcp_cache_hits_total 1.0" in metrics, [l for l in metrics.splitlines() if "cache" in l][:10]
    assert 'only1mcp_calls_total{outcome="ok",replica=' in metrics or "only1mcp_calls_total{" in metrics
