"""``bench health --quick``: one detector row end to end (fleet, proxy, broker, worker, the anomaly
topic, each detector replayed alone). The figures and bars are the full benchmark's business; this
checks the run happens and the report holds what the README's table is made of."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

from only1mcp.jobs.bench import cli as bench_cli


def test_bench_health_quick_ensemble_row(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    args = parser.parse_args(["health", "--quick", "--rows", "ensemble", "--scenarios", "error-ramp", "healthy",
                              "--out", str(tmp_path)])
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = bench_cli.run(args)
    assert code == 0, stdout.getvalue()
    report = json.loads((tmp_path / "health.json").read_text())
    row = report["rows"]["ensemble"]
    assert row["status"] == "ok", row
    assert set(row["scenarios"]) == {"error-ramp", "healthy"}
    for figures in row["scenarios"].values():
        assert figures["calls"] > 100 and figures["watched_replica_h"] > 0
        assert figures["failed"] >= figures["failed_after_fault"] >= 0
    assert row["scenarios"]["error-ramp"]["failed_after_fault"] > 0  # the fault really happened
    assert row["polls"] and all(n > 10 for n in row["polls"].values())  # the admin API was watched
    alone = row["detectors_alone"]
    assert "error" not in alone, alone
    assert alone["events"] >= sum(f["calls"] for f in row["scenarios"].values()) * 0.9  # the store has the run
    assert {"spc", "iforest", "trend", "ensemble (replay)"} <= set(alone)
    assert [bar["name"] for bar in report["bars"]] == ["latency-ramp_lead", "error-ramp_lead", "sudden_crash_action",
                                                       "false_alarms", "failed_calls"]
    assert "ensemble" in stdout.getvalue() and "spc alone" in stdout.getvalue()
