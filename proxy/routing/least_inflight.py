"""Least in-flight: the ready replica with the fewest calls outstanding.

Ties are broken at random: a fixed tie-break would send every call of a quiet period to
the same replica.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from only1mcp.proxy.routing.base import POLICIES, Decision, RouteRequest

__all__ = ["LeastInflight"]


class LeastInflight:
    name = "least_inflight"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()

    def choose(self, candidates: Sequence[Any], request: RouteRequest) -> Decision:
        fewest = min(c.inflight for c in candidates)
        tied = [c for c in candidates if c.inflight == fewest]
        replica = tied[self._rng.randrange(len(tied))] if len(tied) > 1 else tied[0]
        ties = f", picked at random among {len(tied)} tied" if len(tied) > 1 else ""
        return Decision(replica, self.name,
                        f"least_inflight: {replica.id} has {fewest} in flight, the fewest of {len(candidates)}{ties}")


POLICIES[LeastInflight.name] = LeastInflight
