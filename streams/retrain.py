"""Retraining the latency model for the routing agent, in a subprocess of its own (niced), so the
worker's loop never waits for XGBoost: ``python -m only1mcp.streams.retrain DATA_DIR REGISTRY_DIR
MIN_CALLS`` prints one JSON line, the training job's answer; :class:`Retrainer` decides when, in the
worker, and reads that answer."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Retrainer", "retrain_recent", "TRAIN_WINDOW_S"]

log = logging.getLogger(__name__)

TRAIN_WINDOW_S = 3600.0  # retraining learns from the last hour of calls (recent behaviour, bounded cost)


def retrain_recent(data_dir: str, registry_dir: str, min_calls: int) -> dict[str, Any]:
    """Train on the last hour's calls once the store holds ``min_calls`` of them: a JSON-able answer
    (the training job's report, or ``skipped`` with the count)."""
    try:
        os.nice(10)  # the worker on the same cores comes first
    except OSError:
        pass
    from only1mcp.feature_store.offline.duckdb import query

    since = time.time() - TRAIN_WINDOW_S
    try:  # a count first: cheaper than loading the rows to learn there are too few
        rows = int(query(data_dir, "SELECT count(*) FROM requests WHERE method = 'tools/call' "
                                   "AND NOT coalesce(cache_hit, false) AND replica IS NOT NULL AND ts >= ?",
                         [since])[1][0][0])
    except Exception:  # no data yet: the views do not exist
        rows = 0
    if rows < min_calls:
        return {"skipped": True, "rows": rows}
    from only1mcp.jobs.train_latency import train_latency
    from only1mcp.models.errors import InsufficientData

    try:
        result = train_latency(data_dir, registry_dir, since=since, min_rows=min_calls)
    except InsufficientData as exc:
        return {"skipped": True, "rows": rows, "reason": str(exc)}
    return result if isinstance(result, dict) else {"result": repr(result)}


class Retrainer:
    """When the routing agent retrains: every ``retrain_interval``; while the store had too few calls at
    the last try, as soon as that many more calls came by (and not before). Runs this module as a
    subprocess, counts the outcome in ``counters`` (``retrains``, ``promotions``, ``retrain_failures``)
    and calls ``on_trained`` after a training (the agent reloads the live model)."""

    def __init__(self, data_dir: str | Path, registry_dir: str | Path, first_in_s: float,
                 counters: dict[str, Any], on_trained: Callable[[], None]) -> None:
        self.data_dir, self.registry_dir = str(data_dir), str(registry_dir)
        self.counters, self.on_trained = counters, on_trained
        self.task: asyncio.Task[Any] | None = None
        self.next_at = time.monotonic() + first_in_s
        self.store_short: int | None = None  # calls the offline store lacked at the last try
        self._calls_at_check = 0  # calls seen then

    def maybe_start(self, interval: float, min_calls: int, calls: int) -> None:
        """Start a retraining if one is due (``calls``: the agent's count of calls seen so far)."""
        if interval <= 0 or (self.task is not None and not self.task.done()):
            return
        now = time.monotonic()
        if now < self.next_at:
            return
        if self.store_short is not None and calls - self._calls_at_check < self.store_short:
            return
        self.next_at = now + interval
        self.task = asyncio.ensure_future(self._run(interval, min_calls, calls))

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _run(self, interval: float, min_calls: int, calls: int) -> None:
        argv = [sys.executable, "-m", "only1mcp.streams.retrain", self.data_dir, self.registry_dir, str(min_calls)]
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counters["retrain_failures"] += 1
            log.warning("routing: could not start retraining: %r", exc)
            return
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            result = json.loads(lines[-1]) if lines else {}
        except ValueError:
            result = {}
        if proc.returncode != 0 or "error" in result:
            self.counters["retrain_failures"] += 1
            tail = "\n".join(err.decode(errors="replace").strip().splitlines()[-5:])
            log.warning("routing: retraining failed (exit %s): %s %s", proc.returncode, result.get("error", ""), tail)
            return
        if result.get("skipped"):
            short = min_calls - int(result.get("rows", 0))
            if short <= 0:  # enough calls, yet the training job found too few in some part: next interval
                log.info("routing: retraining skipped: %s", result.get("reason", "too few calls"))
                return
            self._calls_at_check, self.store_short = calls, short
            # again as soon as that many more calls came by (and not within 10 s: each try starts a process)
            self.next_at = time.monotonic() + min(10.0, interval)
            log.info("routing: %s calls in the offline store, %d needed before training", result.get("rows"),
                     min_calls)
            return
        self.store_short = None
        self.counters["retrains"] += 1
        if result.get("promoted"):
            self.counters["promotions"] += 1
        log.info("routing: retrained: %s", {k: v for k, v in result.items() if not isinstance(v, (dict, list))})
        self.on_trained()


if __name__ == "__main__":  # python -m only1mcp.streams.retrain DATA_DIR REGISTRY_DIR MIN_CALLS
    logging.basicConfig(level=logging.WARNING)
    if len(sys.argv) != 4:
        print("usage: python -m only1mcp.streams.retrain DATA_DIR REGISTRY_DIR MIN_CALLS", file=sys.stderr)
        sys.exit(2)
    try:
        answer = retrain_recent(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    except Exception as exc:  # the gate refusing is a normal answer of train_latency, not this
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer, default=str))
