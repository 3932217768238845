"""The stateless revision 2026-07-28 at the front, bridged onto the proxy's upstream sessions.

Each request is self-contained: version, client capabilities and client info ride
in ``params._meta`` and must agree with the ``MCP-Protocol-Version``, ``Mcp-Method``
and ``Mcp-Name`` headers. Server-to-client requests from an upstream become an
``input_required`` result; the upstream call stays parked until the client retries
with ``inputResponses`` and the same ``requestState``. ``subscriptions/listen``
replaces the GET stream.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import secrets
from typing import Any

from only1mcp import __version__
from only1mcp.errors import (
    HEADER_MISMATCH, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, REQUEST_TIMEOUT, TOO_MANY_INFLIGHT,
    UNSUPPORTED_PROTOCOL_VERSION, RPCError,
)
from only1mcp.proxy.gateway import SUPPORTED_VERSIONS, Gateway, Sink
from only1mcp.proxy.http_front import SSE_HEADERS, Exchange, _id_of, accepted, event, invalid, respond, rpc_error
from only1mcp.proxy.limits import Limits, refuse
from only1mcp.proxy.param_headers import mismatch
from only1mcp.proxy.sessions import ClientSession
from only1mcp.proxy.telemetry import REQUEST_ID_HEADER, new_request_id

__all__ = ["Stateless", "STATELESS_VERSION"]

STATELESS_VERSION = "2026-07-28"
_META = "io.modelcontextprotocol/"
_METHODS = {"server/discover", "tools/list", "tools/call", "prompts/list", "prompts/get", "resources/list",
            "resources/templates/list", "resources/read", "completion/complete", "subscriptions/listen"}
_CACHEABLE = {"server/discover", "tools/list", "prompts/list", "resources/list", "resources/templates/list",
              "resources/read"}
_INPUT_METHODS = {"tools/call", "prompts/get", "resources/read"}  # the only ones that may ask for input
_NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
_STATUS = {-32700: 400, -32600: 400, -32602: 400, -32020: 400, -32021: 400, -32022: 400, -32601: 404}
_LISTEN_KINDS = {"toolsListChanged": "notifications/tools/list_changed",
                 "promptsListChanged": "notifications/prompts/list_changed",
                 "resourcesListChanged": "notifications/resources/list_changed"}


class StatelessSession(ClientSession):
    """One request's context. Asking the client parks the call and answers ``input_required``."""

    def __init__(self, capabilities: dict[str, Any], client_info: dict[str, Any], log_level: Any) -> None:
        super().__init__(None, STATELESS_VERSION, capabilities, client_info)
        self.logs = isinstance(log_level, str)
        self.log_level = log_level if self.logs else None
        self.inputs: dict[str, tuple[dict[str, Any], asyncio.Future[Any]]] = {}
        self.changed = asyncio.Event()
        self._keys = itertools.count(1)

    async def ask(self, method: str, params: Any, send: Any, timeout: float) -> Any:
        key = f"only1mcp-{next(self._keys)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.inputs[key] = ({"method": method, "params": params or {}}, future)
        self.changed.set()
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise RPCError(REQUEST_TIMEOUT, f"the client did not answer {method} within {timeout:g} s") from None
        finally:
            self.inputs.pop(key, None)


