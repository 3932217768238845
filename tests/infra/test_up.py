"""``only1mcp up --demo`` for real: everything starts, a client calls a tool through the URL it
prints, the calls reach the offline store, the demo's slowdown reaches ``only1mcp anomalies tail``,
and Ctrl-C (SIGINT) leaves no process behind.

Redis is the machine's (127.0.0.1:6379, database 14) when it answers, else ``up`` starts the
bundled one. The tests below share one running ``up`` (the demo as a user runs it: three
replicas, 20 calls/s) and run in file order; the last one stops it. The anomaly test waits for
the slowdown, a minute after the fleet starts: the tests before it run within that minute.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mcp import Client

from only1mcp.cli import COMMANDS
from only1mcp.commands._up_support import DEMO_SLOWDOWN
from only1mcp.jobs.bench._procs import free_port

READY_TIMEOUT_S = 120.0
ANOMALY_WITHIN_S = 300.0  # the slow replica's medium+ anomaly, from the fleet's start
REDIS_URL = "redis://127.0.0.1:6379/14"


@dataclass
class Running:
    proc: subprocess.Popen[str]
    run_dir: Path
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)
    arrived: dict[str, float] = field(default_factory=dict)  # line -> when `up` printed it (time.time())
    descendants: set[int] = field(default_factory=set)

    def read_until(self, pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            for line in self.lines:
                found = re.search(pattern, line)
                if found:
                    return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} in {timeout_s:g}s:\n{self.output()}")
            try:
                line = self._queue.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"`only1mcp up` ended (code {self.proc.wait()}) before {pattern!r}:\n"
                                     f"{self.output()}\n{self.logs()}")
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def logs(self) -> str:
        parts = []
        for log in sorted(self.run_dir.glob("*.log")):
            text = log.read_text(errors="replace").strip().splitlines()[-8:]
            parts.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(parts)


def descendants_of(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
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
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    if not sys.platform.startswith("linux"):
        pytest.skip("the leftover-process check reads /proc")
    base = tmp_path_factory.mktemp("up")
    run_dir = base / "run"
    env = {**os.environ, "REDIS_URL": REDIS_URL, "PYTHONUNBUFFERED": "1"}
    env.pop("KAFKA_BOOTSTRAP", None)  # the embedded broker, as on a developer's machine
    argv = [sys.executable, "-m", "only1mcp.cli", "up", "--demo", "--run-dir", str(run_dir),
            "--listen", f"127.0.0.1:{free_port()}", "--rate", "20", "--startup-timeout", "60"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=base)
    running = Running(proc, run_dir)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            running.arrived.setdefault(line, time.time())
            running._queue.put(line)
        running._queue.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        yield running
    finally:
        leftovers = running.descendants | descendants_of(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in leftovers:  # only if a test failed before the shutdown check
            if alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def test_the_generated_configuration_round_trips_through_toml() -> None:
    import tomllib

    from only1mcp.commands.up import demo_fleet, to_toml
    from only1mcp.settings import parse_settings

    raw = {"proxy": {"listen": "127.0.0.1:8080", "allowed_origins": ["https://a.example"]},
           "cache": {"default_ttl": 5.0, "max_bytes": 1024},
           "events": {"bootstrap": "127.0.0.1:9092", "spool_dir": "/tmp/s p\u00e9\"ool"},
           "servers": [{"name": "sim", "namespace": "", "health": {"interval": 2.0},
                        "tools": {"search": {"cache_ttl": 30.0, "safe": True}},
                        "replicas": [{"url": "http://127.0.0.1:1/mcp"},
                                     {"command": ["x", "--flag"], "env": {"TZ": "UTC", "A.B": "1"}}]}]}
    text = to_toml(raw)
    assert tomllib.loads(text) == raw
    parse_settings(tomllib.loads(text), "<generated>", {})
    fleet = demo_fleet([1, 2, 3])
    assert [r["replica_id"] for r in fleet] == ["r0", "r1", "r2"] and fleet[2]["profile"]["faults"]


def test_up_demo_starts_everything_and_prints_where_it_is(up: Running) -> None:
    up.read_until(r"only1mcp up: ready at http://\S+/mcp", READY_TIMEOUT_S)
    out = up.output()
    for label in ("MCP endpoint", "metrics", "admin", "broker", "Redis", "Parquet data", "config", "logs"):
        assert re.search(rf"^\s+{label}\s", out, re.M), f"no {label!r} row:\n{out}"
    assert re.search(r"only1mcp features .*sql \"SELECT", out) and "mcp.anomalies" in out and "only1mcp anomalies tail" in out
    assert f"{REDIS_URL}" in out or "bundled redis-server" in out
    up.descendants = descendants_of(up.proc.pid)
    names = {p.stem for p in up.run_dir.glob("*.log")}
    assert {"proxy", "sim", "loadgen"} <= names
    assert (up.run_dir / "only1mcp.toml").is_file() and (up.run_dir / "fleet.json").is_file()
    assert len(up.descendants) >= 4  # broker, sim-server, proxy, loadgen (and the worker when there is one)
    # The worker yields the shared cores to the proxy ([worker] nice, which `up` sets to 10).
    roles = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in up.descendants if alive(pid)}
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    niceness = {role: os.getpriority(os.PRIO_PROCESS, pid) for pid, argv in roles.items()
                for role in ("worker", "proxy") if role.encode() in argv[2:4]}
    assert niceness == {"worker": min(19, ours + 10), "proxy": ours}, roles
    # So do the broker and Redis `up` started for the loop (infra/priority.py).
    loop = {name: os.getpriority(os.PRIO_PROCESS, pid) for pid, argv in roles.items()
            for name in ("tansu", "redis-server") if Path(argv[0].decode()).name == name}
    assert "tansu" in loop, roles
    assert set(loop.values()) == {min(19, ours + 10)}, (loop, roles)
    if Path("/proc/self/autogroup").exists():  # each leads its session: the autogroup weighs, not only nice
        groups = {pid: int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1]) for pid, argv in roles.items()
                  if Path(argv[0].decode()).name in ("tansu", "redis-server") or b"worker" in argv[2:4]}
        assert len(groups) >= 2 and set(groups.values()) == {min(19, ours + 10)}, (groups, roles)


def test_a_tool_call_through_the_printed_mcp_url(up: Running) -> None:
    url = up.read_until(r"MCP endpoint\s+(http://\S+/mcp)", 1.0).group(1)

    async def call() -> tuple[list[str], str]:
        async with Client(url, mode="legacy") as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            result = await client.call_tool("get_document", {"key": "doc-1"})
            assert not result.is_error
            return tools, result.content[0].text

    tools, text = asyncio.run(asyncio.wait_for(call(), 20))
    assert {"search", "get_document", "sim_stats"} <= set(tools)
    assert "doc-1" in text


def test_the_calls_reach_the_offline_store(up: Running) -> None:
    missing = [c for c in ("worker", "features") if c not in COMMANDS]
    if missing:
        pytest.skip(f"this build has no `only1mcp {'`/`'.join(missing)}` command yet: nothing writes or "
                    "queries the offline store")
    printed = up.read_until(r"(only1mcp features .*?)\"SELECT[^\"]*\"", 1.0).group(1)  # as the banner says
    argv = [sys.executable, "-m", "only1mcp.cli", *shlex.split(printed)[1:], "SELECT count(*) FROM requests"]
    deadline = time.monotonic() + 30
    last = ""
    while time.monotonic() < deadline:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=up.run_dir.parent)
        last = result.stdout + result.stderr
        numbers = [int(n) for n in re.findall(r"\b\d+\b", result.stdout)]
        if result.returncode == 0 and numbers and numbers[-1] > 0:
            return
        time.sleep(1.0)
    raise AssertionError(f"no requests in the offline store after 30 s; last answer:\n{last}\n{up.logs()}")


def test_the_demo_slowdown_reaches_anomalies_tail(up: Running, tmp_path: Path) -> None:
    """The demo fleet's last replica (``sim/2``) slows down 6x from one minute after the fleet starts
    (reached over 30 s). The worker's anomaly agent must publish a medium or higher anomaly of it,
    received by ``anomalies tail`` run as printed in the banner, within the demo's first five minutes
    (measured from the fleet's start)."""
    started_line = up.read_until(r"only1mcp up: sim: starting", 1.0).string
    fleet_started = up.arrived[started_line]
    command = up.read_until(r"^\s+(only1mcp anomalies tail .*)$", 1.0).group(1)
    argv = command.split()[1:]  # as the banner prints it, plus JSON and the slow replica
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("KAFKA_BOOTSTRAP", None)
    env.pop("REDIS_URL", None)
    tail_out = tmp_path / "tail.out"
    tail = subprocess.Popen([sys.executable, "-m", "only1mcp.cli", *argv, "--json", "--from-beginning",
                             "--replica", "sim/2", "--severity", "medium"], stdout=tail_out.open("w"),
                            stderr=subprocess.STDOUT, env=env)
    try:
        deadline = fleet_started + ANOMALY_WITHIN_S
        while True:
            found = [json.loads(line) for line in tail_out.read_text().splitlines() if line.startswith("{")]
            # opened or updated after the slowdown began (a close reports an earlier peak)
            found = [e for e in found if e["ts"] >= fleet_started + DEMO_SLOWDOWN[0] and e["state"] != "close"]
            if found:
                first = found[0]
                print(f"\n{first['severity']} {first['kind']} anomaly of sim/2 at {first['ts'] - fleet_started:.0f} s "
                      f"(slowdown from {DEMO_SLOWDOWN[0]} s): {first['explanation']}")
                assert first["replica"] == "sim/2" and first["server"] == "sim"
                break
            assert up.proc.poll() is None, up.output()
            assert time.time() < deadline, (f"no medium+ anomaly of sim/2 within {ANOMALY_WITHIN_S:g} s of the "
                                            f"fleet's start\ntail: {tail_out.read_text()[-3000:]}\n"
                                            f"{_worker_log(up.run_dir)}")
            time.sleep(1.0)
        tail.send_signal(signal.SIGINT)
        assert tail.wait(timeout=15) == 0  # Ctrl-C: a clean exit
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()


def _worker_log(run_dir: Path) -> str:
    log = run_dir / "worker.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "worker log:\n" + "\n".join(line for line in lines if "anomal" in line)[-4000:]


def test_sigint_stops_every_child(up: Running) -> None:
    up.read_until(r"only1mcp up: ready", 1.0)
    children = up.descendants | descendants_of(up.proc.pid)
    assert children
    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(timeout=45) == 0, up.output()
    up.read_until(r"only1mcp up: stopped", 5.0)
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in children if alive(pid)] == []
    out = up.output()
    assert out.index("loadgen: stopping") < out.index("proxy: stopping") < out.index("broker: stopping")
