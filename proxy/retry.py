"""Retry budget, as Finagle's: retries may add at most a share of the calls, plus a small floor.

Without a budget, retries during an outage multiply the load on the replicas that are
left (a retry storm). Each call deposits ``ratio`` of a retry; each retry withdraws one;
a floor of ``min_per_second`` keeps low-traffic servers able to retry at all. Both
decay over a ``window`` so old traffic does not buy retries now.
"""

from __future__ import annotations

import math

from only1mcp.traffic import RetrySettings

__all__ = ["RetryBudget"]


class RetryBudget:
    def __init__(self, settings: RetrySettings, window: float = 10.0) -> None:
        self.ratio = settings.budget_ratio
        self.floor = settings.min_per_second * window
        self.window = window
        self._balance = 0.0  # deposits minus withdrawals, decaying
        self._last = 0.0
        self.retries = 0
        self.refused = 0

    def _decay(self, now: float) -> None:
        if now > self._last:
            self._balance *= math.exp(-(now - self._last) / self.window)
            self._last = now

    def deposit(self, now: float) -> None:
        """One call was made."""
        self._decay(now)
        self._balance += self.ratio

    def try_withdraw(self, now: float) -> bool:
        """May one more retry be made now? Counts it if so."""
        self._decay(now)
        if self._balance + self.floor >= 1.0:
            self._balance -= 1.0
            self.retries += 1
            return True
        self.refused += 1
        return False
