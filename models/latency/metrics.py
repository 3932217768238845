"""Quantile metrics, shared by training, the registry's gate and the worker's live scoring.

Kept apart from ``train.py`` so that judging a model (the gate, the shadow comparison) needs
numpy only, not XGBoost.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pinball", "quantile_metrics"]


def pinball(y: np.ndarray, q: np.ndarray, alpha: float) -> float:
    """Mean pinball (quantile) loss of predictions ``q`` of the ``alpha`` quantile."""
    diff = np.asarray(y, dtype=np.float64) - np.asarray(q, dtype=np.float64)
    return float(np.mean(np.maximum(alpha * diff, (alpha - 1.0) * diff)))


def quantile_metrics(y: np.ndarray, p50: np.ndarray, p95: np.ndarray) -> dict[str, float]:
    """MAE of P50, pinball at 0.5 and 0.95, and P95 coverage (share of y ≤ predicted P95)."""
    y = np.asarray(y, dtype=np.float64)
    return {
        "mae_p50": float(np.mean(np.abs(y - np.asarray(p50, dtype=np.float64)))),
        "pinball_50": pinball(y, p50, 0.5),
        "pinball_95": pinball(y, p95, 0.95),
        "coverage_p95": float(np.mean(y <= np.asarray(p95, dtype=np.float64))),
    }
