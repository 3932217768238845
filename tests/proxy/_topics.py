"""Reading what the proxy put on the broker, for tests."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer

from only1mcp.events import TOPICS, RequestEvent


def request_events(bootstrap: str, wanted: set[str], timeout: float = 20.0) -> dict[str, RequestEvent]:
    """The request events on mcp.requests whose ids are ``wanted`` (read from the start, a fresh consumer)."""
    async def read() -> dict[str, RequestEvent]:
        consumer = AIOKafkaConsumer(TOPICS["requests"], bootstrap_servers=bootstrap, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        found: dict[str, RequestEvent] = {}
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and set(found) != wanted:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        event = RequestEvent.from_json(record.value)
                        if event.event_id in wanted:
                            found[event.event_id] = event
        finally:
            await consumer.stop()
        return found

    return asyncio.run(read())
