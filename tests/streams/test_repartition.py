"""Events re-keyed by entity (streams/repartition.py) and folded per partition
(streams/entity_stage.py): whatever the source partitioning, every entity's windows equal the
batch computation; windows wait for every source partition's mark; bad slices are refused whole."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from only1mcp.feature_store.compute import compute
from only1mcp.streams.entity_stage import EntityStage
from only1mcp.streams.repartition import (
    Slice, SliceDecodeError, decode_slice, encode_slice, split, target_partition,
)

WINDOWS = ["10s", "30s/10s"]
T0 = 1_800_000_000.0
SOURCES, TARGETS = 3, 4


def _events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"event_id": f"e{i}", "ts": T0 + i * 0.05, "latency_ms": round(rng.uniform(1, 90), 3),
             "status": "error" if rng.random() < 0.1 else "ok", "request_bytes": rng.randrange(10, 99),
             "response_bytes": rng.randrange(10, 999), "replica": f"r{rng.randrange(3)}",
             "tool": f"t{rng.randrange(4)}", "session_id": f"s{rng.randrange(9)}"} for i in range(n)]


class Log:
    """Target partitions as lists of messages with offsets, as a broker would hold them."""

    def __init__(self) -> None:
        self.partitions: dict[int, list[SimpleNamespace]] = {t: [] for t in range(TARGETS)}

    def send(self, target: int, piece: Slice) -> None:
        log = self.partitions[target]
        log.append(SimpleNamespace(value=encode_slice(piece), partition=target, offset=len(log),
                                   tp=("mcp.feature-events", target)))


def _publish(log: Log, events: list[dict[str, Any]], marks: dict[int, int]) -> None:
    """Events spread over source partitions at random (not by entity), then every source's mark."""
    rng = random.Random(5)
    slices = split([(rng.randrange(SOURCES), e) for e in events], TARGETS)
    for (_source, target), piece in slices.items():
        log.send(target, piece)
    for source, mark in marks.items():
        for target in range(TARGETS):
            log.send(target, Slice(source, mark))


def _stage() -> EntityStage:
    stage = EntityStage(WINDOWS, 1.0, lambda partition: -(1 << 62))
    stage.sources = SOURCES
    return stage


def _closed_rows(stage: EntityStage, released: list[Any] | None = None) -> dict[tuple[str, str, str, float], dict]:
    """Cut every partition's plan, "write" it, and release what it covers (as the worker does)."""
    rows = {}
    for partition, plan in stage.plans(True).items():
        for row in plan.closed:
            rows[(row["entity_type"], row["entity_id"], row["window"], row["window_start"])] = row
        out = stage.release(partition, plan)
        if released is not None:
            released += out
    return rows


def test_every_entity_is_exact_whatever_the_source_partitioning() -> None:
    events = _events(2000)
    log = Log()
    end_ms = int((events[-1]["ts"] + 60) * 1000)
    _publish(log, events, {s: end_ms for s in range(SOURCES)})
    stage = _stage()
    for messages in log.partitions.values():
        for message in messages:
            stage.add(message)
    got = _closed_rows(stage)
    expected = 0
    for rows in compute(events, WINDOWS).values():
        for row in rows:
            mine = got[(row["entity_type"], row["entity_id"], row["window"], row["window_start"])]
            assert (mine["count"], mine["error_rate"], mine["latency_p95_ms"]) == (
                row["count"], row["error_rate"], row["latency_p95_ms"])
            assert mine["latency_ewma_ms"] == pytest.approx(row["latency_ewma_ms"], rel=1e-9)
            expected += 1
    assert len(got) == expected
    assert {key[0] for key in got} == {"replica", "tool", "replica_tool", "session"}
    # Each entity's rows come from one partition only: the one its id hashes to.
    for partition, folder in stage.folders.items():
        for (entity_type, entity_id, _pane) in folder.panes:
            route_id = entity_id.split("|")[0] if entity_type == "replica_tool" else entity_id
            assert target_partition(route_id, TARGETS) == partition


