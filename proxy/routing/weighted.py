"""Weighted: replica weights learned elsewhere (the learning loop) decide, while they are fresh.

Weights arrive through ``set_weights`` with a validity deadline and the version of the
model that produced them. A replica is picked at random in proportion to its weight,
among the ready ones with a positive weight, so the probability of each choice is known
(the learning loop can correct for it). When the weights are missing, stale, or name no
ready replica, a fallback policy decides and the reason says so: routing never depends
on the learning loop being alive.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from only1mcp.proxy.routing.base import POLICIES, Decision, RouteRequest, make_policy

__all__ = ["Weighted"]


class _Table:
    __slots__ = ("weights", "valid_until", "model_version")

    def __init__(self, weights: dict[str, float], valid_until: float, model_version: str) -> None:
        self.weights, self.valid_until, self.model_version = weights, valid_until, model_version


class Weighted:
    name = "weighted"

    def __init__(self, fallback_policy: str = "p2c_ewma", rng: random.Random | None = None, **options: Any) -> None:
        if fallback_policy == self.name:
            raise ValueError("weighted cannot fall back to itself")
        self._rng = rng if rng is not None else random.Random()
        # The fallback shares the rng and gets the other options (hash_key … for consistent_hash).
        self.fallback = make_policy(fallback_policy, rng=self._rng, **options)
        self._table: _Table | None = None

    def set_weights(self, weights: Mapping[str, float], valid_until: float, model_version: str) -> None:
        """Replace the weights (replica id → weight ≥ 0); used until ``now >= valid_until``."""
        table = {}
        for rid, weight in weights.items():
            weight = float(weight)
            if not math.isfinite(weight) or weight < 0:  # a broken model must not route silently
                raise ValueError(f"weight for {rid!r} must be a finite number ≥ 0, got {weight!r}")
            table[rid] = weight
        # One assignment: a reader on another thread sees the old table or the new, never a mix.
        self._table = _Table(table, float(valid_until), str(model_version))

    def snapshot(self) -> dict[str, Any]:
        """For the admin API: the current weights and where they came from."""
        table = self._table
        if table is None:
            return {"model_version": None, "valid_until": None, "weights": {}, "fallback": self.fallback.name}
        return {"model_version": table.model_version, "valid_until": table.valid_until,
                "weights": dict(table.weights), "fallback": self.fallback.name}

    def choose(self, candidates: Sequence[Any], request: RouteRequest) -> Decision:
        table = self._table  # read once: set_weights may swap it meanwhile
        if table is None:
            return self._fall_back(candidates, request, "no weights yet")
        if request.now >= table.valid_until:
            return self._fall_back(candidates, request, f"weights of model {table.model_version} stale since "
                                                        f"t={table.valid_until:.1f} "
                                                        f"({request.now - table.valid_until:.1f}s ago)")
        weighted = [(c, table.weights.get(c.id, 0.0)) for c in candidates]
        weighted = [(c, w) for c, w in weighted if w > 0]
        if not weighted:
            return self._fall_back(candidates, request,
                                   f"model {table.model_version} gives no ready replica a positive weight")
        total = math.fsum(w for _, w in weighted)
        point = self._rng.random() * total
        replica, weight = weighted[-1]  # float rounding can leave point just past the last bucket
        for candidate, w in weighted:
            point -= w
            if point < 0:
                replica, weight = candidate, w
                break
        rows = [{"replica": c.id, "weight": table.weights.get(c.id, 0.0),
                 "probability": max(table.weights.get(c.id, 0.0), 0.0) / total, "predicted_ms": None,
                 "inflight": getattr(c, "inflight", None)} for c in candidates]
        detail = {"scope": "server", "tool": None, "model_version": table.model_version, "source": "weighted",
                  "fallback_reason": None, "candidates": rows}
        return Decision(replica, self.name, f"weighted: {replica.id} weight {weight:g} of {total:g} "
                                            f"(p={weight / total:.2f}) by model {table.model_version}",
                        model_version=table.model_version, detail=detail)

    def _fall_back(self, candidates: Sequence[Any], request: RouteRequest, why: str) -> Decision:
        inner = self.fallback.choose(candidates, request)
        detail = {"scope": None, "tool": None, "model_version": None, "source": None, "fallback_reason": why,
                  "fallback": self.fallback.name,
                  "candidates": [{"replica": c.id, "weight": None, "probability": None, "predicted_ms": None,
                                  "inflight": getattr(c, "inflight", None)} for c in candidates]}
        return Decision(inner.replica, self.name, f"{why}; fell back to {self.fallback.name}: {inner.reason}",
                        detail=detail)


POLICIES[Weighted.name] = Weighted
