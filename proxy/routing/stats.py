"""Per-replica load and latency, as latency-aware policies (p2c_ewma) read them.

The latency estimate is Finagle's peak-EWMA: a sample above the estimate replaces it at
once (react to trouble immediately), a sample below it is blended in with a weight that
grows with the time since the previous sample (recover gradually, at the same pace
however often calls arrive). The cost of sending one more call is that estimate times
(in-flight + 1), so a replica is penalised both for being slow and for being busy.

Everything is driven by the caller's clock (``now``): nothing here reads time or sleeps.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["ReplicaStats", "DEFAULT_DECAY_S", "DEFAULT_LATENCY_S", "cost_of"]

DEFAULT_DECAY_S = 10.0  # Finagle's default decay time for peak-EWMA
# What we assume of a replica we have not measured: small, so new and long-idle replicas are
# tried (as Linkerd's default RTT does), and each in-flight call still raises its cost.
DEFAULT_LATENCY_S = 0.001


class ReplicaStats:
    """Counters and a peak-EWMA latency for one replica. ``on_start``/``on_finish`` bracket each call."""

    __slots__ = ("decay_s", "default_latency_s", "inflight", "successes", "failures", "last_sample_at", "_ewma")

    def __init__(self, decay_s: float = DEFAULT_DECAY_S, default_latency_s: float = DEFAULT_LATENCY_S) -> None:
        if not decay_s > 0 or not default_latency_s > 0:
            raise ValueError("decay_s and default_latency_s must be positive")
        self.decay_s = decay_s
        self.default_latency_s = default_latency_s
        self.inflight = 0
        self.successes = 0
        self.failures = 0
        self.last_sample_at: float | None = None
        self._ewma: float | None = None  # seconds, as of last_sample_at; None until the first sample

    @property
    def calls(self) -> int:
        return self.successes + self.failures

    def on_start(self) -> None:
        self.inflight += 1

    def on_finish(self, latency_s: float, ok: bool, now: float) -> None:
        self.inflight = max(0, self.inflight - 1)  # an unmatched finish must not make a replica look idler than idle
        if ok:
            self.successes += 1
        else:
            self.failures += 1
        if not math.isfinite(latency_s):  # one NaN would poison the estimate for good
            return
        latency_s = max(0.0, latency_s)
        if self._ewma is None or self.last_sample_at is None:
            self._ewma, self.last_sample_at = latency_s, now
            return
        if not ok:
            # A fast failure must not make a broken replica look attractive (the "black hole"
            # effect of latency balancing); a slow one still counts as slow.
            latency_s = max(latency_s, self._ewma)
        if latency_s > self._ewma:
            self._ewma = latency_s  # the peak: trouble shows at once
        else:
            w = self._weight(now)
            self._ewma = self._ewma * w + latency_s * (1.0 - w)
        self.last_sample_at = max(now, self.last_sample_at)  # a clock that steps back must not stall decay

    def latency(self, now: float) -> float:
        """The estimate in seconds as of ``now``. Silence decays it toward the default: what we
        knew of an idle replica ages out, so a once-slow replica is probed again. (Finagle and
        Linkerd decay toward zero; stopping at the default keeps a hung replica's growing
        in-flight count in its cost.)"""
        if self._ewma is None:
            return self.default_latency_s
        w = self._weight(now)
        return self._ewma * w + self.default_latency_s * (1.0 - w)

    def cost(self, now: float) -> float:
        """Expected wait for one more call: latency × (in-flight + 1)."""
        return self.latency(now) * (self.inflight + 1)

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """For the admin API. ``ewma_ms`` is None before the first sample; as of the last sample
        unless ``now`` is given."""
        if self._ewma is None:
            ewma_ms = None
        else:
            ewma_ms = round((self._ewma if now is None else self.latency(now)) * 1000.0, 3)
        return {"ewma_ms": ewma_ms, "inflight": self.inflight, "calls": self.calls, "failures": self.failures,
                "last_sample_at": self.last_sample_at}

    def _weight(self, now: float) -> float:
        # The weight of the old estimate after `elapsed` seconds: e^(-elapsed/decay), i.e. an
        # unevenly spaced EWMA, so the pace of recovery does not depend on the call rate.
        elapsed = max(0.0, now - (self.last_sample_at if self.last_sample_at is not None else now))
        return math.exp(-elapsed / self.decay_s)


def cost_of(candidate: Any, now: float) -> float:
    """A candidate's cost; one without ``stats`` (not measured yet) costs the default × (in-flight + 1)."""
    stats = getattr(candidate, "stats", None)
    if stats is None:
        return DEFAULT_LATENCY_S * (getattr(candidate, "inflight", 0) + 1)
    return stats.cost(now)
