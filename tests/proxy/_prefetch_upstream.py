"""An issue tracker upstream for the prefetch tests: ids flow from one result into the next call's
arguments, as agents' calls do (search → get_issue(a hit's id) → list_comments(that id) …).

``python _prefetch_upstream.py PORT`` serves plain JSON-RPC (Streamable HTTP, JSON answers) at
``http://127.0.0.1:PORT/mcp``. Every tool except ``counts`` and ``set_delay`` counts its executions
per ``tool id-or-query``, so a test can tell what reached the upstream (and how often):

- ``search(query)``, read-only: ``{"hits": [{"id": "ISS-<n>", "title": …}, …]}``, three hits whose
  ids depend on the query;
- ``get_issue(id)``, read-only: ``{"id", "title", "author", "version"}`` (version: its executions);
- ``list_comments(id)``, read-only: the comments of an issue (authors are ids too);
- ``update_issue(id, title)``: a write (destructiveHint, not idempotent);
- ``touch_issue(id)``: idempotentHint, not read-only (safe to repeat, never to cache);
- ``set_delay(seconds)``: later calls of the read-only tools take that long (budget tests);
- ``counts()``: the executions, ``{"get_issue ISS-101": 2, …}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import zlib
from collections import Counter
from typing import Any

import uvicorn
from _json_mcp import json_mcp_app

_ID = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}
_RO = {"readOnlyHint": True, "destructiveHint": False, "idempotentHint": True}
TOOLS = [
    {"name": "search", "inputSchema": {"type": "object", "properties": {"query": {"type": "string"}}},
     "annotations": _RO},
    {"name": "get_issue", "inputSchema": _ID, "annotations": _RO},
    {"name": "list_comments", "inputSchema": _ID, "annotations": _RO},
    {"name": "update_issue", "inputSchema": _ID,
     "annotations": {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False}},
    {"name": "touch_issue", "inputSchema": _ID,
     "annotations": {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": True}},
    {"name": "set_delay", "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}}}},
    {"name": "counts", "inputSchema": {"type": "object"}},
]
executions: Counter[str] = Counter()
delay = 0.0


def _issue_ids(query: str) -> list[str]:
    base = 100 + zlib.crc32(query.encode()) % 800
    return [f"ISS-{base + i}" for i in range(3)]


async def _call(params: dict[str, Any]) -> dict[str, Any]:
    global delay
    name, args = params.get("name"), params.get("arguments") or {}
    if name == "counts":
        return _text(dict(executions))
    if name == "set_delay":
        delay = float(args.get("seconds", 0.0))
        return _text({"delay": delay})
    subject = str(args.get("query", args.get("id", "")))
    executions[f"{name} {subject}"] += 1
    if name in ("search", "get_issue", "list_comments") and delay:
        await asyncio.sleep(delay)
    if name == "search":
        return _text({"hits": [{"id": i, "title": f"{subject} in {i}"} for i in _issue_ids(subject)]})
    if name == "get_issue":
        return _text({"id": subject, "title": f"Issue {subject}", "author": f"u-{len(subject)}",
                      "version": executions[f"{name} {subject}"]})
    if name == "list_comments":
        return _text({"issue": subject, "comments": [{"author": "u-7", "body": f"see {subject}"}]})
    if name in ("update_issue", "touch_issue"):
        return _text({"id": subject, "updated": executions[f"{name} {subject}"]})
    return {"content": [{"type": "text", "text": f"unknown tool {name}"}], "isError": True}


def _text(payload: Any) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": json.dumps(payload)}]}


app = json_mcp_app("tracker", TOOLS, _call)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
