"""The conformance fixture's tools for the suite's two pending scenarios (``--suite pending``).

``json-schema-2020-12`` lists ``json_schema_2020_12_tool`` and checks that its input schema's
``$schema``, ``$defs`` and ``additionalProperties`` survive (SEP-1613). ``server-sse-polling``
calls ``test_reconnection``, which closes its own POST stream mid-call (SEP-1699): a client,
or the proxy in front, must resume the stream with ``Last-Event-ID`` to get the answer. The
server needs an event store for that (``event_store.py``); without one the close is a no-op.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mcp.server.mcpserver import Context, MCPServer

__all__ = ["register_pending_tools", "JSON_SCHEMA_2020_12"]

JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"}}},
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}


def register_pending_tools(server: MCPServer) -> None:
    @server.tool(description="Tool with JSON Schema 2020-12 features")
    def json_schema_2020_12_tool(name: str | None = None, address: dict[str, Any] | None = None) -> str:
        return f"name={name}, address={address}"

    # The schema the suite checks, verbatim: a generated one names its $defs after Python classes.
    server._tool_manager.get_tool("json_schema_2020_12_tool").parameters = JSON_SCHEMA_2020_12  # noqa: SLF001

    @server.tool()
    async def test_reconnection(ctx: Context) -> str:
        """Closes this call's SSE stream mid-call; the answer comes on the stream resumed with Last-Event-ID"""
        await ctx.close_sse_stream()
        await asyncio.sleep(0.2)  # the answer is produced while the client is away
        return "Reconnection test completed"
