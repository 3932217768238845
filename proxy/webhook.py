"""An alert webhook: JSON bodies POSTed to one URL from a background task, never from the caller.

``send`` only puts the body on a bounded queue (a full queue drops it, counted), so neither routing
nor the decision channel ever waits on a slow or dead receiver. Each POST has a short total timeout;
failures (connection refused, timeout, a non-2xx answer, a drop) are counted and logged rate-limited.
The URL may be a credential (a Slack hook's path is): status and logs show it redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

import aiohttp
import orjson

from only1mcp.proxy.redact import redact_url

__all__ = ["Webhook"]

log = logging.getLogger("only1mcp.webhook")
_LOG_EVERY_S = 30.0


class Webhook:
    def __init__(self, url: str, timeout: float = 2.0, queue_size: int = 256) -> None:
        self.url, self.timeout = url, timeout
        self.shown = redact_url(url, keep_path=False)  # what status() and the log say
        self.sent = 0
        self.failures = 0
        self.last_error = ""
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._logged_at = -math.inf

    def send(self, payload: dict[str, Any]) -> None:
        """Queue one POST; returns at once (must be called on the event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="only1mcp-webhook")
        try:
            self._queue.put_nowait(orjson.dumps(payload))
        except asyncio.QueueFull:
            self._failed(f"queue full ({self._queue.maxsize} waiting), alert dropped")

    def status(self) -> dict[str, Any]:
        return {"url": self.shown, "sent": self.sent, "failures": self.failures, "queued": self._queue.qsize(),
                "last_error": self.last_error or None}

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _run(self) -> None:
        # Its own client session: a receiver that hangs must not hold connections the upstreams need.
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                body = await self._queue.get()
                try:
                    async with http.post(self.url, data=body, headers={"content-type": "application/json"}) as resp:
                        await resp.read()
                        if resp.status >= 300:
                            self._failed(f"answered HTTP {resp.status}")
                            continue
                    self.sent += 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # refused, reset, timed out: count it and go on with the next
                    self._failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def _failed(self, why: str) -> None:
        self.failures += 1
        self.last_error = why = why.replace(self.url, self.shown)  # aiohttp's InvalidURL quotes the URL
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_S:
            self._logged_at = now
            log.warning("remediation webhook %s failed: %s (%d failures so far)", self.shown, why, self.failures)
