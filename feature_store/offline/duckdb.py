"""DuckDB over the offline store: one view per dataset, deduplicated on read.

Views (created by :func:`create_views`, or by :func:`connect` on a fresh in-memory database):

- ``requests_raw``: every raw event file as written (hive columns ``date`` and ``hour``);
- ``requests``: one row per ``event_id`` (``DISTINCT ON``), what queries should use;
- ``<entity>_<window>_raw`` and ``<entity>_<window>`` (e.g. ``replica_60s_10s``): feature rows,
  the latter one per (entity id, window start), the most recently computed.

Deduplicating in the view makes a replay harmless even before the compaction job has run: the
worker writes at least once, and readers see each event and window exactly once.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from only1mcp.feature_store.offline.parquet import REQUEST_SCHEMA, feature_tables, features_dir, requests_dir

__all__ = ["connect", "create_views", "sql_literal", "quote_ident", "arrow_table"]


def arrow_table(relation: duckdb.DuckDBPyRelation) -> pa.Table:
    """A relation's rows as a pyarrow Table (``to_arrow_table`` in newer DuckDB, ``fetch_arrow_table`` in older)."""
    method = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
    return method()


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.rglob("*.parquet"))


def _scan(folder: Path) -> str:
    glob = sql_literal(str(folder / "**" / "*.parquet"))
    # Typed partitions: "hour=07" would otherwise stay the text '07'.
    return (f"read_parquet({glob}, hive_partitioning = true, union_by_name = true, "
            "hive_types = {'date': DATE, 'hour': INTEGER})")


def create_views(con: duckdb.DuckDBPyConnection, data_dir: str | Path) -> list[str]:
    """(Re)create the views over ``data_dir``; returns the deduplicated view names."""
    names = ["requests"]
    raw_requests = requests_dir(data_dir)
    if _has_files(raw_requests):
        con.execute(f"CREATE OR REPLACE VIEW requests_raw AS SELECT * FROM {_scan(raw_requests)}")
    else:  # an empty, typed view, so queries against a new store answer with no rows instead of an error
        empty = pa.Table.from_batches([], REQUEST_SCHEMA.append(pa.field("date", pa.date32()))
                                      .append(pa.field("hour", pa.int32())))
        con.register("_requests_empty", empty)
        con.execute("CREATE OR REPLACE VIEW requests_raw AS SELECT * FROM _requests_empty")
    con.execute("CREATE OR REPLACE VIEW requests AS SELECT DISTINCT ON (event_id) * FROM requests_raw")
    for table in feature_tables(data_dir):
        folder = features_dir(data_dir, table)
        if not _has_files(folder):
            continue
        raw, view = quote_ident(f"{table}_raw"), quote_ident(table)
        con.execute(f"CREATE OR REPLACE VIEW {raw} AS SELECT * FROM {_scan(folder)}")
        # A window recomputed after a replay keeps its latest computation.
        con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT DISTINCT ON (entity_id, window_start) * FROM {raw} "
                    "ORDER BY entity_id, window_start, computed_at DESC")
        names.append(table)
    return names


def connect(data_dir: str | Path, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the offline store's views."""
    con = duckdb.connect(database)
    create_views(con, data_dir)
    return con
