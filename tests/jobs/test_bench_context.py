"""``only1mcp bench context --quick`` end to end: the toolbox servers and a real proxy, 150 calls of each
agent trace replayed. The replay is sequential and deterministic, so its figures are checked, not only
its shape."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

from only1mcp.jobs.bench import cli as bench_cli


def test_quick_run_measures_sizes_and_the_next_calls_tool(tmp_path: Path) -> None:
    out = tmp_path / "context.json"
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = bench_cli.run(parser.parse_args(["context", "--quick", "--json", str(out)]))
    text = stdout.getvalue()
    assert code == 0, text
    report = json.loads(out.read_text())
    assert report["benchmark"] == "context" and report["settings"]["quick"] is True
    assert report["catalog_tools"] == 110 and report["calls"] == 300
    assert report["full_bytes"] > 40_000 and report["full_tokens"] == (report["full_bytes"] + 3) // 4
    assert sum(report["outcomes"].values()) == 300
    assert report["errors"] == 0 and report["inconsistent"] == 0  # unlisted tools answer; found tools get listed
    for sample in report["lists"]:  # ranked lists hold max_tools and the search tool, or (no history) everything
        assert sample["tools"] <= 16 or sample["tools"] == 111
    assert {bar["name"]: bar["status"] for bar in report["bars"]} == {
        "pruned_smaller": "PASS", "at_hand": "PASS", "calls_fail": "PASS"}
    assert report["reductions"]["client with history"] > 0.7
    assert 0.5 < report["search_alone"]["task"] <= report["search_alone"]["description"]
    assert "tools/list payload" in text and "next call's tool" in text and "PASS" in text
