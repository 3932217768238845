"""Power of two choices over peak-EWMA cost (Finagle's P2CPeakEwma, Linkerd's default).

Comparing two random replicas instead of scanning for the global best avoids herding:
every balancer that sees the same "best" replica would send it everything at once,
while two random choices already take the expected worst load from O(log n) to
O(log log n) (Mitzenmacher). Cost is ``ReplicaStats.cost``: latency × (in-flight + 1).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from only1mcp.proxy.routing.base import POLICIES, Decision, RouteRequest
from only1mcp.proxy.routing.stats import cost_of

__all__ = ["P2CEwma"]


class P2CEwma:
    name = "p2c_ewma"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()

    def choose(self, candidates: Sequence[Any], request: RouteRequest) -> Decision:
        if len(candidates) == 1:
            only = candidates[0]
            return Decision(only, self.name, f"p2c: {only.id} is the only one ready "
                                             f"(cost {cost_of(only, request.now) * 1000:.1f}ms)")
        i, j = self._rng.sample(range(len(candidates)), 2)  # two distinct, in random order
        a, b = candidates[i], candidates[j]
        cost_a, cost_b = cost_of(a, request.now), cost_of(b, request.now)
        # On a tie the first of the random pair wins, which is itself random.
        if cost_b < cost_a:
            a, b, cost_a, cost_b = b, a, cost_b, cost_a
        sign = "<" if cost_a < cost_b else "="
        return Decision(a, self.name, f"p2c: {a.id} cost {cost_a * 1000:.1f}ms {sign} {b.id} cost {cost_b * 1000:.1f}ms")


POLICIES[P2CEwma.name] = P2CEwma
