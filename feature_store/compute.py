"""Pure feature computation, shared by the streaming worker and the batch jobs.

Pipeline: events → :func:`aggregate` (one mergeable :class:`Partial` per *pane*) → :func:`merge`
(fold micro-batches) → :func:`window_partial` (a window is the merge of its panes) →
:func:`feature_row` (the numbers). :func:`compute` runs the whole pipeline over a batch.

A pane is the greatest common divisor of every window size and step (10 s for the default
``10s``, ``60s``, ``60s/10s``): each event updates one pane per entity instead of one state per
window, and every tumbling or hopping window is a whole number of panes. Every piece of a
partial is a sum (counts, integer microseconds, sketch bin counts, forward-decay weights), so
merging is order-free: the worker folding micro-batches and a batch job over the whole history
produce the same rows — exactly for counts, means and quantiles, and up to float rounding of
a sum for the EWMA.

Events are RequestEvent-like mappings (``ts``, ``latency_ms``, ``status``, ``replica``, ``tool``,
``session_id``, ``request_bytes``, ``response_bytes``). Times in rows are unix seconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ddsketch import DDSketch

from only1mcp.feature_store.registry import table_name

__all__ = [
    "EWMA_TAU_S", "ERROR_STATUSES", "RELATIVE_ACCURACY", "WindowSpec", "Partial", "PaneKey", "parse_window",
    "pane_size_ms", "entity_ids", "aggregate", "merge", "merge_into", "window_partial", "feature_row",
    "window_keys", "compute", "sketch_to_bytes", "sketch_from_bytes",
]

EWMA_TAU_S = 10.0  # the EWMA's time constant: an event 10 s older weighs 1/e as much
ERROR_STATUSES = frozenset({"error", "timeout", "unavailable"})  # rejected/cancelled are not the replica's fault
RELATIVE_ACCURACY = 0.01  # DDSketch: every quantile within 1 % of the true value
_REBASE_MS = int(300 * EWMA_TAU_S * 1000)  # exp(300) is far from float overflow (exp(709))

PaneKey = tuple[str, str, int]  # (entity type, entity id, pane start in ms)
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h)\s*$")


def _duration_ms(text: str) -> int:
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"expected a positive duration such as 10s, 500ms, 5m or 1h, got {text!r}")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


@dataclass(frozen=True)
class WindowSpec:
    """A tumbling (``10s``) or hopping (``60s/10s``: size/step) window; integer ms avoid float drift."""

    text: str
    size_ms: int
    step_ms: int

    @property
    def hopping(self) -> bool:
        return self.step_ms != self.size_ms

    def starts_ms(self, t_ms: int) -> range:
        """Starts of every window containing instant ``t_ms``, oldest first."""
        last = t_ms - t_ms % self.step_ms
        first = last - ((self.size_ms - 1) // self.step_ms) * self.step_ms
        return range(first, last + 1, self.step_ms)


def parse_window(text: str) -> WindowSpec:
    size_text, _, step_text = text.partition("/")
    size = _duration_ms(size_text)
    step = _duration_ms(step_text) if step_text else size
    if step > size or size % step:
        raise ValueError(f"window {text!r}: the step must divide the size")
    return WindowSpec(text.replace(" ", ""), size, step)


def pane_size_ms(specs: Iterable[WindowSpec]) -> int:
    """The pane: the largest duration that divides every size and step."""
    return math.gcd(*[n for s in specs for n in (s.size_ms, s.step_ms)])


def entity_ids(event: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(entity type, entity id) pairs one event counts for; missing fields skip that entity."""
    replica, tool, session = event.get("replica"), event.get("tool"), event.get("session_id")
    if replica:
        yield "replica", replica
    if tool:
        yield "tool", tool
    if replica and tool:
        yield "replica_tool", f"{replica}|{tool}"
    if session:
        yield "session", session


