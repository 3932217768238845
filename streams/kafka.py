"""Faust's Kafka transport (the aiokafka driver) with what the worker needs beyond it.

Two things Faust does not expose:

- **The fetch wait.** Faust builds its consumer with ``fetch_max_wait_ms=1500``. A broker that
  holds an empty fetch to its deadline (tansu does, even when data arrives meanwhile) then
  delivers fresh events up to 1.5 s late, more than the freshness budget. The worker's app sets
  ``WorkerSettings.fetch_max_wait`` instead (100 ms by default).
- **When a partition was last fetched.** A partition looks caught up when the worker's position
  reaches the highwater mark of the last fetch answer; while the broker is unreachable that
  answer grows old and says nothing. The watermark (streams/agents.py) trusts "caught up" only
  from a recent answer, so this module reports its age.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from faust.transport import drivers
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as _Consumer
from faust.transport.drivers.aiokafka import Transport as _Transport

__all__ = ["WorkerApp", "Transport"]

log = logging.getLogger(__name__)


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

    def last_fetch_ms(self, tp: Any) -> int | None:
        return self._thread.last_fetch_ms(tp)


class Transport(_Transport):
    Consumer = _WorkerConsumer


class WorkerApp(faust.App):
    """A Faust app whose Kafka consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    fetch_max_wait_ms: int = 1500

    def _new_transport(self) -> Any:
        url = self.conf.broker_consumer[0]
        if drivers.by_url(url) is not _Transport:  # another driver was asked for: leave it alone
            return super()._new_transport()
        return Transport(self.conf.broker_consumer, self)
