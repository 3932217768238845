"""A raw Streamable HTTP MCP client for tests: hand-built requests, every response kept.

No MCP SDK on purpose: the tests that use it send malformed and hostile input, and
assert the exact HTTP status and JSON-RPC error the proxy answers with. Every
response body is recorded, so a test can check that none leaked a traceback.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

__all__ = ["ACCEPT", "VERSION", "STATELESS", "RawClient", "messages", "sse_events", "final", "text_of",
           "expect_error"]

ACCEPT = "application/json, text/event-stream"
VERSION = "2025-11-25"
STATELESS = "2026-07-28"
_META = "io.modelcontextprotocol/"
_DEFAULT = object()


def messages(resp: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a response: one JSON body, or every ``data:`` event of an SSE stream
    (an event with empty data, such as the priming event, carries none)."""
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        return [event["message"] for event in sse_events(resp.text) if "message" in event]
    if not resp.content:
        return []
    body = resp.json()
    return body if isinstance(body, list) else [body]


def sse_events(text: str) -> list[dict[str, Any]]:
    """The events of an SSE body, in order: each with its ``id`` and ``retry`` when given and its JSON
    ``message`` when it has data (incomplete trailing events are dropped)."""
    found: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    data: list[str] = []
    for line in text.split("\n"):  # not splitlines: U+2028 may sit in a JSON string
        line = line.removesuffix("\r")
        if not line:
            if data or current:
                if "".join(data).strip():
                    current["message"] = json.loads("\n".join(data))
                found.append(current)
            current, data = {}, []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("id:"):
            current["id"] = line[3:].removeprefix(" ")
        elif line.startswith("retry:"):
            current["retry"] = int(line[6:].strip())
    return found


def final(resp: httpx.Response) -> dict[str, Any]:
    """The response message that ends an answer (the last message carrying a result or an error)."""
    replies = [m for m in messages(resp) if "result" in m or "error" in m]
    assert replies, f"no JSON-RPC response in HTTP {resp.status_code}: {resp.text[:500]!r}"
    return replies[-1]


def text_of(reply: dict[str, Any]) -> str:
    """The text of a successful tools/call reply (its text content blocks, joined)."""
    assert "result" in reply, f"expected a result, got {reply}"
    return "".join(block.get("text", "") for block in reply["result"].get("content", []))


def expect_error(resp: httpx.Response, status: int, code: int, *words: str) -> dict[str, Any]:
    """Assert the HTTP status, the JSON-RPC error code and words of its message; return the error."""
    assert resp.status_code == status, f"expected HTTP {status}, got {resp.status_code}: {resp.text[:500]}"
    error = final(resp)["error"]
    assert error["code"] == code, error
    for word in words:
        assert word in error["message"], error
    return error


class RawClient:
    """One HTTP client to one MCP endpoint; sessions are plain ids the caller passes around."""

    def __init__(self, url: str, timeout: float = 20.0) -> None:
        self.url = url
        self.http = httpx.Client(timeout=timeout)
        self.bodies: list[str] = []
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_id(self) -> int:
        return next(self._ids)

    # -- plain HTTP --------------------------------------------------------------
    def send(self, http_method: str, body: Any = None, *, sid: str | None = None, version: Any = _DEFAULT,
             headers: Mapping[str, str | None] | None = None) -> httpx.Response:
        """One HTTP request to the endpoint; a header set to None is left out.

        ``body`` is a JSON value, raw bytes, or an iterator of byte chunks. ``version``
        defaults to ``VERSION`` on session requests and to no header otherwise.
        """
        merged: dict[str, str | None] = {"Accept": ACCEPT}
        if body is not None:
            merged["Content-Type"] = "application/json"
        if sid is not None:
            merged["Mcp-Session-Id"] = sid
        if version is _DEFAULT:
            version = VERSION if sid is not None else None
        if version is not None:
            merged["MCP-Protocol-Version"] = version
        merged.update(headers or {})
        if body is None or isinstance(body, bytes):
            content = body
        elif isinstance(body, (dict, list, str, int, float, bool)):
            content = json.dumps(body).encode()
        else:
            content = body  # an iterator of byte chunks: sent with Transfer-Encoding: chunked
        resp = self.http.request(http_method, self.url, content=content,
                                 headers={k: v for k, v in merged.items() if v is not None})
        self.bodies.append(resp.text)
        return resp

    def post(self, body: Any, **kwargs: Any) -> httpx.Response:
        return self.send("POST", body, **kwargs)

    # -- MCP ---------------------------------------------------------------------
    def initialize(self, version: str = VERSION) -> str:
        """initialize + notifications/initialized; return the new Mcp-Session-Id."""
        resp = self.post({"jsonrpc": "2.0", "id": self.next_id(), "method": "initialize",
                          "params": {"protocolVersion": version, "capabilities": {},
                                     "clientInfo": {"name": "raw-test", "version": "0"}}})
        assert resp.status_code == 200, resp.text
        sid = resp.headers.get("mcp-session-id")
        assert sid, f"initialize answered without Mcp-Session-Id: {resp.headers}"
        assert final(resp)["result"]["protocolVersion"] == version
        note = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, sid=sid, version=version)
        assert note.status_code == 202, note.text
        return sid

    def request(self, sid: str, method: str, params: dict[str, Any] | None = None,
                **kwargs: Any) -> tuple[httpx.Response, dict[str, Any]]:
        """A JSON-RPC request on a session; return the HTTP response and the final JSON-RPC reply."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id(), "method": method}
        if params is not None:
            message["params"] = params
        resp = self.post(message, sid=sid, **kwargs)
        return resp, final(resp)

    def call_tool(self, sid: str, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        resp, reply = self.request(sid, "tools/call", {"name": name, "arguments": arguments or {}})
        assert resp.status_code == 200, resp.text
        return reply

    def stateless(self, method: str, params: dict[str, Any], *, header: str | None = STATELESS,
                  meta: str | None = STATELESS) -> httpx.Response:
        """A 2026-07-28 request: no session; the version in the header and (unless None) in ``_meta``."""
        params = dict(params)
        if meta is not None:
            params["_meta"] = {f"{_META}protocolVersion": meta, f"{_META}clientCapabilities": {}}
        return self.post({"jsonrpc": "2.0", "id": self.next_id(), "method": method, "params": params},
                         version=header, headers={"Mcp-Method": method})

    def tool_names(self, sid: str) -> list[str]:
        resp, reply = self.request(sid, "tools/list", {})
        assert resp.status_code == 200, resp.text
        return [tool["name"] for tool in reply["result"]["tools"]]

    def poll(self, check: Callable[[], bool], timeout: float, interval: float = 0.2) -> float:
        """Call ``check`` until it returns true; return the seconds it took, or fail after ``timeout``."""
        start = time.monotonic()
        while not check():
            assert time.monotonic() - start < timeout, f"condition not met within {timeout:g}s"
            time.sleep(interval)
        return time.monotonic() - start

    def assert_no_traceback(self) -> None:
        leaked = [body for body in self.bodies if "Traceback" in body]
        assert not leaked, f"a response body contains a traceback: {leaked[0][:2000]}"
