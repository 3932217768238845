"""Apache Kafka run from its own jars (only1mcp.infra.kafka): real KRaft nodes, real clients.

One node: 5,000 records from an idempotent acks=all producer come back through a consumer group,
whose committed offsets the admin client reads. Three nodes: the leader of partition 0 is
SIGKILLed while a producer sends with acks=all; every acknowledged record is read back exactly
once, and the node, started again, rejoins every ISR. Without Java the error says so. And
``only1mcp up --broker kafka`` runs the stack on it and leaves no process behind.

Each cluster starts once per module (module-scoped fixtures). The jars are fetched on first use
(``make kafka-jars`` does it ahead of ``make test``).
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from only1mcp.infra.broker import BrokerError
from only1mcp.infra.kafka import KafkaCluster, class_archive, java_binary, kafka_home, kafka_jars
from only1mcp.jobs.bench._procs import free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the launcher and /proc are Linux's")

RECORDS = 5_000
TIMINGS: dict[str, float] = {}


def _cluster(nodes: int) -> Iterator[KafkaCluster]:
    """A cluster for one test class (so that the 1- and 3-node clusters never run at the same time);
    its stop must leave none of its processes behind."""
    kafka_jars()  # a first fetch is not start-up time
    started = time.monotonic()
    cluster = KafkaCluster(nodes).start()
    TIMINGS[f"{nodes} node(s) start"] = time.monotonic() - started
    pids: set[int] = set()
    try:
        yield cluster
    finally:
        pids = {n.process.pid for n in cluster.nodes.values() if n.process is not None}
        started = time.monotonic()
        cluster.stop()
        TIMINGS[f"{nodes} node(s) stop"] = time.monotonic() - started
        print("\nkafka timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMINGS.items()), flush=True)
    assert pids and [pid for pid in pids if alive(pid)] == []
    assert not cluster.nodes  # the temporary folder went with it


@pytest.fixture(scope="class")
def single() -> Iterator[KafkaCluster]:
    yield from _cluster(1)


@pytest.fixture(scope="class")
def trio() -> Iterator[KafkaCluster]:
    yield from _cluster(3)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# -- one node ----------------------------------------------------------------------------------


class TestOneNode:
    def test_idempotent_producer_consumer_group_and_committed_offsets(self, single: KafkaCluster) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        topic, group = "orders", "billing"
        assert single.create_topics([topic], 3) == {topic: 3}
        assert single.alive() and single.alive(1)
        assert single.bootstrap == f"127.0.0.1:{single.nodes[1].port}"

        async def scenario() -> tuple[list[int], dict[int, int], dict[int, int]]:
            producer = AIOKafkaProducer(bootstrap_servers=single.bootstrap, enable_idempotence=True, acks="all",
                                        linger_ms=5)
            await producer.start()
            try:
                futures = [await producer.send(topic, key=str(i % 97).encode(), value=str(i).encode())
                           for i in range(RECORDS)]
                metadata = await asyncio.gather(*futures)
            finally:
                await producer.stop()
            ends: dict[int, int] = {}
            for meta in metadata:
                ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)

            consumer = AIOKafkaConsumer(topic, bootstrap_servers=single.bootstrap, group_id=group,
                                        auto_offset_reset="earliest", enable_auto_commit=False)
            await consumer.start()
            seen: list[int] = []
            try:
                deadline = time.monotonic() + 30
                while len(seen) < RECORDS and time.monotonic() < deadline:
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        seen += [int(r.value) for r in records]
                await consumer.commit()
            finally:
                await consumer.stop()

            admin = AIOKafkaAdminClient(bootstrap_servers=single.bootstrap)
            await admin.start()
            try:
                offsets = await admin.list_consumer_group_offsets(group)
            finally:
                await admin.close()
            committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
            assert TopicPartition(topic, 0) in offsets
            return seen, ends, committed

        seen, ends, committed = asyncio.run(asyncio.wait_for(scenario(), 60))
        assert sorted(seen) == list(range(RECORDS))  # every record once
        assert sum(ends.values()) == RECORDS and len(ends) == 3
        assert committed == ends  # the group's committed offsets are each partition's end
        assert single.leaders(topic) == {0: 1, 1: 1, 2: 1}
        log = single.log_path(1)
        assert log.is_file() and "Kafka Server started" in log.read_text()
        assert "Kafka Server started" in single.log_tail(1, lines=10_000)


# -- three nodes ---------------------------------------------------------------------------------


class TestThreeNodes:
    def test_failover_loses_and_duplicates_no_acknowledged_record(self, trio: KafkaCluster) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        topic, partitions = "payments", 3
        assert trio.create_topics([topic], partitions, replication=3) == {topic: partitions}
        state = trio.partitions(topic)
        assert all(len(s.replicas) == 3 and len(s.isr) == 3 for s in state.values()), state
        assert len(trio.bootstrap.split(",")) == 3

        async def min_insync() -> str:
            admin = AIOKafkaAdminClient(bootstrap_servers=trio.bootstrap)
            await admin.start()
            try:
                [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                                          {"min.insync.replicas": None})])
            finally:
                await admin.close()
            return {entry[0]: entry[1] for entry in response.resources[0][4]}["min.insync.replicas"]

        assert asyncio.run(min_insync()) == "2"
        victim = trio.leaders(topic)[0]

        async def produce_through_failover() -> tuple[dict[int, tuple[int, int]], int, float, float]:
            producer = AIOKafkaProducer(bootstrap_servers=trio.bootstrap, enable_idempotence=True, acks="all",
                                        linger_ms=5, request_timeout_ms=20_000, retry_backoff_ms=50)
            await producer.start()
            sent: list[tuple[int, asyncio.Future]] = []
            killed_at = failover_at = 0.0
            i = 0
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    for _ in range(100):  # 100 records every 20 ms, spread over the partitions
                        sent.append((i, await producer.send(topic, value=str(i).encode(), partition=i % partitions)))
                        i += 1
                    await asyncio.sleep(0.02)
                    if not killed_at and i >= 1_000:
                        trio.kill(victim)
                        killed_at = time.monotonic()
                    elif killed_at and not failover_at:
                        leader = (await trio.aleaders(topic))[0]
                        if leader not in (victim, -1):
                            failover_at = time.monotonic()
                    elif failover_at and time.monotonic() - failover_at > 1.0:
                        break  # a second of records through the new leader
                results = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
            finally:
                await producer.stop()
            acked = {n: (r.partition, r.offset) for (n, _), r in zip(sent, results, strict=True)
                     if not isinstance(r, BaseException)}
            return acked, len(sent), killed_at, failover_at

        acked, total, killed_at, failover_at = asyncio.run(asyncio.wait_for(produce_through_failover(), 120))
        assert killed_at and failover_at, "partition 0 got no new leader within 60 s"
        TIMINGS["failover (kill → new leader of partition 0)"] = failover_at - killed_at
        assert not trio.alive(victim) and trio.alive() is False
        assert len(acked) >= 1_000, f"only {len(acked)} of {total} acknowledged"

        async def read_back() -> dict[tuple[int, int], int]:
            consumer = AIOKafkaConsumer(bootstrap_servers=trio.bootstrap, enable_auto_commit=False,
                                        auto_offset_reset="earliest")
            await consumer.start()
            found: dict[tuple[int, int], int] = {}
            try:
                tps = [TopicPartition(topic, p) for p in range(partitions)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                ends = await consumer.end_offsets(tps)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(position >= ends[tp] for position, tp in zip(positions, tps, strict=True)):
                        break
                    for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                        found.update({(tp.partition, r.offset): int(r.value) for r in records})
            finally:
                await consumer.stop()
            return found

        stored = asyncio.run(asyncio.wait_for(read_back(), 60))
        values = list(stored.values())
        assert len(values) == len(set(values)), "a record was stored twice"
        missing = [n for n, where in acked.items() if stored.get(where) != n]
        assert missing == [], f"{len(missing)} acknowledged records not where their acknowledgement said"
        print(f"\nfailover: {len(acked)} of {total} records acknowledged, {len(stored)} stored, victim node {victim}")

        # The killed node comes back on its ports and data, and catches up into every ISR.
        started = time.monotonic()
        trio.restart(victim)
        TIMINGS["restart (listed in metadata)"] = time.monotonic() - started
        assert trio.alive(victim) and trio.alive()
        deadline = time.monotonic() + 30
        while True:
            state = trio.partitions(topic)
            if all(len(s.isr) == 3 for s in state.values()):
                break
            assert time.monotonic() < deadline, f"ISR not back to 3 nodes 30 s after the restart: {state}"
            time.sleep(0.2)
        TIMINGS["restart → ISR of 3 again"] = time.monotonic() - started


    def test_restart_refuses_a_running_node_and_unknown_nodes(self, trio: KafkaCluster) -> None:
        running = next(node_id for node_id in trio.nodes if trio.alive(node_id))
        with pytest.raises(BrokerError, match="is running"):
            trio.restart(running)
        with pytest.raises(BrokerError, match="no node 7"):
            trio.kill(7)


# -- errors --------------------------------------------------------------------------------------


def _no_java_env(tmp_path: Path) -> dict[str, str]:
    jdk = tmp_path / "empty-jdk"
    jdk.mkdir(exist_ok=True)
    bin_dir = tmp_path / "bin"  # a PATH without java
    bin_dir.mkdir(exist_ok=True)
    return {"JAVA_HOME": str(jdk), "PATH": str(bin_dir)}


def test_without_java_a_clear_broker_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in _no_java_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(BrokerError, match=r"no Java found: JAVA_HOME='.*empty-jdk' has no bin/java and there is "
                                          r"no java on PATH.*Java 17"):
        java_binary()
    with pytest.raises(BrokerError, match="no Java found"):
        KafkaCluster(1).start()
    home = tmp_path / "home"
    with pytest.raises(BrokerError, match="no Java found"):
        kafka_jars(home)  # nothing cached there: Maven would need Java
    assert not (home / "libs").exists()


def test_a_failing_maven_leaves_no_half_fetched_jars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = Path(java_binary()).resolve()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"  # a Maven that fails as an unreachable Maven Central would
    mvn.write_text("#!/bin/sh\necho '[ERROR] Failed to execute goal: Could not transfer artifact "
                   "org.apache.kafka:kafka_2.13:pom:4.1.1' >&2\nmkdir -p \"${4%/pom.xml}/libs\"\nexit 1\n")
    mvn.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(java.parent.parent))
    monkeypatch.setenv("PATH", str(bin_dir))
    home = tmp_path / "home"
    with pytest.raises(BrokerError, match=r"(?s)Maven could not fetch .*exit code 1.*Could not transfer artifact"):
        kafka_jars(home)
    assert list(home.iterdir()) == []  # neither libs/ nor the temporary folder
    mvn.unlink()
    with pytest.raises(BrokerError, match="no mvn on PATH"):
        kafka_jars(home)


def test_the_jar_folder_and_its_class_archive() -> None:
    jars = kafka_jars()
    assert jars == kafka_home() / "libs" and (jars / "kafka_2.13-4.1.1.jar").is_file()
    assert (jars / "log4j-slf4j-impl-2.24.3.jar").is_file()  # the broker logs through log4j2
    out = subprocess.run([sys.executable, "-m", "only1mcp.infra.kafka", "fetch"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == str(jars), out.stderr
    assert class_archive(jars).is_file()  # made by `fetch` (or by the first cluster that stopped cleanly)


# -- only1mcp up --broker kafka ------------------------------------------------------------------


def descendants_of(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_up_without_java_says_so(tmp_path: Path) -> None:
    env = {**os.environ, **_no_java_env(tmp_path), "PYTHONUNBUFFERED": "1"}
    env.pop("KAFKA_BOOTSTRAP", None)
    done = subprocess.run([sys.executable, "-m", "only1mcp.cli", "up", "--broker", "kafka", "--run-dir",
                           str(tmp_path / "run"), "--listen", f"127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"only1mcp up: broker: no Java found: .*no java on PATH", done.stderr), done.stderr


def test_up_broker_kafka_runs_the_stack_and_stops_clean(tmp_path: Path) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient
    from mcp import Client

    run_dir = tmp_path / "run"
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:6379/14", "PYTHONUNBUFFERED": "1"}
    env.pop("KAFKA_BOOTSTRAP", None)
    argv = [sys.executable, "-m", "only1mcp.cli", "up", "--broker", "kafka", "--run-dir", str(run_dir),
            "--listen", f"127.0.0.1:{free_port()}", "--startup-timeout", "40"]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def read_until(pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            for line in output:
                if found := re.search(pattern, line):
                    return found
            try:
                line = lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None:
                raise AssertionError(f"`up` ended (code {proc.wait()}) before {pattern!r}:\n{''.join(output)}")
            output.append(line)
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in {timeout_s:g} s:\n{''.join(output)}")

    threading.Thread(target=pump, daemon=True).start()
    children: set[int] = set()
    try:
        read_until(r"only1mcp up: ready at http://\S+/mcp", 60)
        TIMINGS["up --broker kafka ready"] = time.monotonic() - started
        out = "".join(output)
        assert "starting Apache Kafka 4.1.1 (one KRaft node)" in out
        bootstrap = re.search(r"^\s+broker\s+(\S+) \(Apache Kafka 4\.1\.1, one KRaft node", out, re.M)
        assert bootstrap, out
        bootstrap_s = bootstrap.group(1)
        link = run_dir / "broker.log"
        assert link.is_symlink() and "Kafka Server started" in link.read_text()
        children = descendants_of(proc.pid)
        assert any(_comm(pid) == "java" for pid in children)

        # a call through the proxy reaches mcp.requests on Kafka, and the worker's group commits past it
        url = re.search(r"MCP endpoint\s+(http://\S+/mcp)", out).group(1)  # type: ignore[union-attr]

        async def call_and_follow() -> tuple[int, dict[str, int]]:
            async with Client(url, mode="legacy") as client:
                result = await client.call_tool("conf__test_simple_text", {})
                assert not result.is_error
            consumer = AIOKafkaConsumer("mcp.requests", bootstrap_servers=bootstrap_s, auto_offset_reset="earliest")
            await consumer.start()
            try:
                record = await asyncio.wait_for(consumer.getone(), 20)
            finally:
                await consumer.stop()
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_s)
            await admin.start()
            try:
                deadline = time.monotonic() + 20
                while True:
                    offsets = await admin.list_consumer_group_offsets("only1mcp-features")
                    committed = {f"{tp.topic}/{tp.partition}": m.offset for tp, m in offsets.items()
                                 if tp.topic == "mcp.requests" and m.offset > 0}
                    if committed or time.monotonic() > deadline:
                        return len(record.value), committed
                    await asyncio.sleep(0.5)
            finally:
                await admin.close()

        size, committed = asyncio.run(asyncio.wait_for(call_and_follow(), 60))
        assert size > 0
        assert committed, "the worker committed no offset on mcp.requests"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=45) == 0, "".join(output)
        read_until(r"only1mcp up: stopped", 5)
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in children if alive(pid)] == []
        assert link.is_file() and not link.is_symlink()  # a copy of the node's log, kept after it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children | descendants_of(proc.pid):
            if alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        shutil.rmtree(tmp_path / "data", ignore_errors=True)