class _Call:
    """An upstream call that may span several client requests (input_required rounds)."""

    def __init__(self, gateway: Gateway, message: dict[str, Any], session: StatelessSession,
                 release: Any = None, client: str = "") -> None:
        self.session = session
        self.target: Any = None
        self.sink = Sink(session, lambda m: self.target(m) if self.target else None)
        self.release, self.client = release, client  # gives back the client's place among its calls in flight
        self.task = asyncio.get_running_loop().create_task(gateway.handle(message, session, self.sink))
        self.task.add_done_callback(self._done)
        self.asked: set[str] = set()
        self.context: Any = None  # the request event's context, shared by every round of the call
        self.request_id: str = ""  # the call's request id, shared by every round too

    async def outcome(self, parked: dict[str, _Call]) -> dict[str, Any]:
        handed_off = False
        try:
            while True:
                fresh = {k: v[0] for k, v in self.session.inputs.items() if k not in self.asked}
                if fresh:
                    self.asked.update(fresh)
                    state = secrets.token_urlsafe(18)
                    parked[state] = self
                    handed_off = True
                    asyncio.get_running_loop().call_later(600, self._expire, parked, state)
                    return {"jsonrpc": "2.0", "result": {"resultType": "input_required", "inputRequests": fresh,
                                                         "requestState": state}}
                if self.task.done():
                    return self.task.result()
                self.session.changed.clear()
                await self.session.changed.wait()
        finally:
            if not handed_off and not self.task.done():
                self.task.cancel()  # the client went away mid-call: cancel upstream too

    def _done(self, _task: Any) -> None:
        self.session.changed.set()
        if self.release is not None:
            self.release(self.client)

    def answer(self, responses: Any) -> None:
        if not isinstance(responses, dict):
            raise RPCError(INVALID_PARAMS, "inputResponses must be an object")
        for key, result in responses.items():  # all checked before any is applied (others' keys: ignored)
            entry = self.session.inputs.get(key)
            if entry is not None and not isinstance(result, dict):  # the upstream could not read it: it would wait
                raise RPCError(INVALID_PARAMS, f"inputResponses[{key!r}] must be an object: the result of "
                                               f"{entry[0]['method']}")
        waiting = [key for key, (_request, future) in self.session.inputs.items() if not future.done()]
        if waiting and not any(key in responses for key in waiting):  # else the call would just wait to its timeout
            raise RPCError(INVALID_PARAMS, f"inputResponses answers none of the pending input requests "
                                           f"({', '.join(map(repr, waiting))})")
        for key, result in responses.items():
            entry = self.session.inputs.get(key)
            if entry is not None and not entry[1].done():
                entry[1].set_result(result)

    def _expire(self, parked: dict[str, _Call], state: str) -> None:
        if parked.pop(state, None) is self and not self.task.done():
            self.task.cancel()


