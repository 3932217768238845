"""Publishing decision records (routing weights now; remediation and prefetch later) from a worker.

Every decision kind is refreshed often (about once a second), so a lost tick costs nothing: the
publisher never blocks its caller, drops ticks while a send is still under way, and logs an
outage once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["DecisionPublisher"]

log = logging.getLogger(__name__)
_PRODUCER_TIMEOUT_MS = 5000


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
        from aiokafka import AIOKafkaProducer

        try:
            if self.producer is None:
                producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, request_timeout_ms=_PRODUCER_TIMEOUT_MS,
                                            linger_ms=5, acks=1, client_id=self.client_id)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self.producer = producer
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
            try:
                await asyncio.wait_for(producer.stop(), 5.0)
            except Exception:
                pass
