"""Quantile metrics, shared by training, the registry's gate and the worker's live scoring.

Kept apart from ``train.py`` so that judging a model (the gate, the shadow comparison) needs
numpy only, not XGBoost.

:func:`paired_upper` is the gate's evidence: on one hold-out, how sure it is that a candidate's
per-call loss is below a rival's. Calls close in time share a queue and a burst, so their losses
are correlated and a plain standard error would be far too confident; the bound comes from batch
means instead (the hold-out, in time order, cut into contiguous blocks; a Student t bound over the
block means).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import t as student_t

__all__ = ["paired_upper", "pinball", "quantile_metrics", "row_losses"]

EVIDENCE_BLOCKS = 10  # contiguous blocks of the hold-out the bound is taken over (each longer than a burst)
EVIDENCE_CONFIDENCE = 0.95  # one-sided
_MIN_BLOCK_ROWS = 5


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


def row_losses(y: np.ndarray, p50: np.ndarray, p95: np.ndarray) -> dict[str, np.ndarray]:
    """Per-call losses of the gate's metrics: absolute error of P50 and pinball loss of P95."""
    y = np.asarray(y, dtype=np.float64)
    diff = y - np.asarray(p95, dtype=np.float64)
    return {"mae_p50": np.abs(y - np.asarray(p50, dtype=np.float64)),
            "pinball_95": np.maximum(0.95 * diff, -0.05 * diff)}


def paired_upper(loss: np.ndarray, rival_loss: np.ndarray, blocks: int = EVIDENCE_BLOCKS,
                 confidence: float = EVIDENCE_CONFIDENCE) -> tuple[float, float]:
    """(mean of ``loss - rival_loss``, a one-sided ``confidence`` upper bound of it), rows in time
    order. Below zero: the first is lower with that confidence. With too few rows for two blocks
    of five, the bound is +inf (no evidence either way)."""
    d = np.asarray(loss, dtype=np.float64) - np.asarray(rival_loss, dtype=np.float64)
    if len(d) == 0:
        return 0.0, math.inf
    mean = float(np.mean(d))
    b = min(blocks, len(d) // _MIN_BLOCK_ROWS)
    if b < 2:
        return mean, math.inf
    means = np.array([chunk.mean() for chunk in np.array_split(d, b)])
    spread = float(np.std(means, ddof=1)) / math.sqrt(b)
    return mean, float(np.mean(means) + student_t.ppf(confidence, b - 1) * spread)
