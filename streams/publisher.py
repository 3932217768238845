"""Publishing records from a worker, never blocking the caller.

- :class:`DecisionPublisher`: decisions refreshed often (routing weights, about once a second), so
  a lost tick costs nothing: it drops ticks while a send is still under way and logs an outage once.
- :class:`QueuedPublisher`: records that must not be lost (an anomaly's open and close, a restore):
  a bounded queue, sent in order, retried until the broker takes them (at least once: a retried
  batch may arrive twice; ``anomaly_id`` + ``state`` tell). Refreshes may share it as *droppable*
  records: skipped while anything is queued, so a backlog never fills with stale refreshes.
- :class:`FreshPublisher`: decisions worth something only until their ``valid_until`` (prefetch):
  sent a batch at a time in the background; what comes meanwhile waits (bounded), what expired
  while waiting is dropped, a failed batch is dropped, never retried.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["DecisionPublisher", "QueuedPublisher", "FreshPublisher"]

log = logging.getLogger(__name__)
_PRODUCER_TIMEOUT_MS = 5000
_BATCH = 500
_RETRY_S = (0.2, 2.0)  # first and longest wait between retries of a batch


async def _start_producer(bootstrap: str, client_id: str) -> Any:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=_PRODUCER_TIMEOUT_MS,
                                linger_ms=5, acks=1, client_id=client_id)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


class DecisionPublisher:
    """Sends decision records with its own aiokafka producer, never blocking the caller: each
    :meth:`publish` starts a background send; while one is still under way (the broker is slow or
    gone) the next ticks are dropped and counted. Failures are logged once per outage."""

    def __init__(self, bootstrap: str, topic: str, key: Callable[[Any], str] = lambda record: record.server,
                 client_id: str = "only1mcp-routing") -> None:
        self.bootstrap, self.topic, self.key, self.client_id = bootstrap, topic, key, client_id
        self.producer: Any = None
        self.pending: asyncio.Task[None] | None = None
        self.sent = self.dropped = self.failed = 0
        self.down_since: float | None = None

    def publish(self, records: Sequence[Any]) -> bool:
        """Start sending ``records``; False (dropped) while the previous send is not done."""
        if self.pending is not None and not self.pending.done():
            self.dropped += 1
            return False
        self.pending = asyncio.ensure_future(self._send(records))
        return True

    async def _send(self, records: Sequence[Any]) -> None:
        try:
            if self.producer is None:
                self.producer = await _start_producer(self.bootstrap, self.client_id)
            sends = [await self.producer.send(self.topic, r.to_json(), key=self.key(r).encode()) for r in records]
            if sends:
                await asyncio.gather(*sends)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed += 1
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.warning("%s: records not delivered (%s: %s); dropping ticks until Kafka at %s answers",
                            self.topic, type(exc).__name__, exc, self.bootstrap)
            return
        self.sent += len(records)
        if self.down_since is not None:
            log.info("%s: delivered again after %.1f s (%d ticks failed, %d dropped so far)", self.topic,
                     time.monotonic() - self.down_since, self.failed, self.dropped)
            self.down_since = None

    async def close(self) -> None:
        if self.pending is not None and not self.pending.done():
            self.pending.cancel()
            try:
                await self.pending
            except BaseException:
                pass
        if self.producer is not None:
            producer, self.producer = self.producer, None
            await _stop(producer)


class QueuedPublisher:
    """(topic, record) pairs from a bounded queue, in order, with one aiokafka producer; a failed
    batch is retried (backing off) until it is delivered. Past ``max_queued`` the oldest records go
    (counted in ``lost``, logged). :meth:`close` tries to deliver what is left for a few seconds."""

    def __init__(self, bootstrap: str, key: Callable[[Any], str], client_id: str = "only1mcp-anomaly",
                 max_queued: int = 10_000) -> None:
        self.bootstrap, self.key, self.client_id, self.max_queued = bootstrap, key, client_id, max_queued
        self.queue: collections.deque[tuple[str, Any]] = collections.deque()
        self.producer: Any = None
        self.task: asyncio.Task[None] | None = None
        self.sending = False
        self.sent = self.dropped = self.lost = self.failed = 0
        self.down_since: float | None = None

    def publish(self, topic: str, records: Sequence[Any], droppable: bool = False) -> bool:
        """Queue ``records`` for ``topic``; ``droppable`` ones are skipped (False) while anything waits."""
        if not records:
            return True
        if droppable and (self.queue or self.sending):
            self.dropped += len(records)
            return False
        for record in records:
            if len(self.queue) >= self.max_queued:
                self.queue.popleft()
                if self.lost == 0:
                    log.error("%s: more than %d records waiting for Kafka at %s: dropping the oldest",
                              topic, self.max_queued, self.bootstrap)
                self.lost += 1
            self.queue.append((topic, record))
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._drain())
        return True

    @property
    def waiting(self) -> int:
        return len(self.queue)

    async def _drain(self) -> None:
        delay = _RETRY_S[0]
        while self.queue:
            batch = [self.queue.popleft() for _ in range(min(_BATCH, len(self.queue)))]
            self.sending = True
            try:
                if self.producer is None:
                    self.producer = await _start_producer(self.bootstrap, self.client_id)
                send = self.producer.send
                futures = [await send(topic, r.to_json(), key=self.key(r).encode()) for topic, r in batch]
                await asyncio.gather(*futures)
            except asyncio.CancelledError:
                self.queue.extendleft(reversed(batch))
                raise
            except Exception as exc:
                self.failed += 1
                self.queue.extendleft(reversed(batch))  # first again: order is kept
                while len(self.queue) > self.max_queued:
                    self.queue.popleft()
                    self.lost += 1
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    log.warning("%d records not delivered (%s: %s); retrying until Kafka at %s answers",
                                len(batch), type(exc).__name__, exc, self.bootstrap)
                await asyncio.sleep(delay)
                delay = min(_RETRY_S[1], delay * 2)
                continue
            finally:
                self.sending = False
            delay = _RETRY_S[0]
            self.sent += len(batch)
            if self.down_since is not None:
                log.info("records delivered again after %.1f s (%d waiting)", time.monotonic() - self.down_since,
                         len(self.queue))
                self.down_since = None

    async def close(self, timeout_s: float = 5.0) -> None:
        if self.queue and (self.task is None or self.task.done()):
            self.task = asyncio.ensure_future(self._drain())
        if not await _finish(self.task, timeout_s) and self.queue:
            log.warning("%d records not delivered at stop (Kafka at %s)", len(self.queue), self.bootstrap)
        if self.producer is not None:
            producer, self.producer = self.producer, None
            await _stop(producer)


class FreshPublisher:
    """Records with a ``valid_until``, sent by one background task with its own producer, never
    blocking the caller: each :meth:`publish` adds to a bounded buffer (past ``max_waiting`` the
    oldest go, counted in ``lost``); the task sends what waits in one batch, drops records already
    expired (``expired``), and drops a batch the broker refused (``failed`` batches, ``lost``
    records; logged once per outage): a late prefetch decision is worth nothing."""

    def __init__(self, bootstrap: str, topic: str, key: Callable[[Any], str], client_id: str = "only1mcp-prefetch",
                 max_waiting: int = 10_000) -> None:
        self.bootstrap, self.topic, self.key, self.client_id = bootstrap, topic, key, client_id
        self.max_waiting = max_waiting
        self.waiting: collections.deque[Any] = collections.deque()
        self.producer: Any = None
        self.task: asyncio.Task[None] | None = None
        self.sent = self.expired = self.lost = self.failed = 0
        self.down_since: float | None = None

    def publish(self, records: Sequence[Any]) -> None:
        for record in records:
            if len(self.waiting) >= self.max_waiting:
                self.waiting.popleft()
                self.lost += 1
            self.waiting.append(record)
        if self.waiting and (self.task is None or self.task.done()):
            self.task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while self.waiting:
            now = time.time()
            batch = [r for r in self.waiting if r.valid_until > now]
            self.expired += len(self.waiting) - len(batch)
            self.waiting.clear()
            if not batch:
                return
            try:
                if self.producer is None:
                    self.producer = await _start_producer(self.bootstrap, self.client_id)
                send = self.producer.send
                await asyncio.gather(*[await send(self.topic, r.to_json(), key=self.key(r).encode()) for r in batch])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failed += 1
                self.lost += len(batch)
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    log.warning("%s: %d decisions not delivered (%s: %s); dropping them until Kafka at %s answers",
                                self.topic, len(batch), type(exc).__name__, exc, self.bootstrap)
                await asyncio.sleep(_RETRY_S[0])  # new decisions wait meanwhile (bounded); expired ones go
                continue
            self.sent += len(batch)
            if self.down_since is not None:
                log.info("%s: delivered again after %.1f s (%d decisions lost meanwhile)", self.topic,
                         time.monotonic() - self.down_since, self.lost)
                self.down_since = None

    async def close(self, timeout_s: float = 2.0) -> None:
        await _finish(self.task, timeout_s)
        if self.producer is not None:
            producer, self.producer = self.producer, None
            await _stop(producer)


async def _finish(task: asyncio.Task[None] | None, timeout_s: float) -> bool:
    """Give a sending task ``timeout_s`` to end, then cancel it; whether it ended by itself."""
    if task is None or task.done():
        return True
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout_s)
        return True
    except (asyncio.TimeoutError, Exception):
        task.cancel()
        try:
            await task
        except BaseException:
            pass
        return False


async def _stop(producer: Any) -> None:
    """Stop a producer, giving up after 5 s: a worker that stops must not hang on a gone broker."""
    try:
        await asyncio.wait_for(producer.stop(), 5.0)
    except Exception:
        pass
