"""The prefetch agent end to end: a real embedded broker, Redis, Parquet and ``only1mcp worker`` in a
subprocess. Request events of sessions with a recurring pattern go to ``mcp.requests`` (keyed by
replica: a session's calls spread over source partitions); PrefetchDecisions come back on
``mcp.prefetch`` for the right next tool, only for tools the session called, none from a stale
backlog; the worker's /metrics shows them; ``only1mcp train prefetch`` trains on the Parquet this
worker wrote, and a restarted worker continues from the promoted model (a corrupt one is refused)."""

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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from only1mcp.events import TOPICS, PrefetchDecision, RequestEvent
from only1mcp.feature_store.offline.duckdb import query
from only1mcp.infra.broker import EmbeddedBroker
from only1mcp.jobs.bench._procs import Managed, free_port

PARTITIONS = 2
PATTERN = ("docs.search", "docs.get", "docs.comments")


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        running.create_topics([TOPICS["requests"], TOPICS["dead_letter"], TOPICS["feature_events"],
                               TOPICS["prefetch"]], PARTITIONS)
        yield running


def write_config(tmp: Path, bootstrap: str, redis_url: str, metrics_port: int) -> Path:
    path = tmp / "worker.toml"
    path.write_text(f'[worker]\nbootstrap = "{bootstrap}"\ngroup = "test-{uuid.uuid4().hex[:8]}"\n'
                    f"partitions = {PARTITIONS}\nflush_interval = 0.3\ncompact_interval = 0\nmerge_interval = 0\n"
                    f"metrics_port = {metrics_port}\n"
                    "[worker.prefetch]\nvalid_for = 30.0\nmin_confidence = 0.5\n"
                    "[learning]\nenabled = false\n[anomaly]\nenabled = false\n"
                    f'[store]\nredis_url = "{redis_url}"\nkey_prefix = "pf-{uuid.uuid4().hex[:8]}"\n'
                    f'data_dir = "{tmp / "data"}"\n')
    return path


def session(name: str, tools: tuple[str, ...] | list[str], start: float, step: float = 0.05,
            replica: str | None = None) -> list[RequestEvent]:
    """Calls of one session, on one replica or (None) alternating between two: then, sent in a burst,
    they reach the worker from two source partitions and some arrive after a newer one (late)."""
    return [RequestEvent(event_id=uuid.uuid4().hex, ts=start + i * step, latency_ms=2.0, method="tools/call",
                         status="ok", session_id=name, tool=tool, server="docs", replica=replica or f"docs/{i % 2}",
                         args_hash=f"{name}-{i}") for i, tool in enumerate(tools)]


async def produce(bootstrap: str, events: list[RequestEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(TOPICS["requests"], e.to_json(), key=(e.replica or "").encode())
                               for e in events])
    finally:
        await producer.stop()


