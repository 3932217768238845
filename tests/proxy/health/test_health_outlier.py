"""Outlier detection: consecutive failures, error rate, ejection time, return, the share cap."""

from __future__ import annotations

from only1mcp.proxy.health import OutlierDetector
from only1mcp.traffic import OutlierSettings


def detector(replicas: int = 4, **overrides: float) -> OutlierDetector:
    values = {"consecutive_failures": 3, "error_rate": 0.5, "min_requests": 10, "window": 10.0,
              "ejection_time": 30.0, "max_ejection_time": 100.0, "max_ejected_share": 0.5}
    values.update(overrides)
    return OutlierDetector(OutlierSettings(**values), [f"s/{i}" for i in range(replicas)])  # type: ignore[arg-type]


def test_ejected_after_consecutive_failures() -> None:
    d = detector()
    assert not d.record("s/0", False, 0.0)
    assert not d.record("s/0", True, 0.1)  # a success breaks the run
    d.record("s/0", False, 0.2)
    d.record("s/0", False, 0.3)
    assert not d.is_ejected("s/0", 0.3)
    assert d.record("s/0", False, 0.4)
    assert d.is_ejected("s/0", 0.4) and d.ejected(0.4) == {"s/0"} and d.ejections == 1


def test_timeouts_count_as_failures() -> None:
    d = detector()
    for t in range(3):
        d.record("s/1", True, float(t), timeout=True)
    assert d.is_ejected("s/1", 3.0)


def test_error_rate_needs_min_requests() -> None:
    d = detector(consecutive_failures=100)
    for i in range(9):  # 5 failures in 9 calls: over the rate, under min_requests
        d.record("s/0", i % 2 == 1, i * 0.1)
    assert not d.is_ejected("s/0", 1.0)
    assert d.snapshot(1.0)["s/0"]["error_rate"] == 5 / 9
    d.record("s/0", False, 1.0)  # the tenth call: 6/10 ≥ 0.5
    assert d.is_ejected("s/0", 1.0)


def test_error_rate_below_threshold_is_not_ejected() -> None:
    d = detector(consecutive_failures=100)
    for i in range(30):
        d.record("s/0", i % 3 != 0, i * 0.1)  # a third of the calls fail
    assert not d.is_ejected("s/0", 3.0)


def test_error_rate_only_counts_the_window() -> None:
    d = detector(consecutive_failures=100)
    for i in range(8):
        d.record("s/0", False, i * 0.1)  # old failures, gone from the window by t=20
    for i in range(9):
        d.record("s/0", i % 2 == 0, 20.0 + i * 0.1)
    assert not d.is_ejected("s/0", 21.0)
    assert d.snapshot(21.0)["s/0"]["recent_calls"] == 9


def fail_until_ejected(d: OutlierDetector, rid: str, now: float) -> float:
    for _ in range(3):
        d.record(rid, False, now)
    assert d.is_ejected(rid, now)
    return d.snapshot(now)[rid]["ejected_until"] - now


def test_ejection_time_grows_and_is_capped() -> None:
    d = detector()
    durations, now = [], 0.0
    for _ in range(5):
        duration = fail_until_ejected(d, "s/0", now)
        durations.append(duration)
        now += duration  # fails again as soon as it returns
    assert durations == [30.0, 60.0, 90.0, 100.0, 100.0]
    assert d.snapshot(now)["s/0"]["times_ejected"] == 5


def test_multiplier_decays_while_the_replica_behaves() -> None:
    d = detector()
    assert fail_until_ejected(d, "s/0", 0.0) == 30.0
    assert fail_until_ejected(d, "s/0", 30.0) == 60.0  # back at 30, ejected at once again
    # back at 90; two ejection_time periods of good behaviour take the multiplier from 2 to 0
    assert d.snapshot(150.0)["s/0"]["multiplier"] == 0
    assert fail_until_ejected(d, "s/0", 150.0) == 30.0


def test_automatic_return_and_failures_while_ejected_do_not_extend() -> None:
    d = detector()
    fail_until_ejected(d, "s/0", 0.0)
    for t in range(1, 29):
        d.record("s/0", False, float(t))
    assert d.is_ejected("s/0", 29.9)
    assert not d.is_ejected("s/0", 30.0) and d.returns == 1
    snap = d.snapshot(30.0)["s/0"]
    assert snap["ejected_until"] is None and snap["consecutive_failures"] == 0


def test_max_ejected_share_caps_ejections() -> None:
    d = detector(replicas=4, max_ejected_share=0.5)
    for rid in ("s/0", "s/1", "s/2"):
        for _ in range(3):
            d.record(rid, False, 1.0)
    assert d.ejected(1.0) == {"s/0", "s/1"}
    assert d.skipped == 1 and d.snapshot(1.0)["s/2"]["held_back"]
    # once one returns, the held-back outlier is ejected at its next failure
    d.record("s/2", False, 31.0)
    assert d.ejected(31.0) == {"s/2"}


def test_share_cap_follows_the_replica_set() -> None:
    d = detector(replicas=1, max_ejected_share=0.5)
    for _ in range(3):
        d.record("s/0", False, 0.0)
    assert d.ejected(0.0) == set()  # half of one replica is none
    d.set_replicas(["s/0", "s/1"])
    d.record("s/0", False, 0.1)
    assert d.ejected(0.1) == {"s/0"}
    d.set_replicas(["s/1"])
    assert d.ejected(0.2) == set() and set(d.snapshot(0.2)) == {"s/1"}
