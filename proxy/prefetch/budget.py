"""The prefetch budget: how many prefetches may run at once, and what share of the client calls they
may add over a sliding window.

Counting is in buckets (a twentieth of the window each), so recording a call is a division and an
addition whatever the traffic, and the window slides in steps of one bucket.
"""

from __future__ import annotations

__all__ = ["SlidingCount", "Budget"]

_BUCKETS = 20


class SlidingCount:
    """Events over the last ``window`` seconds, in ``_BUCKETS`` buckets."""

    __slots__ = ("width", "counts", "last", "total")

    def __init__(self, window: float) -> None:
        self.width = window / _BUCKETS
        self.counts = [0] * _BUCKETS
        self.last: int | None = None  # the bucket number (time // width) of the newest update
        self.total = 0

    def _advance(self, now: float) -> None:
        bucket = int(now // self.width)
        last = self.last
        if last is None or bucket - last >= _BUCKETS:  # first use, or the whole window has passed
            if self.total:
                self.counts = [0] * _BUCKETS
                self.total = 0
            self.last = bucket
            return
        while last < bucket:  # at most _BUCKETS steps: the buckets that fell out of the window
            last += 1
            index = last % _BUCKETS
            self.total -= self.counts[index]
            self.counts[index] = 0
        self.last = last

    def add(self, now: float, n: int = 1) -> None:
        self._advance(now)
        assert self.last is not None
        self.counts[self.last % _BUCKETS] += n
        self.total += n

    def value(self, now: float) -> int:
        self._advance(now)
        return self.total


class Budget:
    """``max_concurrent`` prefetches in flight; prefetches over the window ≤ ``max_share`` × client calls
    over the window."""

    def __init__(self, max_concurrent: int, max_share: float, window: float) -> None:
        self.max_concurrent, self.max_share, self.window = max_concurrent, max_share, window
        self.inflight = 0
        self.clients = SlidingCount(window)
        self.prefetches = SlidingCount(window)

    def configure(self, max_concurrent: int, max_share: float, window: float) -> None:
        """New limits (a reload); a new window length starts its counts over."""
        self.max_concurrent, self.max_share = max_concurrent, max_share
        if window != self.window:
            self.window, self.clients, self.prefetches = window, SlidingCount(window), SlidingCount(window)

    def client_call(self, now: float) -> None:
        self.clients.add(now)

    def refusal(self, now: float) -> str:
        """Why one more prefetch may not start now, or "" if it may."""
        if self.inflight >= self.max_concurrent:
            return f"{self.inflight} prefetches in flight (max_concurrent {self.max_concurrent})"
        done, calls = self.prefetches.value(now), self.clients.value(now)
        if done + 1 > self.max_share * calls:
            return (f"{done} prefetches over the last {self.window:g}s would pass max_share {self.max_share:g} "
                    f"of {calls} client calls")
        return ""

    def start(self, now: float) -> None:
        self.inflight += 1
        self.prefetches.add(now)

    def finish(self) -> None:
        self.inflight -= 1

    def snapshot(self, now: float) -> dict[str, float]:
        return {"inflight": self.inflight, "max_concurrent": self.max_concurrent, "max_share": self.max_share,
                "window_s": self.window, "client_calls_in_window": self.clients.value(now),
                "prefetches_in_window": self.prefetches.value(now)}
