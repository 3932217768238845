"""The routing interface: a policy picks one replica of a server for each call.

Policies see the ready replicas of one server and a small description of the call,
and return a ``Decision`` that says which replica and why, so every call can be
explained. Later policies (least-inflight, P2C-EWMA, weighted from the learning
loop) plug in by name through ``POLICIES``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["RouteRequest", "Decision", "RoutingPolicy", "Candidate", "POLICIES", "make_policy"]


class Candidate(Protocol):
    id: str
    inflight: int


@dataclass(frozen=True, slots=True)
class RouteRequest:
    server: str
    method: str
    name: str | None = None  # tool or prompt name as the upstream knows it
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    replica: Any
    policy: str
    reason: str


class RoutingPolicy(Protocol):
    name: str

    def choose(self, candidates: Sequence[Any], request: RouteRequest) -> Decision:
        """Pick one of ``candidates`` (never empty)."""


POLICIES: dict[str, Callable[[], RoutingPolicy]] = {}


def make_policy(name: str) -> RoutingPolicy:
    return POLICIES[name]()
