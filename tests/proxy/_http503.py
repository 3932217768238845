"""A broken MCP upstream for tests: it initializes and lists tools like the faults fixture, but
answers every tools/call with HTTP 503 and a plain-text body (as an overloaded server or a
balancer in front of it would). Run: python _http503.py PORT"""

from __future__ import annotations

import sys

import uvicorn
from _json_mcp import HttpAnswer, json_mcp_app

TOOLS = [{"name": "lookup", "inputSchema": {"type": "object", "properties": {"key": {"type": "string"}}},
          "annotations": {"readOnlyHint": True}},
         {"name": "write", "inputSchema": {"type": "object", "properties": {"key": {"type": "string"}}},
          "annotations": {"readOnlyHint": False, "destructiveHint": True}}]

app = json_mcp_app("broken", TOOLS, lambda params: HttpAnswer(503, b"text/plain", b"Service Unavailable"))

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
