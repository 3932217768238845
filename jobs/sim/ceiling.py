"""The oracles beside a latency model's P50 error on a simulated scenario's calls.

A call's latency is its wait plus its service time, a lognormal draw (median ``m``, sigma ``s``) of
its replica's profile for its tool. Two predictors bracket what a model can hope for:

- **wait-knowing** (:func:`p50_mae_floor`): it knows each call's wait exactly (it knows the future
  draws of the calls ahead of it) and answers wait + ``m`` (a median minimises absolute error), off
  by ``E|S - m| = m * exp(s**2 / 2) * (2 * Phi(s) - 1)`` on average. A floor under every model's P50
  MAE, out of reach for any predictor at routing time (the proxy's own overhead, also in the events'
  latency, only adds to it).
- **informed** (:func:`p50_mae_informed`): it knows what routing time can know — the profiles, the
  calls in flight on the replica, their tools and how long each has been in service (rebuilt first
  come first served from the calls that completed before) — but no draw. It answers the median of
  the call's latency over ``draws`` simulated futures: the calls in service finish after a draw
  conditioned on the time they have already taken, the queued ones after a fresh draw, each in
  turn on the first free worker, then the call's own draw. That median is the best P50 any
  predictor with routing-time knowledge can give (up to the Monte Carlo error), so a model's gain
  over the EWMA baseline reads against the most that knowledge allows.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from only1mcp.jobs.sim.model import Profile

__all__ = ["lognormal_mad_from_median", "p50_mae_floor", "p50_mae_informed"]

_PHI = NormalDist().cdf
_LOOKBACK = 64  # earlier calls on a replica looked at to rebuild when a call in flight started service


def lognormal_mad_from_median(median: float, sigma: float) -> float:
    """E|X - median| for X lognormal with that median and log-sigma."""
    return median * math.exp(sigma * sigma / 2.0) * (2.0 * _PHI(sigma) - 1.0)


def _service(profile: Profile, tool: str) -> tuple[float, float] | None:
    """(median ms, sigma) of ``tool``'s service time on ``profile``; None for an unknown tool."""
    model = profile.tools.get(tool)
    return None if model is None else (model.median_ms * profile.slowdown, model.sigma)


def p50_mae_floor(rows: Iterable[Mapping[str, Any]], profiles: Mapping[str, Profile]) -> dict[str, Any] | None:
    """The wait-knowing floor (ms) over ``rows`` (``replica``, ``tool``; the training rows of the
    hold-out) for a fleet of fault-free ``profiles``; None when a profile has scripted faults (the
    service time would depend on each replica's clock) or no row names a known replica and tool."""
    if any(profile.faults for profile in profiles.values()):
        return None
    total, n, skipped = 0.0, 0, 0
    for row in rows:
        profile = profiles.get(str(row.get("replica")))
        service = _service(profile, str(row.get("tool"))) if profile is not None else None
        if service is None:
            skipped += 1
            continue
        total += lognormal_mad_from_median(*service)
        n += 1
    if n == 0:
        return None
    return {"mae_p50_ms": total / n, "rows": n, "rows_skipped": skipped}


def _draws(rng: np.random.Generator, median: float, sigma: float, taken_ms: float, n: int) -> np.ndarray:
    """``n`` service times (ms) of a lognormal(median, sigma) call that has already taken ``taken_ms``:
    drawn from the distribution conditioned on being longer (inverse CDF on the truncated range)."""
    low = float(ndtr(math.log(taken_ms / median) / sigma)) if taken_ms > 0 and sigma > 0 else 0.0
    u = np.minimum(low + (1.0 - low) * rng.random(n), 1.0 - 1e-12)
    return median * np.exp(sigma * ndtri(u)) if sigma > 0 else np.full(n, median)


def _informed_median(calls: Sequence[Mapping[str, Any]], completions: Sequence[float], k: int, profile: Profile,
                     rng: np.random.Generator, draws: int) -> float | None:
    """The informed prediction for ``calls[k]`` (one replica's calls in arrival order, ``completions``
    their ts + latency); None when a tool is unknown."""
    call, workers = calls[k], profile.workers
    now = float(call["ts"])
    in_flight = [j for j in range(max(0, k - _LOOKBACK), k) if completions[j] > now]
    free = np.zeros((draws, workers))  # ms until each worker is free, per simulated future
    busy = 0
    queued: list[int] = []
    for j in in_flight:
        earlier = completions[max(0, j - _LOOKBACK):j]
        ahead = sum(1 for c in earlier if c > now)  # earlier calls still in flight: they hold workers first
        if ahead >= workers or busy >= workers:
            queued.append(j)
            continue
        done = sorted(c for c in earlier if c <= now)
        need = workers - ahead  # j started when the need-th latest of the finished earlier calls freed a worker
        started = max(float(calls[j]["ts"]), done[-need] if len(done) >= need else -math.inf)
        service = _service(profile, str(calls[j]["tool"]))
        if service is None:
            return None
        taken = max((now - started) * 1000.0, 0.0)
        free[:, busy] = _draws(rng, *service, taken, draws) - taken
        busy += 1
    rows = np.arange(draws)
    for j in queued:
        service = _service(profile, str(calls[j]["tool"]))
        if service is None:
            return None
        first = np.argmin(free, axis=1)
        free[rows, first] += _draws(rng, *service, 0.0, draws)
    service = _service(profile, str(call["tool"]))
    if service is None:
        return None
    return float(np.median(free.min(axis=1) + _draws(rng, *service, 0.0, draws)))


def p50_mae_informed(calls: Iterable[Mapping[str, Any]], holdout_since: float, profiles: Mapping[str, Profile],
                     draws: int = 400, seed: int = 0) -> dict[str, Any] | None:
    """The informed oracle's P50 MAE (ms) over the calls at or after ``holdout_since``; ``calls``
    (``ts``, ``latency_ms``, ``replica``, ``tool``; training rows) should start a minute or so before
    it, so the first hold-out calls see what was in flight. None with scripted faults (a replica's
    clock would matter) or when no hold-out call names a known replica and tool."""
    if any(profile.faults for profile in profiles.values()):
        return None
    by_replica: dict[str, list[Mapping[str, Any]]] = {}
    for call in sorted(calls, key=lambda c: float(c["ts"])):
        by_replica.setdefault(str(call["replica"]), []).append(call)
    rng = np.random.default_rng(seed)
    total, n, skipped = 0.0, 0, 0
    for replica, seq in by_replica.items():
        profile = profiles.get(replica)
        first = bisect.bisect_left([float(c["ts"]) for c in seq], holdout_since)
        if profile is None:
            skipped += len(seq) - first
            continue
        completions = [float(c["ts"]) + float(c["latency_ms"]) / 1000.0 for c in seq]
        for k in range(first, len(seq)):
            predicted = _informed_median(seq, completions, k, profile, rng, draws)
            if predicted is None:
                skipped += 1
                continue
            total += abs(predicted - float(seq[k]["latency_ms"]))
            n += 1
    if n == 0:
        return None
    return {"mae_p50_ms": total / n, "rows": n, "rows_skipped": skipped, "draws": draws}
