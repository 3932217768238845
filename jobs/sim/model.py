"""The simulator's latency model: pure code, shared by the sim-server and the oracle.

A *profile* describes one replica: per tool a lognormal service time (median,
sigma), an error rate and whether it is read-only; a number of workers (calls
served at once, the rest wait first come first served); a ``slowdown`` factor on
every median; and faults scripted in seconds since the replica started:

- ``latency_ramp``: service times multiplied by a factor rising linearly from 1 at
  ``start`` to ``factor`` at ``end``, held until ``until`` (default: for ever);
- ``error_ramp``: an extra error probability rising from 0 to ``rate`` the same way;
- ``stall``: a call that would start service in [``start``, ``end``) holds its
  worker and waits until ``end`` first;
- ``crash``: the process exits at ``at`` (``restart_after`` tells the oracle how
  long a supervisor takes to bring it back; default never);
- ``flap``: from ``start`` to ``end``, alternately ``down`` seconds unreachable and
  ``up`` seconds serving.

``latency_ramp``, ``error_ramp`` and ``stall`` take an optional ``tools`` list.
Everything here is a function of (profile, tool, time, queue state, random draws),
so a seeded stream of draws gives the same answers every time.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from statistics import NormalDist
from typing import Any

__all__ = [
    "DEFAULT_PROFILE", "FAULT_KINDS", "Fault", "LogNormal", "Outcome", "Profile", "Queue", "ReplicaModel",
    "ToolModel", "capacity", "predict", "service_rng",
]

FAULT_KINDS = ("latency_ramp", "error_ramp", "stall", "crash", "flap")
INF = math.inf

DEFAULT_PROFILE: dict[str, Any] = {
    "workers": 2,
    "slowdown": 1.0,
    "tools": {
        "search": {"median_ms": 30.0, "sigma": 0.5, "read_only": True},
        "get_document": {"median_ms": 15.0, "sigma": 0.4, "read_only": True},
        "summarize": {"median_ms": 60.0, "sigma": 0.6, "read_only": True},
        "update_record": {"median_ms": 40.0, "sigma": 0.5, "read_only": False},
        "delete_record": {"median_ms": 25.0, "sigma": 0.5, "read_only": False, "error_rate": 0.01},
    },
    "faults": [],
}


@dataclass(frozen=True)
class LogNormal:
    """``shift + X`` with ln X ~ Normal(ln median, sigma); all in seconds."""

    median: float
    sigma: float
    shift: float = 0.0

    @property
    def mean(self) -> float:
        return self.shift + self.median * math.exp(self.sigma**2 / 2)

    def quantile(self, q: float) -> float:
        if self.sigma == 0:
            return self.shift + self.median
        return self.shift + self.median * math.exp(self.sigma * NormalDist().inv_cdf(q))

    def at(self, z: float) -> float:
        """The value at standard-normal draw ``z`` (so callers control the random stream)."""
        return self.shift + self.median * math.exp(self.sigma * z)

    def sample(self, rng: random.Random) -> float:
        return self.at(rng.gauss(0.0, 1.0))


@dataclass(frozen=True)
class ToolModel:
    median_ms: float = 20.0
    sigma: float = 0.5
    error_rate: float = 0.0
    read_only: bool = True

    @property
    def mean_s(self) -> float:
        return self.median_ms / 1000.0 * math.exp(self.sigma**2 / 2)


@dataclass(frozen=True)
class Fault:
    kind: str
    start: float = 0.0
    end: float = INF
    until: float = INF
    factor: float = 1.0
    rate: float = 0.0
    up: float = 1.0
    down: float = 1.0
    restart_after: float = INF
    tools: tuple[str, ...] | None = None

    def applies(self, tool: str) -> bool:
        return self.tools is None or tool in self.tools

    def ramp(self, t: float) -> float:
        """0 before ``start``, rising linearly to 1 at ``end``, 1 until ``until``, then 0 again."""
        if t < self.start or t >= self.until:
            return 0.0
        if self.end <= self.start or t >= self.end:
            return 1.0
        return (t - self.start) / (self.end - self.start)


@dataclass(frozen=True)
class Profile:
    tools: Mapping[str, ToolModel] = field(default_factory=dict)
    workers: int = 2
    slowdown: float = 1.0
    faults: tuple[Fault, ...] = ()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Profile:
        _check_keys(raw, {"tools", "workers", "slowdown", "faults"}, "profile")
        tools: dict[str, ToolModel] = {}
        for name, spec in dict(raw.get("tools", DEFAULT_PROFILE["tools"])).items():
            _check_keys(spec, {f.name for f in fields(ToolModel)}, f"tools.{name}")
            tools[name] = ToolModel(**spec)
        faults = []
        for i, spec in enumerate(raw.get("faults", ())):
            spec = dict(spec)
            if "at" in spec:  # a crash reads better with "at"
                spec["start"] = spec.pop("at")
            _check_keys(spec, {f.name for f in fields(Fault)}, f"faults[{i}]")
            if spec.get("kind") not in FAULT_KINDS:
                raise ValueError(f"faults[{i}].kind: expected one of {', '.join(FAULT_KINDS)}")
            if spec.get("tools") is not None:
                spec["tools"] = tuple(spec["tools"])
            faults.append(Fault(**{k: (INF if v is None else v) if k != "tools" else v for k, v in spec.items()}))
        workers = int(raw.get("workers", DEFAULT_PROFILE["workers"]))
        if workers < 1 or not tools:
            raise ValueError("profile needs workers >= 1 and at least one tool")
        return cls(tools=tools, workers=workers, slowdown=float(raw.get("slowdown", 1.0)), faults=tuple(faults))

    @classmethod
    def load(cls, file_or_json: str | None) -> Profile:
        """A profile from a JSON file, an inline JSON object, or the default when None/empty."""
        if not file_or_json:
            return cls.from_dict(DEFAULT_PROFILE)
        text = file_or_json if file_or_json.lstrip().startswith("{") else Path(file_or_json).read_text()
        return cls.from_dict(json.loads(text))

    def _of(self, kind: str) -> list[Fault]:
        return [f for f in self.faults if f.kind == kind]

    def latency_multiplier(self, tool: str, t: float) -> float:
        m = 1.0
        for f in self._of("latency_ramp"):
            if f.applies(tool):
                m *= 1.0 + (f.factor - 1.0) * f.ramp(t)
        return m

    def error_probability(self, tool: str, t: float) -> float:
        ok = 1.0 - self.tools[tool].error_rate
        for f in self._of("error_ramp"):
            if f.applies(tool):
                ok *= 1.0 - f.rate * f.ramp(t)
        return 1.0 - ok

    def stall_end(self, tool: str, t: float) -> float:
        """When a call that would start service at ``t`` may really start (``t`` if no stall)."""
        moved = True
        while moved:  # back-to-back stalls chain
            moved = False
            for f in self._of("stall"):
                if f.applies(tool) and f.start <= t < f.end:
                    t, moved = f.end, True
        return t

    @property
    def crash_at(self) -> float | None:
        crashes = self._of("crash")
        return min(f.start for f in crashes) if crashes else None

    def is_down(self, t: float) -> bool:
        """Unreachable at ``t``: crashed and not yet restarted, or in a flap's down period."""
        for f in self._of("crash"):
            if f.start <= t < f.start + f.restart_after:
                return True
        for f in self._of("flap"):
            if f.start <= t < f.end and (t - f.start) % (f.up + f.down) < f.down:
                return True
        return False

    def service(self, tool: str, t: float) -> LogNormal:
        """Service time of ``tool`` starting at ``t``, without queueing."""
        spec = self.tools[tool]
        median = spec.median_ms / 1000.0 * self.slowdown * self.latency_multiplier(tool, t)
        return LogNormal(median, spec.sigma)


