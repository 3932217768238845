"""The worker's in-memory state: micro-batches folded with the pure feature functions, cut into
flush plans, and the acknowledgements those plans allow. No I/O and no Faust here.

Why acknowledgements wait for windows to close: the worker keeps window state in memory only,
so after a crash it must rebuild every open window by replaying its events from Kafka. An event
is therefore acknowledged (and its offset committed) only when (1) its raw row is in Parquet and
(2) every window it belongs to has closed and its final row is in Parquet, with the closing
watermark persisted. Replays then rebuild open windows completely, skip closed ones (the
persisted watermark makes those events "late"), and the sinks' dedupe removes the raw rows
written twice. Memory holds the events of the longest window plus the grace period.

Watermark: the worker passes the event-time watermark in (the slowest partition's newest event,
or the wall clock for partitions that are caught up; see streams/agents.py); windows ending at
or before watermark − grace close. Events for windows already closed are *late*: stored raw, not
counted in features (the batch jobs, which see everything, recompute those windows).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from only1mcp.feature_store.compute import (
    ERROR_STATUSES, Partial, entity_ids, feature_row, pane_size_ms, parse_window, window_partial,
)

__all__ = ["FlushPlan", "FeatureFolder"]

_NOW = -(1 << 62)  # release time of records that wait for nothing but the next flush (poison, duplicates)


@dataclass
class FlushPlan:
    """What one flush must make durable, in this order: raw rows, closed window rows, the new
    watermark (``done`` records these stages, so a failed plan resumes where it stopped), then
    the online rows (which wait for the next flush while Redis is away)."""

    seq_cut: int  # records added before the cut (seq < seq_cut) are covered by this plan
    raw: list[Mapping[str, Any]]
    closed: list[dict[str, Any]]
    online: list[dict[str, Any]]
    closed_until_ms: int
    settles: bool = True  # acknowledgements may follow (False: current values were left for later)
    done: set[str] = field(default_factory=set)


class FeatureFolder:
    """Fold records into panes; cut flush plans; say which held tokens (Faust messages) to ack."""

    def __init__(self, windows: Iterable[str], grace_s: float = 5.0, closed_until_ms: int = _NOW,
                 keep_raw: bool = True) -> None:
        self.keep_raw = keep_raw  # False: raw rows are someone else's (the stage that read mcp.requests)
        self.specs = [parse_window(w) for w in windows]
        self.pane_ms = pane_size_ms(self.specs)
        self.grace_ms = int(grace_s * 1000)
        self.closed_until_ms = closed_until_ms
        self.panes: dict[tuple[str, str, int], Partial] = {}
        self.by_pane: dict[int, set[tuple[str, str]]] = {}  # pane start → entities with a partial there
        self.latest_ms: dict[tuple[str, str], int] = {}  # newest event per entity: which window is "now"
        self.dirty: set[tuple[str, str]] = set()
        self.pending_raw: list[Mapping[str, Any]] = []
        self.held: list[tuple[int, int, Any]] = []  # heap of (release ms, seq, token)
        self.seen: dict[str, int] = {}  # event_id → release ms, while the event is held
        self.seq = 0
        self._release_by_pane: dict[int, int] = {}
        self.counts = {"events": 0, "late": 0, "duplicates": 0, "poison": 0}

    def release_ms(self, t_ms: int) -> int:
        """When an event at ``t_ms`` stops mattering: the latest end of a window holding it."""
        pane = t_ms - t_ms % self.pane_ms  # every instant of a pane is in the same windows
        release = self._release_by_pane.get(pane)
        if release is None:
            if len(self._release_by_pane) > 100_000:
                self._release_by_pane.clear()
            release = self._release_by_pane[pane] = max(spec.starts_ms(pane)[-1] + spec.size_ms
                                                        for spec in self.specs)
        return release

    def _hold(self, release: int, token: Any) -> None:
        heapq.heappush(self.held, (release, self.seq, token))
        self.seq += 1

    def hold(self, release: int, token: Any) -> None:
        """Hold ``token`` until windows ending at ``release`` are closed and written (a record that
        carried many events: the latest release among them; ``add`` was given no token)."""
        self._hold(release, token)

    def add_poison(self, token: Any) -> None:
        """A record that went to the dead-letter topic: ack it after the next flush."""
        self.counts["poison"] += 1
        self._hold(_NOW, token)

    def add(self, record: Mapping[str, Any], token: Any = None,
            entities: Iterable[tuple[str, str]] | None = None) -> str:
        """Fold one event (a RequestEvent as a dict) into ``entities`` (default: every entity it
        counts for); returns "ok", "late" or "duplicate"."""
        event_id = record["event_id"]
        if event_id in self.seen:  # a producer retry or a replay within this run: counted once
            self.counts["duplicates"] += 1
            self._hold(_NOW, token)
            return "duplicate"
        t_ms = math.floor(record["ts"] * 1000)
        release = self.release_ms(t_ms)
        self.seen[event_id] = release
        if self.keep_raw:
            self.pending_raw.append(record)
        self._hold(release, (event_id, token))
        self.counts["events"] += 1
        if release <= self.closed_until_ms:
            self.counts["late"] += 1
            return "late"
        pane = t_ms - t_ms % self.pane_ms
        latency, error = float(record["latency_ms"]), record["status"] in ERROR_STATUSES
        request_bytes, response_bytes = record.get("request_bytes") or 0, record.get("response_bytes") or 0
        for entity in (entity_ids(record) if entities is None else entities):
            key = (*entity, pane)
            partial = self.panes.get(key)
            if partial is None:
                partial = self.panes[key] = Partial(pane)
                self.by_pane.setdefault(pane, set()).add(entity)
            partial.add(t_ms, latency, error, request_bytes, response_bytes)
            if t_ms > self.latest_ms.get(entity, _NOW):
                self.latest_ms[entity] = t_ms
            self.dirty.add(entity)
        return "ok"

    def _closed_rows(self, old: int, new: int) -> list[dict[str, Any]]:
        """Rows of the windows ending in (old, new]. Window ends are multiples of the step, so only
        those few windows are looked at, and only the entities with a pane inside them."""
        if not self.by_pane:
            return []
        first_pane, last_pane = min(self.by_pane), max(self.by_pane)
        rows = []
        for spec in self.specs:
            step, size = spec.step_ms, spec.size_ms
            lo = max(old, first_pane)  # no window ending at or before the first pane holds anything
            hi = min(new, last_pane - last_pane % step + size)  # nor one starting after the last
            for end in range(lo - lo % step + step, hi + 1, step):
                start = end - size
                entities: set[tuple[str, str]] = set()
                for pane in range(start, end, self.pane_ms):
                    entities |= self.by_pane.get(pane, set())
                for entity_type, entity_id in entities:
                    partial = window_partial(self.panes, entity_type, entity_id, spec, start, self.pane_ms)
                    if partial is not None:
                        rows.append(feature_row(entity_type, entity_id, spec, start, partial))
        return rows

    def _online_rows(self) -> list[dict[str, Any]]:
        """Per dirty entity and window spec: the window holding its newest event that reaches back
        furthest (for hopping windows, the one covering the most recent history)."""
        rows = []
        for entity_type, entity_id in self.dirty:
            t_ms = self.latest_ms.get((entity_type, entity_id))
            if t_ms is None:
                continue
            for spec in self.specs:
                start = spec.starts_ms(t_ms)[0]
                partial = window_partial(self.panes, entity_type, entity_id, spec, start, self.pane_ms)
                if partial is not None:
                    rows.append(feature_row(entity_type, entity_id, spec, start, partial))
        return rows

    def take_online(self) -> list[dict[str, Any]]:
        """Current rows of the entities changed since the last cut or take (for Redis, between cuts)."""
        rows = self._online_rows()
        self.dirty = set()
        return rows

    def cut(self, watermark_ms: int | None, online: bool = True) -> FlushPlan:
        """Close the windows the watermark allows and take everything the next flush must write.
        ``online=False`` leaves the current values for a later cut: the entities stay dirty, their
        panes stay (the values still need them), and the plan settles nothing (``settles``), so
        no event is acknowledged before its contribution to Redis is written."""
        old = self.closed_until_ms
        new = old if watermark_ms is None else max(old, watermark_ms - self.grace_ms)
        closed = self._closed_rows(old, new) if new > old else []
        rows = self.take_online() if online else []
        if online:  # drop panes (and entities) no open window needs any more
            dropped = [p for p in self.by_pane if self.release_ms(p) <= new]
            for pane in dropped:
                for entity in self.by_pane.pop(pane):
                    del self.panes[(*entity, pane)]
                    t_ms = self.latest_ms.get(entity)
                    if t_ms is not None and self.release_ms(t_ms) <= new:
                        del self.latest_ms[entity]
        self.closed_until_ms = new
        plan = FlushPlan(self.seq, self.pending_raw, closed, rows, new, settles=online)
        self.pending_raw = []
        return plan

    def release(self, plan: FlushPlan) -> list[Any]:
        """Tokens (Faust messages) whose every effect is now durable, after ``plan`` fully succeeded."""
        out: list[Any] = []
        if not plan.settles:
            return out
        while self.held and self.held[0][0] <= plan.closed_until_ms and self.held[0][1] < plan.seq_cut:
            _, _, token = heapq.heappop(self.held)
            if isinstance(token, tuple):  # (event_id, token) of a folded event
                event_id, token = token
                self.seen.pop(event_id, None)
            if token is not None:  # None: the event came in a record held on its own (``hold``)
                out.append(token)
        return out
