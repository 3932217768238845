"""The simulator: model, sim-server, load generator, oracle, and ``bench routing --quick`` end to end.

Model, workload and oracle tests are pure and fast. The server tests start real
sim-server processes (a fleet process and a crashing one, side by side); the
benchmark runs once per module (about 45 s) and the other tests read its JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from only1mcp.jobs.bench import cli as bench_cli
from only1mcp.jobs.bench._loadgen import McpError, new_http_client
from only1mcp.jobs.bench._procs import ProcessGroup, free_port
from only1mcp.jobs.sim import loadgen_cli
from only1mcp.jobs.sim.loadgen import ToolSession, summarize_calls
from only1mcp.jobs.sim.model import Profile, Queue, ReplicaModel, predict, service_rng
from only1mcp.jobs.sim.oracle import simulate
from only1mcp.jobs.sim.scenarios import DEFAULT_SCENARIOS, build_scenario
from only1mcp.jobs.sim.workload import SessionChain, Workload, open_loop_schedule

PYTHON = sys.executable
TOOLS = {"lookup": {"median_ms": 40.0, "sigma": 0.3, "read_only": True},
         "write": {"median_ms": 20.0, "sigma": 0.3, "read_only": False}}


# -- the model and the workload, pure ------------------------------------------------------------

def _draws(seed: int, n: int = 50) -> list[tuple[float, bool]]:
    profile = Profile.from_dict({"tools": TOOLS, "workers": 2,
                                 "faults": [{"kind": "error_ramp", "start": 0, "end": 1, "rate": 0.3}]})
    model, rng = ReplicaModel(profile), service_rng(seed, "r0")
    out = []
    for i in range(n):
        outcome = model.outcome("lookup", i * 0.01, rng.gauss(0, 1), rng.random())
        model.commit(outcome)
        out.append((outcome.latency, outcome.error))
    return out


def test_model_is_deterministic_for_a_seed() -> None:
    assert _draws(7) == _draws(7)
    assert _draws(7) != _draws(8)


def test_model_queueing_and_distribution() -> None:
    profile = Profile.from_dict({"tools": TOOLS, "workers": 1})
    queue = Queue(1)
    idle = predict(profile, "lookup", 0.0, queue)
    assert idle.shift == 0 and idle.median == pytest.approx(0.040) and idle.quantile(0.5) == pytest.approx(0.040)
    queue.admit(0.0, 0.5)  # the one worker is busy until t = 0.5
    assert predict(profile, "lookup", 0.1, queue).shift == pytest.approx(0.4)  # waiting adds to service
    rng = service_rng(1, "r0")
    samples = sorted(profile.service("lookup", 0.0).sample(rng) for _ in range(4000))
    assert statistics.median(samples) == pytest.approx(0.040, rel=0.05)


def test_model_faults() -> None:
    profile = Profile.from_dict({"tools": TOOLS, "faults": [
        {"kind": "latency_ramp", "start": 10, "end": 20, "factor": 5.0, "until": 30},
        {"kind": "error_ramp", "start": 10, "end": 20, "rate": 0.8, "tools": ["write"]},
        {"kind": "stall", "start": 40, "end": 42},
        {"kind": "flap", "start": 50, "end": 60, "up": 3, "down": 1},
        {"kind": "crash", "at": 70, "restart_after": 2},
    ]})
    assert [profile.latency_multiplier("lookup", t) for t in (5, 10, 15, 20, 29, 30)] == [1, 1, 3, 5, 5, 1]
    assert profile.error_probability("write", 5) == 0 < profile.error_probability("write", 15)
    assert profile.error_probability("write", 15) < profile.error_probability("write", 25) == pytest.approx(0.8)
    assert profile.error_probability("lookup", 25) == 0  # the ramp names its tools
    assert profile.stall_end("lookup", 41) == 42 and profile.stall_end("lookup", 43) == 43
    assert [profile.is_down(t) for t in (49, 50.5, 51.5, 54.5, 61)] == [False, True, False, True, False]
    assert profile.crash_at == 70 and profile.is_down(71) and not profile.is_down(72.5)
    with pytest.raises(ValueError):
        Profile.from_dict({"tools": TOOLS, "faults": [{"kind": "meteor"}]})


def test_workload_sequences_are_seeded() -> None:
    workload = Workload.load(None)
    one = open_loop_schedule(workload, 5, sessions=8, rate=100, duration=3)
    assert one == open_loop_schedule(workload, 5, sessions=8, rate=100, duration=3)
    assert one != open_loop_schedule(workload, 6, sessions=8, rate=100, duration=3)
    assert 200 < len(one) < 400 and all(a.t < b.t for a, b in zip(one, one[1:]))
    # Session s's n-th call is the same in open loop as in its own chain (closed loop).
    chain = SessionChain(workload, 5, 3)
    assert [(c.tool, c.key) for c in one if c.session == 3][:10] == [chain.next() for _ in range(10)]
    keys = [c.key for c in one]
    assert keys.count("doc-1") > keys.count("doc-50")  # Zipf: rank 1 is hot
    assert set(workload.stationary_mix()) == {c.tool for c in one}


def test_oracle_beats_round_robin_on_a_slow_replica() -> None:
    scenario = build_scenario("slow-replica", 10.0)
    workload = Workload.load(None)
    rate = 0.65 * scenario.capacity(workload.stationary_mix())
    schedule = open_loop_schedule(workload, 1, 16, rate, 10.0)
    oracle = simulate(schedule, scenario.profiles(), 1)
    assert oracle == simulate(schedule, scenario.profiles(), 1)
    best, rr = summarize_calls(oracle, 1.0), summarize_calls(simulate(schedule, scenario.profiles(), 1, "round_robin"),
                                                              1.0)
    assert best["success_rate"] == 1.0 and best["latency_ms"]["p99"] < 0.5 * rr["latency_ms"]["p99"]
    assert best["by_replica"].get("r3", 0) < 0.05 * best["count"]


def test_the_informed_oracle_sits_between_foresight_and_round_robin() -> None:
    """It knows profiles and queues but not the draws: worse than the clairvoyant oracle, far better
    than round robin, and its choices do not depend on the draws (another seed, same choices until
    the queues differ, which they do only through service times)."""
    scenario = build_scenario("specialised", 10.0)
    workload = Workload.load(None)
    rate = 0.65 * scenario.capacity(workload.stationary_mix())
    schedule = open_loop_schedule(workload, 1, 16, rate, 10.0)
    profiles = scenario.profiles()
    informed = simulate(schedule, profiles, 1, "informed")
    p95 = {pick: summarize_calls(simulate(schedule, profiles, 1, pick), 1.0)["latency_ms"]["p95"]
           for pick in ("oracle", "round_robin")}
    mine = summarize_calls(informed, 1.0)["latency_ms"]["p95"]
    assert p95["oracle"] < mine < 0.5 * p95["round_robin"], (p95, mine)
    # The first call meets empty queues everywhere: the informed pick is the replica whose profile is
    # fastest for its tool, whatever that call's draws would have been.
    first = schedule[0]
    fastest = min(profiles, key=lambda rp: rp[1].service(first.tool, first.t).mean)[0]
    assert informed[0]["replica"] == fastest == simulate(schedule[:1], profiles, 99, "informed")[0]["replica"]
    with pytest.raises(ValueError, match="pick must be one of"):
        simulate(schedule, profiles, 1, "psychic")


# -- real sim-servers -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A fleet process (plain, erroring, stalled, flapping replicas) and a single replica that crashes."""
    tmp = tmp_path_factory.mktemp("sim")
    ports = {name: free_port() for name in ("plain", "errors", "stalled", "down", "crash")}
    past = time.time() - 100  # fault clock started long ago: the ramps are at their peak
    fleet = [
        {"port": ports["plain"], "replica_id": "plain", "seed": 3, "profile": {"tools": TOOLS, "workers": 1}},
        {"port": ports["errors"], "replica_id": "errors", "seed": 3, "epoch": past, "profile": {
            "tools": TOOLS, "workers": 4, "faults": [{"kind": "error_ramp", "start": 10, "end": 20, "rate": 1.0}]}},
        {"port": ports["stalled"], "replica_id": "stalled", "profile": {
            "tools": TOOLS, "faults": [{"kind": "stall", "start": 0, "end": 1e9}]}},
        {"port": ports["down"], "replica_id": "down", "profile": {
            "tools": TOOLS, "faults": [{"kind": "flap", "start": 0, "up": 1, "down": 1e9}]}},
    ]
    crash_profile = json.dumps({"tools": TOOLS, "faults": [{"kind": "crash", "at": 2.5}]})
    with ProcessGroup(tmp) as group:
        group.start("fleet", [PYTHON, "-m", "only1mcp.cli", "sim-server", "--fleet", json.dumps(fleet)])
        crasher = group.start("crash", [PYTHON, "-m", "only1mcp.cli", "sim-server", "--port", str(ports["crash"]),
                                        "--profile", crash_profile, "--replica-id", "crash"])
        _run(_wait_listening([ports["plain"], ports["crash"]]))
        yield {"urls": {k: f"http://127.0.0.1:{p}/mcp" for k, p in ports.items()}, "crasher": crasher, "tmp": tmp}


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _wait_listening(ports: list[int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def _session(http: Any, url: str) -> ToolSession:
    session = ToolSession(http, url)
    await session.open()
    return session


def test_sim_server_tools_latency_and_queueing(servers: dict[str, Any]) -> None:
    async def go() -> dict[str, Any]:
        async with new_http_client() as http:
            s = await _session(http, servers["urls"]["plain"])
            hints = await s.tool_hints()
            sequential = []
            for i in range(25):
                started = time.perf_counter()
                assert await s.call_tool("lookup", {"key": f"k{i}"}) == (True, None, "plain")
                sequential.append(time.perf_counter() - started)
            started = time.perf_counter()  # one worker: five at once must queue behind each other
            burst = await asyncio.gather(*(s.call_tool("write", {"key": "x"}) for _ in range(5)))
            burst_s = time.perf_counter() - started
            bad = await s.call_tool("lookup", {})
            message = await s._request("tools/call", {"name": "sim_stats", "arguments": {}})
            return {"hints": hints, "sequential": sequential, "burst": burst, "burst_s": burst_s, "bad": bad,
                    "stats": json.loads(message["result"]["content"][0]["text"])}

    got = _run(go())
    assert got["hints"] == {"lookup": True, "write": False, "sim_stats": True}
    assert statistics.median(got["sequential"]) == pytest.approx(0.040, rel=0.25)
    assert all(ok for ok, _, _ in got["burst"]) and got["burst_s"] > 3 * 0.020
    assert got["bad"][0] is False and "key" in got["bad"][1]
    assert got["stats"]["executions"] == {"lookup": 25, "write": 5}  # sim_stats counts what ran upstream


def test_error_ramp_raises_the_error_rate(servers: dict[str, Any]) -> None:
    async def go(name: str) -> list[bool]:
        async with new_http_client() as http:
            s = await _session(http, servers["urls"][name])
            return [(await s.call_tool("write", {"key": "k"}))[0] for _ in range(10)]

    assert sum(_run(go("plain"))) == 10  # no fault: every call succeeds
    assert sum(_run(go("errors"))) == 0  # the ramp at its peak (rate 1): every call fails


def test_stalled_calls_hang(servers: dict[str, Any]) -> None:
    async def go() -> dict[str, Any]:
        async with new_http_client() as http:
            s = await _session(http, servers["urls"]["stalled"])
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await s.call_tool("lookup", {"key": "k"})
            message = await s._request("tools/call", {"name": "sim_stats", "arguments": {}})
            return json.loads(message["result"]["content"][0]["text"])

    stats = _run(go())
    assert stats["executions"] == {"lookup": 1}  # it arrived, and it is still held (or was cancelled)


def test_flapping_replica_is_unreachable(servers: dict[str, Any]) -> None:
    async def go() -> None:
        async with new_http_client() as http:
            await _session(http, servers["urls"]["down"])

    with pytest.raises(McpError, match="503"):
        _run(go())


def test_crash_exits_the_process(servers: dict[str, Any]) -> None:
    crasher = servers["crasher"]
    crasher.popen.wait(timeout=15)
    assert crasher.popen.returncode == 1
    assert "simulated crash" in crasher.log_tail()


# -- the load generator ---------------------------------------------------------------------------

_WORKLOAD = json.dumps({"start": {"lookup": 1}, "transitions": {"lookup": {"lookup": 1, "write": 1}, "write": {"lookup": 1}},
                        "keys": 50})


def _loadgen(url: str, out: Path, *mode: str) -> list[dict[str, Any]]:
    argv = ["--url", url, "--seed", "11", "--duration", "0.6", "--out", str(out), "--profile", _WORKLOAD, *mode]
    with contextlib.redirect_stdout(io.StringIO()):
        code = loadgen_cli.main(argv)
    assert code == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_loadgen_same_seed_same_calls(servers: dict[str, Any]) -> None:
    url, tmp = servers["urls"]["errors"], servers["tmp"]
    fields = ("session", "seq", "tool", "key", "scheduled")
    a = _loadgen(url, tmp / "a.jsonl", "--rate", "40", "--sessions", "4")
    b = _loadgen(url, tmp / "b.jsonl", "--rate", "40", "--sessions", "4")
    assert len(a) > 10 and [[r[f] for f in fields] for r in a] == [[r[f] for f in fields] for r in b]
    assert {r["replica"] for r in a} == {"errors"} and {r["read_only"] for r in a} == {True, False}
    assert {r["tool"] for r in a} == {"lookup", "write"} and not any(r["ok"] for r in a)  # the ramp is at 100 %
    summary = json.loads((tmp / "a.jsonl.summary.json").read_text())
    assert summary["count"] == len(a) and summary["mode"] == "open" and "p99" in summary["latency_ms"]
    # Closed loop: each session's sequence is fixed by the seed too (lengths depend on timing).
    c = _loadgen(url, tmp / "c.jsonl", "--concurrency", "2")
    d = _loadgen(url, tmp / "d.jsonl", "--concurrency", "2")
    for session in (0, 1):
        seq_c = [(r["tool"], r["key"]) for r in c if r["session"] == session]
        seq_d = [(r["tool"], r["key"]) for r in d if r["session"] == session]
        n = min(len(seq_c), len(seq_d))
        assert n > 3 and seq_c[:n] == seq_d[:n]


# -- bench routing --quick ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("routing")
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    # A name no proxy knows: its row must read "not available" and the run go on.
    policies = ["round_robin", "random", "least_inflight", "p2c_ewma", "consistent_hash", "no_such_policy"]
    args = parser.parse_args(["routing", "--quick", "--out", str(out), "--policies", *policies])
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = bench_cli.run(args)
    path = out / "routing.json"
    return {"code": code, "stdout": stdout.getvalue(), "out": out,
            "json": json.loads(path.read_text()) if path.exists() else None}


def test_bench_routing_quick_end_to_end(bench: dict[str, Any]) -> None:
    assert bench["code"] == 0, bench["stdout"]
    report = bench["json"]
    assert report["benchmark"] == "routing" and set(report["scenarios"]) == set(DEFAULT_SCENARIOS)
    for name, scenario in report["scenarios"].items():
        rows = scenario["rows"]
        assert rows["oracle"]["status"] == "ok" and rows["oracle"]["summary"]["count"] == scenario["calls"]
        assert set(rows) == {"round_robin", "random", "least_inflight", "p2c_ewma", "consistent_hash",
                             "no_such_policy", "oracle_informed", "oracle"}
        assert rows["no_such_policy"]["status"] == "not available"
        assert "no_such_policy" in rows["no_such_policy"]["reason"]
        for policy, row in rows.items():
            assert row["status"] in ("ok", "not available"), (name, policy, row)
            if row["status"] == "ok":  # every planned call was sent, and the fleet executed them
                assert row["summary"]["count"] == scenario["calls"], (name, policy)
                executed = sum(sum(s.get("executions", {}).values()) for s in row.get("upstream", {}).values())
                assert policy.startswith("oracle") or executed >= 0.9 * scenario["calls"], (name, policy, executed)
        assert rows["round_robin"]["status"] == "ok"  # the proxy's first policy is always there
        assert name in bench["stdout"]
    assert [bar["name"] for bar in report["bars"]] == ["p2c_vs_rr_p99_slow_replica"]
    assert report["bars"][0]["status"] in ("PASS", "FAIL", "SKIP")
    assert report["wall_s"] < 300  # --quick took effect (~60 s; a full run takes many minutes), not a speed bar
    if importlib.util.find_spec("matplotlib") is not None:
        assert (bench["out"] / "routing.png").stat().st_size > 10_000
