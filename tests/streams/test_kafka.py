"""streams/kafka.py against a real embedded broker: a batch topic's messages reach its handler a
fetch at a time, each offset once and in order; acks commit offsets; a topic consumed by an
ordinary Faust agent in the same app is still delivered one event at a time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from only1mcp.infra.broker import EmbeddedBroker
from only1mcp.streams.kafka import WorkerApp

PARTITIONS = 2
BATCHED, PLAIN = "batched-src", "plain-src"


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        running.create_topics([BATCHED, PLAIN], PARTITIONS)
        yield running


def _app(bootstrap: str, group: str, datadir: Path) -> WorkerApp:
    app = WorkerApp(group, broker=f"kafka://{bootstrap}", store="memory://", topic_partitions=PARTITIONS,
                    topic_replication_factor=1, consumer_auto_offset_reset="earliest", web_enabled=False,
                    broker_rebalance_timeout=3.0, broker_session_timeout=10.0, broker_heartbeat_interval=1.0,
                    broker_commit_interval=0.5, datadir=str(datadir), autodiscover=False)
    app.fetch_max_wait_ms = 100
    return app


async def _produce(bootstrap: str, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sends = [await producer.send(topic, f"{i}".encode(), partition=i % PARTITIONS) for i in range(n)]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum([await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS)])
    finally:
        await consumer.stop()


async def _until(check: Any, what: str, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def test_batch_topic_delivers_fetches_and_commits_acks(broker: EmbeddedBroker, tmp_path: Path) -> None:
    n_batched, n_plain, group = 6000, 50, f"t-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[list[list[Any]], list[bytes], int, set[Any]]:
        await _produce(broker.bootstrap, BATCHED, n_batched)  # a backlog: fetches of many records
        await _produce(broker.bootstrap, PLAIN, n_plain)
        app = _app(broker.bootstrap, group, tmp_path)
        batches: list[list[Any]] = []
        plain: list[bytes] = []

        async def handler(messages: list[Any]) -> None:
            batches.append(messages)
            for message in messages:
                app.consumer.ack(message)

        app.batch_topic(app.topic(BATCHED, value_type=bytes, value_serializer="raw"), handler)

        @app.agent(app.topic(PLAIN, value_type=bytes, value_serializer="raw"))
        async def plain_agent(stream: Any) -> None:
            async for value in stream:
                plain.append(value)

        await app.start()
        try:
            await _until(lambda: sum(map(len, batches)) >= n_batched and len(plain) >= n_plain, "every record")
            committed = 0
            for _ in range(60):  # the commit timer (0.5 s) commits what was acked
                committed = await _committed(broker.bootstrap, group, BATCHED)
                if committed == n_batched:
                    break
                await asyncio.sleep(0.5)
            monitored = {tp for tp in app.monitor.stream_inbound_time if tp.topic == BATCHED}
        finally:
            await app.stop()
        return batches, plain, committed, monitored

    batches, plain, committed, monitored = asyncio.run(scenario())
    assert max(map(len, batches)) > 1, "the handler was called per message"
    assert len(batches) < n_batched / 10
    by_partition: dict[int, list[int]] = {}
    for message in (m for batch in batches for m in batch):
        assert message.topic == BATCHED
        by_partition.setdefault(message.partition, []).append(message.offset)
    for offsets in by_partition.values():  # every offset once, in order
        assert offsets == list(range(len(offsets)))
    assert sum(map(len, by_partition.values())) == n_batched
    assert sorted(plain, key=int) == [f"{i}".encode() for i in range(n_plain)]
    assert {tp.partition for tp in monitored} == set(range(PARTITIONS))  # Faust's livelock check sees them processed
    assert committed == n_batched


def test_unacked_messages_are_not_committed(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """The handler decides: what it does not ack is read again by the group's next consumer."""
    group = f"t-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[int, int]:
        await _produce(broker.bootstrap, BATCHED, 400)
        app = _app(broker.bootstrap, group, tmp_path)
        seen: list[Any] = []

        async def handler(messages: list[Any]) -> None:
            seen.extend(messages)
            for message in messages:
                if message.offset < 100:  # ack only the first 100 of each partition
                    app.consumer.ack(message)

        app.batch_topic(app.topic(BATCHED, value_type=bytes, value_serializer="raw"), handler)
        await app.start()
        try:
            await _until(lambda: len(seen) >= 400, "every record")
            await asyncio.sleep(2.0)  # commit intervals pass; only acked offsets may be committed
        finally:
            await app.stop()
        return len(seen), await _committed(broker.bootstrap, group, BATCHED)

    seen, committed = asyncio.run(scenario())
    assert seen == 400
    assert committed == 100 * PARTITIONS


def test_out_of_order_acks_commit_only_from_the_committed_position(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Acks that skip the oldest records commit nothing until those are acked too (Faust's own
    rule committed the first run of acked offsets wherever it started, on a partition with no
    committed offset yet: records still held were skipped by the next owner)."""
    group = f"t-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[int, int]:
        await _produce(broker.bootstrap, BATCHED, 400)  # 200 per partition
        app = _app(broker.bootstrap, group, tmp_path)
        held: list[Any] = []

        async def handler(messages: list[Any]) -> None:
            for message in messages:
                if message.offset < 50:
                    held.append(message)  # waits, as a record of an open window does
                else:
                    app.consumer.ack(message)

        app.batch_topic(app.topic(BATCHED, value_type=bytes, value_serializer="raw"), handler)
        await app.start()
        try:
            await _until(lambda: len(held) >= 100, "the held records")
            await asyncio.sleep(2.0)  # commit intervals pass
            before = await _committed(broker.bootstrap, group, BATCHED)
            for message in held:
                app.consumer.ack(message)
            after = 0
            for _ in range(40):
                after = await _committed(broker.bootstrap, group, BATCHED)
                if after == 400:
                    break
                await asyncio.sleep(0.25)
        finally:
            await app.stop()
        return before, after

    before, after = asyncio.run(scenario())
    assert before == 0, f"{before} offsets committed past records still held"
    assert after == 400