class Queue:
    """First come first served over ``workers`` workers: when each worker is next free."""

    def __init__(self, workers: int) -> None:
        self.free_at = [0.0] * workers  # a min-heap

    def start_time(self, t: float) -> float:
        return max(t, self.free_at[0])

    def admit(self, start: float, service: float) -> None:
        heapq.heapreplace(self.free_at, start + service)

    def busy(self, t: float) -> int:
        return sum(1 for x in self.free_at if x > t)


def predict(profile: Profile, tool: str, t: float, queue: Queue) -> LogNormal:
    """Response time (wait + service) of a call of ``tool`` arriving at ``t`` behind ``queue``."""
    start = profile.stall_end(tool, queue.start_time(t))
    service = profile.service(tool, start)
    return LogNormal(service.median, service.sigma, shift=start - t)


@dataclass(frozen=True)
class Outcome:
    arrival: float
    start: float
    service: float
    error: bool
    available: bool = True

    @property
    def latency(self) -> float:
        return self.start - self.arrival + self.service if self.available else INF


class ReplicaModel:
    """A profile plus its queue: what a call would realise here, and committing it."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.queue = Queue(profile.workers)

    def outcome(self, tool: str, t: float, z: float, u: float) -> Outcome:
        """The call's realisation for standard-normal draw ``z`` and uniform draw ``u``."""
        if self.profile.is_down(t):
            return Outcome(t, t, 0.0, True, available=False)
        start = self.profile.stall_end(tool, self.queue.start_time(t))
        service = self.profile.service(tool, start).at(z)
        return Outcome(t, start, service, u < self.profile.error_probability(tool, start))

    def commit(self, outcome: Outcome) -> None:
        if outcome.available:
            self.queue.admit(outcome.start, outcome.service)


def service_rng(seed: int | str, replica_id: str) -> random.Random:
    """The draw stream of one replica (str seeds hash stably across runs and machines)."""
    return random.Random(f"sim:{seed}:{replica_id}")


def capacity(profile: Profile, mix: Mapping[str, float]) -> float:
    """Calls per second the replica completes at 100 % busy, for a tool mix (weights)."""
    total = sum(mix.values())
    # At t = -inf no scripted fault has begun: capacity is the healthy replica's.
    mean_s = sum(w * profile.service(tool, -INF).mean for tool, w in mix.items()) / total
    return profile.workers / mean_s


def _check_keys(raw: Any, known: set[str], where: str) -> None:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected an object")
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
