"""Every partition of ``mcp.requests`` for an agent that must see the whole fleet.

The feature agent folds only the partitions its worker owns. The routing and anomaly agents
publish fleet-wide decisions (weights per server, verdicts per replica), which partial views would
contradict; so in a group of several workers the one holding partition 0 runs an
:class:`EveryPartition` reader — its own aiokafka consumer, no group, from the end — and the others
stay passive. One worker holding every partition learns from what it folds (``mode() == "fold"``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from only1mcp.events import TOPICS

__all__ = ["EveryPartition", "mode"]

log = logging.getLogger(__name__)
_CONSUMER_TIMEOUT_MS = 5000


def mode(assigned: set[int] | None, total: int) -> str:
    """``fold`` (this worker holds every partition, or no consumer yet), ``own`` (it holds
    partition 0 among others'), or ``passive``."""
    if assigned is None or len(assigned) >= total:
        return "fold"
    return "own" if 0 in assigned else "passive"


class EveryPartition:
    """A background task feeding ``observe`` with every valid event of mcp.requests from now on,
    decoded and checked as the feature agent does (it dead-letters the rest)."""

    def __init__(self, bootstrap: str, observe: Callable[[list[dict[str, Any]]], None], client_id: str,
                 log_once: Callable[..., None]) -> None:
        self.bootstrap, self.observe, self.client_id, self.log_once = bootstrap, observe, client_id, log_once
        self.read = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start reading (a no-op when already reading, or outside a running loop: a sync caller)."""
        if self.running:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = asyncio.ensure_future(self._run())

    def stop_soon(self) -> None:
        """:meth:`stop` from sync code inside the loop (a tick)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from only1mcp.events import EventDecodeError, RequestEvent
        from only1mcp.streams.agents import _check

        consumer = AIOKafkaConsumer(TOPICS["requests"], bootstrap_servers=self.bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="latest",
                                    request_timeout_ms=_CONSUMER_TIMEOUT_MS, client_id=self.client_id)
        try:
            while True:
                try:
                    await consumer.start()
                    break
                except Exception as exc:
                    self.log_once("own-start", f"{self.client_id}: cannot read mcp.requests yet ({exc!r}); retrying")
                    await asyncio.sleep(1.0)
            decode = RequestEvent.fields_from_json
            while True:
                try:
                    batches = await consumer.getmany(timeout_ms=500, max_records=2000)
                except Exception as exc:  # the broker away: aiokafka reconnects by itself
                    self.log_once("own-read", f"{self.client_id}: reading mcp.requests failed ({exc!r}); retrying")
                    await asyncio.sleep(0.5)
                    continue
                records = []
                for batch in batches.values():
                    for message in batch:
                        try:
                            record = decode(message.value)
                        except (EventDecodeError, TypeError, ValueError):
                            continue  # the feature agent dead-letters it
                        if _check(record) is None:
                            records.append(record)
                if records:
                    try:
                        self.observe(records)
                    except Exception:
                        self.log_once("own-observe", f"{self.client_id}: failed to learn from a batch", exc_info=True)
                self.read += len(records)
        finally:
            try:
                await consumer.stop()
            except Exception:
                pass
