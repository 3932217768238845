"""Faust's Kafka transport (the aiokafka driver) with what the worker needs beyond it.

Three things Faust does not offer:

- **Batch delivery.** Faust hands a stream one event per message, and its consumer wraps each
  delivery in ``Service.wait_first`` (two tasks and an ``asyncio.wait`` per message): measured
  with py-spy, about a fifth of the worker's CPU went there, more than the features themselves.
  A topic registered with :meth:`WorkerApp.batch_topic` is subscribed, consumed and acked
  through Faust as usual, but its messages go to one handler a fetch at a time, as a list of
  Faust messages; the handler acks them through ``app.consumer.ack`` when their work is durable.
- **The fetch wait.** Faust builds its consumer with ``fetch_max_wait_ms=1500``. A broker that
  holds an empty fetch to its deadline (tansu does, even when data arrives meanwhile) then
  delivers fresh events up to 1.5 s late, more than the freshness budget. The worker's app sets
  ``WorkerSettings.fetch_max_wait`` instead (100 ms by default).
- **When a partition was last fetched.** A partition looks caught up when the worker's position
  reaches the highwater mark of the last fetch answer; while the broker is unreachable that
  answer grows old and says nothing. The watermark (streams/agents.py) trusts "caught up" only
  from a recent answer, so this module reports its age.

Batch delivery keeps one rule of Faust's streams: a message fetched before a rebalance is never
handled after it (:func:`current_messages`). A fetch's messages reach their handler after the
whole fetch was read, and a handler awaits (flushes, sends): a rebalance may revoke the partitions
meanwhile, and even give them back to this worker, which then replays them from the committed
offset. A stale message handled then is out of place: the entity stage would fold records from
*after* the committed offset into the partition's fresh state before the replay of the records
before them, so the marks they carry close windows whose events are still to be replayed (those
events are then late: lost windows); and a partition given to another worker would grow a second,
orphaned state here that writes windows and watermarks beside its new owner's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.transport import drivers
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as _Consumer
from faust.transport.drivers.aiokafka import Transport as _Transport

__all__ = ["WorkerApp", "Transport", "BatchHandler", "current_messages", "rebalancing", "request_partitions"]

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[Any]], Awaitable[None]]  # Faust messages of one topic, in fetch order


def rebalancing(app: Any) -> bool:
    """A rebalance is under way: Faust suspends its flow control when partitions are revoked and
    resumes it once the consumer has sought the new assignment's committed offsets."""
    flow = getattr(app, "flow_control", None)
    return flow is not None and not flow.is_active()


def current_messages(app: Any, messages: list[Any]) -> list[Any]:
    """The messages a handler may still process: none while a rebalance is under way
    (:func:`rebalancing`), and of the others only those fetched in the group's current generation,
    as Faust's streams do. The rest are neither processed nor acknowledged: their partition's owner
    (this worker or another) reads them again from the committed offset."""
    if rebalancing(app):
        return []
    generation = getattr(app, "consumer_generation_id", None)
    if generation is None:
        return messages
    return [m for m in messages if getattr(m, "generation_id", generation) == generation]


class _ConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka keeps the constructor argument here and hands it to its fetcher at start().
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise RuntimeError("this aiokafka keeps no _fetch_max_wait_ms: streams/kafka.py needs updating")
        consumer._fetch_max_wait_ms = int(getattr(self.app, "fetch_max_wait_ms", 1500))
        log.info("Kafka consumer: fetch_max_wait_ms=%d", consumer._fetch_max_wait_ms)
        return consumer

    def last_fetch_ms(self, tp: Any) -> int | None:
        """Wall-clock ms of the last fetch answer that covered ``tp`` (None: none yet)."""
        consumer = self._consumer
        if consumer is None:
            return None
        try:
            return consumer.last_poll_timestamp(tp)
        except (AssertionError, KeyError):  # not (or no longer) assigned: a rebalance is under way
            return None


