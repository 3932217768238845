"""Apache Kafka without Docker: Kafka's own jars from Maven Central, run as KRaft nodes on loopback.

Where the jars come from: :func:`kafka_jars` writes a small pom (``org.apache.kafka:kafka_2.13``
:data:`KAFKA_VERSION` plus ``log4j-slf4j-impl`` :data:`LOG4J_VERSION`, so the broker logs through
log4j2: Kafka itself only pulls slf4j-api 1.7, which would log nowhere) and has Maven copy the
runtime dependencies (~43 MB) into ``<home>/libs``. ``<home>`` is ``$ONLY1MCP_KAFKA_HOME``, else
``<repo>/.tools/kafka-<version>`` in a source checkout (``.tools`` is git-ignored), else
``~/.cache/only1mcp/kafka-<version>``. Maven fills a temporary folder beside it, which is renamed
into place only when complete: a half-fetched folder is never used. ``python -m
only1mcp.infra.kafka fetch`` does it ahead of time (``make kafka-jars``) and prints the folder;
``python -m only1mcp.infra.kafka run --nodes 3`` runs a cluster in the foreground.

Start-up: a JVM class-data-sharing archive (``<home>/cds/``, :func:`class_archive`) holds the
classes a node loads; the first node that stops cleanly writes it (``fetch`` makes it at once), and
every later JVM maps it: a node starts in about half the time on a busy 2-core machine (one node
~2-3 s, three ~5 s, formatting included).

How a node runs (one folder per node under the cluster's work dir)::

    java -cp 'libs/*' kafka.tools.StorageTool format -t <cluster id> -c server.properties
    java -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile=log4j2.properties \\
         -cp 'libs/*' kafka.Kafka server.properties

Every node is a combined broker+controller and a voter of a static quorum
(``controller.quorum.voters``): one node for ``only1mcp up --broker kafka``, three for failover
tests (replication factor 3, ``min.insync.replicas`` 2 by default). Timeouts that decide how fast
a dead node is noticed are short (:data:`FAST_FAILOVER`): a SIGKILLed leader's partitions get new
leaders within a few seconds. Each node logs to ``kafka.log`` in its folder (log4j2, rolling, INFO);
the JVM's own stdout/stderr go to ``kafka.out``.

Processes: each node leads its own session and is SIGKILLed by the kernel when the thread that
started it dies (PR_SET_PDEATHSIG, set by a small launcher before exec): start clusters from a
long-lived thread (the main thread, an event loop's thread), not from a short-lived worker thread.
:meth:`KafkaCluster.stop` sends SIGTERM to every node at once and SIGKILL after a grace period
(the last nodes of a stopping cluster lose their controller quorum and may wait for it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from only1mcp.infra.broker import BrokerError, _run_sync, acreate_topics, wait_kafka
from only1mcp.infra.priority import lower_priority

__all__ = ["KAFKA_VERSION", "LOG4J_VERSION", "FAST_FAILOVER", "KafkaCluster", "KafkaNode", "PartitionState",
           "BrokerError", "java_binary", "kafka_home", "kafka_jars", "cached_kafka_jars", "class_archive",
           "build_class_archive"]

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"  # the log4j-core that kafka_2.13 4.1.1 pulls
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_MIN_JAVA = 17  # Kafka 4 brokers need Java 17
_MAVEN_TIMEOUT_S = 900.0
_FORMAT_TIMEOUT_S = 60.0
_METADATA_NOT_YET = frozenset({3, 5})  # UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE: retriable

# Runs before java: asks the kernel to SIGKILL the node when its parent (thread) dies
# (PR_SET_PDEATHSIG survives exec), then execs it; the pid stays java's. SIGKILL, not SIGTERM:
# an orphaned node's data is of no use, and a SIGTERMed KRaft node that has lost its quorum
# (the other nodes died with the same parent) waits for it for ever.
_LAUNCHER = (
    "import ctypes,os,sys\n"
    "try: ctypes.CDLL(None).prctl(1,9)\n"
    "except Exception: pass\n"
    "os.execv(sys.argv[1],sys.argv[1:])\n"
)

_JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError",
              "-Djava.awt.headless=true")

# How fast a dead node is noticed: broker heartbeats to the controller, the session after which
# the controller fences it (and moves its leaderships), how long a follower may lag before it
# leaves the ISR, and the controller quorum's own fetch/election timeouts.
FAST_FAILOVER: dict[str, int] = {
    "broker.heartbeat.interval.ms": 500,
    "broker.session.timeout.ms": 4000,
    "replica.lag.time.max.ms": 6000,
    "controller.quorum.fetch.timeout.ms": 2000,
    "controller.quorum.election.timeout.ms": 1000,
    "controller.quorum.election.backoff.max.ms": 1000,
}

# Small for a laptop/CI box: fewer threads, a small log-cleaner buffer (128 MiB of heap by default),
# fewer partitions for the internal topics (50 by default, created on the first group/transaction).
_SMALL: dict[str, int] = {
    "num.network.threads": 2,
    "num.io.threads": 4,
    "background.threads": 4,
    "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
    "offsets.topic.num.partitions": 8,
    "transaction.state.log.num.partitions": 8,
    "group.initial.rebalance.delay.ms": 0,
}

_LOG4J2 = """\
# Written by only1mcp.infra.kafka: the node's log, rolled at 50 MB (two old files kept).
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
"""

_TOOL_LOG4J2 = """\
status = warn
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = err
"""

_POM = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by only1mcp.infra.kafka: the jars of an Apache Kafka broker, nothing built. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>only1mcp</groupId>
  <artifactId>kafka-jars</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


# -- Java and the jars ---------------------------------------------------------------------------


def java_binary() -> str:
    """The ``java`` to run: ``$JAVA_HOME/bin/java``, else ``java`` on PATH; Java 17 or newer."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    candidates = []
    if java_home:
        candidates.append(str(Path(java_home) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            major = _java_major(candidate)
            if major is not None and major < _MIN_JAVA:
                raise BrokerError(f"{candidate} is Java {major}; Apache Kafka {KAFKA_VERSION} needs Java "
                                  f"{_MIN_JAVA} or newer (set JAVA_HOME to one)")
            return candidate
    where = f"JAVA_HOME={java_home!r} has no bin/java and " if java_home else "JAVA_HOME is not set and "
    raise BrokerError(f"no Java found: {where}there is no java on PATH. Apache Kafka needs Java {_MIN_JAVA} or "
                      f"newer (e.g. apt-get install openjdk-17-jre-headless), or use the embedded broker")


@functools.lru_cache(maxsize=8)
def _java_version(java: str) -> str:
    """What ``java -version`` prints ("" when it cannot run)."""
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stderr + done.stdout


def _java_major(java: str) -> int | None:
    found = re.search(r'version "(\d+)(?:\.(\d+))?', _java_version(java))
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def kafka_home(cache_dir: str | Path | None = None) -> Path:
    """Where the jars of :data:`KAFKA_VERSION` live (or will): ``cache_dir``, ``$ONLY1MCP_KAFKA_HOME``,
    ``<repo>/.tools/kafka-<version>`` in a source checkout, else ``~/.cache/only1mcp/kafka-<version>``."""
    if cache_dir:
        return Path(cache_dir).expanduser().resolve()
    override = os.environ.get("ONLY1MCP_KAFKA_HOME", "").strip()
    if override:
        return Path(override).expanduser().resolve()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").is_file() and (repo / "infra" / "kafka.py").is_file():
        return repo / ".tools" / f"kafka-{KAFKA_VERSION}"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "only1mcp" / f"kafka-{KAFKA_VERSION}"


def cached_kafka_jars(cache_dir: str | Path | None = None) -> Path | None:
    """The jar folder when it has been fetched already, else None (nothing is fetched)."""
    libs = kafka_home(cache_dir) / "libs"
    if (libs / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar").is_file():
        return libs
    if libs.exists():
        raise BrokerError(f"{libs} exists but holds no kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar: "
                          "remove it to fetch the jars again")
    return None


def kafka_jars(cache_dir: str | Path | None = None, say: Callable[[str], None] | None = None) -> Path:
    """The folder of Kafka's jars (``<home>/libs``, see :func:`kafka_home`), fetched with Maven the
    first time (``say`` is told so beforehand). Raises BrokerError without java or mvn, or when
    Maven fails (with the last lines of its output)."""
    found = cached_kafka_jars(cache_dir)
    if found:
        return found
    home = kafka_home(cache_dir)
    java = java_binary()
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError(f"no mvn on PATH: Maven fetches the Apache Kafka {KAFKA_VERSION} jars from Maven "
                          f"Central the first time (e.g. apt-get install maven), or put them in {home / 'libs'}")
    if say:
        say(f"fetching the Apache Kafka {KAFKA_VERSION} jars with Maven into {home / 'libs'} (once, ~45 MB)")
    home.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=home))
    try:
        (work / "pom.xml").write_text(_POM.format(kafka=KAFKA_VERSION, scala=SCALA_VERSION, log4j=LOG4J_VERSION))
        env = {**os.environ, "JAVA_HOME": str(Path(java).resolve().parent.parent)}
        argv = [mvn, "-q", "-B", "-f", str(work / "pom.xml"), f"{_DEPENDENCY_PLUGIN}:copy-dependencies",
                f"-DoutputDirectory={work / 'libs'}", "-DincludeScope=runtime"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=_MAVEN_TIMEOUT_S, env=env,
                                  cwd=work, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BrokerError(f"Maven did not fetch the Kafka jars within {_MAVEN_TIMEOUT_S:g} s") from None
        output = _strip_ansi(done.stdout + done.stderr)
        if done.returncode != 0:
            raise BrokerError(f"Maven could not fetch the Apache Kafka {KAFKA_VERSION} jars (exit code "
                              f"{done.returncode}; is Maven Central reachable?):\n{_tail(output, 15)}")
        if not (work / "libs" / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar").is_file():
            raise BrokerError(f"Maven finished but copied no kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar:\n"
                              f"{_tail(output, 15)}")
        shutil.copyfile(work / "pom.xml", work / "libs" / ".pom.xml")
        try:
            os.rename(work / "libs", home / "libs")  # atomic: the folder is complete or absent
        except OSError:
            if cached_kafka_jars(cache_dir) is None:  # not another process that finished first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    found = cached_kafka_jars(cache_dir)
    assert found is not None
    return found


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _tail(text: str, lines: int) -> str:
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def class_archive(jars: Path, java: str | None = None) -> Path:
    """Where the JVM class-data-sharing archive of these jars for this Java lives (``<home>/cds/``;
    it may not exist yet). With it a node maps the ~4,000 classes it loads at start instead of
    reading and verifying them: about twice as fast a start on a busy 2-core machine."""
    java = java or java_binary()
    identity = f"{os.path.realpath(java)}\n{_java_version(java)}\n{Path(jars).resolve()}"
    return Path(jars).parent / "cds" / f"kafka-{hashlib.sha1(identity.encode()).hexdigest()[:12]}.jsa"


def build_class_archive(cache_dir: str | Path | None = None) -> Path | None:
    """Make the class archive of :func:`class_archive` if missing, by starting and stopping a
    one-node cluster (the JVM writes it at exit). Returns it, or None when it could not be made."""
    jars = kafka_jars(cache_dir)
    archive = class_archive(jars)
    if not archive.is_file():
        with KafkaCluster(1, jars=jars):
            pass
    return archive if archive.is_file() else None


# -- the cluster -------------------------------------------------------------------------------


@dataclass
class KafkaNode:
    """One combined broker+controller: its ports, its folder and (while it runs) its process."""

    node_id: int
    port: int
    controller_port: int
    dir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def properties_path(self) -> Path:
        return self.dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "kafka.log"

    @property
    def out_path(self) -> Path:
        return self.dir / "kafka.out"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass(frozen=True)
class PartitionState:
    """A partition as the cluster's metadata says: its leader (-1: none), replicas and ISR."""

    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


class KafkaCluster:
    """``nodes`` Apache Kafka KRaft nodes (each broker+controller) on free loopback ports.

    ``with KafkaCluster(3) as kafka: kafka.bootstrap`` (or ``async with``). ``work_dir=None`` keeps
    the data and logs in a temporary folder removed by :meth:`stop`; a given ``work_dir`` is kept
    and, when it was formatted before, started again with its data. ``properties`` adds to or
    overrides every node's server.properties. Replication defaults follow the node count: factor
    ``min(nodes, 3)``, ``min.insync.replicas`` one less (at least 1). The JVM runs the quick C1
    compiler only (``-XX:TieredStopAtLevel=1``: a faster start, a lower peak); ``jvm_options`` come
    last and win, e.g. ``["-XX:TieredStopAtLevel=4"]`` for the full JIT in a throughput benchmark.
    """

    def __init__(self, nodes: int = 1, *, host: str = "127.0.0.1", jars: str | Path | None = None,
                 work_dir: str | Path | None = None, heap_mb: int | None = None, start_timeout_s: float = 90.0,
                 properties: Mapping[str, object] | None = None, log_level: str = "INFO",
                 jvm_options: Sequence[str] = (), nice: int = 0) -> None:
        if nodes < 1:
            raise ValueError("a Kafka cluster needs at least one node")
        self.size = nodes
        self.host = host
        self.jars = Path(jars) if jars else None
        self.work_dir = Path(work_dir).resolve() if work_dir else None
        self.heap_mb = heap_mb or (512 if nodes == 1 else 384)
        self.start_timeout_s = start_timeout_s
        self.nice = nice  # > 0: nodes run at this niceness (infra/priority.py)
        self.extra_properties = dict(properties or {})
        self.log_level = log_level
        self.jvm_options = list(jvm_options)
        self.replication = min(nodes, 3)
        self.min_insync = max(1, self.replication - 1)
        self.cluster_id = ""
        self.nodes: dict[int, KafkaNode] = {}
        self._dir: Path | None = None
        self._own_dir = False
        self._java = ""
        self._archive: Path | None = None  # the class archive, when one exists
        self._dump: tuple[int, Path] | None = None  # (node, file): the node that writes a missing archive

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """Every node's PLAINTEXT address, comma-separated."""
        if not self.nodes:
            raise BrokerError("the Kafka cluster is not started")
        return ",".join(f"{self.host}:{n.port}" for n in self.nodes.values())

    def address(self, node_id: int) -> str:
        return f"{self.host}:{self._node(node_id).port}"

    def start(self) -> KafkaCluster:
        """Format the storage (first start), start every node, wait until the metadata lists them all."""
        self._prepare()
        try:
            self._spawn_all()
            _run_sync(self._wait_ready(list(self.nodes), self.start_timeout_s))
        except BaseException:
            self.stop(grace_s=2.0)
            raise
        return self

    async def astart(self) -> KafkaCluster:
        await asyncio.to_thread(self._prepare)
        try:
            self._spawn_all()  # in this (the loop's) thread: the nodes' parent-death signal follows it
            await self._wait_ready(list(self.nodes), self.start_timeout_s)
        except BaseException:
            await self.astop(grace_s=2.0)
            raise
        return self

    def stop(self, grace_s: float = 10.0) -> dict[int, int | None]:
        """Stop every node (SIGTERM to all at once, SIGKILL after ``grace_s``); a temporary work dir
        goes with them. Returns node id → exit code."""
        running = [n for n in self.nodes.values() if n.process is not None]
        for node in running:
            if node.alive():
                self._signal(node, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        codes: dict[int, int | None] = {}
        for node in running:
            assert node.process is not None
            try:
                node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(node, signal.SIGKILL)
                node.process.wait(timeout=10)
            codes[node.node_id] = node.process.returncode
            node.process = None
            self._keep_archive(node.node_id, codes[node.node_id])
        if self._own_dir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            self.nodes = {}
        return codes

    async def astop(self, grace_s: float = 10.0) -> dict[int, int | None]:
        return await asyncio.to_thread(self.stop, grace_s)

    # -- one node ------------------------------------------------------------------------------

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (no controlled shutdown: its leaderships move when its session expires)."""
        node = self._node(node_id)
        if node.process is None:
            return
        self._signal(node, signal.SIGKILL)
        node.process.wait(timeout=10)
        node.process = None
        self._keep_archive(node_id, -9)  # nothing to keep; a restart writes none

    def stop_node(self, node_id: int, grace_s: float = 10.0) -> int | None:
        """Stop one node cleanly (SIGTERM: controlled shutdown; SIGKILL after ``grace_s``)."""
        node = self._node(node_id)
        proc, code = node.process, None
        if proc is not None:
            self._signal(node, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._signal(node, signal.SIGKILL)
                proc.wait(timeout=10)
            code = proc.returncode
        node.process = None
        self._keep_archive(node_id, code)
        return code

    def restart(self, node_id: int, timeout_s: float | None = None) -> None:
        """Start a stopped or killed node again (same ports, same data) and wait until the metadata
        lists it again (it has caught up with the cluster's metadata and is unfenced)."""
        node = self._node(node_id)
        if node.alive():
            raise BrokerError(f"node {node_id} is running")
        self._spawn(node)
        try:
            _run_sync(self._wait_ready([node_id], timeout_s or self.start_timeout_s))
        except BaseException:
            self.kill(node_id)
            raise

    async def arestart(self, node_id: int, timeout_s: float | None = None) -> None:
        node = self._node(node_id)
        if node.alive():
            raise BrokerError(f"node {node_id} is running")
        self._spawn(node)
        try:
            await self._wait_ready([node_id], timeout_s or self.start_timeout_s)
        except BaseException:
            self.kill(node_id)
            raise

    def alive(self, node_id: int | None = None) -> bool:
        """Whether the node (default: every node) runs."""
        if node_id is None:
            return bool(self.nodes) and all(n.alive() for n in self.nodes.values())
        return self._node(node_id).alive()

    def log_path(self, node_id: int | None = None) -> Path:
        """The node's log file (default: the first node's)."""
        return self._node(node_id or min(self.nodes, default=None)).log_path

    def log_tail(self, node_id: int | None = None, lines: int = 20) -> str:
        """The node's last log lines (default: the first node), after its JVM output if it wrote any."""
        if not self.nodes:
            return ""
        node = self._node(node_id or min(self.nodes))
        parts = []
        for path in (node.out_path, node.log_path):
            try:
                text = _tail(path.read_text(errors="replace"), lines)
            except OSError:
                continue
            if text:
                parts.append(f"[{path.name} of node {node.node_id}]\n{text}")
        return "\n".join(parts)

    # -- metadata and topics -------------------------------------------------------------------

    async def apartitions(self, topic: str, timeout_s: float = 10.0) -> dict[int, PartitionState]:
        """Partition → leader, replicas, ISR, as a running node's metadata says. Right after a node
        died the metadata may still list it, and a request sent its way fails: then another running
        node is asked, until ``timeout_s``."""
        from aiokafka.admin import AIOKafkaAdminClient

        deadline = time.monotonic() + timeout_s
        attempt = 0
        while True:
            live = self._live_bootstrap().split(",")
            admin = AIOKafkaAdminClient(bootstrap_servers=live[attempt % len(live)], request_timeout_ms=2000)
            attempt += 1
            try:
                await admin.start()
                described = await admin.describe_topics([topic])
            except Exception as exc:  # a dead node still in the metadata, a timeout, …
                if time.monotonic() >= deadline:
                    raise BrokerError(f"no metadata for topic {topic!r}: {type(exc).__name__}: {exc}") from None
                await asyncio.sleep(0.1)
                continue
            finally:
                await admin.close()
            entry = next((e for e in described if e["topic"] == topic), None)
            if entry is None:
                raise BrokerError(f"topic {topic!r} is not in the metadata")
            if entry["error_code"] not in _METADATA_NOT_YET:  # those: just created, not every node knows yet
                if entry["error_code"]:
                    raise BrokerError(f"topic {topic!r}: error {entry['error_code']} in the metadata")
                return {p["partition"]: PartitionState(p["leader"], tuple(p["replicas"]), tuple(p["isr"]))
                        for p in entry["partitions"]}
            if time.monotonic() >= deadline:
                raise BrokerError(f"topic {topic!r}: still unknown to node {live[(attempt - 1) % len(live)]} "
                                  f"after {timeout_s:g} s")
            await asyncio.sleep(0.1)

    def partitions(self, topic: str) -> dict[int, PartitionState]:
        return _run_sync(self.apartitions(topic))

    async def aleaders(self, topic: str) -> dict[int, int]:
        """Partition → the node id leading it (-1 while none does)."""
        return {p: s.leader for p, s in (await self.apartitions(topic)).items()}

    def leaders(self, topic: str) -> dict[int, int]:
        return _run_sync(self.aleaders(topic))

    async def acreate_topics(self, names: Iterable[str], partitions: int, replication: int | None = None,
                             timeout_s: float = 30.0) -> dict[str, int]:
        """Create topics (replication factor default: the cluster's); existing ones are fine."""
        return await acreate_topics(self._live_bootstrap(), list(names), partitions,
                                    replication or self.replication, timeout_s)

    def create_topics(self, names: Iterable[str], partitions: int, replication: int | None = None,
                      timeout_s: float = 30.0) -> dict[str, int]:
        return _run_sync(self.acreate_topics(names, partitions, replication, timeout_s))

    # -- internals -------------------------------------------------------------------------------

    def _node(self, node_id: int | None) -> KafkaNode:
        try:
            return self.nodes[node_id]  # type: ignore[index]
        except KeyError:
            raise BrokerError(f"no node {node_id} (nodes: {sorted(self.nodes) or 'none, not started'})") from None

    def _live_bootstrap(self) -> str:
        live = [f"{self.host}:{n.port}" for n in self.nodes.values() if n.alive()]
        if not live:
            raise BrokerError("no Kafka node is running")
        return ",".join(live)

    def _prepare(self) -> None:
        """Java, jars, ports, folders, configuration files and (first start) formatted storage."""
        if any(n.alive() for n in self.nodes.values()):
            raise BrokerError(f"already running at {self.bootstrap}")
        self._java = java_binary()
        self.jars = self.jars or kafka_jars()
        archive = class_archive(self.jars, self._java)
        self._archive = archive if archive.is_file() else None
        if self.work_dir is not None:
            self._dir, self._own_dir = self.work_dir, False
            self._dir.mkdir(parents=True, exist_ok=True)
        else:
            self._dir, self._own_dir = Path(tempfile.mkdtemp(prefix="only1mcp-kafka-")), True
        try:
            self._configure()
        except BaseException:
            if self._own_dir:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir, self.nodes = None, {}
            raise

    def _configure(self) -> None:
        assert self._dir is not None
        ports = _free_ports(2 * self.size, self.host)
        self.nodes = {}
        for index in range(self.size):
            node_id = index + 1
            node = KafkaNode(node_id, ports[2 * index], ports[2 * index + 1], self._dir / f"node-{node_id}")
            node.dir.mkdir(parents=True, exist_ok=True)
            self.nodes[node_id] = node
        formatted = [(n.data_dir / "meta.properties").is_file() for n in self.nodes.values()]
        if all(formatted):
            self.cluster_id = _read_cluster_id(next(iter(self.nodes.values())).data_dir / "meta.properties")
        elif any(formatted):
            raise BrokerError(f"{self._dir}: some nodes are formatted and some not; remove the folder")
        else:
            self.cluster_id = _new_cluster_id()
        voters = ",".join(f"{n.node_id}@{self.host}:{n.controller_port}" for n in self.nodes.values())
        for node in self.nodes.values():
            node.properties_path.write_text(self._server_properties(node, voters))
            (node.dir / "log4j2.properties").write_text(_LOG4J2.format(log=node.log_path, level=self.log_level))
        if not all(formatted):
            self._format()
        if self._archive is None:  # the first node writes one at exit, for the next starts
            self._dump = (min(self.nodes), self._dir / f"classes-{os.getpid()}.jsa")

    def _server_properties(self, node: KafkaNode, voters: str) -> str:
        h = self.host
        props: dict[str, object] = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{h}:{node.port},CONTROLLER://{h}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{h}:{node.port},CONTROLLER://{h}:{node.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(node.data_dir),
            "default.replication.factor": self.replication,
            "min.insync.replicas": self.min_insync,
            "offsets.topic.replication.factor": self.replication,
            "transaction.state.log.replication.factor": self.replication,
            "transaction.state.log.min.isr": self.min_insync,
            **_SMALL,
            **FAST_FAILOVER,
            **self.extra_properties,
        }
        lines = ["# Written by only1mcp.infra.kafka (KafkaCluster); rewritten at every start."]
        lines += [f"{key}={value}" for key, value in props.items()]
        return "\n".join(lines) + "\n"

    def _format(self) -> None:
        assert self._dir is not None and self.jars is not None
        tool_log = self._dir / "tool-log4j2.properties"
        tool_log.write_text(_TOOL_LOG4J2)
        procs = []
        for node in self.nodes.values():
            argv = [self._java, "-Xmx256m", *_JVM_FLAGS, *self._archive_flags(None),
                    f"-Dlog4j2.configurationFile={tool_log}",
                    "-cp", str(self.jars / "*"), "kafka.tools.StorageTool", "format",
                    "-t", self.cluster_id, "-c", str(node.properties_path)]
            procs.append((node, subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                 stderr=subprocess.STDOUT)))
        failures = []
        for node, proc in procs:
            try:
                out, _ = proc.communicate(timeout=_FORMAT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
                failures.append(f"node {node.node_id}: the storage format took over {_FORMAT_TIMEOUT_S:g} s")
                continue
            if proc.returncode != 0:
                failures.append(f"node {node.node_id}: exit code {proc.returncode}\n"
                                f"{_tail(out.decode(errors='replace'), 10)}")
        if failures:
            raise BrokerError("kafka.tools.StorageTool format failed:\n" + "\n".join(failures))

    def _argv(self, node: KafkaNode) -> list[str]:
        assert self.jars is not None
        return [self._java, f"-Xmx{self.heap_mb}m", f"-Xms{min(self.heap_mb, 128)}m", *_JVM_FLAGS,
                *self._archive_flags(node.node_id), *self.jvm_options,
                f"-Dlog4j2.configurationFile={node.dir / 'log4j2.properties'}",
                "-cp", str(self.jars / "*"), "kafka.Kafka", str(node.properties_path)]

    def _archive_flags(self, node_id: int | None) -> list[str]:
        if self._archive is not None:
            return [f"-XX:SharedArchiveFile={self._archive}"]
        if self._dump is not None and node_id == self._dump[0]:
            return [f"-XX:ArchiveClassesAtExit={self._dump[1]}"]
        return []

    def _keep_archive(self, node_id: int, code: int | None) -> None:
        """After the archive-writing node exited: move its archive into the Kafka home (only after a
        clean exit: a killed JVM wrote none, or half of one)."""
        if self._dump is None or self._dump[0] != node_id:
            return
        dumped, self._dump = self._dump[1], None
        try:
            if code in (0, 143) and dumped.is_file() and dumped.stat().st_size > 0 and self.jars is not None:
                target = class_archive(self.jars, self._java)
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(f".{target.name}.{os.getpid()}")
                shutil.copyfile(dumped, partial)
                os.replace(partial, target)
        except OSError:
            pass  # a read-only Kafka home: the nodes just start without one
        finally:
            with contextlib.suppress(OSError):
                dumped.unlink()

    def _spawn_all(self) -> None:
        for node in self.nodes.values():
            self._spawn(node)

    def _spawn(self, node: KafkaNode) -> None:
        for port in (node.port, node.controller_port):
            if _listening(self.host, port):
                raise BrokerError(f"node {node.node_id}: port {port} on {self.host} is already in use")
        argv = self._argv(node)
        if sys.platform.startswith("linux"):
            argv = [sys.executable, "-c", _LAUNCHER, *argv]
        with open(node.out_path, "ab") as out:
            node.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=node.dir)
        lower_priority(node.process.pid, self.nice)

    async def _wait_ready(self, node_ids: list[int], timeout_s: float) -> None:
        """Each node listens and answers metadata itself, then the metadata lists every running node."""
        deadline = time.monotonic() + timeout_s
        for node_id in node_ids:
            node = self._node(node_id)
            await self._wait_tcp(node, deadline)
        for node_id in node_ids:
            node = self._node(node_id)
            while True:
                self._check_alive(node)
                try:
                    await wait_kafka(self.address(node_id), min(2.0, max(0.2, deadline - time.monotonic())))
                    break
                except BrokerError as exc:
                    if time.monotonic() >= deadline:
                        raise BrokerError(f"node {node_id}: {exc}\n{self.log_tail(node_id)}") from None
        await self._wait_brokers(deadline)

    async def _wait_tcp(self, node: KafkaNode, deadline: float) -> None:
        while True:
            self._check_alive(node)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(self.host, node.port), 0.5)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return
            except (OSError, asyncio.TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise BrokerError(f"node {node.node_id} did not listen on {self.address(node.node_id)}: "
                                      f"{exc}\n{self.log_tail(node.node_id)}") from None
                await asyncio.sleep(0.05)

    async def _wait_brokers(self, deadline: float) -> None:
        from aiokafka.client import AIOKafkaClient

        wanted = {n.node_id for n in self.nodes.values() if n.alive()}
        seen: set[int] = set()
        last = "no attempt"
        while True:
            for node in self.nodes.values():
                if node.node_id in wanted:
                    self._check_alive(node)
            client = AIOKafkaClient(bootstrap_servers=self._live_bootstrap(), request_timeout_ms=2000)
            try:
                await client.bootstrap()
                seen = {b.nodeId for b in client.cluster.brokers()}
                if wanted <= seen:
                    return
                last = f"the metadata lists nodes {sorted(seen)}, not yet {sorted(wanted - seen)}"
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}"
            finally:
                await client.close()
            if time.monotonic() >= deadline:
                missing = sorted(wanted - seen) or sorted(wanted)
                raise BrokerError(f"Kafka at {self.bootstrap}: {last}\n{self.log_tail(missing[0])}")
            await asyncio.sleep(0.2)

    def _check_alive(self, node: KafkaNode) -> None:
        if not node.alive():
            code = None if node.process is None else node.process.returncode
            raise BrokerError(f"Kafka node {node.node_id} exited with code {code}:\n{self.log_tail(node.node_id)}")

    @staticmethod
    def _signal(node: KafkaNode, sig: signal.Signals) -> None:
        if node.process is None:
            return
        try:
            os.killpg(node.process.pid, sig)  # each node leads its own session
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> KafkaCluster:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    def __repr__(self) -> str:
        if not self.nodes:
            return f"KafkaCluster({self.size} nodes, stopped)"
        states = ", ".join(f"{n.node_id}@{n.port}:{'up' if n.alive() else 'down'}" for n in self.nodes.values())
        return f"KafkaCluster({states})"


def _new_cluster_id() -> str:
    """22 characters of URL-safe base64, as Kafka's Uuid prints (never starting with '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _read_cluster_id(meta: Path) -> str:
    for line in meta.read_text().splitlines():
        if line.startswith("cluster.id="):
            return line.split("=", 1)[1].strip()
    raise BrokerError(f"{meta} names no cluster.id")


def _free_ports(count: int, host: str) -> list[int]:
    """``count`` distinct ports free a moment ago (all bound at once, so none repeats)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


# -- python -m only1mcp.infra.kafka -------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m only1mcp.infra.kafka",
                                     description=f"Apache Kafka {KAFKA_VERSION} from Maven Central, run locally")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="fetch the jars once (Maven) and print their folder")
    fetch.add_argument("--dir", help="the Kafka home (default: $ONLY1MCP_KAFKA_HOME or .tools/kafka-<version>)")
    fetch.add_argument("--no-archive", action="store_true",
                       help="do not make the JVM class archive that speeds up every start (~5 s, once)")
    run = sub.add_parser("run", help="run a cluster in the foreground until Ctrl-C")
    run.add_argument("--nodes", type=int, default=1)
    run.add_argument("--work-dir", help="keep data and logs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            jars = kafka_jars(args.dir, say=lambda text: print(text, file=sys.stderr, flush=True))
            if not args.no_archive and not class_archive(jars).is_file():
                print("making the JVM class archive (one start and stop of a Kafka node)", file=sys.stderr, flush=True)
                build_class_archive(args.dir)
            print(jars, flush=True)
            return 0
        cluster = KafkaCluster(args.nodes, work_dir=args.work_dir)
        for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored (a background job)
            signal.signal(sig, _interrupt)
        started = time.monotonic()
        with cluster:
            print(f"Kafka {KAFKA_VERSION}: {cluster.bootstrap} ({args.nodes} node(s), ready in "
                  f"{time.monotonic() - started:.1f} s; logs {cluster.log_path().parent.parent}/node-*/kafka.log)",
                  flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while cluster.alive():
                    time.sleep(0.5)
            if not cluster.alive():
                print(f"a node exited:\n{_first_dead_tail(cluster)}", file=sys.stderr)
                return 1
        return 0
    except BrokerError as exc:
        print(f"kafka: {exc}", file=sys.stderr)
        return 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _first_dead_tail(cluster: KafkaCluster) -> str:
    dead: Any = next((n for n in cluster.nodes.values() if not n.alive()), None)
    return cluster.log_tail(dead.node_id) if dead else ""


if __name__ == "__main__":
    sys.exit(main())
