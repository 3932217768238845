"""The anomaly agent: in process (its lifecycle, policy, failures and saved state, with records
captured instead of sent) and end to end (``only1mcp worker`` on a real embedded broker, records
produced to ``mcp.requests``, AnomalyEvent and Remediation records read back from their topics)."""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from only1mcp.events import TOPICS, AnomalyEvent, Remediation, RequestEvent
from only1mcp.models.anomaly.base import Assessment, DetectorStateError
from only1mcp.settings import Settings
from only1mcp.streaming import AnomalySettings, StoreSettings
from only1mcp.streams.anomaly import AnomalyAgent
from only1mcp.streams.anomaly_features import Aggregator

TICK = 0.25


class Captured:
    """Stands in for QueuedPublisher: keeps what would have been sent."""

    def __init__(self) -> None:
        self.records: list[tuple[str, Any, bool]] = []
        self.dropped = self.failed = self.sent = 0

    def publish(self, topic: str, records: list[Any], droppable: bool = False) -> bool:
        self.records += [(topic, r, droppable) for r in records]
        return True

    async def close(self) -> None:
        pass


class Remembering:
    """A small ensemble for the agent's own mechanics (state, failures): its score is the running
    mean of error_rate, and its state is that mean — enough to tell a restored one from a fresh one."""

    def __init__(self, features: Any, **options: Any) -> None:
        self.n, self.total = 0, 0.0

    def assess_one(self, x: Any, t: float) -> Assessment:
        rate = x.get("error_rate", math.nan)
        score = self.total / self.n if self.n else 0.0
        if rate == rate:
            self.n, self.total = self.n + 1, self.total + rate
        return Assessment(score=score, severity=None, confidence=0.5, detectors={}, features={}, kind="",
                          explanation="")

    def state(self) -> dict[str, Any]:
        return {"name": "remembering", "n": self.n, "total": self.total}

    def restore(self, state: Any) -> None:
        if state.get("name") != "remembering":
            raise DetectorStateError("not mine")
        self.n, self.total = state["n"], state["total"]


class Raising(Remembering):
    def assess_one(self, x: Any, t: float) -> Assessment:
        raise RuntimeError("a detector exploded")


def settings(tmp: Path, **anomaly: Any) -> Settings:
    return Settings(store=StoreSettings(data_dir=str(tmp / "data")),
                    anomaly=AnomalySettings(**{"close_after": 2.0, **anomaly}))


def agent(tmp: Path, factory: Any = None, **anomaly: Any) -> AnomalyAgent:
    a = AnomalyAgent(settings(tmp, **anomaly), publisher=Captured(), ensemble_factory=factory)
    if factory is None:
        a.factory = None  # the down rule alone, whatever models/ holds
    return a


def call(replica: str, status: str, ts: float, latency: float = 20.0, tool: str = "search") -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "ts": ts, "method": "tools/call", "server": "sim", "replica": replica,
            "tool": tool, "status": status, "latency_ms": latency, "inflight": 1, "cache_hit": False,
            "error_class": None if status == "ok" else "upstream_failed"}


def traffic(rng: random.Random, now: float, failing: set[str] = frozenset(), per_replica: int = 3,
            error_rate: float = 0.01) -> list[dict[str, Any]]:
    """One tick of normal traffic for sim/0..2 (lognormal latency, rare errors); ``failing`` replicas fail."""
    out = []
    for replica in ("sim/0", "sim/1", "sim/2"):
        for i in range(per_replica):
            bad = replica in failing or rng.random() < error_rate
            out.append(call(replica, "error" if bad else "ok", now + i * 0.01, 20.0 * rng.lognormvariate(0, 0.3),
                            tool=rng.choice(("search", "fetch"))))
    return out


def drive(a: AnomalyAgent, ticks: int, start: float, rng: random.Random, failing: set[str] = frozenset()) -> float:
    now = start
    for _ in range(ticks):
        a.observe(traffic(rng, now, failing))
        a.tick(now)
        now += TICK
    return now


def published(a: AnomalyAgent) -> tuple[list[AnomalyEvent], list[Remediation]]:
    records = a.publisher.records
    return ([r for t, r, _ in records if t == TOPICS["anomalies"]], [r for t, r, _ in records if t == TOPICS["remediation"]])


