"""An upstream answering HTTP 503 fails the call at that replica: a safe tool is retried on
another replica, an unsafe one gets -32011 naming the status, and nothing answers -32603."""

from __future__ import annotations

import sys
from pathlib import Path

from only1mcp.jobs.bench._procs import free_port
from tests.conftest import wait_port
from tests.proxy._raw import RawClient


def test_a_503_is_a_replica_failure(stack) -> None:  # noqa: ANN001
    port = free_port()
    broken = stack.start(f"broken-{port}", [sys.executable, str(Path(__file__).with_name("_http503.py")), str(port)])
    wait_port(port, broken)
    good, _ = stack.fixture("faults")
    url, _ = stack.proxy(f"""
[[servers]]
name = "f"
policy = "round_robin"
upstream_sessions = 1
[servers.health]
interval = 0
[[servers.replicas]]
url = "http://127.0.0.1:{port}/mcp"
[[servers.replicas]]
url = "{good}"
""")
    with RawClient(url) as client:
        sid = client.initialize()
        lookups = [client.call_tool(sid, "f__lookup", {"key": str(i)}) for i in range(6)]
        assert all("result" in r for r in lookups), lookups  # retried on the good replica
        writes = [client.call_tool(sid, "f__write", {"key": str(i)}) for i in range(4)]
        failed = [w["error"] for w in writes if "error" in w]
        assert failed, "round robin sends some writes to the broken replica"
        assert all(e["code"] == -32011 and "HTTP 503" in e["message"] for e in failed), failed
