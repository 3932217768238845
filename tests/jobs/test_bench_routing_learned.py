"""``bench routing --with-learned``: the new scenarios, the drift timeline, and one quick run of the whole loop.

The pure tests (scenarios, oracle, timeline, decision classification) are fast. The end-to-end
test runs ``bench routing --with-learned --quick --scenarios specialised`` once (about two
minutes: embedded broker, Redis, worker, proxy, training) and checks the shape of the JSON:
every row is there, ok or with a stated reason, and the learned row carries the training
metrics when it ran. No bar is asserted: timed bars flake on a shared machine; the bars are
the benchmark command's business.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
from collections import Counter
from typing import Any

import pytest

from only1mcp.jobs.bench import cli as bench_cli
from only1mcp.jobs.sim.loop_results import classify_decision
from only1mcp.jobs.sim.loadgen import summarize_calls
from only1mcp.jobs.sim.oracle import simulate
from only1mcp.jobs.sim.report import drift_timeline, judge_bars
from only1mcp.jobs.sim.scenarios import DRIFT_TOOL, LEARNED_SCENARIOS, build_scenario, drift_flip
from only1mcp.jobs.sim.workload import Workload, open_loop_schedule

ROWS = ("round_robin", "p2c_ewma", "tool_ewma", "learned", "oracle_informed", "oracle")


def _schedule(name: str, duration: float, seed: int = 1) -> tuple[Any, list[Any]]:
    scenario = build_scenario(name, duration)
    workload = Workload.load(None)
    rate = 0.65 * scenario.capacity(workload.stationary_mix())
    return scenario, open_loop_schedule(workload, seed, 32, rate, duration)


def test_drift_scenario_flips_and_the_oracle_follows() -> None:
    scenario, schedule = _schedule("drift", 60.0)
    flip = scenario.flip_s
    assert flip == drift_flip(60.0) == 20.0 and flip % 5 == 0
    profiles = dict(scenario.profiles())
    r0, r1 = profiles["r0"], profiles["r1"]
    assert r0.service(DRIFT_TOOL, flip - 1).median < r1.service(DRIFT_TOOL, flip - 1).median / 4
    assert r1.service(DRIFT_TOOL, flip + 1).median < r0.service(DRIFT_TOOL, flip + 1).median / 4
    assert r0.service("summarize", flip + 1) == r0.service("summarize", flip - 1)  # only the drift tool changes
    oracle = simulate(schedule, scenario.profiles(), 1)
    before = Counter(r["replica"] for r in oracle if r["tool"] == DRIFT_TOOL and 5 <= r["scheduled"] < flip)
    after = Counter(r["replica"] for r in oracle if r["tool"] == DRIFT_TOOL and r["scheduled"] >= flip + 2)
    assert before["r0"] > 5 * max(1, before["r1"])
    assert after["r1"] > 5 * max(1, after["r0"])


def test_load_sensitive_scenario_punishes_herding() -> None:
    scenario, schedule = _schedule("load-sensitive", 30.0)
    profiles = dict(scenario.profiles())
    assert profiles["r0"].workers == 1 and all(profiles[r].workers > 1 for r in ("r1", "r2", "r3"))
    assert profiles["r0"].service("search", 0).median < profiles["r1"].service("search", 0).median / 2
    oracle = simulate(schedule, scenario.profiles(), 1)
    share = Counter(r["replica"] for r in oracle)
    assert 0.3 < share["r0"] / len(oracle) < 0.8  # the oracle uses the fast one, not only it
    # Sending r0 what its idle speed deserves (here 70 % of the calls) queues it: far worse than the oracle.
    herd = [c for c in schedule]
    picks = [("r0" if (c.index * 7) % 10 < 7 else f"r{1 + c.index % 3}") for c in herd]
    from only1mcp.jobs.sim.model import ReplicaModel, service_rng

    models = {rid: ReplicaModel(p) for rid, p in scenario.profiles()}
    rngs = {rid: service_rng("t", rid) for rid in models}
    latencies = []
    for call, rid in zip(herd, picks):
        outcome = models[rid].outcome(call.tool, call.t, rngs[rid].gauss(0, 1), rngs[rid].random())
        models[rid].commit(outcome)
        latencies.append(min(outcome.latency, 1.0))
    latencies.sort()
    best = summarize_calls(oracle, 1.0)["latency_ms"]["p99"]
    assert latencies[int(0.99 * len(latencies))] * 1000 > 3 * best


def test_drift_timeline_recovery() -> None:
    def calls(p95_before: float, p95_after: float, back_at: float | None) -> list[dict[str, Any]]:
        out = []
        for i in range(600):
            t = i * 0.1
            level = p95_before if t < 20 else (p95_after if back_at is None or t < 20 + back_at else p95_before)
            out.append({"scheduled": t, "latency_ms": level, "ok": True})
        return out

    records = {"oracle": calls(50, 50, None), "learned": calls(55, 200, 12.0), "stuck": calls(55, 200, None)}
    timeline = drift_timeline(records, flip_s=20.0, duration_s=60.0, bucket_s=5.0, timeout_s=1.0)
    assert timeline["recovery_s"]["learned"] == 20.0  # back in the bucket [35, 40), 20 s after the flip
    assert timeline["recovery_s"]["stuck"] is None
    assert timeline["pre_flip_p95_vs_oracle"]["learned"] == pytest.approx(1.1)
    assert len(timeline["series"]["oracle"]) == 12 and timeline["series"]["oracle"][0]["n"] == 50
    assert "recovery_vs_informed_s" not in timeline or not timeline["recovery_vs_informed_s"]

    # Against the informed oracle too (a perfect model, no foresight: slower than the clairvoyant one)
    records["oracle_informed"] = calls(60, 60, None)
    timeline = drift_timeline(records, flip_s=20.0, duration_s=60.0, bucket_s=5.0, timeout_s=1.0)
    assert "oracle_informed" not in timeline["recovery_s"]  # a reference, not a row measured against one
    assert timeline["recovery_vs_informed_s"] == {"learned": 20.0, "stuck": None}
    assert timeline["pre_flip_p95_vs_informed"]["learned"] == pytest.approx(55 / 60, abs=1e-3)
    assert timeline["back_to_own_level_s"] == {"learned": 20.0, "stuck": None}


def test_classify_decision() -> None:
    assert classify_decision("learned", "learned (tool): sim/1 p=0.95 by model tool_ewma:a0.1 (tool_ewma)") == (
        "learned", "tool_ewma")
    assert classify_decision("learned", "learned (server): sim/0 p=0.5 by model m (latency_model)") == (
        "learned", "latency_model")
    assert classify_decision("learned", "no weights yet; fell back to p2c_ewma: p2c: sim/1")[0] == "fallback"
    assert classify_decision("p2c_ewma", "p2c: sim/1 cost 1ms")[0] == "fallback"
    assert classify_decision("learned", "weights for tool search of model latency_model:v1 stale since 23:00:00Z "
                                        "(1.0s ago); learned (server): sim/0 p=0.5 by model tool_ewma:a (tool_ewma)"
                             ) == ("learned", "tool_ewma")
    assert classify_decision("learned", "weights for tool search of model m stale since x; fell back to p2c_ewma: "
                                        "p2c: sim/1")[0] == "fallback"
    assert classify_decision("learned", "the only routable replica")[0] == "health"
    assert classify_decision(None, None)[0] == "other"


def test_learned_bars_are_judged_or_skipped_with_a_reason() -> None:
    def row(mean: float, p99: float) -> dict[str, Any]:
        return {"status": "ok", "summary": {"latency_ms": {"mean": mean, "p99": p99}}}

    result = {"settings": {"with_learned": True}, "scenarios": {
        "specialised": {"rows": {"round_robin": row(100, 500), "p2c_ewma": row(100, 500), "learned": row(50, 400)}},
        "load-sensitive": {"rows": {"tool_ewma": row(50, 300),
                                    "learned": {"status": "not available", "reason": "no model"}}},
    }}
    bars = {bar.name: bar for bar in judge_bars(result)}
    assert bars["learned_vs_rr_mean_specialised"].status == "PASS"
    assert bars["learned_vs_p2c_p99_specialised"].status == "PASS"  # 0.8 <= 0.85
    assert bars["learned_vs_p2c_mean_homogeneous"].status == "SKIP"
    assert "not run" in bars["learned_drift_recovery"].note
    assert "not run" in bars["learned_drift_recovery_informed"].note
    skipped = bars["learned_vs_tool_ewma_p99_load_sensitive"]
    assert skipped.status == "SKIP" and "no model" in skipped.note
    assert bars["model_p50_mae_vs_ewma_load_sensitive"].status == "SKIP"

    trained = {"model": {"metrics": {"model": {"mae_p50": 13.5}, "ewma": {"mae_p50": 15.0}}},
               "mae_floor": {"mae_p50_ms": 12.0}}
    result["scenarios"]["load-sensitive"]["rows"]["learned"]["training"] = trained
    mae = {bar.name: bar for bar in judge_bars(result)}["model_p50_mae_vs_ewma_load_sensitive"]
    assert mae.status == "FAIL" and mae.value == pytest.approx(10.0), mae  # 10 % below, bar 20 %
    assert "12.00 ms, 20% below" in mae.note, mae.note

    result["scenarios"]["drift"] = {"rows": {"learned": row(60, 400)}, "duration_s": 120.0, "drift": {
        "flip_s": 60.0, "recovery_s": {"learned": None}, "pre_flip_p95_vs_oracle": {"learned": 2.5},
        "recovery_vs_informed_s": {"learned": 25.0}, "pre_flip_p95_vs_informed": {"learned": 1.1}}}
    bars = {bar.name: bar for bar in judge_bars(result)}
    clairvoyant, informed = bars["learned_drift_recovery"], bars["learned_drift_recovery_informed"]
    assert clairvoyant.status == "FAIL" and clairvoyant.value == math.inf
    assert "never back within 20% in the 60 s after the flip" in clairvoyant.note and "2.50x the oracle's" in clairvoyant.note
    assert informed.status == "PASS" and informed.value == 25.0 and "1.10x the informed oracle's" in informed.note
    del result["scenarios"]["drift"]["drift"]["recovery_vs_informed_s"]  # a result from before the informed row
    assert {bar.name: bar for bar in judge_bars(result)}["learned_drift_recovery_informed"].status == "SKIP"


def test_a_learned_row_served_by_the_learner_says_so_and_is_not_compared_with_it() -> None:
    def row(mean: float, p99: float, **extra: Any) -> dict[str, Any]:
        return {"status": "ok", "summary": {"latency_ms": {"mean": mean, "p99": p99}}, **extra}

    refused = {"served_by": "tool_ewma", "served_because": "the gate refused the model: mae_p50 15 >= 14"}
    result = {"settings": {"with_learned": True}, "scenarios": {
        "specialised": {"rows": {"round_robin": row(100, 500), "p2c_ewma": row(100, 500),
                                 "learned": row(40, 300, **refused)}},
        "load-sensitive": {"rows": {"tool_ewma": row(50, 300), "learned": row(45, 250, **refused)}},
    }}
    bars = {bar.name: bar for bar in judge_bars(result)}
    specialised = bars["learned_vs_rr_mean_specialised"]
    assert specialised.status == "PASS" and "on tool_ewma's weights: the gate refused the model" in specialised.note
    beside_itself = bars["learned_vs_tool_ewma_p99_load_sensitive"]  # 0.83x, but no model ran: not a pass
    assert beside_itself.status == "SKIP" and "no model to compare with tool_ewma" in beside_itself.note


# -- the whole loop, quick ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("routing-learned")
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    args = parser.parse_args(["routing", "--with-learned", "--quick", "--scenarios", "specialised",
                              "--out", str(out)])
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = bench_cli.run(args)
    path = out / "routing.json"
    return {"code": code, "stdout": stdout.getvalue(), "json": json.loads(path.read_text()) if path.exists() else None}


def test_bench_routing_with_learned_quick(quick_run: dict[str, Any]) -> None:
    assert quick_run["code"] == 0, quick_run["stdout"]
    report = quick_run["json"]
    assert report["settings"]["with_learned"] is True and list(report["scenarios"]) == ["specialised"]
    scenario = report["scenarios"]["specialised"]
    rows = scenario["rows"]
    assert list(rows) == list(ROWS)
    for name, row in rows.items():
        assert row["status"] in ("ok", "not available", "failed", "died"), (name, row)
        if row["status"] == "ok":
            assert row["summary"]["count"] == scenario["calls"], name
        else:
            assert str(row.get("reason", "")).strip(), (name, row)  # never without a reason
    assert rows["round_robin"]["status"] == rows["oracle"]["status"] == "ok"
    for name in ("tool_ewma", "learned"):
        row = rows[name]
        if row["status"] == "ok":
            share = row["routing_share"]
            assert "error" not in share, (name, share)
            assert share["events"] >= 0.9 * scenario["calls"], share
            assert share["learned"] + share["fallback"] + share["health"] + share["other"] == share["events"]
            assert row["warmup"]["calls"] == scenario["warmup_calls"]
    learned = rows["learned"]
    if learned.get("served_by"):  # the gate refused the model: measured on the learner's weights
        assert learned["training"]["status"] == "refused" and not learned["training"]["live"], learned["training"]
        assert learned["weights_wait"]["status"] == "ok" and "refused" in learned["served_because"]
    if learned.get("training", {}).get("status") in ("ok", "refused"):
        metrics = learned["training"]["model"]["metrics"]
        for key in ("model", "ewma"):
            assert metrics[key]["mae_p50"] > 0 and 0 <= metrics[key]["coverage_p95"] <= 1
        assert bool(learned["training"]["live"]) == (learned["training"]["status"] == "ok")
        floor = learned["training"]["mae_floor"]  # the oracle: no model's MAE can be expected below it
        assert floor["rows"] > 0 and 0 < floor["mae_p50_ms"] < metrics["ewma"]["mae_p50"], floor
    names = [bar["name"] for bar in report["bars"]]
    assert "learned_vs_rr_mean_specialised" in names and "learned_drift_recovery" in names
    assert all(bar["status"] in ("PASS", "FAIL", "SKIP") for bar in report["bars"])
    assert "specialised" in quick_run["stdout"]
    informed, oracle = (rows[name]["summary"]["latency_ms"] for name in ("oracle_informed", "oracle"))
    assert oracle["p95"] <= informed["p95"]  # foresight only helps


def test_learned_scenarios_default() -> None:
    assert LEARNED_SCENARIOS == ("slow-replica", "specialised", "homogeneous", "drift", "load-sensitive")
