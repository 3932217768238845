"""Latency predictors: one contract over every implementation, then what each must achieve."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from only1mcp.models.errors import ModelError, ParityError
from only1mcp.models.latency.features import FEATURE_NAMES, FEATURE_VERSION
from only1mcp.models.latency.onnx import INPUT_NAME, PARITY_TOLERANCE, LatencyModel, export, parity
from only1mcp.models.latency.online import RiverLatency
from only1mcp.models.latency.train import predict_native, quantile_metrics
from only1mcp.models.registry import ModelRegistry


def _river(trained) -> RiverLatency:  # noqa: ANN001
    model = RiverLatency()
    X, y = trained.X_holdout, trained.y_holdout
    for x, target in zip(X[: len(X) // 2], y[: len(y) // 2]):
        model.learn_one(x, target)
    return model


def _roundtrip_onnx(model: LatencyModel, tmp: Path, trained, blobs) -> LatencyModel:  # noqa: ANN001
    registry = ModelRegistry(tmp / "registry")
    return registry.load(registry.add(trained, blobs))


@pytest.fixture(params=["onnx", "river"])
def predictor(request, trained, onnx_blobs, tmp_path) -> tuple[Any, Callable[[Any], Any]]:  # noqa: ANN001
    """(a trained predictor, a function that saves and restores it)."""
    if request.param == "onnx":
        blobs = onnx_blobs[0]
        return LatencyModel(blobs["p50"], blobs["p95"]), lambda m: _roundtrip_onnx(m, tmp_path, trained, blobs)
    return _river(trained), lambda m: RiverLatency.from_bytes(m.to_bytes())


# -- the contract ------------------------------------------------------------------------------

def test_predict_shapes_finite_and_ordered(predictor, trained) -> None:  # noqa: ANN001
    model, _ = predictor
    X = trained.X_holdout[:20]
    p50, p95 = model.predict(X)
    assert p50.shape == p95.shape == (20,)
    assert np.all(np.isfinite(p50)) and np.all(np.isfinite(p95))
    assert np.all(p50 >= 0) and np.all(p95 >= p50)
    one50, one95 = model.predict(X[0])  # one row, 1-D
    assert one50.shape == (1,) and one50[0] == pytest.approx(p50[0], rel=1e-6)
    empty50, empty95 = model.predict(np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32))
    assert empty50.shape == empty95.shape == (0,)


def test_predict_refuses_rows_of_another_width(predictor) -> None:  # noqa: ANN001
    model, _ = predictor
    with pytest.raises(ValueError):
        model.predict(np.zeros((3, len(FEATURE_NAMES) + 1), dtype=np.float32))


def test_state_round_trip_predicts_the_same(predictor, trained) -> None:  # noqa: ANN001
    model, roundtrip = predictor
    restored = roundtrip(model)
    for a, b in zip(model.predict(trained.X_holdout[:50]), restored.predict(trained.X_holdout[:50])):
        np.testing.assert_array_equal(a, b)
    assert tuple(restored.feature_names) == FEATURE_NAMES


def test_extreme_inputs_stay_finite(predictor) -> None:  # noqa: ANN001
    model, _ = predictor
    X = np.array([[0.0] * len(FEATURE_NAMES), [1e6] * len(FEATURE_NAMES), [-1.0] * len(FEATURE_NAMES)],
                 dtype=np.float32)
    p50, p95 = model.predict(X)
    assert np.all(np.isfinite(p50)) and np.all(np.isfinite(p95))


# -- what the models must achieve ---------------------------------------------------------------

def test_model_beats_the_ewma_baseline_on_a_load_sensitive_holdout(trained) -> None:  # noqa: ANN001
    m, ewma, last = trained.metrics["model"], trained.metrics["ewma"], trained.metrics["last_value"]
    assert trained.improvement["mae_p50_vs_ewma"] >= 0.2, trained.metrics
    assert m["mae_p50"] < last["mae_p50"] and m["pinball_95"] < ewma["pinball_95"]
    assert 0.85 <= m["coverage_p95"] <= 0.99
    assert trained.rows["holdout"] == 1000 and trained.rows["train"] == 4000
    assert trained.split["holdout_since"] >= trained.ts_holdout.min()  # the newest rows are the hold-out
    assert trained.ts_holdout.min() > trained.split["train_since"]
    top = max(trained.feature_importance, key=trained.feature_importance.get)
    assert top in ("inflight", "rt_latency_ewma_ms", "rt_window_mean_ms")


def test_split_is_by_time_even_when_rows_come_shuffled(frame) -> None:  # noqa: ANN001
    from only1mcp.models.latency.train import train

    X, y, meta = frame
    order = np.random.default_rng(1).permutation(len(y))
    shuffled = train(X[order], y[order], meta.ts[order], params={"n_estimators": 5})
    assert shuffled.ts_holdout.min() >= np.quantile(meta.ts, 0.8) - 1e-6


def test_river_challenger_learns_load(trained) -> None:  # noqa: ANN001
    model = RiverLatency()
    n = len(trained.X_holdout) // 2
    X, y = trained.X_holdout, trained.y_holdout
    for x, target in zip(X[:n], y[:n]):
        model.learn_one(x, target)
    river = quantile_metrics(y[n:], *model.predict(X[n:]))
    ewma = X[n:, FEATURE_NAMES.index("rt_latency_ewma_ms")]
    assert river["mae_p50"] < np.mean(np.abs(y[n:] - ewma))


def test_onnx_agrees_with_native_within_a_tenth_of_a_percent(trained, onnx_blobs) -> None:  # noqa: ANN001
    blobs, diffs = onnx_blobs
    assert max(diffs.values()) < PARITY_TOLERANCE
    model = LatencyModel(blobs["p50"], blobs["p95"])
    p50, _ = model.predict(trained.X_holdout)
    native = predict_native(trained.p50, trained.X_holdout)
    assert np.max(np.abs(p50 - native) / np.maximum(native, 0.01)) < PARITY_TOLERANCE
    assert all(len(b) <= 5_000_000 for b in blobs.values())
    import onnx

    graph = onnx.load_from_string(blobs["p50"]).graph
    assert graph.input[0].name == INPUT_NAME
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_export_refuses_when_parity_fails(trained, weak_blobs, monkeypatch) -> None:  # noqa: ANN001
    import only1mcp.models.latency.onnx as onnx_module

    monkeypatch.setattr(onnx_module, "to_onnx", lambda booster: weak_blobs["p50"])  # a converter gone wrong
    with pytest.raises(ParityError, match="refused"):
        export({"p50": trained.p50}, trained.X_holdout)
    assert parity(trained.p50, weak_blobs["p50"], trained.X_holdout) > PARITY_TOLERANCE


def test_onnx_model_refuses_garbage_and_other_features(onnx_blobs) -> None:  # noqa: ANN001
    blobs = onnx_blobs[0]
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        LatencyModel(blobs["p50"][: len(blobs["p50"]) // 2], blobs["p95"])
    with pytest.raises(ModelError, match="feature version"):
        LatencyModel(blobs["p50"], blobs["p95"], {"feature_names": list(FEATURE_NAMES),
                                                  "feature_version": FEATURE_VERSION + 1})
    with pytest.raises(ModelError, match="other features"):
        LatencyModel(blobs["p50"], blobs["p95"], {"feature_names": list(reversed(FEATURE_NAMES)),
                                                  "feature_version": FEATURE_VERSION})


def test_river_state_refuses_bytes_that_do_not_load(trained) -> None:  # noqa: ANN001
    good = _river(trained).to_bytes()
    for bad in (b"", b"garbage", good[: len(good) // 2], good[:23] + pickle.dumps({"class": "Other"}),
                good[:23] + pickle.dumps({"class": "RiverLatency", "feature_version": FEATURE_VERSION + 1})):
        with pytest.raises(ModelError):
            RiverLatency.from_bytes(bad)


def test_the_p95_model_starts_from_the_ewma_baseline_and_onnx_keeps_its_margin() -> None:
    """The P95 booster carries its base margin (log1p(EWMA × factor)): native predictions, the ONNX
    graph and a model loaded from that graph agree, and on a small training set where latency is
    the EWMA times noise it is not worse than the baseline it starts from."""
    from only1mcp.models.latency.features import EWMA_FEATURE, FEATURE_NAMES
    from only1mcp.models.latency.residual import spec_of
    from only1mcp.models.latency.train import train

    rng = np.random.default_rng(3)
    n = 800
    X = rng.random((n, len(FEATURE_NAMES))).astype(np.float32)
    ewma = FEATURE_NAMES.index(EWMA_FEATURE)
    X[:, ewma] = rng.choice([12.0, 40.0, 150.0, 600.0], n)  # four (replica, tool) levels
    y = X[:, ewma] * np.exp(0.5 * rng.standard_normal(n))
    result = train(X, y, np.arange(n, dtype=float), params={"nthread": 1})
    spec = spec_of(result.p95)
    assert spec is not None and spec["column"] == ewma and spec["factor"] > 1.0
    assert spec_of(result.p50) is None  # the P50 model learns levels on its own
    assert result.metrics["model"]["pinball_95"] <= 1.02 * result.metrics["ewma"]["pinball_95"], result.metrics
    blobs, diffs = export({"p50": result.p50, "p95": result.p95}, result.X_holdout)
    assert diffs["p95"] < 1e-4
    p50, p95 = LatencyModel(blobs["p50"], blobs["p95"]).predict(result.X_holdout)
    np.testing.assert_allclose(p95, result.pred_holdout["p95"], rtol=1e-4)
    # Without its margin the graph would predict ~the base score for every level: it does not.
    high, low = X[:, ewma] == 600.0, X[:, ewma] == 12.0
    top, bottom = LatencyModel(blobs["p50"], blobs["p95"]).predict(X[high][:5])[1], \
        LatencyModel(blobs["p50"], blobs["p95"]).predict(X[low][:5])[1]
    assert top.min() > 10 * bottom.max()


def test_the_p50_model_never_predicts_below_its_floor_past_its_training_data() -> None:
    """A replica far slower than any the training data had enough calls of: the plain trees answer
    with the nearest leaf (as fast as the others); the floor (EWMA × the training part's 5th
    percentile of latency / EWMA) holds the prediction up, natively, in ONNX and once loaded."""
    from only1mcp.models.latency.features import EWMA_FEATURE, FEATURE_NAMES
    from only1mcp.models.latency.residual import floor_spec_of
    from only1mcp.models.latency.train import train

    rng = np.random.default_rng(5)
    n = 1500
    X = rng.random((n, len(FEATURE_NAMES))).astype(np.float32)
    ewma = FEATURE_NAMES.index(EWMA_FEATURE)
    X[:, ewma] = rng.uniform(20.0, 60.0, n)  # every replica the warm-up knows well is fast
    X[:20, ewma] = 400.0  # a 10x slow one had 20 calls: fewer than a leaf holds (min_child_weight)
    y = X[:, ewma] * np.exp(0.3 * rng.standard_normal(n))
    order = rng.permutation(n)  # the slow calls spread over the whole window
    X, y = X[order], y[order]
    floored = train(X, y, np.arange(n, dtype=float), params={"nthread": 1})
    plain = train(X, y, np.arange(n, dtype=float), params={"nthread": 1, "p50_floor_quantile": 0})
    factor = floored.p50_floor_factor
    spec = floor_spec_of(floored.p50)
    assert spec is not None and spec["column"] == ewma and spec["factor"] == factor and 0.3 < factor < 1.0
    assert floor_spec_of(plain.p50) is None and plain.p50_floor_factor is None
    slow = X[:5].copy()
    slow[:, ewma] = 400.0
    assert predict_native(plain.p50, slow).max() < 150.0  # the nearest leaf: a fast replica's latency
    native = predict_native(floored.p50, slow)
    assert native.min() >= 400.0 * factor * 0.999
    blobs, diffs = export({"p50": floored.p50, "p95": floored.p95}, np.vstack([floored.X_holdout, slow]))
    assert diffs["p50"] < 1e-4
    np.testing.assert_allclose(LatencyModel(blobs["p50"], blobs["p95"]).predict(slow)[0], native, rtol=1e-4)
    # Inside the data the floor rarely binds: the hold-out error is the plain model's, give or take.
    assert floored.metrics["model"]["mae_p50"] <= 1.01 * plain.metrics["model"]["mae_p50"]
