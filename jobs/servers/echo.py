"""The echo upstream: an MCP server with one tool, ``echo(text) -> text``.

It is the "same Python upstream" every benchmark arm talks to, built the way a
typical user builds one with the mcp SDK: ``MCPServer`` with its defaults
(sessions on, SSE responses, DNS-rebinding protection on loopback), served over
Streamable HTTP at ``/mcp`` by uvicorn. Only logging is quietened, so a request
costs no console write (see ``serve``).

Run it on its own with ``python -m only1mcp.jobs.servers.echo --port 8001``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mcp.server.mcpserver import MCPServer

__all__ = ["build_server", "serve", "main"]


def build_server() -> MCPServer:
    """The echo MCP server, with SDK defaults apart from the log level."""
    # WARNING, not the SDK's INFO: a log line per request would be a console
    # write the proxies under test would be measured against, not MCP work.
    server: MCPServer = MCPServer("echo", log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    return server


def serve(host: str, port: int) -> None:
    """Serve the echo server over Streamable HTTP at ``http://host:port/mcp`` until stopped."""
    import uvicorn

    # The same app and uvicorn setup as MCPServer.run("streamable-http"), minus the
    # per-request access log (same reason as the log level above).
    app = build_server().streamable_http_app(host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    uvicorn.Server(config).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="echo", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
