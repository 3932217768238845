"""A broken MCP upstream for tests: it initializes and lists tools like the faults fixture, but
answers every tools/call with HTTP 503 and a plain-text body (as an overloaded server or a
balancer in front of it would). Run: python _http503.py PORT"""

from __future__ import annotations

import json
import sys

import uvicorn

TOOLS = [{"name": "lookup", "inputSchema": {"type": "object", "properties": {"key": {"type": "string"}}},
          "annotations": {"readOnlyHint": True}},
         {"name": "write", "inputSchema": {"type": "object", "properties": {"key": {"type": "string"}}},
          "annotations": {"readOnlyHint": False, "destructiveHint": True}}]


async def app(scope, receive, send):  # noqa: ANN001, ANN201
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
    status, headers, payload = 200, [(b"content-type", b"application/json")], None
    if "id" not in message:
        status, payload = 202, b""
    elif message["method"] == "initialize":
        headers.append((b"mcp-session-id", b"broken-1"))
        payload = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "broken",
                                                                                              "version": "0"}}
    elif message["method"] == "tools/list":
        payload = {"tools": TOOLS}
    elif message["method"] == "ping":
        payload = {}
    else:
        status, headers, payload = 503, [(b"content-type", b"text/plain")], b"Service Unavailable"
    if isinstance(payload, dict):
        payload = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": payload}).encode()
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
