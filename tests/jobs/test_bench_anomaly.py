"""``only1mcp bench anomaly --quick`` end to end: real detectors on generated labelled series.

Bars may PASS or FAIL on a machine; here the structure is checked and every number must be
measured and consistent (events counted, F1 from precision and recall, the tuning split only used
for choices)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from typing import Any

import numpy as np
import pytest

from only1mcp.jobs.bench import cli as bench_cli
from only1mcp.jobs.bench.anomaly import evaluate, rolling_z_flags
from only1mcp.jobs.bench.anomaly_data import KINDS, make_series

METHODS = {"spc", "iforest", "hst", "trend", "zscore", "forecast", "ensemble", "ensemble+hst", "rolling_z", "rolling_z_tuned"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "anomaly.json"
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    args = parser.parse_args(["anomaly", "--quick", "--json", str(out)])
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = bench_cli.run(args)
    return {"code": code, "stdout": stdout.getvalue(), "json": json.loads(out.read_text()) if out.exists() else None}


def test_quick_run_writes_every_table_and_bar(bench: dict[str, Any]) -> None:
    assert bench["code"] == 0, bench["stdout"]
    report = bench["json"]
    assert report["benchmark"] == "anomaly" and report["settings"]["quick"] is True
    assert report["wall_s"] < 300  # a runaway guard, not a speed bar
    for split in ("tuning", "holdout", "shifted", "holdout+shifted"):
        table = report["results"][split]
        assert set(table) == METHODS
        for method, per_kind in table.items():
            assert set(per_kind) == set(KINDS), (split, method)
            for row in per_kind.values():
                assert row["events"] > 0 and 0 <= row["detected"] <= row["events"]
                p, r = row["precision"], row["recall"]
                assert row["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0, abs=2e-4)
    bars = {b["name"]: b for b in report["bars"]}
    assert set(bars) == {f"f1_vs_baseline_{k}" for k in KINDS} | {"rows_per_s"}
    assert all(b["status"] in ("PASS", "FAIL") and b["value"] is not None for b in bars.values())
    assert report["throughput"]["rows_per_s"] > 0
    chosen = report["chosen"]["ensemble"]
    assert chosen["combine"] in ("noisy_or", "max") and 0 < chosen["threshold"] < 1
    for line in ("holdout (", "shifted (", "throughput:", "spike / ensemble", "noisy / rolling_z"):
        assert line in bench["stdout"]


def test_evaluate_counts_events_false_alarms_and_delays() -> None:
    series = make_series("spike", 1, n=3000)
    flags = np.zeros(len(series.x), dtype=bool)
    (a, _), (b, _) = series.events[:2]
    flags[a + 1] = True  # the first anomaly, one row late
    flags[[10, 12, 40]] = True  # two false alarms (10 and 12 are one run)
    result = evaluate(flags, series)
    assert result["events"] == len(series.events) and result["detected"] == 1
    assert result["false_alarms"] == 2 and result["delays_rows"] == [1]
    assert result["delays_s"] == [pytest.approx(series.t[a + 1] - series.t[a])]


def test_rolling_z_baseline_flags_a_spike_causally() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 300)
    x[200] = 20.0
    flags = rolling_z_flags(x)
    assert flags[200] and not flags[:25].any()
    assert np.array_equal(rolling_z_flags(x[:200]), flags[:200])