def test_a_crash_opens_critical_ejects_at_once_and_recovery_closes_and_restores(tmp_path: Path) -> None:
    a, rng, start = agent(tmp_path), random.Random(1), time.time()
    now = drive(a, 40, start, rng)
    assert published(a) == ([], [])
    now = drive(a, 1, now, rng, failing={"sim/1"})  # three failures: not yet "down"
    assert published(a) == ([], [])
    now = drive(a, 1, now, rng, failing={"sim/1"})  # six in a row: down, at this very tick
    events, decisions = published(a)
    assert [(e.state, e.severity, e.replica, e.kind, e.tool) for e in events] == [
        ("open", "critical", "sim/1", "down", None)]
    assert [(d.action, d.replica, d.anomaly_id) for d in decisions] == [("eject", "sim/1", events[0].anomaly_id)]
    assert decisions[0].valid_until == pytest.approx(decisions[0].ts + 5.0)
    assert not a.publisher.records[-1][2]  # the first eject is queued for sure, not droppable
    now = drive(a, 8, now, rng, failing={"sim/1"})  # still down: the eject is refreshed every tick
    events, decisions = published(a)
    assert len(events) == 1 and [d.action for d in decisions] == ["eject"] * 9
    assert all(droppable for t, r, droppable in a.publisher.records[2:])  # refreshes may be skipped
    # Recovery: quiet for close_after (2 s) → close with the peak severity, then one restore.
    now = drive(a, 7, now, rng)
    assert [e.state for e in published(a)[0]] == ["open"]
    assert published(a)[1][-1].action == "eject"  # holds until the close
    drive(a, 4, now, rng)
    events, decisions = published(a)
    assert [(e.state, e.severity) for e in events] == [("open", "critical"), ("close", "critical")]
    assert events[1].anomaly_id == events[0].anomaly_id and events[1].opened_at == events[0].opened_at
    assert decisions[-1].action == "restore" and [d.action for d in decisions].count("restore") == 1
    assert "back to normal" in events[1].explanation and a.tracks == {}


def test_updates_are_material_and_at_most_once_a_second(tmp_path: Path) -> None:
    from only1mcp.streams.anomaly_lifecycle import step

    cfg = AnomalySettings(close_after=2.0)
    entity = ("sim", "sim/0", None)

    def verdict(score: float, severity: str | None) -> Assessment:
        return Assessment(score=score, severity=severity, confidence=0.8, detectors={"spc": score}, features={},
                          kind="latency", explanation="slow")

    track, state = step(None, verdict(0.6, "medium"), entity, 100.0, cfg)
    assert state == "open"
    track.published_at, track.published_score, track.published_severity = 100.0, 0.6, "medium"
    assert step(track, verdict(0.65, "medium"), entity, 100.25, cfg)[1] is None  # moved < 0.1
    assert step(track, verdict(0.75, "medium"), entity, 100.5, cfg)[1] is None  # material, but < 1 s since
    assert step(track, verdict(0.75, "medium"), entity, 101.0, cfg)[1] == "update"
    track.published_at, track.published_score = 101.0, 0.75
    assert step(track, verdict(0.8, "high"), entity, 102.0, cfg)[1] == "update"  # severity changed
    track.published_at, track.published_severity = 102.0, "high"
    assert step(track, verdict(0.1, None), entity, 102.25, cfg)[1] is None  # one quiet tick closes nothing
    assert step(track, verdict(0.85, "high"), entity, 102.5, cfg)[1] is None
    for t in (103.0, 104.0):
        assert step(track, verdict(0.1, None), entity, t, cfg)[1] is None
    assert step(track, verdict(0.1, None), entity, 105.0, cfg)[1] == "close"


def test_the_severity_policy(tmp_path: Path) -> None:
    from only1mcp.streams.anomaly_lifecycle import Track, remediations

    cfg = AnomalySettings()

    def actions(severity: str, confidence: float, tool: str | None = None) -> list[str]:
        a = Assessment(score=0.9, severity=severity, confidence=confidence, detectors={}, features={}, kind="latency",
                       explanation="x")
        track = Track(entity=("sim", "sim/0", tool), opened_at=0.0, last=a, seen={severity: 0.0})
        return [r.action for r in remediations(track, 0.1, cfg, "v")]

    assert actions("critical", 0.5) == ["eject"]
    assert actions("high", 0.95) == ["drain"] and actions("high", 0.8) == ["alert"]
    assert actions("medium", 1.0) == [] and actions("low", 1.0) == []
    assert actions("critical", 1.0, tool="search") == ["alert"]  # one tool never takes a replica out


