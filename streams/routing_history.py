"""The offline store's recent calls, to start a latency model's causal features from.

When the first model appears in the registry, the routing agent (streams/routing.py) builds the
model's causal features (models/latency/features.py) from the last minutes of calls in the Parquet
store instead of waiting for them to happen again; the events it folds meanwhile are applied after,
skipping those the store already had (by ``event_id``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["HISTORY_S", "HISTORY_ROWS", "recent_calls"]

HISTORY_S = 600.0  # the store's calls of the last 10 minutes
HISTORY_ROWS = 50_000  # (at most this many, the newest)
COLUMNS = ("event_id", "ts", "latency_ms", "method", "status", "server", "replica", "tool", "cache_hit",
           "request_bytes", "inflight")


def recent_calls(data_dir: str | Path, until: float, span_s: float = HISTORY_S,
                 limit: int = HISTORY_ROWS) -> list[dict[str, Any]]:
    """Upstream ``tools/call`` events of the ``span_s`` before ``until`` (the newest ``limit``), oldest
    first, as event dicts; empty when the store has no requests yet. A column an older file lacks
    reads as None."""
    from only1mcp.feature_store.offline.duckdb import upstream_calls

    if not any(Path(data_dir).glob("requests/**/*.parquet")):
        return []
    return upstream_calls(data_dir, COLUMNS, until - span_s, until, limit)
