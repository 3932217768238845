"""The gate's evidence: a one-sided bound on the per-call loss difference, robust to calls that
share a burst (batch means over time blocks)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from only1mcp.models.latency.metrics import paired_upper, pinball, quantile_metrics, row_losses


def test_row_losses_average_to_the_metrics() -> None:
    rng = np.random.default_rng(1)
    y, p50 = rng.lognormal(3, 0.5, 500), rng.lognormal(3, 0.5, 500)
    p95 = p50 * 2
    losses, metrics = row_losses(y, p50, p95), quantile_metrics(y, p50, p95)
    assert losses["mae_p50"].mean() == pytest.approx(metrics["mae_p50"])
    assert losses["pinball_95"].mean() == pytest.approx(pinball(y, p95, 0.95))


def test_a_clear_win_is_bounded_below_zero() -> None:
    rng = np.random.default_rng(2)
    rival = rng.exponential(10.0, 1000)
    mean, upper = paired_upper(rival * 0.8, rival)  # 20 % lower on every call
    assert mean < upper < 0


def test_a_win_made_by_bursts_is_not_clear_while_a_naive_bound_would_take_it() -> None:
    # Zero-mean differences that persist over stretches of 50 calls (a queue, a burst; shorter than
    # a block): the candidate is no better, yet a naive iid standard error would often call it better.
    naive_wins = batch_wins = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        d = np.repeat(rng.normal(0.0, 1.0, 20), 50) + rng.normal(0.0, 0.1, 1000)
        mean, upper = paired_upper(d, np.zeros_like(d))
        batch_wins += upper < 0
        naive_wins += mean + 1.645 * d.std(ddof=1) / math.sqrt(len(d)) < 0
    assert batch_wins <= 0.1 * 200 < naive_wins, (batch_wins, naive_wins)


def test_too_few_calls_give_no_bound() -> None:
    assert paired_upper(np.ones(9), np.zeros(9)) == (1.0, math.inf)
    assert paired_upper(np.array([]), np.array([])) == (0.0, math.inf)
