"""Active health: two thresholds, starts healthy, and when the next check is due."""

from __future__ import annotations

from only1mcp.proxy.health import ActiveHealth
from only1mcp.traffic import HealthSettings


def active(interval: float = 5.0) -> ActiveHealth:
    return ActiveHealth(HealthSettings(interval=interval, unhealthy_threshold=3, healthy_threshold=2))


def test_starts_healthy_and_turns_unhealthy_after_the_threshold() -> None:
    a = active()
    assert a.healthy
    a.record_check(False, 0.0)
    a.record_check(False, 5.0)
    assert a.healthy
    a.record_check(False, 10.0)
    assert not a.healthy and a.went_unhealthy == 1


def test_an_interrupted_run_does_not_count() -> None:
    a = active()
    for ok in (False, False, True, False, False):
        a.record_check(ok, 0.0)
    assert a.healthy


def test_healthy_again_after_the_healthy_threshold() -> None:
    a = active()
    for _ in range(3):
        a.record_check(False, 0.0)
    a.record_check(True, 1.0)
    assert not a.healthy
    a.record_check(False, 2.0)  # breaks the good run
    a.record_check(True, 3.0)
    assert not a.healthy
    a.record_check(True, 4.0)
    assert a.healthy and a.went_healthy == 1
    snap = a.snapshot()
    assert snap["healthy"] and snap["checks"] == 7 and snap["failed_checks"] == 4


def test_due_per_interval() -> None:
    a = active(interval=5.0)
    assert a.due(0.0)  # the first check at once
    a.record_check(True, 0.0)
    assert not a.due(4.9) and a.due(5.0)


def test_interval_zero_disables_checks() -> None:
    a = active(interval=0.0)
    assert not a.enabled and not a.due(0.0) and not a.due(1e9) and a.healthy
