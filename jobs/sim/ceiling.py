"""The oracle beside a latency model's P50 error: the smallest mean absolute error any predictor can
reach on a simulated scenario's calls.

A call's latency is its wait plus its service time, a lognormal draw (median ``m``, sigma ``s``) of
its replica's profile for its tool. A predictor that knew everything at routing time (the queue, the
wait it will cause, the profiles) but not the call's own draw answers wait + ``m`` (a median
minimises absolute error) and is off by ``E|S - m| = m * exp(s**2 / 2) * (2 * Phi(s) - 1)`` on
average. The mean of that over the hold-out's calls is a floor under every model's P50 MAE (the
proxy's own overhead, also in the events' latency, only adds to it), so a model's gain over the EWMA
baseline can be read against the most any model could gain.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from statistics import NormalDist
from typing import Any

from only1mcp.jobs.sim.model import Profile

__all__ = ["lognormal_mad_from_median", "p50_mae_floor"]

_PHI = NormalDist().cdf


def lognormal_mad_from_median(median: float, sigma: float) -> float:
    """E|X - median| for X lognormal with that median and log-sigma."""
    return median * math.exp(sigma * sigma / 2.0) * (2.0 * _PHI(sigma) - 1.0)


def p50_mae_floor(rows: Iterable[Mapping[str, Any]], profiles: Mapping[str, Profile]) -> dict[str, Any] | None:
    """The floor (ms) over ``rows`` (``replica``, ``tool``; the training rows of the hold-out) for a
    fleet of fault-free ``profiles``; None when a profile has scripted faults (the service time would
    depend on each replica's clock) or no row names a known replica and tool."""
    if any(profile.faults for profile in profiles.values()):
        return None
    total, n, skipped = 0.0, 0, 0
    for row in rows:
        profile = profiles.get(str(row.get("replica")))
        tool = profile.tools.get(str(row.get("tool"))) if profile is not None else None
        if tool is None:
            skipped += 1
            continue
        total += lognormal_mad_from_median(tool.median_ms * profile.slowdown, tool.sigma)
        n += 1
    if n == 0:
        return None
    return {"mae_p50_ms": total / n, "rows": n, "rows_skipped": skipped}
