"""The retry budget lets retries add only a share of the calls, plus a floor, decaying over time."""

from __future__ import annotations

from only1mcp.proxy.retry import RetryBudget
from only1mcp.traffic import RetrySettings


def test_retries_are_capped_by_the_ratio_of_calls() -> None:
    budget = RetryBudget(RetrySettings(budget_ratio=0.2, min_per_second=0.0))
    for i in range(100):
        budget.deposit(now=i * 0.001)
    allowed = sum(budget.try_withdraw(now=0.1) for _ in range(100))
    assert 18 <= allowed <= 20 and budget.refused == 100 - allowed


def test_the_floor_allows_retries_with_little_traffic() -> None:
    budget = RetryBudget(RetrySettings(budget_ratio=0.0, min_per_second=1.0))
    assert budget.try_withdraw(now=0.0)


def test_no_floor_and_no_calls_means_no_retries() -> None:
    budget = RetryBudget(RetrySettings(budget_ratio=0.5, min_per_second=0.0))
    assert not budget.try_withdraw(now=0.0)


def test_old_deposits_decay() -> None:
    budget = RetryBudget(RetrySettings(budget_ratio=1.0, min_per_second=0.0), window=10.0)
    for _ in range(10):
        budget.deposit(now=0.0)
    assert not any(budget.try_withdraw(now=100.0) for _ in range(1))
