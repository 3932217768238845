"""A replica: one upstream MCP session, supervised.

The replica connects (spawning the process for stdio), performs the MCP handshake,
and keeps the session for every call. When the session dies it is marked down and
reconnected with exponential backoff; calls meanwhile fail fast with a clear error,
so one bad upstream never takes the endpoint down. A call that finds no replica ready cuts
the backoff short (``reconnect_now``): an upstream that has just restarted answers that call
instead of failing it, and one that is still dead costs the call one refused connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from only1mcp.errors import UpstreamError, UpstreamUnavailable
from only1mcp.proxy.upstream.base import RelatedSink, Transport, UpstreamSession
from only1mcp.proxy.upstream.http import HttpTransport
from only1mcp.proxy.upstream.modern import STATELESS_VERSION, ModernSession, NotModern
from only1mcp.proxy.upstream.stdio import StdioTransport
from only1mcp.settings import ReplicaSettings

__all__ = ["Replica", "ReplicaHooks", "UPSTREAM_PROTOCOL_VERSION"]

log = logging.getLogger("only1mcp.replica")

UPSTREAM_PROTOCOL_VERSION = "2025-11-25"
_BACKOFF_START, _BACKOFF_MAX, _STABLE_AFTER = 0.25, 30.0, 30.0
_NUDGE_MIN_S = 0.2  # calls cut the backoff short at most this often: a dead upstream is not hammered
# Calls that need no session state at the upstream may use any of the replica's sessions.
_LANE_METHODS = frozenset({"tools/call", "prompts/get", "resources/read", "completion/complete"})
# ...but only once the first session has this many requests in flight: a client calling one at a
# time always meets that session's state (its subscriptions, its roots) even while the proxy's own
# ping or list refresh is in flight there. The extra sessions are for concurrency, not for idle time.
_LANE_OVERFLOW = 2


class ReplicaHooks:
    """What a replica tells the proxy. Every hook defaults to doing nothing."""

    def ready(self, replica: Replica) -> None: ...

    def notification(self, replica: Replica, message: dict[str, Any]) -> None: ...

    async def server_request(self, replica: Replica, message: dict[str, Any], sink: RelatedSink | None) -> Any:
        from only1mcp.errors import METHOD_NOT_FOUND, RPCError

        raise RPCError(METHOD_NOT_FOUND, f"the proxy does not relay {message.get('method')}")


class Replica:
    def __init__(self, server: str, index: int, settings: ReplicaSettings, hooks: ReplicaHooks,
                 http: Callable[[], aiohttp.ClientSession], *, connect_timeout: float) -> None:
        self.server = server
        self.id = f"{server}/{index}"
        self.settings = settings
        self.hooks = hooks
        self._http = http
        self._connect_timeout = connect_timeout
        self.session: UpstreamSession | None = None
        self.state = "starting"
        self.last_error = ""
        self.inflight = 0
        self.restarts = 0
        self._lost = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # ends a backoff sleep early
        self._nudge: asyncio.Future[bool] | None = None  # a call waits for the next attempt's outcome
        self._last_attempt = float("-inf")
        self.fast: Any = None  # the proxy's shared HTTP/1.1 pool, set by the pool owner
        self.extra_sessions = 0
        self.lanes: list[UpstreamSession] = []

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"replica {self.id}")

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    async def reconnect_now(self, timeout: float) -> bool:
        """Connect now instead of at the end of the backoff, and wait (up to ``timeout``) for that
        attempt: True if the replica is ready. Concurrent callers share one attempt."""
        if self.ready:
            return True
        if self._task is None or self._task.done():
            return False
        loop = asyncio.get_running_loop()
        if self._nudge is None:
            if loop.time() - self._last_attempt < _NUDGE_MIN_S:
                return False
            self._nudge = loop.create_future()
            self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(self._nudge), timeout)
        except TimeoutError:
            return False

    def _attempt_over(self, ok: bool) -> None:
        nudge, self._nudge = self._nudge, None
        if nudge is not None and not nudge.done():
            nudge.set_result(ok)

    async def _backoff(self, delay: float) -> None:
        if self._nudge is not None:  # a call is already waiting: no sleep
            return
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except TimeoutError:
            pass

    async def request(self, method: str, params: dict[str, Any] | None, *, timeout: float,
                      sink: RelatedSink | None = None) -> dict[str, Any]:
        session = self.session
        if self.lanes and method in _LANE_METHODS and session is not None and session.load() >= _LANE_OVERFLOW:
            session = min((session, *self.lanes), key=UpstreamSession.load)
        if session is None or self.state != "ready":
            raise UpstreamUnavailable(self.server, f"replica {self.id} is {self.state}: {self.last_error or 'starting'}")
        self.inflight += 1
        try:
            return await session.request(method, params, timeout=timeout, on_related=sink)
        finally:
            self.inflight -= 1

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """To every session of the replica: a call on any of them may depend on it (roots changed)."""
        if self.session is not None and self.state == "ready":
            await asyncio.gather(*(s.notify(method, params) for s in (self.session, *self.lanes)))

    async def request_every_session(self, method: str, params: dict[str, Any] | None, *,
                                    timeout: float) -> dict[str, Any]:
        """Session state a call on any session must see (``logging/setLevel``: the level of the logs a
        call sends); the first session's answer is returned, an extra session's failure only logged."""
        lanes = list(self.lanes)
        first, *rest = await asyncio.gather(self.request(method, params, timeout=timeout),
                                            *(lane.request(method, params, timeout=timeout) for lane in lanes),
                                            return_exceptions=True)
        for outcome in rest:
            if isinstance(outcome, BaseException):
                log.info("%s on an extra session of %s failed: %s", method, self.id, outcome)
        if isinstance(first, BaseException):
            raise first
        return first

    def _transport(self, listen: bool = True) -> Transport:
        if self.settings.url:
            return HttpTransport(self.settings.url, self.settings.headers, self._http(),
                                 connect_timeout=self._connect_timeout, fast=self.fast, listen=listen)
        assert self.settings.command
        return StdioTransport(self.settings.command, self.settings.env, self.settings.cwd, label=self.id)

    async def _connect(self) -> UpstreamSession:
        """Open a session in the newest revision the upstream speaks: 2026-07-28 if its
        server/discover says so (HTTP only), else an initialize session."""
        hooks = {"on_notification": self._notification, "on_request": self._server_request,
                 "on_closed": self._closed}
        client_info = {"name": "only1mcp", "version": "0.1.0"}
        protocol = self.settings.protocol
        if self.settings.url and protocol in ("auto", STATELESS_VERSION):
            modern = ModernSession(self.server, self._transport(listen=False), **hooks)
            try:
                await modern.open(client_info, STATELESS_VERSION, timeout=self._connect_timeout)
                return modern
            except NotModern as exc:
                await modern.close()
                if protocol == STATELESS_VERSION:
                    raise UpstreamUnavailable(self.server, f"does not speak {STATELESS_VERSION}: {exc}") from exc
                log.info("replica %s speaks no %s (%s): using initialize", self.id, STATELESS_VERSION, exc)
            except BaseException:
                await modern.close()
                raise
        session = UpstreamSession(self.server, self._transport(), **hooks)
        try:
            await session.open(client_info, UPSTREAM_PROTOCOL_VERSION, timeout=self._connect_timeout)
        except BaseException:
            await session.close()
            raise
        return session

    async def _supervise(self) -> None:
        delay = _BACKOFF_START
        loop = asyncio.get_running_loop()
        while True:
            self._lost.clear()
            started = self._last_attempt = loop.time()
            try:
                session = await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = _describe(exc)
                log.warning("replica %s could not connect: %s (retry in %.1fs)", self.id, self.last_error, delay)
                self.state = "down"
                self._attempt_over(False)
                await self._backoff(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            # A stateless upstream has no session to share: extra sessions only help initialize ones.
            self.lanes = [] if isinstance(session, ModernSession) else await self._open_lanes()
            self.session, self.state, self.last_error = session, "ready", ""
            self._ready.set()
            log.info("replica %s ready (%s, %s)", self.id, session.init_result.get("serverInfo", {}).get("name", "?"),
                     session.init_result.get("protocolVersion", "?"))
            self.hooks.ready(self)
            self._attempt_over(True)
            await self._lost.wait()
            self.state, self.session = "down", None
            self._ready.clear()
            lanes, self.lanes = self.lanes, []
            await asyncio.gather(session.close(), *(lane.close() for lane in lanes), return_exceptions=True)
            self.restarts += 1
            if loop.time() - started > _STABLE_AFTER:
                delay = _BACKOFF_START
            log.warning("replica %s lost: %s (reconnect in %.1fs)", self.id, self.last_error, delay)
            await self._backoff(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    async def _open_lanes(self) -> list[UpstreamSession]:
        """Extra sessions for stateless calls: SDK servers spend more per call when one session
        carries many concurrent calls. Stateful methods stay on the first session."""
        if not self.settings.url or self.extra_sessions <= 0:
            return []
        lanes = [UpstreamSession(self.server, self._transport(listen=False), on_notification=self._notification,
                                 on_request=self._server_request, on_closed=self._closed)
                 for _ in range(self.extra_sessions)]
        opened = await asyncio.gather(*(lane.open({"name": "only1mcp", "version": "0.1.0"}, UPSTREAM_PROTOCOL_VERSION,
                                                  timeout=self._connect_timeout) for lane in lanes),
                                      return_exceptions=True)
        kept = [lane for lane, result in zip(lanes, opened) if not isinstance(result, BaseException)]
        for lane in lanes:
            if lane not in kept:
                await lane.close()
        return kept

    def _closed(self, reason: str) -> None:
        self.last_error = reason
        self.state = "down"
        self._ready.clear()
        self._lost.set()

    def _notification(self, message: dict[str, Any]) -> None:
        self.hooks.notification(self, message)

    def _server_request(self, message: dict[str, Any], sink: RelatedSink | None) -> Awaitable[Any]:
        return self.hooks.server_request(self, message, sink)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        for session in (self.session, *self.lanes):
            if session is not None:
                await session.close()
        self.state = "closed"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UpstreamError) and exc.__cause__ is not None:
        exc = exc.__cause__  # "cannot connect to …", not "failed during the call: cannot connect to …"
    return str(exc) or type(exc).__name__
