"""The routing benchmark's scenarios: a fleet of replica profiles each, and the load to put on it.

Every scenario has four replicas on the default tool set (``model.DEFAULT_PROFILE``):

- ``slow-replica``: one replica ten times slower on every tool (a bad host);
- ``specialised``: each replica fast on two tools and five times slower on the
  rest (caches, data locality), so only tool-aware routing finds the fast one;
- ``homogeneous``: identical replicas, the control: no policy should lose much;
- ``faults`` (not run by default): a replica that crashes a third of the way
  in and is restarted by the harness, one whose latency ramps up to 6x, one that
  flaps, one healthy;
- ``drift`` (run with ``--with-learned``): the ``specialised`` fleet, and at the
  flip (a third of the run, on a 5 s boundary) ``search`` becomes 5x slower on r0,
  one of its two fast replicas, while r1, slow on it until then, becomes fast on
  it (a ``latency_ramp`` limited to ``search`` with factor 5 on r0 and 0.2 on r1,
  ending half a second after it starts, held to the end): a learner must move
  ``search`` from r0 to r1;
- ``load-sensitive`` (run with ``--with-learned``): r0 has ONE worker and is the
  fastest when idle (0.3x the default service times), r1-r3 have two workers at the
  default speed; r0 holds about a third of the capacity, so a policy that sends it
  what its idle latency deserves, whatever its queue, herds onto it and queues,
  while one that knows how many calls are in flight on each replica spreads.

The oracle replays the same profiles (faults, ramps and single workers included),
so it knows the flip and the queue as it knows every fault.

The open-loop rate loads the fleet to ``utilisation`` of its capacity as a
tool-blind router would see it (sum over replicas of workers / mean service time
for the workload's tool mix): about 65 %, busy enough for queues to form.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from only1mcp.jobs.sim.model import DEFAULT_PROFILE, Profile, capacity

__all__ = ["DEFAULT_SCENARIOS", "DRIFT_TOOL", "LEARNED_SCENARIOS", "SCENARIOS", "Scenario", "build_scenario",
           "drift_flip"]

DEFAULT_SCENARIOS = ("slow-replica", "specialised", "homogeneous")
# What ``--with-learned`` runs by default: the classic three plus the two the learning loop is for.
LEARNED_SCENARIOS = (*DEFAULT_SCENARIOS, "drift", "load-sensitive")
SCENARIOS = (*DEFAULT_SCENARIOS, "faults", "drift", "load-sensitive")
DRIFT_TOOL = "search"  # the tool whose fast replica changes at the flip
_FAST_TOOLS = {  # specialised: every tool is fast somewhere, the busiest ones on two replicas
    "r0": ("search", "summarize"),
    "r1": ("get_document", "update_record"),
    "r2": ("search", "delete_record"),
    "r3": ("get_document", "summarize"),
}


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    replicas: tuple[tuple[str, dict[str, Any]], ...]  # (replica id, profile as JSON-able dict)
    flip_s: float | None = None  # drift: seconds into the run when the fast replica of DRIFT_TOOL changes

    def profiles(self) -> list[tuple[str, Profile]]:
        return [(rid, Profile.from_dict(raw)) for rid, raw in self.replicas]

    def capacity(self, mix: Mapping[str, float]) -> float:
        """Calls per second the fleet completes when every replica gets the same tool mix."""
        return sum(capacity(profile, mix) for _, profile in self.profiles())

    @property
    def needs_processes(self) -> bool:
        """True when some replica crashes: it needs a process of its own to lose."""
        return any(f.get("kind") == "crash" for _, raw in self.replicas for f in raw.get("faults", ()))


def _profile(slowdown: float = 1.0, tool_factor: Mapping[str, float] | None = None,
             faults: list[dict[str, Any]] | None = None, workers: int | None = None) -> dict[str, Any]:
    raw = copy.deepcopy(DEFAULT_PROFILE)
    raw["slowdown"] = slowdown
    if workers is not None:
        raw["workers"] = workers
    for tool, factor in (tool_factor or {}).items():
        raw["tools"][tool]["median_ms"] *= factor
    raw["faults"] = faults or []
    return raw


def build_scenario(name: str, duration: float) -> Scenario:
    """The scenario ``name``; fault times scale with the run's ``duration``."""
    ids = ("r0", "r1", "r2", "r3")
    if name == "homogeneous":
        return Scenario(name, "4 identical replicas (control)", tuple((r, _profile()) for r in ids))
    if name == "slow-replica":
        replicas = tuple((r, _profile(slowdown=10.0 if r == "r3" else 1.0)) for r in ids)
        return Scenario(name, "4 replicas, r3 10x slower on every tool", replicas)
    if name == "specialised":
        return Scenario(name, "4 replicas, each fast on 2 tools and 5x slower on the others", _specialised(ids))
    if name == "drift":
        flip = drift_flip(duration)
        # r0 is fast on search until the flip, then 5x slower; r1 is 5x slower on it until the flip, then fast.
        ramp = {"kind": "latency_ramp", "start": flip, "end": flip + 0.5, "tools": [DRIFT_TOOL]}
        changes = {"r0": {**ramp, "factor": 5.0}, "r1": {**ramp, "factor": 0.2}}
        replicas = tuple((r, {**raw, "faults": [changes[r]] if r in changes else []})
                         for r, raw in _specialised(ids))
        return Scenario(name, f"specialised, and at t={flip:g}s {DRIFT_TOOL} turns 5x slower on r0 and 5x faster "
                              f"on r1", replicas, flip_s=flip)
    if name == "load-sensitive":
        replicas = (("r0", _profile(slowdown=0.3, workers=1)),
                    *((r, _profile(workers=2)) for r in ids[1:]))
        return Scenario(name, "r0 fastest idle (0.3x) but ONE worker; r1-r3 default speed, 2 workers", replicas)
    if name == "faults":
        d = duration
        replicas = (
            ("r0", _profile()),
            # restart_after is what the oracle assumes the harness needs to bring it back.
            ("r1", _profile(faults=[{"kind": "crash", "at": d / 3, "restart_after": 1.5}])),
            ("r2", _profile(faults=[{"kind": "latency_ramp", "start": d / 5, "end": d / 2, "factor": 6.0}])),
            ("r3", _profile(faults=[{"kind": "flap", "start": d / 4, "end": 3 * d / 4, "up": 2.0, "down": 1.0}])),
        )
        return Scenario(name, "r1 crashes (restarted), r2 ramps to 6x, r3 flaps, r0 healthy", replicas)
    raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")


def drift_flip(duration: float) -> float:
    """When the drift scenario flips: a third of the way in, on a 5 s boundary (buckets align), >= 5 s."""
    return max(5.0, 5.0 * round(duration / 3 / 5.0))


def _specialised(ids: tuple[str, ...]) -> tuple[tuple[str, dict[str, Any]], ...]:
    tools = list(DEFAULT_PROFILE["tools"])
    return tuple((r, _profile(tool_factor={t: 1.0 if t in _FAST_TOOLS[r] else 5.0 for t in tools})) for r in ids)
