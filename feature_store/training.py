"""Point-in-time correct training sets: each label joined to the features *as they were* at its time.

A window's feature row becomes known when the window ends (``window_end``); a label at time
``t`` may only see rows with ``window_end <= t`` — anything later would leak the future into
training. DuckDB's ``ASOF LEFT JOIN`` picks, per label, the latest such row of the same entity;
rows older than ``max_age`` seconds count as missing (NULL), as they would be online, where the
Redis hash would have expired.

Features are named ``<table>.<feature>`` (``replica_10s.latency_p95_ms``); output columns are
``<table>__<feature>`` plus ``<table>__window_end`` (when the joined row became known), after
every label column, in label order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from only1mcp.feature_store.offline.duckdb import arrow_table, quote_ident

__all__ = ["training_set", "parse_feature_refs"]


def parse_feature_refs(features: Sequence[str]) -> dict[str, list[str]]:
    """``["replica_10s.count", "replica_10s.error_rate"]`` → ``{"replica_10s": ["count", "error_rate"]}``."""
    tables: dict[str, list[str]] = {}
    for ref in features:
        table, sep, feature = ref.partition(".")
        if not sep or not table or not feature:
            raise ValueError(f"features are named <table>.<feature>, e.g. replica_10s.latency_p95_ms; got {ref!r}")
        tables.setdefault(table, []).append(feature)
    return tables


def _label_time(con: duckdb.DuckDBPyConnection, column: str) -> str:
    """The label time as unix seconds, whether the column holds numbers or timestamps."""
    kind = str(con.sql(f"SELECT {quote_ident(column)} FROM _labels LIMIT 0").types[0]).upper()
    if kind.startswith("TIMESTAMP") or kind == "DATE":
        return f"epoch_us({quote_ident(column)}) / 1e6"
    return f"CAST({quote_ident(column)} AS DOUBLE)"


def training_set(con: duckdb.DuckDBPyConnection, labels: Any, features: Sequence[str], *,
                 entity_column: str = "entity_id", time_column: str = "ts", max_age: float | None = None) -> pa.Table:
    """Labels (a pyarrow Table, a pandas DataFrame, or the name of a table or view in ``con``) with
    the named features as of each label's time; ``max_age`` seconds bounds how old a row may be."""
    if isinstance(labels, str):
        con.execute(f"CREATE OR REPLACE TEMP VIEW _labels AS SELECT * FROM {quote_ident(labels)}")
    else:
        con.register("_labels", labels)
    tables = parse_feature_refs(features)
    select, joins = ["l.* EXCLUDE (_row, _t)"], []
    for index, (table, names) in enumerate(tables.items()):
        alias = f"f{index}"
        fresh = "" if max_age is None else f"l._t - {alias}.window_end <= {float(max_age)!r}"
        for column in (*names, "window_end"):
            value = f"{alias}.{quote_ident(column)}"
            if fresh:
                value = f"CASE WHEN {fresh} THEN {value} END"
            select.append(f"{value} AS {quote_ident(f'{table}__{column}')}")
        columns = ", ".join(quote_ident(c) for c in dict.fromkeys(["entity_id", "window_end", *names]))
        joins.append(f"ASOF LEFT JOIN (SELECT {columns} FROM {quote_ident(table)}) {alias} "
                     f"ON l.{quote_ident(entity_column)} = {alias}.entity_id AND l._t >= {alias}.window_end")
    query = (f"WITH l AS (SELECT *, row_number() OVER () AS _row, {_label_time(con, time_column)} AS _t "
             f"FROM _labels) SELECT {', '.join(select)} FROM l {' '.join(joins)} ORDER BY l._row")
    try:
        return arrow_table(con.sql(query))
    finally:
        if isinstance(labels, str):
            con.execute("DROP VIEW IF EXISTS _labels")
        else:
            con.unregister("_labels")