def test_windows_wait_for_every_source_partition_and_replays_count_once() -> None:
    events = _events(400)
    end_ms = int((events[-1]["ts"] + 60) * 1000)
    log = Log()
    _publish(log, events, {0: end_ms, 1: end_ms})  # source 2 has not reported
    stage = _stage()
    for messages in log.partitions.values():
        for message in messages:
            stage.add(message)
    early: list[Any] = []
    assert _closed_rows(stage, early) == {} and all(stage.watermark_ms(t) is None for t in range(TARGETS))
    assert early and all(b'"ev":[]' in m.value for m in early)  # marks alone close nothing: acked at once
    for messages in log.partitions.values():  # a replay (a crashed source owner): every slice again
        for message in messages:
            stage.add(message)
    for target in range(TARGETS):
        message = SimpleNamespace(value=encode_slice(Slice(2, end_ms)), partition=target, offset=999, tp=None)
        stage.add(message)
    released: list[Any] = []
    rows = _closed_rows(stage, released)
    batch = {(r["entity_type"], r["entity_id"], r["window"], r["window_start"]): r["count"]
             for rows_ in compute(events, WINDOWS).values() for r in rows_}
    assert {key: row["count"] for key, row in rows.items()} == batch
    assert stage.counts["duplicates"] == stage.counts["events"]  # every replayed copy, and only those
    # Every record is released (to be acked) once its windows are written, and not before.
    assert len(early) + len(released) == sum(len(m) for m in log.partitions.values()) * 2 + TARGETS
    assert stage.held == 0


def test_a_late_slice_counts_nothing_and_a_dropped_partition_forgets_its_state() -> None:
    events = _events(100)
    log = Log()
    end_ms = int((events[-1]["ts"] + 60) * 1000)
    _publish(log, events, {s: end_ms for s in range(SOURCES)})
    stage = _stage()
    for message in log.partitions[0]:
        stage.add(message)
    before = {k: v["count"] for k, v in _closed_rows(stage).items()}
    late = Slice(0, None)
    for event in events[:10]:
        late.add("tool", {**event, "event_id": f"late-{event['event_id']}"})
    stage.add(SimpleNamespace(value=encode_slice(late), partition=0, offset=500, tp=None))
    assert stage.counts["late"] == 10
    assert _closed_rows(stage) == {}  # nothing reopened
    assert before
    stage.drop([0])
    assert 0 not in stage.folders and stage.watermark_ms(0) is None


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'{"v": 3, "src": 0, "mark": null, "ev": []}',
                                 b'{"v": 1, "src": -1, "mark": null, "ev": []}',
                                 b'{"v": 1, "src": 0, "mark": "soon", "ev": []}',
                                 b'{"v": 1, "src": 0, "mark": null, "ev": [["nope", 1, 2, 3, 4, 5, 6, 7, 8, 9]]}',
                                 b'{"v": 1, "src": 0, "mark": null, "ev": [[1, 2]]}',
                                 # 13 fields: a version 2 session row, not a version 1 row
                                 b'{"v": 1, "src": 0, "mark": null, "ev": [["session", 1, 2, 3, 4, 5, 6, 7, 8, 9, '
                                 b'"tools/call", "h", "s"]]}'])
def test_a_bad_slice_is_refused_with_a_reason(raw: bytes) -> None:
    with pytest.raises(SliceDecodeError):
        decode_slice(raw)


def test_session_rows_carry_method_args_hash_server_and_version_1_slices_still_fold() -> None:
    event = {**_events(1)[0], "method": "tools/call", "args_hash": "ab" * 16, "server": "srv"}
    piece = Slice(0, None)
    for route in ("replica", "tool", "session"):
        piece.add(route, event)
    decoded = decode_slice(encode_slice(piece))
    assert [len(row) for row in decoded.rows] == [10, 10, 13]  # only the session copy carries them
    stage = _stage()
    sessions = stage.add(SimpleNamespace(value=encode_slice(piece), partition=0, offset=0, tp=None))
    assert [(r["event_id"], r["method"], r["args_hash"], r["server"]) for r in sessions] == [
        (f"{event['event_id']}/session", "tools/call", "ab" * 16, "srv")]
    assert stage.add(SimpleNamespace(value=encode_slice(piece), partition=0, offset=1, tp=None)) == []  # duplicate
    old = b'{"v": 1, "src": 0, "mark": null, "ev": [["session", "e9", %d, 1.0, "ok", 0, 0, "r0", "t1", "s1"]]}' % T0
    (record,) = stage.add(SimpleNamespace(value=old, partition=0, offset=2, tp=None))
    assert record["session_id"] == "s1" and "method" not in record and stage.counts["events"] == 4


def test_a_slice_with_one_bad_row_folds_nothing() -> None:
    good = _events(3)
    piece = Slice(0, None)
    for event in good:
        piece.add("replica", event)
    piece.rows.append(["tool", "bad", "not a time", 1.0, "ok", 0, 0, None, "t", None])
    stage = _stage()
    with pytest.raises(SliceDecodeError):
        stage.add(SimpleNamespace(value=encode_slice(piece), partition=1, offset=0, tp=None))
    assert stage.counts["events"] == 0
