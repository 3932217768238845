"""``only1mcp worker status`` as an operator runs it: a subprocess reading a real broker, the embedded
one (tansu) and Apache Kafka (KRaft, infra/kafka.py), where offsets were committed by a real consumer."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from only1mcp.events import TOPICS
from only1mcp.infra.broker import EmbeddedBroker
from only1mcp.jobs.bench._procs import free_port

PARTITIONS = 4
RECORDS = {0: 40, 1: 0, 2: 150, 3: 17}  # per partition of mcp.requests; 1 stays empty
COMMIT = {0: 25, 2: 150}  # what the group reads and commits; 1 and 3 never see a commit


@pytest.fixture(scope="module", params=["embedded", "kafka"])
def broker(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(kind, bootstrap) of a running broker with mcp.requests (4 partitions) filled as RECORDS says."""
    if request.param == "embedded":
        running: Any = EmbeddedBroker()
    else:
        try:
            from only1mcp.infra.kafka import KafkaCluster, cached_kafka_jars
        except ImportError as exc:
            pytest.skip(f"no Apache Kafka launcher (infra/kafka.py): {exc}")
        if cached_kafka_jars() is None:
            pytest.skip("Kafka's jars are not fetched (python -m only1mcp.infra.kafka fetch)")
        running = KafkaCluster(1)
    with running:
        running.create_topics([TOPICS["requests"]], PARTITIONS)
        asyncio.run(produce(running.bootstrap, TOPICS["requests"], RECORDS))
        yield request.param, running.bootstrap


