"""``only1mcp bench stream --quick`` end to end: a real embedded broker, a private Redis, the worker
pinned to one CPU, Parquet and DuckDB; the three measurements and their bars land in the JSON.

The benchmark runs once per module (about a minute); the other tests read its JSON and printed
table. Bars may PASS or FAIL on a given machine, but each must be measured (never SKIP), and
the figures behind them must be internally consistent: every event processed exactly once (both
stages: raw rows, lag 0 on mcp.requests and mcp.feature-events, every window written), every
freshness probe seen, the SQL answer right for the generated fleet. A second run (about 40 s) puts
two workers on Apache Kafka (one KRaft node) with a small SQL dataset: one cell, two workers
sharing the CPUs, their CPU seconds summed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from only1mcp.events import RequestEvent
from only1mcp.jobs.bench import cli as bench_cli
from only1mcp.jobs.bench._stream_data import REPLICAS, backlog, write_dataset

BARS = ["worker_events_per_s", "freshness_p99_s", "features_sql_query_s"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "stream.json"
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    args = parser.parse_args(["stream", "--quick", "--out", str(out)])
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = bench_cli.run(args)
    return {"code": code, "stdout": stdout.getvalue(), "json": json.loads(out.read_text()) if out.exists() else None}


def test_run_succeeds_and_writes_json(bench: dict[str, Any]) -> None:
    assert bench["code"] == 0, bench["stdout"]
    report = bench["json"]
    assert report is not None and report["benchmark"] == "stream"
    settings = report["settings"]
    assert settings["quick"] is True and settings["events"] == 20_000 and settings["sql_events"] == 1_000_000
    assert settings["worker_core"] in settings["cpus"]
    assert {"throughput", "freshness", "sql", "bars", "machine", "cells", "scaling"} <= set(report)
    assert settings["brokers"] == ["embedded"] and settings["workers"] == [1]
    (cell,) = report["cells"]  # the default: one cell, whose figures are also the old top-level keys
    assert (cell["broker"], cell["workers"]) == ("embedded", 1) and "error" not in cell
    assert report["reference_cell"] == {"broker": "embedded", "workers": 1}
    assert cell["events_per_s"] == report["throughput"]["events_per_s"]
    assert cell["events_per_cpu_s"] == report["throughput"]["events_per_cpu_s"]
    assert cell["freshness"] == report["freshness"]["visible_s"]
    assert report["scaling"] == []  # one worker count: nothing to compare


def test_throughput_counts_every_event_once(bench: dict[str, Any]) -> None:
    tp = bench["json"]["throughput"]
    # Raw rows a rebalance made the new owner write again are deduplicated by the requests view.
    assert tp["events"] == tp["distinct_event_ids"] == 20_000 and tp["parquet_rows"] >= 20_000
    assert 0 < tp["first_flush_events"] < tp["events"]
    assert tp["measured_events"] == tp["events"] - tp["first_flush_events"]
    assert tp["measured_s"] > 0 and tp["startup_s"] > 0
    assert tp["events_per_s"] == pytest.approx(tp["measured_events"] / tp["measured_s"], rel=0.01)
    assert tp["events_per_s_to_parquet"] >= tp["events_per_s"] > tp["events_per_s_including_startup"] > 0
    assert 0 < tp["worker_cpu_pct_of_core"] <= 110  # pinned to one CPU: never much more than one core
    assert tp["events_per_cpu_s"] > 0
    assert tp["workers"] == 1 and tp["worker_cpus"] == [tp["worker_core"]] and len(tp["worker_cpu_s_each"]) == 1
    _both_stages_done(tp)


def _both_stages_done(tp: dict[str, Any]) -> None:
    """Done means both stages: stage 1 (lag 0 on mcp.requests, every raw row) ends first, the
    windows are written after it, the whole run ends last; each rate matches its interval."""
    assert tp["events_per_s_to_parquet"] >= tp["events_per_s_stage1"] >= tp["events_per_s"]
    assert tp["events_per_s_to_features"] >= tp["events_per_s"]
    assert tp["measured_s"] >= max(tp["stage1_s"], tp["to_features_s"]) >= tp["to_parquet_s"] > 0
    assert tp["events_per_s_stage1"] == pytest.approx(tp["measured_events"] / tp["stage1_s"], rel=0.01)
    assert tp["entity_records"] > 0  # slices forwarded to mcp.feature-events, all acknowledged
    assert tp["closed_by_ms"] > 0 and tp["raw_merges_seen"] >= 0
    assert tp["group_stable_s"] is not None and 0 < tp["group_stable_s"] < tp["startup_s"] + tp["measured_s"]


def test_freshness_sees_every_probe(bench: dict[str, Any]) -> None:
    fr = bench["json"]["freshness"]
    assert fr["events_sent"] == 5000 and fr["rate_achieved"] == pytest.approx(1000, rel=0.1)
    assert fr["probes"] == 5000 // fr["probe_every"] and fr["probes_seen"] == fr["probes"], fr
    visible, written = fr["visible_s"], fr["written_s"]
    assert 0 < visible["p50"] <= visible["p99"] <= visible["max"] < 30
    assert 0 < written["p50"] <= visible["p50"]  # seen only after the worker wrote it


def test_sql_answers_per_replica_p99(bench: dict[str, Any]) -> None:
    sql = bench["json"]["sql"]
    assert sql["dataset"]["events"] == 1_000_000 and sql["dataset"]["files"] == 24
    dedup, raw = sql["requests"], sql["requests_raw"]
    assert [row["replica"] for row in dedup["result"]] == sorted(r[0] for r in REPLICAS)
    assert all(row["requests"] > 0 and row["p99_latency_ms"] > 0 for row in dedup["result"])
    assert dedup["result"] == raw["result"]  # the generated dataset holds no duplicates
    assert dedup["cli_csv_lines"] == len(dedup["result"]) + 1  # the CLI printed the same rows, with a header
    for figures in (dedup, raw):
        assert 0 < figures["query_s"]["min"] <= figures["query_s"]["median"]
        assert figures["cli_wall_s"]["median"] > figures["query_s"]["min"]
    assert sql["floor"]["result"] == [{"one": 1}] and sql["floor"]["cli_wall_s"]["min"] > 0
    # The newest hour as micro-batch files with replayed rows: the view still counts each event once.
    split = sql["requests_split"]
    assert sql["dataset"]["split"]["files"] >= 300 and sql["dataset"]["split"]["replayed_rows"] > 0
    assert split["result"] == dedup["result"]
    # Then merged as the worker merges (all but the newest 30 files): still each event once.
    merged = sql["requests_merged"]
    assert sql["dataset"]["merged"]["files"] == 31 and sql["dataset"]["merged"]["merged_files"] >= 270
    assert merged["result"] == dedup["result"]
    by_replica = {row["replica"]: row["p99_latency_ms"] for row in dedup["result"]}
    assert by_replica["search-1"] > by_replica["files-0"] * 10, by_replica  # the fleet's slowest and fastest


def test_bars_measured_printed_and_recorded(bench: dict[str, Any]) -> None:
    report, stdout = bench["json"], bench["stdout"]
    bars = report["bars"]
    assert [bar["name"] for bar in bars] == BARS
    for bar in bars:
        assert bar["status"] in ("PASS", "FAIL"), bar  # measured, not skipped
        assert bar["value"] is not None and bar["value"] > 0
        assert bar["passed"] == (bar["status"] == "PASS")
        printed = [line for line in stdout.splitlines() if bar["description"] in line]
        assert len(printed) == 1 and printed[0].startswith(bar["status"]), (bar, stdout)
    assert bars[0]["value"] == report["throughput"]["events_per_s"]
    assert bars[1]["value"] == report["freshness"]["visible_s"]["p99"]
    sql = report["sql"]
    assert bars[2]["value"] == max(sql["requests"]["query_s"]["median"], sql["requests_merged"]["query_s"]["median"])


def test_table_printed(bench: dict[str, Any]) -> None:
    lines = bench["stdout"].splitlines()
    assert any(line.startswith("measurement") for line in lines), bench["stdout"]
    for row in ("worker throughput, 1 core", "  stage 1 only", "  until windows written", "freshness p50",
                "freshness p99", "features sql CLI (1M)", "features sql query (1M)"):
        assert sum(line.startswith(row) for line in lines) == 1, (row, bench["stdout"])
    # The cells table: a header and one row per (broker, workers).
    assert sum(line.startswith("broker") and "per CPU-s" in line for line in lines) == 1, bench["stdout"]
    assert sum(line.split()[:2] == ["embedded", "1"] for line in lines if line.strip()) == 1, bench["stdout"]


# --- two workers on Apache Kafka ----------------------------------------------------------


@pytest.fixture(scope="module")
def kafka_bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "stream-kafka.json"
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    args = parser.parse_args(["stream", "--quick", "--broker", "kafka", "--workers", "2", "--sql-events", "10000",
                              "--repeats", "1", "--out", str(out)])
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = bench_cli.run(args)
    return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
            "json": json.loads(out.read_text()) if out.exists() else None}


def test_two_workers_on_kafka_drain_the_backlog_exactly(kafka_bench: dict[str, Any]) -> None:
    assert kafka_bench["code"] == 0, (kafka_bench["stdout"], kafka_bench["stderr"])
    report = kafka_bench["json"]
    assert report["settings"]["brokers"] == ["kafka"] and report["settings"]["workers"] == [2]
    (cell,) = report["cells"]
    assert (cell["broker"], cell["workers"]) == ("kafka", 2) and "error" not in cell, cell
    tp = cell["throughput"]
    assert tp == report["throughput"]  # the only cell is the reference
    # Raw rows a rebalance made the new owner write again are deduplicated by the requests view.
    assert tp["events"] == tp["distinct_event_ids"] == 20_000 and tp["parquet_rows"] >= 20_000
    assert tp["workers"] == 2 and tp["worker_core"] is None and tp["worker_cpus"] == report["settings"]["cpus"]
    each = tp["worker_cpu_s_each"]
    assert len(each) == 2 and all(s > 0 for s in each)  # both workers worked
    assert tp["worker_cpu_s"] == pytest.approx(sum(each), abs=0.02)
    assert tp["events_per_cpu_s"] == pytest.approx(tp["measured_events"] / tp["worker_cpu_s"], rel=0.01)
    assert tp["others_cpu_pct_of_core"]["broker"] > 0  # the Kafka JVM, from /proc
    _both_stages_done(tp)
    fr = cell["freshness_run"]
    assert fr["probes_seen"] == fr["probes"] > 0 and cell["freshness"] == fr["visible_s"]


def test_two_workers_on_kafka_bars_and_table(kafka_bench: dict[str, Any]) -> None:
    report, lines = kafka_bench["json"], kafka_bench["stdout"].splitlines()
    bars = {bar["name"]: bar for bar in report["bars"]}
    assert bars["worker_events_per_s"]["status"] == "SKIP"  # a one-core bar: no one-worker cell in this run
    assert bars["freshness_p99_s"]["status"] in ("PASS", "FAIL")
    assert bars["freshness_p99_s"]["value"] == report["freshness"]["visible_s"]["p99"]
    assert sum(line.split()[:2] == ["kafka", "2"] for line in lines if line.strip()) == 1, kafka_bench["stdout"]
    assert any(line.startswith("worker throughput, 2 workers") for line in lines), kafka_bench["stdout"]


# --- arguments and the scaling line, without a broker ----------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    return parser.parse_args(["stream", *argv])


def test_broker_and_workers_arguments() -> None:
    args = _parse()
    assert args.broker == ["embedded"] and args.workers == [1]
    args = _parse("--broker", "embedded", "kafka", "--workers", "1", "2", "3")
    assert args.broker == ["embedded", "kafka"] and args.workers == [1, 2, 3]
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        _parse("--broker", "redpanda")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert bench_cli.run(_parse("--workers", "0")) == 2  # refused before anything starts
        assert bench_cli.run(_parse("--retries", "-1")) == 2
    assert "--workers" in stderr.getvalue()


def test_scaling_line_and_reference_cell() -> None:
    from only1mcp.jobs.bench.stream_table import cell_rows, reference_cell, scaling_between

    def cell(broker: str, workers: int, per_s: float, per_cpu: float) -> dict[str, Any]:
        tp = {"events_per_s": per_s, "events_per_cpu_s": per_cpu, "worker_cpu_pct_of_core": 100.0,
              "events_per_s_stage1": per_s * 2, "measured_events": 1000, "measured_s": 1.0,
              "others_cpu_pct_of_core": {"broker": 10.0}, "group_stable_s": 3.0}
        return {"broker": broker, "workers": workers, "throughput": tp,
                "freshness": {"visible_s": {"p50": 0.2, "p99": 0.5}}}

    cells = [cell("kafka", 1, 1000, 1200), cell("kafka", 2, 1500, 1100), cell("embedded", 2, 900, 800),
             cell("embedded", 1, 1000, 1000), {"broker": "embedded", "workers": 3, "error": "TimeoutError: x"}]
    lines, ratios = scaling_between(cells)
    assert lines == ["scaling, kafka: 2 workers / 1 worker = 1.50× events/s, 0.92× per CPU-second",
                     "scaling, embedded: 2 workers / 1 worker = 0.90× events/s, 0.80× per CPU-second"]
    assert {"broker": "kafka", "workers": 2, "events_per_s_ratio": 1.5, "events_per_cpu_s_ratio": 0.917} in ratios
    assert reference_cell(cells) is cells[3]  # embedded with one worker, wherever it is
    assert reference_cell(cells[:2]) is cells[0]
    rows = cell_rows(cells)
    assert rows[-1][:3] == ["embedded", "3", "-"] and rows[-1][-1].startswith("TimeoutError")
    retried = {**cell("kafka", 3, 1, 1), "failed_attempts": ["RuntimeError: a worker exited\nworker-0 log: …"]}
    assert cell_rows([retried])[0][-1].endswith("; after 1 failed run(s): RuntimeError: a worker exited")


# --- the generators on their own ----------------------------------------------------------


def test_backlog_events_decode_and_vary() -> None:
    records = backlog(3000, 1_800_000_000.0, 1_800_000_030.0, seed=7)
    events = [RequestEvent.from_json(value) for _key, value in records]
    assert len({e.event_id for e in events}) == 3000
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert all(1_800_000_000.0 <= e.ts < 1_800_000_030.0 for e in events)
    assert {e.status for e in events} >= {"ok", "error", "timeout"}
    assert len({e.replica for e in events if e.replica}) == len(REPLICAS) and any(e.replica is None for e in events)
    assert len({e.session_id for e in events}) > 20 and len({e.tool for e in events}) > 5
    for (key, _value), event in zip(records, events):
        assert key == (event.replica.encode() if event.replica else None)  # keyed like the proxy's sink


def test_dataset_matches_the_offline_layout(tmp_path: Path) -> None:
    from only1mcp.feature_store.offline.duckdb import connect
    from only1mcp.feature_store.offline.parquet import REQUEST_SCHEMA

    info = write_dataset(tmp_path, 50_000, hours=3, start_ts=1_800_000_000.0 // 3600 * 3600)
    files = sorted((tmp_path / "requests").rglob("*.parquet"))
    assert info["files"] == len(files) == 3
    assert all(f.parent.name.startswith("hour=") and f.parent.parent.name.startswith("date=") for f in files)
    assert pq.read_schema(files[0]).remove_metadata() == REQUEST_SCHEMA
    con = connect(tmp_path)
    try:
        rows, distinct, bad_hour = con.sql(
            "SELECT count(*), count(DISTINCT event_id), "
            "count(*) FILTER (WHERE hour <> hour(to_timestamp(ts) AT TIME ZONE 'UTC')) FROM requests").fetchall()[0]
    finally:
        con.close()
    assert rows == distinct == 50_000 and bad_hour == 0


def test_parquet_watch_does_not_count_a_merge_twice(tmp_path: Path) -> None:
    """The worker merges small files every 30 s: the merged file repeats rows already counted."""
    from only1mcp.jobs.bench._stream_data import merge_newest_hour, split_newest_hour
    from only1mcp.jobs.bench._stream_measure import ParquetWatch

    write_dataset(tmp_path, 30_000, hours=1, start_ts=1_800_000_000.0 // 3600 * 3600)
    split = split_newest_hour(tmp_path, files=30)
    watch = ParquetWatch(tmp_path)
    watch.scan()
    before = watch.rows()
    assert len(watch.files) == split["files"] and before == 30_000 + split["replayed_rows"]
    merged = merge_newest_hour(tmp_path, keep=5)
    watch.scan()
    assert merged["merged_files"] == split["files"] - 5 and merged["files"] == 6
    assert watch.merges == 1 and watch.rows() == before  # the merged file is not counted again
    assert len(watch.ordered()) == split["files"]  # the timeline keeps the original files
    watch.scan()
    assert watch.merges == 1 and watch.rows() == before
