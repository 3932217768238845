"""The model registry: versions, the gate, rollback, shadow, and refusing corrupt artefacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from only1mcp.models.errors import ModelError
from only1mcp.models.latency.features import EWMA_FEATURE, FEATURE_NAMES, FEATURE_VERSION
from only1mcp.models.latency.onnx import LatencyModel, sha256
from only1mcp.models.registry import HOLDOUT_FILE, ModelRegistry, gate


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def _edit_metadata(registry: ModelRegistry, version: str, **changes: object) -> None:
    path = registry.root / version / "metadata.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_add_writes_a_complete_versioned_artefact(registry, trained, onnx_blobs) -> None:  # noqa: ANN001
    blobs, diffs = onnx_blobs
    version = registry.add(trained, blobs, {"since": 1.0, "until": None}, parity=diffs)
    assert version.startswith("latency-")
    folder = registry.root / version
    assert {p.name for p in folder.iterdir()} == {"p50.onnx", "p95.onnx", "holdout.npz", "metadata.json"}
    meta = registry.show(version).metadata
    assert meta["kind"] == "latency" and meta["status"] == "candidate"
    assert meta["feature_names"] == list(FEATURE_NAMES) and meta["feature_version"] == FEATURE_VERSION
    assert meta["window"]["since"] == 1.0 and meta["window"]["data_until"] == trained.split["holdout_until"]
    assert meta["rows"] == trained.rows
    assert set(meta["metrics"]) == {"model", "ewma", "last_value"}
    assert meta["files"]["p50.onnx"] == {"sha256": sha256(blobs["p50"]), "bytes": len(blobs["p50"])}
    assert meta["parity"] == diffs and meta["params"]["max_depth"] == 4
    assert [e.version for e in registry.list()] == [version]
    assert registry.live() is None and registry.load_live() is None
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".")]  # no temp leftovers
    X, y, ts = registry.holdout(version)
    np.testing.assert_array_equal(y, trained.y_holdout)


def test_promote_rollback_and_a_worse_candidate(registry, trained, onnx_blobs, weak, weak_blobs) -> None:  # noqa: ANN001
    good = registry.add(trained, onnx_blobs[0])
    verdict = registry.promote(good)
    assert verdict.promoted, verdict.reason
    assert "baseline" in verdict.reason and registry.live().version == good
    assert isinstance(registry.load_live(), LatencyModel) and registry.load_live().version == good

    worse = registry.add(weak, weak_blobs)
    refused = registry.promote(worse)
    assert not refused.promoted
    assert "live model" in refused.reason
    assert refused.scores["live"]["mae_p50"] < refused.scores["candidate"]["mae_p50"]
    assert registry.show(worse).status == "refused" and registry.show(worse).metadata["status_reason"] == refused.reason
    assert registry.live().version == good

    forced = registry.promote(worse, force=True)
    assert forced.promoted and forced.previous == good and registry.live().version == worse
    assert registry.show(good).status == "retired"
    assert registry.rollback() == good
    assert registry.live().version == good and registry.load_live().version == good
    assert registry.show(worse).status == "retired"
    with pytest.raises(ModelError, match="no previous"):
        registry.rollback()
    actions = [e["action"] for e in registry.history()]
    assert actions == ["add", "promote", "add", "refuse", "promote", "rollback"]


def _replace_holdout(registry: ModelRegistry, version: str, X: np.ndarray, y: np.ndarray, ts: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, X=X, y=y, ts=ts)
    data = buffer.getvalue()
    (registry.root / version / HOLDOUT_FILE).write_bytes(data)
    files = registry.show(version).metadata["files"]
    _edit_metadata(registry, version, files={**files, HOLDOUT_FILE: {"sha256": sha256(data), "bytes": len(data)}})


def test_a_win_inside_the_holdouts_noise_is_refused(registry, trained, onnx_blobs) -> None:  # noqa: ANN001
    version = registry.add(trained, onnx_blobs[0])
    X, y, ts = registry.holdout(version)
    p50, _ = registry.load(version).predict(X)
    ewma = X[:, FEATURE_NAMES.index(EWMA_FEATURE)].astype(np.float64)
    # The model exact over 11 stretches of time, the baseline exact over the other 9: the model's MAE is
    # lower on average, by what one stretch more or less makes, which this hold-out cannot tell from noise.
    y = y.copy()
    for i, rows in enumerate(np.array_split(np.arange(len(y)), 20)):
        y[rows] = p50[rows] if i % 2 == 0 or i == 19 else ewma[rows]
    _replace_holdout(registry, version, X, y, ts)
    verdict = registry.promote(version)
    assert verdict.scores["candidate"]["mae_p50"] < verdict.scores["baseline"]["mae_p50"]
    assert not verdict.promoted and "mae_p50" in verdict.reason and "not clearly" in verdict.reason, verdict.reason
    assert verdict.scores["evidence"]["baseline"]["mae_p50"]["upper"] > 0
    assert registry.live() is None and registry.show(version).status == "refused"


def test_a_candidate_equal_to_the_live_model_is_refused(registry, trained, onnx_blobs) -> None:  # noqa: ANN001
    first = registry.add(trained, onnx_blobs[0])
    assert registry.promote(first).promoted
    assert registry.promote(first).reason == "already live"
    twin = registry.add(trained, onnx_blobs[0])  # same bytes, another version
    assert twin != first
    verdict = registry.promote(twin)
    assert not verdict.promoted and "≥ live model" in verdict.reason  # ties lose


@pytest.mark.parametrize("damage", ["truncated", "checksum", "feature_version", "missing"])
def test_corrupt_or_incompatible_candidates_are_refused_and_the_live_model_stays(
        registry, trained, onnx_blobs, damage) -> None:  # noqa: ANN001
    live = registry.add(trained, onnx_blobs[0])
    assert registry.promote(live).promoted
    bad = registry.add(trained, onnx_blobs[0])
    onnx_path = registry.root / bad / "p95.onnx"
    if damage == "truncated":  # a half-written file whose checksum was updated: ONNX itself refuses it
        data = onnx_path.read_bytes()[:1000]
        onnx_path.write_bytes(data)
        meta = registry.show(bad).metadata
        meta["files"]["p95.onnx"]["sha256"] = sha256(data)
        _edit_metadata(registry, bad, files=meta["files"])
        expected = "not a valid ONNX model"
    elif damage == "checksum":
        onnx_path.write_bytes(onnx_path.read_bytes()[:-10])
        expected = "checksum mismatch"
    elif damage == "feature_version":
        _edit_metadata(registry, bad, feature_version=FEATURE_VERSION + 1)
        expected = "feature version"
    else:
        onnx_path.unlink()
        expected = "cannot read"
    with pytest.raises(ModelError, match=expected):
        registry.load(bad)
    with pytest.raises(ModelError, match=expected):
        registry.promote(bad)
    with pytest.raises(ModelError, match=expected):
        registry.promote(bad, force=True)  # force skips the metrics, never the integrity checks
    assert registry.live().version == live
    assert registry.load_live().version == live


def test_a_corrupt_live_model_raises_and_the_caller_keeps_its_model(registry, trained, onnx_blobs) -> None:  # noqa: ANN001
    version = registry.add(trained, onnx_blobs[0])
    registry.promote(version)
    serving = registry.load_live()
    (registry.root / version / "p50.onnx").write_bytes(b"\x00garbage")
    try:
        serving = registry.load_live()
    except ModelError as exc:
        assert "checksum mismatch" in str(exc)
    assert serving.version == version and serving.predict(trained.X_holdout[:3])[0].shape == (3,)
    # a sound candidate may replace a live model that no longer loads; the verdict says why
    replacement = registry.add(trained, onnx_blobs[0])
    verdict = registry.promote(replacement)
    assert verdict.promoted and "could not be scored" in verdict.reason


def test_rollback_refuses_a_previous_model_that_no_longer_loads(registry, trained, onnx_blobs) -> None:  # noqa: ANN001
    first, second = registry.add(trained, onnx_blobs[0]), registry.add(trained, onnx_blobs[0])
    registry.promote(first)
    registry.promote(second, force=True)
    _edit_metadata(registry, first, feature_version=FEATURE_VERSION + 1)
    with pytest.raises(ModelError, match="feature version"):
        registry.rollback()
    assert registry.live().version == second


def test_shadow(registry, trained, onnx_blobs, weak, weak_blobs) -> None:  # noqa: ANN001
    live = registry.add(trained, onnx_blobs[0])
    registry.promote(live)
    challenger = registry.add(weak, weak_blobs)
    registry.set_shadow(challenger)
    assert registry.shadow().version == challenger and registry.shadow().status == "shadow"
    with pytest.raises(ModelError, match="is live"):
        registry.set_shadow(live)
    registry.set_shadow(None)
    assert registry.shadow() is None and registry.show(challenger).status == "candidate"


def test_unknown_versions_and_bad_names(registry) -> None:  # noqa: ANN001
    for name in ("nope", "../etc", "LIVE", ""):
        with pytest.raises(ModelError):
            registry.show(name)
    assert registry.list() == []


def test_gate_rule() -> None:
    better = {"mae_p50": 1.0, "pinball_95": 1.0}
    worse = {"mae_p50": 2.0, "pinball_95": 2.0}
    assert gate(better, worse, None)[0]
    assert gate(better, worse, worse)[0]
    assert not gate(better, worse, better)[0]  # a tie loses
    ok, reason = gate({"mae_p50": 1.0, "pinball_95": 3.0}, worse, None)
    assert not ok and "pinball_95" in reason and "mae_p50" not in reason.split("does not beat:")[1]
    clear = {"upper": -0.1}
    evidence = {"baseline": {"mae_p50": clear, "pinball_95": {"upper": 0.2}}}
    ok, reason = gate(better, worse, None, evidence)  # lower on average, but pinball_95's bound is above 0
    assert not ok and "pinball_95 1 < baseline 2 but not clearly" in reason and "+0.2 ms" in reason, reason
    evidence["baseline"]["pinball_95"] = {"upper": None}
    assert "too few calls to tell" in gate(better, worse, None, evidence)[1]
    evidence["baseline"]["pinball_95"] = clear
    assert gate(better, worse, None, evidence)[0]


def test_the_river_challenger_goes_through_the_same_gate(registry, trained, onnx_blobs) -> None:  # noqa: ANN001
    from only1mcp.models.latency.online import RiverLatency

    X, y, ts = trained.X_holdout, trained.y_holdout, trained.ts_holdout
    half = len(y) // 2
    river = RiverLatency()
    for x, target in zip(X[:half], y[:half]):  # learns the first half, judged on the second
        river.learn_one(x, target)
    challenger = registry.add_online(river, X[half:], y[half:], ts[half:],
                                     baseline_p95_factor=trained.baseline_p95_factor["ewma"])
    assert challenger.startswith("latency-river-")
    entry = registry.show(challenger)
    assert entry.metadata["kind"] == "latency-river" and entry.metrics["model"]["mae_p50"] > 0
    loaded = registry.load(challenger)
    assert isinstance(loaded, RiverLatency) and loaded.version == challenger
    np.testing.assert_array_equal(loaded.predict(X[:5])[0], river.predict(X[:5])[0])
    registry.set_shadow(challenger)
    assert registry.shadow().version == challenger

    live = registry.add(trained, onnx_blobs[0])
    assert registry.promote(live).promoted
    verdict = registry.promote(challenger)  # the XGBoost model is better on the challenger's rows
    assert not verdict.promoted and "live model" in verdict.reason
    assert verdict.scores["live"]["mae_p50"] < verdict.scores["candidate"]["mae_p50"]
    assert registry.live().version == live

    (registry.root / challenger / "state.bin").write_bytes(b"only1mcp-river-latency\n" + b"\x80garbage")
    with pytest.raises(ModelError, match="checksum mismatch"):
        registry.load(challenger)
