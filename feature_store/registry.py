"""The feature registry: every feature the loop computes, for which entity and window, at which version.

One feature *definition* is a (feature, entity type, window) triple. The pure computation in
:mod:`only1mcp.feature_store.compute` produces one row per (entity type, entity id, window start)
with every feature of :data:`FEATURES` as a column; the offline store keeps one table per
(entity type, window) named by :func:`table_name`, and the online store one Redis hash per
(entity type, entity id, window). ``only1mcp features list`` prints :func:`definitions`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ENTITY_TYPES", "FEATURES", "Feature", "FeatureDef", "definitions", "table_name", "window_slug", "format_table",
]

# Which entity a row describes. replica_tool ids are "<replica>|<tool>" (see compute.entity_ids).
ENTITY_TYPES: tuple[str, ...] = ("replica", "tool", "replica_tool", "session")


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str  # the Parquet / DuckDB type of the column
    description: str
    version: int = 1  # bump when the definition changes meaning; old rows keep the old number


FEATURES: tuple[Feature, ...] = (
    Feature("count", "int64", "requests that started in the window"),
    Feature("error_rate", "double", "share of requests with status error, timeout or unavailable"),
    Feature("latency_mean_ms", "double", "mean latency"),
    Feature("latency_p50_ms", "double", "median latency (DDSketch, 1 % relative accuracy)"),
    Feature("latency_p95_ms", "double", "95th percentile latency (DDSketch, 1 % relative accuracy)"),
    Feature("latency_p99_ms", "double", "99th percentile latency (DDSketch, 1 % relative accuracy)"),
    Feature("latency_ewma_ms", "double", "exponentially time-weighted mean latency, time constant 10 s, at window end"),
    Feature("inflight", "double", "mean requests in flight over the window (Little's law: summed latency / window)"),
    Feature("request_bytes_mean", "double", "mean request size in bytes"),
    Feature("response_bytes_mean", "double", "mean response size in bytes"),
    Feature("hour_sin", "double", "sin of the hour of day (UTC, with minutes) of the window start"),
    Feature("hour_cos", "double", "cos of the hour of day (UTC, with minutes) of the window start"),
    Feature("dow_sin", "double", "sin of the day of week (UTC, Monday = 0) of the window start"),
    Feature("dow_cos", "double", "cos of the day of week (UTC, Monday = 0) of the window start"),
)


def window_slug(window: str) -> str:
    """A window spec as it may appear in a path, a table name or a Redis key: ``60s/10s`` → ``60s_10s``."""
    return window.replace("/", "_")


def table_name(entity_type: str, window: str) -> str:
    """The offline table (folder and DuckDB view) of one entity type and window: ``replica_60s_10s``."""
    return f"{entity_type}_{window_slug(window)}"


@dataclass(frozen=True)
class FeatureDef:
    feature: Feature
    entity_type: str
    window: str  # "10s" (tumbling) or "60s/10s" (hopping size/step)

    @property
    def table(self) -> str:
        return table_name(self.entity_type, self.window)

    @property
    def qualified_name(self) -> str:
        """How the online store and training sets name it: ``latency_p95_ms@60s/10s``."""
        return f"{self.feature.name}@{self.window}"


def definitions(windows: Iterable[str], entity_types: Sequence[str] = ENTITY_TYPES) -> list[FeatureDef]:
    """Every feature definition for the configured windows (WorkerSettings.tumbling + hopping)."""
    return [FeatureDef(f, e, w) for e in entity_types for w in windows for f in FEATURES]


def format_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """Plain aligned text columns, for the terminal."""
    cells = [[str(h) for h in header]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
