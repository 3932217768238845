"""The worker's prefetch agent replayed on call traces, in process: online (prequential) next-tool
accuracy per Markov order, decisions made, and the agent's CPU per event.

``python -m only1mcp.jobs.prefetch_replay [--orders 1 2 3] [--batch 50]`` replays the loadgen's sessions
(seeds 0, 1, 2, 4000 calls each) and the shipped agent traces (jobs/bench/traces/*.jsonl) through
``streams.prefetch.PrefetchAgent`` exactly as the worker feeds it (``--batch`` session events per
fetch), as if live (the agent's clock follows the trace: each fetch is decided as it ends), decisions
captured instead of published.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from only1mcp.events import keyed_hash

__all__ = ["replay", "main"]

TRACES = Path(__file__).resolve().parent / "bench" / "traces"


class _Captured:
    def __init__(self) -> None:
        self.count = 0

    def publish(self, records: Sequence[Any]) -> None:
        self.count += len(records)

    async def close(self) -> None:
        pass


def replay(rows: Sequence[dict[str, Any]], order: int, batch: int = 50) -> dict[str, Any]:
    """Rows (session, ts, tool, args; ts ascending) through a fresh agent; its figures."""
    from only1mcp.models.prefetch.markov import NextToolModel
    from only1mcp.settings import Settings
    from only1mcp.streaming import StoreSettings, WorkerPrefetchSettings, WorkerSettings
    from only1mcp.streams.prefetch import PrefetchAgent

    settings = Settings(worker=WorkerSettings(prefetch=WorkerPrefetchSettings(order=order)),
                        store=StoreSettings(data_dir="/nonexistent"))
    captured = _Captured()
    now = [0.0]
    agent = PrefetchAgent(settings, publisher=captured, model=NextToolModel(order=order), base_version="replay",
                          clock=lambda: now[0])
    events = [{"event_id": f"e{i}/session", "ts": r["ts"], "latency_ms": 1.0, "status": "ok",
               "session_id": r["session"], "tool": r["tool"], "method": "tools/call", "server": "s",
               "args_hash": keyed_hash(b"replay", r.get("args") or {})} for i, r in enumerate(rows)]
    pending: dict[str, set[str]] = {}  # session → tools of its open decisions
    right = 0
    cpu = 0.0
    for start in range(0, len(events), batch):
        fetch = events[start:start + batch]
        for event in fetch:  # was the session's next call one of the tools decided for it?
            right += event["tool"] in pending.pop(event["session_id"], ())
        now[0] = fetch[-1]["ts"] + 0.01
        began = time.process_time()
        decided = agent.observe([(0, fetch)])
        cpu += time.process_time() - began
        for d in decided:
            pending.setdefault(d.session_id, set()).add(d.tool)
    return {**agent.accuracy, "scored": agent.counters["scored"], "decisions": captured.count,
            "precision": right / captured.count if captured.count else None, "cpu_us": cpu / len(events) * 1e6}


def workloads() -> list[tuple[str, list[dict[str, Any]]]]:
    from only1mcp.jobs.sim.traces import loadgen_trace, read_trace

    out = [(f"loadgen seed {seed}", loadgen_trace(seed=seed, calls=4000)) for seed in (0, 1, 2)]
    for path in sorted(TRACES.glob("*.jsonl")):
        out.append((path.name, [{"session": c.session, "ts": c.ts, "tool": c.tool, "args": c.args}
                                for c in read_trace(path)]))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m only1mcp.jobs.prefetch_replay", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--batch", type=int, default=50, help="session events per fetch")
    args = parser.parse_args(argv)
    print("| workload | calls | " + " | ".join(f"order {o}: top-1 / top-3; decisions (next call's tool) / µs per event"
                                           for o in args.orders) + " |")
    print("|---|---|" + "---|" * len(args.orders))
    for name, rows in workloads():
        cells = []
        for order in args.orders:
            r = replay(rows, order, args.batch)
            precision = "-" if r["precision"] is None else f"{r['precision']:.1%}"
            cells.append(f"{r['top1']:.1%} / {r['top3']:.1%}; {r['decisions']} ({precision}) / {r['cpu_us']:.0f} µs")
        print(f"| {name} | {len(rows)} ({r['scored']} scored) | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
