"""The feature agent: ``mcp.requests`` in, events re-keyed by entity, features out; ack when durable.

Two stages in one worker (why: streams/repartition.py):

1. **Read** ``mcp.requests`` a fetch at a time (``WorkerApp.batch_topic``, streams/kafka.py:
   Faust's per-message delivery cost more CPU than the features). Per record:
   ``RequestEvent.fields_from_json`` (the checks of ``from_json``, as a dict); a record that
   does not decode (or has an impossible time or latency) goes to ``mcp.dead-letter`` with the
   reason, and the agent goes on. Valid events are forwarded, as slices, to
   ``mcp.feature-events`` with their source partition's watermark, and their raw rows wait for
   the next flush. A source record is acknowledged once its raw row is in Parquet and its slices
   (or its dead letter) are on the broker.
2. **Fold** ``mcp.feature-events`` (streams/entity_stage.py) into pane partials with the pure
   functions of ``feature_store.compute`` (no Faust table: windowed-table updates cap near 5k
   events/s and are not allowed inside ``stream.take()``). Every ``online_interval`` the
   current values of the entities that changed go to Redis (freshness); every
   ``flush_interval`` each partition's folder cuts a plan that the sinks write — closed windows
   to Parquet, the partition's watermark to its state file, current values to Redis — and only
   then are the covered records acknowledged (at least once; streams/folding.py says why
   replays do not double count). The session events folded go to the prefetch agent
   (streams/prefetch.py), a fetch at a time.

The source watermark (which windows may close) follows event time, with the wall clock standing
in for partitions that are caught up — but only when "caught up" is known: from a fetch answered
in the last ``grace / 2`` seconds, and not within ``outage_hold`` of a time the broker stopped
answering. While the broker is away the proxies spool their events; once it is back they
replay them, in order, with their original times. Closing windows on the wall clock then would
make every spooled event late; holding the wall clock back lets the replay arrive first.
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
from only1mcp.streams.entity_stage import EntityStage
from only1mcp.streams.kafka import WorkerApp, current_messages, rebalancing
from only1mcp.streams.repartition import Slice, SliceDecodeError, encode_slice, split
from only1mcp.streams.sinks import Sinks, load_partition_closed

__all__ = ["FeatureWorker", "install", "BATCH_MAX"]

log = logging.getLogger(__name__)
_BEHIND_ONLINE_S = 5.0  # while catching up, how often current values go to Redis
BATCH_MAX = 2000  # records folded between flush checks: bounds the time the loop folds before it yields
_TS_RANGE = (946_684_800.0, 7_258_118_400.0)  # 2000-01-01 .. 2200-01-01: anything else is a broken clock
_OLD = -(1 << 62)
_RECENT_IDS = 200_000  # event ids remembered to drop producer retries before they are stored again


def _check(record: dict[str, Any]) -> str | None:
    """Why a decoded event (its fields) cannot be used, or None."""
    ts, latency_ms = record["ts"], record["latency_ms"]
    if not (math.isfinite(ts) and _TS_RANGE[0] <= ts <= _TS_RANGE[1]):
        return f"ts {ts!r} is not a plausible unix time"
    if not (math.isfinite(latency_ms) and latency_ms >= 0):
        return f"latency_ms {latency_ms!r} is not a non-negative number"
    return None


class FeatureWorker:
    """State and I/O of the agent: read, forward, fold, dead-letter, flush, ack."""

    def __init__(self, app: WorkerApp, settings: Settings, *, online: RedisOnlineStore | None = None) -> None:
        self.app, self.settings = app, settings
        worker, store = settings.worker, settings.store
        self.source_topic, self.entity_topic = TOPICS["requests"], TOPICS["feature_events"]
        self.stage = EntityStage([*worker.tumbling, *worker.hopping], worker.grace,
                                 lambda partition: load_partition_closed(store.data_dir, worker.group, partition, _OLD))
        # A Redis outage costs one flush a few short retries, then the plan waits for the next flush.
        self.online = online or RedisOnlineStore.from_settings(store, backoff_policy(attempts=3, cap_s=0.5))
        self.sinks = Sinks(store.data_dir, worker.group, self.online)
        self.flush_interval, self.online_interval = worker.flush_interval, worker.online_interval
        self.stale_ms = int(worker.grace * 500)  # a fetch answer older than this no longer says "caught up"
        self.outage_hold_ms = int(worker.outage_hold * 1000)
        self.unreachable_ms = _OLD  # wall-clock ms the broker was last seen not answering
        self.dead_topic: Any = None
        self.entity_channel: Any = None  # the Faust topic of mcp.feature-events
        self.targets: int | None = None  # its partition count
        self.pending_raw: list[dict[str, Any]] = []  # stage 1: raw rows for the next flush
        self.pending_sources: list[Any] = []  # stage 1: source records acked once rows and sends are durable
        self.sends: list[asyncio.Future[Any]] = []  # slices and dead letters on their way to the broker
        self.unsent_online: dict[tuple[str, str, str], dict[str, Any]] = {}  # waiting for Redis
        self.next_offset: dict[Any, int] = {}  # TP → offset after the last record read
        self.max_ms: dict[Any, int] = {}  # source TP → newest event time forwarded
        self.last_flush = self.last_online = self.last_online_cut = self.last_compact = self.last_merge = time.monotonic()
        self.compaction: asyncio.Future[Any] | None = None
        self.lock = asyncio.Lock()  # flushes, and the end of a rebalance
        self.send_lock = asyncio.Lock()  # slices of a batch and the marks after it leave in order
        self.started: float | None = None  # first record read: the rate counts from there
        self.acked, self.last_report, self.forwarded, self.duplicates, self.last_raw = 0, 0.0, 0, 0, 0
        self.recent_ids: dict[str, None] = {}  # insertion-ordered: the oldest goes first
        self.routing: Any = None  # the routing agent (streams/routing.py), fed every valid record
        self.anomaly: Any = None  # the anomaly agent (streams/anomaly.py), fed every valid record
        self.prefetch: Any = None  # the prefetch agent (streams/prefetch.py), fed the session events folded

    # -- stage 1: mcp.requests -----------------------------------------------------------------

    def _target_count(self) -> int:
        """Partitions of mcp.feature-events (and, for the stage, of mcp.requests), read once from
        the consumer's metadata; the settings' count for what it does not know yet."""
        if self.targets is None:
            try:
                partitions = self.app.consumer.topic_partitions
                targets, sources = partitions(self.entity_topic), partitions(self.source_topic)
            except Exception:  # not started
                targets = sources = None
            self.stage.sources = sources or self.settings.worker.partitions
            self.targets = targets or self.settings.worker.partitions
        return self.targets

    def _current(self, messages: list[Any]) -> list[Any]:
        """Messages this worker may still process: fetched in the group's current generation, no
        rebalance under way (streams/kafka.py, current_messages), of partitions it holds. Asked
        again wherever a handler awaited (each part of a fetch, after a dead letter): a fetch made
        before a rebalance may be handed over after it, a revoked partition's records are its new
        owner's (its folder here would write windows and a watermark file beside the new owner's),
        and a partition given back to this worker is replayed from the committed offset (folded
        before that replay, later records' marks would close windows whose events the replay still
        holds: those events would be late, their windows lost or short)."""
        messages = current_messages(self.app, messages)
        try:
            assigned = self.app.consumer.assignment()
        except Exception:  # not started: nothing to compare with
            return messages
        return [m for m in messages if m.tp in assigned]

    async def on_batch(self, messages: list[Any]) -> None:
        """The messages of one fetch of mcp.requests (streams/kafka.py), a bounded batch at a time."""
        for start in range(0, len(messages), BATCH_MAX):
            batch = self._current(messages[start:start + BATCH_MAX])  # each time: the last flush awaited
            if batch:
                await self.read(batch)
            await self.maybe_flush()

    async def read(self, messages: list[Any]) -> None:
        if self.started is None:
            self.started = time.monotonic()
        valid: list[dict[str, Any]] = []
        by_source: list[tuple[int, dict[str, Any]]] = []
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
                event_id = record["event_id"]
                if event_id in self.recent_ids:  # a producer retry: stored and forwarded once
                    self.duplicates += 1
                    continue
                self.recent_ids[event_id] = None
                if len(self.recent_ids) > _RECENT_IDS:
                    del self.recent_ids[next(iter(self.recent_ids))]
                t_ms = math.floor(record["ts"] * 1000)
                if t_ms > self.max_ms.get(message.tp, _OLD):
                    self.max_ms[message.tp] = t_ms
                valid.append(record)
                by_source.append((message.partition, record))
                continue
            await self.dead_letter(message, reason)
        self.pending_raw += valid
        await self.forward(split(by_source, self._target_count()))
        # Only now: a flush that takes these records must find their rows and sends taken before them.
        self.pending_sources += messages
        if valid:
            if self.anomaly is not None:  # first: a crash's failures reach the down rule without delay
                self.anomaly.observe(valid)  # never raises
            if self.routing is not None:
                self.routing.observe(valid)  # never raises

    async def forward(self, slices: dict[tuple[int, int], Slice]) -> None:
        """Send ``slices`` and, to every target partition, the marks of the source partitions."""
        async with self.send_lock:
            marks = self.source_marks()
            targets = self._target_count()
            for source, mark in marks.items():
                for target in range(targets):
                    slices.setdefault((source, target), Slice(source, None)).mark_ms = mark
            for (_source, target), piece in slices.items():
                if piece.rows or piece.mark_ms is not None:
                    self.forwarded += len(piece.rows)
                    self.sends.append(await self.entity_channel.send(value=encode_slice(piece), partition=target))

    async def dead_letter(self, message: Any, reason: str) -> None:
        raw = message.value
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        key = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else message.key
        letter = DeadLetter(topic=message.topic, partition=message.partition, offset=message.offset, reason=reason,
                            consumer=self.settings.worker.group, ts=time.time(), key=key, value=text)
        log.warning("dead letter %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)
        self.sends.append(await self.dead_topic.send(key=message.key, value=letter.to_json()))

    def watch_fetches(self) -> None:
        """Note when the broker stopped answering: a caught-up partition whose last fetch answer is
        stale. Its own timer, because a flush waits for the broker (its sends) and would notice
        only once the broker is back, when fresh answers hide that it was away."""
        consumer, now_ms = self.app.consumer, int(time.time() * 1000)
        try:
            assigned = consumer.assignment()
        except Exception:  # not started yet
            return
        for tp in assigned:
            if tp.topic == self.source_topic:
                fetched = consumer.last_fetch_ms(tp)
                if fetched is not None and now_ms - fetched > self.stale_ms:
                    self.unreachable_ms = now_ms
                    return

    def source_marks(self) -> dict[int, int]:
        """Per assigned source partition, the event time it has passed: caught up (known from a
        recent fetch answer) counts as now; behind counts as its newest forwarded event; a
        partition not read yet has no mark."""
        consumer, now_ms, marks = self.app.consumer, int(time.time() * 1000), {}
        if rebalancing(self.app):  # the partitions are being revoked: their next owner speaks for them
            return {}
        try:
            assigned = consumer.assignment()
        except Exception:  # not started yet
            return {}
        holding = now_ms - self.unreachable_ms < self.outage_hold_ms  # just back: spooled events still coming
        for tp in assigned:
            if tp.topic != self.source_topic:
                continue
            try:
                highwater = consumer.highwater(tp)
            except AssertionError:  # revoked under us
                continue
            position = self.next_offset.get(tp)
            if position is None:  # nothing read from it in this run: where the group left off
                position = consumer._committed_offset.get(tp) or 0
            fetched = consumer.last_fetch_ms(tp)
            if highwater is not None and position >= highwater and fetched is not None:
                if now_ms - fetched > self.stale_ms:  # the broker stopped answering: the mark stays put
                    self.unreachable_ms, holding = now_ms, True
                elif not holding:
                    marks[tp.partition] = now_ms
                    continue
            if tp in self.max_ms:
                marks[tp.partition] = self.max_ms[tp]
        return marks

    # -- stage 2: mcp.feature-events -----------------------------------------------------------

    async def on_entity_batch(self, messages: list[Any]) -> None:
        """The messages of one fetch of mcp.feature-events."""
        self._target_count()
        if self.started is None:
            self.started = time.monotonic()
        sessions: list[tuple[int, list[dict[str, Any]]]] = []
        for message in self._current(messages):
            self.next_offset[message.tp] = message.offset + 1
            try:
                found = self.stage.add(message)
            except SliceDecodeError as exc:
                await self.dead_letter(message, f"bad slice: {exc}")
                if not self._current([message]):  # revoked meanwhile: the rest is the new owner's to read
                    return
                self.stage.add_poison(message)
                continue
            if found:
                sessions.append((message.partition, found))
        if sessions and self.prefetch is not None:
            self.prefetch.observe(sessions)  # never raises; publishes in the background
        await self.maybe_flush()

    async def on_revoked(self, revoked: Any) -> None:
        """A rebalance took partitions away: their state goes (the new owner replays them)."""
        async with self.lock:
            gone = {tp.partition for tp in revoked if tp.topic == self.entity_topic}
            self.stage.drop(gone)
            if self.prefetch is not None:
                self.prefetch.drop_partitions(gone)
            for tp in revoked:
                self.next_offset.pop(tp, None)
                self.max_ms.pop(tp, None)
            revoked_set = set(revoked)
            self.pending_sources = [m for m in self.pending_sources if m.tp not in revoked_set]

    # -- flushing ------------------------------------------------------------------------------

    async def tick(self) -> None:
        """Marks go out even when no record arrives (idle partitions close windows), then flushes."""
        if self.started is None:
            return
        await self.forward({})
        await self.maybe_flush()

    async def maybe_flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_flush >= self.flush_interval:
            await self.flush()
        elif now - self.last_online >= self.online_interval and not self.behind():
            await self.flush_online()

    def behind(self) -> bool:
        """More than a batch of records fetched-but-not-read or not fetched yet: catching up, so
        fresh online values can wait for the next flush (they would cost CPU the backlog needs)."""
        consumer, lag = self.app.consumer, 0
        try:
            assigned = consumer.assignment()
        except Exception:  # not started yet
            return False
        for tp, position in list(self.next_offset.items()):
            if tp not in assigned:  # revoked (a batch fetched before the rebalance may have re-added it)
                continue
            try:
                highwater = consumer.highwater(tp)
            except AssertionError:  # aiokafka: "Partition is not assigned" (revoked meanwhile)
                continue
            if highwater is not None:
                lag += max(0, highwater - position)
        return lag > BATCH_MAX

    async def flush_online(self) -> None:
        """The current values of the entities that changed, to Redis; acks wait for the next flush."""
        async with self.lock:
            self.last_online = time.monotonic()
            error = await self._send_online(self.stage.take_online())
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
            if not await self._flush_sources():
                return
            # Catching up, current values are history already: Redis gets them every few seconds.
            online = not self.behind() or self.last_flush - self.last_online_cut >= _BEHIND_ONLINE_S
            if online:
                self.last_online_cut = self.last_flush
            plans = self.stage.plans(online)
            rows: list[dict[str, Any]] = []
            written = {}
            for partition, plan in plans.items():
                try:
                    await asyncio.to_thread(self.sinks.write_offline, plan, partition)
                except Exception:  # a full disk, a broken file system: keep the plan, retry it next flush
                    log.exception("offline write of partition %d failed (done: %s); retrying at the next flush",
                                  partition, sorted(plan.done))
                    continue
                self.stage.retry_plans.pop(partition, None)
                written[partition] = plan
                rows += plan.online
            error = await self._send_online(rows)
            if error is not None:
                log.warning("online store unavailable (%d rows wait for the next flush): %s",
                            len(self.unsent_online), error)
                return  # nothing is acknowledged until Redis has the values too
            sends, self.sends = self.sends, []
            if sends:
                await asyncio.gather(*sends)  # dead letters delivered before their records are acked
            ack, count = self.app.consumer.ack, 0
            for partition, plan in written.items():
                for message in self.stage.release(partition, plan):  # cumulative: covers earlier failed plans
                    ack(message)
                    count += 1
            self.acked += count
            self._report(sum(len(p.closed) for p in written.values()), len(rows))
            self._maybe_compact()

    async def _flush_sources(self) -> bool:
        """Stage 1: raw rows to Parquet, slices and dead letters on the broker, then the source
        records acked. False when a write failed (everything stays for the next flush)."""
        raw, sources = self.pending_raw, self.pending_sources
        self.pending_raw, self.pending_sources = [], []
        try:
            await asyncio.to_thread(self.sinks.write_raw, raw)
        except Exception:
            log.exception("raw write failed (%d rows); retrying at the next flush", len(raw))
            self.pending_raw, self.pending_sources = raw + self.pending_raw, sources + self.pending_sources
            return False
        sends, self.sends = self.sends, []
        try:
            if sends:
                await asyncio.gather(*sends)
        except Exception:  # the producer gave up: unacked, the records come back after a restart
            log.exception("sending slices failed; %d source records stay unacknowledged", len(sources))
            raise
        ack = self.app.consumer.ack
        for message in sources:
            ack(message)
        self.acked += len(sources)
        self.last_raw = len(raw)
        return True

    def _maybe_compact(self) -> None:
        """Start a compaction of the dataset in a thread every ``compact_interval``, and a merge of
        the small files every ``merge_interval`` between them (never two at once). With several
        workers, only the one holding partition 0 of mcp.requests compacts."""
        if self.compaction is not None and not self.compaction.done():
            return
        try:
            if not any(tp.topic == self.source_topic and tp.partition == 0 for tp in self.app.consumer.assignment()):
                return
        except Exception:
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

    def _report(self, closed: int, online: int) -> None:
        """A progress line at most every 10 s at info (every flush at debug)."""
        now, counts = time.monotonic(), self.stage.counts
        elapsed = max(1e-9, now - (self.started or now))
        level = logging.DEBUG
        if now - self.last_report >= 10.0:
            level, self.last_report = logging.INFO, now
        log.log(level, "flush: raw=%d closed=%d online=%d acked=%d held=%d partitions=%s | total forwarded=%d "
                 "folded=%d late=%d dup=%d poison=%d (%.0f ev/s since start)", self.last_raw, closed,
                 online, self.acked, self.stage.held, sorted(self.stage.folders), self.forwarded, counts["events"],
                 counts["late"], counts["duplicates"], counts["poison"], self.forwarded / elapsed)


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
    worker.entity_channel = app.topic(TOPICS["feature_events"], key_type=bytes, value_type=bytes,
                                      key_serializer="raw", value_serializer="raw", partitions=partitions)
    app.batch_topic(source, worker.on_batch)
    app.batch_topic(worker.entity_channel, worker.on_entity_batch)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        await worker.on_revoked(revoked)

    if settings.learning.enabled:
        from only1mcp.streams.routing import install as install_routing

        worker.routing = install_routing(app, settings)
    if settings.anomaly.enabled:
        from only1mcp.streams.anomaly import install as install_anomaly

        worker.anomaly = install_anomaly(app, settings)
    if settings.worker.prefetch.enabled:
        from only1mcp.streams.prefetch import install as install_prefetch

        worker.prefetch = install_prefetch(app, settings)

    @app.timer(min(worker.online_interval, worker.flush_interval))
    async def idle_flush() -> None:  # windows close and acks go out even when no record arrives
        await worker.tick()

    @app.timer(min(worker.online_interval, worker.stale_ms / 2000))
    async def watch_fetches() -> None:  # never waits for the broker (idle_flush may)
        worker.watch_fetches()

    return worker
