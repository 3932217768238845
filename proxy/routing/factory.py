"""Build a server's routing policy from its settings."""

from __future__ import annotations

import random

from only1mcp.proxy.routing.base import RoutingPolicy, make_policy
from only1mcp.proxy.routing.sticky import Sticky
from only1mcp.settings import ServerSettings

__all__ = ["build_policy"]


def build_policy(settings: ServerSettings, rng: random.Random | None = None) -> RoutingPolicy:
    """The configured policy with every option it takes, wrapped in ``Sticky`` when ``settings.sticky``."""
    policy = make_policy(settings.policy, fallback_policy=settings.fallback_policy, hash_key=settings.hash_key,
                         hash_load_factor=settings.hash_load_factor, exploration=settings.exploration,
                         temperature=settings.temperature, rng=rng)
    return Sticky(policy) if settings.sticky else policy
