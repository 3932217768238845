"""A lightweight MCP load generator: the Streamable HTTP exchange done by hand over aiohttp.

One ``McpSession`` per concurrent worker: POST ``initialize``, keep the
``Mcp-Session-Id`` header, POST ``notifications/initialized``, then POST
``tools/call`` as often as asked. Replies may be JSON or SSE; either way the
JSON-RPC message with the request's id is picked out and the echoed text is
checked, so a wrong answer counts as an error, not as a call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

__all__ = [
    "PROTOCOL_VERSION",
    "McpError",
    "McpSession",
    "Slice",
    "drive",
    "new_http_client",
    "parse_rpc_response",
    "result_text",
]

PROTOCOL_VERSION = "2025-06-18"
_ACCEPT = "application/json, text/event-stream"
_MAX_ERROR_SAMPLES = 5


class McpError(Exception):
    """The server answered, but not with what a correct MCP server would send."""


def new_http_client(timeout_s: float = 10.0) -> aiohttp.ClientSession:
    """The one connection pool all workers share (no per-host cap: workers set the load)."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s))


def _match(message: Any, request_id: int) -> dict[str, Any] | None:
    if isinstance(message, dict) and message.get("id") == request_id:
        return message
    if isinstance(message, list):  # a JSON-RPC batch
        return next((m for m in message if isinstance(m, dict) and m.get("id") == request_id), None)
    return None


def parse_rpc_response(content_type: str, body: bytes, request_id: int) -> dict[str, Any]:
    """The JSON-RPC response to ``request_id`` in a JSON or ``text/event-stream`` body."""
    if content_type.startswith("text/event-stream"):
        data: list[bytes] = []
        # A trailing empty line ends the last event even if the server did not send one.
        for line in [*body.splitlines(), b""]:
            if line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            elif not line and data:
                payload = b"\n".join(data)
                found = _match(orjson.loads(payload), request_id) if payload.strip() else None  # not a priming event
                if found is not None:
                    return found
                data = []  # a notification or another request's reply: keep looking
        raise McpError(f"no SSE event answers request {request_id}")
    if content_type.startswith("application/json"):
        found = _match(orjson.loads(body), request_id)
        if found is not None:
            return found
        raise McpError(f"JSON body does not answer request {request_id}")
    raise McpError(f"unexpected content type {content_type!r}")


def result_text(message: dict[str, Any]) -> str:
    """The text of a successful ``tools/call`` reply; McpError for an error or no text."""
    if "error" in message:
        raise McpError(f"JSON-RPC error {message['error']}")
    result = message.get("result")
    if not isinstance(result, dict):
        raise McpError("reply has no result object")
    if result.get("isError"):
        raise McpError(f"tool error: {result.get('content')}")
    for item in result.get("content") or ():
        if isinstance(item, dict) and item.get("type") == "text":
            return str(item.get("text"))
    raise McpError("result has no text content")


class McpSession:
    """One MCP session over Streamable HTTP, driven by hand."""

    def __init__(self, http: aiohttp.ClientSession, url: str, client_name: str = "only1mcp-bench") -> None:
        self.http = http
        self.url = url
        self.client_name = client_name
        self.session_id: str | None = None
        self.server_info: dict[str, Any] = {}
        self.last_content_type = ""  # of the last reply: shows whether the server answers JSON or SSE
        self._next_id = 0
        self._headers = {"Content-Type": "application/json", "Accept": _ACCEPT}

    async def _post(self, payload: dict[str, Any]) -> tuple[int, str, bytes, Mapping[str, str]]:
        async with self.http.post(self.url, data=orjson.dumps(payload), headers=self._headers) as resp:
            # Read to the end (the server closes the SSE stream after the reply), so
            # the connection goes back to the pool for the next call.
            body = await resp.read()
            self.last_content_type = resp.headers.get("Content-Type", "")
            return resp.status, self.last_content_type, body, resp.headers

    async def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        request_id = self._next_id
        payload = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        status, content_type, body, headers = await self._post(payload)
        if status != 200:
            raise McpError(f"{method}: HTTP {status}: {body[:200]!r}")
        message = parse_rpc_response(content_type, body, request_id)
        if method == "initialize":
            self.session_id = headers.get("Mcp-Session-Id")
        return message

    async def open(self) -> None:
        """Initialize the session and send ``notifications/initialized``."""
        message = await self._request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": self.client_name, "version": "1"},
            },
        )
        if "error" in message:
            raise McpError(f"initialize failed: {message['error']}")
        self.server_info = dict((message.get("result") or {}).get("serverInfo") or {})
        self._headers["MCP-Protocol-Version"] = PROTOCOL_VERSION
        if self.session_id:  # a stateless server sends none, and then none is sent back
            self._headers["Mcp-Session-Id"] = self.session_id
        status, _, body, _ = await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if status not in (200, 202):
            raise McpError(f"notifications/initialized: HTTP {status}: {body[:200]!r}")

    async def call_echo(self, tool: str, text: str) -> None:
        """Call the echo tool and check it echoed ``text``; McpError otherwise."""
        message = await self._request("tools/call", {"name": tool, "arguments": {"text": text}})
        got = result_text(message)
        if got != text:
            raise McpError(f"wrong answer: sent {text!r}, got {got!r}")

    async def close(self) -> None:
        """End the session on the server (best effort)."""
        if not self.session_id:
            return
        try:
            async with self.http.delete(self.url, headers=self._headers) as resp:
                await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        self.session_id = None


@dataclass
class Slice:
    """What one timed stretch of load produced."""

    calls: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU used during the slice, per meter


async def drive(
    sessions: Sequence[McpSession],
    tool: str,
    seconds: float,
    tag: str = "w",
    meters: Mapping[str, Callable[[], float]] | None = None,
) -> Slice:
    """Run one worker per session, back to back, for ``seconds``; calls already started finish.

    Elapsed time runs until the last call returns, so the calls that straddle the
    deadline are both counted and paid for. ``meters`` are CPU-seconds counters
    (e.g. this process, the server processes) read before and after.
    """
    meters = meters or {}
    out = Slice()
    perf = time.perf_counter

    async def worker(index: int, session: McpSession) -> None:
        seq = 0
        while perf() < deadline:
            seq += 1
            text = f"{tag}{index}-{seq}"  # unique, so a stale or crossed reply is caught
            started = perf()
            try:
                await session.call_echo(tool, text)
            except Exception as exc:  # any failure is an error of this arm, not of the bench
                out.errors += 1
                if len(out.error_samples) < _MAX_ERROR_SAMPLES:
                    out.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            out.latencies_ms.append((perf() - started) * 1000.0)
            out.calls += 1

    cpu_before = {name: read() for name, read in meters.items()}
    start = perf()
    deadline = start + seconds
    await asyncio.gather(*(worker(i, s) for i, s in enumerate(sessions)))
    out.elapsed_s = perf() - start
    out.cpu_s = {name: read() - cpu_before[name] for name, read in meters.items()}
    return out
