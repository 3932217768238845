"""How late the proxy's event loop runs: the one figure that tells a stall of the proxy from a slow upstream.

Every call in flight waits while the loop is busy with something else (a long synchronous step, a
garbage collection, the process descheduled by the machine), so a latency spike on every replica
at once is either the loop or the machine. :class:`LoopLag` sleeps ``interval_s`` again and again and
records how much later than asked it woke up. At each scrape (``/metrics``, prefix
``only1mcp_event_loop_``): ``lag_max_seconds``, the longest lateness in the last ``window_s``;
``lag_seconds_total``, all lateness summed (its rate is the share of time the loop ran late); and
``stalls_total``, wake-ups at least ``stall_s`` late. ``only1mcp bench soak`` reports the stalls per
window beside the p99.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["LoopLag"]


class LoopLag:
    def __init__(self, interval_s: float = 0.05, stall_s: float = 0.1, window_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s, self.stall_s, self.window_s, self.clock = interval_s, stall_s, window_s, clock
        self.stalls = 0
        self.lag_total_s = 0.0
        self._window_start = clock()
        self._max_now = 0.0  # the current window's longest lateness
        self._max_before = 0.0  # the previous window's: a scrape right after a window turns still sees it
        self._task: asyncio.Task[None] | None = None

    def observe(self, lag_s: float) -> None:
        """One wake-up ``lag_s`` seconds late (negative: the clock's rounding, counted as 0)."""
        lag_s = max(0.0, lag_s)
        now = self.clock()
        if now - self._window_start >= self.window_s:
            self._max_before = self._max_now if now - self._window_start < 2 * self.window_s else 0.0
            self._max_now, self._window_start = 0.0, now
        self.lag_total_s += lag_s
        if lag_s > self._max_now:
            self._max_now = lag_s
        if lag_s >= self.stall_s:
            self.stalls += 1

    def stats(self) -> dict[str, float]:
        return {"lag_max_seconds": max(self._max_now, self._max_before), "lag_seconds": self.lag_total_s,
                "stalls": self.stalls}

    async def run(self) -> None:
        interval, clock = self.interval_s, self.clock
        while True:
            asked = clock() + interval
            await asyncio.sleep(interval)
            self.observe(clock() - asked)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="only1mcp-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
