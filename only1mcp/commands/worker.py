"""``only1mcp worker [--config FILE]``: run the streaming feature worker (one Faust worker).

It creates ``mcp.requests`` and ``mcp.dead-letter`` with ``[worker] partitions`` partitions,
then consumes ``mcp.requests`` and writes features to Redis (``[store] redis_url``) and raw
events and feature rows to Parquet under ``[store] data_dir``. ``KAFKA_BOOTSTRAP`` and
``REDIS_URL`` in the environment override the addresses. Stops cleanly on SIGINT/SIGTERM.

``only1mcp worker status [--config FILE] [--group G] [--topic T …] [--format table|json]``: the
consumer group's committed offsets, log ends and lag per partition, and its state and members
(``only1mcp.commands.worker_status``).
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run", "settings_from_args"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from only1mcp.commands.worker_status import add_status_arguments

    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default: built-in defaults)")
    parser.add_argument("--log-level", default=None, help="debug, info, warning or error (default: [proxy] log_level)")
    # Optional: `only1mcp worker [--config FILE]` (no action) runs the worker, as it always has.
    sub = parser.add_subparsers(dest="worker_action", metavar="[status]")
    status = sub.add_parser("status", help="committed offsets, log ends and lag per partition of the worker's group",
                            description="the worker's consumer group: committed offset, log end offset (highwater) "
                                        "and lag per partition, and the group's state and members")
    add_status_arguments(status)


def settings_from_args(args: argparse.Namespace):  # noqa: ANN201 - Settings, imported lazily
    """The settings of ``--config`` or the defaults, with the environment's overrides either way."""
    from only1mcp.commands._common import load_or_exit
    from only1mcp.settings import parse_settings

    if args.config:
        return load_or_exit(args.config, args.environ)
    return parse_settings({}, "<defaults>", args.environ)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "worker_action", None) == "status":
        from only1mcp.commands.worker_status import run_status

        return run_status(args)
    from only1mcp.commands._common import limit_malloc_arenas, setup_logging

    settings = settings_from_args(args)
    # Before the worker's modules are imported: numpy and friends start threads at import.
    limit_malloc_arenas(settings.worker.malloc_arenas)
    from only1mcp.streams.app import run_worker

    if settings.worker.nice:
        from only1mcp.infra.priority import lower_own_priority

        lower_own_priority(settings.worker.nice)  # relative to the parent's; `up` and the benches start us at 0
    level = (args.log_level or settings.proxy.log_level).lower()
    setup_logging(level)
    return run_worker(settings, loglevel=level)
