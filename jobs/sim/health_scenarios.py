"""The health benchmark's fleet and how its timelines are judged (pure: no processes, no I/O).

One fleet holds every scenario at once, as a server of three replicas each, so one run of the
load measures every scenario under the same conditions; ``r0`` of a server is the faulty one, its
two siblings are healthy. Times are seconds on the fleet's fault clock (0 = the load starts):

- ``latency-ramp``: r0's latency rises to 10x over the ramp, then it crashes (and stays down);
- ``error-ramp``: r0's errors rise to 80 % over the ramp, then it crashes;
- ``sudden-crash``: r0 crashes half-way through the ramp period, without warning;
- ``spike``: r0 is 8x slower for 8 s half-way through, then recovers (no crash);
- ``flapping``: r0 is down 3 s of every 11 s through the ramp period;
- ``healthy``: the control, nothing happens.

A *flag* is a detection: for the classic rows the moment the proxy took the replica out of routing
(``routable`` false in ``/admin/upstreams``); for the detector rows the first anomaly event of at
least the flag severity. An *action* is the moment the proxy took it out of routing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from only1mcp.events import SEVERITIES

__all__ = ["HealthScenario", "Timing", "build_fleet", "episodes", "judge_scenario", "FAULTY", "SCENARIO_NAMES"]

FAULTY = "r0"
SCENARIO_NAMES = ("latency-ramp", "error-ramp", "sudden-crash", "spike", "flapping", "healthy")
_FOREVER = 1e9


@dataclass(frozen=True)
class Timing:
    warmup_s: float  # healthy traffic before any fault (the detectors learn normal)
    ramp_s: float  # length of the ramps (60-180 s in the full run)
    tail_s: float  # after the crash, to count the calls that still fail

    @property
    def fault_start(self) -> float:
        return self.warmup_s

    @property
    def crash_at(self) -> float:
        return self.warmup_s + self.ramp_s

    @property
    def duration(self) -> float:
        return self.warmup_s + self.ramp_s + self.tail_s


@dataclass(frozen=True)
class HealthScenario:
    name: str
    description: str
    faults: tuple[dict[str, Any], ...]  # of the faulty replica r0
    fault_start: float | None  # when r0 starts to go wrong (None: never)
    crash_at: float | None  # when r0 crashes (None: never)

    @property
    def server(self) -> str:
        return self.name.replace("-", "_")

    def replica_ids(self) -> list[str]:
        return [f"{self.server}-r{i}" for i in range(3)]

    @property
    def crashes(self) -> bool:
        return self.crash_at is not None


def build_fleet(timing: Timing, names: Sequence[str] = SCENARIO_NAMES) -> list[HealthScenario]:
    w, r, crash = timing.warmup_s, timing.ramp_s, timing.crash_at
    mid = w + r / 2
    down = {"kind": "crash", "at": crash, "restart_after": _FOREVER}
    table = {
        "latency-ramp": HealthScenario(
            "latency-ramp", f"latency 1x→10x over {r:g}s, then a crash",
            ({"kind": "latency_ramp", "start": w, "end": crash, "factor": 10.0}, down), w, crash),
        "error-ramp": HealthScenario(
            "error-ramp", f"errors 0→80% over {r:g}s, then a crash",
            ({"kind": "error_ramp", "start": w, "end": crash, "rate": 0.8}, down), w, crash),
        "sudden-crash": HealthScenario(
            "sudden-crash", "a crash without warning", ({**down, "at": mid},), mid, mid),
        "spike": HealthScenario(
            "spike", "8x slower for 8 s, then recovers",
            ({"kind": "latency_ramp", "start": mid, "end": mid + 0.5, "until": mid + 8.0, "factor": 8.0},), mid, None),
        "flapping": HealthScenario(
            "flapping", "down 3 s of every 11 s",
            ({"kind": "flap", "start": w, "end": crash, "up": 8.0, "down": 3.0},), w, None),
        "healthy": HealthScenario("healthy", "the control: nothing happens", (), None, None),
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown health scenario(s) {', '.join(unknown)} (known: {', '.join(SCENARIO_NAMES)})")
    return [table[n] for n in names]


def episodes(samples: Iterable[tuple[float, bool]]) -> list[tuple[float, float | None]]:
    """(start, end) of each stretch where the flag is True, from (time, flag) samples in time order;
    end None while it still holds at the last sample."""
    out: list[tuple[float, float | None]] = []
    start: float | None = None
    for t, flagged in samples:
        if flagged and start is None:
            start = t
        elif not flagged and start is not None:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, None))
    return out


def severity_at_least(severity: str, floor: str) -> bool:
    return SEVERITIES.index(severity) >= SEVERITIES.index(floor)


def first_after(times: Iterable[float], since: float) -> float | None:
    later = [t for t in times if t >= since]
    return min(later) if later else None


def judge_scenario(scenario: HealthScenario, flags: Mapping[str, Sequence[float]],
                   actions: Mapping[str, Sequence[float]], calls: Sequence[Mapping[str, Any]],
                   exposure_s: float) -> dict[str, Any]:
    """One row's figures for one scenario. ``flags``/``actions``: replica id → start times of its flag
    (detection) and action (out of routing) episodes; ``calls``: the load generator's calls to this
    scenario's server (``start`` on the fault clock, ``ok``); ``exposure_s``: how long the healthy
    replicas were watched (for false alarms)."""
    faulty = f"{scenario.server}-{FAULTY}"
    healthy = [rid for rid in scenario.replica_ids() if rid != faulty]
    start = scenario.fault_start
    detected = first_after(flags.get(faulty, ()), start) if start is not None else None
    acted = first_after(actions.get(faulty, ()), start) if start is not None else None
    out: dict[str, Any] = {"fault_start_s": start, "crash_at_s": scenario.crash_at,
                           "detected_s": detected, "acted_s": acted}
    if scenario.crash_at is not None and detected is not None:
        out["lead_s"] = round(scenario.crash_at - detected, 3)  # > 0: before the crash
    if scenario.crash_at is not None and acted is not None:
        out["action_delay_s"] = round(acted - scenario.crash_at, 3)  # after the crash (< 0: before)
    if detected is not None and acted is not None:
        out["moved_s"] = round(max(0.0, acted - detected), 3)
    after = [c for c in calls if start is not None and c["start"] >= start]
    out["calls"] = len(calls)
    out["failed"] = sum(1 for c in calls if not c["ok"])
    out["failed_after_fault"] = sum(1 for c in after if not c["ok"])
    # False alarms: flags on the healthy siblings (and on r0 before its fault, or ever for the control).
    false_flags = sum(len(flags.get(rid, ())) for rid in healthy)
    watched = len(healthy) * exposure_s
    if start is None:
        false_flags += len(flags.get(faulty, ()))
        watched += exposure_s
    else:
        false_flags += sum(1 for t in flags.get(faulty, ()) if t < start)
    out["false_alarms"] = false_flags
    out["watched_replica_h"] = round(watched / 3600.0, 4)
    return out


def false_alarm_bound_per_day(false_alarms: int, replica_hours: float) -> float:
    """A one-sided 95 % upper bound on the false alarms per replica-day the run supports (Poisson;
    with none seen, the rule of three)."""
    if replica_hours <= 0:
        return math.inf
    upper = {0: 3.0, 1: 4.74, 2: 6.3, 3: 7.75}.get(false_alarms, false_alarms + 2.0 * math.sqrt(false_alarms) + 2.0)
    return upper / (replica_hours / 24.0)
