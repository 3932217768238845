"""Each detector alone, on the very traffic of a health benchmark run: the run's request events
(from its offline store) replayed through the worker's own aggregation, one detector per replica.

The live ``ensemble`` row says when the worker's ensemble flagged each replica; this says when
each of its detectors would have, had it been alone — same events, same windows, same clock —
so the rows differ by the detector only. A detector alone is an ensemble of one at weight 1 and
its own normalised score (0.5 = suspicious), severities at the ensemble's thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["load_events", "replay"]

_COLUMNS = ("ts", "server", "replica", "tool", "method", "status", "error_class", "latency_ms", "inflight",
            "cache_hit")


def load_events(data_dir: str | Path) -> list[dict[str, Any]]:
    """The run's request events in time order."""
    from only1mcp.feature_store.offline.duckdb import arrow_table, connect, retry_vanished

    con = connect(data_dir)
    try:
        present = {row[0] for row in con.execute("DESCRIBE requests").fetchall()}
        select = ", ".join(c if c in present else f"NULL AS {c}" for c in _COLUMNS)
        query = f"SELECT {select} FROM requests WHERE method = 'tools/call' ORDER BY ts"
        return retry_vanished(lambda: arrow_table(con.sql(query)).to_pylist())
    finally:
        con.close()


def replay(events: Sequence[dict[str, Any]], features: Sequence[str], floor: str, *, tick_s: float, window_s: float,
           min_calls: int, max_window_s: float | None, timeout_ms: float | None) -> dict[str, dict[str, list[float]]]:
    """Detector name → replica → unix times it was flagged at ``floor`` or worse (one per window that
    opened a flag after a clear one), with the full ensemble replayed too as ``ensemble (replay)``."""
    from only1mcp.events import SEVERITIES
    from only1mcp.models.anomaly.ensemble import Ensemble, default_ensemble
    from only1mcp.streams.anomaly_features import Aggregator

    names = [d.name for d in default_ensemble(list(features), timeout=timeout_ms).detectors]
    floor_at = SEVERITIES.index(floor)
    aggregator = Aggregator(window_s, min_calls, per_tool=False, max_window_s=max_window_s)
    models: dict[tuple[str, str], Any] = {}  # (replica, detector name) → its ensemble of one (or the full one)
    flagged: dict[tuple[str, str], bool] = {}
    out: dict[str, dict[str, list[float]]] = {n: {} for n in [*names, "ensemble (replay)"]}
    if not events:
        return out

    def model(replica: str, name: str) -> Any:
        found = models.get((replica, name))
        if found is None:
            full = default_ensemble(list(features), timeout=timeout_ms)
            if name == "ensemble (replay)":
                found = full
            else:
                detector = next(d for d in full.detectors if d.name == name)
                found = Ensemble([detector], {name: 1.0}, full.thresholds)
            models[(replica, name)] = found
        return found

    i, tick = 0, float(events[0]["ts"]) + tick_s
    last = float(events[-1]["ts"])
    while tick <= last + tick_s:
        batch = []
        while i < len(events) and float(events[i]["ts"]) < tick:
            batch.append(events[i])
            i += 1
        aggregator.add_many(batch)
        for (_server, replica, tool), x in aggregator.roll(tick).items():
            if tool is not None:
                continue
            for name in out:
                verdict = model(replica, name).assess_one(x, tick)
                hit = verdict.severity is not None and SEVERITIES.index(verdict.severity) >= floor_at
                if hit and not flagged.get((replica, name)):
                    out[name].setdefault(replica, []).append(tick)
                flagged[(replica, name)] = hit
        tick += tick_s
    return out
