"""Generated agent traces (jobs/sim/agents.py and its worlds) and the trace format (jobs/sim/traces.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from only1mcp.jobs.bench.cache import TRACES_DIR
from only1mcp.jobs.sim.agents import generate, worlds, write_generated
from only1mcp.jobs.sim.traces import LOADGEN_READ_ONLY, TraceError, loadgen_trace, parse_trace, read_trace
from only1mcp.models.prefetch import result_values


@pytest.mark.parametrize("shape", ["devtools", "support"])
def test_the_shipped_trace_is_what_the_generator_makes(shape: str, tmp_path: Path) -> None:
    shipped = TRACES_DIR / f"{shape}.jsonl"
    truth = json.loads(shipped.with_suffix(".truth.json").read_text())
    path, truth_path = write_generated(shape, truth["seed"], truth["calls"], tmp_path / f"{shape}.jsonl")
    assert path.read_bytes() == shipped.read_bytes()
    assert json.loads(truth_path.read_text()) == truth
    assert truth["calls"] >= 2000 and 0 < truth["bayes_best_next_call"] <= truth["bayes_next_tool_top1"] <= 1


@pytest.mark.parametrize("shape", ["devtools", "support"])
def test_ids_flow_from_results_into_later_arguments(shape: str) -> None:
    rows, truth = generate(worlds()[shape](7), 800)
    assert len(rows) == 800 and rows == sorted(rows, key=lambda r: r["ts"])
    seen: dict[str, set[str]] = {}
    flowed = 0
    for row in rows:
        values = seen.setdefault(row["session"], set())
        flowed += any(isinstance(v, str) and v in values for v in row["args"].values())
        values.update(str(v) for _, v in result_values(row["result"]))
    assert flowed > 0.3 * len(rows)
    assert truth["argument_sources_of_safe_calls"]["result"] > 0.2 * truth["safe_calls"]
    assert set(truth["read_only_tools"]) < {r["tool"] for r in rows}  # some writes too
    assert generate(worlds()[shape](7), 800)[0] == rows  # deterministic


def test_loadgen_sessions_become_a_trace_whose_reads_change_after_writes() -> None:
    rows = loadgen_trace(seed=3, calls=600)
    assert len(rows) == 600 and all(set(r) == {"session", "ts", "tool", "args", "result", "client"} for r in rows)
    versions: dict[str, int] = {}
    for row in rows:
        key, data = row["args"]["key"], json.loads(row["result"])
        if row["tool"] == "get_document":
            assert data["version"] == versions.get(key, 0)
        if row["tool"] not in LOADGEN_READ_ONLY:
            versions[key] = versions.get(key, 0) + 1
    assert versions and loadgen_trace(seed=3, calls=600) == rows


def test_trace_lines_are_checked_and_sorted(tmp_path: Path) -> None:
    good = [{"session": "s", "ts": 2, "tool": "b", "args": {}}, {"session": "s", "ts": 1, "tool": "a", "args": {"x": 1},
                                                                  "result": {"structured": True}, "client": "c"}]
    calls = parse_trace([json.dumps(r) for r in good] + [""])
    assert [c.tool for c in calls] == ["a", "b"] and calls[0].result == '{"structured": true}' and calls[0].line == 2
    for bad, message in (("not json", "not JSON"), ('{"session": "", "ts": 1, "tool": "t"}', "'session'"),
                         ('{"session": "s", "ts": "soon", "tool": "t"}', "'ts'"),
                         ('{"session": "s", "ts": 1, "tool": "t", "args": []}', "'args'"), ("[1]", "object")):
        with pytest.raises(TraceError, match=message):
            parse_trace([json.dumps(good[0]), bad], "f.jsonl")
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(good[0]) + "\n" + '{"session": "s", "ts": 1, "tool": "t", "client": 5}\n')
    with pytest.raises(TraceError, match=r"t.jsonl:2: 'client'"):
        read_trace(path)
