"""Request events from the proxy to Kafka, against a real embedded broker (tansu): delivery,
outages (SIGSTOP), the disk spool's budget, order, restarts and fsync policies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from only1mcp.events import RequestEvent
from only1mcp.infra.broker import EmbeddedBroker, create_topics
from only1mcp.proxy.events import COUNTER_KEYS, KafkaSink, MemorySink, NullSink, make_sink
from only1mcp.proxy.events.spool import Spool, SpoolError
from only1mcp.streaming import EventSettings

REPLICAS = ("fs-1", "fs-2", None, "db-1")


@pytest.fixture(scope="module")
def broker():
    with EmbeddedBroker() as running:
        yield running


_topics = iter(range(10**6))


def new_topic(broker: EmbeddedBroker, partitions: int = 1) -> str:
    name = f"mcp.requests.t{next(_topics)}"
    create_topics(broker.bootstrap, [name], partitions)
    return name


def unreachable() -> str:
    import socket

    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def events(count: int, start: int = 0) -> list[RequestEvent]:
    """Events whose order is in request_bytes (the sequence number) and event_id."""
    return [RequestEvent(event_id=f"{i:032x}", ts=1_700_000_000 + i / 1000, latency_ms=1.5 + i % 7,
                         method="tools/call", status="ok" if i % 11 else "error", proxy_id="test",
                         tool=f"t{i % 5}", server="fs", replica=REPLICAS[i % len(REPLICAS)],
                         request_bytes=i, args_hash=f"{i:032x}", cache_hit=i % 3 == 0, attempts=1)
            for i in range(start, start + count)]


def sink_for(bootstrap: str, topic: str, spool_dir: Path, **settings: object) -> KafkaSink:
    stall_s = settings.pop("stall_s", 0.5)
    return KafkaSink(EventSettings(bootstrap=bootstrap, topic=topic, spool_dir=str(spool_dir), **settings),
                     stall_s=stall_s)


async def until(condition: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def consume(bootstrap: str, topic: str, count: int, timeout_s: float = 15.0, settle_s: float = 0.5) -> list:
    """Read the topic from the start until ``count`` records arrived (and a little more, to see extras)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, max_poll_records=5000)
    await consumer.start()
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(messages)
            if len(records) >= count:
                deadline = min(deadline, time.monotonic() + settle_s)
    finally:
        await consumer.stop()
    return sorted(records, key=lambda r: (r.partition, r.offset))


def assert_exactly_once_in_order(records: list, sent: list[RequestEvent]) -> None:
    decoded = [RequestEvent(**orjson.loads(r.value)) for r in records]  # from_json is ~0.3 ms: too slow here
    ids = [e.event_id for e in decoded]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicates"
    assert sorted(ids) == sorted(e.event_id for e in sent), "missing or foreign events"
    assert [e.request_bytes for e in decoded] == [e.request_bytes for e in sent], "order changed"
    assert decoded == sent


def segment_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.seg"))


# -- choosing a sink -----------------------------------------------------------------------


def test_make_sink_picks_null_without_bootstrap_and_kafka_with_it(tmp_path: Path) -> None:
    assert isinstance(make_sink(EventSettings()), NullSink)
    sink = make_sink(EventSettings(bootstrap=unreachable(), spool_dir=str(tmp_path)))
    assert isinstance(sink, KafkaSink)
    memory = MemorySink()
    for each in (NullSink(), memory, sink):
        each.emit(events(1)[0])
        assert set(COUNTER_KEYS) <= set(each.counters()) and each.counters()["emitted"] == 1
    assert memory.events == events(1)
    sink.spool.close()


def test_emit_never_raises_and_counts_what_it_cannot_take(tmp_path: Path) -> None:
    sink = sink_for(unreachable(), "t", tmp_path, queue_size=1)
    sink.emit(object())  # type: ignore[arg-type]
    sink.emit(events(1)[0])  # fills the queue
    sink.emit(RequestEvent(event_id="x", ts=complex(1, 1), latency_ms=0, method="m", status="ok"))  # type: ignore[arg-type]
    counters = sink.counters()
    assert counters["emitted"] == 3 and counters["dropped"] == 2 and counters["queue_depth"] == 1
    sink.spool.close()


# -- delivery ------------------------------------------------------------------------------


