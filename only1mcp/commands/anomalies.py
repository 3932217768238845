"""``only1mcp anomalies``: the anomalies the worker publishes on ``mcp.anomalies``.

- ``anomalies tail [--severity S] [--server X] [--replica R] [--json] [--from-beginning]``: every
  partition, no consumer group (it commits nothing and disturbs nobody), from the end unless
  ``--from-beginning``; one line per event, or the record's JSON with ``--json``. Ctrl-C ends it
  (exit 0); a broker that does not answer within ``--connect-timeout`` is an error (exit 1).
- ``anomalies score FILE.csv --time-col T --value-col V [--value-col V2 …] --out OUT.csv``: score any
  metric series offline, each row from the rows before it only (``only1mcp.commands.anomaly_score``).

``tail`` without ``--config`` and ``--bootstrap`` reads the broker of the last ``only1mcp up`` in
this folder (commands/_config.py); one stderr line says which configuration and broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

__all__ = ["add_arguments", "run", "format_event", "matches"]

_STATE_WIDTH = 6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from only1mcp.commands.anomaly_score import add_score_arguments

    sub = parser.add_subparsers(dest="anomalies_action", metavar="ACTION")
    tail = sub.add_parser("tail", help="print anomaly events as they are published",
                          description="print anomaly events from mcp.anomalies as they are published")
    tail.add_argument("--severity", choices=("low", "medium", "high", "critical"), default="low",
                      help="only events of this severity or higher (default: all)")
    tail.add_argument("--server", metavar="X", help="only this server's replicas")
    tail.add_argument("--replica", metavar="R", help="only this replica (its id, e.g. sim/1)")
    tail.add_argument("--json", action="store_true", help="print each event's JSON record as published")
    tail.add_argument("--from-beginning", action="store_true", help="start from the oldest record kept")
    tail.add_argument("--limit", type=int, default=0, metavar="N", help="exit after N events (default: never)")
    tail.add_argument("--bootstrap", metavar="HOST:PORT",
                      help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP, else [worker] bootstrap)")
    tail.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                      help="seconds to wait for the broker before giving up (default 10)")
    tail.add_argument("--config", metavar="FILE",
                      help="TOML configuration file (default: the last `only1mcp up` here, else built-in defaults)")
    score = sub.add_parser("score", help="score a metric series in a CSV file (causal: each row from earlier rows)",
                           description="score a metric series in a CSV file; each row only from earlier rows")
    add_score_arguments(score)


def matches(event: Any, severity: str, server: str | None, replica: str | None) -> bool:
    from only1mcp.events import SEVERITIES

    rank = SEVERITIES.index
    return (rank(event.severity) >= rank(severity) and (server is None or event.server == server)
            and (replica is None or event.replica == replica))


def format_event(event: Any) -> str:
    """One readable line: time, state, severity, where, score, confidence, kind, explanation, TTF."""
    when = datetime.fromtimestamp(event.ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    where = event.replica if event.replica.startswith(f"{event.server}/") else f"{event.server}/{event.replica}"
    if event.tool:
        where += f" × {event.tool}"
    parts = [when, event.state.upper().ljust(_STATE_WIDTH), event.severity.ljust(8), where,
             f"score={event.score:.2f}", f"conf={event.confidence:.2f}", event.kind or "-", event.explanation]
    if event.time_to_failure_s is not None:
        parts.append(f"TTF={event.time_to_failure_s:.0f}s")
    parts.append(f"id={event.anomaly_id[:8]}")
    return "  ".join(parts)


def run(args: argparse.Namespace) -> int:
    if args.anomalies_action == "score":
        from only1mcp.commands.anomaly_score import run_score

        return run_score(args)
    if args.anomalies_action != "tail":
        print("usage: only1mcp anomalies {tail,score} … (--help for each)", file=sys.stderr)
        return 2
    import logging

    from only1mcp.commands._config import announce, resolve_config

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its connection errors: one clear line instead
    found = resolve_config(args)  # the last `up` here knows its embedded broker's port
    settings = found.settings
    bootstrap = args.bootstrap or settings.worker.bootstrap
    why = " (--bootstrap)" if args.bootstrap else " (KAFKA_BOOTSTRAP)" if args.environ.get("KAFKA_BOOTSTRAP") else ""
    announce("anomalies tail", found.describe(), f"broker {bootstrap}{why}, topic {settings.anomaly.topic}")
    try:
        return asyncio.run(_tail(args, bootstrap, settings.anomaly.topic, sys.stdout))
    except KeyboardInterrupt:
        return 0


async def _tail(args: argparse.Namespace, bootstrap: str, topic: str, out: TextIO) -> int:
    from aiokafka import AIOKafkaConsumer

    from only1mcp.events import AnomalyEvent, EventDecodeError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    consumer = await _connect(lambda: AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest" if args.from_beginning else "latest", request_timeout_ms=5000,
        client_id="only1mcp-anomalies-tail"), args.connect_timeout, stop)
    if consumer is None:
        if stop.is_set():
            return 0
        print(f"only1mcp anomalies tail: Kafka at {bootstrap} did not answer within {args.connect_timeout:g} s",
              file=sys.stderr)
        return 1
    printed = 0
    try:
        while not stop.is_set():
            fetch = asyncio.ensure_future(consumer.getmany(timeout_ms=500))
            stopped = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if fetch not in done:
                fetch.cancel()
                break
            for batch in fetch.result().values():
                for message in batch:
                    try:
                        event = AnomalyEvent.from_json(message.value)
                    except (EventDecodeError, TypeError) as exc:
                        print(f"only1mcp anomalies tail: skipping a record at partition {message.partition} offset "
                              f"{message.offset}: {exc}", file=sys.stderr, flush=True)
                        continue
                    if not matches(event, args.severity, args.server, args.replica):
                        continue
                    print(message.value.decode() if args.json else format_event(event), file=out, flush=True)
                    printed += 1
                    if args.limit and printed >= args.limit:
                        return 0
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 5.0)
    return 0


async def _connect(make: Any, timeout_s: float, stop: asyncio.Event) -> Any:
    """A started consumer, retrying until ``timeout_s``; None when the broker never answered (or stop)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not stop.is_set():
        consumer = make()
        try:
            remaining = deadline - asyncio.get_running_loop().time()
            await asyncio.wait_for(consumer.start(), max(0.1, remaining))
            return consumer
        except Exception:
            with contextlib.suppress(Exception):
                await consumer.stop()
        if asyncio.get_running_loop().time() >= deadline:
            return None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    return None
