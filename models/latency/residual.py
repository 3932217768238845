"""The P95 model as a residual over the EWMA baseline: the spec that travels with the booster.

A P95 tree model trained on a few thousand calls must rebuild every (replica, tool)'s level from
splits on the EWMA feature, and on small warm-ups it lost to the baseline's ``EWMA × factor``.
Trained instead from that baseline (XGBoost ``base_margin`` = ``log1p(EWMA × factor)``, the target
being ``log1p(latency)``), its trees only learn the corrections: load, windows, errors. The spec
(which column, which factor) is stored as a booster attribute, so every prediction of the booster
— native (:func:`margin_of`) or exported to ONNX (models/latency/onnx.py bakes it into the graph) —
adds the same margin, and no caller can forget it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

__all__ = ["MARGIN_ATTR", "baseline_margin", "margin_of", "set_margin", "spec_of"]

MARGIN_ATTR = "only1mcp_margin"  # booster attribute: {"column": int, "factor": float}


def set_margin(booster: Any, column: int, factor: float) -> None:
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"a margin factor must be a positive number, got {factor!r}")
    booster.set_attr(**{MARGIN_ATTR: json.dumps({"column": int(column), "factor": float(factor)})})


def spec_of(booster: Any) -> dict[str, Any] | None:
    raw = booster.attr(MARGIN_ATTR)
    return None if raw is None else json.loads(raw)


def margin_of(booster: Any, X: np.ndarray) -> np.ndarray | None:
    """The base margin the booster was trained with, for rows ``X``; None for a plain booster."""
    spec = spec_of(booster)
    if spec is None:
        return None
    return baseline_margin(X, spec["column"], spec["factor"])


def baseline_margin(X: np.ndarray, column: int, factor: float) -> np.ndarray:
    """``log1p(max(X[:, column], 0) × factor)``: the baseline's P95 on the log1p scale."""
    return np.log1p(np.maximum(np.asarray(X)[:, column].astype(np.float64), 0.0) * factor)
