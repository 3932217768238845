"""``only1mcp bench cache --quick`` end to end, and the replay's safety rules.

Bars may PASS or FAIL on a machine; here the structure is checked and every number must be measured
and consistent (rows named exactly, rates from counts, ceilings above what any cache reached)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from only1mcp.jobs.bench import cli as bench_cli
from only1mcp.jobs.bench.cache import POLICIES, TRACES_DIR
from only1mcp.jobs.bench.cache_replay import Predictions, Upstream, belady, ceilings, predictions, prepare, simulate
from only1mcp.jobs.sim.traces import TraceCall, read_trace
from only1mcp.models.prefetch import AdaptiveTTL, WriteInvalidation


def run_bench(*argv: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = bench_cli.run(parser.parse_args(["cache", *argv]))
    return {"code": code, "stdout": stdout.getvalue()}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "cache.json"
    result = run_bench("--quick", "--json", str(out))
    result["json"] = json.loads(out.read_text()) if out.exists() else None
    return result


def test_quick_run_writes_every_row_ceiling_and_bar(bench: dict[str, Any]) -> None:
    assert bench["code"] == 0, bench["stdout"]
    report = bench["json"]
    assert report["benchmark"] == "cache" and report["settings"]["quick"] is True
    assert report["wall_s"] < 300  # a runaway guard, not a speed bar
    workloads = ["loadgen", *sorted(p.stem for p in TRACES_DIR.glob("*.jsonl"))]
    assert workloads == ["loadgen", "devtools", "support"]
    assert [(r["workload"], r["policy"]) for r in report["rows"]] == [(w, p) for w in workloads for p in POLICIES]
    assert set(report["ceilings"]) == set(workloads)
    for row in report["rows"]:
        assert {"policy", "hit_rate", "prefetch_precision", "extra_upstream_calls"} <= set(row)
        safe = row["safe_calls"]
        assert safe > 0 and 0 <= row["hit_rate"] <= 1 and row["hit_rate"] == round(row["hits"] / safe, 4)
        assert row["stale_rate"] == round(row["stale_hits"] / safe, 4)
        assert row["extra_upstream_calls"] == round((row["prefetch_issued"] - row["prefetch_used"]) / safe, 4)
        if row["prefetch_issued"]:
            assert row["prefetch_precision"] == round(row["prefetch_used"] / row["prefetch_issued"], 4)
        else:
            assert row["prefetch_precision"] is None
        assert row["latency_mean_ms"] > 0 and row["latency_p95_ms"] >= row["latency_mean_ms"] * 0.5
        predicts = row["policy"] in ("markov_prefetch", "learned")
        for key in ("next_tool_top1", "next_tool_top3"):
            assert (row[key] is not None) == predicts
        if predicts:
            assert 0 < row["next_tool_top1"] <= row["next_tool_top3"] <= 1
        else:
            assert row["prefetch_issued"] == 0
    for w in workloads:
        rows = {r["policy"]: r for r in report["rows"] if r["workload"] == w}
        c = report["ceilings"][w]
        assert rows["none"]["hit_rate"] == 0 and rows["none"]["latency_mean_ms"] > rows["ttl_lru"]["latency_mean_ms"]
        assert rows["belady"]["stale_hits"] == 0 and rows["belady"]["hit_rate"] <= c["infinite_cache"]
        assert c["infinite_cache"] <= c["infinite_cache_perfect_prefetch_eligible"] <= c["infinite_cache_perfect_prefetch"]
        assert len({r["safe_calls"] for r in rows.values()}) == 1 == len({c["safe_calls"], rows["none"]["safe_calls"]})
        detail = report["workloads"][w]
        assert detail["chosen"]["learned"]["eviction"] in ("lru", "s3fifo", "sieve") and detail["tuned_on"]
        assert len(detail["ablations"]) == 5
    bars = report["bars"]
    assert len(bars) == 5 * len(workloads)
    assert all(b["status"] in ("PASS", "FAIL") and b["value"] is not None for b in bars)
    for line in ("loadgen: loadgen sessions", "devtools: jobs/bench/traces/devtools.jsonl", "ceilings: infinite cache",
                 "generator's ground truth", "learned hit rate"):
        assert line in bench["stdout"]


def test_a_given_trace_is_replayed_alone(tmp_path: Path) -> None:
    trace = tmp_path / "mine.jsonl"
    trace.write_text("".join(line for line in (TRACES_DIR / "support.jsonl").read_text().splitlines(True)[:300]))
    out = tmp_path / "out.json"
    png = tmp_path / "mine.png"
    result = run_bench("--quick", "--trace", str(trace), "--read-only-prefix", "get_,search_", "--json", str(out),
                       "--plot", str(png))
    report = json.loads(out.read_text())
    assert result["code"] == 0 and {r["workload"] for r in report["rows"]} == {"mine"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {png}" in result["stdout"]
    assert [r["policy"] for r in report["rows"]] == list(POLICIES) and set(report["ceilings"]) == {"mine"}
    assert report["workloads"]["mine"]["tuned_on"].startswith("the agent traces' twins")


# -- the replay's rules ------------------------------------------------------------------------------------
def call(session: str, ts: float, tool: str, args: dict[str, Any], result: str | None = "r") -> TraceCall:
    return TraceCall(session, ts, tool, args, result)


def test_unsafe_tools_are_never_cached_nor_prefetched() -> None:
    trace = [call("s", float(i), "delete_item", {"id": "x"}) for i in range(10)]
    trace += [call("s", 10.0 + i, "get_item", {"id": "x"}) for i in range(5)]
    calls = prepare(trace, lambda tool: tool.startswith("get_"))
    pushy = Predictions("test", [None] * len(calls), [[]] * len(calls))
    delete_key = calls[0].key
    pushy.candidates = [[(delete_key, "delete_item", 1.0, ())] for _ in calls]  # whoever proposes it
    for prefetch in (None, pushy):
        m = simulate(calls, Upstream(calls), "lru", 16, 60.0, adaptive=AdaptiveTTL(), prefetch=prefetch, threshold=0.1,
                     invalidation=WriteInvalidation())
        assert m["safe_calls"] == 5 and m["hits"] == 4 and m["prefetch_issued"] == 0
        assert m["upstream_calls"] == 10 + 1  # every write went upstream, every time
    for kind in ("learned", "markov1"):
        found = predictions(calls, kind)
        assert all(tool == "get_item" for row in found.candidates for _, tool, _, _ in row)


def test_prefetch_only_for_tools_the_session_already_called() -> None:
    trace = read_trace(TRACES_DIR / "devtools.jsonl")[:600]
    calls = prepare(trace, lambda tool: tool.startswith(("get_", "search_", "list_")))
    for kind in ("learned", "markov1"):
        found = predictions(calls, kind)
        called: dict[str, set[str]] = {}
        for c, row in zip(calls, found.candidates):
            called.setdefault(c.session, set()).add(c.tool)
            assert {tool for _, tool, _, _ in row} <= called[c.session]


def test_a_prefetch_turns_the_next_call_into_a_hit_and_stale_answers_are_not_hits() -> None:
    trace = [call("a", 0.0, "search_items", {"q": "x"}, '{"items": [{"id": "I1"}]}'),
             call("a", 5.0, "get_item", {"id": "I1"}, '{"id": "I1", "v": 1}'),
             call("b", 8.0, "get_item", {"id": "I1"}, '{"id": "I1", "v": 2}')]  # changed: the cached answer is stale
    calls = prepare(trace, lambda tool: tool.startswith(("get_", "search_")))
    plan = Predictions("test", [None] * 3, [[(calls[1].key, "get_item", 0.9, ())], [], []])
    m = simulate(calls, Upstream(calls), "lru", 16, 60.0, prefetch=plan, threshold=0.5)
    assert m["prefetch_issued"] == 1 and m["prefetch_used"] == 1 and m["prefetch_precision"] == 1.0
    assert m["hits"] == 1 and m["stale_hits"] == 1 and m["extra_upstream_calls"] == 0.0
    assert belady(calls, 16)["hits"] == 0  # the optimum knows the second read changed
    # Only a's get_item takes a value a saw (b never saw I1); a never called get_item before: not eligible.
    assert ceilings(calls) == {"infinite_cache": 0.0, "infinite_cache_perfect_prefetch": pytest.approx(1 / 3, abs=1e-4),
                               "infinite_cache_perfect_prefetch_eligible": 0.0, "safe_calls": 3}
