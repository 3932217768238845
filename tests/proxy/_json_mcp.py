"""A minimal MCP server over Streamable HTTP (plain JSON answers, one fixed session id) for the small
upstream scripts of these tests: each gives its name, its tools and a ``tools/call`` handler, which
may answer at the HTTP level instead (``HttpAnswer``: a broken server or a balancer in front of it)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any, NamedTuple


class HttpAnswer(NamedTuple):
    """What a ``tools/call`` handler returns to answer with this HTTP response instead of a JSON-RPC result."""

    status: int
    content_type: bytes
    body: bytes


def json_mcp_app(name: str, tools: list[dict[str, Any]], call: Callable[[dict[str, Any]], Any]) -> Any:
    """The ASGI app: ``initialize`` (session ``<name>-1``), ``tools/list``, ``tools/call`` by ``call(params)``
    (a result dict or an ``HttpAnswer``, or an awaitable of one); notifications get 202, any method but POST
    405, any other request an empty result."""

    async def app(scope, receive, send):  # noqa: ANN001, ANN202
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        if scope["method"] != "POST":
            await send({"type": "http.response.start", "status": 405, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        message = json.loads(body)
        headers = [(b"content-type", b"application/json")]
        if "id" not in message:
            await send({"type": "http.response.start", "status": 202, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        method = message["method"]
        if method == "initialize":
            headers.append((b"mcp-session-id", f"{name}-1".encode()))
            result: Any = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                           "serverInfo": {"name": name, "version": "0"}}
        elif method == "tools/list":
            result = {"tools": tools}
        elif method == "tools/call":
            result = call(message.get("params") or {})
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, HttpAnswer):
                await send({"type": "http.response.start", "status": result.status,
                            "headers": [(b"content-type", result.content_type)]})
                await send({"type": "http.response.body", "body": result.body})
                return
        else:
            result = {}
        payload = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app
