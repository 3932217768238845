"""Numba helpers the compiled detectors (SPC, forecast residuals) share: the score curve, a median,
and the robust baseline of a warm-up sample (``_common``'s ``hill`` and ``robust_baseline``, compiled)."""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["hill", "median", "baseline"]


@numba.njit(cache=True)
def median(v):  # pragma: no cover - compiled
    s = np.sort(v)
    n = s.size
    return 0.5 * (s[(n - 1) // 2] + s[n // 2])


@numba.njit(cache=True)
def baseline(values):  # pragma: no cover - compiled (robust_baseline of _common, in numba)
    v = np.sort(values)
    n = v.size
    level = 0.5 * (v[(n - 1) // 2] + v[n // 2])
    dev = np.sort(np.abs(v - level))
    sigma = 1.4826 * 0.5 * (dev[(n - 1) // 2] + dev[n // 2])
    step = math.inf
    for i in range(1, n):
        d = v[i] - v[i - 1]
        if d > 0.0 and d < step:
            step = d
    if step < math.inf:
        floor = step / 2.0
    elif level != 0.0:
        floor = 1e-3 * abs(level)
    else:
        floor = 1e-300
    return level, max(sigma, floor), floor


@numba.njit(inline="always")
def hill(v, thr):  # pragma: no cover - compiled
    r = max(v, 0.0) / thr
    if r > 1e70:
        return 1.0
    r4 = r * r * r * r
    return r4 / (r4 + 1.0)
