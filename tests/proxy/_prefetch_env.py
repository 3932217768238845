"""What the prefetch tests share: the tracker upstream (``_prefetch_upstream.py``, a real MCP server in
its own process), the proxy app served by uvicorn in a thread of the test process (so a test can hand
decision records to the proxy's own subscriber on its loop and read its request events), and clients.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from only1mcp.events import TOPICS, PrefetchDecision, RequestEvent
from only1mcp.jobs.bench._procs import free_port
from only1mcp.proxy.decisions import DecisionSubscriber
from only1mcp.proxy.gateway import Gateway
from tests.conftest import wait_port
from tests.proxy._raw import RawClient, text_of
from tests.proxy._served import Served as _Served

UPSTREAM = Path(__file__).with_name("_prefetch_upstream.py")
TOPIC = TOPICS["prefetch"]
TOKENS = ("tok-a-0123456789", "tok-b-0123456789")
TOOLS = """
[servers.tools.search]
cache_ttl = 60.0
[servers.tools.get_issue]
cache_ttl = {get_ttl}
[servers.tools.list_comments]
cache_ttl = 60.0
{comments}
[servers.tools.update_issue]
cache_ttl = 60.0
[servers.tools.touch_issue]
cache_ttl = 60.0
"""


def upstream(stack: Any) -> str:
    port = free_port()
    proc = stack.start(f"tracker-{port}", [sys.executable, str(UPSTREAM), str(port)])
    wait_port(port, proc)
    return f"http://127.0.0.1:{port}/mcp"


def config(tmp: Path, url: str, prefetch: str = "", extra: str = "", comments: str = "",
           get_ttl: float = 60.0) -> Path:
    """A proxy with server "t" (the tracker, every tool with a TTL, get_issue's ``get_ttl``; list_comments'
    table takes ``comments``) and server "o" (the same upstream, ``prefetch = false``), two client tokens."""
    path = tmp / f"proxy-{uuid.uuid4().hex[:6]}.toml"
    tools = TOOLS.format(comments=comments, get_ttl=get_ttl)
    path.write_text(f'[proxy]\nlisten = "127.0.0.1:{free_port()}"\n[auth]\ntokens = ["{TOKENS[0]}", "{TOKENS[1]}"]\n'
                    f'[prefetch]\nenabled = true\n{prefetch}\n{extra}\n'
                    f'[[servers]]\nname = "t"\n[[servers.replicas]]\nurl = "{url}"\n{tools}\n'
                    f'[[servers]]\nname = "o"\nprefetch = false\n[[servers.replicas]]\nurl = "{url}"\n'
                    + TOOLS.format(comments="", get_ttl=60.0) + "\n")
    return path


class _Gateway(Gateway):
    """The gateway, remembering the loop it runs on (decisions are handed to it there)."""

    loop: asyncio.AbstractEventLoop

    async def start(self, wait: float | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().start(wait)


class Served(_Served):
    """The proxy app under uvicorn in a thread, with its request events kept in memory."""

    gateway_cls = _Gateway

    def prepare(self) -> None:
        if self.gateway.subscriber is None:  # no broker here: records are handed to an unstarted subscriber
            self.gateway.subscriber = DecisionSubscriber(self.gateway, self.settings.decisions, "127.0.0.1:1")

    # -- on the proxy's loop -------------------------------------------------------------------
    def on_loop(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.gateway.loop).result(10)

    def handle(self, value: bytes | PrefetchDecision) -> str:
        """One record through the proxy's decision subscriber; its outcome."""
        data = value.to_json() if isinstance(value, PrefetchDecision) else value
        return self.on_loop(lambda: self.gateway.subscriber.handle(TOPIC, data))  # type: ignore[union-attr]

    def session_hash(self, sid: str) -> str:
        return self.gateway.telemetry.session_hash(sid)  # type: ignore[return-value]

    def learned(self, n: int, timeout: float = 5.0) -> None:
        """Wait until the memory has learned ``n`` calls in all (it learns just after each answer)."""
        until(lambda: self.gateway.prefetch.learner.learned >= n, timeout)  # type: ignore[union-attr]

    def counts(self) -> dict[str, int]:
        return dict(self.gateway.prefetch.counts)  # type: ignore[union-attr]

    def admin(self) -> dict[str, Any]:
        return httpx.get(self.url.replace("/mcp", "/admin/prefetch")).json()  # loopback: no admin token needed

    def metrics(self) -> str:
        return httpx.get(self.url.replace("/mcp", "/metrics"), headers={"Authorization": f"Bearer {TOKENS[0]}"}).text

    def events(self, tool: str) -> list[RequestEvent]:
        return [e for e in list(self.sink.events) if e.tool == tool]

    def decision(self, session: str, tool: str = "t__get_issue", confidence: float = 0.9, valid_for: float = 30.0,
                 **changes: Any) -> PrefetchDecision:
        now = time.time()
        fields = {"decision_id": uuid.uuid4().hex, "ts": now, "valid_until": now + valid_for,
                  "session_id": session, "tool": tool, "confidence": confidence, "server": "t",
                  "model_version": "test-1", **changes}
        return PrefetchDecision(**fields)


class Client:
    """One client (a token) with one session."""

    def __init__(self, url: str, token: str = TOKENS[0]) -> None:
        self.raw = RawClient(url)
        self.raw.http.headers["Authorization"] = f"Bearer {token}"
        self.sid = self.raw.initialize()

    def call(self, tool: str, **arguments: Any) -> Any:
        text = text_of(self.raw.call_tool(self.sid, tool, arguments))
        return json.loads(text)

    def search_then_get(self, query: str, server: str = "t") -> str:
        """search(query), then get_issue of its first hit (the pattern the argument model learns)."""
        first = self.call(f"{server}__search", query=query)["hits"][0]["id"]
        self.call(f"{server}__get_issue", id=first)
        return first  # type: ignore[no-any-return]

    def executions(self) -> dict[str, int]:
        return self.call("t__counts")  # type: ignore[no-any-return]

    def delete(self) -> int:
        return self.raw.send("DELETE", sid=self.sid).status_code

    def close(self) -> None:
        self.raw.close()


def until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
