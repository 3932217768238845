"""The life of an anomaly and what to do about it: pure functions over one entity's verdicts.

- **open** when a verdict has a severity (low or higher);
- **update** when the severity changes or the score moves by 0.1 or more from the last record
  published, at most once per ``update_every`` seconds (a change that waits is published later,
  since it is measured against what was published);
- **close** after ``close_after`` seconds in a row without a severity (hysteresis: one quiet
  tick in a bad stretch closes nothing). The close record carries the peak severity.

The remediation policy (replica-level anomalies only: a replica × tool anomaly never takes the
whole replica out, it alerts at most): the action of the highest severity seen in the last
``close_after`` seconds (so a severity that dips for a tick does not restore and re-eject; while
the anomaly is quiet but not closed yet, what holds stays),
critical → ``critical_action``, high → ``high_action`` when the confidence is at least
``high_min_confidence`` else alert, medium / low → their actions (``log`` = no record). An eject or
drain is re-sent every tick while it holds (each valid ``valid_for`` seconds); when it stops
holding — the anomaly closed or calmed down — one ``restore`` follows. An alert goes out once per
severity reached.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field, replace

from only1mcp.events import SEVERITIES, AnomalyEvent, Remediation
from only1mcp.models.anomaly.base import Assessment
from only1mcp.streaming import AnomalySettings
from only1mcp.streams.anomaly_features import Entity

__all__ = ["Track", "step", "anomaly_event", "remediations", "down_verdict", "Confirmation", "RANK"]

RANK = {severity: i for i, severity in enumerate(SEVERITIES)}
_HOLDING = ("eject", "drain")


class Confirmation:
    """One entity's confirmation rule: a severity counts once ``windows`` evidence windows in a row,
    all within ``within_s`` seconds, reached it (the verdict then carries the lowest of them). One slow
    window on a shared host is not an anomaly; a fault lasts. A thin window (too few calls for rates
    and latencies) is no evidence either way: routing starves a slowing replica, and thin windows
    between its slow ones must not reset the streak; the horizon stops two slow windows far apart
    from confirming each other. The hard down rule is not confirmed this way: it must act at once."""

    def __init__(self, windows: int, within_s: float = math.inf) -> None:
        self.windows, self.within_s = max(1, int(windows)), float(within_s)
        self.recent: list[tuple[float, str | None]] = []  # (when, raw severity) of evidence windows, newest last

    def __call__(self, verdict: Assessment | None, now: float) -> Assessment | None:
        raw = verdict.severity if verdict is not None else None
        self.recent = [(t, s) for t, s in self.recent if t >= now - self.within_s][-(self.windows - 1):] \
            if self.windows > 1 else []
        self.recent.append((now, raw))
        if verdict is None or self.windows <= 1 or raw is None:
            return verdict
        severities = [s for _, s in self.recent]
        if len(severities) < self.windows or any(s is None for s in severities):
            return replace(verdict, severity=None)
        floor = min(RANK[s] for s in severities if s is not None)
        return verdict if RANK[raw] == floor else replace(verdict, severity=SEVERITIES[floor])


@dataclass
class Track:
    """One open anomaly of one entity."""

    entity: Entity
    opened_at: float
    last: Assessment  # the newest verdict with a severity
    anomaly_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    peak: str = "low"
    published_at: float = 0.0
    published_score: float = 0.0
    published_severity: str = ""
    quiet: Assessment | None = None  # the newest verdict without one (what a close reports)
    below_since: float | None = None
    seen: dict[str, float] = field(default_factory=dict)  # severity → when it was last seen
    held: str | None = None  # eject | drain in force
    alerted: str | None = None  # the severity an alert was last sent for


def step(track: Track | None, verdict: Assessment | None, entity: Entity, now: float,
         settings: AnomalySettings) -> tuple[Track | None, str | None]:
    """(the entity's track after this verdict, the record state to publish now or None). After a
    ``close`` the caller publishes the returned track's close record, then forgets it."""
    severe = verdict is not None and verdict.severity is not None
    if track is None:
        if not severe:
            return None, None
        track = Track(entity=entity, opened_at=now, last=verdict)  # type: ignore[arg-type]
        _seen(track, verdict, now)  # type: ignore[arg-type]
        return track, "open"
    if not severe:
        track.quiet = verdict
        if track.below_since is None:
            track.below_since = now
        return (track, "close") if now - track.below_since >= settings.close_after else (track, None)
    track.below_since, track.quiet = None, None
    track.last = verdict  # type: ignore[assignment]
    _seen(track, verdict, now)  # type: ignore[arg-type]
    moved = verdict.severity != track.published_severity or abs(verdict.score - track.published_score) >= 0.1
    if moved and now - track.published_at >= settings.update_every:
        return track, "update"
    return track, None


def _seen(track: Track, verdict: Assessment, now: float) -> None:
    track.seen[verdict.severity] = now  # type: ignore[index]
    if RANK[verdict.severity] > RANK[track.peak]:  # type: ignore[index]
        track.peak = verdict.severity  # type: ignore[assignment]


def anomaly_event(track: Track, state: str, now: float, model_version: str) -> AnomalyEvent:
    """The record of ``state`` for ``track``, and note it as published."""
    a = track.quiet if state == "close" and track.quiet is not None else track.last
    server, replica, tool = track.entity
    severity = track.peak if state == "close" else a.severity or track.peak
    explanation = a.explanation
    if state == "close":
        explanation = (f"back to normal for {now - (track.below_since or now):.0f} s after "
                       f"{now - track.opened_at:.0f} s (peak {track.peak}: {track.last.explanation})")
    track.published_at, track.published_score, track.published_severity = now, a.score, severity
    return AnomalyEvent(
        anomaly_id=track.anomaly_id, ts=now, state=state, server=server, replica=replica, tool=tool,
        score=_unit(a.score), severity=severity, confidence=_unit(a.confidence),
        kind=track.last.kind if state == "close" else a.kind,
        detectors={k: _unit(v) for k, v in a.detectors.items()},
        features={k: float(v) for k, v in a.features.items() if v == v},
        explanation=explanation, time_to_failure_s=a.time_to_failure_s, opened_at=track.opened_at,
        model_version=model_version)


def _unit(value: float) -> float:
    return min(1.0, max(0.0, float(value))) if value == value else 0.0


def _action(track: Track, now: float, settings: AnomalySettings) -> str:
    if track.below_since is not None and track.held is not None:
        return track.held  # quiet, but not for close_after yet: the close restores
    recent = [s for s, at in track.seen.items() if now - at < settings.close_after]
    if not recent:
        return "log"
    severity = max(recent, key=RANK.__getitem__)
    if severity == "critical":
        action = settings.critical_action
    elif severity == "high":
        action = settings.high_action if track.last.confidence >= settings.high_min_confidence else "alert"
    else:
        action = settings.medium_action if severity == "medium" else settings.low_action
    if track.entity[2] is not None and action in _HOLDING:
        return "alert"
    return action


def remediations(track: Track, now: float, settings: AnomalySettings, model_version: str,
                 closing: bool = False) -> list[Remediation]:
    """The Remediation records this tick owes for ``track`` (``closing``: its last tick)."""
    action = "log" if closing else _action(track, now, settings)
    out: list[str] = []
    if action in _HOLDING:
        track.held = action
        out.append(action)
    else:
        if track.held is not None:
            out.append("restore")
            track.held = None
        if action == "alert" and track.alerted != track.last.severity:
            track.alerted = track.last.severity
            out.append("alert")
    server, replica, tool = track.entity
    a = track.last
    why = f"tool {tool}: {a.explanation}" if tool else a.explanation  # the record itself names no tool
    return [Remediation(decision_id=uuid.uuid4().hex, ts=now, valid_until=now + settings.valid_for, server=server,
                        replica=replica, action=act, severity=track.peak if act == "restore" else a.severity or "low",
                        confidence=_unit(a.confidence), anomaly_id=track.anomaly_id,
                        reason=("the anomaly closed" if closing else "the anomaly calmed down") if act == "restore"
                        else why, model_version=model_version)
            for act in out]


def down_verdict(failures: int, last_failure: float, now: float, settings: AnomalySettings) -> Assessment | None:
    """The hard rule beside the detectors: ``down_after`` or more calls in a row failed (none has
    succeeded since), the last within the window → critical at once, with full confidence. It
    needs no history, so a sudden crash is acted on at the next tick."""
    if failures < settings.down_after or now - last_failure > settings.window:
        return None
    return Assessment(score=1.0, severity="critical", confidence=1.0, detectors={"down": 1.0},
                      features={"consecutive_failures": float(failures)}, kind="down",
                      explanation=f"the last {failures} calls to it failed and none has succeeded since")
