"""proxy/looplag.py: a loop blocked for a quarter second is seen as a stall, its lateness as the
window's maximum, and the maximum forgets it two windows later."""

from __future__ import annotations

import asyncio
import time

from only1mcp.proxy.looplag import LoopLag


def test_a_blocked_loop_is_a_stall() -> None:
    async def main() -> dict[str, float]:
        lag = LoopLag(interval_s=0.01, stall_s=0.1)
        lag.start()
        await asyncio.sleep(0.05)
        time.sleep(0.25)  # what a synchronous step on the loop does to every call in flight
        await asyncio.sleep(0.05)
        await lag.stop()
        return lag.stats()

    stats = asyncio.run(main())
    assert stats["stalls"] == 1
    assert 0.2 <= stats["lag_max_seconds"] < 1.0
    assert stats["lag_seconds"] >= stats["lag_max_seconds"]


def test_an_idle_loop_has_no_stall() -> None:
    async def main() -> dict[str, float]:
        lag = LoopLag(interval_s=0.01, stall_s=0.1)
        lag.start()
        await asyncio.sleep(0.2)
        await lag.stop()
        await lag.stop()  # twice is fine (the app's shutdown after a failed start)
        return lag.stats()

    stats = asyncio.run(main())
    assert stats["stalls"] == 0 and stats["lag_max_seconds"] < 0.1


def test_the_maximum_covers_the_last_window_then_forgets() -> None:
    now = [0.0]
    lag = LoopLag(stall_s=0.1, window_s=10.0, clock=lambda: now[0])
    lag.observe(0.3)
    now[0] = 5.0
    lag.observe(0.001)
    assert lag.stats()["lag_max_seconds"] == 0.3
    now[0] = 12.0  # a new window: a scrape now still sees the previous one's stall
    lag.observe(0.002)
    assert lag.stats()["lag_max_seconds"] == 0.3
    now[0] = 23.0
    lag.observe(0.004)
    assert lag.stats()["lag_max_seconds"] == 0.004
    now[0] = 60.0  # a gap of several windows (the loop itself stalled): nothing older carries over
    lag.observe(-0.001)
    assert lag.stats() == {"lag_max_seconds": 0.0, "lag_seconds": 0.3 + 0.001 + 0.002 + 0.004, "stalls": 1}
