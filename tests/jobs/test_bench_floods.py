"""``only1mcp bench floods --quick``: every phase measured beside its offender, the table and bars printed.

The benchmark runs once per module (real subprocesses, well under a minute); the tests
check the report's structure and that each offender got the refusal it should, not
the bars (those are the benchmark's verdict on this machine).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from typing import Any

import pytest

from only1mcp.errors import INVALID_REQUEST, STREAM_OVERRUN, TOO_MANY_INFLIGHT, TOO_MANY_SESSIONS
from only1mcp.jobs.bench import cli as bench_cli
from only1mcp.jobs.bench.floods import PHASES

OFFENDERS = [p for p in PHASES if not p.startswith("unloaded")]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "floods.json"
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    args = parser.parse_args(["floods", "--quick", "--duration", "2", "--json", str(out)])
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = bench_cli.run(args)
    return {"code": code, "stdout": stdout.getvalue(), "json": json.loads(out.read_text()) if out.exists() else None}


def test_run_writes_every_phase(bench: dict[str, Any]) -> None:
    assert bench["code"] == 0, bench["stdout"]
    report = bench["json"]
    assert report["benchmark"] == "floods" and report["settings"]["quick"] is True
    assert [r["phase"] for r in report["results"]] == list(PHASES)
    for row in report["results"]:
        assert row["calls"] > 0 and row["errors"] == 0, row
        lat = row["latency_ms"]
        assert 0 < lat["p50"] <= lat["p99"] <= lat["max"], lat
        assert row["p99_ratio"] is not None and row["p99_ratio"] > 0
        assert row["rss_max_mib"] is not None and row["rss_max_mib"] > 0
        assert set(row["cpu_pct"]) >= {"proxy", "upstream", "loadgen"}
    assert report["unloaded_latency_ms"]["p99"] > 0
    assert report["proxy_peak_rss_mib"] >= max(r["rss_max_mib"] for r in report["results"]) - 1


def test_each_offender_got_its_refusal(bench: dict[str, Any]) -> None:
    rows = {r["phase"]: r for r in bench["json"]["results"]}
    assert rows["unloaded"]["offender"] is None
    expected = {"session_flood": f"429/{TOO_MANY_SESSIONS}", "slowloris": f"408/{INVALID_REQUEST}",
                "inflight_flood": f"429/{TOO_MANY_INFLIGHT}"}
    for phase, key in expected.items():
        offender = rows[phase]["offender"]
        assert "error" not in offender, offender
        assert offender["attempts"] > 0 and offender["outcomes"].get(key, 0) > 0, offender
    slow = rows["slow_sse"]["offender"]
    assert "error" not in slow and slow["attempts"] > 0, slow
    # every stalled stream was closed by the proxy, with the overrun error or dropped; none left open
    assert set(slow["outcomes"]) <= {f"closed/{STREAM_OVERRUN}", "closed (dropped)"}, slow


def test_bars_and_table(bench: dict[str, Any]) -> None:
    bars = {b["name"]: b for b in bench["json"]["bars"]}
    assert set(bars) == {f"p99_ratio_{k}" for k in OFFENDERS} | {"proxy_peak_rss"}
    for bar in bars.values():
        assert bar["status"] in ("PASS", "FAIL") and bar["value"] is not None, bar
    assert bars["p99_ratio_session_flood"]["op"] == "<=" and bars["p99_ratio_session_flood"]["threshold"] == 2.0
    text = bench["stdout"]
    for phase in PHASES:
        assert phase in text
    assert "p99/unl" in text and "offender got" in text and "results:" in text