def test_events_arrive_intact_keyed_by_replica(broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = new_topic(broker, partitions=3)
    sent = events(3000)

    async def scenario() -> tuple[list, dict]:
        sink = sink_for(broker.bootstrap, topic, tmp_path)
        await sink.start()
        for event in sent:
            sink.emit(event)
        await until(lambda: sink.counters()["delivered"] == len(sent), what="delivery")
        counters = sink.counters()
        await sink.stop()
        return await consume(broker.bootstrap, topic, len(sent)), counters

    records, counters = asyncio.run(scenario())
    assert counters["broker_up"] is True and counters["dropped"] == 0 and counters["spooled"] == 0
    assert counters["idempotent"] is False  # tansu refuses InitProducerId: the sink fell back
    assert len(records) == len(sent)
    decoded = [RequestEvent.from_json(r.value) for r in records]  # (decoding costs ~0.3 ms: once)
    assert sorted(decoded, key=lambda e: e.request_bytes) == sent  # every field intact
    keyed: dict[bytes | None, list[int]] = {}
    for record, event in zip(records, decoded):
        assert record.key == (event.replica.encode() if event.replica else None)
        keyed.setdefault(record.key, []).append(event.request_bytes)
    # Per key the emit order is kept (keyless events spread over the partitions).
    assert all(seq == sorted(seq) for key, seq in keyed.items() if key is not None)
    assert not segment_files(tmp_path)


def test_a_frozen_broker_never_blocks_emit_and_loses_or_repeats_nothing(tmp_path: Path) -> None:
    with EmbeddedBroker() as broker:
        topic = new_topic(broker)
        before, during, after = events(500), events(10_000, start=500), events(500, start=10_500)

        async def scenario() -> tuple[float, dict, dict, list]:
            sink = sink_for(broker.bootstrap, topic, tmp_path, queue_size=1000, batch_size=200)
            await sink.start()
            for event in before:
                sink.emit(event)
            await until(lambda: sink.counters()["delivered"] == len(before), what="first delivery")
            broker.pause()
            try:
                started = time.perf_counter()
                for event in during:
                    sink.emit(event)
                took = time.perf_counter() - started
                await asyncio.sleep(2.0)  # the broker stays frozen a while
                frozen = sink.counters()
                assert segment_files(tmp_path), "nothing spooled to disk"
            finally:
                broker.resume()
            for event in after:
                sink.emit(event)
            total = len(before) + len(during) + len(after)
            await until(lambda: sink.counters()["delivered"] >= total, timeout_s=30, what="catching up")
            done = sink.counters()
            await sink.stop()
            return took, frozen, done, await consume(broker.bootstrap, topic, total)

        took, frozen, done, records = asyncio.run(scenario())
    print(f"10k emits with the broker frozen: {took * 1000:.1f} ms")
    # ~50 ms on a quiet machine; a send that waited on the frozen broker would wait out its request timeout
    # (seconds) on the first full batch. 2 s leaves room for a busy shared machine without hiding that.
    assert took < 2.0, f"10k emits took {took:.3f}s while the broker was frozen"
    assert frozen["broker_up"] is False
    assert frozen["queue_depth"] == 0 and frozen["spool_depth"] >= len(during) - 200  # all but the batch in flight
    assert frozen["spooled"] >= len(during) - 200 and frozen["dropped"] == 0
    assert done["broker_up"] is True and done["dropped"] == 0 and done["spool_depth"] == 0
    assert done["replayed"] == done["spooled"]  # everything that went to disk came back from it
    assert_exactly_once_in_order(records, before + during + after)
    assert not segment_files(tmp_path)


def test_stop_is_bounded_when_the_broker_is_frozen_and_keeps_the_rest(tmp_path: Path) -> None:
    with EmbeddedBroker() as broker:
        topic = new_topic(broker)
        sent = events(2000)

        async def scenario() -> tuple[float, int]:
            sink = sink_for(broker.bootstrap, topic, tmp_path, batch_size=100)
            await sink.start()
            await until(lambda: sink.counters()["broker_up"], what="connection")
            broker.pause()
            for event in sent:
                sink.emit(event)
            started = time.perf_counter()
            await sink.stop(timeout_s=1.0)
            took = time.perf_counter() - started
            broker.resume()
            return took, sink.counters()["spool_depth"]

        took, left = asyncio.run(scenario())
    assert took < 4.0
    assert left == len(sent)  # the batch in flight too: delivery is at least once


# -- the spool -------------------------------------------------------------------------------


def test_an_exhausted_spool_budget_drops_counts_and_logs_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sent = events(2000)

    async def scenario() -> dict:
        sink = sink_for(unreachable(), "t", tmp_path, queue_size=100, spool_max_bytes=50_000)
        await sink.start()
        with caplog.at_level(logging.WARNING, logger="only1mcp.events.spool"):
            for event in sent:
                sink.emit(event)
            await asyncio.sleep(0.3)
            counters = sink.counters()
            await sink.stop(timeout_s=0.5)
        return counters

    counters = asyncio.run(scenario())
    assert counters["dropped"] > 1000
    assert counters["spool_bytes"] <= 50_000
    assert counters["emitted"] == counters["queue_depth"] + counters["spool_depth"] + counters["dropped"]
    full = [r for r in caplog.records if "is full" in r.getMessage()]
    assert len(full) == 1  # once per interval, not once per event
    assert sum(p.stat().st_size for p in segment_files(tmp_path)) <= 50_000


def test_leftovers_of_a_previous_run_are_replayed_first_in_order(broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = new_topic(broker)
    first, second = events(300), events(200, start=300)

    async def previous_run() -> int:  # the broker is away all along: everything ends in the spool
        sink = sink_for(unreachable(), topic, tmp_path)
        await sink.start()
        for event in first:
            sink.emit(event)
        await sink.stop(timeout_s=0.5)
        return sink.counters()["spool_depth"]

    async def next_run() -> tuple[dict, list]:
        sink = sink_for(broker.bootstrap, topic, tmp_path, batch_size=50)
        await sink.start()
        for event in second:  # emitted before the leftovers are through: must come after them
            sink.emit(event)
        await until(lambda: sink.counters()["delivered"] == len(first) + len(second), what="replay")
        counters = sink.counters()
        await sink.stop()
        return counters, await consume(broker.bootstrap, topic, len(first) + len(second))

    assert asyncio.run(previous_run()) == len(first)
    assert segment_files(tmp_path)
    counters, records = asyncio.run(next_run())
    assert counters["replayed"] >= len(first) and counters["dropped"] == 0
    assert_exactly_once_in_order(records, first + second)
    assert not segment_files(tmp_path)


def test_a_torn_last_line_is_skipped_and_the_rest_replayed(broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = new_topic(broker)
    sent = events(20)
    spool = Spool(tmp_path, max_bytes=10**6)
    spool.append(e.to_json() for e in sent)
    spool.close()
    [segment] = segment_files(tmp_path)
    with open(segment, "ab") as out:
        out.write(b'{"event_id": "half a rec')  # the process died mid-write

    async def scenario() -> tuple[dict, list]:
        sink = sink_for(broker.bootstrap, topic, tmp_path)
        await sink.start()
        await until(lambda: sink.counters()["delivered"] == len(sent), what="replay")
        await until(lambda: sink.counters()["spool_depth"] == 0, what="spool emptied")
        counters = sink.counters()
        await sink.stop()
        return counters, await consume(broker.bootstrap, topic, len(sent))

    counters, records = asyncio.run(scenario())
    assert counters["dropped"] == 1
    assert_exactly_once_in_order(records, sent)


def test_spool_order_with_prepend_ack_cursor_and_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**6, segment_bytes=8)  # tiny segments: a rotation every two lines
    spool.append([b'"c1"', b'"c2"', b'"c3"'])
    spool.prepend([b'"b1"', b'"b2"'])  # older: goes in front
    spool.append([b'"d1"'])
    assert len(spool.segments()) >= 3 and spool.pending == 6
    assert drain(spool) == [b'"b1"', b'"b2"', b'"c1"', b'"c2"', b'"c3"', b'"d1"']
    assert spool.bytes == 0 and not segment_files(tmp_path)

    spool.append([b'"e1"', b'"e2"', b'"e3"'])
    spool.ack(len(spool.read(1)))  # e1 delivered, then the process stops
    with pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path, max_bytes=10**6)  # one process per spool
    spool.close()
    reopened = Spool(tmp_path, max_bytes=10**6)
    assert reopened.pending == 2 and reopened.read(1) == [b'"e2"']  # the cursor survived
    reopened.prepend([b'"x"'])  # folded in front of the partly read head
    assert drain(reopened) == [b'"x"', b'"e2"', b'"e3"']
    reopened.close()


def drain(spool: Spool) -> list[bytes]:
    got = []
    while spool.pending:
        lines = spool.read(2)  # at most 2, and never past the end of the head segment
        got.extend(lines)
        spool.ack(len(lines))
    return got


@pytest.mark.parametrize("policy", ["always", "batch", "never"])
def test_fsync_policies(policy: str, tmp_path: Path, broker: EmbeddedBroker) -> None:
    spool = Spool(tmp_path / "unit", max_bytes=10**6, fsync=policy)
    for i in range(50):
        spool.append([f'"{i}"'.encode()])
    assert spool.syncs == {"always": 50, "batch": 0, "never": 0}[policy]
    spool.sync()
    assert spool.syncs == {"always": 50, "batch": 1, "never": 0}[policy]
    [segment] = segment_files(tmp_path / "unit")
    assert segment.read_bytes().count(b"\n") == 50  # written to the file by sync() in every policy
    spool.close()

    # End to end: spooled under the policy while the broker is away, then replayed.
    topic = new_topic(broker)
    sent = events(100)

    async def scenario() -> tuple[int, list]:
        sink = sink_for(unreachable(), topic, tmp_path / "e2e", fsync=policy, queue_size=10)
        await sink.start()
        for event in sent:
            sink.emit(event)
        await sink.stop(timeout_s=0.5)
        syncs = sink.spool.syncs
        sink = sink_for(broker.bootstrap, topic, tmp_path / "e2e", fsync=policy)
        await sink.start()
        await until(lambda: sink.counters()["delivered"] == len(sent), what="replay")
        await sink.stop()
        return syncs, await consume(broker.bootstrap, topic, len(sent))

    syncs, records = asyncio.run(scenario())
    if policy == "always":
        assert syncs >= 90  # one per spooled event
    elif policy == "batch":
        assert 1 <= syncs < 50
    else:
        assert syncs == 0
    assert_exactly_once_in_order(records, sent)