async def produce(bootstrap: str, topic: str, counts: dict[int, int]) -> None:
    # Small batches: tansu's ListOffsets then answers the last batch's base offset + 1, short of the
    # log end, and the command must read the real end from a fetch.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=512)
    await producer.start()
    try:
        sent = [await producer.send(topic, f"{p}-{i}".encode(), partition=p) for p, n in counts.items()
                for i in range(n)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def consume_and_commit(bootstrap: str, group: str, topic: str, upto: dict[int, int]) -> None:
    """Read each partition of ``upto`` from the start up to its offset, as the group, and commit there."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = {p: TopicPartition(topic, p) for p in upto}
        consumer.assign(list(tps.values()))
        await consumer.seek_to_beginning(*tps.values())
        read = dict.fromkeys(upto, 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while any(read[p] < upto[p] for p in upto):
            assert loop.time() < deadline, f"read {read}, wanted {upto}"
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                read[tp.partition] += sum(1 for r in records if r.offset < upto[tp.partition])
        await consumer.commit({tps[p]: offset for p, offset in upto.items()})
    finally:
        await consumer.stop()


def status(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "only1mcp.cli", "worker", "status", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def write_config(path: Path, bootstrap: str, group: str) -> Path:
    path.write_text(f'[worker]\nbootstrap = "{bootstrap}"\ngroup = "{group}"\npartitions = {PARTITIONS}\n')
    return path


def test_committed_highwater_and_lag_per_partition(broker: tuple[str, str], tmp_path: Path) -> None:
    kind, bootstrap = broker
    group = f"status-{uuid.uuid4().hex[:8]}"
    asyncio.run(consume_and_commit(bootstrap, group, TOPICS["requests"], COMMIT))
    config = write_config(tmp_path / "worker.toml", bootstrap, group)

    result = status("--config", str(config), "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "worker.toml (--config)" in result.stderr and f"group {group}" in result.stderr
    report = json.loads(result.stdout)
    rows = {(p["topic"], p["partition"]): p for p in report["partitions"]}
    assert set(rows) == {(TOPICS["requests"], p) for p in range(PARTITIONS)}  # nothing else was committed on
    got = {p: (rows[TOPICS["requests"], p]["committed"], rows[TOPICS["requests"], p]["highwater"],
               rows[TOPICS["requests"], p]["lag"]) for p in range(PARTITIONS)}
    assert got == {0: (25, 40, 15), 1: (None, 0, 0), 2: (150, 150, 0), 3: (None, 17, 17)}
    assert report["lag"] == 32 and report["group"] == group and report["missing_topics"] == []
    assert report["state"] == "Empty" and report["members"] == []  # offsets, but nobody in the group now
    assert "no committed offset: the whole log is lag" in rows[TOPICS["requests"], 3]["note"]
    corrected = [p for p in report["partitions"] if "ListOffsets said" in p["note"]]
    if kind == "embedded":  # the known short ListOffsets: read from a fetch instead, and said
        assert corrected and any("ListOffsets was short" in n for n in report["notes"])
    else:
        assert corrected == []

    table = status("--config", str(config), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"group {group} on {bootstrap}: Empty, 0 member(s), lag 32")
    assert [line.split()[:5] for line in lines if line.startswith(TOPICS["requests"])] == [
        [TOPICS["requests"], "0", "25", "40", "15"], [TOPICS["requests"], "1", "-", "0", "0"],
        [TOPICS["requests"], "2", "150", "150", "0"], [TOPICS["requests"], "3", "-", "17", "17"]]


def test_the_last_up_config_a_live_member_and_a_missing_topic(broker: tuple[str, str], tmp_path: Path) -> None:
    kind, bootstrap = broker
    group, topic = f"live-{uuid.uuid4().hex[:8]}", f"status-{uuid.uuid4().hex[:8]}"
    # No --config: the configuration `up` recorded in this folder names the broker and the group.
    config = write_config(tmp_path / "up.toml", bootstrap, group)
    (tmp_path / ".only1mcp").mkdir()
    (tmp_path / ".only1mcp" / "last-up").write_text(json.dumps({"config": "up.toml", "KAFKA_BOOTSTRAP": bootstrap}))
    assert config.is_file()

    async def with_a_member() -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        from only1mcp.infra.broker import acreate_topics

        await acreate_topics(bootstrap, [topic], 2)
        await produce(bootstrap, topic, {0: 5, 1: 3})
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, client_id="the-member",
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            deadline = asyncio.get_running_loop().time() + 30
            seen = 0
            while seen < 8:  # joined and read everything
                assert asyncio.get_running_loop().time() < deadline
                seen += sum(len(r) for r in (await consumer.getmany(timeout_ms=500)).values())
            await consumer.commit({TopicPartition(topic, 0): 5})
            # The member keeps heartbeating from this loop while the command runs.
            live = await asyncio.to_thread(status, "--topic", topic, "--format", "json", cwd=tmp_path)
            missing = await asyncio.to_thread(status, "--topic", topic, "--topic", "no-such-topic", cwd=tmp_path)
        finally:
            await consumer.stop()
        return live, missing

    live, missing = asyncio.run(with_a_member())
    assert live.returncode == 0, live.stderr
    assert "up.toml (from the last `only1mcp up` in this folder)" in live.stderr
    report = json.loads(live.stdout)
    assert report["group"] == group and report["bootstrap"] == bootstrap
    assert [(p["partition"], p["committed"], p["highwater"], p["lag"]) for p in report["partitions"]] == [
        (0, 5, 5, 0), (1, None, 3, 3)]
    assert report["state"] == "Stable" and len(report["members"]) == 1
    member = report["members"][0]
    if kind == "kafka":  # Kafka describes what each member holds; tansu sends no assignment
        assert member["client_id"] == "the-member" and member["partitions"] == {topic: [0, 1]}
    else:
        assert member["partitions"] is None

    assert missing.returncode == 1
    assert "no such topic" in missing.stderr and "no-such-topic" in missing.stderr
    assert "topic no-such-topic: does not exist on the broker" in missing.stdout
    assert f"{topic}  0" in missing.stdout  # the topics that exist are still shown


def test_an_unreachable_broker_is_one_line_and_exit_1(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = status("--bootstrap", f"127.0.0.1:{port}", "--timeout", "3", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("only1mcp worker status: using the built-in defaults")
    assert len(lines) == 2 and lines[1].startswith(f"only1mcp worker status: Kafka at 127.0.0.1:{port} did not answer")
