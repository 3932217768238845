"""``only1mcp fixture NAME``: run one of the bundled MCP servers over Streamable HTTP.

``conformance`` is the server the MCP conformance suite is run against (directly,
and later through the proxy); ``echo`` is the one-tool upstream of the benchmarks;
``faults`` has tools that sleep, crash the process and count calls, for failure
tests. Each serves ``http://HOST:PORT/mcp`` until interrupted, or stdin/stdout
with ``--stdio``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib

__all__ = ["SERVERS", "add_arguments", "run"]

# name -> module exposing serve(host, port); imported only when chosen, so the
# CLI's --help never pays for the mcp SDK import.
SERVERS: dict[str, str] = {
    "conformance": "only1mcp.jobs.servers.conformance",
    "echo": "only1mcp.jobs.servers.echo",
    "faults": "only1mcp.jobs.servers.faults",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=sorted(SERVERS), help="which bundled server to run")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9001, help="port to bind (default: 9001)")
    parser.add_argument("--stdio", action="store_true", help="serve over stdin/stdout instead of HTTP")
    parser.add_argument("--journal", metavar="FILE", help="faults: append a line per lookup/write execution")


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(SERVERS[args.name])
    extra = {"journal": args.journal} if args.journal else {}
    # Ctrl-C is the normal way to stop a fixture, not an error.
    with contextlib.suppress(KeyboardInterrupt):
        if args.stdio:
            # MCPServer's own stdio runner, unless the module brings its own.
            stdio = getattr(module, "serve_stdio", None)
            if stdio is not None:
                stdio(**extra)
            else:
                module.build_server().run("stdio")
        else:
            module.serve(args.host, args.port, **extra)
    return 0
