"""A client's cancellation reaches the upstream: notifications/cancelled in the session
revisions, closing the response stream in 2026-07-28. The upstream (the faults fixture)
says on stderr when its sleeping tool is cancelled; the proxy logs that line."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests.proxy._raw import ACCEPT, STATELESS, RawClient

_META = "io.modelcontextprotocol/"


def _proxy_with_stdio_faults(stack):  # noqa: ANN001, ANN202
    import sys

    servers = f"""
    [[servers]]
    name = "faults"
    [[servers.replicas]]
    command = ["{sys.executable}", "-m", "only1mcp.cli", "fixture", "faults", "--stdio"]
    """
    return stack.proxy(servers)


def _wait_for(path: Path, text: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False


def test_notifications_cancelled_cancels_the_upstream_call(stack) -> None:  # noqa: ANN001
    url, proc = _proxy_with_stdio_faults(stack)
    with RawClient(url) as client:
        sid = client.initialize()
        started = time.monotonic()
        outcome: dict[str, object] = {}

        def call() -> None:
            outcome["reply"] = client.post({"jsonrpc": "2.0", "id": 4242, "method": "tools/call",
                                            "params": {"name": "faults__sleep", "arguments": {"seconds": 30}}},
                                           sid=sid)

        worker = threading.Thread(target=call)
        worker.start()
        time.sleep(1.0)  # the call is now waiting at the upstream
        response = client.post({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                "params": {"requestId": 4242, "reason": "user pressed stop"}}, sid=sid)
        assert response.status_code == 202
        worker.join(timeout=10)
        assert not worker.is_alive(), "the cancelled request was never answered"
        assert time.monotonic() - started < 10
        reply = outcome["reply"].json()  # type: ignore[union-attr]
        assert reply["id"] == 4242 and reply["error"]["code"] == -32800, reply
        assert _wait_for(proc.log_path, "sleep(30) cancelled"), proc.log_tail(20)
        assert client.call_tool(sid, "faults__echo", {"text": "still here"})["result"]["content"][0]["text"] == \
            "still here"


def test_closing_a_stateless_stream_cancels_the_upstream_call(stack) -> None:  # noqa: ANN001
    url, proc = _proxy_with_stdio_faults(stack)
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "faults__sleep", "arguments": {"seconds": 30},
                       "_meta": {f"{_META}protocolVersion": STATELESS, f"{_META}clientCapabilities": {}}}}
    headers = {"Accept": ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": STATELESS,
               "Mcp-Method": "tools/call", "Mcp-Name": "faults__sleep"}
    try:
        httpx.post(url, json=body, headers=headers, timeout=1.0)
    except httpx.ReadTimeout:
        pass  # the client gives up and closes the connection: that is the cancel
    else:
        raise AssertionError("a 30 s call answered within 1 s")
    assert _wait_for(proc.log_path, "sleep(30) cancelled"), proc.log_tail(20)
