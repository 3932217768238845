"""A severity counts once it held ``confirm_windows`` windows in a row (the agent's and the replays' rule)."""

from __future__ import annotations

from only1mcp.models.anomaly.base import Assessment
from only1mcp.streams.anomaly_lifecycle import confirmed


def verdict(severity: str | None) -> Assessment:
    return Assessment(score=0.9 if severity else 0.1, severity=severity, confidence=1.0, detectors={}, features={},
                      kind="latency" if severity else "", explanation="")


def test_one_bad_window_is_not_an_anomaly_two_are_at_the_lower_severity() -> None:
    recent: list[str | None] = []
    got = [confirmed(verdict(s), recent, 2) for s in (None, "critical", None, "critical", "high", "high", None)]
    assert [v.severity if v else None for v in got] == [None, None, None, None, "high", "high", None]
    assert got[4].score == 0.9  # only the severity is held back, the score and the rest stay


def test_one_window_confirms_at_once_and_a_missing_verdict_breaks_the_streak() -> None:
    assert confirmed(verdict("critical"), [], 1).severity == "critical"
    recent: list[str | None] = []
    assert confirmed(verdict("medium"), recent, 2).severity is None
    assert confirmed(None, recent, 2) is None
    assert confirmed(verdict("medium"), recent, 2).severity is None
    assert confirmed(verdict("critical"), recent, 2).severity == "medium" and len(recent) == 2
