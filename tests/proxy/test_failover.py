"""Failover under load: `kill -9` of one of three replicas. Calls to the read-only tool are
retried on another replica (≥ 99.9 % succeed); calls to the side-effecting tool are never sent
twice — every upstream execution is journaled by the replicas themselves, the killed one too."""

from __future__ import annotations

import collections
import os
import signal
import sys
import threading
import time
from pathlib import Path

from tests.conftest import wait_port
from tests.proxy._raw import RawClient
from only1mcp.jobs.bench._procs import free_port


def _replicas(stack, journal: Path, n: int = 3):  # noqa: ANN001, ANN202
    procs, urls = [], []
    for _ in range(n):
        port = free_port()
        proc = stack.start(f"faults-{port}", [sys.executable, "-m", "only1mcp.cli", "fixture", "faults",
                                              "--port", str(port), "--journal", str(journal)])
        wait_port(port, proc)
        procs.append(proc)
        urls.append(f"http://127.0.0.1:{port}/mcp")
    return procs, urls


def test_kill_one_of_three_replicas_under_load(stack, tmp_path: Path) -> None:  # noqa: ANN001
    journal = tmp_path / "journal.txt"
    procs, urls = _replicas(stack, journal)
    replicas = "".join(f'[[servers.replicas]]\nurl = "{url}"\n' for url in urls)
    url, proxy = stack.proxy(f'[[servers]]\nname = "f"\npolicy = "p2c_ewma"\n{replicas}')
    outcomes: dict[str, collections.Counter] = {"lookup": collections.Counter(), "write": collections.Counter()}
    sent_writes: list[tuple[str, bool]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def load(worker: int) -> None:
        with RawClient(url, timeout=30) as client:
            sid = client.initialize()
            seq = 0
            while not stop.is_set():
                seq += 1
                tool = "write" if seq % 5 == 0 else "lookup"
                key = f"w{worker}-{seq}"
                reply = client.call_tool(sid, f"f__{tool}", {"key": key})
                ok = "result" in reply and not reply["result"].get("isError")
                with lock:
                    outcomes[tool][ok] += 1
                    if tool == "write":
                        sent_writes.append((key, ok))

    workers = [threading.Thread(target=load, args=(i,)) for i in range(6)]
    for worker in workers:
        worker.start()
    time.sleep(2.0)
    os.kill(procs[0].pid, signal.SIGKILL)  # no goodbye: connections reset, calls in flight lost
    time.sleep(3.0)
    stop.set()
    for worker in workers:
        worker.join(timeout=30)

    lookups = outcomes["lookup"]
    assert lookups[True] > 200, outcomes
    assert lookups[True] / (lookups[True] + lookups[False]) >= 0.999, outcomes
    lines = journal.read_text().splitlines()
    assert any(line.endswith(f" {procs[0].pid}") for line in lines), "the killed replica never served"
    executions = collections.Counter(line.split()[1] for line in lines if line.startswith("write "))
    assert executions, "no write reached an upstream"
    assert max(executions.values()) == 1, [k for k, n in executions.items() if n > 1][:5]
    for key, ok in sent_writes:
        if ok:
            assert executions[key] == 1, key  # a write that succeeded ran exactly once
    print(dict(outcomes["lookup"]), dict(outcomes["write"]), proxy.log_path.read_text().count("retrying"), "retries")
