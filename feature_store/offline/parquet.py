"""The offline store's files: raw request events and feature rows as Parquet, hive-partitioned.

Layout under ``data_dir`` (StoreSettings.data_dir)::

    requests/date=YYYY-MM-DD/hour=HH/part-<ms>-<rand>.parquet          raw events, by event ts (UTC)
    features/<entity>_<window>/date=YYYY-MM-DD/hour=HH/part-….parquet   feature rows, by window start

Each micro-batch becomes one file per partition, written to a ``.tmp`` name in the partition
folder, fsynced, then renamed: a reader (DuckDB globs ``*.parquet``) sees a whole file or none,
and a crash leaves at most a ``.tmp`` that nothing reads. Rows are deduplicated within a batch at
write time (events by ``event_id``, feature rows by entity and window); duplicates *across*
files — replays after a crash — are removed by the DuckDB views (offline/duckdb.py) on read
and by the compaction job (jobs/compact.py) on disk.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
import types
import typing
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from only1mcp.events import RequestEvent
from only1mcp.feature_store.registry import FEATURES, table_name

__all__ = [
    "REQUEST_SCHEMA", "FEATURE_SCHEMA", "EVENT_KEY", "FEATURE_KEY", "requests_dir", "features_dir", "partition_of",
    "dedupe", "write_atomic", "write_requests", "write_feature_rows", "feature_tables",
]

_ARROW = {str: pa.string(), float: pa.float64(), int: pa.int64(), bool: pa.bool_()}
EVENT_KEY = ("event_id",)
FEATURE_KEY = ("entity_type", "entity_id", "window", "window_start")


def _arrow_type(hint: Any) -> pa.DataType:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return _ARROW[hint]


REQUEST_SCHEMA = pa.schema([pa.field(f.name, _arrow_type(typing.get_type_hints(RequestEvent)[f.name]))
                            for f in dataclasses.fields(RequestEvent)])
FEATURE_SCHEMA = pa.schema(
    [("entity_type", pa.string()), ("entity_id", pa.string()), ("window", pa.string()),
     ("window_start", pa.float64()), ("window_end", pa.float64())]
    + [(f.name, pa.int64() if f.dtype == "int64" else pa.float64()) for f in FEATURES]
    + [("latency_sketch", pa.binary()), ("computed_at", pa.float64())])


def requests_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "requests"


def features_dir(data_dir: str | Path, table: str | None = None) -> Path:
    root = Path(data_dir) / "features"
    return root / table if table else root


def feature_tables(data_dir: str | Path) -> list[str]:
    """Feature tables that have a folder on disk."""
    root = features_dir(data_dir)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def partition_of(ts: float) -> str:
    """The hive partition path of an instant: ``date=2026-11-26/hour=07`` (UTC)."""
    return _hour_partition(int(ts // 3600))


@functools.lru_cache(maxsize=4096)
def _hour_partition(hour: int) -> str:  # called per row: the formatting is done once per hour
    moment = datetime.fromtimestamp(hour * 3600, tz=timezone.utc)
    return f"date={moment:%Y-%m-%d}/hour={moment:%H}"


def dedupe(rows: Iterable[Mapping[str, Any]], key: Sequence[str], keep: str = "first") -> list[Mapping[str, Any]]:
    """Rows unique by ``key`` columns, in first-seen order; ``keep="last"`` keeps the latest value."""
    seen: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for row in rows:
        k = tuple(row[c] for c in key)
        if keep == "last" or k not in seen:
            seen[k] = row
    return list(seen.values())


def write_atomic(table: pa.Table, directory: Path) -> Path:
    """Write ``table`` as a new Parquet file in ``directory``: temp name, fsync, rename, fsync dir."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"part-{time.time_ns() // 1_000_000}-{uuid.uuid4().hex[:12]}.parquet"
    final, temp = directory / name, directory / f".{name}.tmp"
    try:
        with open(temp, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, final)  # atomic on POSIX: readers see the whole file or nothing
    finally:
        if temp.exists():
            temp.unlink()
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)
    return final


def _write_partitioned(rows: Sequence[Mapping[str, Any]], root: Path, schema: pa.Schema, time_column: str) -> list[Path]:
    by_partition: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_partition.setdefault(partition_of(row[time_column]), []).append(row)
    return [write_atomic(pa.Table.from_pylist(part, schema=schema), root / partition)
            for partition, part in sorted(by_partition.items())]


def write_requests(data_dir: str | Path, events: Iterable[Mapping[str, Any]]) -> list[Path]:
    """Raw events (RequestEvent fields), deduplicated by event_id within the batch."""
    rows = dedupe(events, EVENT_KEY)
    return _write_partitioned(rows, requests_dir(data_dir), REQUEST_SCHEMA, "ts") if rows else []


def write_feature_rows(data_dir: str | Path, rows: Iterable[Mapping[str, Any]],
                       computed_at: float | None = None) -> list[Path]:
    """Feature rows (compute.feature_row) into their tables, deduplicated by entity and window."""
    stamp = time.time() if computed_at is None else computed_at
    by_table: dict[str, list[Mapping[str, Any]]] = {}
    for row in dedupe(rows, FEATURE_KEY, keep="last"):
        by_table.setdefault(table_name(row["entity_type"], row["window"]), []).append({**row, "computed_at": stamp})
    written: list[Path] = []
    for table, part in sorted(by_table.items()):
        written += _write_partitioned(part, features_dir(data_dir, table), FEATURE_SCHEMA, "window_start")
    return written
