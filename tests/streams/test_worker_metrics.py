"""The worker's /metrics (streams/metrics.py): a real worker on the embedded broker, scraped with httpx,
its lag per partition checked against what was produced and against ``only1mcp worker status``."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from only1mcp.events import TOPICS, RequestEvent
from only1mcp.infra.broker import EmbeddedBroker
from only1mcp.jobs.bench._procs import Managed, free_port

PARTITIONS = 2
EVENTS = 600

# The worker as `only1mcp worker` runs it, with install_metrics in build_app. Until streams/app.py's
# build_app calls it itself this launcher adds the call; afterwards it is a no-op (install_metrics
# returns the app's existing WorkerMetrics), so the test keeps passing either way.
_LAUNCHER = """
import sys
import only1mcp.streams.app as streams_app
from only1mcp.streams.metrics import install_metrics
_build = streams_app.build_app
def build_app(settings):
    app = _build(settings)
    install_metrics(app, settings)
    return app
streams_app.build_app = build_app
from only1mcp.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


def write_config(tmp: Path, bootstrap: str, redis_url: str, port: int) -> tuple[Path, str]:
    group = f"metrics-{uuid.uuid4().hex[:8]}"
    path = tmp / "worker.toml"
    path.write_text(f'[worker]\nbootstrap = "{bootstrap}"\ngroup = "{group}"\npartitions = {PARTITIONS}\n'
                    'flush_interval = 0.3\ncompact_interval = 0.0\nmerge_interval = 0.0\n'
                    'tumbling = ["1s"]\nhopping = ["2s/1s"]\ngrace = 1.0\n'
                    f"metrics_port = {port}\n"
                    f'[store]\nredis_url = "{redis_url}"\nkey_prefix = "{group}"\ndata_dir = "{tmp / "data"}"\n'
                    "[learning]\nenabled = false\n[anomaly]\nenabled = false\n")
    return path, group


def produce(bootstrap: str, n: int) -> dict[int, int]:
    """n request events keyed by replica; returns the log end each partition of mcp.requests reached."""
    async def send() -> dict[int, int]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        try:
            now = time.time()
            sent = [await producer.send(TOPICS["requests"], RequestEvent(
                event_id=uuid.uuid4().hex, ts=now - 0.5 + i / n * 0.5, latency_ms=float(1 + i % 50),
                method="tools/call", status="ok", replica=f"r{i % 5}", tool=f"tool{i % 3}", session_id=f"s{i % 7}",
            ).to_json(), key=f"r{i % 5}".encode()) for i in range(n)]
            metadata = await asyncio.gather(*sent)
        finally:
            await producer.stop()
        ends: dict[int, int] = {}
        for record in metadata:
            ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
        return ends

    return asyncio.run(send())


def scrape(port: int) -> tuple[dict[tuple[str, str, int], float], float]:
    """({(family, topic, partition): value}, events_total) from the worker's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    series: dict[tuple[str, str, int], float] = {}
    events = -1.0
    for line in text.splitlines():
        found = re.match(r'^(only1mcp_worker_\w+)\{partition="(\d+)",topic="([^"]+)"\} (\S+)$', line)
        if found:
            series[found[1], found[3], int(found[2])] = float(found[4])
        elif line.startswith("only1mcp_worker_events_total "):
            events = float(line.split()[1])
    return series, events


def wait_for(check, proc: Managed, what: str, timeout: float = 60.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    last = None
    while True:
        assert proc.alive(), f"the worker died while waiting for {what}:\n{proc.log_tail(30)}"
        try:
            last = check()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        assert time.monotonic() < deadline, f"timed out waiting for {what} (last: {last!r}):\n{proc.log_tail(30)}"
        time.sleep(0.3)


def test_worker_metrics_show_lag_per_partition_and_agree_with_worker_status(broker: EmbeddedBroker, stack,  # noqa: ANN001
                                                                             tmp_path: Path, shared_redis: str) -> None:
    port = free_port()
    config, group = write_config(tmp_path, broker.bootstrap, shared_redis, port)
    started = time.monotonic()
    worker = stack.start("worker", [sys.executable, "-c", _LAUNCHER, "worker", "--config", str(config)])
    requests = TOPICS["requests"]

    # Up and assigned: every partition of mcp.requests has its series, nothing to read yet.
    def assigned() -> dict | None:
        series, events = scrape(port)
        ours = {p for (family, topic, p) in series if family == "only1mcp_worker_highwater_offset" and topic == requests}
        return series if ours == set(range(PARTITIONS)) and events >= 0 else None

    wait_for(assigned, worker, "the worker's /metrics with its mcp.requests partitions")
    ready = time.monotonic()

    ends = produce(broker.bootstrap, EVENTS)
    assert sum(ends.values()) == EVENTS and len(ends) == PARTITIONS

    # Read at once; committed once the windows holding the events have closed: lag 0 per partition.
    def caught_up() -> dict | None:
        series, events = scrape(port)
        rows = {p: {family: series.get((f"only1mcp_worker_{family}", requests, p))
                    for family in ("highwater_offset", "committed_offset", "lag_records", "unread_records",
                                   "fetch_age_seconds")} for p in range(PARTITIONS)}
        done = all(rows[p]["highwater_offset"] == ends[p] and rows[p]["committed_offset"] == ends[p]
                   and rows[p]["lag_records"] == 0 and rows[p]["unread_records"] == 0 for p in range(PARTITIONS))
        return {"rows": rows, "events": events} if done and events >= EVENTS else None

    seen_lag = []

    def watch() -> dict | None:  # also remember that the lag was visible before the commit
        series, _ = scrape(port)
        seen_lag.append(sum(series.get(("only1mcp_worker_lag_records", requests, p), 0) for p in range(PARTITIONS)))
        return caught_up()

    final = wait_for(watch, worker, "lag 0 on every partition", timeout=60)
    settled = time.monotonic()
    assert max(seen_lag) > 0, "the lag never showed before the offsets were committed"
    for p in range(PARTITIONS):
        assert 0 <= final["rows"][p]["fetch_age_seconds"] < 10

    # The operator's view says the same, from the broker.
    result = subprocess.run([sys.executable, "-m", "only1mcp.cli", "worker", "status", "--config", str(config),
                             "--format", "json", "--topic", requests], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["group"] == group and report["state"] == "Stable" and len(report["members"]) == 1
    assert {p["partition"]: (p["committed"], p["highwater"], p["lag"]) for p in report["partitions"]} == {
        p: (ends[p], ends[p], 0) for p in range(PARTITIONS)}

    assert httpx.get(f"http://127.0.0.1:{port}/nothing-here", timeout=5).status_code == 404
    print(f"\nworker /metrics up {ready - started:.1f}s after start; {EVENTS} events read and committed "
          f"{settled - ready:.1f}s after they were produced")


def test_metrics_are_off_by_default_and_a_taken_port_leaves_the_worker_running(broker: EmbeddedBroker, stack,  # noqa: ANN001
                                                                              tmp_path: Path, shared_redis: str) -> None:
    import socket

    from only1mcp.settings import Settings

    assert Settings().worker.metrics_port == 0
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        config, _ = write_config(tmp_path, broker.bootstrap, shared_redis, port)
        worker = stack.start("worker", [sys.executable, "-c", _LAUNCHER, "worker", "--config", str(config)])
        wait_for(lambda: "cannot listen on" in worker.log_tail(200), worker, "the worker to say the port is taken")
        time.sleep(1.0)
        assert worker.alive(), worker.log_tail(30)
    finally:
        taken.close()
