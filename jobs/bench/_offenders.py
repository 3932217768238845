"""Abusive MCP clients, for the flood tests and ``only1mcp bench floods``.

Each offender does one bad thing to a Streamable HTTP endpoint and reports what it got
back: a session flood (``initialize`` without end, never DELETE), a slowloris body (one
byte at a time), an SSE reader that stops reading while the server streams (a raw socket
with a small receive buffer), and an inflight flood (many calls at once on one session
or, stateless, from one client). Raw sockets where the HTTP client would hide the
behaviour; aiohttp where it would not.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from only1mcp.jobs.bench._procs import peak_rss_kib, rss_kib  # noqa: F401  re-exported (the flood tests use them here)

__all__ = ["ACCEPT", "VERSION", "STATELESS", "Reply", "initialize", "session_flood", "slow_body", "stalled_sse",
           "inflight_flood", "stateless_call", "rss_kib", "peak_rss_kib", "parse_http", "sse_messages"]

ACCEPT = "application/json, text/event-stream"
VERSION = "2025-11-25"
STATELESS = "2026-07-28"
_META = "io.modelcontextprotocol/"
_ids = itertools.count(1)


@dataclass
class Reply:
    """What one request got: HTTP status, the JSON-RPC error code (if any), Retry-After, seconds taken."""

    status: int
    code: int | None = None
    message: str = ""
    retry_after: str | None = None
    elapsed_s: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.status}" + (f"/{self.code}" if self.code is not None else "")


def _headers(token: str | None, sid: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if sid:
        headers["Mcp-Session-Id"] = sid
        headers["MCP-Protocol-Version"] = VERSION
    headers.update(extra or {})
    return headers


def _error_of(body: bytes) -> tuple[int | None, str, dict[str, Any]]:
    """The JSON-RPC error of a JSON or SSE body (the last message carrying one), if any."""
    is_sse = body.startswith((b"event:", b"data:", b":", b"id:"))  # id: a session stream's priming event
    for message in reversed(sse_messages(body) if is_sse else [_json(body)]):
        if isinstance(message, dict) and isinstance(message.get("error"), dict):
            error = message["error"]
            return error.get("code"), str(error.get("message", "")), error.get("data") or {}
    return None, "", {}


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def sse_messages(body: bytes) -> list[Any]:
    """The JSON messages of the ``data:`` lines of an SSE body (incomplete trailing events are skipped)."""
    found: list[Any] = []
    data: list[bytes] = []
    for line in body.split(b"\n"):
        line = line.rstrip(b"\r")
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif not line and data:
            message = _json(b"\n".join(data))
            if message is not None:
                found.append(message)
            data = []
    return found


async def _post(http: aiohttp.ClientSession, url: str, message: dict[str, Any],
                headers: Mapping[str, str]) -> tuple[Reply, bytes, Mapping[str, str]]:
    started = time.perf_counter()
    async with http.post(url, data=orjson.dumps(message), headers=headers) as resp:
        body = await resp.read()
        code, text, data = _error_of(body)
        reply = Reply(resp.status, code, text, resp.headers.get("Retry-After"), time.perf_counter() - started, data)
        return reply, body, resp.headers


def _initialize_message() -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": next(_ids), "method": "initialize",
            "params": {"protocolVersion": VERSION, "capabilities": {},
                       "clientInfo": {"name": "only1mcp-offender", "version": "0"}}}


async def initialize(http: aiohttp.ClientSession, url: str, token: str | None) -> tuple[Reply, str | None]:
    """One initialize (and notifications/initialized when it worked); the reply and the session id."""
    reply, _body, headers = await _post(http, url, _initialize_message(), _headers(token))
    sid = headers.get("Mcp-Session-Id") if reply.status == 200 else None
    if sid:
        await _post(http, url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, _headers(token, sid))
    return reply, sid


async def session_flood(url: str, token: str | None, count: int, concurrency: int = 8,
                        seconds: float | None = None) -> tuple[Counter[str], list[Reply]]:
    """``count`` initializes (or as many as fit in ``seconds``), never ended; replies by "status/code"."""
    replies: list[Reply] = []
    left = iter(range(count))
    deadline = time.perf_counter() + seconds if seconds else None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=30)) as http:
        async def worker() -> None:
            for _ in left:
                if deadline is not None and time.perf_counter() > deadline:
                    return
                reply, _sid = await initialize(http, url, token)
                replies.append(reply)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Counter(r.key for r in replies), replies


def _address(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"


def _request_head(url: str, headers: Mapping[str, str], length: int) -> bytes:
    host, port, path = _address(url)
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {length}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_http(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and de-chunked body of one raw HTTP/1.1 response."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return 0, {}, raw
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding", "").lower() != "chunked":
        return status, headers, rest
    body = bytearray()
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2:]
    return status, headers, bytes(body)


async def _raw_connection(url: str, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port, _path = _address(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:  # before connecting, so the advertised window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await asyncio.open_connection(sock=sock, limit=rcvbuf or 2 ** 16)


async def _read_to_eof(reader: asyncio.StreamReader, timeout: float, chunk: int = 65536,
                       pause: float = 0.0) -> tuple[bytes, bool]:
    """Read until the server closes, even abruptly (True), or ``timeout`` passes (False); ``pause`` s
    between reads."""
    data = bytearray()
    deadline = time.perf_counter() + timeout
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return bytes(data), False
        try:
            part = await asyncio.wait_for(reader.read(chunk), left)
        except asyncio.TimeoutError:
            return bytes(data), False
        except ConnectionError:  # reset: the server closed while this side was still sending
            return bytes(data), True
        if not part:
            return bytes(data), True
        data += part
        if pause:
            await asyncio.sleep(pause)


async def slow_body(url: str, token: str | None, sid: str | None, interval: float = 0.2,
                    give_up_s: float = 60.0) -> tuple[Reply, bool]:
    """A POST whose body comes one byte every ``interval`` s: the reply, and whether the server then closed."""
    message = orjson.dumps({"jsonrpc": "2.0", "id": next(_ids), "method": "ping", "params": {"pad": "x" * 200}})
    headers = {k: v for k, v in _headers(token, sid).items()}
    reader, writer = await _raw_connection(url)
    started = time.perf_counter()
    writer.write(_request_head(url, headers, len(message)))

    async def dribble() -> None:
        try:
            for byte in message[:-1]:  # never the last one
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(interval)
        except ConnectionError:
            pass

    sender = asyncio.ensure_future(dribble())
    try:
        raw, closed = await _read_to_eof(reader, give_up_s)
    finally:
        sender.cancel()
        writer.close()
    status, resp_headers, body = parse_http(raw)
    code, text, data = _error_of(body)
    return Reply(status, code, text, resp_headers.get("retry-after"), time.perf_counter() - started, data), closed


def chatter_call(count: int, size: int, request_id: int | None = None) -> dict[str, Any]:
    request_id = request_id if request_id is not None else next(_ids)
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": "faults__chatter", "arguments": {"count": count, "size": size},
                       "_meta": {"progressToken": f"p{request_id}"}}}


@dataclass
class StreamOutcome:
    status: int
    bytes_read: int  # of the response body, de-chunked
    progress: int  # progress notifications received
    closed: bool  # the server closed the connection
    code: int | None  # the final JSON-RPC error code, if one arrived
    elapsed_s: float


async def stalled_sse(url: str, token: str | None, sid: str, count: int, size: int, stall_s: float,
                      pause: float = 0.0, rcvbuf: int = 8192, read_chunk: int = 8192,
                      give_up_s: float = 30.0) -> StreamOutcome:
    """Call ``faults__chatter`` (a long progress stream) on a raw socket, read nothing for ``stall_s``,
    then read to the end, ``read_chunk`` bytes every ``pause`` s (0: as fast as possible)."""
    message = orjson.dumps(chatter_call(count, size))
    headers = _headers(token, sid, {"Accept": "text/event-stream, application/json"})
    reader, writer = await _raw_connection(url, rcvbuf)
    started = time.perf_counter()
    writer.write(_request_head(url, headers, len(message)) + message)
    await writer.drain()
    await asyncio.sleep(stall_s)
    try:
        raw, closed = await _read_to_eof(reader, give_up_s, read_chunk, pause)
    finally:
        writer.close()
    status, _headers_, body = parse_http(raw)
    messages = sse_messages(body)
    progress = sum(1 for m in messages if isinstance(m, dict) and m.get("method") == "notifications/progress")
    code = None
    if messages and isinstance(messages[-1], dict) and isinstance(messages[-1].get("error"), dict):
        code = messages[-1]["error"].get("code")
    return StreamOutcome(status, len(body), progress, closed, code, time.perf_counter() - started)


def stateless_call(tool: str, arguments: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 tools/call and the headers it needs (besides auth)."""
    message = {"jsonrpc": "2.0", "id": next(_ids), "method": "tools/call",
               "params": {"name": tool, "arguments": arguments,
                          "_meta": {f"{_META}protocolVersion": STATELESS, f"{_META}clientCapabilities": {}}}}
    return message, {"MCP-Protocol-Version": STATELESS, "Mcp-Method": "tools/call", "Mcp-Name": tool}


