"""The feature agent on ``mcp.requests``: decode, fold micro-batches in memory, flush, then ack.

Records arrive a fetch at a time (``WorkerApp.batch_topic``, streams/kafka.py: Faust's
per-message delivery cost more CPU than the features). Per record:
``RequestEvent.fields_from_json`` (the checks of ``from_json``, as a dict); a record that does
not decode (or has an impossible time or latency) goes to ``mcp.dead-letter`` with the reason,
and the agent goes on. Valid events are folded into pane partials with the pure functions of
``feature_store.compute`` (no Faust table: windowed-table updates cap near 5k events/s and are
not allowed inside ``stream.take()``). Every ``online_interval`` the current values of the
entities that changed go to Redis (freshness); every ``flush_interval`` the folder cuts a plan
that the sinks write — raw events and closed windows to Parquet, the watermark to a state file,
current values to Redis — and only then are the covered records acknowledged, so Faust commits
their offsets after the data is safe (at least once; see streams/folding.py for why replays do
not double count).

The watermark (which windows may close) follows event time, with the wall clock standing in for
partitions that are caught up — but only when "caught up" is known: from a fetch answered in the
last ``grace / 2`` seconds, and not within ``outage_hold`` of a time the broker stopped answering.
While the broker is away the proxies spool their events; once it is back they replay them, in
order, with their original times. Closing windows on the wall clock then would make every
spooled event late; holding the wall clock back lets the replay arrive first.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from typing import Any

from only1mcp.events import TOPICS, DeadLetter, EventDecodeError, RequestEvent
from only1mcp.feature_store.online.redis import OnlineStoreUnavailable, RedisOnlineStore, backoff_policy
from only1mcp.settings import Settings
from only1mcp.streams.folding import FeatureFolder, FlushPlan
from only1mcp.streams.kafka import WorkerApp
from only1mcp.streams.sinks import Sinks, load_closed_until

__all__ = ["FeatureWorker", "install", "BATCH_MAX"]

log = logging.getLogger(__name__)
_BEHIND_ONLINE_S = 5.0  # while catching up, how often current values go to Redis
BATCH_MAX = 2000  # records folded between flush checks: bounds the time the loop folds before it yields
_TS_RANGE = (946_684_800.0, 7_258_118_400.0)  # 2000-01-01 .. 2200-01-01: anything else is a broken clock


def _check(record: dict[str, Any]) -> str | None:
    """Why a decoded event (its fields) cannot be used, or None."""
    ts, latency_ms = record["ts"], record["latency_ms"]
    if not (math.isfinite(ts) and _TS_RANGE[0] <= ts <= _TS_RANGE[1]):
        return f"ts {ts!r} is not a plausible unix time"
    if not (math.isfinite(latency_ms) and latency_ms >= 0):
        return f"latency_ms {latency_ms!r} is not a non-negative number"
    return None


class FeatureWorker:
    """State and I/O of the agent: fold, dead-letter, flush, ack."""

    def __init__(self, app: WorkerApp, settings: Settings, *, online: RedisOnlineStore | None = None) -> None:
        self.app, self.settings = app, settings
        worker, store = settings.worker, settings.store
        self.source_topic = TOPICS["requests"]
        windows = [*worker.tumbling, *worker.hopping]
        closed = load_closed_until(store.data_dir, worker.group, default=-(1 << 62))
        self.folder = FeatureFolder(windows, worker.grace, closed)
        # A Redis outage costs one flush a few short retries, then the plan waits for the next flush.
        self.online = online or RedisOnlineStore.from_settings(store, backoff_policy(attempts=3, cap_s=0.5))
        self.sinks = Sinks(store.data_dir, worker.group, self.online)
        self.flush_interval, self.online_interval = worker.flush_interval, worker.online_interval
        self.stale_ms = int(worker.grace * 500)  # a fetch answer older than this no longer says "caught up"
        self.outage_hold_ms = int(worker.outage_hold * 1000)
        self.unreachable_ms = -(1 << 62)  # wall-clock ms the broker was last seen not answering
        self.dead_topic: Any = None
        self.retry_plan: FlushPlan | None = None  # cut, but not yet in Parquet
        self.unsent_online: dict[tuple[str, str, str], dict[str, Any]] = {}  # waiting for Redis
        self.dead_sends: list[asyncio.Future[Any]] = []
        self.next_offset: dict[Any, int] = {}  # TP → offset after the last record folded
        self.max_ms: dict[Any, int] = {}  # TP → newest event time folded
        self.last_flush = self.last_online = self.last_online_cut = self.last_compact = self.last_merge = time.monotonic()
        self.compaction: asyncio.Future[Any] | None = None
        self.lock = asyncio.Lock()
        self.started: float | None = None  # first record folded: the rate counts from there
        self.acked, self.last_report = 0, 0.0
        self.routing: Any = None  # the routing agent (streams/routing.py), fed every valid record
        self.anomaly: Any = None  # the anomaly agent (streams/anomaly.py), fed every valid record

    # -- folding -------------------------------------------------------------------------------

    async def on_batch(self, messages: list[Any]) -> None:
        """The messages of one fetch (streams/kafka.py), folded a bounded batch at a time."""
        for start in range(0, len(messages), BATCH_MAX):
            await self.fold(messages[start:start + BATCH_MAX])
            await self.maybe_flush()

    async def fold(self, messages: list[Any]) -> None:
        if self.started is None:
            self.started = time.monotonic()
        valid: list[dict[str, Any]] = []
        for message in messages:
            self.next_offset[message.tp] = message.offset + 1
            try:
                record = RequestEvent.fields_from_json(message.value)
                reason = _check(record)
            except EventDecodeError as exc:
                reason = str(exc)
            except Exception as exc:  # e.g. a value that is not bytes at all: still a bad record
                reason = f"undecodable: {type(exc).__name__}: {exc}"
            if reason is None:
                try:
                    self.folder.add(record, message)
                    t_ms = math.floor(record["ts"] * 1000)
                    if t_ms > self.max_ms.get(message.tp, -(1 << 62)):
                        self.max_ms[message.tp] = t_ms
                    valid.append(record)
                    continue
                except Exception as exc:  # never let one record stop the agent
                    log.exception("processing failed for %s[%d]@%d", message.topic, message.partition, message.offset)
                    reason = f"processing failed: {type(exc).__name__}: {exc}"
            await self.dead_letter(message, reason)
        if valid:
            if self.anomaly is not None:  # first: a crash's failures reach the down rule without delay
                self.anomaly.observe(valid)  # never raises
            if self.routing is not None:
                self.routing.observe(valid)  # never raises

    async def dead_letter(self, message: Any, reason: str) -> None:
        raw = message.value
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        key = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else message.key
        letter = DeadLetter(topic=message.topic, partition=message.partition, offset=message.offset, reason=reason,
                            consumer=self.settings.worker.group, ts=time.time(), key=key, value=text)
        log.warning("dead letter %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)
        self.dead_sends.append(await self.dead_topic.send(key=message.key, value=letter.to_json()))
        self.folder.add_poison(message)

    # -- flushing ------------------------------------------------------------------------------

    def watermark_ms(self) -> int | None:
        """Event time every assigned partition has passed: a partition known to be caught up counts
        as now; one behind (or not known to be caught up) counts as its newest folded event; one not
        read yet holds the mark back."""
        consumer, now_ms, marks = self.app.consumer, int(time.time() * 1000), []
        caught_up: list[Any] = []
        for tp in consumer.assignment():
            if tp.topic != self.source_topic:
                continue
            highwater = consumer.highwater(tp)
            position = self.next_offset.get(tp)
            if position is None:  # nothing folded from it in this run: where the group left off
                position = consumer._committed_offset.get(tp) or 0
            fetched = consumer.last_fetch_ms(tp)
            if highwater is not None and position >= highwater and fetched is not None:
                if now_ms - fetched > self.stale_ms:  # the broker stopped answering: the mark stays put
                    self.unreachable_ms = now_ms
                else:
                    caught_up.append(tp)
                    continue
            if tp not in self.max_ms:
                return None
            marks.append(self.max_ms[tp])
        if now_ms - self.unreachable_ms < self.outage_hold_ms:  # just back: spooled events still coming
            for tp in caught_up:
                if tp not in self.max_ms:
                    return None
                marks.append(self.max_ms[tp])
        elif caught_up:
            marks.append(now_ms)
        return min(marks) if marks else None

    async def maybe_flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_flush >= self.flush_interval:
            await self.flush()
        elif now - self.last_online >= self.online_interval and not self.behind():
            await self.flush_online()

    def behind(self) -> bool:
        """More than a batch of records fetched-but-not-folded or not fetched yet: catching up, so
        fresh online values can wait for the next flush (they would cost CPU the backlog needs)."""
        consumer, lag = self.app.consumer, 0
        for tp, position in self.next_offset.items():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lag += max(0, highwater - position)
        return lag > BATCH_MAX

    async def flush_online(self) -> None:
        """The current values of the entities that changed, to Redis; acks wait for the next flush."""
        async with self.lock:
            self.last_online = time.monotonic()
            error = await self._send_online(self.folder.take_online())
            if error is not None:
                log.debug("online store unavailable (%d rows wait): %s", len(self.unsent_online), error)

    async def _send_online(self, rows: list[dict[str, Any]]) -> OnlineStoreUnavailable | None:
        """``rows`` and those still unsent to Redis; what remains unsent when it fails stays for later."""
        for row in rows:  # newest value per key wins; older unsent ones are superseded
            self.unsent_online[(row["entity_type"], row["entity_id"], row["window"])] = row
        if self.unsent_online:
            try:
                await asyncio.to_thread(self.sinks.write_online, list(self.unsent_online.values()))
            except OnlineStoreUnavailable as exc:
                return exc
            self.unsent_online = {}
        return None

    async def flush(self) -> None:
        async with self.lock:
            self.last_flush = self.last_online = time.monotonic()
            if self.retry_plan is None:
                # Catching up, current values are history already: Redis gets them every few seconds.
                online = not self.behind() or self.last_flush - self.last_online_cut >= _BEHIND_ONLINE_S
                self.retry_plan = self.folder.cut(self.watermark_ms(), online)
                if online:
                    self.last_online_cut = self.last_flush
            plan = self.retry_plan
            try:
                await asyncio.to_thread(self.sinks.write_offline, plan)
            except Exception:  # a full disk, a broken file system: keep the plan, retry it next flush
                log.exception("offline write failed (done: %s); retrying at the next flush", sorted(plan.done))
                return
            self.retry_plan = None
            error = await self._send_online(plan.online)
            if error is not None:
                log.warning("online store unavailable (%d rows wait for the next flush): %s",
                            len(self.unsent_online), error)
                return  # nothing is acknowledged until Redis has the values too
            sends, self.dead_sends = self.dead_sends, []
            if sends:
                await asyncio.gather(*sends)  # dead letters delivered before their records are acked
            tokens = self.folder.release(plan)  # plans are cumulative: this covers earlier failed ones
            ack = self.app.consumer.ack
            for message in tokens:
                ack(message)
            self.acked += len(tokens)
            self._report(plan)
            self._maybe_compact()

    def _maybe_compact(self) -> None:
        """Start a compaction of the dataset in a thread every ``compact_interval``, and a merge of
        the small files every ``merge_interval`` between them (never two at once)."""
        if self.compaction is not None and not self.compaction.done():
            return
        from only1mcp.jobs.compact import SMALL_FILE_BYTES, compact

        worker, now = self.settings.worker, time.monotonic()
        if worker.compact_interval and now - self.last_compact >= worker.compact_interval:
            self.last_compact = self.last_merge = now
            action, max_bytes = "compacted", None
        elif worker.merge_interval and now - self.last_merge >= worker.merge_interval:
            self.last_merge = now
            action, max_bytes = "merged", SMALL_FILE_BYTES
        else:
            return
        self.compaction = asyncio.ensure_future(
            asyncio.to_thread(compact, self.settings.store.data_dir, max_bytes=max_bytes))
        self.compaction.add_done_callback(functools.partial(_log_compaction, action))

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


def _log_compaction(action: str, future: asyncio.Future[Any]) -> None:
    if future.cancelled():
        return
    if future.exception() is not None:  # the next interval tries again; the data is intact either way
        log.warning("%s failed: %r", "compaction" if action == "compacted" else "merge", future.exception())
        return
    stats = future.result()
    files = sum(s.files_before - s.files_after for s in stats.values())
    if files:
        log.log(logging.INFO if action == "compacted" else logging.DEBUG,
                "%s: %d files fewer, %d duplicate rows removed", action, files,
                 sum(s.rows_before - s.rows_after for s in stats.values()))


def install(app: WorkerApp, settings: Settings, **kwargs: Any) -> FeatureWorker:
    """Register the feature agent (a batch handler on ``mcp.requests``) and its flush timer on
    ``app``; returns the worker state."""
    worker = FeatureWorker(app, settings, **kwargs)
    partitions = settings.worker.partitions
    source = app.topic(TOPICS["requests"], key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw", partitions=partitions)
    worker.dead_topic = app.topic(TOPICS["dead_letter"], key_type=bytes, value_type=bytes, key_serializer="raw",
                                  value_serializer="raw", partitions=partitions)
    app.batch_topic(source, worker.on_batch)
    if settings.learning.enabled:
        from only1mcp.streams.routing import install as install_routing

        worker.routing = install_routing(app, settings)
    if settings.anomaly.enabled:
        from only1mcp.streams.anomaly import install as install_anomaly

        worker.anomaly = install_anomaly(app, settings)

    @app.timer(min(worker.online_interval, worker.flush_interval))
    async def idle_flush() -> None:  # windows close and acks go out even when no record arrives
        if worker.started is not None:
            await worker.maybe_flush()

    return worker
