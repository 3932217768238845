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

from only1mcp.streams.anomaly_features import is_thin

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


def observe(events: Sequence[dict[str, Any]], *, tick_s: float, window_s: float, min_calls: int,
            max_window_s: float | None) -> dict[str, list[tuple[float, dict[str, float]]]]:
    """Replica → its observations ``(tick time, features)`` in order, as the worker's aggregation makes them."""
    from only1mcp.streams.anomaly_features import Aggregator

    aggregator = Aggregator(window_s, min_calls, per_tool=False, max_window_s=max_window_s)
    out: dict[str, list[tuple[float, dict[str, float]]]] = {}
    if not events:
        return out
    i, tick = 0, float(events[0]["ts"]) + tick_s
    last = float(events[-1]["ts"])
    while tick <= last + tick_s:
        batch = []
        while i < len(events) and float(events[i]["ts"]) < tick:
            batch.append(events[i])
            i += 1
        aggregator.add_many(batch)
        for (_server, replica, tool), x in aggregator.roll(tick).items():
            if tool is None:
                out.setdefault(replica, []).append((tick, x))
        tick += tick_s
    return out


def replay(observations: dict[str, list[tuple[float, dict[str, float]]]], features: Sequence[str], floor: str,
           timeout_ms: float | None) -> dict[str, dict[str, list[float]]]:
    """Detector name → replica → times it was flagged at ``floor`` or worse (each window that flags after
    one that did not), with the full ensemble replayed too as ``ensemble (replay)``."""
    from only1mcp.events import SEVERITIES
    from only1mcp.models.anomaly.ensemble import Ensemble

    names = [d.name for d in _worker_ensemble(features, timeout_ms).detectors]
    floor_at = SEVERITIES.index(floor)
    out: dict[str, dict[str, list[float]]] = {n: {} for n in [*names, "ensemble (replay)"]}
    for replica, rows in observations.items():
        for name in out:
            full = _worker_ensemble(features, timeout_ms)
            if name == "ensemble (replay)":
                model = full
            else:
                detector = next(d for d in full.detectors if d.name == name)
                model = Ensemble([detector], {name: 1.0}, full.thresholds)
            flagged, confirm = False, _confirmation()
            for t, x in rows:
                verdict = model.assess_one(x, t)
                if is_thin(x):  # no evidence either way (as in the agent)
                    continue
                verdict = confirm(verdict, t)
                hit = verdict.severity is not None and SEVERITIES.index(verdict.severity) >= floor_at
                if hit and not flagged:
                    out[name].setdefault(replica, []).append(t)
                flagged = hit
    return out


def long_control(observations: Sequence[list[tuple[float, dict[str, float]]]], features: Sequence[str], floor: str,
                 *, days: float, block: int = 60, seed: int = 0, timeout_ms: float | None = None,
                 close_after: float = 10.0) -> dict[str, Any]:
    """The healthy control made long: each healthy replica's own observations from the live run, resampled
    in blocks of ``block`` consecutive windows (their spacing kept) into ``days`` replica-days, scored by
    the worker's ensemble from scratch; its flags at ``floor`` or worse, merged as the worker merges
    them into one anomaly (a new one only after ``close_after`` s without a flag)."""
    import numpy as np

    from only1mcp.events import SEVERITIES

    sources = [rows for rows in observations if len(rows) > block]
    if not sources or days <= 0:
        return {"replica_days": 0.0, "false_alarms": 0, "sources": len(sources)}
    rng = np.random.default_rng(seed)
    floor_at = SEVERITIES.index(floor)
    alarms, span_s, rows_scored = 0, 0.0, 0
    per_day = []
    for day in range(max(1, round(days))):
        rows = sources[day % len(sources)]
        t_all = np.array([t for t, _ in rows])
        gaps = np.diff(t_all, prepend=t_all[0])
        ens = _worker_ensemble(features, timeout_ms, seed=day)
        X_all = np.array([[x.get(f, np.nan) for f in ens.features] for _, x in rows], dtype=float)
        picks, total = [], 0.0
        while total < 86_400.0:
            start = int(rng.integers(0, len(rows) - block))
            picks.append(np.arange(start, start + block))
            total += float(gaps[start + 1:start + block].sum()) + float(np.median(gaps[1:]))
        index = np.concatenate(picks)
        step = gaps[index]
        step[0] = 0.0
        step[np.arange(block, len(index), block)] = float(np.median(gaps[1:]))  # a block joins the last one
        t = np.cumsum(step)
        scores = ens.score_learn_many(X_all[index], t)
        last_flag, found = -np.inf, 0
        confirm = _confirmation()
        for row, when, score in zip(index, t, scores):
            if is_thin(rows[row][1]):
                continue
            severity = confirm(_bare(ens.severity(float(score))), float(when)).severity
            if severity is not None and SEVERITIES.index(severity) >= floor_at:
                if when - last_flag > close_after:
                    found += 1
                last_flag = when
        alarms += found
        per_day.append(found)
        span_s += float(t[-1])
        rows_scored += len(index)
    return {"replica_days": round(span_s / 86_400.0, 3), "false_alarms": alarms, "per_replica_day": per_day,
            "windows": rows_scored, "block": block, "sources": len(sources)}


def timeline(rows: list[tuple[float, dict[str, float]]], features: Sequence[str],
             timeout_ms: float | None) -> list[dict[str, Any]]:
    """One replica's windows with the worker's ensemble's verdict on each: for the README's plot."""
    import math


    ens = _worker_ensemble(features, timeout_ms)
    confirm = _confirmation()
    out = []
    for t, x in rows:
        verdict = ens.assess_one(x, t)
        if not is_thin(x):
            verdict = confirm(verdict, t)
        out.append({"t": t, **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in x.items()},
                    "score": round(verdict.score, 4), "severity": verdict.severity})
    return out


def _confirmation() -> Any:
    """The agent's confirmation rule with its default settings."""
    from only1mcp.streaming import AnomalySettings
    from only1mcp.streams.anomaly_lifecycle import Confirmation

    config = AnomalySettings()
    return Confirmation(config.confirm_windows, config.confirm_within)


def _bare(severity: str | None) -> Any:
    """A verdict holding only a severity (what the long control confirms)."""
    from only1mcp.models.anomaly.base import Assessment

    return Assessment(score=0.0, severity=severity, confidence=0.0, detectors={}, features={}, kind="", explanation="")


def _worker_ensemble(features: Sequence[str], timeout_ms: float | None, **extra: Any) -> Any:
    """The ensemble the worker's anomaly agent would build for these features (its options included)."""
    from only1mcp.models.anomaly.ensemble import default_ensemble
    from only1mcp.streaming import AnomalySettings
    from only1mcp.streams.anomaly import ensemble_options

    config = AnomalySettings(features=tuple(features))
    return default_ensemble(list(features), **ensemble_options(config, timeout_ms), **extra)