class Partial:
    """Mergeable state of one entity over one pane (or, merged, one window).

    The EWMA uses forward decay (Cormode et al.): weight ``exp((t - ref) / tau)`` relative to a
    reference instant ``ref_ms``; Σw·x / Σw is the time-decayed mean at any later instant, and
    moving the reference rescales both sums by one factor, so panes merge into windows.
    """

    __slots__ = ("ref_ms", "count", "errors", "latency_us", "request_bytes", "response_bytes", "decay_w",
                 "decay_wx", "sketch")

    def __init__(self, ref_ms: int) -> None:
        self.ref_ms = ref_ms
        self.count = self.errors = self.latency_us = self.request_bytes = self.response_bytes = 0
        self.decay_w = self.decay_wx = 0.0
        self.sketch = DDSketch(RELATIVE_ACCURACY)

    def add(self, t_ms: int, latency_ms: float, error: bool, request_bytes: int, response_bytes: int) -> None:
        if t_ms - self.ref_ms > _REBASE_MS:  # keep exp() finite over long windows
            self.rebase(t_ms)
        weight = math.exp((t_ms - self.ref_ms) / (1000.0 * EWMA_TAU_S))
        self.count += 1
        self.errors += error
        self.latency_us += round(latency_ms * 1000)  # integers: sums are exact in any order
        self.request_bytes += request_bytes
        self.response_bytes += response_bytes
        self.decay_w += weight
        self.decay_wx += weight * latency_ms
        self.sketch.add(max(latency_ms, 0.0))

    def rebase(self, ref_ms: int) -> None:
        """Move the decay reference later: older weights shrink (to 0.0 when far older), the ratio holds."""
        if ref_ms > self.ref_ms:
            factor = math.exp((self.ref_ms - ref_ms) / (1000.0 * EWMA_TAU_S))
            self.decay_w, self.decay_wx, self.ref_ms = self.decay_w * factor, self.decay_wx * factor, ref_ms

    def copy(self) -> Partial:
        other = Partial(self.ref_ms)
        merge_into(other, self)
        return other


def merge_into(target: Partial, source: Partial) -> None:
    """Add ``source`` to ``target`` (mutates target); the decay sums meet at the later reference, so
    the factor is at most 1 and exp() never overflows."""
    target.rebase(source.ref_ms)
    scale = math.exp((source.ref_ms - target.ref_ms) / (1000.0 * EWMA_TAU_S))
    target.count += source.count
    target.errors += source.errors
    target.latency_us += source.latency_us
    target.request_bytes += source.request_bytes
    target.response_bytes += source.response_bytes
    target.decay_w += source.decay_w * scale
    target.decay_wx += source.decay_wx * scale
    target.sketch.merge(source.sketch)


def aggregate(events: Iterable[Mapping[str, Any]], pane_ms: int) -> dict[PaneKey, Partial]:
    """One partial per (entity type, entity id, pane) touched by ``events``."""
    out: dict[PaneKey, Partial] = {}
    for event in events:
        t_ms = math.floor(event["ts"] * 1000)
        pane = t_ms - t_ms % pane_ms
        latency, error = float(event["latency_ms"]), event["status"] in ERROR_STATUSES
        request_bytes, response_bytes = event.get("request_bytes") or 0, event.get("response_bytes") or 0
        for entity_type, entity_id in entity_ids(event):
            key = (entity_type, entity_id, pane)
            partial = out.get(key)
            if partial is None:
                partial = out[key] = Partial(pane)
            partial.add(t_ms, latency, error, request_bytes, response_bytes)
    return out


def merge(partials: Iterable[Mapping[PaneKey, Partial]]) -> dict[PaneKey, Partial]:
    """Merge aggregates of several batches, key by key, without touching the inputs."""
    out: dict[PaneKey, Partial] = {}
    for batch in partials:
        for key, partial in batch.items():
            if key in out:
                merge_into(out[key], partial)
            else:
                out[key] = partial.copy()
    return out


