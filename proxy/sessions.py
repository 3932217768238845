"""Client sessions at the proxy's front, and the relay of server-to-client requests to them.

A session is what ``initialize`` creates (or, in the stateless revision, a
throw-away context for one request). It holds the negotiated version, the
client's capabilities, its log level and subscriptions, the queue of messages for
its GET stream, and the server-to-client requests awaiting its answer.

The store bounds its memory: at most ``max_sessions`` sessions, at most
``max_per_client`` of them per client identity (token, else address); idle ones are
reaped first, oldest first, before a new one is refused (:class:`SessionLimit`).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from only1mcp.errors import INTERNAL_ERROR, INVALID_REQUEST, REQUEST_TIMEOUT, TOO_MANY_SESSIONS, RPCError

__all__ = ["ClientSession", "SessionStore", "SessionLimit", "LOG_LEVELS"]

LOG_LEVELS = {name: i for i, name in enumerate(
    ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"])}
_OUTBOX_LIMIT = 1000


@dataclass(eq=False)
class ClientSession:
    id: str | None
    protocol_version: str
    capabilities: dict[str, Any] = field(default_factory=dict)
    client_info: dict[str, Any] = field(default_factory=dict)
    log_level: str | None = None  # None: the client set none, so every level is sent
    logs: bool = True  # stateless requests get log messages only when their _meta asks for them
    subscriptions: set[str] = field(default_factory=set)
    last_seen: float = field(default_factory=time.monotonic)
    outbox: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(_OUTBOX_LIMIT))
    calls: dict[Any, asyncio.Task[Any]] = field(default_factory=dict)  # in-flight requests, for cancellation
    inflight: int = 0  # requests being answered now (ids may repeat, so not len(calls))
    client: str = ""  # the identity that created it (token hash or address), for the per-client cap
    replay: Any = None  # its SSE streams' Last-Event-ID buffers (proxy/replay.py), made on first use
    ended: bool = False  # deleted or expired: nothing is buffered for it any more
    context: Any = None  # what its tools/list shows (proxy/context.py View), made on first use
    _asked: dict[Any, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def wants_log(self, level: Any) -> bool:
        if not self.logs:
            return False
        if self.log_level is None:
            return True
        return LOG_LEVELS.get(str(level), 0) >= LOG_LEVELS.get(self.log_level, 0)

    def push(self, message: dict[str, Any]) -> None:
        """Queue an unsolicited message for the GET stream; the oldest is dropped when full."""
        if self.outbox.full():
            self.outbox.get_nowait()
        self.outbox.put_nowait(message)

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    async def ask(self, method: str, params: Any, send: Any, timeout: float) -> Any:
        """Send a server-to-client request through ``send`` and wait for the client's answer."""
        request_id = f"only1mcp-{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._asked[request_id] = future
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        try:
            send(message)
            async with asyncio.timeout(timeout):
                answer = await future
        except TimeoutError:
            raise RPCError(REQUEST_TIMEOUT, f"the client did not answer {method} within {timeout:g} s") from None
        finally:
            self._asked.pop(request_id, None)
        if "error" in answer:
            error = answer["error"] if isinstance(answer["error"], dict) else {}
            raise RPCError(int(error.get("code", INTERNAL_ERROR)), str(error.get("message", "client error")),
                           error.get("data"))
        result = answer.get("result", {})
        if not isinstance(result, dict):  # forwarded as is, the upstream could not read it and would wait
            raise RPCError(INVALID_REQUEST, f"the client answered {method} with a result that is not an object")
        return result

    def close(self) -> None:
        """The client is gone: fail what still waits on its answers."""
        for future in self._asked.values():
            if not future.done():
                future.set_exception(RPCError(REQUEST_TIMEOUT, "the client went away before answering"))

    def answer(self, message: dict[str, Any]) -> None:
        """A response the client posted to one of our requests."""
        future = self._asked.get(message.get("id"))
        if future is None:
            raise RPCError(INVALID_REQUEST, f"no pending request with id {message.get('id')!r}")
        if not future.done():
            future.set_result(message)


class SessionLimit(RPCError):
    """A new session was refused: ``status`` 429 (the client's cap) or 503 (the proxy's), ``retry_after`` seconds."""

    def __init__(self, message: str, status: int, retry_after: int) -> None:
        super().__init__(TOO_MANY_SESSIONS, message, {"retryAfter": retry_after})
        self.status, self.retry_after = status, retry_after


