"""Generated agent-like sessions, written as call traces (``traces.py``), with their ground truth.

No installed package ships public multi-turn tool-calling data, so the cache benchmark's agent
traces are generated here. A *world* (``agent_devtools.py``, ``agent_support.py``) holds entities
with Zipf popularity whose state changes over time (a Poisson process per entity, plus the
sessions' own writes), answers tool calls from that state, and describes its agents: at each step
an agent picks its next call from weighted *steps* that depend on what it has seen — the id of a
search hit, the author of a comment, a path mentioned in a file — so ids flow from results into
later arguments, as they do with LLM agents. Sessions start as Poisson arrivals and think for a
lognormal time between calls; calls of all sessions interleave in time and run against one world,
so one session's write changes what another reads.

Each step records where each argument came from: ``result`` (a value of an earlier result of the
session), ``earlier_arg`` (an argument of an earlier call), ``constant`` (what the tool usually
gets) or ``fresh`` (new to the session: what the user typed). The ground truth written beside a
trace (``<name>.truth.json``) sums that up and adds what the generator alone knows: for each call
after a session's first, the true probability of the next tool and of the exact next call given the
agent's whole state, so the best possible next-tool top-1 / top-3 accuracy and the best possible
single guess are known.

``python -m only1mcp.jobs.sim.agents --shape devtools --seed 1 --calls 3000 --out FILE.jsonl``
regenerates a shipped trace (``jobs/bench/traces/``) byte for byte; ``--shape loadgen`` writes the
load generator's sessions as a trace.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import math
import random
import sys
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Step", "Versions", "World", "worlds", "generate", "write_generated", "main", "ranked"]

PROVENANCE = ("result", "earlier_arg", "constant", "fresh")


@dataclass
class Step:
    """One possible next action of an agent, with its weight among the step's alternatives."""

    tool: str | None  # None: the session ends
    args: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # argument name → one of PROVENANCE
    weight: float = 1.0
    note: dict[str, Any] = field(default_factory=dict)  # what the agent's state takes from it (world's business)


def ranked(items: Sequence[Any], weights: Sequence[float]) -> list[tuple[Any, float]]:
    """Items paired with rank weights, renormalised over the items there are."""
    pairs = list(zip(items, weights))
    total = sum(w for _, w in pairs)
    return [(item, w / total) for item, w in pairs] if total > 0 else []


class Versions:
    """Per entity: how many times it changed by time t (background Poisson changes plus writes)."""

    def __init__(self, seed: int | str, rate_of: Callable[[str], float], horizon: float = 1e6) -> None:
        self.seed, self.rate_of, self.horizon = seed, rate_of, horizon
        self._background: dict[str, list[float]] = {}
        self._writes: dict[str, list[float]] = {}

    def _times(self, entity: str) -> list[float]:
        times = self._background.get(entity)
        if times is None:
            rate, rng, t, times = self.rate_of(entity), random.Random(f"changes:{self.seed}:{entity}"), 0.0, []
            while rate > 0:
                t += rng.expovariate(rate)
                if t > self.horizon:
                    break
                times.append(t)
            self._background[entity] = times
        return times

    def version(self, entity: str, t: float) -> int:
        return bisect.bisect_right(self._times(entity), t) + bisect.bisect_right(self._writes.get(entity, []), t)

    def bump(self, entity: str, t: float) -> None:
        bisect.insort(self._writes.setdefault(entity, []), t)


class World(ABC):
    """Entities, their tools and their agents (see the module doc)."""

    name: str
    read_only: frozenset[str]
    session_gap_s: float  # mean time between session starts
    think_median_s: float  # an agent's pause between calls: lognormal
    think_sigma: float
    clients: int
    max_calls: int = 40  # a session's hard limit

    def __init__(self, seed: int | str) -> None:
        self.seed = seed

    @abstractmethod
    def steps(self, state: dict[str, Any], rng: random.Random) -> list[Step]:
        """The weighted alternatives of the agent's next action (no ``last`` in the state: the first
        call); ``rng`` is the session's own stream, for what the user types."""

    @abstractmethod
    def execute(self, tool: str, args: dict[str, Any], t: float) -> Any:
        """The call's result at time t (JSON data or text); a write changes the world."""

    @abstractmethod
    def remember(self, state: dict[str, Any], step: Step, data: Any) -> None:
        """Update the agent's state after ``step`` returned ``data``."""

    def describe(self) -> dict[str, Any]:
        """The world's documented parameters (written into the ground truth)."""
        return {}


def _draw(rng: random.Random, steps: Sequence[Step]) -> Step:
    return rng.choices(steps, weights=[s.weight for s in steps])[0]


def _truth_of(steps: Sequence[Step]) -> tuple[float, float, float]:
    """Given the session continues: (P of the likeliest tool, P of the 3 likeliest, P of the likeliest call)."""
    going = [s for s in steps if s.tool is not None]
    total = sum(s.weight for s in going)
    if total <= 0:
        return math.nan, math.nan, math.nan
    by_tool: Counter[str] = Counter()
    by_call: Counter[str] = Counter()
    for s in going:
        by_tool[s.tool] += s.weight / total
        by_call[json.dumps([s.tool, s.args], sort_keys=True)] += s.weight / total
    top = sorted(by_tool.values(), reverse=True)
    return top[0], sum(top[:3]), max(by_call.values())


