"""Request events to Kafka: never blocking a call, spooled to disk while the broker is away,
replayed in order when it returns.

How an event travels:

- ``emit`` appends it to a bounded memory queue (``queue_size``) and returns. When the queue
  is full, or while anything is waiting in the spool, it is written to the spool instead
  (append-only files, see ``spool.py``): once one event went to disk, every later one goes
  there too until the spool is drained, so the order of one proxy's events is kept.
- A background task takes batches (``batch_size``, waiting up to ``linger_ms`` for a full
  one) from the queue, or, when the queue is empty, from the spool, and sends them with
  aiokafka (``acks="all"``) to ``topic``, keyed by the replica (``None`` → no key). One batch
  is in flight at a time, so batches land in order.
- When a send fails the unsent events go back in front of the spool; while the broker is
  unreachable or stalled (no answer for ``stall_s``) the memory queue moves to the spool.
  Nothing is lost unless the spool's disk budget (``spool_max_bytes``) is exhausted: then
  new events are dropped, counted and logged.
- A spooled event is acknowledged (and forgotten) only after the broker confirmed it; the
  events a previous process left in the spool are replayed first.

Delivery is at least once. A batch that times out and is sent again may land twice (the
first attempt may still arrive); consumers deduplicate on ``event_id``. The producer is
idempotent when the broker allows it (Apache Kafka). The embedded ``tansu`` broker answers
InitProducerId with an error, so there the sink falls back to a plain producer
(``counters()["idempotent"]`` says which). A broker frozen for less than the request timeout
(``request_timeout_ms``, 30 s here) only delays the batch in flight: it is answered once,
after the broker resumes, and sent once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from only1mcp.events import RequestEvent
from only1mcp.streaming import EventSettings

from .spool import Spool, request_event_line

__all__ = ["KafkaSink", "default_spool_dir"]

log = logging.getLogger("only1mcp.events")
T = TypeVar("T")

_QUEUE, _SPOOL = "queue", "spool"


def default_spool_dir(settings: EventSettings) -> Path:
    """``settings.spool_dir``, or a folder per proxy id under the system temp dir."""
    if settings.spool_dir:
        return Path(settings.spool_dir)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", settings.proxy_id or "default")
    return Path(tempfile.gettempdir()) / "only1mcp-spool" / name


def _encode(event: Any) -> bytes:
    # orjson serialises a dataclass directly, in field order: the same bytes as
    # RequestEvent.to_json(), ten times faster (no dataclasses.asdict).
    return orjson.dumps(event)


def _key_of(replica: Any) -> bytes | None:
    return replica.encode() if isinstance(replica, str) else None


class KafkaSink:
    """An :class:`~only1mcp.proxy.events.base.EventSink` writing to Kafka through aiokafka."""

    def __init__(self, settings: EventSettings, *, spool_dir: str | os.PathLike[str] | None = None,
                 segment_bytes: int = 4 * 1024 * 1024, stall_s: float = 1.0, stop_timeout_s: float = 5.0,
                 request_timeout_ms: int = 30_000, idempotence: bool | None = None,
                 producer_options: dict[str, Any] | None = None) -> None:
        if not settings.bootstrap:
            raise ValueError("KafkaSink needs settings.bootstrap (use NullSink when events are off)")
        self.settings = settings
        self.topic = settings.topic
        self.stall_s = stall_s
        self.stop_timeout_s = stop_timeout_s
        self.request_timeout_ms = request_timeout_ms
        self.producer_options = dict(producer_options or {})
        self._idempotence = idempotence  # None: try, fall back to a plain producer if refused
        self.idempotent: bool | None = None
        self.spool = Spool(spool_dir or default_spool_dir(settings), settings.spool_max_bytes, settings.fsync,
                           segment_bytes=segment_bytes, check=request_event_line)
        self._queue: collections.deque[RequestEvent] = collections.deque()
        self._queue_size = settings.queue_size
        self._batch_size = settings.batch_size
        self._linger_s = settings.linger_ms / 1000.0
        self._spooling = self.spool.pending > 0  # leftovers of a previous run go first
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: Any = None
        self._inflight: tuple[str, list[Any]] | None = None
        self._closing = False
        self._closed = False
        self._broker_up = False
        # counters
        self.emitted = 0
        self.delivered = 0
        self.dropped = 0  # besides the spool's own (budget) drops
        self.send_errors = 0
        self._error_logged_at = float("-inf")

    # -- the hot path ------------------------------------------------------------------------

    def emit(self, event: RequestEvent) -> None:
        """Queue one event for delivery; never blocks, never raises."""
        try:
            self.emitted += 1
            if self._closed:
                self.dropped += 1
                return
            if not isinstance(event, RequestEvent):
                raise TypeError(f"not a RequestEvent: {type(event).__name__}")
            queue = self._queue
            if self._spooling or len(queue) >= self._queue_size:
                self._spooling = True
                self.spool.append((_encode(event),))
                self._wake.set()
                return
            queue.append(event)
            depth = len(queue)
            if depth == 1 or depth == self._batch_size:
                self._wake.set()
        except Exception:  # a full disk, a bad object: count it, never fail the call
            self.dropped += 1
            self._log_error("could not take an event", exc_info=True)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the delivery task (it connects in the background: a broker that is away only
        means the events go to the spool until it comes)."""
        if self._task is None:
            self._wake = asyncio.Event()  # bound to the running loop
            self._wake.set()
            self._task = asyncio.create_task(self._run(), name="only1mcp-events")

    async def stop(self, timeout_s: float | None = None) -> None:
        """Deliver what can be delivered within ``timeout_s`` (``stop_timeout_s``), then keep the
        rest on disk for the next start, and close the producer."""
        if self._closed:
            return
        timeout_s = self.stop_timeout_s if timeout_s is None else timeout_s
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except (asyncio.TimeoutError, Exception):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._closed = True
        # What is still in memory is older than what is in the spool: put it in front.
        leftovers: list[bytes] = []
        if self._inflight is not None and self._inflight[0] == _QUEUE:
            leftovers.extend(value for _key, value in self._inflight[1])
        self._inflight = None
        leftovers.extend(value for _key, value in self._encode_batch(list(self._queue)))
        self._queue.clear()
        if leftovers:
            self.spool.prepend(leftovers)
        self.spool.close()
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(producer.stop(), 1.0)
        self._broker_up = False
        if self.spool.pending:
            log.info("events: %d left in the spool %s for the next start", self.spool.pending, self.spool.directory)

    def counters(self) -> dict[str, Any]:
        spool = self.spool.counters()
        return {
            "emitted": self.emitted,
            "delivered": self.delivered,
            "spooled": spool["spooled"],
            "replayed": spool["replayed"],
            "dropped": self.dropped + spool["dropped"] + spool["corrupt"],  # damaged spool records are lost too
            "spool_corrupt": spool["corrupt"],
            "queue_depth": len(self._queue),
            "spool_depth": spool["spool_depth"],
            "spool_bytes": spool["spool_bytes"],
            "broker_up": self._broker_up,
            "idempotent": self.idempotent,
            "send_errors": self.send_errors,
        }

    # -- the delivery task -------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end delivery for good: log, wait, go on
                self._log_error("events: delivery task failed; restarting it", exc_info=True)
                if self._closing:
                    return
                await asyncio.sleep(1.0)

    async def _loop(self) -> None:
        backoff = 0.1
        while True:
            if self._producer is None:
                if self._closing:
                    return
                if not await self._connect():
                    self._evacuate()
                    await self._pause(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
            source, items = await self._next_batch()
            if not items:
                if self._closing:
                    return
                continue
            ok = await self._deliver(source, items)
            if ok:
                backoff = 0.1
            else:
                self._evacuate()
                if self._closing:
                    return
                await self._pause(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _pause(self, seconds: float) -> None:
        self.spool.sync()
        if self._closing:
            return
        await asyncio.sleep(seconds)

    async def _next_batch(self) -> tuple[str, list[tuple[bytes | None, bytes]]]:
        """The next batch to send, oldest first: the memory queue, then the spool."""
        while True:
            if self._queue:
                deadline = time.monotonic() + self._linger_s
                while len(self._queue) < self._batch_size and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wake.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), remaining)
                batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
                items = self._encode_batch(batch)
                if not items:
                    continue
                return _QUEUE, items
            if self.spool.pending:
                self.spool.sync()
                items = []
                lines = self.spool.read(self._batch_size)
                for line in lines:
                    try:
                        doc = orjson.loads(line)
                        if not isinstance(doc, dict):
                            raise ValueError("not a JSON object")
                    except ValueError:  # a torn last line after a crash, or damage
                        self.dropped += 1
                        self._log_error(f"events: dropped an unreadable spool line ({line[:80]!r})")
                        items.append(None)
                        continue
                    items.append((_key_of(doc.get("replica")), line))
                if items and all(item is None for item in items):
                    self.spool.ack(len(items))
                    continue
                if any(item is None for item in items):  # drop the bad lines, keep positions simple
                    good = [item for item in items if item is not None]
                    self.spool.ack(len(items))
                    self.spool.prepend([value for _key, value in good])
                    continue
                return _SPOOL, items
            # Nothing to send: everything spooled is delivered, so events may use memory again.
            self._spooling = False
            self.spool.sync()
            if self._closing:
                return _QUEUE, []
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(self._linger_s, 0.05) * 5)

    def _encode_batch(self, events: list[RequestEvent]) -> list[tuple[bytes | None, bytes]]:
        items = []
        for event in events:
            try:
                items.append((_key_of(event.replica), _encode(event)))
            except Exception as exc:  # a field orjson cannot encode: drop that event, not the batch
                self.dropped += 1
                self._log_error(f"events: dropped an event that does not encode ({type(exc).__name__}: {exc})")
        return items

    async def _deliver(self, source: str, items: list[tuple[bytes | None, bytes]]) -> bool:
        """Send one batch and wait for the broker; True when every event landed."""
        self._inflight = (source, items)  # left set if cancelled: stop() spools it
        try:
            results = await self._watch(self._send(items))
        except Exception as exc:  # nothing known to have landed: all of it goes back
            results = [exc] * len(items)
        self._inflight = None
        failed = [item for item, result in zip(items, results) if result is not None]
        landed = len(items) - len(failed)
        self.delivered += landed
        if source == _SPOOL:
            if landed:  # some partitions took theirs: forget the batch, put the rest back in front
                self.spool.ack(len(items))
                if failed:
                    self.spool.prepend([value for _key, value in failed])
        elif failed:
            self._spooling = True
            # Older than the queue and than the spool: in front of both.
            self.spool.prepend([value for _key, value in failed + self._encode_batch(list(self._queue))])
            self._queue.clear()
        if failed:
            self.send_errors += 1
            self._broker_up = False
            error = next(result for result in results if result is not None)
            self._log_error(f"events: {len(failed)} of {len(items)} not delivered to {self.topic} "
                            f"({type(error).__name__}: {error}); spooled for retry")
            return False
        if not self._broker_up:
            log.info("events: broker %s is answering", self.settings.bootstrap)
        self._broker_up = True
        return True

    async def _send(self, items: list[tuple[bytes | None, bytes]]) -> list[BaseException | None]:
        producer = self._producer
        futures: list[asyncio.Future[Any]] = []
        error: BaseException | None = None
        for key, value in items:
            try:
                futures.append(await producer.send(self.topic, value=value, key=key))
            except Exception as exc:  # the accumulator timed out, the message is too large, …
                error = exc
                break
        results = await asyncio.gather(*futures, return_exceptions=True)
        out: list[BaseException | None] = [r if isinstance(r, BaseException) else None for r in results]
        out.extend([error] * (len(items) - len(out)))
        return out

    async def _watch(self, work: Awaitable[T]) -> T:
        """Await ``work``; each ``stall_s`` without an answer, mark the broker down and move the
        memory queue to the spool, so a frozen broker costs no memory and loses nothing."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.stall_s)
                if done:
                    return task.result()
                if self._broker_up:
                    log.warning("events: broker %s not answering for %.1fs; spooling",
                                self.settings.bootstrap, self.stall_s)
                self._broker_up = False
                self._evacuate()
        finally:
            if not task.done():
                task.cancel()

    def _evacuate(self) -> None:
        """Move the memory queue in front of the spool (it is older than what is spooled)."""
        if self._queue:
            self._spooling = True
            self.spool.prepend([value for _key, value in self._encode_batch(list(self._queue))])
            self._queue.clear()
        self.spool.sync()

    async def _connect(self) -> bool:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaConnectionError

        choices = [self._idempotence] if self._idempotence is not None else [True, False]
        for idempotent in choices:
            options = {"bootstrap_servers": self.settings.bootstrap, "acks": "all",
                       "enable_idempotence": idempotent, "request_timeout_ms": self.request_timeout_ms,
                       "client_id": f"only1mcp-{self.settings.proxy_id or 'proxy'}",
                       "max_batch_size": 256 * 1024, **self.producer_options}
            producer = AIOKafkaProducer(**options)
            try:
                await self._watch(producer.start())
            except KafkaConnectionError as exc:
                await self._close_quietly(producer)
                self._broker_up = False
                self._log_error(f"events: broker {self.settings.bootstrap} unreachable ({exc}); spooling")
                return False
            except Exception as exc:
                await self._close_quietly(producer)
                if idempotent and self._idempotence is None:
                    # tansu refuses InitProducerId: fall back to a plain producer, once and for all.
                    log.info("events: broker refused an idempotent producer (%s: %s); using a plain one",
                             type(exc).__name__, exc)
                    self._idempotence = False
                    continue
                self._broker_up = False
                self._log_error(f"events: producer did not start ({type(exc).__name__}: {exc}); spooling")
                return False
            self._producer = producer
            self.idempotent = idempotent
            self._broker_up = True
            return True
        return False

    @staticmethod
    async def _close_quietly(producer: Any) -> None:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(producer.stop(), 2.0)

    def _log_error(self, message: str, exc_info: bool = False, every_s: float = 10.0) -> None:
        now = time.monotonic()
        if now - self._error_logged_at >= every_s:
            self._error_logged_at = now
            log.warning(message, exc_info=exc_info)

