"""``only1mcp up --config FILE`` with a server whose policy is ``learned``: the loop closes by itself.

Two real HTTP replicas (the bundled echo fixture), the user's configuration as it is, and
``up`` starting the embedded broker, Redis, the worker and the proxy. Calls through the proxy
must be routed by weights the worker published (the explanation says which learner) within
60 s of the first call, with nobody stepping in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from only1mcp.jobs.bench._procs import ProcessGroup, free_port
from conftest import wait_port

ROUTED_WITHIN_S = 60.0


def _initialize(client: httpx.Client, url: str) -> dict[str, str]:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    reply = client.post(url, headers=headers, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    reply.raise_for_status()
    headers = {**headers, "Mcp-Session-Id": reply.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    client.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return headers


def test_up_with_a_learned_server_routes_on_published_weights(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("up's process checks read /proc")
    with ProcessGroup(tmp_path) as group:
        urls = []
        for i in range(2):
            port = free_port()
            proc = group.start(f"echo{i}", [sys.executable, "-m", "only1mcp.cli", "fixture", "echo", "--port", str(port)])
            wait_port(port, proc)
            urls.append(f"http://127.0.0.1:{port}/mcp")
        listen = f"127.0.0.1:{free_port()}"
        config = tmp_path / "only1mcp.toml"
        config.write_text(textwrap.dedent(f"""\
            [proxy]
            listen = "{listen}"
            [store]
            data_dir = "{tmp_path / 'data'}"
            [[servers]]
            name = "echo"
            namespace = ""
            policy = "learned"
            fallback_policy = "round_robin"
            """) + "".join(f'[[servers.replicas]]\nurl = "{u}"\n' for u in urls))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KAFKA_BOOTSTRAP", None)
        env.pop("REDIS_URL", None)
        log = (tmp_path / "up.out").open("w")
        up = subprocess.Popen([sys.executable, "-m", "only1mcp.cli", "up", "--config", str(config), "--run-dir",
                               str(tmp_path / "run"), "--startup-timeout", "40"], stdout=log,
                              stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
        try:
            _wait_ready(up, tmp_path / "up.out", 60.0)
            url = f"http://{listen}/mcp"
            with httpx.Client(timeout=10.0) as client:
                headers = _initialize(client, url)
                began, seen = time.monotonic(), []
                while time.monotonic() - began < ROUTED_WITHIN_S:
                    reply = client.post(url, headers=headers, json={
                        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": "echo", "arguments": {"text": "hi"}}})
                    assert reply.status_code == 200 and "error" not in reply.json(), reply.text
                    request_id = reply.headers["only1mcp-request-id"]
                    explained = client.get(f"http://{listen}/admin/explain/{request_id}").json()
                    seen.append((explained.get("source"), explained.get("fallback_reason")))
                    if explained.get("source") in ("tool_ewma", "latency_model") and not explained.get(
                            "fallback_reason"):
                        assert explained["policy"] == "learned" and explained["chosen"] in ("echo/0", "echo/1")
                        assert {c["replica"] for c in explained["candidates"]} == {"echo/0", "echo/1"}
                        return
                    time.sleep(0.05)
            raise AssertionError(f"no call routed by published weights within {ROUTED_WITHIN_S:g}s; "
                                 f"last explanations: {seen[-3:]}\n{_logs(tmp_path)}")
        finally:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(timeout=45)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()
            log.close()


def _wait_ready(up: subprocess.Popen[str], out: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "only1mcp up: ready" in out.read_text(errors="replace"):
            return
        if up.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"`only1mcp up` not ready:\n{out.read_text(errors='replace')}\n{_logs(out.parent)}")


def _logs(tmp_path: Path) -> str:
    parts = []
    for log in sorted((tmp_path / "run").glob("*.log")):
        parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-10:]))
    return "\n".join(parts)
