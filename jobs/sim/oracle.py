"""The clairvoyant oracle: a discrete-event simulation of the fleet, no servers involved.

It replays the same open-loop schedule the load generator sends, against one
``model.ReplicaModel`` per replica (same profiles, same first-come-first-served
workers, same faults), and for each call, in arrival order, looks at what the
call would realise on every replica (queue wait + drawn service time, error or
not, reachable or not) and sends it where it finishes first without an error.
That is a lower bound no online policy can beat by more than luck: it knows
each call's service time before choosing.

``pick="round_robin"`` simulates plain round robin on the same draws, which shows
how far the real stack (proxy, HTTP, event loops) is from the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from only1mcp.jobs.sim.model import Profile, ReplicaModel, service_rng
from only1mcp.jobs.sim.workload import PlannedCall

__all__ = ["PICKS", "simulate"]

PICKS = ("oracle", "round_robin")


def simulate(
    schedule: Sequence[PlannedCall],
    replicas: Sequence[tuple[str, Profile]],
    seed: int | str,
    pick: str = "oracle",
    clock_offset: float = 0.0,
    overhead_ms: float = 0.0,
) -> list[dict[str, Any]]:
    """Per-call records (like ``loadgen.CallRecord`` as dicts) of the simulated run.

    ``clock_offset`` is how far the replicas' fault clocks are ahead of the
    schedule's zero; ``overhead_ms`` is added to every latency (a proxy hop).
    """
    if pick not in PICKS:
        raise ValueError(f"pick must be one of {PICKS}")
    models = [ReplicaModel(profile) for _, profile in replicas]
    # The oracle's own streams ("oracle:" prefix): the same distributions as the
    # servers', independent of their draws, fixed by the seed.
    streams = [service_rng(f"oracle:{seed}", replica_id) for replica_id, _ in replicas]
    records = []
    for call in schedule:
        t = call.t + clock_offset
        outcomes = []
        for model, rng in zip(models, streams):
            z, u = rng.gauss(0.0, 1.0), rng.random()  # drawn for every replica, chosen or not
            outcomes.append(model.outcome(call.tool, t, z, u))
        if pick == "oracle":
            # Successful calls first, then the earliest finish.
            chosen = min(range(len(models)), key=lambda i: (outcomes[i].error, outcomes[i].latency))
        else:
            up = [i for i in range(len(models)) if outcomes[i].available] or list(range(len(models)))
            chosen = up[call.index % len(up)]
        outcome = outcomes[chosen]
        models[chosen].commit(outcome)
        latency_ms = outcome.latency * 1000.0 + overhead_ms
        records.append({
            "index": call.index, "session": call.session, "seq": call.seq, "tool": call.tool, "key": call.key,
            "scheduled": call.t, "start": call.t,
            "latency_ms": latency_ms if math.isfinite(latency_ms) else 1e12,
            "ok": outcome.available and not outcome.error,
            "error": None if outcome.available and not outcome.error else
            ("unavailable" if not outcome.available else "tool error: simulated failure"),
            "replica": replicas[chosen][0], "read_only": models[chosen].profile.tools[call.tool].read_only,
        })
    return records
