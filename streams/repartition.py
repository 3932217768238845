"""Events re-keyed by entity, so that every entity's windows are exact with any number of workers.

``mcp.requests`` is keyed by replica: with one worker per partition, a tool's or a session's
events are spread over workers, and each would write its own share of that tool's windows.
The worker therefore works in two stages (streams/agents.py):

1. **Read** ``mcp.requests`` (any partitioning): decode, dead-letter, write the raw rows, and
   forward each valid event, reduced to the fields features need, to the internal topic
   ``mcp.feature-events`` — once per *route*: by replica (it carries the replica and
   replica × tool entities, both keyed by the replica), by tool and by session (the session copy
   also carries the method, the arguments' keyed hash and the server, for the prefetch agent). A route's
   partition is a stable hash of its entity id, so one worker owns all of an entity's events.
   Forwarded events travel in *slices*: one record per (source partition, target partition)
   per fetch, never one per event (a send per event cost more than the features).
2. **Fold** ``mcp.feature-events``: one :class:`~only1mcp.streams.folding.FeatureFolder` per
   owned partition, closing windows on that partition's own watermark and persisting it per
   partition, so a partition that moves to another worker moves with its state.

The watermark: each slice carries its source partition's event-time mark (the newest event
forwarded, or the wall clock when that partition is caught up; streams/agents.py). It is sent
to *every* target partition, after the events it covers, on the same producer, so a target
that has seen mark ``W`` from source ``p`` has seen every event of ``p`` forwarded before it.
A target's windows close at the smallest mark over all source partitions (minus the grace);
until every source partition has reported, nothing closes. Marks only move forward: a replay
after a rebalance re-sends events the target has either folded already (dropped by event id
while their windows are open) or closed (late, not counted twice).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

__all__ = ["ROUTES", "Slice", "SliceDecodeError", "routes", "target_partition", "encode_slice", "decode_slice",
           "entities_of", "event_record"]

ROUTES = ("replica", "tool", "session")
# 2: session rows carry three more fields, the method, the arguments' keyed hash and the server (the
# prefetch agent learns call sequences from them); version 1 slices (10 fields in every row) are still read.
_VERSION = 2
_FIELDS = {1: (10,), 2: (10, 13)}  # fields a row may have, per slice version


class SliceDecodeError(ValueError):
    """A ``mcp.feature-events`` record is not a slice this version can read; the reason says why."""


def target_partition(entity_id: str, partitions: int) -> int:
    """A stable partition for an entity (crc32: the same on every worker and every run)."""
    return zlib.crc32(entity_id.encode("utf-8", "surrogatepass")) % partitions


def routes(record: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(route, entity id) of each copy an event is forwarded as; missing fields skip that route."""
    replica, tool, session = record.get("replica"), record.get("tool"), record.get("session_id")
    if replica:
        yield "replica", replica
    if tool:
        yield "tool", tool
    if session:
        yield "session", session


def _row(route: str, record: Mapping[str, Any]) -> list[Any]:
    row = [route, record["event_id"], record["ts"], record["latency_ms"], record["status"],
           record.get("request_bytes") or 0, record.get("response_bytes") or 0,
           record.get("replica"), record.get("tool"), record.get("session_id")]
    if route == "session":
        row += [record.get("method"), record.get("args_hash"), record.get("server")]
    return row


class Slice:
    """One record of ``mcp.feature-events``: some events of one source partition for one target
    partition, and that source partition's watermark after them."""

    __slots__ = ("source", "mark_ms", "rows")

    def __init__(self, source: int, mark_ms: int | None, rows: list[list[Any]] | None = None) -> None:
        self.source, self.mark_ms, self.rows = source, mark_ms, rows if rows is not None else []

    def add(self, route: str, record: Mapping[str, Any]) -> None:
        self.rows.append(_row(route, record))


def encode_slice(piece: Slice) -> bytes:
    return orjson.dumps({"v": _VERSION, "src": piece.source, "mark": piece.mark_ms, "ev": piece.rows})


def decode_slice(raw: Any) -> Slice:
    try:
        data = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise SliceDecodeError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("v") not in _FIELDS:
        raise SliceDecodeError(f"not a slice of version {' or '.join(map(str, _FIELDS))}")
    lengths = _FIELDS[data["v"]]
    source, mark, rows = data.get("src"), data.get("mark"), data.get("ev")
    if not isinstance(source, int) or source < 0 or not (mark is None or isinstance(mark, int)):
        raise SliceDecodeError(f"bad source partition {source!r} or mark {mark!r}")
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) in lengths and r[0] in ROUTES
                                             for r in rows):
        raise SliceDecodeError(f"events must be lists of {' or '.join(map(str, lengths))} fields, each starting "
                               "with a route")
    return Slice(source, mark, rows)


def event_record(row: list[Any]) -> dict[str, Any]:
    """The event fields of a forwarded row, as the folder reads them; its id names the route, so
    the copies of one event for two routes that share a partition are not taken for duplicates.
    Session rows of version 2 add ``method``, ``args_hash`` and ``server`` (absent from older rows)."""
    route, event_id, ts, latency_ms, status, request_bytes, response_bytes, replica, tool, session = row[:10]
    if not isinstance(ts, (int, float)) or not isinstance(latency_ms, (int, float)) or not isinstance(status, str):
        raise SliceDecodeError(f"bad event row {row[:5]!r}")
    record = {"event_id": f"{event_id}/{route}", "ts": float(ts), "latency_ms": float(latency_ms), "status": status,
              "request_bytes": request_bytes, "response_bytes": response_bytes, "replica": replica, "tool": tool,
              "session_id": session}
    if len(row) > 10:
        record["method"], record["args_hash"], record["server"] = row[10], row[11], row[12]
    return record


def entities_of(route: str, record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The entities one forwarded copy counts for (feature_store.compute.entity_ids, split by route)."""
    if route == "replica":
        replica, tool = record["replica"], record.get("tool")
        return [("replica", replica), ("replica_tool", f"{replica}|{tool}")] if tool else [("replica", replica)]
    if route == "tool":
        return [("tool", record["tool"])]
    return [("session", record["session_id"])]


def split(records: Iterable[tuple[int, Mapping[str, Any]]], partitions: int) -> dict[tuple[int, int], Slice]:
    """Valid events (with their source partition) as slices by (source, target) partition."""
    out: dict[tuple[int, int], Slice] = {}
    for source, record in records:
        for route, entity_id in routes(record):
            target = target_partition(entity_id, partitions)
            piece = out.get((source, target))
            if piece is None:
                piece = out[(source, target)] = Slice(source, None)
            piece.add(route, record)
    return out