class Decisions:
    """Every PrefetchDecision on mcp.prefetch, read in the background."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap, self.found = bootstrap, []
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Decisions:
        self.consumer = AIOKafkaConsumer(TOPICS["prefetch"], bootstrap_servers=self.bootstrap,
                                         auto_offset_reset="earliest", enable_auto_commit=False)
        await self.consumer.start()
        self.task = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        assert self.consumer is not None
        while True:
            for batch in (await self.consumer.getmany(timeout_ms=200)).values():
                for record in batch:
                    decision = PrefetchDecision.from_json(record.value)  # every record decodes
                    assert record.key == decision.session_id.encode()
                    self.found.append(decision)

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None and self.consumer is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()

    def of(self, session_id: str) -> list[PrefetchDecision]:
        return [d for d in self.found if d.session_id == session_id]


async def until(check, proc: Managed, what: str, timeout: float = 40.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.alive(), f"the worker died waiting for {what}:\n{proc.log_tail(30)}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{proc.log_tail(30)}"
        await asyncio.sleep(0.2)


def stored(data_dir: Path) -> int:
    if not (data_dir / "requests").is_dir():
        return 0
    # query() lists the files anew if the worker's compaction removed one mid-read (retry_vanished)
    return int(query(data_dir, "SELECT count(DISTINCT event_id) FROM requests_raw")[1][0][0])


def start_worker(stack, config: Path) -> Managed:  # noqa: ANN001 - the conftest Stack
    return stack.start(f"worker-{uuid.uuid4().hex[:4]}",
                       [sys.executable, "-m", "only1mcp.cli", "worker", "--config", str(config)])


def metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_decisions_training_and_a_restart_from_the_promoted_model(broker: EmbeddedBroker, stack,  # noqa: ANN001
                                                                   tmp_path: Path, shared_redis: str) -> None:
    port = free_port()
    config = write_config(tmp_path, broker.bootstrap, shared_redis, port)
    data = tmp_path / "data"
    worker = start_worker(stack, config)

    async def first_run() -> None:
        async with Decisions(broker.bootstrap) as decisions:
            now = time.time()
            # Live sessions call one after another, so their calls reach the worker in order; a burst of
            # calls spread over replicas does not (the late ones teach, and decide nothing): keep these in order.
            taught = [e for s in range(40) for e in session(f"s{s}", PATTERN * 2, now - 10 + s * 0.2, replica=f"docs/{s % 2}")]
            stale = session("old", PATTERN * 3, now - 3600)  # a backlog an hour old: teaches, decides nothing
            novice = session("novice", PATTERN[:2], now - 1)  # never called docs.comments
            await produce(broker.bootstrap, stale + taught + novice)
            await until(lambda: decisions.found, worker, "the first prefetch decisions")
            probe = session("probe", [*PATTERN, *PATTERN[:2]], time.time() - 0.3)
            await produce(broker.bootstrap, probe)
            await until(lambda: any(d.after_event == probe[-1].event_id for d in decisions.found), worker,
                        "a decision after the probe's last call")
            await asyncio.sleep(1.0)  # anything else the worker would publish
            (decision,) = [d for d in decisions.of("probe") if d.after_event == probe[-1].event_id]
            assert decision.tool == "docs.comments" and decision.confidence >= 0.9 and decision.server == "docs"
            assert decision.model_version == "empty+online"
            assert decision.ts < decision.valid_until <= decision.ts + 30.0
            assert decision.args_hash is None  # docs.comments never repeated its arguments
            assert decisions.of("old") == []  # an hour old: taught, never decided
            # The eligibility rule, for every decision: its tool is one its session had called by then
            # (novice never called docs.comments, the likeliest tool after its docs.get).
            sent = {e.event_id: e for e in taught + stale + novice + probe}
            for d in decisions.found:
                after = sent[d.after_event]
                assert d.tool in {e.tool for e in sent.values() if e.session_id == d.session_id and e.ts <= after.ts}, d
            assert all(d.tool != "docs.comments" for d in decisions.of("novice"))
            made = [d for d in decisions.found if d.session_id.startswith("s")]
            assert made and all(d.confidence >= 0.5 for d in made)
            assert all(len([d for d in made if d.after_event == e]) <= 2 for e in {d.after_event for d in made})
            scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0).text
            assert metric(scrape, 'only1mcp_worker_prefetch_decisions_total{outcome="made"}') == len(decisions.found)
            # 43 sessions called; "old" is idle past session_idle (event time): forgotten once it is the least
            # recently active (the expiry looks at the LRU front only), which depends on the arrival order
            assert metric(scrape, "only1mcp_worker_prefetch_sessions") in (42, 43)
            assert metric(scrape, 'only1mcp_worker_prefetch_accuracy{k="1"}') > 0.8
            assert metric(scrape, "only1mcp_worker_prefetch_calls_total") == len(taught + stale + novice + probe)
            await until(lambda: stored(data) == len(taught + stale + novice + probe), worker, "every event in Parquet")

    asyncio.run(first_run())
    stack.stop(worker)

    # Offline training on the Parquet the worker wrote, promoted by the gate.
    done = subprocess.run([sys.executable, "-m", "only1mcp.cli", "train", "prefetch", "--config", str(config),
                           "--min-sessions", "10", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["promoted"], report["gate"]
    assert report["metrics"]["model"]["top1"] > report["metrics"]["most_frequent"]["top1"]
    assert Path(report["path"]).parent == data / "models" / "prefetch"

    worker = start_worker(stack, config)

    async def second_run() -> None:
        async with Decisions(broker.bootstrap) as decisions:
            await until(lambda: f"continuing from {report['version']}" in worker.log_tail(300), worker,
                        "the worker loading the promoted model")
            fresh = session("fresh", ["docs.get", "docs.comments", "docs.search"], time.time() - 0.2)
            await produce(broker.bootstrap, fresh)  # learned nothing online about it: the loaded model decides
            await until(lambda: decisions.of("fresh"), worker, "a decision from the loaded model")
            (decision,) = decisions.of("fresh")
            assert decision.tool == "docs.get" and decision.model_version == f"{report['version']}+online"

    asyncio.run(second_run())
    stack.stop(worker)

    # A corrupt artefact: refused with the reason, and the worker starts from an empty model.
    model_file = Path(report["path"]) / "model.json"
    model_file.write_text(model_file.read_text().replace('"order":', '"order" :', 1))
    worker = start_worker(stack, config)
    asyncio.run(until(lambda: "refused, starting from an empty model" in worker.log_tail(300), worker,
                      "the refusal"))
    assert "checksum mismatch" in worker.log_tail(300) and worker.alive()
