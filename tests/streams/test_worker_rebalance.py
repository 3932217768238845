"""The feature worker's entity stage across a rebalance, in process (a fake consumer, real Parquet):
records fetched before a rebalance and handed over after it are not processed. The worker keeps its
partition (revoked, then assigned again) and replays it from the committed offset; folded before
that replay, the stale records' marks would close windows whose events the replay still holds, and
those events would come late: windows lost or short (CI's scale-out test saw exactly that)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from only1mcp.events import TOPICS
from only1mcp.feature_store.compute import compute
from only1mcp.feature_store.offline.duckdb import query
from only1mcp.settings import Settings
from only1mcp.streaming import StoreSettings, WorkerSettings
from only1mcp.streams.agents import FeatureWorker
from only1mcp.streams.repartition import Slice, encode_slice, split

WINDOWS = ("2s", "6s/2s")
T0 = 1_800_000_000.0  # a multiple of every window's step
ENTITY_TP = TP(TOPICS["feature_events"], 0)


class Flow:
    """Faust's flow control: suspended from a revocation until the new assignment is recovered."""

    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


class Consumer:
    def __init__(self) -> None:
        self.assigned = {ENTITY_TP}
        self.acked: set[int] = set()
        self._committed_offset: dict[Any, int] = {}

    def assignment(self) -> set[Any]:
        return set(self.assigned)

    def topic_partitions(self, topic: str) -> int:
        return 1

    def ack(self, message: Any) -> None:
        self.acked.add(message.offset)

    def committed(self) -> int:
        """The offset a commit would reach: the end of the run of acknowledged offsets from 0."""
        offset = 0
        while offset in self.acked:
            offset += 1
        return offset

    def highwater(self, tp: Any) -> None:
        return None

    def last_fetch_ms(self, tp: Any) -> None:
        return None


class Online:
    def write_rows(self, rows: list[dict[str, Any]]) -> int:
        return len(rows)


def _events(n: int) -> list[dict[str, Any]]:
    return [{"event_id": f"e{i}", "ts": T0 + i * 0.05, "latency_ms": float(1 + i % 37), "status": "ok",
             "request_bytes": 100, "response_bytes": 300, "replica": f"r{i % 2}", "tool": f"tool{i % 3}",
             "session_id": f"s{i % 5}"} for i in range(n)]


def _log(events: list[dict[str, Any]]) -> list[bytes]:
    """Partition 0 of mcp.feature-events fed by one source partition: each event, then its mark."""
    out = []
    for event in events:
        piece = split([(0, event)], 1)[(0, 0)]
        piece.mark_ms = math.floor(event["ts"] * 1000)
        out.append(encode_slice(piece))
    out.append(encode_slice(Slice(0, math.floor((events[-1]["ts"] + 60) * 1000))))  # closes every window
    return out


def _messages(log: list[bytes], start: int, stop: int, generation: int) -> list[SimpleNamespace]:
    """The records ``start``..``stop`` as one fetch of the given consumer generation delivers them."""
    return [SimpleNamespace(value=log[offset], partition=0, offset=offset, tp=ENTITY_TP, topic=ENTITY_TP.topic,
                            generation_id=generation) for offset in range(start, min(stop, len(log)))]


def test_records_fetched_before_a_rebalance_are_not_folded_after_it(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path))


async def _scenario(tmp_path: Path) -> None:
    settings = Settings(worker=WorkerSettings(partitions=1, tumbling=WINDOWS[:1], hopping=WINDOWS[1:], grace=1.0,
                                              compact_interval=0, merge_interval=0),
                        store=StoreSettings(data_dir=str(tmp_path / "data")))
    consumer, flow = Consumer(), Flow()
    app = SimpleNamespace(consumer=consumer, flow_control=flow, consumer_generation_id=1)
    worker = FeatureWorker(app, settings, online=Online())  # type: ignore[arg-type]
    events = _events(400)  # 20 s
    log = _log(events)

    # Generation 1: the first 8 s folded and flushed; windows up to 7 s close, acks follow them.
    await worker.on_entity_batch(_messages(log, 0, 160, generation=1))
    await worker.flush()
    committed = consumer.committed()
    assert 0 < committed < 160

    # A rebalance: the partition is revoked; a fetch made before it (8 s to 15 s) reaches the
    # handler only now, while the group is still rebalancing; a flush timer fires meanwhile.
    flow.active = False
    await worker.on_revoked({ENTITY_TP})
    await worker.on_entity_batch(_messages(log, 160, 300, generation=1))
    await worker.flush()
    assert worker.stage.folders == {}  # nothing of the stale fetch was folded

    # Generation 2 gives the partition back: a replay from the committed offset. A fetch of the
    # old generation handed over after the assignment is skipped as well.
    app.consumer_generation_id, flow.active = 2, True
    await worker.on_entity_batch(_messages(log, 200, 300, generation=1))
    assert worker.stage.folders == {}
    for start in range(committed, len(log), 100):
        await worker.on_entity_batch(_messages(log, start, start + 100, generation=2))
        await worker.flush()

    data = tmp_path / "data"
    problems = []
    for table, rows in compute(events, WINDOWS).items():
        names, stored_rows = query(data, f'SELECT * FROM "{table}"')
        stored = {(r[names.index("entity_id")], r[names.index("window_start")]): r[names.index("count")]
                  for r in stored_rows}
        for row in rows:
            got = stored.get((row["entity_id"], row["window_start"]))
            if got != row["count"]:
                problems.append(f"{table} {row['entity_id']} @+{row['window_start'] - T0:.0f}s: {got} != {row['count']}")
    assert problems == [], f"{len(problems)} windows wrong:\n" + "\n".join(problems[:20])
    assert worker.stage.counts["late"] == 0  # the replay counted every event it held once
    assert consumer.committed() == len(log)
