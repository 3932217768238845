"""An upstream whose tool results a test controls, for tests/proxy/test_cache_scope.py.

``python _hinted_upstream.py PORT`` serves plain JSON-RPC at ``http://127.0.0.1:PORT/mcp`` (raw
ASGI rather than the SDK: the SDK's tools/call result has no place for the 2026-07-28 cache hints).

- ``read(key, mode="stable", ttlMs=None, cacheScope=None)``, read-only: answers ``key`` (mode
  ``stable``) or ``key#N`` with N its executions for that key (mode ``changing``: every answer
  differs). ``ttlMs`` and ``cacheScope``, when given, come back as the result's top-level cache hints.
- ``write(key, ttlMs=None, cacheScope=None)``, not read-only: the same hints, never to be cached.
- ``counts()``: how many times ``read`` and ``write`` ran, as JSON ``{"read key": n, ...}``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

import uvicorn
from _json_mcp import json_mcp_app

_ARGS = {"type": "object", "properties": {"key": {"type": "string"}, "mode": {"type": "string"},
                                          "ttlMs": {"type": "number"}, "cacheScope": {"type": "string"}}}
TOOLS = [{"name": "read", "inputSchema": _ARGS, "annotations": {"readOnlyHint": True}},
         {"name": "write", "inputSchema": _ARGS, "annotations": {"readOnlyHint": False, "destructiveHint": True}},
         {"name": "counts", "inputSchema": {"type": "object"}}]
executions: Counter[str] = Counter()


def _call(params: dict[str, Any]) -> dict[str, Any]:
    name, args = params.get("name"), params.get("arguments") or {}
    if name == "counts":
        return {"content": [{"type": "text", "text": json.dumps(executions)}]}
    key = str(args.get("key", ""))
    executions[f"{name} {key}"] += 1
    text = f"{key}#{executions[f'{name} {key}']}" if args.get("mode") == "changing" else key
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    for hint in ("ttlMs", "cacheScope"):
        if hint in args:
            result[hint] = args[hint]
    return result


app = json_mcp_app("hinted", TOOLS, _call)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
