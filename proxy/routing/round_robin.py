"""Round robin: each ready replica in turn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from only1mcp.proxy.routing.base import POLICIES, Decision, RouteRequest

__all__ = ["RoundRobin"]


class RoundRobin:
    name = "round_robin"

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, candidates: Sequence[Any], request: RouteRequest) -> Decision:
        self._turn += 1
        index = self._turn % len(candidates)
        return Decision(candidates[index], self.name, f"turn {index} of {len(candidates)} ready")


POLICIES[RoundRobin.name] = RoundRobin
