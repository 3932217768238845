"""The one command line entry point, ``only1mcp``.

Only this module reads the environment: it builds the frozen settings and hands
them down. Each subcommand's module is imported lazily, so ``--help`` is fast and
a command never pays for the imports of another.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

# name -> (module, help). Each module exposes add_arguments(parser) and run(args) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "proxy": ("only1mcp.commands.proxy", "serve the MCP endpoint over Streamable HTTP"),
    "stdio": ("only1mcp.commands.stdio", "serve the MCP endpoint over stdio (for desktop clients)"),
    "config": ("only1mcp.commands.config", "check a configuration file and print the resolved settings"),
    "fixture": ("only1mcp.jobs.servers.cli", "run a bundled MCP server (conformance fixtures, echo)"),
    "bench": ("only1mcp.jobs.bench.cli", "run a benchmark and print its table"),
    "sim-server": ("only1mcp.jobs.sim.server_cli", "serve simulated MCP replicas with modelled latency and faults"),
    "loadgen": ("only1mcp.jobs.sim.loadgen_cli", "drive an MCP endpoint with a seeded workload, record every call"),
    "schema": ("only1mcp.commands.schema", "export the JSON Schema of every event type"),
    "up": ("only1mcp.commands.up", "run broker, Redis, worker and proxy here (--demo: simulated fleet under load)"),
    "worker": ("only1mcp.commands.worker", "run the streaming feature worker (Faust) on mcp.requests"),
    "features": ("only1mcp.commands.features", "feature registry, SQL over the offline store, compaction"),
    "train": ("only1mcp.commands.train", "train the latency model (ONNX) or the prefetch next-tool model from the "
              "offline store (registry, gate)"),
    "models": ("only1mcp.commands.models", "the model registry: list, show, promote, rollback, shadow"),
    "anomalies": ("only1mcp.commands.anomalies", "anomalies: follow what the worker publishes (tail), score a series offline (score)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="only1mcp", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(command_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from only1mcp import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    args.environ = dict(os.environ)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
