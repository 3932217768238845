"""What is specific to each detector and to the ensemble (the shared contract: test_detectors_contract.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from only1mcp.models.anomaly import Ensemble, default_ensemble
from only1mcp.models.anomaly.base import Score
from only1mcp.models.anomaly.iforest import IsolationForest
from only1mcp.models.anomaly.spc import SPC
from only1mcp.models.anomaly.trend import Trend

# 30 warm-up values with median 0 and MAD 1 / 1.4826, so sigma is exactly 1 and z = x
_WARM = np.array([-3, -2.5, -2, -1.5, -1.2, -1, -0.9, -0.8, -0.7, -0.6, -0.5, -0.4, -0.3, -0.2, -0.1,
                  0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.2, 1.5, 2, 2.5, 3], dtype=float)


def _spc_after_warmup() -> SPC:
    spc = SPC(["v"], warmup=len(_WARM))
    spc.score_learn_many((_WARM / 1.4826 / np.median(np.abs(_WARM)))[:, None], np.arange(len(_WARM)))
    return spc


def test_spc_robust_z_is_in_baseline_sigmas() -> None:
    spc = _spc_after_warmup()
    assert spc.score_one({"v": 3.0}, 0).features["v"] == pytest.approx(3.0, rel=1e-6)
    assert spc.score_one({"v": -1.0}, 0).features["v"] == pytest.approx(-1.0, rel=1e-6)


def test_spc_western_electric_two_of_three_beyond_two_sigma() -> None:
    alone = _spc_after_warmup()
    assert alone.score_one({"v": 2.5}, 0).value < 0.2  # one point at 2.5 sigma: nothing much
    spc = _spc_after_warmup()
    spc.learn_one({"v": 2.5}, 0)
    assert spc.score_one({"v": 2.5}, 1).value == pytest.approx(0.4)  # the 2-of-3 rule's score
    other_side = _spc_after_warmup()
    other_side.learn_one({"v": -2.5}, 0)
    assert other_side.score_one({"v": 2.5}, 1).value < 0.2  # the rule counts one side only


def test_spc_western_electric_eight_on_one_side() -> None:
    spc = _spc_after_warmup()
    for i in range(7):
        spc.learn_one({"v": 0.4}, i)
    assert spc.score_one({"v": 0.4}, 8).value == pytest.approx(0.3)  # eighth in a row above the centre
    assert spc.score_one({"v": -0.4}, 8).value < 0.3


def test_spc_level_shift_flagged_then_accepted_and_return_is_not_an_alarm() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(10.0, 1.0, 900)
    x[300:600] += 8.0
    spc = SPC(["v"], warmup=30, accept_after=60)
    s = spc.score_learn_many(x[:, None], np.arange(900.0))
    assert (s[300:310] >= 0.5).all()  # flagged at once
    assert (s[300:360] >= 0.5).mean() > 0.9  # while it is new
    assert (s[400:600] >= 0.5).mean() < 0.05  # then the new normal
    assert (s[600:660] >= 0.5).mean() < 0.1  # back to the settled normal: no second alarm


def test_spc_spike_does_not_move_the_baseline() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 1.0, 400)
    with_spike = x.copy()
    with_spike[200] = 1e6
    a, b = SPC(["v"]), SPC(["v"])
    sa, sb = a.score_learn_many(x[:, None], np.arange(400.0)), b.score_learn_many(with_spike[:, None], np.arange(400.0))
    assert sb[200] > 0.99
    assert (sb[215:] >= 0.5).sum() == (sa[215:] >= 0.5).sum()  # the charts forget within a few rows


def test_spc_zero_width_baseline_gives_finite_z() -> None:
    spc = SPC(["error_rate"], warmup=10)
    for i in range(10):
        spc.learn_one({"error_rate": 0.0}, i)
    score = spc.score_one({"error_rate": 0.3}, 10)
    assert score.value > 0.99 and math.isfinite(score.features["error_rate"])
    level = SPC(["v"], warmup=10)
    for i in range(10):
        level.learn_one({"v": 100.0}, i)
    # a constant 100: sigma floors at 0.1 % of the level, so 100.1 is one sigma
    assert level.score_one({"v": 100.1}, 10).features["v"] == pytest.approx(1.0)


def _ramp(n: int = 200, start: int = 100, per_row: float = 1.0, noise: float = 1.0, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 100.0 + rng.normal(0.0, noise, n)
    x[start:] += per_row * np.arange(n - start)
    return x


def test_trend_time_to_failure_estimate() -> None:
    x = _ramp()
    t = 10.0 * np.arange(len(x))  # every 10 s
    trend = Trend(["latency_p95_ms"], window=32, timeout=500.0)
    _, _, ttf = trend.score_learn_many_full(x[:, None], t)
    i = 180  # 80 rows into a ramp of +1 ms a row: the line is at about 180 ms, 320 rows (3200 s) from 500
    assert ttf[i] == pytest.approx((500.0 - (100.0 + (i - 100))) * 10.0, rel=0.15)
    assert math.isnan(ttf[50])  # no trend, no estimate


def test_trend_latency_limit_defaults_to_a_multiple_of_its_baseline() -> None:
    x = _ramp()
    trend = Trend(["latency_ms"], window=32, latency_factor=3.0)
    _, _, ttf = trend.score_learn_many_full(x[:, None], np.arange(len(x), dtype=float))
    assert ttf[180] == pytest.approx(300.0 - 180.0, rel=0.15)  # limit 3 × 100 ms, one row a second


def test_trend_error_rate_limit_is_one() -> None:
    rng = np.random.default_rng(6)
    x = np.clip(0.01 + rng.normal(0, 0.002, 200), 0, 1)
    x[100:] += 0.004 * np.arange(100)
    trend = Trend(["error_rate"], window=32)
    score, _, ttf = trend.score_learn_many_full(x[:, None], np.arange(200.0))
    assert score[150:].max() >= 0.5
    assert ttf[190] == pytest.approx((1.0 - x[185:195].mean()) / 0.004, rel=0.2)


def test_trend_ignores_noise_and_a_spike_that_recovers() -> None:
    rng = np.random.default_rng(7)
    x = 100.0 + rng.normal(0.0, 5.0, 2000)
    x[1000:1003] += 200.0  # a spike of 3 rows
    score = Trend(["latency_ms"], window=32).score_learn_many(x[:, None], np.arange(2000.0))
    assert score.max() < 0.5


def test_trend_only_upward_for_latency_both_ways_for_unknown_features() -> None:
    x = _ramp(per_row=-1.0)
    down_latency = Trend(["latency_ms"], window=32).score_learn_many(x[:, None], np.arange(200.0))
    down_generic = Trend(["value"], window=32).score_learn_many(x[:, None], np.arange(200.0))
    assert down_latency.max() < 0.1 and down_generic[150:].max() >= 0.5


def test_iforest_warms_up_then_refits_on_schedule() -> None:
    rng = np.random.default_rng(8)
    forest = IsolationForest(["v"], window=100, first_fit=40, refit_every=50, n_estimators=10, max_samples=32)
    x = rng.normal(0, 1, 200)
    assert forest.score_one({"v": 0.0}, 0).warming_up
    forest.score_learn_many(x[:39, None], np.arange(39.0))
    assert forest.score_one({"v": 0.0}, 0).warming_up and forest._fits == 0
    forest.learn_one({"v": 0.1}, 39)
    assert not forest.score_one({"v": 0.0}, 40).warming_up and forest._fits == 1
    model = forest._model
    forest.score_learn_many(x[40:89, None] + 5.0, np.arange(49.0))  # 89 rows: no refit yet
    assert forest._fits == 1 and forest._model is model
    forest.learn_one({"v": 5.0}, 90)  # the 90th row: refit on the last 100 rows
    assert forest._fits == 2 and forest._model is not model
    assert np.array_equal(forest._train[:, 0], np.concatenate([x[:39], [0.1], x[40:89] + 5.0, [5.0]])[-100:])


class _Broken:
    name = "broken"
    features = ("v",)

    def score_one(self, x, t):  # noqa: ANN001, ANN201
        raise RuntimeError("boom")

    def learn_one(self, x, t):  # noqa: ANN001, ANN201
        raise RuntimeError("boom")

    def state(self):  # noqa: ANN201
        return {}

    def restore(self, state):  # noqa: ANN001, ANN201
        return None


def test_ensemble_skips_and_counts_a_failing_detector() -> None:
    seen: list[tuple[str, str]] = []
    ensemble = Ensemble([SPC(["v"], warmup=10), _Broken()], on_error=lambda name, exc: seen.append((name, str(exc))))
    for i in range(30):
        assessment = ensemble.assess_one({"v": float(i % 3)}, float(i))
    assessment = ensemble.assess_one({"v": 500.0}, 31.0)
    assert assessment.severity is not None and assessment.detectors.keys() == {"spc"}
    assert ensemble.errors == {"spc": 0, "broken": 62} and len(seen) == 62
    scores = ensemble.score_learn_many(np.ones((5, 1)), np.arange(5.0))
    assert scores.shape == (5,) and ensemble.errors["broken"] == 63


def test_ensemble_default_error_policy_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    ensemble = Ensemble([SPC(["v"], warmup=10), _Broken()])
    for i in range(5):
        ensemble.assess_one({"v": 1.0}, float(i))
    assert ensemble.errors["broken"] == 10
    assert sum("broken" in r.getMessage() for r in caplog.records) == 1


def _fleet(n: int = 400, seed: int = 9) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    features = ["latency_p50_ms", "latency_p95_ms", "error_rate", "calls_per_s", "timeout_rate"]
    X = np.column_stack([rng.normal(50, 3, n), rng.normal(120, 8, n), np.clip(rng.normal(0.01, 0.004, n), 0, 1),
                         rng.normal(20, 2, n), np.zeros(n)])
    return features, X


def _assess(ensemble: Ensemble, features: list[str], X: np.ndarray) -> list:
    return [ensemble.assess_one(dict(zip(features, map(float, row))), float(i)) for i, row in enumerate(X)]


def test_assessment_latency_kind_severity_and_explanation() -> None:
    features, X = _fleet()
    X[300:, 1] += 80.0  # p95 latency up by 10 sigma
    out = _assess(default_ensemble(features), features, X)
    normal = out[250]
    assert normal.severity is None and normal.kind == "" and normal.explanation.startswith("normal")
    assert all(a.severity is None for a in out[100:300])
    hit = next(a for a in out[300:305] if a.severity)  # within a few rows (the charts accumulate)
    assert any(a.severity in ("high", "critical") for a in out[300:310])
    assert hit.kind == "latency"
    assert next(iter(hit.features)) == "latency_p95_ms" and hit.features["latency_p95_ms"] > 5
    assert "latency_p95_ms" in hit.explanation and "spc" in hit.explanation
    assert 0.0 < hit.confidence <= 1.0 and out[5].confidence < hit.confidence
    assert set(hit.detectors) == {"spc", "iforest", "hst", "trend"}


def test_assessment_kinds_errors_and_down() -> None:
    features, X = _fleet()
    errors = X.copy()
    errors[300:, 2] = 0.3
    assert _assess(default_ensemble(features), features, errors)[301].kind == "errors"
    down = X.copy()
    down[300:, 2], down[300:, 3] = 1.0, 0.0  # everything fails, nothing is served
    assert _assess(default_ensemble(features), features, down)[301].kind == "down"


def test_assessment_trend_kind_with_time_to_failure() -> None:
    features = ["latency_p95_ms"]
    x = _ramp(n=400, start=200, per_row=0.6, noise=1.0)
    out = _assess(default_ensemble(features, timeout=1000.0, weights={"trend": 1.0}), features, x[:, None])
    flagged = [a for a in out[200:] if a.severity and a.time_to_failure_s is not None]
    assert flagged and any(a.kind == "trend" for a in out[200:] if a.severity)
    assert "time to failure" in flagged[0].explanation


def test_default_ensemble_rejects_unknown_options_and_duplicates() -> None:
    with pytest.raises(TypeError):
        default_ensemble(["a"], windw=3)
    with pytest.raises(ValueError):
        default_ensemble(["a", "a"])
    small = default_ensemble(["a"], online=False, trend=False)
    assert [d.name for d in small.detectors] == ["spc", "iforest"]


def test_severity_thresholds() -> None:
    ensemble = Ensemble([SPC(["v"])], thresholds=(0.5, 0.6, 0.7, 0.8))
    assert [ensemble.severity(s) for s in (0.1, 0.5, 0.65, 0.75, 0.9)] == [None, "low", "medium", "high", "critical"]
    with pytest.raises(ValueError):
        Ensemble([SPC(["v"])], thresholds=(0.9, 0.5, 0.6, 0.7))
    assert isinstance(Ensemble([SPC(["v"])]).score_one({"v": 1.0}, 0.0), Score)


def test_spc_min_scale_keeps_one_failed_call_from_a_zero_baseline_ordinary() -> None:
    """A healthy replica's error rate is 0 for minutes: without a floor one failed call in five is a
    million-sigma event; with the caller's floor (0.05) it is 4 sigma, and a sustained 40 % is flagged."""
    quiet = [{"error_rate": 0.0}] * 60
    bare, floored = SPC(["error_rate"]), SPC(["error_rate"], min_scale={"error_rate": 0.05})
    for i, x in enumerate(quiet):
        bare.learn_one(x, float(i))
        floored.learn_one(x, float(i))
    blip = {"error_rate": 0.2}
    assert bare.score_one(blip, 60.0).value > 0.99
    assert floored.score_one(blip, 60.0).value <= 0.5
    scores = []
    for i in range(10):
        x = {"error_rate": 0.4}
        scores.append(floored.score_one(x, 61.0 + i).value)
        floored.learn_one(x, 61.0 + i)
    assert max(scores) > 0.9
    with pytest.raises(ValueError, match="min_scale"):
        SPC(["error_rate"], min_scale={"latency": 1.0})
