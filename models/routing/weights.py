"""Predictions → routing weights → ``RoutingWeights`` decision records. Pure.

The weights use the proxy's own formula (policy ``learned``): a replica with cost ``c`` gets
``exp(-(c / min_cost - 1) / temperature)``, so the cheapest gets 1 and a replica twice as slow
gets ``exp(-1 / T)``. The proxy recomputes them per call from ``predicted_ms`` at each
replica's inflight; the ``weights`` field is the same formula at inflight 0, for a proxy (or a
reader) that has no curves.

Predictions are *curves*: per (server, tool) and replica, the predicted latency (ms) with 0, 1,
2, … calls in flight at the proxy (past the last level the proxy grows it with the calls in flight). The specialisation learner has
one value per curve (it knows nothing of load); the latency model has ``inflight_levels``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence

from only1mcp.events import RoutingWeights

__all__ = ["Curves", "softmax_weights", "error_adjusted", "clean_curve", "server_curves", "decisions_for", "split",
           "MIN_SUCCESS", "FLOOR_MS"]

Curves = dict[tuple[str, "str | None"], dict[str, list[float]]]  # (server, tool) → replica → ms per inflight

MIN_SUCCESS = 0.05  # an always-failing replica costs 20× its latency, not infinity
FLOOR_MS = 0.01  # costs below this count as this (a 0 ms prediction must not divide by zero)


def softmax_weights(costs: Mapping[str, float], temperature: float) -> dict[str, float]:
    """replica → exp(-(c / min_cost - 1) / T): 1 for the cheapest, less for the others (never 0
    for a finite cost: underflow is floored at the smallest positive float)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, not {temperature!r}")
    if not costs:
        return {}
    floored = {rid: max(float(c), FLOOR_MS) for rid, c in costs.items()}
    best = min(floored.values())
    return {rid: max(math.exp(-(c / best - 1.0) / temperature), 5e-324) for rid, c in floored.items()}


def error_adjusted(latency_ms: float, error_rate: float) -> float:
    """The cost of a replica that fails a share ``error_rate`` of its calls: its latency divided by
    its success rate (at least ``MIN_SUCCESS``), so an erroring replica looks slow."""
    return float(latency_ms) / max(1.0 - float(error_rate), MIN_SUCCESS)


def clean_curve(values: Sequence[float]) -> list[float] | None:
    """A curve as the decision record may carry it: finite, ≥ 0 and non-decreasing in load (more
    calls in flight never make one faster; quantile models may wiggle); None if it has a NaN/inf
    or nothing at all."""
    out: list[float] = []
    top = 0.0
    for v in values:
        v = float(v)
        if not math.isfinite(v):
            return None
        top = max(top, v)
        out.append(top)
    return out or None


def server_curves(curves: Curves, server: str) -> dict[str, list[float]]:
    """replica → the mean of its per-tool curves over the server's tools it has (elementwise;
    shorter curves extended with their last value): the server-wide record's predictions."""
    sums: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for (srv, _tool), replicas in curves.items():
        if srv != server:
            continue
        for rid, curve in replicas.items():
            acc = sums.get(rid)
            if acc is None:
                sums[rid], counts[rid] = list(curve), 1
                continue
            if len(curve) > len(acc):
                acc.extend([acc[-1]] * (len(curve) - len(acc)))
            for i in range(len(acc)):
                acc[i] += curve[min(i, len(curve) - 1)]
            counts[rid] += 1
    return {rid: [v / counts[rid] for v in acc] for rid, acc in sums.items()}


def decisions_for(curves: Curves, *, now: float, valid_for: float, temperature: float, model_version: str,
                  source: str, min_replicas: int = 2, server_wide: bool = True,
                  per_tool: bool = True) -> list[RoutingWeights]:
    """One record per (server, tool) with at least ``min_replicas`` replicas predicted (when
    ``per_tool``), plus one server-wide record (``tool`` None) per server from the per-replica means
    of its tools' curves (when ``server_wide`` and it has ``min_replicas`` replicas). Weights at
    inflight 0, curves as ``predicted_ms``, ``valid_until = now + valid_for``."""
    records: list[RoutingWeights] = []
    cleaned: Curves = {}
    for key, replicas in curves.items():
        good = {rid: c for rid, c in ((rid, clean_curve(curve)) for rid, curve in replicas.items()) if c is not None}
        if good:
            cleaned[key] = good
    for (server, tool), replicas in sorted(cleaned.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        if per_tool and tool is not None and len(replicas) >= min_replicas:
            records.append(_record(server, tool, replicas, now, valid_for, temperature, model_version, source))
    if server_wide:
        for server in sorted({server for server, _ in cleaned}):
            replicas = server_curves(cleaned, server)
            if len(replicas) >= min_replicas:
                records.append(_record(server, None, replicas, now, valid_for, temperature, model_version, source))
    return records


def _record(server: str, tool: str | None, replicas: dict[str, list[float]], now: float, valid_for: float,
            temperature: float, model_version: str, source: str) -> RoutingWeights:
    weights = softmax_weights({rid: curve[0] for rid, curve in replicas.items()}, temperature)
    return RoutingWeights(decision_id=uuid.uuid4().hex, ts=now, valid_until=now + valid_for, server=server,
                          tool=tool, weights=weights, predicted_ms={rid: list(c) for rid, c in replicas.items()},
                          model_version=model_version, source=source)


def split(model: Curves, baseline: Curves) -> tuple[Curves, Curves, set[str]]:
    """Who decides what when a model and the baseline both predict: the model takes a (server, tool)
    where it predicts at least two replicas; a replica the baseline knows there and the model does
    not (it has not seen enough of its calls yet, as with a replica the exploration floor alone
    feeds) keeps the baseline's curve in the model's record, rather than getting no weight or
    holding the whole tool back. The baseline keeps the rest. Returns (the model's part, the
    baseline's part, the servers whose every tool the model decides: their server-wide record is
    the model's too)."""
    mine: Curves = {}
    for key, replicas in model.items():
        if key[1] is None or len(replicas) < 2:
            continue
        merged = dict(baseline.get(key, {}))
        merged.update(replicas)
        mine[key] = merged
    rest = {key: replicas for key, replicas in baseline.items() if key not in mine}
    servers = {server for server, _ in mine} - {server for server, _ in rest}
    return mine, rest, servers