def quiet_run(tmp: Path, error_rate: float) -> tuple[list[AnomalyEvent], list[Remediation], AnomalyAgent]:
    """600 ticks (150 s, 150 windows) of healthy traffic, 12 calls/s per replica, lognormal latency."""
    ensemble = pytest.importorskip("only1mcp.models.anomaly.ensemble")
    a, rng = agent(tmp, factory=ensemble.default_ensemble, close_after=10.0), random.Random(2)
    now = time.time() - 600 * TICK
    for _ in range(600):
        a.observe(traffic(rng, now, error_rate=error_rate))
        a.tick(now)
        now += TICK
    assert a.counters["errors"]["ensemble"] == 0 and a.counters["assessed"] >= 3 * 149
    return (*published(a), a)


def test_a_healthy_fleet_is_never_ejected_or_drained(tmp_path: Path) -> None:
    events, decisions, a = quiet_run(tmp_path, error_rate=0.0)
    opened = [(e.severity, e.replica, e.explanation) for e in events if e.state == "open"]
    print(f"\n{len(opened)} anomalies opened on healthy traffic: {opened}")
    assert [d.action for d in decisions if d.action in ("eject", "drain")] == []
    assert all(e.severity != "critical" for e in events)


def test_rare_random_errors_do_not_eject_a_healthy_replica(tmp_path: Path) -> None:
    events, decisions, a = quiet_run(tmp_path, error_rate=0.01)
    opened = [(e.severity, e.replica, e.explanation) for e in events if e.state == "open"]
    print(f"\n{len(opened)} anomalies opened on healthy traffic with 1 % random errors: {opened}")
    assert [(d.action, d.reason) for d in decisions if d.action in ("eject", "drain")] == []


def test_poison_and_a_raising_ensemble_do_not_stop_the_agent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, rng = agent(tmp_path, factory=Raising), random.Random(3)
    a.observe([{"method": "tools/call", "server": "sim", "replica": "sim/0", "status": "ok", "latency_ms": "slow"},
               {"nothing": "here"}, None])  # type: ignore[list-item]
    now = drive(a, 30, time.time(), rng)
    now = drive(a, 3, now, rng, failing={"sim/2"})
    events, decisions = published(a)
    assert [(e.state, e.replica) for e in events] == [("open", "sim/2")]  # the down rule still judges
    assert a.counters["errors"]["ensemble"] >= 3 * 8 and a.counters["calls"] == 33 * 9  # poison skipped
    assert sum("raised" in r.getMessage() for r in caplog.records if r.levelname == "WARNING") == 1  # logged once


def test_state_survives_a_restart_and_a_corrupt_file_starts_fresh(tmp_path: Path) -> None:
    entity = ("sim", "sim/1", None)
    x, t = {"calls_per_s": 5.0, "error_rate": 0.2, "timeout_rate": 0.0, "latency_p50_ms": 20.0,
            "latency_p95_ms": 40.0}, time.time()

    def roundtrip(factory: Any) -> None:
        first = agent(tmp_path, factory=factory)
        drive(first, 80, t - 80 * TICK, random.Random(4))
        asyncio.run(first.save())
        second = agent(tmp_path, factory=factory)
        assert second.restore() == len(first.ensembles) > 0
        a, b = first.ensembles[entity].assess_one(x, t), second.ensembles[entity].assess_one(x, t)
        assert (a.score, a.severity, dict(a.detectors)) == (b.score, b.severity, dict(b.detectors))

    roundtrip(Remembering)
    ensemble = pytest.importorskip("only1mcp.models.anomaly.ensemble")
    roundtrip(ensemble.default_ensemble)


