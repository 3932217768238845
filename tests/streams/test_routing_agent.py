"""The routing agent in process, without a broker: which predictor publishes, falling back when the
model fails, shadow and river scored beside it, live error, rollback (and benching when there is
nothing to roll back to), the retraining subprocess. Records are captured instead of sent."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from pathlib import Path
from typing import Any

import pytest

from only1mcp.events import RequestEvent, RoutingWeights
from only1mcp.settings import Settings
from only1mcp.streaming import LearningSettings, StoreSettings
from only1mcp.streams import routing
from only1mcp.streams.routing import RoutingAgent

pytest.importorskip("xgboost")

DEFAULTS = {f.name: f.default for f in dataclasses.fields(RequestEvent) if f.default is not dataclasses.MISSING}
BASE = {("s.A", "r0"): 10.0, ("s.A", "r1"): 50.0, ("s.A", "r2"): 12.0,
        ("s.B", "r0"): 20.0, ("s.B", "r1"): 5.0, ("s.B", "r2"): 22.0}


def calls(n: int, rng: random.Random, start: float, spacing: float = 0.01, scale: float = 1.0) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        tool, replica = ("s.A", "s.B")[i % 2], ("r0", "r1", "r2")[(i // 2) % 3]
        inflight = rng.randint(0, 1)
        out.append({"event_id": f"{start}-{i}", "ts": start + i * spacing, "server": "s", "replica": replica,
                    "tool": tool, "method": "tools/call", "status": "ok", "cache_hit": False, "inflight": inflight,
                    "request_bytes": 200,
                    "latency_ms": scale * BASE[(tool, replica)] * (1 + inflight) ** 1.5 * rng.lognormvariate(0, 0.1)})
    return out


def register(root: Path, scale: float = 1.0, seed: int = 3) -> str:
    """Train on a history of this traffic (latencies × ``scale``: a model that is wrong by that
    factor) and make it live; returns the version."""
    from only1mcp.models.latency.features import training_frame
    from only1mcp.models.latency.onnx import export
    from only1mcp.models.latency.train import train
    from only1mcp.models.registry import ModelRegistry

    X, y, meta = training_frame(calls(3000, random.Random(seed), time.time() - 900, 0.025, scale))
    result = train(X, y, meta.ts, params={"nthread": 1})
    blobs, parity = export({"p50": result.p50, "p95": result.p95}, result.X_holdout)
    registry = ModelRegistry(root)
    version = registry.add(result, blobs, parity=parity)
    assert registry.promote(version, force=True).promoted
    return version


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """good: one good live model; bad_over_good: a good one, then a 10× wrong one live on top;
    bad_alone: only the wrong one."""
    base = tmp_path_factory.mktemp("registries")
    good = register(base / "good")
    first = register(base / "bad_over_good")
    bad = register(base / "bad_over_good", scale=10.0, seed=4)
    alone = register(base / "bad_alone", scale=10.0, seed=4)
    return {"root": base, "good": good, "first": first, "bad": bad, "alone": alone}


class Captured:
    """Stands in for DecisionPublisher."""

    def __init__(self) -> None:
        self.batches: list[list[RoutingWeights]] = []
        self.dropped = self.failed = self.sent = 0

    def publish(self, records: list[RoutingWeights]) -> bool:
        self.batches.append(records)
        self.sent += len(records)
        return True

    async def close(self) -> None:
        pass


def agent_for(tmp: Path, registry_dir: Path, **learning: Any) -> RoutingAgent:
    settings = Settings(store=StoreSettings(data_dir=str(tmp / "data")),
                        learning=LearningSettings(registry_dir=str(registry_dir), min_samples=5, inflight_levels=4,
                                                  retrain_interval=0, **learning))
    return RoutingAgent(settings, publisher=Captured())  # type: ignore[arg-type]


async def settle(agent: RoutingAgent) -> None:
    """Let a registry reload that the last tick started finish (and the arming it may start)."""
    for _ in range(500):
        await asyncio.sleep(0.02)  # first: done callbacks run
        if (agent._reloading is None or agent._reloading.done()) and agent._warm_buffer is None:
            return


async def run_ticks(agent: RoutingAgent, rng: random.Random, ticks: int, per_tick: int = 60) -> list[RoutingWeights]:
    records: list[RoutingWeights] = []
    for _ in range(ticks):
        agent.observe(calls(per_tick, rng, time.time() - 1.0, spacing=0.5 / per_tick))
        records = await agent.tick()
        await settle(agent)
    return records


@pytest.fixture(autouse=True)
def quick_warmup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing, "_WARMUP_S", 0.0)
    monkeypatch.setattr(routing, "_WARM_CALLS", 10)
    monkeypatch.setattr(routing, "_RELOAD_EVERY_S", 0.0)


def by_tool(records: list[RoutingWeights]) -> dict[str | None, RoutingWeights]:
    return {r.tool: r for r in records if r.server == "s"}


def test_learner_first_then_the_live_model_and_a_fallback_tick(tmp_path: Path, registries: dict[str, Any]) -> None:
    async def scenario() -> None:
        # Without a registry the learner publishes, and the costly causal features are not fed.
        lone = agent_for(tmp_path, tmp_path / "empty")
        records = await run_ticks(lone, random.Random(0), 2)
        assert {r.source for r in records} == {"tool_ewma"} and set(by_tool(records)) == {"s.A", "s.B", None}
        assert lone.armed_at is None and lone.model_side._keys == {}

        agent = agent_for(tmp_path, registries["root"] / "good")
        await settle(agent)
        rng = random.Random(1)
        records = await run_ticks(agent, rng, 4)
        assert agent.live_version == registries["good"] and agent.counters["model_loads"] == 1
        tools = by_tool(records)
        assert {r.source for r in records} == {"latency_model"}, [(r.tool, r.source) for r in records]
        a, b = tools["s.A"], tools["s.B"]
        assert a.weights["r1"] < 0.5 * min(a.weights["r0"], a.weights["r2"])
        assert b.weights["r1"] == max(b.weights.values())
        # the traffic had 0 or 1 calls in flight: the curves hold those two levels of the four, never falling
        assert all(len(c) == 2 and c == sorted(c) for r in records for c in r.predicted_ms.values())
        assert a.model_version == f"latency_model:{registries['good']}"
        # River learned in shadow and was scored on the same batch.
        assert len(agent.challenger.pending) > 0 and agent.p50["river"]  # (it learns each example 1000 late)
        # Live error is tracked for the model and the baseline on the same calls.
        await run_ticks(agent, rng, 2)
        status = agent.status()
        assert status["live_error_n"]["live"] > 0 and status["live_error_n"]["baseline"] > 0
        assert status["live_error_ms"]["live"] < 2 * status["live_error_ms"]["baseline"] + 5

        # Scoring raises: that tick is the learner's, counted; the agent goes on.
        live = agent.live

        class Broken:
            def predict(self, X: Any) -> Any:
                raise RuntimeError("onnxruntime exploded")

        agent.live = Broken()
        records = await run_ticks(agent, rng, 1)
        assert {r.source for r in records} == {"tool_ewma"} and set(by_tool(records)) == {"s.A", "s.B", None}
        assert agent.counters["errors"]["latency_model"] == 1 and agent.counters["fallback_ticks"] == 1
        agent.live = live
        records = await run_ticks(agent, rng, 1)
        assert {r.source for r in records} == {"latency_model"}

    asyncio.run(scenario())


def test_a_model_worse_than_the_baseline_is_rolled_back(tmp_path: Path, registries: dict[str, Any]) -> None:
    from only1mcp.models.registry import ModelRegistry

    async def scenario() -> None:
        agent = agent_for(tmp_path, registries["root"] / "bad_over_good", rollback_after=0.5)
        await settle(agent)
        rng = random.Random(2)
        deadline = time.monotonic() + 20
        while agent.counters["rollbacks"] == 0:
            assert time.monotonic() < deadline, agent.status()
            await run_ticks(agent, rng, 1)
            await asyncio.sleep(0.1)
        assert ModelRegistry(registries["root"] / "bad_over_good").live().version == registries["first"]
        await run_ticks(agent, rng, 2)
        assert agent.live_version == registries["first"]  # the previous version serves again
        records = await run_ticks(agent, rng, 1)
        assert all(r.model_version in (f"latency_model:{registries['first']}", agent.tool_ewma.version)
                   for r in records)

    asyncio.run(scenario())


def test_with_nothing_to_roll_back_to_the_model_is_benched(tmp_path: Path, registries: dict[str, Any]) -> None:
    async def scenario() -> None:
        agent = agent_for(tmp_path, registries["root"] / "bad_alone", rollback_after=0.5)
        await settle(agent)
        rng = random.Random(3)
        deadline = time.monotonic() + 20
        while agent.counters["benched"] == 0:
            assert time.monotonic() < deadline, agent.status()
            await run_ticks(agent, rng, 1)
            await asyncio.sleep(0.1)
        records = await run_ticks(agent, rng, 3)
        assert agent.live is None and agent.status()["benched_versions"] == [registries["alone"]]
        assert {r.source for r in records} == {"tool_ewma"}
        assert agent.counters["rollbacks"] == 1

    asyncio.run(scenario())


def test_retraining_waits_for_enough_calls_then_trains_and_loads(tmp_path: Path) -> None:
    from only1mcp.feature_store.offline.parquet import write_requests
    from only1mcp.models.registry import ModelRegistry

    async def scenario() -> None:
        agent = agent_for(tmp_path, tmp_path / "models", min_train_calls=1000)
        agent.learning = dataclasses.replace(agent.learning, retrain_interval=0.1)
        agent.retrainer.next_at = 0.0
        await agent.tick()  # empty store: the subprocess says how many calls are missing
        await asyncio.wait_for(agent.retrainer.task, 60)
        assert agent.retrainer.store_short == 1000 and agent.counters["retrains"] == 0
        await agent.tick()
        assert agent.retrainer.task.done()  # not started again before 1000 more calls came by
        history = calls(3000, random.Random(5), time.time() - 900, 0.025)
        write_requests(tmp_path / "data", [{**DEFAULTS, **e} for e in history])
        agent.observe(history)
        await asyncio.sleep(0.15)
        await agent.tick()
        await asyncio.wait_for(agent.retrainer.task, 120)
        assert agent.counters["retrains"] == 1, agent.status()
        await settle(agent)
        live = ModelRegistry(tmp_path / "models").live()
        assert live is not None and agent.live_version == live.version

    asyncio.run(scenario())


def test_armed_from_the_store_the_model_publishes_without_waiting(tmp_path: Path, registries: dict[str, Any],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker (re)started beside a live model reads the store's recent calls into the causal
    features: the model decides from the first tick, not after minutes of fresh traffic."""
    from only1mcp.feature_store.offline.parquet import write_requests

    monkeypatch.setattr(routing, "_WARMUP_S", 10.0)
    monkeypatch.setattr(routing, "_WARM_CALLS", 30)
    history = calls(1200, random.Random(6), time.time() - 60, 0.04)  # the last minute, 200 calls per key
    write_requests(tmp_path / "data", [{**DEFAULTS, **e} for e in history])

    async def scenario() -> None:
        agent = agent_for(tmp_path, registries["root"] / "good")
        agent._maybe_reload()  # what the first tick does
        await settle(agent)
        for _ in range(100):  # the store is read in a thread
            if agent.armed_at is not None:
                break
            await asyncio.sleep(0.05)
        assert agent.armed_at is not None and agent.model_side.calls(("s", "s.A", "r1")) == 200
        agent.tool_ewma.learn_many(history)  # the learner is in-memory only: give it the same calls
        records = await agent.tick()
        assert {r.source for r in records} == {"latency_model"}, [(r.tool, r.source) for r in records]
        a = by_tool(records)["s.A"]
        assert a.weights["r1"] < 0.5 * min(a.weights["r0"], a.weights["r2"])

    asyncio.run(scenario())