class Stateless:
    def __init__(self, gateway: Gateway, limits: Limits | None = None) -> None:
        self.gateway = gateway
        self.limits = limits
        self._parked: dict[str, _Call] = {}
        self.inflight: dict[str, int] = {}  # upstream calls alive (parked ones too) by client identity

    @staticmethod
    def claims(message: Any, version_header: str) -> bool:
        if version_header:
            return version_header not in SUPPORTED_VERSIONS and version_header != "2024-11-05"
        params = message.get("params") if isinstance(message, dict) else None
        meta = params.get("_meta") if isinstance(params, dict) else None
        return (isinstance(meta, dict) and f"{_META}protocolVersion" in meta
                and message.get("method") != "initialize")

    async def handle(self, message: Any, headers: dict[bytes, bytes], sse: bool, receive: Any, send: Any,
                     origin: Any = None) -> None:
        problem = invalid(message) or ("" if "method" in message else "a response object")
        if problem:
            await respond(send, 400, rpc_error(INVALID_REQUEST, "Body must be a single JSON-RPC request or "
                                                                f"notification object ({problem})", _id_of(message)))
            return
        if "id" not in message:
            await accepted(send)  # 2026 clients send no notifications; any that arrive are dropped
            return
        request_id = message["id"]
        try:
            session = self._check(message, headers, getattr(origin, "raw_headers", None) or [])
        except RPCError as exc:
            await respond(send, _STATUS.get(exc.code, 200), {"jsonrpc": "2.0", "id": request_id,
                                                             "error": exc.to_error()})
            return
        method = message["method"]
        if method == "server/discover":
            await respond(send, 200, self._finish(method, {"jsonrpc": "2.0", "id": request_id,
                                                           "result": self.discover()})[1],
                          [(REQUEST_ID_HEADER, new_request_id().encode())])
        elif method == "subscriptions/listen":  # a held stream counts as a call in flight of its client
            client = (origin.client_id if origin is not None else None) or ""
            if await self._admit(client, request_id, send):
                try:
                    await self._listen(message, session, sse, receive, send)
                finally:
                    self._release(client)
        else:
            await self._call(message, session, sse, receive, send, origin)

    def _check(self, message: dict[str, Any], headers: dict[bytes, bytes],
               raw_headers: list[tuple[bytes, bytes]]) -> StatelessSession:
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        if not isinstance(meta, dict) or f"{_META}protocolVersion" not in meta \
                or not isinstance(meta.get(f"{_META}clientCapabilities"), dict):
            raise RPCError(INVALID_PARAMS, f"params._meta must be an object carrying the required "
                                           f"'{_META}protocolVersion' and '{_META}clientCapabilities' keys")
        version = meta[f"{_META}protocolVersion"]
        if _header(headers, b"mcp-protocol-version") != version:
            raise RPCError(HEADER_MISMATCH, "MCP-Protocol-Version header does not match _meta protocolVersion")
        method = message["method"]
        if _header(headers, b"mcp-method") != method:
            raise RPCError(HEADER_MISMATCH, "Mcp-Method header is missing or does not match the method")
        if method in _NAMED:
            name = _header(headers, b"mcp-name")
            if name is not None and name != params.get(_NAMED[method]):
                raise RPCError(HEADER_MISMATCH, f"Mcp-Name header does not match params.{_NAMED[method]}")
        if version != STATELESS_VERSION:
            raise RPCError(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version",
                           {"supported": [STATELESS_VERSION, *SUPPORTED_VERSIONS], "requested": version})
        if method not in _METHODS:
            raise RPCError(METHOD_NOT_FOUND, "Method not found", method)
        if method == "tools/call":  # headers mirrored from arguments (x-mcp-header) must agree with them
            name = params.get("name")
            annotated = self.gateway.catalog.param_headers.get(name) if isinstance(name, str) else None
            problem = mismatch(annotated, params.get("arguments"), raw_headers) if annotated else None
            if problem:
                raise RPCError(HEADER_MISMATCH, problem)
        info = meta.get(f"{_META}clientInfo")
        return StatelessSession(meta[f"{_META}clientCapabilities"], info if isinstance(info, dict) else {},
                                meta.get(f"{_META}logLevel"))

    def discover(self) -> dict[str, Any]:
        result: dict[str, Any] = {"supportedVersions": [STATELESS_VERSION, *SUPPORTED_VERSIONS],
                                  "capabilities": self.gateway.capabilities()}
        notes = [f"[{name}] {text}" for name, text in self.gateway.instructions().items()]
        if notes:
            result["instructions"] = "\n".join(notes)
        return result

    def _finish(self, method: str, reply: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "error" in reply:
            return _STATUS.get(reply["error"].get("code"), 200), reply
        result = reply["result"]
        result.setdefault("resultType", "complete")
        if method in _CACHEABLE and result["resultType"] == "complete":
            result.setdefault("ttlMs", 0)
            result.setdefault("cacheScope", "private")
        meta = result.get("_meta") if isinstance(result.get("_meta"), dict) else {}
        result["_meta"] = {**meta, f"{_META}serverInfo": {"name": "only1mcp", "version": __version__}}
        return 200, reply

    async def _call(self, message: dict[str, Any], session: StatelessSession, sse: bool, receive: Any,
                    send: Any, origin: Any = None) -> None:
        method, request_id = message["method"], message["id"]
        params = message.get("params") or {}
        state = params.get("requestState")
        if state is not None and method in _INPUT_METHODS:
            call = self._parked.pop(state, None) if isinstance(state, str) else None
            if call is None:
                await respond(send, 400, rpc_error(INVALID_PARAMS, "Unknown or expired requestState", request_id))
                return
            try:
                call.answer(params.get("inputResponses") or {})
            except RPCError as exc:
                self._parked[state] = call  # nothing was applied: the client may retry with correct answers
                await respond(send, 400, {"jsonrpc": "2.0", "id": request_id, "error": exc.to_error()})
                return
            call.session.logs, call.session.log_level = session.logs, session.log_level
        else:
            client = (origin.client_id if origin is not None else None) or ""
            if not await self._admit(client, request_id, send):
                return
            session.client = client  # whose cached results it may be answered with (cache_scope = "client")
            uid = new_request_id()  # before _Call makes the task that fills it
            context = self.gateway.telemetry.begin(uid)
            call = _Call(self.gateway, message, session, self._release, client)
            call.context, call.request_id = context, uid
        exchange = Exchange(send, sse, [(REQUEST_ID_HEADER, call.request_id.encode())], limits=self.limits)
        call.target = exchange.push

        def finish(reply: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            return self._finish(method, {**reply, "id": request_id})

        await exchange.run(call.outcome(self._parked), receive, None, request_id, finish,
                           cancel_on_disconnect=True)
        if origin is not None:
            self.gateway.telemetry.finish(call.context, message, exchange.reply, origin.started, origin.wall,
                                          origin.size, exchange.sent_bytes, None, origin.client_id)

    async def _admit(self, client: str, request_id: Any, send: Any) -> bool:
        """Count one more call in flight for ``client``, or answer 429 if it holds max_inflight_per_client."""
        held = self.inflight.get(client, 0)
        if self.limits is not None and held >= self.gateway.settings.proxy.max_inflight_per_client:
            self.limits.refused["inflight_client"] += 1
            await refuse(send, 429, TOO_MANY_INFLIGHT, f"Too Many Requests: this client already has {held} "
                         "calls in flight (the limit)", request_id, retry_after=1)
            return False
        self.inflight[client] = held + 1
        return True

    def _release(self, client: str) -> None:
        left = self.inflight[client] - 1
        if left:
            self.inflight[client] = left
        else:
            del self.inflight[client]

    async def _listen(self, message: dict[str, Any], session: StatelessSession, sse: bool, receive: Any,
                      send: Any) -> None:
        if not sse:
            await respond(send, 406, rpc_error(INVALID_REQUEST, "Not Acceptable: subscriptions/listen needs "
                                                                "text/event-stream", message["id"]))
            return
        wanted = (message.get("params") or {}).get("notifications") or {}
        if not isinstance(wanted, dict) or not isinstance(wanted.get("resourceSubscriptions") or [], list):
            await respond(send, 400, rpc_error(INVALID_PARAMS, "params.notifications must be an object and its "
                                                               "resourceSubscriptions a list of URIs", message["id"]))
            return
        honored: dict[str, Any] = {k: True for k in _LISTEN_KINDS if wanted.get(k) is True}
        uris = [u for u in wanted.get("resourceSubscriptions") or [] if isinstance(u, str)]
        subscribed = [u for u in uris if await self._subscribe_upstream(u, session)]
        if subscribed:
            honored["resourceSubscriptions"] = subscribed
        session.logs, session.subscriptions = False, set(subscribed)
        methods = {_LISTEN_KINDS[k] for k in honored if k in _LISTEN_KINDS}
        tag = {f"{_META}subscriptionId": message["id"]}
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        ack = {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
               "params": {"_meta": tag, "notifications": honored}}
        await send({"type": "http.response.body", "body": event(ack), "more_body": True})
        self.gateway.sessions.attach(session)
        disconnect = asyncio.ensure_future(receive())
        try:
            while not disconnect.done():
                getter = asyncio.ensure_future(session.outbox.get())
                done, _ = await asyncio.wait({getter, disconnect}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    continue
                note = getter.result()
                if note.get("method") in methods or note.get("method") == "notifications/resources/updated":
                    params = {**(note.get("params") or {}), "_meta": tag}
                    body = event({**note, "params": params})
                    if self.limits is None:
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                    elif not await self.limits.write(send, body):
                        return  # a listener that stopped reading: the server closes the connection
        except OSError:
            pass
        finally:
            disconnect.cancel()
            self.gateway.sessions.detach(session)
        try:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass

    async def _subscribe_upstream(self, uri: str, session: StatelessSession) -> bool:
        reply = await self.gateway.handle({"jsonrpc": "2.0", "id": 0, "method": "resources/subscribe",
                                           "params": {"uri": uri}}, session, None)
        return reply is not None and "result" in reply


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    raw = headers.get(name)
    if raw is None:
        return None
    value = raw.decode("utf-8", "replace")
    if value.startswith("=?base64?") and value.endswith("?="):
        try:
            return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "\x00invalid base64"
    return value