def window_partial(panes: Mapping[PaneKey, Partial], entity_type: str, entity_id: str, spec: WindowSpec,
                   start_ms: int, pane_ms: int) -> Partial | None:
    """The merge of a window's panes (None when none holds an event)."""
    out: Partial | None = None
    for pane in range(start_ms, start_ms + spec.size_ms, pane_ms):
        partial = panes.get((entity_type, entity_id, pane))
        if partial is not None:
            if out is None:
                out = Partial(start_ms)
            merge_into(out, partial)
    return out


def window_keys(panes: Iterable[PaneKey], spec: WindowSpec) -> set[tuple[str, str, int]]:
    """(entity type, entity id, window start ms) of every window holding at least one of ``panes``."""
    return {(e, i, start) for e, i, pane in panes for start in spec.starts_ms(pane)}


def _cyclical(value: float, period: float) -> tuple[float, float]:
    angle = 2.0 * math.pi * (value % period) / period
    return math.sin(angle), math.cos(angle)


def feature_row(entity_type: str, entity_id: str, spec: WindowSpec, start_ms: int, partial: Partial) -> dict[str, Any]:
    """The feature values of one window (columns as in registry.FEATURES, plus keys and the sketch)."""
    n, start = partial.count, start_ms / 1000.0
    sketch = partial.sketch
    hour_sin, hour_cos = _cyclical(start / 3600.0, 24.0)
    dow_sin, dow_cos = _cyclical(math.floor(start / 86400.0) + 3.0, 7.0)  # 1970-01-01 was a Thursday (Monday = 0)
    return {
        "entity_type": entity_type, "entity_id": entity_id, "window": spec.text,
        "window_start": start, "window_end": (start_ms + spec.size_ms) / 1000.0,
        "count": n,
        "error_rate": partial.errors / n,
        "latency_mean_ms": partial.latency_us / n / 1000.0,
        "latency_p50_ms": sketch.get_quantile_value(0.50),
        "latency_p95_ms": sketch.get_quantile_value(0.95),
        "latency_p99_ms": sketch.get_quantile_value(0.99),
        "latency_ewma_ms": partial.decay_wx / partial.decay_w,
        "inflight": partial.latency_us / 1000.0 / spec.size_ms,
        "request_bytes_mean": partial.request_bytes / n,
        "response_bytes_mean": partial.response_bytes / n,
        "hour_sin": hour_sin, "hour_cos": hour_cos, "dow_sin": dow_sin, "dow_cos": dow_cos,
        "latency_sketch": sketch_to_bytes(sketch),
    }


def compute(events: Iterable[Mapping[str, Any]], windows: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Batch: every window row of every entity, by offline table name, sorted by (entity id, start)."""
    specs = [parse_window(w) for w in windows]
    pane_ms = pane_size_ms(specs)
    panes = aggregate(events, pane_ms)
    tables: dict[str, list[dict[str, Any]]] = {}
    for spec in specs:
        for entity_type, entity_id, start in sorted(window_keys(panes, spec)):
            partial = window_partial(panes, entity_type, entity_id, spec, start, pane_ms)
            if partial is not None:
                row = feature_row(entity_type, entity_id, spec, start, partial)
                tables.setdefault(table_name(entity_type, spec.text), []).append(row)
    return tables


def sketch_to_bytes(sketch: DDSketch) -> bytes:
    """DDSketch's own protobuf encoding, readable by the Java and Go implementations too."""
    from ddsketch.pb.proto import DDSketchProto

    return DDSketchProto.to_proto(sketch).SerializeToString()


def sketch_from_bytes(data: bytes) -> DDSketch:
    """Decode a sketch into a fresh DDSketch, whose mapping (and so every quantile) equals a live one's."""
    from ddsketch.pb.proto import DDSketchProto, pb

    sketch = DDSketch(RELATIVE_ACCURACY)
    sketch.merge(DDSketchProto.from_proto(pb.DDSketch.FromString(data)))
    return sketch
