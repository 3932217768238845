"""The worker's second stage: fold ``mcp.feature-events`` (events re-keyed by entity, see
streams/repartition.py), one folder per owned partition. No I/O here: the worker
(streams/agents.py) writes the plans this stage cuts.

A partition's state is its folder (open windows, held records) and the watermark up to which its
windows are closed and written (persisted per partition by the sinks). When the partition moves
to another worker, the folder is dropped here and rebuilt there from the partition's committed
offset: a record is acknowledged only once every window it holds an event of is closed and
written, so the replay holds every event of every open window, and events of windows already
closed are late (the persisted watermark), not counted twice. A rebuilt folder must see the
partition in offset order from the committed offset: a record fetched before the rebalance and
folded first would bring marks from ahead of the replay, and the windows they close would miss the
events the replay still holds (the worker skips such records: streams/kafka.py, current_messages).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from only1mcp.streams.folding import FeatureFolder, FlushPlan
from only1mcp.streams.repartition import decode_slice, entities_of, event_record

__all__ = ["EntityStage"]

_NOW = -(1 << 62)


class EntityStage:
    """Folders by partition of ``mcp.feature-events``, and each partition's view of the sources'
    watermarks."""

    def __init__(self, windows: Iterable[str], grace_s: float, closed_until: Callable[[int], int]) -> None:
        self.windows, self.grace_s = list(windows), grace_s
        self.closed_until = closed_until  # partition → persisted watermark (ms), or a very old one
        self.folders: dict[int, FeatureFolder] = {}
        self.marks: dict[int, dict[int, int]] = {}  # target partition → source partition → mark (ms)
        self.retry_plans: dict[int, FlushPlan] = {}  # cut, not yet written
        self.sources: int | None = None  # partitions of mcp.requests: every one must report a mark
        self.dropped_counts = {"events": 0, "late": 0, "duplicates": 0, "poison": 0}

    def folder(self, partition: int) -> FeatureFolder:
        folder = self.folders.get(partition)
        if folder is None:
            folder = self.folders[partition] = FeatureFolder(self.windows, self.grace_s,
                                                             self.closed_until(partition), keep_raw=False)
        return folder

    def add(self, message: Any) -> list[dict[str, Any]]:
        """Fold one slice (raises SliceDecodeError, having folded nothing, when it is not one);
        returns its session-route events that were not duplicates (the prefetch agent's input)."""
        piece = decode_slice(message.value)
        records = [(row[0], event_record(row)) for row in piece.rows]  # every row checked before any is folded
        folder = self.folder(message.partition)
        release = _NOW
        sessions = []
        for route, record in records:
            outcome = folder.add(record, None, entities_of(route, record))
            if route == "session" and outcome != "duplicate":
                sessions.append(record)
            release = max(release, folder.release_ms(math.floor(record["ts"] * 1000)))
        folder.hold(release, message)
        if piece.mark_ms is not None:
            marks = self.marks.setdefault(message.partition, {})
            if piece.mark_ms > marks.get(piece.source, _NOW):
                marks[piece.source] = piece.mark_ms
        return sessions

    def add_poison(self, message: Any) -> None:
        """A record that went to the dead-letter topic: acknowledged after the next flush."""
        self.folder(message.partition).add_poison(message)

    def watermark_ms(self, partition: int) -> int | None:
        """The smallest mark over every source partition, as this partition has seen them; None
        until all have reported."""
        marks = self.marks.get(partition, {})
        if self.sources is None or len(marks) < self.sources:
            return None
        return min(marks.values())

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns (their new owner replays them)."""
        for partition in partitions:
            folder = self.folders.pop(partition, None)
            if folder is not None:
                for name, value in folder.counts.items():
                    self.dropped_counts[name] += value
            self.marks.pop(partition, None)
            self.retry_plans.pop(partition, None)

    def take_online(self) -> list[dict[str, Any]]:
        return [row for folder in self.folders.values() for row in folder.take_online()]

    def plans(self, online: bool) -> dict[int, FlushPlan]:
        """A plan per partition: the one a failed flush left, or a new cut."""
        for partition, folder in self.folders.items():
            if partition not in self.retry_plans:
                self.retry_plans[partition] = folder.cut(self.watermark_ms(partition), online)
        return dict(self.retry_plans)

    def release(self, partition: int, plan: FlushPlan) -> list[Any]:
        """Records of ``partition`` whose every effect is durable once ``plan`` is written."""
        self.retry_plans.pop(partition, None)
        folder = self.folders.get(partition)
        return folder.release(plan) if folder is not None else []

    @property
    def counts(self) -> dict[str, int]:
        out = dict(self.dropped_counts)
        for folder in self.folders.values():
            for name, value in folder.counts.items():
                out[name] += value
        return out

    @property
    def held(self) -> int:
        return sum(len(folder.held) for folder in self.folders.values())
