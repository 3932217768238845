"""Compaction of the offline store: one deduplicated file per partition.

The worker writes one small file per partition and micro-batch, at least once: after a crash it
replays events it had already written. For every hive partition holding more than one file,
this job reads them, keeps one row per ``event_id`` (raw events) or per entity and window
(feature rows, the latest ``computed_at``), writes the result atomically, and only then deletes
the files it read. A crash in between leaves duplicates that the DuckDB views already hide and
the next run removes; files the worker adds meanwhile are not touched (they were not listed).
``only1mcp features compact`` runs it, and the worker every ``[worker] compact_interval`` seconds:
thousands of micro-batch files in an hour cost a query more than the rows in them.

A *merge* (``max_bytes``) is the same on the small files of each partition only: between two
compactions the worker merges its micro-batches every ``[worker] merge_interval`` seconds, so a
partition being written holds a few dozen files rather than hundreds, and a merge never rewrites
the partition's big compacted file (its cost stays bounded however large the hour grows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from only1mcp.feature_store.offline.duckdb import arrow_table, sql_literal
from only1mcp.feature_store.offline.parquet import (
    EVENT_KEY, FEATURE_SCHEMA, REQUEST_SCHEMA, feature_tables, features_dir, requests_dir, write_atomic,
)

__all__ = ["CompactionStats", "SMALL_FILE_BYTES", "compact", "compact_partition"]

SMALL_FILE_BYTES = 8 << 20  # what a merge takes: micro-batches and earlier merges, not compacted hours


@dataclass
class CompactionStats:
    partitions: int = 0  # partitions rewritten
    files_before: int = 0
    files_after: int = 0
    rows_before: int = 0
    rows_after: int = 0

    def add(self, other: CompactionStats) -> None:
        for name in ("partitions", "files_before", "files_after", "rows_before", "rows_after"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _source(files: list[Path]) -> str:
    listing = "[" + ", ".join(sql_literal(str(f)) for f in files) + "]"
    return f"read_parquet({listing}, hive_partitioning = false, union_by_name = true)"


def _dedupe_query(files: list[Path], raw_events: bool) -> str:
    source = _source(files)
    if raw_events:
        return f"SELECT DISTINCT ON ({', '.join(EVENT_KEY)}) * FROM {source} ORDER BY ts, event_id"
    return (f"SELECT DISTINCT ON (entity_id, window_start) * FROM {source} "
            "ORDER BY entity_id, window_start, computed_at DESC")


def compact_partition(folder: Path, raw_events: bool, dry_run: bool = False,
                      max_bytes: int | None = None) -> CompactionStats:
    """Rewrite one partition folder's files (those of at most ``max_bytes``, if given) as one
    deduplicated file; nothing to do for 0 or 1 file."""
    files = _files(folder, max_bytes)
    if len(files) < 2:
        return CompactionStats()
    schema = REQUEST_SCHEMA if raw_events else FEATURE_SCHEMA
    con = duckdb.connect()
    try:
        rows_before = con.execute(f"SELECT count(*) FROM {_source(files)}").fetchall()[0][0]
        table = arrow_table(con.sql(_dedupe_query(files, raw_events)))
    except duckdb.IOException:
        if all(path.exists() for path in files):
            raise
        return CompactionStats()  # another compactor (a second worker) took these files: its result stands
    finally:
        con.close()
    table = table.select(schema.names).cast(schema)  # the column order and types of the writer
    stats = CompactionStats(1, len(files), 1, rows_before, table.num_rows)
    if not dry_run:
        write_atomic(table, folder)  # the new file is whole on disk before any old one goes
        for path in files:
            path.unlink(missing_ok=True)
    return stats


def _files(folder: Path, max_bytes: int | None) -> list[Path]:
    files = sorted(folder.glob("*.parquet"))
    if max_bytes is None:
        return files
    small = []
    for path in files:
        try:
            if path.stat().st_size <= max_bytes:
                small.append(path)
        except FileNotFoundError:  # compacted away by another compactor meanwhile
            continue
    return small


def _partitions(root: Path) -> list[Path]:
    return sorted({p.parent for p in root.rglob("*.parquet")}) if root.is_dir() else []


def compact(data_dir: str | Path, dry_run: bool = False, max_bytes: int | None = None) -> dict[str, CompactionStats]:
    """Compact every partition of the raw events and of every feature table (or, with
    ``max_bytes``, merge the files up to that size); stats by dataset."""
    out: dict[str, CompactionStats] = {}
    datasets = [("requests", requests_dir(data_dir), True)]
    datasets += [(table, features_dir(data_dir, table), False) for table in feature_tables(data_dir)]
    for name, root, raw_events in datasets:
        stats = CompactionStats()
        for folder in _partitions(root):
            stats.add(compact_partition(folder, raw_events, dry_run, max_bytes))
        out[name] = stats
    return out
