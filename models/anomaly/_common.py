"""What the detectors share: the score map, the robust scale and its floor, observations as vectors,
feature-name semantics, and checked (de)serialisation of state arrays.

Every detector turns its own statistic into [0, 1] with the same curve (:func:`hill`): 0.5 exactly at
the detector's threshold, so 0.5 means "at the limit" whichever detector speaks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from only1mcp.models.anomaly.base import DetectorStateError

__all__ = [
    "hill", "robust_baseline", "scale_floor", "vector_of", "feature_role", "pack", "unpack",
    "check_header", "Z_CLIP", "MAD_TO_SIGMA",
]

MAD_TO_SIGMA = 1.4826  # MAD of a normal sample → its standard deviation
Z_CLIP = 1e6  # a deviation over a zero-width baseline is "very large", never inf
_REL_FLOOR = 1e-3  # a constant stretch: a change of 0.1 % of its level counts as one sigma
_TINY = 1e-300  # a constant stretch at exactly 0: any change is as far as it gets (clipped z)


def hill(value: np.ndarray | float, threshold: float, power: float = 4.0) -> np.ndarray | float:
    """v^p / (v^p + thr^p) for v >= 0: 0 at 0, 0.5 at the threshold, → 1 beyond; scale-free."""
    v = np.maximum(np.asarray(value, dtype=float) / threshold, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        vp = v**power
        out = np.where(np.isinf(vp), 1.0, vp / (vp + 1.0))
    return float(out) if np.ndim(out) == 0 else out


def scale_floor(level: float, resolution: float) -> float:
    """The smallest scale a baseline may have: half the data's resolution (the smallest step seen
    between distinct values), else a fraction of the level, else a tiny absolute number. All three
    follow the data's own unit, so a series in 1e-6 units and one in 1e9 units get the same z."""
    if resolution > 0 and math.isfinite(resolution):
        return resolution / 2.0
    if level != 0 and math.isfinite(level):
        return _REL_FLOOR * abs(level)
    return _TINY


def robust_baseline(values: np.ndarray) -> tuple[float, float, float]:
    """(median, sigma from the MAD floored by :func:`scale_floor`, the floor) of finite values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, _TINY, _TINY
    level = float(np.median(v))
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(v - level)))
    steps = np.diff(np.unique(v))
    floor = scale_floor(level, float(steps.min()) if steps.size else 0.0)
    return level, max(sigma, floor), floor


def vector_of(x: Mapping[str, float], features: Sequence[str]) -> np.ndarray:
    """The observation as a float vector in ``features`` order; absent, None or non-numeric → NaN."""
    out = np.empty(len(features))
    for i, name in enumerate(features):
        value = x.get(name)
        try:
            out[i] = float(value) if value is not None else math.nan
        except (TypeError, ValueError):
            out[i] = math.nan
    return out


_ROLES = (  # in this order: the first match wins
    (re.compile(r"(^|_)(error|errors|timeout|timeouts|failure|failures|fail)(_|$)"), "errors"),
    (re.compile(r"(^|_)(success|ok|available|availability|up)(_|$)"), "success"),
    (re.compile(r"(^|_)(calls|count|requests|rps|qps|throughput)(_|$)|per_s$"), "traffic"),
    (re.compile(r"(^|_)(latency|duration|elapsed|rtt)(_|$)|_(ms|us|seconds)$"), "latency"),
)


def feature_role(name: str) -> str:
    """What a feature measures, from its name: errors | success | traffic | latency | "" (unknown).
    Error-like names win (``timeout_rate`` is about errors); ``calls_per_s`` is traffic, not a duration."""
    lowered = name.lower()
    for pattern, role in _ROLES:
        if pattern.search(lowered):
            return role
    return ""


def pack(array: np.ndarray) -> list[Any]:
    """A float array as JSON-able nested lists (NaN → None, ±inf → ±1e308)."""
    a = np.asarray(array, dtype=float)
    clean = np.where(np.isposinf(a), 1e308, np.where(np.isneginf(a), -1e308, a))
    as_obj = clean.astype(object)
    as_obj[np.isnan(clean)] = None
    return as_obj.tolist()


def unpack(data: Any, shape: tuple[int, ...], what: str, dtype: type = float) -> np.ndarray:
    """Nested lists back to an array of exactly ``shape``; DetectorStateError when they are not."""
    try:
        a = np.array(data, dtype=object)
        if a.shape != shape:
            raise DetectorStateError(f"state field {what!r}: shape {a.shape}, expected {shape}")
        a[np.equal(a, None)] = math.nan
        out = a.astype(dtype)
    except DetectorStateError:
        raise
    except (TypeError, ValueError) as exc:
        raise DetectorStateError(f"state field {what!r} is not numeric: {exc}") from None
    return out


def check_header(state: Any, kind: str, version: int, features: Sequence[str]) -> Mapping[str, Any]:
    """The common part of every state: a mapping of this detector kind, version and feature list."""
    if not isinstance(state, Mapping):
        raise DetectorStateError(f"state is a {type(state).__name__}, not a mapping")
    if state.get("detector") != kind:
        raise DetectorStateError(f"state of detector {state.get('detector')!r}, not {kind!r}")
    if state.get("version") != version:
        raise DetectorStateError(f"state version {state.get('version')!r}, this code reads {version}")
    if list(state.get("features") or []) != list(features):
        raise DetectorStateError(f"state for features {state.get('features')!r}, not {list(features)!r}")
    return state
