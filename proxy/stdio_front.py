"""The stdio front: the whole gateway as one MCP server on stdin/stdout, for desktop clients.

Newline-delimited JSON-RPC, one client, one session. Requests run concurrently;
everything the proxy says goes through one writer so lines never interleave.
Logs go to stderr only: stdout belongs to the protocol.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import orjson

from only1mcp.errors import INVALID_REQUEST, PARSE_ERROR
from only1mcp.proxy.gateway import Gateway, Sink
from only1mcp.proxy.http_front import invalid, rpc_error
from only1mcp.proxy.sessions import ClientSession
from only1mcp.proxy.telemetry import new_request_id

__all__ = ["serve_stdio"]

log = logging.getLogger("only1mcp.stdio")


class _Writer:
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __call__(self, message: dict[str, Any]) -> int:
        data = orjson.dumps(message) + b"\n"
        self._stream.write(data)
        self._stream.flush()
        return len(data)


async def serve_stdio(gateway: Gateway, reader: asyncio.StreamReader | None = None, out: Any = None) -> None:
    loop = asyncio.get_running_loop()
    if reader is None:
        reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    write = _Writer(out or sys.stdout.buffer)
    await gateway.start()
    session: ClientSession | None = None
    tasks: set[asyncio.Task[Any]] = set()
    drain: asyncio.Task[None] | None = None
    try:
        while line := await reader.readline():
            if not line.strip():
                continue
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                write(rpc_error(PARSE_ERROR, f"Parse error: {exc.msg}"))
                continue
            problem = invalid(message)
            if problem:
                write(rpc_error(INVALID_REQUEST, problem, message.get("id") if isinstance(message, dict) else None))
                continue
            if message.get("method") == "initialize" and "id" in message:
                params = message.get("params") if isinstance(message.get("params"), dict) else {}
                version = gateway.negotiate(params.get("protocolVersion"))
                session = ClientSession("stdio", version, params.get("capabilities") or {},
                                        params.get("clientInfo") or {})
                gateway.sessions.attach(session)
                if drain is None:
                    drain = loop.create_task(_drain(session, write))
                write({"jsonrpc": "2.0", "id": message["id"], "result": gateway.initialize_result(version)})
                continue
            if session is None:
                if "id" in message and "method" in message:
                    write(rpc_error(INVALID_REQUEST, "the session is not initialized: send initialize first",
                                    message["id"]))
                continue
            if "method" not in message:
                try:
                    session.answer(message)
                except Exception as exc:
                    log.info("unexpected response from client: %s", exc)
                continue
            task = loop.create_task(_serve(gateway, message, session, write, len(line)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        if drain is not None:
            drain.cancel()
        await gateway.stop()


async def _serve(gateway: Gateway, message: dict[str, Any], session: ClientSession, write: _Writer,
                 size: int) -> None:
    if "id" in message:
        session.calls[message["id"]] = asyncio.current_task()  # type: ignore[assignment]
    started, wall = time.perf_counter(), time.time()
    context = gateway.telemetry.begin(new_request_id()) if "id" in message else None
    try:
        reply = await gateway.handle(message, session, Sink(session, write))
    except asyncio.CancelledError:
        return  # cancelled by the client: no answer is expected
    finally:
        session.calls.pop(message.get("id"), None)
    if reply is not None:
        sent = write(reply)
        gateway.telemetry.finish(context, message, reply, started, wall, size, sent, session.id, "stdio")


async def _drain(session: ClientSession, write: _Writer) -> None:
    while True:
        write(await session.outbox.get())
