"""stdio transport: one supervised child process speaking newline-delimited JSON-RPC.

The child is spawned by ``start`` and its stderr is logged line by line. When it
exits, the transport reports itself closed; the replica above it restarts it with
backoff (see ``replica.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from only1mcp.proxy.upstream.base import Deliver, TransportClosed

__all__ = ["StdioTransport"]

log = logging.getLogger("only1mcp.upstream.stdio")

_LINE_LIMIT = 64 * 1024 * 1024  # one JSON-RPC message per line; tool results can be large


class StdioTransport:
    def __init__(self, command: Sequence[str], env: Mapping[str, str], cwd: str | None, *, label: str) -> None:
        self.command = list(command)
        self.env = {**os.environ, **env}
        self.cwd = cwd
        self.label = label
        self.process: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._write_lock = asyncio.Lock()
        self._on_closed: Callable[[str], None] | None = None
        self._closing = False

    async def start(self, deliver: Deliver, on_closed: Callable[[str], None]) -> None:
        self._on_closed = on_closed
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self.env, cwd=self.cwd, limit=_LINE_LIMIT,
                start_new_session=True,  # a Ctrl-C to the proxy is not a Ctrl-C to its children
            )
        except OSError as exc:
            raise TransportClosed(f"cannot start {self.command[0]!r}: {exc.strerror or exc}") from exc
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_stdout(deliver)), loop.create_task(self._read_stderr())]

    def initialized(self, protocol_version: str) -> None:
        pass

    async def send(self, message: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        process = self.process
        if process is None or process.stdin is None or process.returncode is not None:
            raise TransportClosed(f"{self.label} is not running")
        try:
            async with self._write_lock:
                process.stdin.write(orjson.dumps(message) + b"\n")
                await process.stdin.drain()
        except (ConnectionError, OSError) as exc:
            raise TransportClosed(f"{self.label}: stdin closed ({exc})") from exc

    async def _read_stdout(self, deliver: Deliver) -> None:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        try:
            while True:
                try:
                    line = await stdout.readline()
                except ValueError:  # a line over the limit: skip it, keep the session
                    log.warning("%s wrote a line over %d bytes; dropped", self.label, _LINE_LIMIT)
                    continue
                if not line:
                    break
                line = line.strip()
                if not line:
                    continue
                try:
                    message = orjson.loads(line)
                except orjson.JSONDecodeError:
                    # Its size only: the line may be a (broken) result, which logs never carry; a
                    # server's own diagnostics belong on stderr, which is logged as it is.
                    log.warning("%s wrote a non-JSON line of %d bytes to stdout; dropped", self.label, len(line))
                    continue
                for item in message if isinstance(message, list) else [message]:
                    if isinstance(item, dict):
                        deliver(item, None)
        finally:
            await self._exited()

    async def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for line in self.process.stderr:
            log.info("[%s] %s", self.label, line.decode("utf-8", "replace").rstrip())

    async def _exited(self) -> None:
        process = self.process
        code = None
        if process is not None:
            try:
                code = await asyncio.wait_for(process.wait(), timeout=5)
            except TimeoutError:
                process.kill()
                code = await process.wait()
        if not self._closing and self._on_closed is not None:
            self._on_closed(f"process exited with code {code}")

    async def close(self) -> None:
        self._closing = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()  # MCP stdio shutdown: close stdin, then escalate
        try:
            await asyncio.wait_for(process.wait(), timeout=2)
        except TimeoutError:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=2)
            except TimeoutError:
                process.kill()
                await process.wait()
        for task in self._tasks:
            task.cancel()
