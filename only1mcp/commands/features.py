"""``only1mcp features``: the feature registry and the offline store.

- ``features list``: every feature definition (name, type, entity, window, version, description)
  for the configured windows;
- ``features sql "SELECT …" [--format table|csv|json|parquet] [--out FILE]``: SQL over the DuckDB
  views of the offline store (``requests``, ``<entity>_<window>`` …; see feature_store/offline/duckdb.py);
- ``features compact``: rewrite each Parquet partition as one deduplicated file (jobs/compact.py).

Without ``--config`` the configuration of the last ``only1mcp up`` in this folder is used
(commands/_config.py); one stderr line says which, and which data folder. ``sql`` and ``compact``
over a missing or empty store say so and exit 1 (commands/_store.py) rather than answer 0 rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]

FORMATS = ("table", "csv", "json", "parquet")


def _common(parser: argparse.ArgumentParser, default: object = None) -> None:
    parser.add_argument("--config", metavar="FILE", default=default,
                        help="TOML configuration file (default: the last `only1mcp up` here, else built-in defaults)")
    parser.add_argument("--data-dir", metavar="DIR", default=default,
                        help="offline store root (default: [store] data_dir)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    sub = parser.add_subparsers(dest="features_action", metavar="ACTION")
    listing = sub.add_parser("list", help="print the feature registry", description="print the feature registry")
    listing.add_argument("--entity", help="only this entity type (replica, tool, replica_tool, session)")
    listing.add_argument("--window", help="only this window (e.g. 10s or 60s/10s)")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    sql = sub.add_parser("sql", help="run SQL over the offline store", description="run SQL over the offline store")
    sql.add_argument("query", help='e.g. "SELECT tool, count(*) FROM requests GROUP BY tool"')
    sql.add_argument("--format", choices=FORMATS, default="table")
    sql.add_argument("--out", metavar="FILE", help="write the result here (required for parquet)")
    compact = sub.add_parser("compact", help="deduplicate and merge the Parquet files of each partition",
                             description="deduplicate and merge the Parquet files of each partition")
    compact.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
    for action in (listing, sql, compact):  # also accepted after the action: `features sql --config F "…"`
        _common(action, default=argparse.SUPPRESS)


def _data_dir(args: argparse.Namespace, command: str) -> Path:
    """``--data-dir``, else ``[store] data_dir`` of the configuration found; said on stderr."""
    from only1mcp.commands._config import announce, resolve_config, shown

    if args.data_dir:
        announce(command, f"data folder {shown(args.data_dir)} (--data-dir)")
        return Path(args.data_dir)
    found = resolve_config(args)
    announce(command, found.describe(), f"data folder {shown(found.settings.store.data_dir)}")
    return Path(found.settings.store.data_dir)


def _list(args: argparse.Namespace) -> int:
    from only1mcp.commands._config import announce, resolve_config
    from only1mcp.feature_store.registry import definitions, format_table

    found = resolve_config(args)  # the windows are the configuration's
    announce("features list", found.describe())
    worker = found.settings.worker
    defs = [d for d in definitions([*worker.tumbling, *worker.hopping])
            if (not args.entity or d.entity_type == args.entity) and (not args.window or d.window == args.window)]
    rows = [(d.feature.name, d.feature.dtype, d.entity_type, d.window, d.feature.version, d.table,
             d.feature.description) for d in defs]
    header = ("name", "dtype", "entity", "window", "version", "table", "description")
    if args.format == "json":
        print(json.dumps([dict(zip(header, row)) for row in rows], indent=2))
    else:
        print(format_table(rows, header))
    return 0


def _sql(args: argparse.Namespace) -> int:
    import duckdb
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from only1mcp.commands._store import offline_store_problem, refuse
    from only1mcp.feature_store.offline.duckdb import arrow_table, connect, retry_vanished
    from only1mcp.feature_store.registry import format_table

    if args.format == "parquet" and not args.out:
        print("only1mcp features sql: --format parquet needs --out FILE", file=sys.stderr)
        return 2
    data_dir = _data_dir(args, "features sql")
    problem = offline_store_problem(data_dir)
    if problem:
        return refuse("features sql", problem)
    con = connect(data_dir)
    try:
        def run() -> Any:
            relation = con.sql(args.query)
            return None if relation is None else arrow_table(relation)  # None: CREATE, SET, …

        table = retry_vanished(run)
        if table is None:
            return 0
    except duckdb.Error as exc:
        print(f"only1mcp features sql: {exc}", file=sys.stderr)
        return 1
    if args.format == "parquet":
        pq.write_table(table, args.out)
        return 0
    if args.format == "csv":
        sink = args.out or sys.stdout.buffer
        pacsv.write_csv(table, sink)
        return 0
    if args.format == "json":
        text = json.dumps(table.to_pylist(), default=str, indent=2)
    else:
        text = format_table([list(r.values()) for r in table.to_pylist()], table.column_names)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)
    return 0


def _compact(args: argparse.Namespace) -> int:
    from only1mcp.commands._store import offline_store_problem, refuse
    from only1mcp.jobs.compact import compact

    data_dir = _data_dir(args, "features compact")
    problem = offline_store_problem(data_dir)
    if problem:
        return refuse("features compact", problem)
    for name, stats in compact(data_dir, dry_run=args.dry_run).items():
        if stats.partitions:
            print(f"{name}: {stats.partitions} partition(s), {stats.files_before} → {stats.files_after} files, "
                  f"{stats.rows_before} → {stats.rows_after} rows")
    return 0


def run(args: argparse.Namespace) -> int:
    actions = {"list": _list, "sql": _sql, "compact": _compact}
    if args.features_action not in actions:
        print("usage: only1mcp features {list,sql,compact} …", file=sys.stderr)
        return 2
    return actions[args.features_action](args)
