"""Retraining the latency model for the routing agent, in a subprocess of its own (niced), so the
worker's loop never waits for XGBoost: ``python -m only1mcp.streams.retrain DATA_DIR REGISTRY_DIR
MIN_CALLS`` prints one JSON line, the training job's answer."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

__all__ = ["retrain_recent", "TRAIN_WINDOW_S"]

TRAIN_WINDOW_S = 3600.0  # retraining learns from the last hour of calls (recent behaviour, bounded cost)


def retrain_recent(data_dir: str, registry_dir: str, min_calls: int) -> dict[str, Any]:
    """Train on the last hour's calls once the store holds ``min_calls`` of them: a JSON-able answer
    (the training job's report, or ``skipped`` with the count)."""
    try:
        os.nice(10)  # the worker on the same cores comes first
    except OSError:
        pass
    from only1mcp.feature_store.offline.duckdb import query

    since = time.time() - TRAIN_WINDOW_S
    try:  # a count first: cheaper than loading the rows to learn there are too few
        rows = int(query(data_dir, "SELECT count(*) FROM requests WHERE method = 'tools/call' "
                                   "AND NOT coalesce(cache_hit, false) AND replica IS NOT NULL AND ts >= ?",
                         [since])[1][0][0])
    except Exception:  # no data yet: the views do not exist
        rows = 0
    if rows < min_calls:
        return {"skipped": True, "rows": rows}
    from only1mcp.jobs.train_latency import train_latency
    from only1mcp.models.errors import InsufficientData

    try:
        result = train_latency(data_dir, registry_dir, since=since, min_rows=min_calls)
    except InsufficientData as exc:
        return {"skipped": True, "rows": rows, "reason": str(exc)}
    return result if isinstance(result, dict) else {"result": repr(result)}


if __name__ == "__main__":  # python -m only1mcp.streams.retrain DATA_DIR REGISTRY_DIR MIN_CALLS
    logging.basicConfig(level=logging.WARNING)
    if len(sys.argv) != 4:
        print("usage: python -m only1mcp.streams.retrain DATA_DIR REGISTRY_DIR MIN_CALLS", file=sys.stderr)
        sys.exit(2)
    try:
        answer = retrain_recent(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    except Exception as exc:  # the gate refusing is a normal answer of train_latency, not this
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer, default=str))
