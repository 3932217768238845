"""``only1mcp config``: check a configuration file and print the resolved settings as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")


def run(args: argparse.Namespace) -> int:
    from only1mcp.commands._common import load_or_exit

    settings = load_or_exit(args.config, args.environ)
    print(json.dumps(dataclasses.asdict(settings), indent=2, default=dict))
    return 0
