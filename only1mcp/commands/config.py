"""``only1mcp config``: check a configuration file and print the resolved settings as JSON.

Credentials (tokens, the hash key, upstream headers and environments, passwords in URLs) are
printed as whether they are set, as ``/admin/config`` shows them: terminals and CI logs keep output.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")


def run(args: argparse.Namespace) -> int:
    from only1mcp.commands._common import load_or_exit
    from only1mcp.proxy.redact import redacted_settings

    settings = load_or_exit(args.config, args.environ)
    print(json.dumps(redacted_settings(settings), indent=2, default=dict))
    return 0
