"""``only1mcp stdio``: serve the MCP endpoint over stdin/stdout, for desktop clients that spawn a command."""

from __future__ import annotations

import argparse
import asyncio
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")


def run(args: argparse.Namespace) -> int:
    from only1mcp.commands._common import load_or_exit, setup_logging
    from only1mcp.proxy.gateway import Gateway
    from only1mcp.proxy.stdio_front import serve_stdio

    settings = load_or_exit(args.config, args.environ)
    setup_logging(settings.proxy.log_level, stream=sys.stderr)
    try:
        asyncio.run(serve_stdio(Gateway(settings)))
    except KeyboardInterrupt:
        pass
    return 0