class SessionStore:
    def __init__(self, idle_timeout: float, max_sessions: int = 10_000, max_per_client: int = 1_000) -> None:
        self.idle_timeout, self.max_sessions, self.max_per_client = idle_timeout, max_sessions, max_per_client
        self._sessions: OrderedDict[str, ClientSession] = OrderedDict()  # least recently seen first
        self._by_client: dict[str, dict[str, ClientSession]] = {}
        self._listeners: set[ClientSession] = set()  # stateless subscriptions/listen streams
        self.refused = {"sessions_per_client": 0, "sessions": 0}
        self.on_end: Callable[[ClientSession], None] | None = None  # told of each session that ends

    def configure(self, idle_timeout: float, max_sessions: int, max_per_client: int) -> None:
        """New limits (a reload); sessions already open stay, new ones are judged by these."""
        self.idle_timeout, self.max_sessions, self.max_per_client = idle_timeout, max_sessions, max_per_client

    def create(self, protocol_version: str, capabilities: dict[str, Any], client_info: dict[str, Any],
               client: str = "") -> ClientSession:
        """A new session for ``client``; :class:`SessionLimit` if it or the proxy is at its cap."""
        self.expire()
        mine = self._by_client.get(client)
        if mine is not None and len(mine) >= self.max_per_client:
            self.refused["sessions_per_client"] += 1
            oldest = min(s.last_seen for s in mine.values())  # at most max_per_client of them
            raise SessionLimit(f"Too Many Sessions: this client already holds {len(mine)} sessions (the limit); "
                               "end one with DELETE or let one idle out", 429, self._wait(oldest))
        if len(self._sessions) >= self.max_sessions:
            self.refused["sessions"] += 1
            oldest = next(iter(self._sessions.values())).last_seen
            raise SessionLimit(f"Service Unavailable: the proxy holds {len(self._sessions)} sessions (the limit)",
                               503, self._wait(oldest))
        session = ClientSession(secrets.token_urlsafe(24), protocol_version, capabilities, client_info,
                                client=client)
        self._sessions[session.id] = session  # type: ignore[index]
        if mine is None:
            mine = self._by_client[client] = {}
        mine[session.id] = session  # type: ignore[index]
        return session

    def _wait(self, oldest_seen: float) -> int:
        """Seconds until the given session idles out: when a place frees at the latest."""
        left = oldest_seen + self.idle_timeout - time.monotonic()
        return max(1, min(math.ceil(left), math.ceil(self.idle_timeout)))

    def get(self, session_id: str) -> ClientSession | None:
        session = self._sessions.get(session_id)
        if session is not None:
            now = time.monotonic()
            if now - session.last_seen > self.idle_timeout:
                self._drop(session_id, session)
                return None
            session.last_seen = now
            self._sessions.move_to_end(session_id)
        return session

    def delete(self, session_id: str) -> bool:
        session = self._sessions.get(session_id)
        if session is None:
            return False
        self._drop(session_id, session)
        session.close()
        return True

    def _drop(self, session_id: str, session: ClientSession) -> None:
        del self._sessions[session_id]
        session.ended = True
        if self.on_end is not None:
            self.on_end(session)
        if session.replay is not None:  # its buffered events count against every session's bound
            session.replay.clear()
        mine = self._by_client.get(session.client)
        if mine is not None:
            mine.pop(session_id, None)
            if not mine:
                del self._by_client[session.client]

    def attach(self, listener: ClientSession) -> None:
        self._listeners.add(listener)

    def detach(self, listener: ClientSession) -> None:
        self._listeners.discard(listener)

    def expire(self) -> None:
        """Forget sessions idle past the timeout: the least recently seen come first, so this stops at
        the first live one."""
        cutoff = time.monotonic() - self.idle_timeout
        sessions = self._sessions
        while sessions:
            session_id, session = next(iter(sessions.items()))
            if session.last_seen >= cutoff:
                break
            self._drop(session_id, session)

    def clients(self) -> int:
        return len(self._by_client)

    def __iter__(self):  # noqa: ANN204
        return iter([*self._sessions.values(), *self._listeners])

    def __len__(self) -> int:
        return len(self._sessions)
