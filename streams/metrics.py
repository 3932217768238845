"""The worker's Prometheus ``/metrics``: its consumer's lag per partition, from its own consumer.

Off unless ``[worker] metrics_port`` is set (``metrics_host``, default 127.0.0.1, is where it
listens; ``0.0.0.0`` in a container). A small asyncio HTTP server in the worker's own event loop
answers ``GET /metrics`` (and ``/``) with the Prometheus text format; anything else is a 404. A
scrape never talks to the broker: every figure is what the worker's consumer already knows.

Per ``topic`` and ``partition`` the worker holds now:

- ``only1mcp_worker_highwater_offset``: the log end offset from the last fetch answer (a fetch
  answer carries the real high watermark, also on the embedded broker, whose ListOffsets does not);
- ``only1mcp_worker_committed_offset``: the group's committed offset as this worker knows it (read
  at assignment, then each commit); absent while the group has committed nothing there;
- ``only1mcp_worker_lag_records``: highwater − committed, what ``only1mcp worker status`` shows. The
  worker commits an event only once every window holding it has closed (the longest window plus
  ``grace``), so a healthy worker carries that much traffic here; without a committed offset it is
  the whole log from offset 0;
- ``only1mcp_worker_unread_records``: highwater − the next offset to read: how far the reading is
  behind (0 when caught up; it may be one short right after an assignment, until a record is read);
- ``only1mcp_worker_fetch_age_seconds``: how old the last fetch answer is. While the broker is
  unreachable the highwater (so both lags) stays as it was; this grows.

And ``only1mcp_worker_events_total``: records the worker's streams and batch handlers received.

The prefetch agent's figures (streams/prefetch.py), when it runs: ``only1mcp_worker_prefetch_calls_total``
(calls learned), ``only1mcp_worker_prefetch_decisions_total{outcome}`` (``made``; ``sent``, ``expired``
before their turn, ``lost`` to a full buffer or a refused batch), ``only1mcp_worker_prefetch_sessions``
(tracked now) and ``only1mcp_worker_prefetch_accuracy{k}`` (online, prequential: the share of calls that
were the top-1 / among the top-3 predicted after the session's previous call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["WorkerMetrics", "install_metrics", "partition_figures"]

log = logging.getLogger(__name__)

_LABELS = ("topic", "partition")
_REQUEST_TIMEOUT_S = 5.0
_MAX_REQUEST_BYTES = 8192  # of the request line looked at


def _offset(value: Any) -> int | None:
    return int(value) if value is not None and value >= 0 else None


def partition_figures(app: Any) -> list[dict[str, Any]]:
    """One dict per partition the worker's consumer holds: topic, partition, highwater, committed,
    lag, unread, fetch_age_s (None where unknown). Empty before the consumer starts."""
    consumer = app.consumer
    try:
        assigned = sorted(consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
    except Exception:  # not started yet, or between assignments
        return []
    committed_offsets = getattr(consumer, "_committed_offset", {})  # Faust's own: read at assignment, then commits
    read_offsets = getattr(consumer, "_read_offset", {})  # the last offset handed to a stream or batch handler
    last_fetch = getattr(consumer, "last_fetch_ms", None)  # streams/kafka.py
    now_ms = time.time() * 1000
    rows = []
    for tp in assigned:
        try:
            highwater = _offset(consumer.highwater(tp))
        except Exception:  # the assignment moved under us
            highwater = None
        committed = _offset(committed_offsets.get(tp))
        read = _offset(read_offsets.get(tp))
        lag = unread = None
        if highwater is not None:
            lag = max(0, highwater - (committed or 0))
            next_to_read = read + 1 if read is not None else committed
            unread = max(0, highwater - (next_to_read or 0))
        fetched = None
        if last_fetch is not None:
            with contextlib.suppress(Exception):
                fetched = last_fetch(tp)
        rows.append({"topic": tp.topic, "partition": tp.partition, "highwater": highwater, "committed": committed,
                     "lag": lag, "unread": unread,
                     "fetch_age_s": None if fetched is None else max(0.0, (now_ms - fetched) / 1000)})
    return rows


class _Collector:
    def __init__(self, app: Any) -> None:
        self.app = app

    def collect(self) -> Iterator[Any]:
        families = {
            "highwater": GaugeMetricFamily("only1mcp_worker_highwater_offset",
                                           "Log end offset from the worker's last fetch answer", labels=_LABELS),
            "committed": GaugeMetricFamily("only1mcp_worker_committed_offset",
                                           "The group's committed offset, as the worker knows it", labels=_LABELS),
            "lag": GaugeMetricFamily("only1mcp_worker_lag_records",
                                     "Records between the committed offset and the log end", labels=_LABELS),
            "unread": GaugeMetricFamily("only1mcp_worker_unread_records",
                                        "Records between the next offset to read and the log end", labels=_LABELS),
            "fetch_age_s": GaugeMetricFamily("only1mcp_worker_fetch_age_seconds",
                                             "Age of the last fetch answer for the partition", labels=_LABELS),
        }
        for row in partition_figures(self.app):
            labels = [row["topic"], str(row["partition"])]
            for key, family in families.items():
                if row[key] is not None:
                    family.add_metric(labels, row[key])
        yield from families.values()
        events = CounterMetricFamily("only1mcp_worker_events", "Records received by the worker's streams")
        events.add_metric([], getattr(self.app.monitor, "events_total", 0))
        yield events
        prefetch = getattr(getattr(self.app, "feature_worker", None), "prefetch", None)
        if prefetch is not None:
            yield from _prefetch_families(prefetch.status())


def _prefetch_families(status: dict[str, Any]) -> Iterator[Any]:
    calls = CounterMetricFamily("only1mcp_worker_prefetch_calls", "Session calls the prefetch agent learned from")
    calls.add_metric([], status["calls"])
    yield calls
    decisions = CounterMetricFamily("only1mcp_worker_prefetch_decisions",
                                    "Prefetch decisions made, and what became of them", labels=("outcome",))
    for outcome, key in (("made", "decisions"), ("sent", "sent"), ("expired", "expired"), ("lost", "lost")):
        decisions.add_metric([outcome], status[key])
    yield decisions
    sessions = GaugeMetricFamily("only1mcp_worker_prefetch_sessions", "Sessions the prefetch agent tracks")
    sessions.add_metric([], status["sessions"])
    yield sessions
    accuracy = GaugeMetricFamily("only1mcp_worker_prefetch_accuracy",
                                 "Online next-tool accuracy (prequential): share of calls in the top k", labels=("k",))
    for k in ("1", "3"):
        if status[f"accuracy_top{k}"] is not None:
            accuracy.add_metric([k], status[f"accuracy_top{k}"])
    yield accuracy


class WorkerMetrics:
    """The registry with the worker's collector, and the HTTP server that exposes it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(app))
        self.server: asyncio.base_events.Server | None = None

    def render(self) -> bytes:
        return generate_latest(self.registry)

    @property
    def port(self) -> int | None:
        """The port it listens on (the one asked for, or the one the kernel gave for 0)."""
        if self.server is None or not self.server.sockets:
            return None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._answer, host, port, reuse_address=True)
        log.info("worker metrics on http://%s:%d/metrics", host, self.port)

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def serve(self, host: str, port: int) -> None:
        """Listen until cancelled (the worker stopping cancels its tasks)."""
        try:
            await self.start(host, port)
        except OSError as exc:  # the port is taken: the worker runs on, without metrics, and says so
            log.error("worker metrics: cannot listen on %s:%d: %s", host, port, exc)
            return
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT_S)
            words = head[:_MAX_REQUEST_BYTES].split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            method, path = words[0], (words[1] if len(words) > 1 else "").split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                status, body, kind = "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
            elif path in ("/metrics", "/"):
                status, body, kind = "200 OK", self.render(), CONTENT_TYPE_LATEST
            else:
                status, body, kind = "404 Not Found", b"the worker serves /metrics only\n", "text/plain"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode("latin-1") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that sent no request, or left: nothing to answer
        except Exception:  # a bug here must not take the worker down
            log.exception("worker metrics: answering a scrape failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def install_metrics(app: Any, settings: Any) -> WorkerMetrics | None:
    """Serve the worker's /metrics on ``[worker] metrics_host:metrics_port`` while the app runs; None
    when ``metrics_port`` is 0. Called once from ``build_app``; a second call returns the first one."""
    existing = getattr(app, "worker_metrics", None)
    if existing is not None:
        return existing
    worker = settings.worker
    if not worker.metrics_port:
        return None
    metrics = WorkerMetrics(app)
    app.worker_metrics = metrics

    @app.task
    async def serve_worker_metrics() -> None:
        await metrics.serve(worker.metrics_host, worker.metrics_port)

    return metrics