async def inflight_flood(url: str, token: str | None, sid: str | None, count: int, seconds: float,
                         timeout_s: float = 60.0) -> tuple[Counter[str], list[Reply]]:
    """``count`` calls of ``faults__sleep(seconds)`` at once: on session ``sid``, or stateless without one."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
        async def one() -> Reply:
            if sid is None:
                message, extra = stateless_call("faults__sleep", {"seconds": seconds})
                headers = _headers(token, None, extra)
            else:
                message = {"jsonrpc": "2.0", "id": next(_ids), "method": "tools/call",
                           "params": {"name": "faults__sleep", "arguments": {"seconds": seconds}}}
                headers = _headers(token, sid)
            try:
                reply, _body, _h = await _post(http, url, message, headers)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                return Reply(0, None, f"{type(exc).__name__}: {exc}")
            return reply

        replies = list(await asyncio.gather(*(one() for _ in range(count))))
    return Counter(r.key for r in replies), replies


# -- run as a process by ``only1mcp bench floods``: one offender for a while, outcomes as JSON --------------
KINDS = ("session_flood", "slowloris", "slow_sse", "inflight_flood")


async def offend(kind: str, url: str, token: str, seconds: float, scale: float = 1.0) -> dict[str, Any]:
    """Run offender ``kind`` for ``seconds`` (``scale`` < 1 makes it smaller); its outcomes by kind."""
    deadline = time.perf_counter() + seconds
    outcomes: Counter[str] = Counter()
    attempts = 0

    def running() -> bool:
        return time.perf_counter() < deadline

    if kind == "session_flood":
        counts, replies = await session_flood(url, token, 10 ** 9, concurrency=4, seconds=seconds)
        outcomes.update(counts)
        attempts = len(replies)
    elif kind == "slowloris":
        async def dribbler() -> None:
            nonlocal attempts
            async with aiohttp.ClientSession() as http:
                _reply, sid = await initialize(http, url, token)
            while running():
                reply, closed = await slow_body(url, token, sid, interval=0.2, give_up_s=30.0)
                attempts += 1
                outcomes[reply.key + ("" if closed else " (left open)")] += 1

        await asyncio.gather(*(dribbler() for _ in range(max(1, int(50 * scale)))))
    elif kind == "slow_sse":
        async def reader() -> None:
            nonlocal attempts
            async with aiohttp.ClientSession() as http:
                _reply, sid = await initialize(http, url, token)
            assert sid is not None
            while running():
                # Each stream is followed to its end (the proxy closes it within the write timeout), even past
                # the deadline: "left open" would mean a hang.
                outcome = await stalled_sse(url, token, sid, 2000, 30_000, stall_s=2.0, give_up_s=30.0)
                attempts += 1
                if not outcome.closed:
                    outcomes["left open"] += 1
                elif outcome.code is not None:
                    outcomes[f"closed/{outcome.code}"] += 1
                else:
                    outcomes["closed (dropped)"] += 1

        await asyncio.gather(*(reader() for _ in range(max(1, int(4 * scale)))))
    elif kind == "inflight_flood":
        # Keeps n calls outstanding on one session: each accepted one sleeps until the end, each refused one
        # is sent again after the Retry-After it got (so about n - cap refusals a second).
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=seconds + 30)) as http:
            _reply, sid = await initialize(http, url, token)

            async def holder() -> None:
                nonlocal attempts
                while running():
                    message = {"jsonrpc": "2.0", "id": next(_ids), "method": "tools/call",
                               "params": {"name": "faults__sleep",
                                          "arguments": {"seconds": max(0.1, deadline - time.perf_counter())}}}
                    try:
                        reply, _body, _h = await _post(http, url, message, _headers(token, sid))
                    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                        reply = Reply(0, None, type(exc).__name__)
                    attempts += 1
                    outcomes[reply.key] += 1
                    if reply.status != 200:
                        await asyncio.sleep(float(reply.retry_after or 1))

            await asyncio.gather(*(holder() for _ in range(max(50, int(1000 * scale)))))
    else:
        raise ValueError(f"unknown offender {kind!r} (known: {', '.join(KINDS)})")
    return {"kind": kind, "attempts": attempts, "outcomes": dict(outcomes)}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="run one abusive MCP client for a while")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(offend(args.kind, args.url, args.token, args.seconds, args.scale))
    except Exception as exc:  # reported in the benchmark's table, not as a crash
        result = {"kind": args.kind, "attempts": 0, "outcomes": {}, "error": f"{type(exc).__name__}: {exc}"}
    with open(args.out, "wb") as fh:
        fh.write(orjson.dumps(result))
    print(orjson.dumps(result).decode(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
