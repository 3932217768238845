"""The latency models anchored to the EWMA baseline: specs that travel with the booster.

A P95 tree model trained on a few thousand calls must rebuild every (replica, tool)'s level from
splits on the EWMA feature, and on small warm-ups it lost to the baseline's ``EWMA × factor``.
Trained instead from that baseline (XGBoost ``base_margin`` = ``log1p(EWMA × factor)``, the target
being ``log1p(latency)``), its trees only learn the corrections: load, windows, errors. The spec
(which column, which factor) is stored as a booster attribute, so every prediction of the booster
— native (:func:`margin_of`) or exported to ONNX (models/latency/onnx.py bakes it into the graph) —
adds the same margin, and no caller can forget it.

The P50 model is not a residual (on the warm-ups it was better as a plain tree as often as not) but
has a *floor* the same way: its output never falls below ``log1p(EWMA × factor)``, the factor a low
quantile of latency / EWMA on the training part. Trees cannot extrapolate: trained on a warm-up in
which a 10x slow replica had 27 calls, the plain P50 predicted it at 44 ms against an EWMA of 393 ms.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

__all__ = ["MARGIN_ATTR", "FLOOR_ATTR", "baseline_margin", "margin_of", "set_margin", "spec_of", "set_floor",
           "floor_spec_of", "floored", "raw_predict"]

MARGIN_ATTR = "only1mcp_margin"  # booster attribute: {"column": int, "factor": float}
FLOOR_ATTR = "only1mcp_floor"  # booster attribute: {"column": int, "factor": float}


def _set(booster: Any, attr: str, column: int, factor: float) -> None:
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"a {attr} factor must be a positive number, got {factor!r}")
    booster.set_attr(**{attr: json.dumps({"column": int(column), "factor": float(factor)})})


def _spec(booster: Any, attr: str) -> dict[str, Any] | None:
    raw = booster.attr(attr)
    return None if raw is None else json.loads(raw)


def set_margin(booster: Any, column: int, factor: float) -> None:
    _set(booster, MARGIN_ATTR, column, factor)


def spec_of(booster: Any) -> dict[str, Any] | None:
    return _spec(booster, MARGIN_ATTR)


def set_floor(booster: Any, column: int, factor: float) -> None:
    """From now on the booster's output never falls below ``log1p(X[:, column] × factor)``: a
    tree cannot extrapolate, so a row past its training data (a replica slower than any it saw
    enough calls of) would otherwise get the prediction of the nearest leaf."""
    _set(booster, FLOOR_ATTR, column, factor)


def floor_spec_of(booster: Any) -> dict[str, Any] | None:
    return _spec(booster, FLOOR_ATTR)


def floored(booster: Any, X: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """The booster's raw (log1p) output ``raw`` for rows ``X`` with its floor applied, if it has one."""
    spec = floor_spec_of(booster)
    if spec is None:
        return raw
    return np.maximum(raw, baseline_margin(X, spec["column"], spec["factor"]))


def raw_predict(booster: Any, X: np.ndarray) -> np.ndarray:
    """The booster's raw (log1p) output for rows ``X``, float64, with the margin it was trained
    with and its floor: what its ONNX graph computes."""
    import xgboost as xgb

    X = np.asarray(X, dtype=np.float32)
    raw = booster.predict(xgb.DMatrix(X, base_margin=margin_of(booster, X))).astype(np.float64)
    return floored(booster, X, raw)


def margin_of(booster: Any, X: np.ndarray) -> np.ndarray | None:
    """The base margin the booster was trained with, for rows ``X``; None for a plain booster."""
    spec = spec_of(booster)
    if spec is None:
        return None
    return baseline_margin(X, spec["column"], spec["factor"])


def baseline_margin(X: np.ndarray, column: int, factor: float) -> np.ndarray:
    """``log1p(max(X[:, column], 0) × factor)``: the baseline's P95 on the log1p scale."""
    return np.log1p(np.maximum(np.asarray(X)[:, column].astype(np.float64), 0.0) * factor)
