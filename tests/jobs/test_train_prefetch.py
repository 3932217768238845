"""``only1mcp train prefetch`` on an offline store written by the feature store's writer (the real
worker's Parquet: tests/streams/test_prefetch_worker.py): sessions rebuilt from the raw requests, a time-based
split, accuracy vs the baselines, an artefact registered and gated; corrupt artefacts refused."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from only1mcp.feature_store.offline.parquet import write_requests
from only1mcp.jobs.sim.traces import loadgen_trace
from only1mcp.jobs.train_prefetch import load_sessions, split_sessions, train_prefetch
from only1mcp.models.errors import InsufficientData, ModelError
from only1mcp.models.prefetch.markov import NextToolModel
from only1mcp.models.prefetch.registry import PrefetchRegistry, prefetch_root

T0 = 1_800_000_000.0


def events_of(rows: list[dict[str, Any]], start: float = T0) -> list[dict[str, Any]]:
    """Trace rows (session, ts, tool, args) as the proxy's request events (keyed hashes stood in for)."""
    return [{"event_id": uuid.uuid4().hex, "ts": start + r["ts"], "latency_ms": 3.0, "method": "tools/call",
             "status": "ok", "session_id": hashlib.sha256(r["session"].encode()).hexdigest()[:32], "tool": r["tool"],
             "server": "sim", "replica": "sim/0",
             "args_hash": hashlib.sha256(json.dumps(r["args"], sort_keys=True).encode()).hexdigest()[:32]}
            for r in rows]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("store") / "data"
    events = events_of(loadgen_trace(seed=1, calls=4000))
    noise = [{**e, "event_id": uuid.uuid4().hex, "method": "tools/list", "tool": None} for e in events[:100]]
    noise += [{**e, "event_id": uuid.uuid4().hex, "session_id": None} for e in events[:100]]
    write_requests(data, events[:1500])
    write_requests(data, events[1500:] + noise + events[:40])  # replayed duplicates: the view keeps one
    return data


def test_sessions_are_rebuilt_and_split_by_time(store: Path) -> None:
    sessions = load_sessions(store)
    assert len(sessions) == 32 and sum(len(tools) for _, tools in sessions) == 4000
    assert all(times == sorted(times) for times, _ in sessions)
    train, held, cut = split_sessions(sessions)
    assert all(t < cut for times, _ in train for t in times)
    assert sum(len(tools) - start for tools, start in held) == 4000 - sum(len(t) for _, t in train)
    assert 750 <= 4000 - sum(len(t) for _, t in train) <= 850  # the newest 20 % of the calls


def test_training_reports_accuracy_against_the_baselines_and_registers(store: Path, tmp_path: Path) -> None:
    report = train_prefetch(store, tmp_path / "models")
    m = report["metrics"]
    assert set(m) == {"model", "markov1", "most_frequent", "in_sample_ceiling"}
    assert m["model"]["calls"] == m["markov1"]["calls"] > 500
    # The loadgen's sessions are an order-1 Markov chain: the order-1 baseline is the right model, and the
    # tuning finds it here (on other seeds it may pick order 2 and lose by a point: then the gate refuses).
    assert report["order"] == 1 and m["model"] == m["markov1"]
    assert m["model"]["top1"] > m["most_frequent"]["top1"] and m["model"]["top3"] > m["most_frequent"]["top3"]
    assert m["in_sample_ceiling"]["top1"] >= m["model"]["top1"]
    assert report["promoted"] and report["live"] == report["version"]
    registry = PrefetchRegistry(prefetch_root(tmp_path / "models"))
    meta = registry.show(report["version"])
    assert meta["status"] == "live" and meta["metrics"] == json.loads(json.dumps(m))
    assert set(meta["files"]) == {"model.json", "holdout.json"} and meta["order"] == report["order"]
    model, version = registry.load_live()
    assert version == report["version"] and model.learned == report["rows"]["calls"]["train"]
    again = train_prefetch(store, tmp_path / "models")  # the same data: ties the live model, and a tie promotes
    assert again["gate"]["scores"]["live"]["top1"] == pytest.approx(again["metrics"]["model"]["top1"])
    assert again["promoted"] and registry.show(report["version"])["status"] == "retired"


def test_the_gate_refuses_a_model_that_loses_to_the_order_1_baseline(store: Path, tmp_path: Path) -> None:
    report = train_prefetch(store, tmp_path / "models")
    registry = PrefetchRegistry(prefetch_root(tmp_path / "models"))
    backwards = NextToolModel(order=1)  # learned the sessions in reverse: a poor model
    held = registry.holdout(report["version"])
    for tools, _ in held:
        for i, tool in enumerate(tools[::-1]):
            backwards.learn_one(tools[::-1][:i], tool)
    worse = registry.add(backwards, held, {"metrics": report["metrics"]})
    verdict = registry.promote(worse)
    assert not verdict["promoted"] and "markov1" in verdict["reason"] and "live" in verdict["reason"]
    assert registry.live_version() == report["version"] and registry.show(worse)["status"] == "refused"


def test_a_corrupt_artefact_is_refused(store: Path, tmp_path: Path) -> None:
    report = train_prefetch(store, tmp_path / "models", promote=False)
    registry = PrefetchRegistry(prefetch_root(tmp_path / "models"))
    folder = Path(report["path"])
    (folder / "model.json").write_text((folder / "model.json").read_text()[:-20])  # truncated
    with pytest.raises(ModelError, match="checksum mismatch"):
        registry.promote(report["version"])
    assert registry.live_version() is None
    # Checksum matching, content not a state: refused all the same, with the reason.
    data = b'{"model": "next_tool_markov", "version": 1, "order": "two"}'
    meta = json.loads((folder / "metadata.json").read_text())
    meta["files"]["model.json"]["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "metadata.json").write_text(json.dumps(meta))
    (folder / "model.json").write_bytes(data)
    with pytest.raises(ModelError, match="bad state"):
        registry.load(report["version"])


def test_too_few_sessions_trains_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_requests(data, events_of(loadgen_trace(seed=1, sessions=4, calls=100)))
    with pytest.raises(InsufficientData, match="4 sessions"):
        train_prefetch(data, tmp_path / "models")
    assert not (tmp_path / "models").exists()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "only1mcp.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli(store: Path, tmp_path: Path) -> None:
    done = _cli("train", "prefetch", "--data-dir", str(store), "--registry-dir", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    for text in ("order-1 Markov baseline", "most frequent tool baseline", "top-1", "top-3", "gate: promoted"):
        assert text in done.stdout
    as_json = _cli("train", "prefetch", "--data-dir", str(store), "--registry-dir", str(tmp_path / "r"), "--json",
                   "--no-promote", "--since", str(T0 + 60))
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["status"] == "candidate" and report["window"]["since"] == T0 + 60
    empty = _cli("train", "prefetch", "--data-dir", str(tmp_path / "nothing"), "--registry-dir", str(tmp_path / "r"))
    assert empty.returncode == 1 and "no offline store" in empty.stderr
