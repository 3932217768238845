"""The feature agent on ``mcp.requests``: decode, fold micro-batches in memory, flush, then ack.

Per record: ``RequestEvent.from_json``; a record that does not decode (or has an impossible
time or latency) goes to ``mcp.dead-letter`` with the reason, and the agent goes on. Valid
events are folded into pane partials with the pure functions of ``feature_store.compute``
(no Faust table: windowed-table updates cap near 5k events/s and are not allowed inside
``stream.take()``). Every ``flush_interval`` the folder cuts a plan that the sinks write — raw
events and closed windows to Parquet, the watermark to a state file, current values to Redis —
and only then are the covered events acknowledged, so Faust commits their offsets after the
data is safe (at least once; see streams/folding.py for why replays do not double count).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from typing import Any

import faust

from only1mcp.events import TOPICS, DeadLetter, EventDecodeError, RequestEvent
from only1mcp.feature_store.online.redis import OnlineStoreUnavailable, RedisOnlineStore, backoff_policy
from only1mcp.settings import Settings
from only1mcp.streams.folding import FeatureFolder, FlushPlan
from only1mcp.streams.sinks import Sinks, load_closed_until

__all__ = ["FeatureWorker", "install", "GRACE_S", "BATCH_MAX"]

log = logging.getLogger(__name__)
GRACE_S = 5.0  # how late (event time) an event may come before its window closes without it
BATCH_MAX = 2000  # records per take: bounds the time the loop spends folding before it yields
_FIELDS = tuple(f.name for f in dataclasses.fields(RequestEvent))
_TS_RANGE = (946_684_800.0, 7_258_118_400.0)  # 2000-01-01 .. 2200-01-01: anything else is a broken clock


def _record(event: RequestEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in _FIELDS}


def _check(event: RequestEvent) -> str | None:
    """Why a decoded event cannot be used, or None."""
    if not (math.isfinite(event.ts) and _TS_RANGE[0] <= event.ts <= _TS_RANGE[1]):
        return f"ts {event.ts!r} is not a plausible unix time"
    if not (math.isfinite(event.latency_ms) and event.latency_ms >= 0):
        return f"latency_ms {event.latency_ms!r} is not a non-negative number"
    return None


class FeatureWorker:
    """State and I/O of the agent: fold, dead-letter, flush, ack."""

    def __init__(self, app: faust.App, settings: Settings, *, grace_s: float = GRACE_S,
                 online: RedisOnlineStore | None = None) -> None:
        self.app, self.settings = app, settings
        worker, store = settings.worker, settings.store
        self.source_topic = TOPICS["requests"]
        windows = [*worker.tumbling, *worker.hopping]
        closed = load_closed_until(store.data_dir, worker.group, default=-(1 << 62))
        self.folder = FeatureFolder(windows, grace_s, closed)
        # A Redis outage costs one flush a few short retries, then the plan waits for the next flush.
        self.online = online or RedisOnlineStore.from_settings(store, backoff_policy(attempts=3, cap_s=0.5))
        self.sinks = Sinks(store.data_dir, worker.group, self.online)
        self.flush_interval = worker.flush_interval
        self.stream: Any = None
        self.dead_topic: Any = None
        self.retry_plan: FlushPlan | None = None  # cut, but not yet in Parquet
        self.unsent_online: dict[tuple[str, str, str], dict[str, Any]] = {}  # waiting for Redis
        self.dead_sends: list[asyncio.Future[Any]] = []
        self.next_offset: dict[Any, int] = {}  # TP → offset after the last record folded
        self.max_ms: dict[Any, int] = {}  # TP → newest event time folded
        self.last_flush = time.monotonic()
        self.lock = asyncio.Lock()
        self.started: float | None = None  # first record folded: the rate counts from there
        self.acked, self.last_report = 0, 0.0

    # -- folding -------------------------------------------------------------------------------

    async def fold(self, events: list[Any]) -> None:
        if self.started is None:
            self.started = time.monotonic()
        for event in events:
            message = event.message
            self.next_offset[message.tp] = message.offset + 1
            try:
                decoded = RequestEvent.from_json(event.value)
                reason = _check(decoded)
            except EventDecodeError as exc:
                reason = str(exc)
            except Exception as exc:  # e.g. a value that is not bytes at all: still a bad record
                reason = f"undecodable: {type(exc).__name__}: {exc}"
            if reason is None:
                try:
                    record = _record(decoded)
                    self.folder.add(record, event)
                    t_ms = math.floor(record["ts"] * 1000)
                    if t_ms > self.max_ms.get(message.tp, -(1 << 62)):
                        self.max_ms[message.tp] = t_ms
                    continue
                except Exception as exc:  # never let one record stop the agent
                    log.exception("processing failed for %s[%d]@%d", message.topic, message.partition, message.offset)
                    reason = f"processing failed: {type(exc).__name__}: {exc}"
            await self.dead_letter(event, reason)

    async def dead_letter(self, event: Any, reason: str) -> None:
        message = event.message
        raw = message.value
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        key = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else message.key
        letter = DeadLetter(topic=message.topic, partition=message.partition, offset=message.offset, reason=reason,
                            consumer=self.settings.worker.group, ts=time.time(), key=key, value=text)
        log.warning("dead letter %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)
        self.dead_sends.append(await self.dead_topic.send(key=message.key, value=letter.to_json()))
        self.folder.add_poison(event)

    # -- flushing ------------------------------------------------------------------------------

    def watermark_ms(self) -> int | None:
        """Event time every assigned partition has passed: a partition that is caught up counts as
        now; one behind counts as its newest folded event; one not read yet holds the mark back."""
        consumer, now_ms, marks = self.app.consumer, int(time.time() * 1000), []
        for tp in consumer.assignment():
            if tp.topic != self.source_topic:
                continue
            highwater = consumer.highwater(tp)
            position = self.next_offset.get(tp)
            if position is None:  # nothing folded from it in this run: where the group left off
                position = consumer._committed_offset.get(tp) or 0
            if highwater is not None and position >= highwater:
                marks.append(now_ms)
            elif tp in self.max_ms:
                marks.append(self.max_ms[tp])
            else:
                return None
        return min(marks) if marks else None

    async def maybe_flush(self, force: bool = False) -> None:
        if force or time.monotonic() - self.last_flush >= self.flush_interval:
            await self.flush()

    async def flush(self) -> None:
        async with self.lock:
            self.last_flush = time.monotonic()
            if self.retry_plan is None:
                self.retry_plan = self.folder.cut(self.watermark_ms())
            plan = self.retry_plan
            try:
                await asyncio.to_thread(self.sinks.write_offline, plan)
            except Exception:  # a full disk, a broken file system: keep the plan, retry it next flush
                log.exception("offline write failed (done: %s); retrying at the next flush", sorted(plan.done))
                return
            self.retry_plan = None
            for row in plan.online:  # newest value per key wins; older unsent ones are superseded
                self.unsent_online[(row["entity_type"], row["entity_id"], row["window"])] = row
            try:
                await asyncio.to_thread(self.sinks.write_online, list(self.unsent_online.values()))
            except OnlineStoreUnavailable as exc:
                log.warning("online store unavailable (%d rows wait for the next flush): %s",
                            len(self.unsent_online), exc)
                return  # nothing is acknowledged until Redis has the values too
            self.unsent_online = {}
            sends, self.dead_sends = self.dead_sends, []
            if sends:
                await asyncio.gather(*sends)  # dead letters delivered before their records are acked
            tokens = self.folder.release(plan)  # plans are cumulative: this covers earlier failed ones
            for event in tokens:
                await self.stream.ack(event)
            self.acked += len(tokens)
            self._report(plan)

    def _report(self, plan: FlushPlan) -> None:
        """A progress line at most every 10 s at info (every flush at debug)."""
        now, counts = time.monotonic(), self.folder.counts
        elapsed = max(1e-9, now - (self.started or now))
        level = logging.DEBUG
        if now - self.last_report >= 10.0:
            level, self.last_report = logging.INFO, now
        log.log(level, "flush: raw=%d closed=%d online=%d acked=%d held=%d | total events=%d late=%d dup=%d poison=%d "
                 "(%.0f ev/s since start)", len(plan.raw), len(plan.closed), len(plan.online), self.acked,
                 len(self.folder.held), counts["events"], counts["late"], counts["duplicates"], counts["poison"],
                 counts["events"] / elapsed)


def install(app: faust.App, settings: Settings, **kwargs: Any) -> FeatureWorker:
    """Register the feature agent and its flush timer on ``app``; returns the worker state."""
    worker = FeatureWorker(app, settings, **kwargs)
    partitions = settings.worker.partitions
    source = app.topic(TOPICS["requests"], key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw", partitions=partitions)
    worker.dead_topic = app.topic(TOPICS["dead_letter"], key_type=bytes, value_type=bytes, key_serializer="raw",
                                  value_serializer="raw", partitions=partitions)

    @app.agent(source, name="features", concurrency=1)
    async def features(stream: Any) -> None:
        worker.stream = stream
        async for events in stream.noack_take(BATCH_MAX, within=worker.flush_interval):
            await worker.fold(list(events))
            await worker.maybe_flush()

    @app.timer(worker.flush_interval)
    async def idle_flush() -> None:  # windows close and acks go out even when no record arrives
        if worker.stream is not None:
            await worker.maybe_flush()

    return worker
