"""An upstream whose tools mark arguments ``x-mcp-header``, for tests/proxy/test_param_headers.py.

``python _header_upstream.py PORT`` serves it at ``http://127.0.0.1:PORT/mcp`` (the mcp SDK's
server, which speaks 2026-07-28 and itself refuses a call whose ``Mcp-Param-*`` headers do not
match its body). Each tool answers with the ``Mcp-Param-*`` headers its call arrived with, as
JSON. ``broken`` carries an annotation the rules forbid (inside ``items``): a 2026-07-28 client
must leave it out. ``plain`` has no annotation until ``relabel`` adds one without announcing it,
so a client's next call lacks the header the server now wants (-32020).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field


def _mirrored(ctx: Context) -> str:
    return json.dumps({k.lower(): v for k, v in (ctx.headers or {}).items() if k.lower().startswith("mcp-param-")},
                      sort_keys=True)


def build() -> MCPServer:
    server = MCPServer("header-upstream", log_level="WARNING")
    tools = server._tool_manager  # noqa: SLF001 - schemas the decorator cannot express are set directly

    @server.tool()
    def route(ctx: Context, region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})],
              priority: Annotated[int, Field(json_schema_extra={"x-mcp-header": "Priority"})] = 0,
              urgent: Annotated[bool, Field(json_schema_extra={"x-mcp-header": "Urgent"})] = False,
              note: str = "") -> str:
        return _mirrored(ctx)

    @server.tool()
    def nested(ctx: Context, target: dict[str, Any]) -> str:
        return _mirrored(ctx)

    tools.get_tool("nested").parameters = {
        "type": "object", "required": ["target"],
        "properties": {"target": {"type": "object", "properties": {
            "zone": {"type": "string", "x-mcp-header": "Zone"}}}},
    }

    @server.tool()
    def broken(ctx: Context, tags: list[str] | None = None) -> str:
        return _mirrored(ctx)

    tools.get_tool("broken").parameters = {
        "type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "x-mcp-header": "Tag"}}},
    }

    @server.tool()
    def plain(ctx: Context, label: str) -> str:
        return _mirrored(ctx)

    @server.tool()
    def relabel() -> str:
        tools.get_tool("plain").parameters = {
            "type": "object", "required": ["label"],
            "properties": {"label": {"type": "string", "x-mcp-header": "Label"}},
        }
        return "plain now mirrors label into Mcp-Param-Label"

    return server


if __name__ == "__main__":
    app = build().streamable_http_app(host="127.0.0.1")
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")).run()
