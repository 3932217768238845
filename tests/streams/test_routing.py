"""The routing agent end to end: a real embedded broker (tansu), a private Redis, ``only1mcp worker``
in a subprocess; request events in on ``mcp.requests``, ``RoutingWeights`` read back from
``mcp.routing-weights`` with an aiokafka consumer, as the proxy reads them.

Traffic: server ``s`` with replicas r0, r1, r2; on tool ``s.A`` r1 is five times slower than the
others, on ``s.B`` it is the fastest."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from only1mcp.events import TOPICS, RoutingWeights, RequestEvent
from only1mcp.feature_store.offline.duckdb import query
from only1mcp.infra.broker import EmbeddedBroker
from only1mcp.infra.redis import RedisHandle, ensure_redis
from only1mcp.jobs.bench._procs import Managed

PARTITIONS = 2
WEIGHTS = TOPICS["routing_weights"]
BASE = {("s.A", "r0"): 10.0, ("s.A", "r1"): 50.0, ("s.A", "r2"): 12.0,
        ("s.B", "r0"): 20.0, ("s.B", "r1"): 5.0, ("s.B", "r2"): 22.0}
VALID_FOR = 10.0


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        running.create_topics([TOPICS["requests"], TOPICS["dead_letter"], WEIGHTS], PARTITIONS)
        yield running


@pytest.fixture
def redis() -> Iterator[RedisHandle]:
    server = ensure_redis(None)  # a private redis-server: nothing shared with other tests
    try:
        yield server
    finally:
        server.stop()


def write_config(tmp: Path, bootstrap: str, redis_url: str, registry: Path, levels: int = 4) -> Path:
    path = tmp / "worker.toml"
    path.write_text(f'[worker]\nbootstrap = "{bootstrap}"\ngroup = "test-{uuid.uuid4().hex[:8]}"\n'
                    f"partitions = {PARTITIONS}\nflush_interval = 0.3\ncompact_interval = 0\nmerge_interval = 0\n"
                    f'[store]\nredis_url = "{redis_url}"\nkey_prefix = "routing"\ndata_dir = "{tmp / "data"}"\n'
                    f"[learning]\npublish_interval = 0.5\nvalid_for = {VALID_FOR}\nmin_samples = 5\n"
                    f'inflight_levels = {levels}\nretrain_interval = 0\nregistry_dir = "{registry}"\n')
    return path


def events(n: int, rng: random.Random, ts: float | None = None, spacing: float = 0.0) -> list[RequestEvent]:
    """``n`` calls spread over both tools and all replicas (stamped now, or from ``ts`` on, ``spacing``
    apart); latency = base × (1 + inflight)^1.5 × noise."""
    out, start = [], time.time() if ts is None else ts
    for i in range(n):
        tool, replica = ("s.A", "s.B")[i % 2], ("r0", "r1", "r2")[(i // 2) % 3]
        inflight = rng.randint(0, 1)
        latency = BASE[(tool, replica)] * (1 + inflight) ** 1.5 * rng.lognormvariate(0, 0.1)
        out.append(RequestEvent(event_id=uuid.uuid4().hex, ts=start + i * spacing, method="tools/call", status="ok",
                                server="s", replica=replica, tool=tool, inflight=inflight, latency_ms=latency,
                                request_bytes=200))
    return out


async def produce(bootstrap: str, batch: list[RequestEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(TOPICS["requests"], e.to_json(), key=(e.replica or "").encode())
                               for e in batch])
    finally:
        await producer.stop()


class Decisions:
    """Every RoutingWeights record on the topic (all partitions, no group), read in the background."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.records: list[tuple[float, RoutingWeights]] = []  # (time read, record)
        self.undecodable = 0
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Decisions:
        self.consumer = AIOKafkaConsumer(WEIGHTS, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                                         enable_auto_commit=False, request_timeout_ms=5000)
        await self.consumer.start()
        self.task = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        while True:
            try:
                batches = await self.consumer.getmany(timeout_ms=200)
            except Exception:  # the broker paused: keep trying
                await asyncio.sleep(0.2)
                continue
            for batch in batches.values():
                for message in batch:
                    try:
                        self.records.append((time.time(), RoutingWeights.from_json(message.value)))
                    except Exception:
                        self.undecodable += 1

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        await self.consumer.stop()

    def latest(self, tool: str | None, source: str | None = None, since: float = 0.0) -> RoutingWeights | None:
        found = [r for t, r in self.records if r.tool == tool and r.server == "s" and t >= since
                 and (source is None or r.source == source)]
        return found[-1] if found else None


