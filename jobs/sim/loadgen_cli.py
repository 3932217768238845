"""``only1mcp loadgen``: drive an MCP endpoint with a seeded workload and record every call.

Open loop: ``--rate R`` Poisson arrivals per second spread over ``--sessions N``
MCP sessions. Closed loop: ``--concurrency C`` sessions calling back to back.
Each session is a Markov chain over tools with Zipf-distributed ``key`` arguments
(``--profile`` workload JSON, file or inline; see ``workload.py``). Per-call
results go to ``--out`` as JSONL; the summary is printed and written beside it
(``<out>.summary.json``). The same ``--seed`` gives the same arrivals and the same
tool/argument sequence per session. ``--start-at`` (open loop) pins the schedule's zero to a
wall-clock time, so consecutive runs can be started ahead and follow each other without a gap.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the MCP endpoint, e.g. http://127.0.0.1:8080/mcp")
    parser.add_argument("--seed", default="0", help="seed of arrivals, tools and keys (default 0)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop: calls per second (Poisson arrivals)")
    mode.add_argument("--concurrency", type=int, help="closed loop: sessions calling back to back")
    parser.add_argument("--sessions", type=int, default=16, help="open loop: MCP sessions (default 16)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds before a call counts as failed")
    parser.add_argument("--profile", default=None, help="workload: JSON file or inline JSON (default: built in)")
    parser.add_argument("--out", default="calls.jsonl", help="per-call JSONL (default %(default)s)")
    parser.add_argument("--summary", default=None, help="summary JSON (default: <out>.summary.json)")
    parser.add_argument("--start-at", type=float, default=None, metavar="UNIX_TIME",
                        help="open loop: open the sessions, then wait until this time to send the first call "
                             "(so a run can begin exactly where another ends)")
    parser.add_argument("--plan-only", action="store_true",
                        help="write the planned calls (open loop) without sending any, and exit")


def run(args: argparse.Namespace) -> int:
    from only1mcp.jobs.bench._procs import run_interruptibly
    from only1mcp.jobs.sim.loadgen import run_closed_loop, run_open_loop, summarize_calls, write_jsonl
    from only1mcp.jobs.sim.workload import Workload, open_loop_schedule

    seed = int(args.seed) if str(args.seed).lstrip("-").isdigit() else args.seed
    if args.duration <= 0 or args.timeout <= 0 or args.sessions < 1 or (args.rate is not None and args.rate <= 0) \
            or (args.concurrency is not None and args.concurrency < 1):
        print("error: --duration, --timeout, --rate must be > 0; --sessions, --concurrency >= 1", file=sys.stderr)
        return 2
    try:
        workload = Workload.load(args.profile)
    except (ValueError, OSError, TypeError) as exc:
        print(f"error: workload profile: {exc}", file=sys.stderr)
        return 2
    if args.rate is not None:
        schedule = open_loop_schedule(workload, seed, args.sessions, args.rate, args.duration)
        if args.plan_only:
            with open(args.out, "w") as fh:
                for call in schedule:
                    fh.write(json.dumps(call.__dict__) + "\n")
            print(f"{len(schedule)} planned calls: {args.out}")
            return 0
        coro = run_open_loop(args.url, schedule, args.sessions, args.timeout, start_at=args.start_at)
    else:
        coro = run_closed_loop(args.url, workload, seed, args.concurrency, args.duration, args.timeout)
    pauses = CollectorPauses()
    gc.collect()
    gc.freeze()  # the modules and the plan are there for good: full collections need not walk them
    gc.callbacks.append(pauses)
    try:
        records = run_interruptibly(coro, _uvloop())
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # e.g. the endpoint is not there: say so, without a traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    out = write_jsonl(args.out, records)
    summary = summarize_calls(records, args.timeout)
    summary.update(url=args.url, seed=args.seed, mode="open" if args.rate is not None else "closed",
                   rate=args.rate, concurrency=args.concurrency, duration_s=args.duration, start_at=args.start_at,
                   client_gc=pauses.summary())
    summary_path = Path(args.summary or f"{out}.summary.json")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    lat = summary["latency_ms"]
    print(f"calls {summary['count']}  ok {summary['ok']}  success {100 * (summary['success_rate'] or 0):.2f}%  "
          f"mean {lat['mean']} ms  p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}")
    print(f"by replica: {summary['by_replica']}")
    if summary["failures"]:
        print(f"failures: {summary['failures']}")
    print(f"calls: {out}\nsummary: {summary_path}")
    return 0


class CollectorPauses:
    """The load generator's own garbage-collector pauses (a ``gc.callbacks`` entry). Every call in flight
    waits them out, and the wait is counted as the endpoint's latency: the summary reports them, so a
    latency spike the client caused can be told from one the endpoint did."""

    def __init__(self) -> None:
        self._started = 0.0
        self.collections = [0, 0, 0]  # per generation
        self.total_ms = 0.0
        self.max_ms = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        paused = (time.perf_counter() - self._started) * 1000.0
        self.collections[info.get("generation", 0)] += 1
        self.total_ms += paused
        self.max_ms = max(self.max_ms, paused)

    def summary(self) -> dict[str, object]:
        return {"collections": list(self.collections), "total_ms": round(self.total_ms, 2),
                "max_pause_ms": round(self.max_ms, 2)}


def _uvloop():  # the load generator should spend as little CPU per call as it can
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadgen", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
