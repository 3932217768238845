"""The one contract every anomaly detector and the ensemble keep (``models.anomaly.base.Detector``).

Each case runs over SPC, the isolation forest, Half-Space Trees, the trend detector, the rolling
z-score, the forecast residuals and the ensembles, with small settings so the whole file stays fast; seeds are fixed.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from only1mcp.models.anomaly import DetectorStateError, Score, default_ensemble
from only1mcp.models.anomaly.base import BatchDetector, Detector
from only1mcp.models.anomaly.forecast import Forecast
from only1mcp.models.anomaly.iforest import IsolationForest
from only1mcp.models.anomaly.online import HalfSpace
from only1mcp.models.anomaly.spc import SPC
from only1mcp.models.anomaly.trend import Trend
from only1mcp.models.anomaly.zscore import RollingZ

FEATURES = ("a", "b")
SMALL = {
    "spc": {"warmup": 20, "accept_after": 30},
    "iforest": {"window": 128, "first_fit": 32, "refit_every": 64, "n_estimators": 10, "max_samples": 64},
    "hst": {"warmup": 20, "window_size": 30, "n_trees": 5, "height": 6, "memory": 100},
    "trend": {"window": 16},
    "zscore": {"window": 30},
    "forecast": {"warmup": 20, "history": 64, "max_period": 16, "detect_every": 32},
}
FACTORIES: dict[str, Callable[[], Any]] = {
    "spc": lambda: SPC(FEATURES, **SMALL["spc"]),
    "iforest": lambda: IsolationForest(FEATURES, **SMALL["iforest"]),
    "hst": lambda: HalfSpace(FEATURES, **SMALL["hst"]),
    "trend": lambda: Trend(FEATURES, **SMALL["trend"]),
    "zscore": lambda: RollingZ(FEATURES, **SMALL["zscore"]),
    "forecast": lambda: Forecast(FEATURES, **SMALL["forecast"]),
    "ensemble": lambda: default_ensemble(FEATURES, spc=SMALL["spc"], iforest=SMALL["iforest"], hst=SMALL["hst"],
                                         trend_options=SMALL["trend"]),
    "ensemble+zscore": lambda: default_ensemble(FEATURES, spc=SMALL["spc"], iforest=SMALL["iforest"], hst=SMALL["hst"],
                                                trend_options=SMALL["trend"], zscore=True,
                                                zscore_options=SMALL["zscore"]),
    "ensemble+offline": lambda: default_ensemble(FEATURES, spc=SMALL["spc"], iforest=SMALL["iforest"], online=False,
                                                 trend_options=SMALL["trend"], zscore=True, forecast=True,
                                                 zscore_options=SMALL["zscore"], forecast_options=SMALL["forecast"]),
}
NAMES = list(FACTORIES)


def series(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(100.0, 5.0, n), rng.normal(0.2, 0.01, n)])
    t = 1.7e9 + np.cumsum(rng.uniform(0.5, 1.5, n))
    return X, t


def obs(row: np.ndarray) -> dict[str, float]:
    return dict(zip(FEATURES, map(float, row)))


def loop(detector: Any, X: np.ndarray, t: np.ndarray) -> np.ndarray:
    """score_one then learn_one, row by row: the reference every other path must equal."""
    out = np.empty(len(X))
    for i, row in enumerate(X):
        score = detector.score_one(obs(row), float(t[i]))
        assert isinstance(score, Score)
        out[i] = score.value
        detector.learn_one(obs(row), float(t[i]))
    return out


@pytest.fixture(params=NAMES)
def make(request: pytest.FixtureRequest) -> Callable[[], Any]:
    return FACTORIES[request.param]


def test_implements_the_interface(make: Callable[[], Any]) -> None:
    detector = make()
    assert isinstance(detector, Detector) and isinstance(detector, BatchDetector)
    assert isinstance(detector.name, str) and tuple(detector.features) == FEATURES
    first = detector.score_one({}, 0.0)
    assert first.warming_up and first.value == 0.0  # nothing learned yet: warming up, and says so


def test_scores_are_in_the_unit_interval(make: Callable[[], Any]) -> None:
    X, t = series()
    X[150, 0] = 1e4  # a spike far out
    X[160:170, 1] = np.nan
    scores = loop(make(), X, t)
    assert np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()


def test_scoring_does_not_learn(make: Callable[[], Any]) -> None:
    X, t = series(200)
    detector = make()
    loop(detector, X[:150], t[:150])
    before = json.dumps(detector.state(), sort_keys=True)
    first = detector.score_one(obs(X[150]), float(t[150]))
    for _ in range(3):
        assert detector.score_one(obs(X[150]), float(t[150])) == first
    assert json.dumps(detector.state(), sort_keys=True) == before


def test_causal_a_row_never_depends_on_later_rows(make: Callable[[], Any]) -> None:
    X, t = series()
    changed = X.copy()
    changed[200:] = changed[200:] * 3 + 50  # a very different future
    assert np.array_equal(loop(make(), X, t)[:200], loop(make(), changed, t)[:200])


def test_batch_path_equals_the_loop(make: Callable[[], Any]) -> None:
    X, t = series(400)
    X[100, 0], X[250:, 1] = 500.0, 0.5  # a spike and a shift, so flags and refits happen
    X[50:53, 0] = np.nan
    reference = loop(make(), X, t)
    batched = make()
    # in uneven pieces: a chunk boundary must not matter either
    pieces = [batched.score_learn_many(X[a:b], t[a:b]) for a, b in ((0, 7), (7, 130), (130, 131), (131, 400))]
    assert np.array_equal(np.concatenate(pieces), reference)


def test_nan_and_missing_keys(make: Callable[[], Any]) -> None:
    X, t = series(200)
    detector = make()
    for i, row in enumerate(X):
        x = obs(row)
        if i % 7 == 0:
            x["a"] = math.nan
        if i % 11 == 0:
            del x["b"]
        if i % 13 == 0:
            x = {}
        score = detector.score_one(x, float(t[i]))
        assert 0.0 <= score.value <= 1.0 and all(math.isfinite(v) for v in score.features.values())
        detector.learn_one(x, float(t[i]))


@pytest.mark.parametrize("level", [0.0, 5.0, -3e7])
def test_constant_series_gives_no_alarm(make: Callable[[], Any], level: float) -> None:
    X = np.full((300, 2), level)
    t = np.arange(300.0)
    with np.errstate(all="raise"):  # no division by zero, no overflow anywhere
        scores = loop(make(), X, t)
    assert scores.max() < 0.5


def test_gaps_in_time_change_nothing_but_time(make: Callable[[], Any]) -> None:
    X, t = series()
    gapped = t.copy()
    gapped[100:] += 30 * 86_400  # a month without data
    gapped[200:] += 7.0
    assert np.array_equal(loop(make(), X, t), loop(make(), X, gapped))


@pytest.mark.parametrize("factor", [1e-6, 1e9])
def test_scale_invariance(make: Callable[[], Any], factor: float) -> None:
    X, t = series()
    X[220:, 0] += 60.0  # a shift: there must be alarms to compare
    X[120, 1] += 0.2
    base, scaled = loop(make(), X, t), loop(make(), X * factor, t)
    assert ((base >= 0.5) == (scaled >= 0.5)).all()
    assert np.allclose(base, scaled, atol=1e-6)
    assert (base >= 0.5).any()


def test_level_shift_is_detected(make: Callable[[], Any], request: pytest.FixtureRequest) -> None:
    X, t = series()
    if "trend" in request.node.callspec.id:  # the trend detector answers slopes; a step is SPC's (damped by design)
        X[200:, 0] += np.arange(100) * 2.0  # a ramp of 2 sigma... per 5 rows
    else:
        X[200:, 0] += 60.0  # 12 sigma
    scores = loop(make(), X, t)
    assert scores[200:240].max() >= 0.5
    if request.node.callspec.id == "zscore":  # flags the step as it happens; the shifted values then widen its window
        assert scores[200] > 0.9 and scores[60:200].max() < 0.5
        return
    assert scores[200:240].mean() > 2 * scores[60:200].mean() + 0.05  # well above its usual level


def test_state_is_json_and_restore_continues_identically(make: Callable[[], Any]) -> None:
    X, t = series(400)
    X[300:, 0] += 40.0
    detector = make()
    loop(detector, X[:250], t[:250])
    saved = json.loads(json.dumps(detector.state(), allow_nan=False))
    twin = make()
    twin.restore(saved)
    assert np.array_equal(loop(detector, X[250:], t[250:]), loop(twin, X[250:], t[250:]))


def _corruptions(state: dict[str, Any], other: dict[str, Any]) -> list[Any]:
    out: list[Any] = ["not a state", None, [1, 2], other]
    newer = copy.deepcopy(state)
    newer["version"] = 999
    out.append(newer)
    for key in [k for k in state if k not in ("detector", "version", "name")][:6]:
        missing = copy.deepcopy(state)
        del missing[key]
        out.append(missing)
        garbled = copy.deepcopy(state)
        garbled[key] = "garbage" if not isinstance(state[key], str) else 12345
        out.append(garbled)
    return out


def test_corrupt_or_foreign_state_raises_and_changes_nothing(make: Callable[[], Any]) -> None:
    X, t = series(300)
    detector, twin = make(), make()
    loop(detector, X[:200], t[:200])
    loop(twin, X[:200], t[:200])
    foreign = FACTORIES["trend" if type(detector).__name__ != "Trend" else "spc"]()
    before = json.dumps(detector.state(), sort_keys=True)
    for bad in _corruptions(detector.state(), foreign.state()):
        with pytest.raises(DetectorStateError):
            detector.restore(bad)
        assert json.dumps(detector.state(), sort_keys=True) == before
    assert np.array_equal(loop(detector, X[200:], t[200:]), loop(twin, X[200:], t[200:]))
