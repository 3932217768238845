"""Adaptive TTLs: per tool, how long a cached result stays right, learned from repeated calls.

Each time the upstream answers a call (a miss or a prefetch), the answer is compared with the
previous answer to the same call (same tool and arguments): after Δ seconds it either changed or
not. Treating a tool's results as changing at a rate λ (a Poisson process), a pair says "at least
one change within Δ" with probability 1 − e^(−λΔ). The pairs are kept as counts per log-spaced
bucket of Δ (changed, unchanged; decayed by ``decay`` per pair of the tool), and λ is their
maximum a posteriori estimate over a log grid, under a Gamma(2, 1/λ₀) prior whose mode λ₀ gives
``default_ttl`` (so a tool not yet seen twice gets the default). The TTL is the age at which the
result has changed with probability ``target`` (the accepted chance of serving a stale result),

    ttl = −ln(1 − target) / λ,   clamped to [min_ttl, max_ttl].

Only answers the upstream gave are compared (a cache hit says nothing), which is what the proxy
sees. The last answer per call is kept for at most ``max_keys`` calls (LRU); it is working memory
and not part of the saved state.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from only1mcp.prefetch._state import PrefetchStateError, check_header, header, malformed, require

__all__ = ["AdaptiveTTL"]

_VERSION = 1
_EDGES = np.logspace(-2, 7, 37)  # Δ bucket edges, seconds: 10 ms … 115 days, 4 per decade
_CENTERS = np.sqrt(_EDGES[:-1] * _EDGES[1:])
_RATES = np.logspace(-8, 2, 241)  # the λ grid, changes per second


class AdaptiveTTL:
    """Per tool: a change rate from repeated upstream answers, and the TTL it implies."""

    name = "adaptive_ttl"

    def __init__(self, min_ttl: float = 10.0, max_ttl: float = 3600.0, default_ttl: float = 60.0,
                 target: float = 0.05, decay: float = 0.999, max_keys: int = 100_000) -> None:
        if not 0 < min_ttl <= default_ttl <= max_ttl:
            raise ValueError(f"need 0 < min_ttl <= default_ttl <= max_ttl, got {min_ttl}, {default_ttl}, {max_ttl}")
        if not 0.0 < target < 1.0 or not 0.0 < decay <= 1.0 or max_keys < 1:
            raise ValueError("target must be in (0, 1), decay in (0, 1], max_keys >= 1")
        self.min_ttl, self.max_ttl, self.default_ttl = float(min_ttl), float(max_ttl), float(default_ttl)
        self.target, self.decay, self.max_keys = float(target), float(decay), int(max_keys)
        self._stats: dict[str, np.ndarray] = {}  # tool → 2 × buckets: [changed, unchanged]
        self._last: OrderedDict[str, tuple[str, float]] = OrderedDict()  # call key → (answer digest, time)
        self._ttl: dict[str, float] = {}  # cached answers, dropped when a tool learns
        self.learned = 0

    def learn_one(self, tool: str, key: str, digest: str, t: float) -> bool:
        """An upstream answer (``digest`` of the result) to call ``key`` of ``tool`` at ``t``; True
        when it made a pair with the previous answer to the same call."""
        previous = self._last.pop(key, None)
        self._last[key] = (digest, t)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        if previous is None or t <= previous[1]:
            return False
        stats = self._stats.get(tool)
        if stats is None:
            stats = self._stats[tool] = np.zeros((2, len(_CENTERS)))
        elif self.decay < 1.0:
            stats *= self.decay
        bucket = int(np.clip(np.searchsorted(_EDGES, t - previous[1]) - 1, 0, len(_CENTERS) - 1))
        stats[0 if digest != previous[0] else 1, bucket] += 1.0
        self._ttl.pop(tool, None)
        self.learned += 1
        return True

    def forget(self, key: str) -> None:
        """Drop the last answer to ``key`` (it was invalidated: its next answer makes no pair)."""
        self._last.pop(key, None)

    def rate(self, tool: str) -> float:
        """The tool's estimated change rate λ (per second)."""
        prior = -math.log(1.0 - self.target) / self.default_ttl  # the prior's mode
        log_post = np.log(_RATES) - _RATES / prior  # Gamma(2, scale=prior): (2 - 1) log λ − λ / prior
        stats = self._stats.get(tool)
        if stats is not None:
            x = np.outer(_RATES, _CENTERS)
            with np.errstate(divide="ignore"):
                changed = np.log(-np.expm1(-x))
            log_post = log_post + changed @ stats[0] - x @ stats[1]
        return float(_RATES[int(np.argmax(log_post))])

    def predict_one(self, tool: str) -> float:
        """The tool's TTL in seconds, within [min_ttl, max_ttl]."""
        ttl = self._ttl.get(tool)
        if ttl is None:
            ttl = -math.log(1.0 - self.target) / self.rate(tool)
            ttl = self._ttl[tool] = min(self.max_ttl, max(self.min_ttl, ttl))
        return ttl

    def pairs(self, tool: str) -> tuple[float, float]:
        """(changed, unchanged) pairs counted for the tool (after decay)."""
        stats = self._stats.get(tool)
        return (0.0, 0.0) if stats is None else (float(stats[0].sum()), float(stats[1].sum()))

    def state(self) -> dict[str, Any]:
        return {**header(self.name, _VERSION), "min_ttl": self.min_ttl, "max_ttl": self.max_ttl,
                "default_ttl": self.default_ttl, "target": self.target, "decay": self.decay,
                "max_keys": self.max_keys, "learned": self.learned, "buckets": len(_CENTERS),
                "tools": {tool: stats.tolist() for tool, stats in self._stats.items()}}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> AdaptiveTTL:
        """A learner continuing from ``state()`` (without the last answers: pairs start over);
        PrefetchStateError when the state is not a valid one."""
        state = check_header(state, cls.name, _VERSION)
        try:
            model = cls(min_ttl=state["min_ttl"], max_ttl=state["max_ttl"], default_ttl=state["default_ttl"],
                        target=state["target"], decay=state["decay"], max_keys=state["max_keys"])
            model.learned = int(state["learned"])
            require(state["buckets"] == len(_CENTERS), cls.name, f"{state['buckets']} buckets, expected {len(_CENTERS)}")
            for tool, rows in state["tools"].items():
                stats = np.asarray(rows, dtype=float)
                require(isinstance(tool, str) and stats.shape == (2, len(_CENTERS))
                        and bool(np.all(np.isfinite(stats))) and bool(np.all(stats >= 0)), cls.name,
                        f"bad counts for tool {tool!r}")
                model._stats[tool] = stats
        except PrefetchStateError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise malformed(cls.name, exc) from exc
        return model