class _WorkerConsumer(_Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def _first_read(self) -> dict[Any, int]:
        """TP → offset of the first record delivered since the partition was assigned."""
        found = self.__dict__.get("_only1mcp_first_read")
        if found is None:
            found = self.__dict__["_only1mcp_first_read"] = {}
        return found

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Faust forgets the acknowledged-but-uncommitted offsets of revoked partitions before it
        # would commit them (and commits nothing here with stream_wait_empty off): the new owner
        # re-read up to a commit interval of records. Commit what is acknowledged first.
        try:
            await self.commit(set(revoked))
        except Exception as exc:  # the group moved on already: the new owner replays a little more
            log.info("commit before revocation failed: %r", exc)
        for tp in revoked:
            self._first_read.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any, generation_id: int = 0) -> None:
        for tp in assigned:
            self._first_read.pop(tp, None)
        await super().on_partitions_assigned(assigned, generation_id)

    def _new_offset(self, tp: Any) -> int | None:
        """The offset to commit: the end of the run of acknowledged offsets that starts exactly
        where the partition's committed position is.

        Faust's own version commits the first run of consecutive acknowledged offsets wherever
        it starts when the partition has no committed offset yet (or it is 0), and accepts a run
        starting one past it: with acknowledgements out of order (ours wait for windows to close,
        records that close nothing go at once), it committed records still held, and a worker
        taking the partition over after a crash never saw them."""
        acked = self._acked[tp]
        if not acked:
            return None
        gaps = self._gap[tp]
        if gaps:  # offsets without a record count as acknowledged (as in Faust)
            top = max(acked)
            spans = sorted(gaps.overlap(0, top), key=lambda entry: entry.begin)
            if spans:
                filler = [n for entry in spans for n in range(entry.begin, entry.end)]
                acked.extend(filler)
                gaps.chop(0, max(filler[-1], top + 1))
        acked.sort()
        start = self._committed_offset[tp]
        if start is None:
            start = self._first_read.get(tp)
        if start is None:
            return None
        index = self._acked_index[tp]
        stale = 0
        while stale < len(acked) and acked[stale] < start:  # committed already
            index.discard(acked[stale])
            stale += 1
        del acked[:stale]
        if not acked or acked[0] != start:
            return None
        end = 1
        while end < len(acked) and acked[end] == acked[end - 1] + 1:
            end += 1
        batch = acked[:end]
        del acked[:end]
        index.difference_update(batch)
        return batch[-1] + 1

    def last_fetch_ms(self, tp: Any) -> int | None:
        return self._thread.last_fetch_ms(tp)

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's drain loop (read offsets, gaps, commit_every, flow control), except that messages
        of batch topics are collected per fetch and handed to their handler in one call."""
        handlers: dict[str, BatchHandler] = getattr(self.app, "batch_handlers", {})
        if not handlers:
            return await super()._drain_messages(fetcher)
        callback, read_offset = self.callback, self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                self.diag.set_flag(CONSUMER_FETCHING)
                await self.sleep(0)  # getmany may return at once for a while: let the loop run
                if self.should_stop:
                    break
                batches: dict[str, list[Any]] = {}
                async for tp, message in self.getmany(timeout=1.0):
                    offset, last = message.offset, read_offset[tp]
                    if last is not None and offset < last:
                        continue  # read already (before a seek back): Faust drops these too
                    if last and offset - last > 1 and acks_enabled_for(tp.topic):
                        await self._add_gap(tp, last + 1, offset)  # offsets no record has: count them acked
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if tp not in self._first_read:
                        self._first_read[tp] = offset
                    if tp.topic in handlers:
                        batches.setdefault(tp.topic, []).append(message)
                    else:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    read_offset[tp] = offset
                for topic, fetched in batches.items():
                    # A handler before this one may have awaited through a rebalance (current_messages).
                    messages = current_messages(self.app, fetched)
                    if messages:
                        await handlers[topic](messages)
                        self._processed(messages)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


    def _processed(self, messages: list[Any]) -> None:
        """What a stream tells Faust's monitor per event, once per batch: its livelock detector
        reports a partition whose records are fetched but never processed, and would say that of
        every batch topic otherwise."""
        monitor, now = self.app.monitor, time.monotonic()
        monitor.events_total += len(messages)
        for tp in {message.tp for message in messages}:
            monitor.stream_inbound_time[tp] = now


class Transport(_Transport):
    Consumer = _WorkerConsumer


class WorkerApp(faust.App):
    """A Faust app whose Kafka consumer waits at most ``fetch_max_wait_ms`` per fetch and can
    deliver a topic's messages in batches (:meth:`batch_topic`)."""

    fetch_max_wait_ms: int = 1500

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_handlers: dict[str, BatchHandler] = {}
        self._batch_topics: list[Any] = []

    def batch_topic(self, topic: Any, handler: BatchHandler) -> None:
        """Consume ``topic`` (one topic name) with ``handler``: each fetch's messages in one call."""
        (name,) = topic.topics
        self.batch_handlers[name] = handler
        self._batch_topics.append(topic)

    async def on_start(self) -> None:
        await super().on_start()
        for topic in self._batch_topics:  # subscribe and enable acks, as an agent's stream would
            self.topics.add(topic)

    def _new_transport(self) -> Any:
        url = self.conf.broker_consumer[0]
        if drivers.by_url(url) is not _Transport:  # another driver was asked for: leave it alone
            if self.batch_handlers:
                raise RuntimeError(f"batch topics need the aiokafka driver, not {url}")
            return super()._new_transport()
        return Transport(self.conf.broker_consumer, self)


def request_partitions(app: Any) -> Callable[[], set[int] | None]:
    """A probe of which ``mcp.requests`` partitions this worker holds now (None before the consumer
    starts): the agents that publish only from the holder of partition 0 ask it every tick."""
    from only1mcp.events import TOPICS

    source = TOPICS["requests"]

    def assignment() -> set[int] | None:
        try:
            assigned = app.consumer.assignment()
        except Exception:  # not started yet
            return None
        return {tp.partition for tp in assigned if tp.topic == source}

    return assignment
