"""The routing benchmark's scenarios: a fleet of replica profiles each, and the load to put on it.

Every scenario has four replicas on the default tool set (``model.DEFAULT_PROFILE``):

- ``slow-replica``: one replica ten times slower on every tool (a bad host);
- ``specialised``: each replica fast on two tools and five times slower on the
  rest (caches, data locality), so only tool-aware routing finds the fast one;
- ``homogeneous``: identical replicas, the control: no policy should lose much;
- ``faults`` (not run by default): a replica that crashes a third of the way
  in and is restarted by the harness, one whose latency ramps up to 6x, one that
  flaps, one healthy.

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

__all__ = ["DEFAULT_SCENARIOS", "SCENARIOS", "Scenario", "build_scenario"]

DEFAULT_SCENARIOS = ("slow-replica", "specialised", "homogeneous")
SCENARIOS = (*DEFAULT_SCENARIOS, "faults")
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
             faults: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    raw = copy.deepcopy(DEFAULT_PROFILE)
    raw["slowdown"] = slowdown
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
        tools = list(DEFAULT_PROFILE["tools"])
        replicas = tuple((r, _profile(tool_factor={t: 1.0 if t in _FAST_TOOLS[r] else 5.0 for t in tools}))
                         for r in ids)
        return Scenario(name, "4 replicas, each fast on 2 tools and 5x slower on the others", replicas)
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
