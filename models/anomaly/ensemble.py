"""The ensemble: every detector scores an observation, then learns it; one combined score, a severity,
a confidence, the kind of trouble and a one-sentence explanation.

Combination (chosen by ``only1mcp bench anomaly`` on its tuning seeds): a weighted noisy-OR,
1 − Π(1 − wᵢ·sᵢ) — one sure detector is enough, and several half-sure ones add up — or ``max``
(the largest weighted score). A warming-up detector scores 0 and so adds nothing. The combined
score is then calibrated so that the tuned flagging point ``flag_at`` becomes 0.5 (monotone, on
−log(1 − s), to the 6th power: 0 stays 0, 1 stays 1), so 0.5 means "at the limit" for the ensemble too and
the severity thresholds (0.5 / 0.7 / 0.85 / 0.95) read as distances past it.

A detector that raises is skipped for that observation and counted in ``errors[name]``; the error
policy (``on_error(name, exc)``) then runs — by default it logs the first error of each detector
and nothing more. The ensemble itself never raises because of a detector (a policy may choose to).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from only1mcp.models.anomaly._common import feature_role
from only1mcp.models.anomaly.base import Assessment, Detector, DetectorStateError, Observation, Score

__all__ = ["Ensemble", "default_ensemble", "DEFAULT_WEIGHTS", "DEFAULT_FLAG_AT", "DEFAULT_THRESHOLDS", "log_once"]

_log = logging.getLogger(__name__)
_VERSION = 1
DEFAULT_THRESHOLDS = (0.5, 0.7, 0.85, 0.95)  # score at which low / medium / high / critical start
# The default detectors' weights and flagging point, chosen on the benchmark's tuning seeds
# (``only1mcp bench anomaly``, "ensemble+hst": every detector allowed). The trend's weight came out
# 0: on the benchmark its flags add false alarms to what SPC's CUSUM finds anyway; it still gives
# the time to failure, and the "trend" kind when it flags on its own.
DEFAULT_WEIGHTS = {"spc": 1.0, "iforest": 0.7, "hst": 0.3, "trend": 0.0}
DEFAULT_FLAG_AT = 0.98
_SEVERITIES = ("low", "medium", "high", "critical")
_DEVIATES = 3.0
# Detector scores grow like the log of the deviation near 1, so the calibration is steep (6th power):
# with SPC alone at flag_at 0.98, low / medium / high / critical start near 10 / 12 / 15 / 20 sigmas.  # |robust z| from which a feature counts as deviating in kind and explanation


def log_once() -> Callable[[str, Exception], None]:
    """The default error policy: log a detector's first error, stay quiet after (they are counted)."""
    logged: set[str] = set()

    def policy(name: str, exc: Exception) -> None:
        if name not in logged:
            logged.add(name)
            _log.warning("anomaly detector %s failed (skipped; further errors only counted): %r", name, exc)

    return policy