def test_a_corrupt_state_file_is_logged_and_the_agent_starts_fresh(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    a = agent(tmp_path, factory=Remembering)
    a.path.parent.mkdir(parents=True)
    a.path.write_text('{"version": 1, "entities": [')
    assert a.restore() == 0 and "does not load" in caplog.text
    a.path.write_text(json.dumps({"version": 1, "features": list(a.config.features), "entities": [
        {"server": "sim", "replica": "sim/0", "tool": None, "state": {"name": "someone else's"}},
        {"server": "sim", "replica": "sim/1", "tool": None, "state": {"name": "remembering", "n": 2, "total": 1.0}}]}))
    assert a.restore() == 1 and a.counters["errors"]["restore"] == 1
    drive(a, 5, time.time(), random.Random(5))  # and it serves
    assert a.counters["ticks"] == 5 and not list(a.path.parent.glob(".*"))  # no temp file left behind


def test_windows_tumble_per_entity_and_stretch_until_they_hold_min_calls() -> None:
    agg = Aggregator(window_s=1.0, min_calls=4, max_window_s=4.0)
    now = time.time()
    assert agg.roll(now) == {}
    busy = [call("sim/0", s, now, v) for s, v in (("ok", 10.0), ("timeout", 5000.0), ("ok", 20.0), ("ok", 30.0))]
    agg.add_many([*busy, call("sim/1", "ok", now, 99.0), {"method": "ping"}])
    assert agg.roll(now + 0.5) == {}  # younger than window
    observed = agg.roll(now + 1.0)
    x = observed[("sim", "sim/0", None)]
    assert (x["calls_per_s"], x["error_rate"], x["timeout_rate"], x["latency_p50_ms"]) == (4.0, 0.25, 0.25, 20.0)
    assert ("sim", "sim/0", "search") in observed  # per replica × tool too
    assert ("sim", "sim/1", None) not in observed  # one call: its window stretches
    agg.add_many([call("sim/1", "ok", now + 2, v) for v in (10.0, 20.0, 30.0)])
    x = agg.roll(now + 2.5)[("sim", "sim/1", None)]  # four calls now: closed, over 2.5 s
    assert x["calls_per_s"] == pytest.approx(4 / 2.5) and x["latency_p95_ms"] > 80
    agg.add_many([call("sim/1", "error", now + 3)])
    assert agg.roll(now + 6.0) == {}
    x = agg.roll(now + 6.5)[("sim", "sim/1", None)]  # max_window reached with one call: rates unknown
    assert x["calls_per_s"] == pytest.approx(1 / 4.0) and math.isnan(x["error_rate"])
    assert agg.roll(now + 20.0) == {}  # no calls: no observation
    assert agg.streak(("sim", "sim/1", None)) == (1, now + 3)


# -- end to end: a real broker, a real worker --------------------------------------------------------


@pytest.fixture
def broker() -> Any:
    from only1mcp.infra.broker import EmbeddedBroker

    with EmbeddedBroker() as running:
        running.create_topics([TOPICS["requests"], TOPICS["dead_letter"], TOPICS["anomalies"], TOPICS["remediation"]], 2)
        yield running


def test_worker_ejects_a_crashed_replica_within_a_second_and_restores_it(broker: Any, stack: Any, tmp_path: Path,
                                                                          shared_redis: str) -> None:
    config = tmp_path / "worker.toml"
    config.write_text(f'[worker]\nbootstrap = "{broker.bootstrap}"\ngroup = "anomaly-{uuid.uuid4().hex[:8]}"\n'
                      f'partitions = 2\n[store]\nredis_url = "{shared_redis}"\nkey_prefix = "t-{uuid.uuid4().hex[:8]}"\n'
                      f'data_dir = "{tmp_path / "data"}"\n[learning]\nenabled = false\n'
                      f"[anomaly]\nclose_after = 2.0\nsave_interval = 1.0\n")
    worker = stack.start("worker", [sys.executable, "-m", "only1mcp.cli", "worker", "--config", str(config)])
    asyncio.run(_crash_scenario(broker.bootstrap, worker, tmp_path))


async def _crash_scenario(bootstrap: str, worker: Any, tmp: Path) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(TOPICS["anomalies"], TOPICS["remediation"], bootstrap_servers=bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    seen: list[Any] = []
    failing: set[str] = set()
    first_failure: dict[str, float] = {}

    async def send_traffic() -> None:  # 30 calls/s per replica, as a proxy would emit them
        rng = random.Random(6)
        while True:
            now = time.time()
            for replica in ("sim/0", "sim/1", "sim/2", "sim/9"):
                status = "error" if replica in failing else "ok"
                if status == "error":
                    first_failure.setdefault(replica, now)
                event = RequestEvent(event_id=uuid.uuid4().hex, ts=now, latency_ms=20 * rng.lognormvariate(0, 0.3),
                                     method="tools/call", status=status, server="sim", replica=replica, tool="search",
                                     error_class=None if status == "ok" else "upstream_failed")
                await producer.send(TOPICS["requests"], event.to_json(), key=replica.encode())
            await asyncio.sleep(1 / 30)

    async def read() -> None:
        async for message in consumer:
            cls = AnomalyEvent if message.topic == TOPICS["anomalies"] else Remediation
            seen.append(cls.from_json(message.value))

    async def until(check: Any, what: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in seen if check(r)]
            if found:
                return found[0]
            assert worker.alive(), f"the worker died waiting for {what}:\n{worker.log_tail(30)}"
            assert time.monotonic() < deadline, f"no {what} in {timeout:g}s: {seen}\n{worker.log_tail(30)}"
            await asyncio.sleep(0.02)

    tasks = [asyncio.ensure_future(send_traffic()), asyncio.ensure_future(read())]
    try:
        # A canary crash tells when the worker is live (joining the group takes a while on tansu).
        failing.add("sim/9")
        await until(lambda r: isinstance(r, AnomalyEvent) and r.replica == "sim/9", "canary anomaly", 90)
        failing.discard("sim/9")
        await asyncio.sleep(3.0)
        failing.add("sim/1")  # sim/1 crashes: every call fails from now on
        opened = await until(lambda r: isinstance(r, AnomalyEvent) and r.replica == "sim/1" and r.state == "open",
                             "open anomaly of sim/1", 10)
        eject = await until(lambda r: isinstance(r, Remediation) and r.replica == "sim/1" and r.action == "eject",
                            "eject of sim/1", 10)
        latency = eject.ts - first_failure["sim/1"]
        print(f"\ncrash → eject decided {latency * 1000:.0f} ms after the first failing call was produced "
              f"(open at {(opened.ts - first_failure['sim/1']) * 1000:.0f} ms)")
        assert (opened.severity, opened.kind, eject.anomaly_id) == ("critical", "down", opened.anomaly_id)
        assert latency < 1.0, latency
        await asyncio.sleep(2.0)
        failing.discard("sim/1")  # it is back
        back = time.time()
        closed = await until(lambda r: isinstance(r, AnomalyEvent) and r.anomaly_id == opened.anomaly_id
                             and r.state == "close", "close of sim/1", 20)
        restore = await until(lambda r: isinstance(r, Remediation) and r.replica == "sim/1" and r.action == "restore",
                              "restore of sim/1", 5)
        assert closed.ts - back >= 2.0 and restore.anomaly_id == opened.anomaly_id
        assert (tmp / "data" / "anomaly").is_dir()  # state saved every second
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await consumer.stop()
        await producer.stop()


def test_the_queued_publisher_delivers_open_and_close_through_a_broker_pause(broker: Any) -> None:
    from aiokafka import AIOKafkaConsumer

    from only1mcp.streams.publisher import QueuedPublisher

    topic = TOPICS["anomalies"]
    opened = AnomalyEvent(anomaly_id="a1", ts=time.time(), state="open", server="sim", replica="sim/1", score=1.0,
                          severity="critical", confidence=1.0, kind="down")

    async def scenario() -> list[str]:
        publisher = QueuedPublisher(broker.bootstrap, key=lambda r: r.replica)
        publisher.publish(topic, [opened])
        while publisher.sent < 1:
            await asyncio.sleep(0.05)
        broker.pause()
        try:
            publisher.publish(topic, [_with(opened, state="update")])
            publisher.publish(topic, [_with(opened, state="close")])
            refresh = Remediation(decision_id="d", ts=time.time(), valid_until=time.time() + 5, server="sim",
                                  replica="sim/1", action="eject", severity="critical", confidence=1.0)
            assert not publisher.publish(TOPICS["remediation"], [refresh], droppable=True)  # a backlog waits
            await asyncio.sleep(6.0)  # past the producer's request timeout: a failed attempt, retried
            assert publisher.sent == 1
        finally:
            broker.resume()
        deadline = time.monotonic() + 30
        while publisher.sent < 3:
            assert time.monotonic() < deadline, (publisher.sent, publisher.failed, publisher.waiting)
            await asyncio.sleep(0.1)
        await publisher.close()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=None,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=3000)
        finally:
            await consumer.stop()
        states = [AnomalyEvent.from_json(m.value).state for b in batches.values() for m in b]
        return list(dict.fromkeys(states))  # at least once: a retried batch may be there twice

    assert asyncio.run(scenario()) == ["open", "update", "close"]


def _with(event: AnomalyEvent, **changes: Any) -> AnomalyEvent:
    import dataclasses

    return dataclasses.replace(event, **changes)


def test_only_the_worker_holding_partition_0_publishes(tmp_path: Path) -> None:
    parts: set[int] | None = {1, 2}
    a = AnomalyAgent(settings(tmp_path), publisher=Captured(), assignment=lambda: parts)
    a.factory = None
    now = drive(a, 10, time.time(), random.Random(8), failing={"sim/1"})
    assert a.mode == "passive" and published(a) == ([], []) and a.agg.streaks == {}
    parts = set()  # mid-rebalance: nothing assigned yet, the mode stays
    drive(a, 1, now, random.Random(8))
    assert a.mode == "passive"
    parts = {0, 3}  # partition 0 among others': it assesses what its own reader of every partition sees
    now = drive(a, 10, now, random.Random(8), failing={"sim/1"})  # what the worker folds is partial: ignored
    assert a.mode == "own" and published(a) == ([], [])
    rng = random.Random(8)
    for _ in range(10):
        a._own.observe(traffic(rng, now, {"sim/1"}))  # the reader's callback (a broker-backed test: routing's)
        a.tick(now)
        now += TICK
    assert [e.state for e in published(a)[0]] == ["open"]
    parts = {0, 1, 2, 3}
    drive(a, 1, now, random.Random(8))
    assert a.mode == "fold"


class SlowJudge(Remembering):
    """Critical when the window's median latency passes 100 ms, nothing otherwise."""

    def assess_one(self, x: Any, t: float) -> Assessment:
        slow = x.get("latency_p50_ms", math.nan) > 100.0
        return Assessment(score=0.99 if slow else 0.0, severity="critical" if slow else None, confidence=1.0,
                          detectors={}, features={"latency_p50_ms": 9.0 if slow else 0.0},
                          kind="latency" if slow else "", explanation="slow" if slow else "")


def test_a_starved_slow_replica_is_confirmed_across_thin_windows(tmp_path: Path) -> None:
    """Routing sends a slowing replica a call every few seconds: its windows stretch to max_window and
    most hold fewer than min_calls calls (no evidence). Two slow evidence windows 25 s apart still
    confirm each other; the thin windows between neither confirm nor reset the streak."""
    a = agent(tmp_path, factory=SlowJudge, confirm_windows=2, confirm_within=60.0, max_window=5.0, close_after=30.0)
    now = time.time() - 60.0

    def window_of(calls: int, latency: float) -> None:
        nonlocal now
        a.observe([call("sim/0", "ok", now + 0.01 * i, latency) for i in range(calls)])
        for _ in range(int(6.0 / TICK)):  # past max_window: the window closes
            a.tick(now)
            now += TICK

    window_of(5, 400.0)  # evidence: slow, not confirmed yet
    assert published(a)[0] == []
    for _ in range(4):
        window_of(2, 400.0)  # thin: too few calls to count
    assert published(a)[0] == []
    window_of(5, 400.0)  # the second slow evidence window, 25 s after the first
    events, decisions = published(a)
    assert [(e.state, e.severity, e.replica) for e in events] == [("open", "critical", "sim/0")]
    assert [d.action for d in decisions][:1] == ["eject"]


def test_slow_evidence_windows_beyond_confirm_within_do_not_confirm(tmp_path: Path) -> None:
    a = agent(tmp_path, factory=SlowJudge, confirm_windows=2, confirm_within=20.0, max_window=5.0)
    now = time.time() - 60.0
    for calls in (5, 2, 2, 2, 2, 5):  # slow evidence 30 s apart, thin windows between
        a.observe([call("sim/0", "ok", now + 0.01 * i, 400.0) for i in range(calls)])
        for _ in range(int(6.0 / TICK)):
            a.tick(now)
            now += TICK
    assert published(a)[0] == []