def generate(world: World, calls: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``calls`` trace rows of interleaved sessions against ``world``, and their ground truth."""
    seed, name = world.seed, world.name
    arrivals = random.Random(f"arrivals:{name}:{seed}")
    pending: list[tuple[float, int]] = []  # (next call time, session index), a heap
    states: list[dict[str, Any]] = []
    rngs: list[random.Random] = []
    clients: list[str] = []
    client_weights = [1.0 / (k + 1) for k in range(world.clients)]

    next_start = arrivals.expovariate(1.0 / world.session_gap_s)
    rows: list[dict[str, Any]] = []
    truth_rows: list[tuple[float, float, float]] = []
    provenance: Counter[str] = Counter()
    predictable = safe = 0
    while len(rows) < calls:
        if not pending or next_start <= pending[0][0]:
            index = len(states)
            states.append({"calls": 0})
            rngs.append(random.Random(f"agent:{name}:{seed}:{index}"))
            clients.append(f"{name}-client-{arrivals.choices(range(world.clients), client_weights)[0]}")
            heapq.heappush(pending, (next_start, index))
            next_start += arrivals.expovariate(1.0 / world.session_gap_s)
            continue
        t, index = heapq.heappop(pending)
        state, rng = states[index], rngs[index]
        options = world.steps(state, rng)
        if state["calls"]:
            truth_rows.append(_truth_of(options))
        step = _draw(rng, options)
        if step.tool is None or state["calls"] >= world.max_calls:
            continue  # the session ends
        data = world.execute(step.tool, step.args, t)
        result = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        rows.append({"session": f"{name}-{seed}-s{index}", "ts": round(t, 3), "tool": step.tool, "args": step.args,
                     "result": result, "client": clients[index]})
        if step.tool in world.read_only:
            safe += 1
            provenance.update(step.sources.get(arg, "fresh") for arg in step.args)
            predictable += all(step.sources.get(arg) in ("result", "earlier_arg", "constant") for arg in step.args)
        state["calls"] += 1
        world.remember(state, step, data)
        heapq.heappush(pending, (t + rng.lognormvariate(math.log(world.think_median_s), world.think_sigma), index))
    sessions = len({r["session"] for r in rows})

    def mean(i: int) -> float:
        values = [row[i] for row in truth_rows if not math.isnan(row[i])]
        return round(sum(values) / len(values), 4) if values else math.nan

    truth = {
        "shape": name, "seed": seed, "calls": len(rows), "sessions": sessions,
        "span_s": round(rows[-1]["ts"] - rows[0]["ts"], 1) if rows else 0.0,
        "read_only_tools": sorted(world.read_only), "safe_calls": safe,
        "tool_counts": dict(Counter(r["tool"] for r in rows).most_common()),
        "argument_sources_of_safe_calls": {p: provenance.get(p, 0) for p in PROVENANCE},
        "safe_calls_with_every_argument_from_the_session_or_a_constant": round(predictable / safe, 4) if safe else None,
        "bayes_next_tool_top1": mean(0), "bayes_next_tool_top3": mean(1), "bayes_best_next_call": mean(2),
        "world": world.describe(),
    }
    return rows, truth


def worlds() -> dict[str, Callable[[int | str], World]]:
    """Shape name → world class (imported here: the worlds import this module)."""
    from only1mcp.jobs.sim.agent_devtools import DevToolsWorld
    from only1mcp.jobs.sim.agent_support import SupportWorld

    return {"devtools": DevToolsWorld, "support": SupportWorld}


def write_generated(shape: str, seed: int | str, calls: int, out: str | Path) -> tuple[Path, Path]:
    """Generate a trace and write it (JSONL) and its ground truth (``<stem>.truth.json``); shape
    ``loadgen`` writes the load generator's sessions (``traces.loadgen_trace``) instead."""
    from only1mcp.jobs.sim.traces import LOADGEN_READ_ONLY, loadgen_trace, write_trace

    if shape == "loadgen":
        rows = loadgen_trace(seed=seed, calls=calls)
        truth: dict[str, Any] = {"shape": "loadgen", "seed": seed, "calls": len(rows),
                                 "read_only_tools": sorted(LOADGEN_READ_ONLY)}
    else:
        rows, truth = generate(worlds()[shape](seed), calls)
    path = write_trace(out, rows)
    truth_path = path.with_suffix(".truth.json")
    truth_path.write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")
    return path, truth_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m only1mcp.jobs.sim.agents", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=[*sorted(worlds()), "loadgen"], required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--out", required=True, help="the trace (JSONL); the truth goes beside it")
    args = parser.parse_args(argv)
    path, truth_path = write_generated(args.shape, args.seed, args.calls, args.out)
    print(f"{path}\n{truth_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
