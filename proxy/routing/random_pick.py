"""Random: a uniformly random ready replica. Stateless, and even on average."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from only1mcp.proxy.routing.base import POLICIES, Decision, RouteRequest

__all__ = ["RandomPolicy"]


class RandomPolicy:
    name = "random"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()  # seeded by benchmarks and tests

    def choose(self, candidates: Sequence[Any], request: RouteRequest) -> Decision:
        replica = candidates[self._rng.randrange(len(candidates))]
        return Decision(replica, self.name, f"random: {replica.id}, uniformly of {len(candidates)} ready")


POLICIES[RandomPolicy.name] = RandomPolicy
