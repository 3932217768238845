"""The FastMCP-proxy arm: FastMCP's own proxy in front of an upstream URL.

Built the way FastMCP documents it, ``create_proxy(url)``, and served over
Streamable HTTP (FastMCP's ``"http"`` transport) with its defaults; only the
banner and per-request logging are turned off, as for the echo upstream.

Run as ``python -m only1mcp.jobs.bench._fastmcp_arm --upstream URL --port N``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["serve", "main"]


def serve(upstream_url: str, host: str, port: int) -> None:
    """Serve a FastMCP proxy of ``upstream_url`` at ``http://host:port/mcp`` until stopped."""
    # Imported here: fastmcp is an optional (bench) dependency and slow to import.
    from fastmcp.server import create_proxy

    proxy = create_proxy(upstream_url, name="fastmcp-proxy")
    proxy.run(
        transport="http",
        host=host,
        port=port,
        path="/mcp",
        show_banner=False,
        log_level="WARNING",
        uvicorn_config={"access_log": False},
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastmcp-arm", description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="upstream MCP URL, e.g. http://127.0.0.1:8001/mcp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.upstream, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
