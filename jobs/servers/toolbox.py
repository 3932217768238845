"""The toolbox fixture: MCP servers with many realistic tools (``toolbox_catalog.py``), for context
optimisation tests and ``bench context``.

Each server is an ``mcp`` SDK lowlevel ``Server`` answering plain JSON over Streamable HTTP at
``/mcp``; a call of any of its tools answers at once with a short JSON text naming the server,
the tool and the argument names it got (nothing is looked up: what matters here is the tool
list). Several servers share one process, one listening socket each, dispatched by local port,
because starting the SDK costs about a CPU-second per process.

``python -m only1mcp.jobs.servers.toolbox --port 9301 --port 9302 …`` serves the catalog's
servers in order (tracker, repos, people, shop, helpdesk), one per ``--port``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
from collections.abc import Sequence
from typing import Any

import mcp.types as types
from mcp.server.lowlevel.server import Server

from only1mcp.jobs.servers.toolbox_catalog import SERVERS, tools_of

__all__ = ["ToolboxServer", "Fleet", "serve", "main"]


class ToolboxServer:
    """One server of the catalog, with its MCP app."""

    def __init__(self, name: str, host: str = "127.0.0.1") -> None:
        self.name = name
        self.tools = [types.Tool.model_validate(tool) for tool in tools_of(name)]
        self._names = {tool.name for tool in self.tools}
        self.server: Server[Any] = Server(f"toolbox-{name}", version="1", on_list_tools=self._list_tools,
                                          on_call_tool=self._call_tool)
        self.app = self.server.streamable_http_app(json_response=True, host=host)

    async def _list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self.tools)

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        known = params.name in self._names
        payload = {"server": self.name, "tool": params.name, "ok": known,
                   "arguments": sorted(params.arguments or {})}
        return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(payload))],
                                    is_error=not known)


class Fleet:
    """An ASGI app serving several toolbox servers, each on its own port (dispatched by local port)."""

    def __init__(self, servers: Sequence[ToolboxServer], ports: Sequence[int]) -> None:
        self.by_port = dict(zip(ports, servers))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        local = (scope.get("server") or (None, None))[1]
        await (self.by_port.get(local) or next(iter(self.by_port.values()))).app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        # The SDK apps are not mounted, so their session managers are entered here, in the one lifespan task.
        async with contextlib.AsyncExitStack() as stack:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    for server in self.by_port.values():
                        await stack.enter_async_context(server.server.session_manager.run())
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await stack.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return


def serve(ports: Sequence[int], names: Sequence[str] | None = None, host: str = "127.0.0.1") -> None:
    """Serve the named servers (default: the catalog's, in order), one per port, until stopped."""
    import uvicorn

    names = list(names or [name for name, _what, _tools in SERVERS])[:len(ports)]
    sockets = []
    for port in ports[:len(names)]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sockets.append(sock)
    app = Fleet([ToolboxServer(name, host) for name in names], ports)
    # No access log: a console write per call is CPU a benchmark would measure.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=1)
    uvicorn.Server(config).run(sockets=sockets)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m only1mcp.jobs.servers.toolbox",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, action="append", required=True,
                        help="a port per server, in the catalog's order (repeat)")
    parser.add_argument("--servers", default="", help="comma-separated server names (default: all, in order)")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    names = [n for n in args.servers.split(",") if n] or None
    known = {name for name, _what, _tools in SERVERS}
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.port, names, args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
