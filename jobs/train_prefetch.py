"""The next-tool training job: offline store → sessions → time-based split → NextToolModel → registry → gate.

1. read every ``tools/call`` with a session from the DuckDB ``requests`` view (optionally within
   ``[since, until)``) and rebuild each session's tool sequence in time order;
2. split by time: the newest 20 % of the calls (by call time) are the hold-out, everything before
   their first is training. A session is cut there, not assigned whole to one side: agents keep
   sessions open for long (the loadgen's 32 sessions all start in its first second), so a split of
   whole sessions by their start would leave the older side nearly empty. A hold-out call is
   predicted from its session's calls before it, those before the cut included (the past: context,
   never learned); the newest sessions lie wholly in the hold-out;
3. tune the Markov order (1, 2, 3) on a validation split made the same way inside the training
   calls (the hold-out is never used for tuning) with the one-standard-error rule: the smallest
   order whose validation top-1 is within one standard error of the best (a longer context wins
   only when the data say so clearly: on the loadgen's order-1 sessions, a plain argmax picked
   order 3 on validation noise and lost to order 1 on the hold-out), then learn it on every training call;
4. score on the hold-out — next-tool top-1 / top-3 over every hold-out call but a session's first,
   the model frozen — beside the order-1 Markov baseline and the most-frequent-tool baseline (both
   learned from the same training calls) and an in-sample ceiling (the chosen order fitted on the
   hold-out sessions themselves: what this model family could reach there at best);
5. register the model (``NextToolModel.state()`` as JSON, the hold-out, the metrics) and, unless
   ``promote=False``, run the gate (models/prefetch/registry.py).

Too few sessions (``min_sessions``) raises :class:`InsufficientData` before anything is trained.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from only1mcp.jobs.train_latency import parse_time
from only1mcp.models.errors import InsufficientData, ModelError
from only1mcp.models.prefetch.markov import NextToolModel
from only1mcp.models.prefetch.registry import PrefetchRegistry, prefetch_root, score_sessions

__all__ = ["MIN_SESSIONS", "ORDERS", "load_sessions", "split_sessions", "train_prefetch", "MostFrequent"]

MIN_SESSIONS = 20
ORDERS = (1, 2, 3)
HOLDOUT_SHARE = 0.2

Session = tuple[list[float], list[str]]  # call times, tools


class MostFrequent:
    """The baseline: always the training data's most frequent tools, whatever the session did."""

    def __init__(self, sessions: Sequence[Sequence[str]]) -> None:
        counts: dict[str, int] = {}
        for tools in sessions:
            for tool in tools:
                counts[tool] = counts.get(tool, 0) + 1
        total = sum(counts.values()) or 1
        self.ranked = sorted(((t, c / total) for t, c in counts.items()), key=lambda item: (-item[1], item[0]))

    def predict_one(self, history: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
        return self.ranked[:k]


def load_sessions(data_dir: str | Path, since: float | None = None, until: float | None = None) -> list[Session]:
    """Every session's calls (``tools/call`` with a session and a tool), ordered by its first call."""
    from only1mcp.feature_store.offline.duckdb import arrow_table, connect, retry_vanished, time_window

    con = connect(data_dir)
    try:
        where = ["method = 'tools/call'", "session_id IS NOT NULL", "tool IS NOT NULL"]
        window, params = time_window(since, until)
        where += window
        query = (f"SELECT session_id, ts, tool FROM requests WHERE {' AND '.join(where)} "
                 "ORDER BY session_id, ts, event_id")
        table = retry_vanished(lambda: arrow_table(con.sql(query, params=params or None)))
    finally:
        con.close()
    sessions: dict[str, Session] = {}
    for sid, ts, tool in zip(*(table.column(c).to_pylist() for c in ("session_id", "ts", "tool"))):
        times, tools = sessions.setdefault(sid, ([], []))
        times.append(float(ts))
        tools.append(tool)
    return sorted(sessions.values(), key=lambda s: s[0][0])


_CONTEXT = 8  # calls before the cut a hold-out session keeps as context (the model looks at <= 3)


def split_sessions(sessions: Sequence[Session], share: float = HOLDOUT_SHARE
                   ) -> tuple[list[Session], list[tuple[list[str], int]], float]:
    """(each session's calls before the cut, each session's calls from the cut on with up to
    ``_CONTEXT`` calls before it as context and the index of its first scored call, the cut): the
    cut is the time of the newest ``share`` of the calls."""
    times = sorted(t for ts, _ in sessions for t in ts)
    cut = times[min(len(times) - 1, int(len(times) * (1.0 - share)))]
    older, newer = [], []
    for ts, tools in sessions:
        k = bisect.bisect_left(ts, cut)
        if k:
            older.append((ts[:k], tools[:k]))
        if k < len(tools):
            context = min(k, _CONTEXT)
            newer.append((tools[k - context:], context))
    return older, newer, cut


def _fit(sessions: Sequence[Sequence[str]], order: int) -> NextToolModel:
    model = NextToolModel(order=order)
    for tools in sessions:
        for i, tool in enumerate(tools):
            model.learn_one(tools[max(0, i - order):i], tool)
    return model


def _tools(sessions: Sequence[Session]) -> list[list[str]]:
    return [tools for _, tools in sessions]


def train_prefetch(data_dir: str | Path, registry_dir: str | Path, since: float | str | None = None,
                   until: float | str | None = None, promote: bool = True,
                   min_sessions: int = MIN_SESSIONS) -> dict[str, Any]:
    """Load, split, tune, train, score, register and gate; returns the report (JSON-ready)."""
    since_s, until_s = parse_time(since), parse_time(until)
    started = time.perf_counter()
    sessions = load_sessions(data_dir, since_s, until_s)
    load_s = time.perf_counter() - started
    if len(sessions) < min_sessions:
        raise InsufficientData(f"{len(sessions)} sessions with tool calls in {data_dir} (window {since_s}…{until_s});"
                               f" at least {min_sessions} are needed: nothing trained")
    train, held, cut = split_sessions(sessions)
    fit, validation, _ = split_sessions(train)
    scored = {order: score_sessions(_fit(_tools(fit), order), validation) for order in ORDERS}
    tuning = {order: float(s["top1"]) for order, s in scored.items()}
    best = max(tuning.values())
    se = math.sqrt(best * (1.0 - best) / max(1, int(scored[ORDERS[0]]["calls"])))
    order = min(o for o in ORDERS if tuning[o] >= best - se)
    started = time.perf_counter()
    model = _fit(_tools(train), order)
    train_s = time.perf_counter() - started
    metrics = {"model": score_sessions(model, held), "markov1": score_sessions(_fit(_tools(train), 1), held),
               "most_frequent": score_sessions(MostFrequent(_tools(train)), held),
               "in_sample_ceiling": score_sessions(_fit([tools for tools, _ in held], order), held)}
    if not metrics["model"]["calls"] or not train:
        raise InsufficientData("nothing to learn from or to judge on before and after the time cut "
                               f"({len(train)} sessions before it, {metrics['model']['calls']} calls to score after it)")
    rows = {"sessions": {"train": len(train), "holdout": len(held),
                         "holdout_only": sum(1 for _, start in held if start == 0)},
            "calls": {"train": sum(len(t) for t in _tools(train)), "holdout": metrics["model"]["calls"]}}
    window = {"since": since_s, "until": until_s, "data_since": sessions[0][0][0], "holdout_since": cut,
              "data_until": max(ts[-1] for ts, _ in sessions)}
    registry = PrefetchRegistry(prefetch_root(registry_dir))
    version = registry.add(model, held, {"window": window, "rows": rows, "metrics": metrics,
                                         "order_tuning": {str(o): round(v, 4) for o, v in tuning.items()},
                                         "timings": {"load_s": round(load_s, 3), "train_s": round(train_s, 3)}})
    verdict: dict[str, Any] = {"promoted": False, "reason": "not run (--no-promote)"}
    if promote:
        try:
            verdict = registry.promote(version)
        except ModelError as exc:  # the artefact just written does not load: say so, the live model stays
            verdict = {"promoted": False, "reason": f"refused: {exc}"}
    return {"version": version, "status": registry.show(version)["status"], "promoted": bool(verdict["promoted"]),
            "gate": verdict, "live": registry.live_version(), "order": order, "order_tuning": tuning, "rows": rows,
            "window": window, "metrics": metrics, "path": str(registry.root / version)}
