"""The decision subscriber's checks, record by record, on a real (unstarted) gateway: what is applied,
what is rejected and how it is counted. The broker side is in test_decisions.py."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from pathlib import Path

import pytest

from only1mcp.events import TOPICS, RoutingWeights
from only1mcp.proxy.gateway import Gateway
from only1mcp.proxy.metrics import ProxyMetrics
from only1mcp.settings import load_settings

TOPIC = TOPICS["routing_weights"]


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    path = tmp_path / "proxy.toml"
    path.write_text('[proxy]\nlisten = "127.0.0.1:1"\n[events]\nbootstrap = "127.0.0.1:1"\n'
                    '[[servers]]\nname = "l"\npolicy = "learned"\nsticky = true\n'
                    '[[servers.replicas]]\nurl = "http://127.0.0.1:2/mcp"\n[[servers.replicas]]\nurl = "http://127.0.0.1:3/mcp"\n'
                    '[[servers]]\nname = "w"\npolicy = "weighted"\n[[servers.replicas]]\nurl = "http://127.0.0.1:4/mcp"\n'
                    '[[servers]]\nname = "p"\n[[servers.replicas]]\nurl = "http://127.0.0.1:5/mcp"\n')
    gateway = Gateway(load_settings(path))
    gateway.catalog.update("l", "tools", [{"name": "echo"}])
    gateway.catalog.update("w", "tools", [{"name": "echo"}])
    return gateway


def record(server: str = "l", tool: str | None = "l__echo", valid_for: float = 30.0, **changes: object) -> bytes:
    now = time.time()
    base = RoutingWeights(decision_id=uuid.uuid4().hex, ts=now, valid_until=now + valid_for, server=server,
                          weights={f"{server}/0": 1.0}, tool=tool, model_version="m1", source="tool_ewma")
    return dataclasses.replace(base, **changes).to_json()


def test_each_record_is_applied_or_rejected_and_counted(gateway: Gateway) -> None:
    async def run() -> None:
        sub = gateway.subscriber
        assert sub is not None and sub.bootstrap == "127.0.0.1:1"  # [decisions] bootstrap "" = the events one
        assert sub.handle(TOPIC, record()) == "applied"
        learned = gateway.pools["l"].policy.inner  # under Sticky
        server, tools = learned.entries()
        assert server is None and tools["echo"].model_version == "m1"  # by the upstream name
        assert sub.handle(TOPIC, record(tool=None, predicted_ms={"l/1": [3.0, 5.0]})) == "applied"
        assert learned.entries()[0].curves == {"l/1": (3.0, 5.0)}
        assert sub.handle(TOPIC, record(server="w", tool=None)) == "applied"  # weighted: server-wide only
        assert gateway.pools["w"].policy.snapshot()["weights"] == {"w/0": 1.0}
        assert sub.handle(TOPIC, record(server="w")) == "rejected_policy"
        assert sub.handle(TOPIC, record(server="p", tool=None)) == "rejected_policy"
        assert sub.handle(TOPIC, record(server="zz", tool=None)) == "rejected_unknown"
        assert sub.handle(TOPIC, record(tool="l__nope")) == "rejected_unknown"
        assert sub.handle(TOPIC, record(tool="w__echo")) == "rejected_unknown"  # another server's tool
        assert sub.handle(TOPIC, record(weights={"l/5": 1.0})) == "rejected_unknown"
        assert sub.handle(TOPIC, record(predicted_ms={"w/0": [1.0]})) == "rejected_unknown"
        assert sub.handle(TOPIC, record(valid_for=-1.0)) == "rejected_stale"
        assert sub.handle(TOPIC, b"\xff not json") == "rejected_decode"
        assert sub.handle(TOPIC, None) == "rejected_decode"
        assert sub.handle("mcp.other", record()) == "rejected_decode"
        counts = sub.counts
        assert counts[("routing_weights", "received")] == 13 and counts[("routing_weights", "applied")] == 3
        assert counts[("routing_weights", "rejected_unknown")] == 5
        assert counts[("unknown", "rejected_decode")] == 1
        assert set(sub.ages()) == {"l", "w"} and all(0 <= age < 5 for age in sub.ages().values())

        metrics = ProxyMetrics()
        gateway.attach_metrics(metrics)
        text = metrics.render()[0].decode()
        assert 'only1mcp_decisions_total{kind="routing_weights",outcome="applied"} 3.0' in text
        assert 'only1mcp_decision_age_seconds{server="l"}' in text

    asyncio.run(run())


def test_no_broker_no_subscriber(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text('[proxy]\nlisten = "127.0.0.1:1"\n[[servers]]\nname = "l"\npolicy = "learned"\n'
                    '[[servers.replicas]]\nurl = "http://127.0.0.1:2/mcp"\n')
    gateway = Gateway(load_settings(path))
    assert gateway.subscriber is None and gateway.decision_counts() == {} and gateway.decision_ages() == {}


def test_the_subscriber_finds_a_late_topic_and_survives_a_broker_restart(tmp_path: Path) -> None:
    from aiokafka import AIOKafkaProducer

    from only1mcp.infra.broker import EmbeddedBroker, acreate_topics
    from only1mcp.proxy.decisions import DecisionSubscriber

    async def publish(bootstrap: str, model: str) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(TOPIC, record(tool=None, model_version=model))
        finally:
            await producer.stop()

    async def until(check, timeout: float = 15.0) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.05)

    async def run() -> None:
        path = tmp_path / "proxy.toml"
        path.write_text('[proxy]\nlisten = "127.0.0.1:1"\n[[servers]]\nname = "l"\npolicy = "learned"\n'
                        '[[servers.replicas]]\nurl = "http://127.0.0.1:2/mcp"\n')
        gateway = Gateway(load_settings(path))
        learned = gateway.pools["l"].policy
        broker = await EmbeddedBroker().astart()
        port = int(broker.bootstrap.rsplit(":", 1)[1])
        sub = DecisionSubscriber(gateway, gateway.settings.decisions, broker.bootstrap, discover_interval=0.3,
                                 refresh_interval=0.3)
        await sub.start()
        try:
            await until(lambda: sub.connected and sub.missing == [TOPIC, TOPICS["remediation"]])  # the defaults
            await acreate_topics(broker.bootstrap, [TOPIC], 2)
            await until(lambda: len(sub.assigned) == 2)
            await publish(broker.bootstrap, "before")
            await until(lambda: learned.entries()[0] is not None and learned.entries()[0].model_version == "before")
            await broker.astop()
            await until(lambda: not sub.connected)
            assert sub.last_error
            broker = await EmbeddedBroker(port=port).astart()  # memory storage: a new, empty log
            await acreate_topics(broker.bootstrap, [TOPIC], 2)
            deadline = time.monotonic() + 20.0
            while not (sub.connected and learned.entries()[0].model_version == "after"):  # published every
                assert time.monotonic() < deadline, sub.status()  # 0.3 s, as the learning loop would
                await publish(broker.bootstrap, "after")
                await asyncio.sleep(0.3)
        finally:
            await sub.stop()
            await broker.astop()

    asyncio.run(run())
