"""A severity counts once it held ``confirm_windows`` evidence windows in a row, within
``confirm_within`` seconds (the agent's and the replays' rule)."""

from __future__ import annotations

from only1mcp.models.anomaly.base import Assessment
from only1mcp.streams.anomaly_lifecycle import Confirmation


def verdict(severity: str | None) -> Assessment:
    return Assessment(score=0.9 if severity else 0.1, severity=severity, confidence=1.0, detectors={}, features={},
                      kind="latency" if severity else "", explanation="")


def test_one_bad_window_is_not_an_anomaly_two_are_at_the_lower_severity() -> None:
    confirm = Confirmation(2)
    got = [confirm(verdict(s), float(i)) for i, s in enumerate((None, "critical", None, "critical", "high", "high", None))]
    assert [v.severity if v else None for v in got] == [None, None, None, None, "high", "high", None]
    assert got[4].score == 0.9  # only the severity is held back, the score and the rest stay


def test_one_window_confirms_at_once_and_a_missing_verdict_breaks_the_streak() -> None:
    assert Confirmation(1)(verdict("critical"), 0.0).severity == "critical"
    confirm = Confirmation(2)
    assert confirm(verdict("medium"), 0.0).severity is None
    assert confirm(None, 1.0) is None
    assert confirm(verdict("medium"), 2.0).severity is None
    assert confirm(verdict("critical"), 3.0).severity == "medium" and len(confirm.recent) == 2


def test_windows_far_apart_do_not_confirm_each_other() -> None:
    """A starved replica's slow windows 20 s apart confirm (the thin windows between are not passed in);
    two slow windows 2 minutes apart do not."""
    confirm = Confirmation(2, within_s=60.0)
    assert confirm(verdict("critical"), 0.0).severity is None
    assert confirm(verdict("critical"), 20.0).severity == "critical"
    late = Confirmation(2, within_s=60.0)
    assert late(verdict("critical"), 0.0).severity is None
    assert late(verdict("critical"), 120.0).severity is None
    assert late(verdict("critical"), 130.0).severity == "critical"
