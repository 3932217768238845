"""FreshPublisher (streams/publisher.py) with a stand-in producer: never blocks the caller, sends what
waits in one batch, drops what expired while waiting and a batch the broker refused."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from only1mcp.streams import publisher as publisher_module
from only1mcp.streams.publisher import FreshPublisher


@dataclass
class Record:
    name: str
    valid_until: float

    def to_json(self) -> bytes:
        return self.name.encode()


class Producer:
    def __init__(self, fail: bool = False, delay: float = 0.0) -> None:
        self.sent: list[bytes] = []
        self.fail, self.delay = fail, delay

    async def send(self, topic: str, value: bytes, key: bytes) -> Any:
        if self.fail:
            raise ConnectionError("broker gone")
        self.sent.append(value)
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(self.delay, future.set_result, None)
        return future

    async def stop(self) -> None:
        pass


def _with(producer: Producer, monkeypatch: pytest.MonkeyPatch) -> FreshPublisher:
    async def start(bootstrap: str, client_id: str) -> Producer:
        return producer

    monkeypatch.setattr(publisher_module, "_start_producer", start)
    return FreshPublisher("x:1", "mcp.prefetch", key=lambda r: r.name, max_waiting=3)


def test_batches_wait_while_one_is_sent_and_expired_ones_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = Producer(delay=0.2)
    pub = _with(producer, monkeypatch)

    async def scenario() -> None:
        now = time.time()
        pub.publish([Record("a", now + 30)])
        await asyncio.sleep(0.05)  # "a" is on its way
        pub.publish([Record("x", now + 30), Record("b", now + 0.1), Record("c", now + 30)])  # b expires waiting
        pub.publish([Record("d", now + 30)])  # past max_waiting (3): the oldest waiting (x) goes
        await asyncio.sleep(0.6)
        await pub.close()

    asyncio.run(scenario())
    assert producer.sent == [b"a", b"c", b"d"] and pub.sent == 3 and pub.lost == 1 and pub.expired == 1


def test_a_refused_batch_is_dropped_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = Producer(fail=True)
    pub = _with(producer, monkeypatch)

    async def scenario() -> None:
        pub.publish([Record("a", time.time() + 30), Record("b", time.time() + 30)])
        await asyncio.sleep(0.1)
        producer.fail = False
        await asyncio.sleep(0.3)
        pub.publish([Record("c", time.time() + 30)])
        await asyncio.sleep(0.1)
        await pub.close()

    asyncio.run(scenario())
    assert producer.sent == [b"c"] and pub.failed == 1 and pub.lost == 2
