"""The Faust application of the streaming half, built from the settings.

One app per consumer group (``WorkerSettings.group``), on ``kafka://<bootstrap>``, with the
memory table store, the consumer's fetch wait from the settings, and ``mcp.requests`` delivered
to the feature agent a fetch at a time (both streams/kafka.py). Topics
are created explicitly with ``WorkerSettings.partitions`` before the worker starts: the embedded
broker (tansu) would auto-create them with 4, and a Faust changelog must match its source
topic's partition count.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faust

from only1mcp.events import TOPICS
from only1mcp.settings import Settings

__all__ = ["build_app", "ensure_topics", "run_worker"]

log = logging.getLogger(__name__)
_REBALANCE_TIMEOUT_S = 3
_BROKER_WAIT_S = 30.0
_SESSION_TIMEOUT_S = 10  # tansu also holds a first join for about half of it


def build_app(settings: Settings) -> faust.App:
    """The Faust app with the feature agent installed (``app.feature_worker`` holds its state)."""
    from only1mcp.streams.agents import install
    from only1mcp.streams.kafka import WorkerApp

    worker = settings.worker
    app = WorkerApp(
        worker.group,
        broker=[f"kafka://{host.strip()}" for host in worker.bootstrap.split(",") if host.strip()],
        store="memory://",
        topic_partitions=worker.partitions,
        topic_replication_factor=worker.replication,
        consumer_auto_offset_reset="earliest",  # a new group reads what the proxy sent before it started
        stream_wait_empty=False,  # acks wait for windows to close; never block a rebalance on them
        web_enabled=False,
        # tansu completes a group join only when the rebalance timeout runs out: keep it short.
        broker_rebalance_timeout=float(_REBALANCE_TIMEOUT_S),
        broker_session_timeout=float(_SESSION_TIMEOUT_S),
        broker_heartbeat_interval=1.0,
        datadir=str(Path(settings.store.data_dir) / "_faust"),
        autodiscover=False,
    )
    app.fetch_max_wait_ms = max(1, round(worker.fetch_max_wait * 1000))
    app.feature_worker = install(app, settings)
    from only1mcp.streams.metrics import install_metrics

    install_metrics(app, settings)  # [worker] metrics_port: the worker's /metrics (streams/metrics.py); 0 = off
    return app


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int,
                        replication: int = 1) -> None:
    """Create the topics with ``partitions`` each, replicated ``replication`` times (infra/broker.py:
    idempotent, and patient with a multi-node Kafka's metadata); a topic created earlier with
    another count is left as it is, with a warning (the worker reads the real counts)."""
    from only1mcp.infra.broker import TopicMismatch, acreate_topics

    try:
        await acreate_topics(bootstrap, names, partitions, replication)
    except TopicMismatch as exc:
        log.warning("%s (created earlier; left as they are)", exc)


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    """Create the topics, then run one Faust worker until SIGINT/SIGTERM."""
    import asyncio

    import time

    names = [TOPICS["requests"], TOPICS["dead_letter"], TOPICS["feature_events"]]
    if settings.learning.enabled:
        names.append(settings.learning.topic)  # the routing agent publishes there (streams/routing.py)
    if settings.anomaly.enabled:  # the anomaly agent publishes there (streams/anomaly.py)
        names += [settings.anomaly.topic, settings.anomaly.remediation_topic]
    if settings.worker.prefetch.enabled:  # the prefetch agent publishes there (streams/prefetch.py)
        names.append(settings.worker.prefetch.topic)
    deadline = time.monotonic() + _BROKER_WAIT_S  # in compose, the broker may still be starting
    while True:
        try:
            asyncio.run(ensure_topics(settings.worker.bootstrap, names, settings.worker.partitions,
                                      settings.worker.replication))
            break
        except Exception as exc:  # no broker there (yet), or it refused: say so plainly, no traceback
            if time.monotonic() >= deadline:
                log.error("cannot create topics on Kafka at %s: %s: %s", settings.worker.bootstrap,
                          type(exc).__name__, exc)
                return 1
            log.warning("Kafka at %s not ready (%s); retrying", settings.worker.bootstrap, type(exc).__name__)
            time.sleep(1.0)
    (Path(settings.store.data_dir) / "_faust").mkdir(parents=True, exist_ok=True)
    app = build_app(settings)
    worker: Any = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
