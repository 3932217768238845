"""The circuit breaker: closed → open → half-open → closed or open again, and the probe limit."""

from __future__ import annotations

from only1mcp.proxy.health import CircuitBreaker
from only1mcp.traffic import BreakerSettings


def breaker(threshold: int = 3, open_for: float = 10.0, probes: int = 1) -> CircuitBreaker:
    return CircuitBreaker(BreakerSettings(failure_threshold=threshold, open_for=open_for, half_open_probes=probes))


def test_full_cycle_closed_open_half_open_closed() -> None:
    b = breaker()
    assert b.state == "closed" and b.allow(0.0)
    b.record(False, 1.0)
    b.record(False, 2.0)
    assert b.state == "closed" and b.allow(2.0)
    b.record(False, 3.0)
    assert b.state == "open" and b.opened == 1
    assert not b.allow(3.0) and not b.allow(12.9)
    assert b.state == "open" and b.rejected == 2
    assert b.allow(13.0)  # open_for has passed: the first probe goes through
    assert b.state == "half_open" and b.half_opened == 1
    b.record(True, 13.5)
    assert b.state == "closed" and b.closed == 1 and b.allow(13.6)
    snap = b.snapshot()
    assert snap["state"] == "closed" and snap["opened"] == 1 and snap["closed"] == 1


def test_success_resets_the_consecutive_count() -> None:
    b = breaker()
    for ok in (False, False, True, False, False):
        b.record(ok, 0.0)
    assert b.state == "closed" and b.snapshot()["consecutive_failures"] == 2


def test_half_open_failure_reopens_with_a_fresh_open_time() -> None:
    b = breaker(threshold=1)
    b.record(False, 0.0)
    assert b.allow(10.0) and b.state == "half_open"
    b.record(False, 11.0)
    assert b.state == "open" and b.opened == 2
    assert not b.allow(20.0)  # would have half-opened had the open time not restarted at 11
    assert b.snapshot()["half_open_at"] == 21.0
    assert b.allow(21.0) and b.state == "half_open"


def test_half_open_lets_through_only_the_configured_probes() -> None:
    b = breaker(threshold=1, probes=2)
    b.record(False, 0.0)
    assert b.allow(10.0) and b.would_allow(10.0) and b.allow(10.0)
    assert not b.would_allow(10.1) and not b.allow(10.1)
    assert b.snapshot()["probes_in_flight"] == 2
    b.release(10.2)  # one probe cancelled: its slot is free again, the breaker stays half-open
    assert b.state == "half_open" and b.allow(10.3) and not b.allow(10.3)


def test_would_allow_does_not_reserve_a_probe() -> None:
    b = breaker(threshold=1)
    b.record(False, 0.0)
    for _ in range(5):
        assert b.would_allow(10.0)
    assert b.allow(10.0) and not b.allow(10.0)


def test_a_forgotten_probe_frees_its_slot_after_open_for() -> None:
    b = breaker(threshold=1, open_for=5.0)
    b.record(False, 0.0)
    assert b.allow(5.0) and not b.allow(9.9)
    assert b.allow(10.0)  # the first probe never reported: after open_for it no longer counts


def test_outcomes_arriving_while_open_are_ignored() -> None:
    b = breaker(threshold=1)
    b.record(False, 0.0)
    b.record(True, 1.0)  # a call that began before the breaker opened
    b.record(False, 5.0)
    assert b.state == "open" and b.opened == 1
    assert b.allow(10.0)