class Ensemble:
    """Detectors combined into one score in [0, 1] and an :class:`Assessment`."""

    def __init__(self, detectors: Sequence[Detector], weights: Mapping[str, float] | None = None,
                 thresholds: Sequence[float] = DEFAULT_THRESHOLDS, *, combine: str = "noisy_or",
                 on_error: Callable[[str, Exception], None] | None = None, history: int = 60,
                 flag_at: float | None = None, name: str = "ensemble") -> None:
        names = [d.name for d in detectors]
        if not detectors or len(set(names)) != len(names):
            raise ValueError(f"need detectors with distinct names, got {names!r}")
        if len(thresholds) != 4 or list(thresholds) != sorted(thresholds) or not 0 < thresholds[0] <= 1:
            raise ValueError(f"thresholds must be 4 increasing scores in (0, 1], got {thresholds!r}")
        if combine not in ("noisy_or", "max"):
            raise ValueError(f"combine must be noisy_or or max, not {combine!r}")
        self.name = name
        self.detectors = list(detectors)
        self.weights = {n: float((weights or {}).get(n, 1.0)) for n in names}
        if any(not 0.0 <= w <= 1.0 for w in self.weights.values()):
            raise ValueError(f"weights must be in [0, 1], got {self.weights!r}")
        self.thresholds = tuple(float(t) for t in thresholds)
        self.combine = combine
        if flag_at is not None and not 0.0 < flag_at < 1.0:
            raise ValueError(f"flag_at must be in (0, 1), not {flag_at!r}")
        self.flag_at = flag_at
        self._flag_log = -math.log1p(-flag_at) if flag_at is not None else 1.0
        self.on_error = on_error or log_once()
        self.history = int(history)  # rows after which the amount of history no longer lowers confidence
        self.errors: dict[str, int] = {n: 0 for n in names}
        self.features = tuple(dict.fromkeys(f for d in self.detectors for f in getattr(d, "features", ())))
        self._seen = 0

    # -- combining --------------------------------------------------------------------------------------
    def _combine(self, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """scores (..., k) → combined (...)."""
        weighted = np.clip(scores, 0.0, 1.0) * weights
        raw = weighted.max(axis=-1) if self.combine == "max" else 1.0 - np.prod(1.0 - weighted, axis=-1)
        if self.flag_at is None:
            return raw
        # calibrated: flag_at ↦ 0.5, monotone, 0 ↦ 0, 1 ↦ 1 (on −log(1 − s), where scores near 1 differ).
        # math.log1p element by element and plain products: the same bits for one row and for many
        # (numpy's SIMD loops may round a last digit differently for a batch than for one value).
        flat = np.minimum(raw, 1.0).reshape(-1).tolist()
        ratio = np.array([-math.log1p(-v) / self._flag_log if v < 1.0 else math.inf for v in flat]).reshape(raw.shape)
        with np.errstate(over="ignore", invalid="ignore"):
            squared = ratio * ratio
            steep = squared * squared * squared  # the 6th power
            return np.where(np.isinf(steep), 1.0, steep / (steep + 1.0))

    def severity(self, score: float) -> str | None:
        level = None
        for name, threshold in zip(_SEVERITIES, self.thresholds):
            if score >= threshold:
                level = name
        return level

    def _failed(self, name: str, exc: Exception) -> None:
        self.errors[name] += 1
        self.on_error(name, exc)

    # -- one observation --------------------------------------------------------------------------------
    def _score_all(self, x: Observation, t: float) -> dict[str, Score]:
        scores = {}
        for d in self.detectors:
            try:
                scores[d.name] = d.score_one(x, t)
            except Exception as exc:  # noqa: BLE001 - any detector failure is contained here
                self._failed(d.name, exc)
        return scores

    def _combined(self, scores: Mapping[str, Score]) -> float:
        names = list(scores)
        values = np.array([scores[n].value for n in names])
        weights = np.array([self.weights[n] for n in names])
        return float(self._combine(values, weights)) if names else 0.0

    def score_one(self, x: Observation, t: float) -> Score:
        scores = self._score_all(x, t)
        merged = _merge_features(scores)
        ttfs = [s.time_to_failure_s for s in scores.values() if s.time_to_failure_s is not None]
        warming = all(s.warming_up for s in scores.values())
        return Score(self._combined(scores), merged, min(ttfs) if ttfs else None, warming)

    def learn_one(self, x: Observation, t: float) -> None:
        for d in self.detectors:
            try:
                d.learn_one(x, t)
            except Exception as exc:  # noqa: BLE001
                self._failed(d.name, exc)
        self._seen += 1

    def assess_one(self, x: Observation, t: float) -> Assessment:
        """Score ``x`` with every detector, then let every detector learn it."""
        scores = self._score_all(x, t)
        self.learn_one(x, t)
        score = self._combined(scores)
        severity = self.severity(score)
        merged = _merge_features(scores)
        ttfs = [s.time_to_failure_s for s in scores.values() if s.time_to_failure_s is not None]
        ttf = min(ttfs) if ttfs else None
        active = {n: s for n, s in scores.items() if not s.warming_up}
        flagging = {n: s.value for n, s in active.items() if s.value >= 0.5}
        if active:
            agree = sum(self.weights[n] for n in active if (n in flagging) == (severity is not None))
            agreement = agree / max(sum(self.weights[n] for n in active), 1e-12)
        else:
            agreement = 0.0
        confidence = min(1.0, self._seen / self.history) * (0.5 + 0.5 * agreement) if active else 0.0
        kind = self._kind(x, merged, flagging) if severity else ""
        explanation = self._explain(score, severity, kind, scores, flagging, merged, ttf)
        return Assessment(score, severity, round(confidence, 4), {n: s.value for n, s in scores.items()},
                          merged, kind, explanation, ttf)

    def _kind(self, x: Observation, merged: Mapping[str, float], flagging: Mapping[str, float]) -> str:
        deviating = {f: z for f, z in merged.items() if abs(z) >= _DEVIATES}
        roles = {feature_role(f) for f in deviating}
        errors_up = any(feature_role(f) == "errors" and z > 0 for f, z in deviating.items())
        gone = any(feature_role(f) in ("success", "traffic") and z < 0 and _value(x, f) <= 0.0
                   for f, z in deviating.items())
        if gone and (errors_up or any(feature_role(f) == "success" for f in deviating)):
            return "down"
        top = max(flagging, key=flagging.get) if flagging else ""
        if top and top.startswith("trend") and len(flagging) == 1:
            return "trend"
        if roles == {"errors"} or roles == {"errors", "success"}:
            return "errors"
        if roles == {"latency"}:
            return "latency"
        if roles == {"traffic"}:
            return "traffic"
        return "mixed"

    def _explain(self, score: float, severity: str | None, kind: str, scores: Mapping[str, Score],
                 flagging: Mapping[str, float], merged: Mapping[str, float], ttf: float | None) -> str:
        if not scores:
            return "no detector could score this observation"
        if all(s.warming_up for s in scores.values()):
            return f"warming up: the detectors are still learning what is normal ({self._seen} rows seen)"
        ranked = sorted(scores.items(), key=lambda kv: -kv[1].value)
        if severity is None:
            name, top = ranked[0]
            return f"normal: combined score {score:.2f}, highest {name} {top.value:.2f}"
        who = ", ".join(f"{n} {s.value:.2f}" for n, s in ranked if n in flagging) or \
            ", ".join(f"{n} {s.value:.2f}" for n, s in ranked[:2])
        what = ", ".join(f"{f} {z:+.1f}σ" for f, z in list(merged.items())[:3] if abs(z) >= 1.0) or "no single feature"
        tail = f"; time to failure about {_duration(ttf)}" if ttf is not None else ""
        return f"{severity} {kind} anomaly (score {score:.2f}): {who} flag {what}{tail}"

    # -- many observations ------------------------------------------------------------------------------
    def score_learn_many(self, X: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Combined scores of every row of ``X`` (columns in ``features`` order), each scored then learned."""
        X = np.asarray(X, dtype=float).reshape(-1, len(self.features))
        t = np.asarray(t, dtype=float) if t is not None else np.zeros(len(X))
        columns = {f: i for i, f in enumerate(self.features)}
        per, weights = [], []
        for d in self.detectors:
            idx = [columns[f] for f in d.features]
            try:
                if hasattr(d, "score_learn_many"):
                    s = np.asarray(d.score_learn_many(X[:, idx], t), dtype=float)
                else:
                    s = np.empty(len(X))
                    for i, row in enumerate(X[:, idx]):
                        obs = dict(zip(d.features, row.tolist()))
                        s[i] = d.score_one(obs, t[i]).value
                        d.learn_one(obs, t[i])
            except Exception as exc:  # noqa: BLE001
                self._failed(d.name, exc)
                continue
            per.append(s)
            weights.append(self.weights[d.name])
        self._seen += len(X)
        if not per:
            return np.zeros(len(X))
        return self._combine(np.column_stack(per), np.array(weights))

    def weighted_only(self) -> Ensemble:
        """The same ensemble without its weight-0 detectors (they cannot move the score: not worth
        their cost where no explanation or time to failure is asked for, as in offline scoring)."""
        kept = [d for d in self.detectors if self.weights[d.name] > 0] or self.detectors[:1]
        return Ensemble(kept, {d.name: self.weights[d.name] for d in kept}, self.thresholds, combine=self.combine,
                        on_error=self.on_error, history=self.history, flag_at=self.flag_at, name=self.name)

    # -- state ------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"detector": "ensemble", "version": _VERSION, "name": self.name, "features": list(self.features),
                "seen": self._seen, "errors": dict(self.errors), "detectors": {d.name: d.state() for d in self.detectors}}

    def restore(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or state.get("detector") != "ensemble" or state.get("version") != _VERSION:
            raise DetectorStateError("not a state of this ensemble version")
        if state.get("features") != list(self.features):
            raise DetectorStateError(f"state for features {state.get('features')!r}, not {list(self.features)!r}")
        inner = state.get("detectors")
        if not isinstance(inner, Mapping) or set(inner) != {d.name for d in self.detectors}:
            raise DetectorStateError(f"state for detectors {sorted(inner or {})!r}, not {[d.name for d in self.detectors]!r}")
        seen, errors = state.get("seen"), state.get("errors")
        if not isinstance(seen, int) or seen < 0 or not isinstance(errors, Mapping):
            raise DetectorStateError("state fields 'seen' / 'errors' are not valid")
        saved = [d.state() for d in self.detectors]  # all or nothing: put back what was there on failure
        try:
            for d in self.detectors:
                d.restore(inner[d.name])
        except Exception as exc:
            for d, old in zip(self.detectors, saved):
                d.restore(old)
            if isinstance(exc, DetectorStateError):
                raise
            raise DetectorStateError(f"cannot restore: {exc!r}") from None
        self._seen = seen
        self.errors = {d.name: int(errors.get(d.name, 0)) for d in self.detectors}


def default_ensemble(features: Sequence[str], **options: Any) -> Ensemble:
    """The standard detector set over ``features`` (e.g. ``latency_p50_ms``, ``latency_p95_ms``,
    ``error_rate``, ``calls_per_s``, ``timeout_rate``): SPC and the isolation forest on all of them,
    river's Half-Space Trees (``online=False`` leaves it out), the trend detector on the
    latency- and error-like ones (all of them when none is; ``trend=False`` leaves it out), with
    ``zscore=True`` the rolling z-score (``zscore_options``: window, limit), and with
    ``forecast=True`` the forecast residuals (``forecast_options``).

    Options: ``weights``, ``thresholds``, ``combine``, ``on_error``, ``history``, ``flag_at`` (see :class:`Ensemble`);
    ``seed``; ``limits`` (feature → failure limit) and ``timeout`` (in the latency features' unit)
    for the trend's time to failure; ``spc``, ``iforest``, ``hst``, ``trend_options``: keyword
    arguments of each detector. Unknown options are an error.
    """
    from only1mcp.models.anomaly.iforest import IsolationForest
    from only1mcp.models.anomaly.online import HalfSpace
    from only1mcp.models.anomaly.spc import SPC
    from only1mcp.models.anomaly.trend import Trend

    known = {"weights", "thresholds", "combine", "on_error", "history", "flag_at", "seed", "limits", "timeout", "online",
             "trend", "spc", "iforest", "hst", "trend_options", "zscore", "zscore_options", "forecast",
             "forecast_options"}
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"default_ensemble got unknown options {sorted(unknown)!r}")
    features = list(features)
    if not features or len(set(features)) != len(features):
        raise ValueError(f"need distinct feature names, got {features!r}")
    seed = int(options.get("seed", 0))
    detectors: list[Detector] = [
        SPC(features, **options.get("spc", {})),
        IsolationForest(features, seed=seed, **options.get("iforest", {})),
    ]
    if options.get("online", True):
        detectors.append(HalfSpace(features, seed=seed, **options.get("hst", {})))
    if options.get("trend", True):
        watched = [f for f in features if feature_role(f) in ("latency", "errors")] or features
        detectors.append(Trend(watched, limits=options.get("limits"), timeout=options.get("timeout"),
                               **options.get("trend_options", {})))
    if options.get("zscore", False):  # the rolling z-score member (the offline set carries it)
        from only1mcp.models.anomaly.zscore import RollingZ

        detectors.append(RollingZ(features, **options.get("zscore_options", {})))
    if options.get("forecast", False):  # forecast residuals (the offline set carries them)
        from only1mcp.models.anomaly.forecast import Forecast

        detectors.append(Forecast(features, **options.get("forecast_options", {})))
    weights = {**DEFAULT_WEIGHTS, **(options.get("weights") or {})}
    return Ensemble(detectors, {d.name: weights.get(d.name, 1.0) for d in detectors},
                    options.get("thresholds", DEFAULT_THRESHOLDS), combine=options.get("combine", "noisy_or"),
                    on_error=options.get("on_error"), history=options.get("history", 60),
                    flag_at=options.get("flag_at", DEFAULT_FLAG_AT))


def _merge_features(scores: Mapping[str, Score]) -> dict[str, float]:
    """Per feature the signed deviation told by the most confident detector, the largest first."""
    best: dict[str, tuple[float, float, float]] = {}  # feature → (detector score, |z|, z)
    for s in scores.values():
        for f, z in s.features.items():
            if math.isfinite(z) and (f not in best or (s.value, abs(z)) > best[f][:2]):
                best[f] = (s.value, abs(z), z)
    return {f: best[f][2] for f in sorted(best, key=lambda f: -best[f][1])}


def _value(x: Observation, feature: str) -> float:
    try:
        return float(x.get(feature, math.nan))
    except (TypeError, ValueError):
        return math.nan


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
