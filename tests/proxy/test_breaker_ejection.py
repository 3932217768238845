"""Scripted faults against real replicas: a replica frozen with SIGSTOP times out, its circuit
breaker opens (or the outlier detector ejects it) and traffic goes to the healthy one; after
SIGCONT it is probed and comes back. State is read from the admin API."""

from __future__ import annotations

import os
import signal
import sys
import time

import httpx

from only1mcp.jobs.bench._procs import free_port
from tests.conftest import wait_port
from tests.proxy._raw import RawClient


def _two_replicas(stack, extra: str):  # noqa: ANN001, ANN202
    procs, urls = [], []
    for _ in range(2):
        port = free_port()
        proc = stack.start(f"faults-{port}", [sys.executable, "-m", "only1mcp.cli", "fixture", "faults",
                                              "--port", str(port)])
        wait_port(port, proc)
        procs.append(proc)
        urls.append(f"http://127.0.0.1:{port}/mcp")
    replicas = "".join(f'[[servers.replicas]]\nurl = "{url}"\n' for url in urls)
    url, _ = stack.proxy(f'[[servers]]\nname = "f"\npolicy = "round_robin"\ntimeout = 0.5\n'
                         f'upstream_sessions = 1\n{extra}\n{replicas}')
    return procs, url


def _replica_health(url: str) -> dict:
    body = httpx.get(url.replace("/mcp", "/admin/upstreams")).json()
    return {r["id"]: r["health"] for r in body["servers"]["f"]["replicas"]}


def _calls(client: RawClient, sid: str, n: int) -> list[bool]:
    return ["result" in client.call_tool(sid, "f__lookup", {"key": str(i)}) for i in range(n)]


def test_breaker_opens_on_a_stalled_replica_and_closes_after_it_recovers(stack) -> None:  # noqa: ANN001
    procs, url = _two_replicas(stack, "[servers.breaker]\nfailure_threshold = 3\nopen_for = 1.0\n"
                                      "[servers.outlier]\nconsecutive_failures = 1000\nmin_requests = 1000\n"
                                      "[servers.health]\ninterval = 0\n")
    with RawClient(url) as client:
        sid = client.initialize()
        os.kill(procs[0].pid, signal.SIGSTOP)
        try:
            _calls(client, sid, 8)  # round robin sends every other call to the frozen one: 3+ time out
            assert _replica_health(url)["f/0"]["breaker"]["state"] == "open"
            started = time.monotonic()
            assert all(_calls(client, sid, 6)), "with the breaker open, calls go to the healthy replica"
            assert time.monotonic() - started < 2.0
        finally:
            os.kill(procs[0].pid, signal.SIGCONT)
        time.sleep(1.2)  # open_for passes: the next call to it is a half-open probe, and it answers
        client.poll(lambda: all(_calls(client, sid, 2)) and
                    _replica_health(url)["f/0"]["breaker"]["state"] == "closed", timeout=10)


def test_outlier_ejection_and_return(stack) -> None:  # noqa: ANN001
    procs, url = _two_replicas(stack, "[servers.breaker]\nfailure_threshold = 1000\n"
                                      "[servers.outlier]\nconsecutive_failures = 2\nejection_time = 1.0\n"
                                      "max_ejected_share = 0.5\n[servers.health]\ninterval = 0\n")
    with RawClient(url) as client:
        sid = client.initialize()
        os.kill(procs[1].pid, signal.SIGSTOP)
        try:
            _calls(client, sid, 6)
            health = _replica_health(url)
            assert health["f/1"]["outlier"]["ejected"] is True, health["f/1"]
            started = time.monotonic()
            assert all(_calls(client, sid, 6)), "an ejected replica gets no traffic"
            assert time.monotonic() - started < 2.0
        finally:
            os.kill(procs[1].pid, signal.SIGCONT)
        client.poll(lambda: _replica_health(url)["f/1"]["outlier"]["ejected"] is False, timeout=10)
        assert all(_calls(client, sid, 6))
