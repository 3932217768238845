"""The latency training job and its CLI, on a Parquet store written from RequestEvent dicts."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from only1mcp.feature_store.offline.parquet import write_requests
from only1mcp.jobs.train_latency import load_rows, parse_time, train_latency
from only1mcp.models.errors import InsufficientData
from only1mcp.models.latency.synthetic import load_sensitive_events
from only1mcp.models.registry import ModelRegistry

N = 4000


def _not_training_rows(events: list[dict]) -> list[dict]:
    """Calls the model must not learn from: cache hits, other methods, calls that reached no replica."""
    out = []
    for i, e in enumerate(events[:300]):
        kind = i % 3
        extra = {**e, "event_id": f"x{i}"}
        if kind == 0:
            extra.update(cache_hit=True, latency_ms=0.2, attempts=0)
        elif kind == 1:
            extra.update(method="tools/list")
        else:
            extra.update(replica=None, status="unavailable")
        out.append(extra)
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    data = tmp_path_factory.mktemp("store") / "data"
    events = load_sensitive_events(N, seed=7)
    write_requests(data, events[: N // 2])  # two batches: more than one file per partition
    write_requests(data, events[N // 2:] + _not_training_rows(events) + events[:50])  # and replayed duplicates
    return data, events


def test_job_trains_exports_registers_gates_and_reports(store, tmp_path: Path) -> None:  # noqa: ANN001
    data, events = store
    stages: set[str] = set()
    report = train_latency(data, tmp_path / "models", progress=lambda stage, done, total: stages.add(stage))
    assert stages == {"p50", "p95", "p50 refit", "p95 refit"}
    assert sum(report["rows"][k] for k in ("train", "holdout")) == N  # only the upstream tools/call rows, once
    assert report["promoted"] and report["status"] == "live" and report["live"] == report["version"]
    assert report["improvement"]["mae_p50_vs_ewma"] >= 0.2, report["metrics"]
    assert 0.85 <= report["metrics"]["model"]["coverage_p95"] <= 0.99
    assert max(report["parity"].values()) < 1e-3
    assert all(0 < size <= 5_000_000 for size in report["sizes"].values())
    assert report["predict_batch20_p99_us"] > 0
    folder = Path(report["path"])
    html = (folder / "report.html").read_text()
    assert "EWMA baseline" in html and "last-value baseline" in html and "data:image/png;base64," in html
    assert (folder / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(report)  # JSON-ready

    again = train_latency(data, tmp_path / "models", promote=False)  # same data: a candidate, no gate run
    registry = ModelRegistry(tmp_path / "models")
    assert registry.show(again["version"]).status == "candidate"
    assert registry.live().version == report["version"]


def test_window_filter_accepts_unix_seconds_and_iso(store) -> None:  # noqa: ANN001
    data, events = store
    since, until = events[1000]["ts"], events[3000]["ts"]
    rows = load_rows(data, since, until)
    assert len(rows) == 2000 and rows[0]["ts"] == since
    assert all(since <= r["ts"] < until for r in rows)
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)
    iso = datetime.fromtimestamp(1_790_000_000, tz=timezone.utc).isoformat()
    assert parse_time(iso) == parse_time("1790000000") == parse_time(1_790_000_000) == 1_790_000_000.0
    assert parse_time(iso.replace("+00:00", "Z")) == 1_790_000_000.0
    assert parse_time(iso.replace("+00:00", "")) == 1_790_000_000.0  # naive = UTC
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_too_few_rows_is_a_clear_error_and_registers_nothing(store, tmp_path: Path) -> None:  # noqa: ANN001
    data, events = store
    with pytest.raises(InsufficientData, match="at least 500"):
        train_latency(data, tmp_path / "models", since=events[-100]["ts"])
    assert ModelRegistry(tmp_path / "models").list() == []


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "only1mcp.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_train_and_models(store, tmp_path: Path) -> None:  # noqa: ANN001
    data, _ = store
    registry = tmp_path / "registry"
    config = tmp_path / "only1mcp.toml"
    config.write_text(f'[store]\ndata_dir = "{data}"\n\n[learning]\nregistry_dir = "{registry}"\n')

    trained = _cli("train", "latency", "--config", str(config))
    assert trained.returncode == 0, trained.stderr
    for text in ("ewma baseline", "last-value baseline", "MAE P50", "coverage P95", "P50 floor: never below EWMA x",
                 "parity", "gate: promoted"):
        assert text in trained.stdout
    assert "training p50" in trained.stderr and "#" in trained.stderr  # the progress bar
    first = ModelRegistry(registry).live().version

    candidate = _cli("train", "latency", "--config", str(config), "--no-promote", "--json")
    assert candidate.returncode == 0, candidate.stderr
    second = json.loads(candidate.stdout)["version"]

    listing = _cli("models", "list", "--config", str(config))
    assert listing.returncode == 0 and first in listing.stdout and second in listing.stdout
    shown = _cli("models", "show", second, "--config", str(config), "--json")
    shown_meta = json.loads(shown.stdout)
    assert shown_meta["status"] == "candidate"
    assert 0 < shown_meta["p50_floor_factor"] < 1  # the floor travels with the version
    forced = _cli("models", "promote", second, "--force", "--config", str(config))
    assert forced.returncode == 0 and "promoted" in forced.stdout
    back = _cli("models", "rollback", "--config", str(config))
    assert back.returncode == 0 and first in back.stdout
    assert ModelRegistry(registry).live().version == first
    unknown = _cli("models", "promote", "latency-nope", "--config", str(config))
    assert unknown.returncode == 1 and "no model version" in unknown.stderr

    missing = _cli("train", "latency", "--data-dir", str(tmp_path / "nothing"), "--registry-dir", str(registry))
    assert missing.returncode == 1 and "no offline store at" in missing.stderr and "does not exist" in missing.stderr
    write_requests(tmp_path / "few", load_sensitive_events(50, seed=3))
    refused = _cli("train", "latency", "--data-dir", str(tmp_path / "few"), "--registry-dir", str(registry))
    assert refused.returncode == 1 and "at least 500" in refused.stderr


def test_max_rows_keeps_the_newest_calls(store) -> None:  # noqa: ANN001
    data, events = store
    rows = load_rows(data, max_rows=1000)
    assert [r["ts"] for r in rows] == [e["ts"] for e in events[-1000:]]


def test_a_store_without_inflight_still_trains(tmp_path: Path) -> None:
    """Events written before RequestEvent.inflight existed: the column is null (or absent)."""
    events = [{k: v for k, v in e.items() if k != "inflight"} for e in load_sensitive_events(800, seed=9)]
    write_requests(tmp_path / "data", events)
    report = train_latency(tmp_path / "data", tmp_path / "models", promote=False,
                           params={"n_estimators": 20})
    assert report["rows"]["train"] + report["rows"]["holdout"] == 800 and report["status"] == "candidate"
