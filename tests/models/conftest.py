"""Trained latency models shared by the tests in this folder (training takes about a second)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from only1mcp.models.latency.features import training_frame
from only1mcp.models.latency.onnx import export
from only1mcp.models.latency.synthetic import load_sensitive_events
from only1mcp.models.latency.train import TrainResult, train

WEAK = {"n_estimators": 4, "max_depth": 2, "learning_rate": 0.3, "early_stopping_rounds": 2}


@pytest.fixture(scope="session")
def frame() -> tuple[np.ndarray, np.ndarray, Any]:
    """latency = base[tool, replica] × (1 + inflight)^1.5 × lognormal noise, 4 replicas × 5 tools."""
    return training_frame(load_sensitive_events(5000, seed=5))


@pytest.fixture(scope="session")
def trained(frame) -> TrainResult:  # noqa: ANN001
    X, y, meta = frame
    return train(X, y, meta.ts)


@pytest.fixture(scope="session")
def weak(frame) -> TrainResult:  # noqa: ANN001
    """The same data, a deliberately underpowered model: a worse candidate for the gate."""
    X, y, meta = frame
    return train(X, y, meta.ts, params=WEAK)


@pytest.fixture(scope="session")
def onnx_blobs(trained) -> tuple[dict[str, bytes], dict[str, float]]:  # noqa: ANN001
    return export({"p50": trained.p50, "p95": trained.p95}, trained.X_holdout)


@pytest.fixture(scope="session")
def weak_blobs(weak) -> dict[str, bytes]:  # noqa: ANN001
    return export({"p50": weak.p50, "p95": weak.p95}, weak.X_holdout)[0]
