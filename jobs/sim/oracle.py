"""The clairvoyant oracle: a discrete-event simulation of the fleet, no servers involved.

It replays the same open-loop schedule the load generator sends, against one
``model.ReplicaModel`` per replica (same profiles, same first-come-first-served
workers, same faults), and for each call, in arrival order, looks at what the
call would realise on every replica (queue wait + drawn service time, error or
not, reachable or not) and sends it where it finishes first without an error.
That is a lower bound no online policy can beat by more than luck: it knows
each call's service time before choosing.

``pick="informed"`` routes as a perfect latency model would, without that
foresight: it knows every profile (and every scripted fault the moment it
starts) and every queue, but not the call's own draws, and sends each call where
its median response time (wait + median service, over the chance of success) is
lowest: the learned policy's rule (curves from the P50 model), with nothing to
learn. (The mean instead of the median gives the same choices where replicas
differ only in speed, and a worse tail where they differ in workers.) The gap
from it to the clairvoyant oracle is foresight no online policy has; the gap
from a learned policy to it is what learning can still win.

``pick="round_robin"`` simulates plain round robin on the same draws, which shows
how far the real stack (proxy, HTTP, event loops) is from the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from only1mcp.jobs.sim.model import Profile, ReplicaModel, predict, service_rng
from only1mcp.jobs.sim.workload import PlannedCall

__all__ = ["PICKS", "simulate"]

PICKS = ("oracle", "informed", "round_robin")


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
        elif pick == "informed":
            chosen = min(range(len(models)), key=lambda i: _median_cost(models[i], call.tool, t))
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


def _median_cost(model: ReplicaModel, tool: str, t: float) -> float:
    """Median seconds until a successful answer: median response behind the queue, over P(success)."""
    profile = model.profile
    if profile.is_down(t):
        return math.inf
    ok = 1.0 - profile.error_probability(tool, t)
    return predict(profile, tool, t, model.queue).quantile(0.5) / ok if ok > 0 else math.inf
