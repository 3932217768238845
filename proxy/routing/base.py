"""The routing interface: a policy picks one replica of a server for each call.

Policies see the ready replicas of one server and a small description of the call,
and return a ``Decision`` that says which replica and why, so every call can be
explained. Policies plug in by name through ``POLICIES``; ``make_policy`` passes each
only the options its constructor names, so the pool can offer every option to every policy.
"""

from __future__ import annotations

import inspect
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
    args_hash: str | None = None  # a digest of the call's arguments, for consistent_hash by arguments
    now: float = 0.0  # the pool's clock (the one it passes to ReplicaStats.on_finish)


@dataclass(frozen=True, slots=True)
class Decision:
    replica: Any
    policy: str
    reason: str
    model_version: str | None = None  # set by "weighted" when the learned weights chose the replica
    # Structured explanation ("learned": per candidate weight, probability, predicted latency, inflight;
    # the entry's scope, model version and source, or the fallback reason; any operator override).
    detail: dict[str, Any] | None = None


class RoutingPolicy(Protocol):
    name: str

    def choose(self, candidates: Sequence[Any], request: RouteRequest) -> Decision:
        """Pick one of ``candidates`` (never empty)."""


POLICIES: dict[str, Callable[..., RoutingPolicy]] = {}


def make_policy(name: str, **options: Any) -> RoutingPolicy:
    """Build the policy registered as ``name``. Options its constructor does not name are dropped,
    so callers pass one option set (fallback_policy, hash_key, hash_load_factor, rng) to any policy."""
    factory = POLICIES[name]
    return factory(**_accepted(factory, options))


def _accepted(factory: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: give it nothing
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return options
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {key: value for key, value in options.items() if key in named}