async def until(check: Callable[[], Any], proc: Managed, what: str, timeout: float = 30.0,
                traffic: Callable[[], Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.alive(), f"the worker died while waiting for {what}:\n{proc.log_tail(30)}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{proc.log_tail(30)}"
        if traffic is not None:
            await traffic()
        await asyncio.sleep(0.3)


def assert_specialised(decisions: Decisions, source: str, since: float = 0.0) -> tuple[RoutingWeights, ...]:
    a, b, wide = (decisions.latest(t, source, since) for t in ("s.A", "s.B", None))
    assert a is not None and b is not None and wide is not None
    assert a.weights["r1"] < 0.5 * min(a.weights["r0"], a.weights["r2"]), (a.weights, a.predicted_ms)  # 5× slower on A
    assert b.weights["r1"] == max(b.weights.values()), (b.weights, b.predicted_ms)  # fastest on B
    for record in (a, b, wide):
        assert set(record.weights) == set(record.predicted_ms) == {"r0", "r1", "r2"}
        assert record.valid_until == pytest.approx(record.ts + VALID_FOR)
        assert abs(record.ts - time.time()) < 30 and record.source == source
    return a, b, wide


def stored(data_dir: Path) -> int:
    if not any(data_dir.rglob("*.parquet")):
        return 0
    # query() lists the files anew if the worker's compaction removed one mid-read (retry_vanished)
    return int(query(data_dir, "SELECT count(DISTINCT event_id) FROM requests_raw")[1][0][0])


def test_tool_ewma_weights_published_and_survive_a_broker_outage(broker: EmbeddedBroker, redis: RedisHandle,
                                                                  stack, tmp_path: Path) -> None:  # noqa: ANN001
    config = write_config(tmp_path, broker.bootstrap, redis.url, tmp_path / "models")
    worker = stack.start("worker", [sys.executable, "-m", "only1mcp.cli", "worker", "--config", str(config)])
    rng = random.Random(0)

    async def scenario() -> None:
        async with Decisions(broker.bootstrap) as decisions:
            # Another server's traffic first, to see the worker running (its group join takes seconds).
            warm = [dataclasses.replace(e, server="w", replica=f"w{i % 2}") for i, e in enumerate(events(20, rng))]
            await produce(broker.bootstrap, warm)
            await until(lambda: any(r.server == "w" for _, r in decisions.records), worker, "the worker running",
                        timeout=45)
            started = time.time()
            await produce(broker.bootstrap, events(60, rng))  # 10 calls per replica × tool
            await until(lambda: all(decisions.latest(t, "tool_ewma") for t in ("s.A", "s.B", None)), worker,
                        "tool_ewma weights for s.A, s.B and the server", timeout=20)
            first = min(t for t, r in decisions.records if r.server == "s")
            assert first - started < 3.0  # publish_interval 0.5 s: within seconds of the first traffic
            a, _, wide = assert_specialised(decisions, "tool_ewma")
            assert len(a.predicted_ms["r1"]) == 1  # the EMA knows nothing of load: one value
            assert a.predicted_ms["r1"][0] == pytest.approx(5 * a.predicted_ms["r0"][0], rel=0.4)
            assert wide.model_version.startswith("tool_ewma") and decisions.undecodable == 0
            # Records keep coming, about one set per publish_interval (0.5 s).
            count = len(decisions.records)
            await asyncio.sleep(2.0)
            assert len(decisions.records) - count >= 3 * 3
            print(f"first weights {first - started:.1f} s after the first traffic")

            # The broker stops answering for a few seconds; the worker neither dies nor stalls.
            broker.pause()
            paused_at = time.time()
            try:
                await asyncio.sleep(4.0)
                assert worker.alive()
            finally:
                broker.resume()
            resumed = time.time()
            await produce(broker.bootstrap, events(60, rng))
            await until(lambda: stored(tmp_path / "data") >= 140, worker, "the events after the outage in Parquet")
            await until(lambda: all(decisions.latest(t, "tool_ewma", since=resumed + 1.0)
                                    for t in ("s.A", "s.B", None)), worker, "weights published again after the outage")
            fresh = [r for t, r in decisions.records if t >= resumed + 1.0]
            assert fresh and all(r.ts >= paused_at for r in fresh)
            assert_specialised(decisions, "tool_ewma", since=resumed + 1.0)
            assert worker.alive()

    asyncio.run(scenario())
    assert "routing agent: publishing to mcp.routing-weights" in worker.log_path.read_text(errors="replace")


def tiny_registry(root: Path) -> str:
    """A registry with one live latency model (XGBoost → ONNX), trained on a history of the same
    traffic (a model only knows the feature ranges it saw)."""
    import dataclasses

    from only1mcp.models.latency.features import training_frame
    from only1mcp.models.latency.onnx import export
    from only1mcp.models.latency.train import train
    from only1mcp.models.registry import ModelRegistry

    history = events(3000, random.Random(7), ts=time.time() - 600, spacing=0.025)  # 40 calls/s, as the test sends
    X, y, meta = training_frame([dataclasses.asdict(e) for e in history])
    result = train(X, y, meta.ts, params={"nthread": 1})
    blobs, parity = export({"p50": result.p50, "p95": result.p95}, result.X_holdout)
    registry = ModelRegistry(root)
    version = registry.add(result, blobs, parity=parity)
    assert registry.promote(version, force=True).promoted
    return version


def test_the_live_latency_model_publishes_its_curves(broker: EmbeddedBroker, redis: RedisHandle, stack,  # noqa: ANN001
                                                      tmp_path: Path) -> None:
    pytest.importorskip("xgboost")
    version = tiny_registry(tmp_path / "models")
    levels = 4
    config = write_config(tmp_path, broker.bootstrap, redis.url, tmp_path / "models", levels=levels)
    worker = stack.start("worker", [sys.executable, "-m", "only1mcp.cli", "worker", "--config", str(config)])
    rng = random.Random(1)

    async def scenario() -> None:
        async with Decisions(broker.bootstrap) as decisions:
            async def traffic() -> None:
                await produce(broker.bootstrap, events(12, rng))

            # The learner publishes at once; the model after its features have warmed up.
            await until(lambda: decisions.latest("s.A", "tool_ewma"), worker, "tool_ewma weights first",
                        timeout=45, traffic=traffic)
            await until(lambda: all(decisions.latest(t, "latency_model") for t in ("s.A", "s.B", None)), worker,
                        "latency_model weights", timeout=60, traffic=traffic)
            a, b, wide = assert_specialised(decisions, "latency_model")
            for record in (a, b, wide):
                assert record.model_version == f"latency_model:{version}"
                for curve in record.predicted_ms.values():
                    # P50 at inflight 0 … up to levels-1 (the levels its replica had calls at), never falling
                    assert 1 <= len(curve) <= levels and curve == sorted(curve)
            assert a.predicted_ms["r1"][0] > 2 * max(a.predicted_ms["r0"][0], a.predicted_ms["r2"][0])

    asyncio.run(scenario())
    log_text = worker.log_path.read_text(errors="replace")
    assert f"live latency model {version} loaded" in log_text


def test_in_a_group_of_workers_the_one_with_partition_0_reads_everything(broker: EmbeddedBroker,
                                                                         tmp_path: Path) -> None:
    """Two workers would each fold only some replicas' events: the agent of the worker holding
    partition 0 reads every partition itself and publishes; the other stays passive."""
    from only1mcp.settings import Settings
    from only1mcp.streaming import LearningSettings, StoreSettings, WorkerSettings
    from only1mcp.streams.routing import RoutingAgent

    def settings() -> Settings:
        return Settings(worker=WorkerSettings(bootstrap=broker.bootstrap, partitions=PARTITIONS),
                        store=StoreSettings(data_dir=str(tmp_path / "data")),
                        learning=LearningSettings(publish_interval=0.3, min_samples=5, retrain_interval=0,
                                                  registry_dir=str(tmp_path / "models")))

    rng = random.Random(2)

    async def scenario() -> None:
        leader = RoutingAgent(settings(), assignment=lambda: {0})
        other = RoutingAgent(settings(), assignment=lambda: {1})
        tasks = [asyncio.ensure_future(agent.run()) for agent in (leader, other)]
        try:
            async with Decisions(broker.bootstrap) as decisions:
                await asyncio.sleep(1.5)  # the leader's reader starts at the end of the topic
                assert leader.mode == "own" and other.mode == "passive"
                other.observe([dataclasses.asdict(e) for e in events(60, rng)])  # a fold feed: ignored
                deadline = time.monotonic() + 30
                while not all(decisions.latest(t, "tool_ewma") for t in ("s.A", "s.B", None)):
                    assert time.monotonic() < deadline, (leader.status(), other.status())
                    await produce(broker.bootstrap, events(30, rng))
                    await asyncio.sleep(0.3)
                assert_specialised(decisions, "tool_ewma")
                assert leader.counters["own_read"] >= 60 and other.counters["calls"] == 0
                assert other.status()["published"] == 0
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())