def test_a_shadow_version_is_scored_beside_the_live_one(tmp_path: Path, registries: dict[str, Any]) -> None:
    import shutil

    from only1mcp.models.registry import ModelRegistry

    root = tmp_path / "models"
    shutil.copytree(registries["root"] / "bad_over_good", root)  # live: bad, previous: first
    registry = ModelRegistry(root)
    if registry.live().version != registries["first"]:  # (the rollback test may have done it already)
        registry.rollback("test")  # live: first; bad is retired and may be the shadow
    registry.set_shadow(registries["bad"])

    async def scenario() -> None:
        agent = agent_for(tmp_path, root)
        rng = random.Random(8)
        records = await run_ticks(agent, rng, 5)
        assert agent.live_version == registries["first"] and agent.shadow_version == registries["bad"]
        assert {r.source for r in records} == {"latency_model"}
        assert all(r.model_version == f"latency_model:{registries['first']}" for r in records)  # not acted on
        errors = agent.status()["live_error_ms"]
        assert agent.status()["live_error_n"]["shadow"] > 0
        assert errors["shadow"] > 2 * errors["live"]  # the 10× wrong model is seen to be wrong

    asyncio.run(scenario())


def test_the_river_challenger_goes_through_the_gate(tmp_path: Path, registries: dict[str, Any]) -> None:
    import shutil

    from only1mcp.models.registry import ModelRegistry

    root = tmp_path / "models"
    shutil.copytree(registries["root"] / "good", root)

    async def scenario() -> None:
        agent = agent_for(tmp_path, root, min_train_calls=300)
        agent.learning = dataclasses.replace(agent.learning, retrain_interval=3600.0)
        challenger = agent.challenger
        challenger.holdout, challenger.per_s = 100, 100_000
        challenger.next_gate, agent.retrainer.next_at = 0.0, float("inf")  # the challenger only, no retraining
        rng = random.Random(9)
        deadline = time.monotonic() + 30
        while agent.counters["river_registered"] == 0:
            assert time.monotonic() < deadline, agent.status()
            await run_ticks(agent, rng, 1, per_tick=120)
            if challenger.gate is not None:
                await asyncio.wait_for(challenger.gate, 20)
                await asyncio.sleep(0.05)
        assert agent.counters["river_learned"] >= 300 and len(challenger.pending) == 100
        rivers = [e for e in ModelRegistry(root).list() if e.metadata.get("kind") == "latency-river"]
        assert len(rivers) == 1 and rivers[0].status in ("live", "refused")  # the gate decided
        assert rivers[0].metadata["rows"]["holdout"] == 100
        if rivers[0].status == "live":
            await run_ticks(agent, rng, 2)
            assert agent.live_version == rivers[0].version

    asyncio.run(scenario())
