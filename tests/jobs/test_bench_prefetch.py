"""``only1mcp bench prefetch --quick --no-proxy``: the per-call learning measured on the shipped traces and
judged against its bar (the proxy run is bench proxy's, tested in test_bench_proxy.py; ``--prefetch`` only
adds ``[prefetch] enabled`` to its Only1MCP arm, checked here on the config it writes)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

from only1mcp.jobs.bench import cli as bench_cli
from only1mcp.jobs.bench.proxy import _arm_argv


def test_quick_run_times_every_call_and_judges_the_bar(tmp_path: Path) -> None:
    out = tmp_path / "prefetch.json"
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    args = parser.parse_args(["prefetch", "--quick", "--no-proxy", "--out", str(out)])
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert bench_cli.run(args) == 0
    report = json.loads(out.read_text())
    learning = report["learning"]
    assert learning["calls"] == 6000 and learning["traces"] == ["devtools.jsonl", "support.jsonl"]
    for row in ("handover", "learn", "memory_only", "timer"):
        stats = learning[row]
        assert stats["n"] == learning["calls"] * {"handover": 2 * learning["passes"], "timer": 1}.get(
            row, learning["passes"])
        assert 0 < stats["p50_us"] <= stats["p99_us"] <= stats["max_us"]
    assert learning["handover"]["p50_us"] < learning["learn"]["p50_us"]  # the call path only appends
    bars = {bar["name"]: bar for bar in report["bars"]}
    assert bars["learn_p99_us"]["status"] in ("PASS", "FAIL") and bars["learn_p99_us"]["value"] is not None
    assert bars["proxy_prefetch_vs_direct"]["status"] == "SKIP" and report["proxy"] is None
    text = stdout.getvalue()
    assert "learning per call" in text and "prefetch learning per call, p99" in text


def test_bench_proxy_prefetch_turns_it_on_in_the_only1mcp_arm(tmp_path: Path) -> None:
    argv = _arm_argv("only1mcp", 1, "http://127.0.0.1:2/mcp", tmp_path, prefetch=True)
    config = Path(argv[argv.index("--config") + 1]).read_text()
    assert "[prefetch]\nenabled = true" in config and "[servers.tools.echo]\nsafe = true\ncache_ttl = 60.0" in config
    plain = _arm_argv("only1mcp", 1, "http://127.0.0.1:2/mcp", tmp_path)
    assert "[prefetch]" not in Path(plain[plain.index("--config") + 1]).read_text()
