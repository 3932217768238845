"""``only1mcp bench soak --quick``: the whole stack for 40 s at half its measured maximum, every figure measured.

The benchmark runs once per module with real processes (broker, Redis, worker, simulated
replicas, proxy, load generators; about 70 s). The tests check the report's structure and
that each number was measured and adds up (windows cover the soak, samples every 2 s, calls
at the rate asked, events counted in the store), not the bars: those are the full run's
verdict on a machine, and 40 s on a shared one proves nothing either way.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from only1mcp.jobs.bench import cli as bench_cli
from only1mcp.jobs.bench import soak

pytestmark = pytest.mark.timeout(240)

BARS = {"proxy_rss_growth", "proxy_fds_growth", "proxy_tasks_growth", "p99_drift", "events_accounted"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out: Path = tmp_path_factory.mktemp("bench") / "soak.json"
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    args = parser.parse_args(["soak", "--quick", "--json", str(out)])
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = bench_cli.run(args)
    return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
            "json": json.loads(out.read_text()) if out.exists() else None}


def test_the_run_measures_the_maximum_then_soaks_at_half(bench: dict[str, Any]) -> None:
    assert bench["code"] == 0 and bench["json"] is not None, bench["stderr"][-3000:]
    report = bench["json"]
    settings = report["settings"]
    assert report["benchmark"] == "soak" and settings["quick"] is True
    assert settings["duration_s"] == 40 and settings["window_s"] == 10 and settings["warmup_s"] == 10
    maximum = report["maximum"]
    assert maximum["calls"] > 0 and maximum["calls_per_s"] > 0 and maximum["concurrency"] == 8, maximum
    assert settings["rate_source"] == "maximum/2" and settings["rate"] == round(maximum["calls_per_s"] / 2, 1)
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == list(range(math.ceil(40 / settings["round_s"])))
    assert sum(r["duration_s"] for r in rounds) == 40
    assert all(r["launched_ahead_s"] > 0 and r["calls"] > 0 for r in rounds), rounds
    # Poisson arrivals at the rate asked: the soak sent about rate × duration calls
    calls = report["events"]["calls"]
    assert calls == sum(r["calls"] for r in rounds)
    assert 0.7 * settings["rate"] * 40 < calls < 1.3 * settings["rate"] * 40, (calls, settings["rate"])


def test_windows_cover_the_soak_with_their_calls_and_samples(bench: dict[str, Any]) -> None:
    report = bench["json"]
    windows = report["windows"]
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(0, 10), (10, 20), (20, 30), (30, 40)]
    assert [w["warmup"] for w in windows] == [True, False, False, False]
    assert sum(w["calls"] for w in windows) == report["events"]["calls"]
    for w in windows:
        lat = w["latency_ms"]
        assert w["calls"] > 0 and 0 < lat["p50"] <= lat["p99"] <= lat["max"], w
        assert w["samples"] >= 4, w  # one every 2 s
        proxy, worker = w["proxy"], w["worker"]
        for key in ("rss_kib", "fds", "own_fds", "client_conns", "tasks", "sessions"):
            span = proxy[key]
            assert span is not None and 0 < span["min"] <= span["median"] <= span["max"], (key, proxy)
        assert worker["rss_kib"]["min"] > 0 and worker["fds"]["min"] > 0, worker
        assert proxy["cpu_pct"] > 0 and worker["cpu_pct"] is not None, w
        assert proxy["cpu_pct"] < w["host_cpu_pct"] <= 100 * (os.cpu_count() or 1) + 5, w  # the machine's, all of it
        assert 0 <= w["host_steal_pct"] <= w["host_cpu_pct"], w
        # the proxy's loop: stalls counted per window, its lateness sampled (a quiet proxy is a few ms late)
        assert w["loop_stalls"] >= 0 and 0 <= w["loop_lag_max_ms"] < 5000, w
    samples = report["samples"]
    times = [s["t"] for s in samples]
    assert times[0] == pytest.approx(0, abs=1.0) and times[-1] == pytest.approx(40, abs=1.0), times
    assert len(samples) == 21 and all(0.5 < b - a < 3.5 for a, b in zip(times, times[1:])), times
    assert all(s["proxy"]["tasks"] >= 1 and s["proxy"]["events_emitted"] >= 0 for s in samples)
    # idle before and after the soak: no client connection then, and (after) every session closed
    before, after = report["before"], report["after"]
    assert before["t"] < 0 < 40 < after["t"], (before["t"], after["t"])
    for idle in (before, after):
        proxy = idle["proxy"]
        assert proxy["client_conns"] == 0 and 0 < proxy["own_fds"] == proxy["fds"] and proxy["tasks"] >= 1, idle
    assert after["proxy"]["sessions"] == 0


def test_events_are_counted_in_the_store(bench: dict[str, Any]) -> None:
    events = bench["json"]["events"]
    assert 0 < events["answered"] <= events["calls"], events
    assert events["distinct"] > 0 and events["rows"] >= events["distinct"] and events["raw_rows"] >= events["rows"]
    assert events["proxy_events_emitted_during"] > 0 and events["proxy_events_dropped_during"] is not None
    # the maximum's calls are counted apart (they end before the soak's start)
    assert events["maximum_phase"]["answered"] > 0 and events["maximum_phase"]["stored"] >= 0
    assert events["worker_alive"] is True


def test_every_bar_is_measured_and_printed(bench: dict[str, Any]) -> None:
    bars = {b["name"]: b for b in bench["json"]["bars"]}
    assert set(bars) == BARS
    for bar in bars.values():
        assert bar["status"] in ("PASS", "FAIL") and bar["value"] is not None, bar
    assert bars["proxy_rss_growth"]["threshold"] == 10 and bars["p99_drift"]["threshold"] == 20
    assert bars["events_accounted"]["op"] == ">=" and bars["events_accounted"]["threshold"] == 100
    text = bench["stdout"]
    for heading in ("window", "p99 ms", "proxy MiB", "clients", "tasks", "sessions", "idle before", "idle after",
                    "events:", "results:"):
        assert heading in text, heading
    assert "0-10s warm-up" in text and "10-20s warm-up" not in text


def test_p99_drift_compares_the_first_window_after_warm_up_with_the_last() -> None:
    """The warm-up minute holds one-off start-up work; the drift bar starts where the growth bars do."""
    def window(warmup: bool, p99: float) -> dict[str, Any]:
        proxy = {"rss_kib": {"median": 100_000.0, "min": 100_000.0}, "own_fds": {"min": 30}, "tasks": {"min": 20}}
        return {"warmup": warmup, "latency_ms": {"p99": p99}, "proxy": proxy}

    events = {"answered": 10, "distinct": 10, "rows": 10}
    bars = {bar.name: bar for bar in soak._bars([window(True, 900.0), window(False, 50.0), window(False, 55.0)],
                                                  events)}
    assert bars["p99_drift"].value == pytest.approx(10.0) and bars["p99_drift"].status == "PASS"
    assert "50.00 → 55.00 ms" in bars["p99_drift"].note
    bars = {bar.name: bar for bar in soak._bars([window(True, 50.0), window(False, 50.0), window(False, 80.0)],
                                                  events)}
    assert bars["p99_drift"].value == pytest.approx(60.0) and bars["p99_drift"].status == "FAIL"
