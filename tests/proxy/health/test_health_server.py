"""ServerHealth: candidates from breaker, checks and ejection, and the panic fallback."""

from __future__ import annotations

from dataclasses import dataclass

from only1mcp.proxy.health import ServerHealth
from only1mcp.traffic import BreakerSettings, HealthSettings, OutlierSettings


@dataclass(frozen=True)
class R:
    id: str


REPLICAS = [R("s/0"), R("s/1"), R("s/2"), R("s/3")]


def server() -> ServerHealth:
    return ServerHealth(HealthSettings(interval=5.0, unhealthy_threshold=1, healthy_threshold=1),
                        OutlierSettings(consecutive_failures=2, max_ejected_share=0.5, ejection_time=30.0),
                        BreakerSettings(failure_threshold=3, open_for=10.0, half_open_probes=1),
                        [r.id for r in REPLICAS])


def test_all_healthy_are_candidates() -> None:
    h = server()
    assert h.candidates(REPLICAS, 0.0) == REPLICAS and not h.panic


def test_each_kind_of_trouble_removes_a_replica() -> None:
    h = server()
    h.record_check("s/0", False, 0.0)  # active check fails
    for _ in range(2):
        h.record("s/1", False, 0.5, 0.0)  # ejected by the outlier detector
    h.replica("s/2").breaker.record(False, 0.0)
    for _ in range(2):
        h.replica("s/2").breaker.record(False, 0.0)  # breaker open
    assert h.candidates(REPLICAS, 1.0) == [R("s/3")] and not h.panic
    assert h.snapshot(1.0)["ejected"] == ["s/1"]


def test_panic_falls_back_to_replicas_whose_breaker_allows() -> None:
    h = server()
    for r in REPLICAS:
        h.record_check(r.id, False, 0.0)
    for _ in range(3):
        h.replica("s/0").breaker.record(False, 0.0)
    assert h.candidates(REPLICAS, 1.0) == REPLICAS[1:]
    assert h.panic and h.panics == 1
    h.record_check("s/3", True, 2.0)
    assert h.candidates(REPLICAS, 2.0) == [R("s/3")] and not h.panic


def test_panic_falls_back_to_all_when_every_breaker_is_open() -> None:
    h = server()
    for r in REPLICAS:
        for _ in range(3):
            h.record(r.id, False, 0.1, 0.0, timeout=True)
    assert h.candidates(REPLICAS, 1.0) == REPLICAS and h.panic
    assert not h.begin("s/0", 1.0)  # the breaker refuses, but a panic candidate may still be used


def test_begin_takes_the_half_open_probe() -> None:
    h = server()
    for _ in range(3):
        h.record("s/0", False, 0.1, 0.0)
    h.set_replicas([r.id for r in REPLICAS])  # unchanged set: state is kept
    assert R("s/0") not in h.candidates(REPLICAS, 5.0)
    assert R("s/0") in h.candidates(REPLICAS, 40.0)  # half-open, and back from ejection
    assert h.begin("s/0", 40.0)
    assert R("s/0") not in h.candidates(REPLICAS, 40.1)  # its only probe is taken
    h.record("s/0", True, 0.05, 40.2)
    assert R("s/0") in h.candidates(REPLICAS, 40.3)
    assert h.snapshot(40.3)["replicas"]["s/0"]["breaker"]["state"] == "closed"


def test_record_feeds_latency_and_due_checks() -> None:
    h = server()
    h.record("s/0", True, 1.0, 0.0)
    h.record("s/0", True, 2.0, 0.1)
    assert abs(h.replica("s/0").latency_ewma - 1.2) < 1e-9
    assert h.due_checks(0.0) == [r.id for r in REPLICAS]
    h.record_check("s/0", True, 0.0)
    assert "s/0" not in h.due_checks(1.0)
