"""Fuzzing ``/mcp`` (hypothesis) through one real proxy in front of the real fixture servers.

One proxy process per module fronts the conformance fixture ("conf") and the echo server
("echo"). Generated requests go over real HTTP (httpx) in every protocol revision: on a
session of 2025-03-26, 2025-06-18 and 2025-11-25, as stateless 2026-07-28 requests, and
without any session. Every response is checked (``check``): no 5xx, no traceback text, a
202 with an empty body, or a correct JSON-RPC error or result whose id echoes the request's
id when that was valid (else null), a JSON-RPC error body on every 4xx; every few examples,
and at the end of each test, the proxy still answers a normal ``tools/call``.

The "ci" profile (the default, see tests/conftest.py) runs a fixed seed and a bounded number
of cases; ``ONLY1MCP_FUZZ=1`` (``make fuzz``) runs the long profile, at least 20,000 requests.
``test_request_count`` (last) asserts and prints how many requests were really sent.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")

import httpx  # noqa: E402
import orjson  # noqa: E402
from conftest import FUZZ, Stack, wait_port  # noqa: E402
from hypothesis import example, given  # noqa: E402
from hypothesis import settings as hsettings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from only1mcp.jobs.bench._procs import ProcessGroup, free_port  # noqa: E402

pytestmark = pytest.mark.timeout(3600 if FUZZ else 300)

SESSION_VERSIONS = ("2025-03-26", "2025-06-18", "2025-11-25")
STATELESS = "2026-07-28"
CONTEXTS = (*SESSION_VERSIONS, STATELESS, "none")
META = "io.modelcontextprotocol/"
ACCEPT = b"application/json, text/event-stream"
MAX_BODY = 256 * 1024
HEALTH_EVERY = 10  # examples between two health calls
MIN_REQUESTS = 20_000 if FUZZ else 1_000  # the bar of the whole file

# What a response must never carry: a traceback, a source location, a Python exception class.
_TRACE = re.compile(r'Traceback \(most recent|File "[^"]*", line \d+|\bline \d+, in \b')
_EXC = re.compile(r"\b(?:[A-Z][A-Za-z]*(?:Error|Exception)|KeyboardInterrupt|StopIteration|"
                  r"StopAsyncIteration|CancelledError)\b")


# -- the proxy under test --------------------------------------------------------------------------------
class Fuzzer:
    """One httpx client to the proxy, its sessions, and the count of requests sent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=15.0)
        del self.http.headers["accept"]  # httpx adds Accept: */* by default; the cases choose their own
        self.sent = 0
        self.by_test: Counter[str] = Counter()
        self.examples = 0
        self.healthy_calls = 0
        self._sessions: dict[str, str] = {}
        self._health_sid: str | None = None

    # sessions -----------------------------------------------------------------------------------------
    def initialize(self, version: str) -> str:
        body = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "0"}}}
        resp = self.http.post(self.url, json=body, headers={"Accept": ACCEPT.decode()})
        assert resp.status_code == 200, resp.text
        sid = resp.headers["mcp-session-id"]
        assert resp.json()["result"]["protocolVersion"] == version
        note = self.http.post(self.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                              headers={"Accept": ACCEPT.decode(), "Mcp-Session-Id": sid,
                                       "MCP-Protocol-Version": version})
        assert note.status_code == 202, note.text
        return sid

    def session(self, version: str) -> str:
        if version not in self._sessions:
            self._sessions[version] = self.initialize(version)
        return self._sessions[version]

    def headers_for(self, context: str, message: Any) -> list[tuple[bytes, bytes]]:
        """The headers a well-behaved client sends in ``context`` for ``message`` (when it is one)."""
        headers = [(b"accept", ACCEPT), (b"content-type", b"application/json")]
        if context in SESSION_VERSIONS:
            headers += [(b"mcp-session-id", self.session(context).encode()),
                        (b"mcp-protocol-version", context.encode())]
        elif context == STATELESS:
            headers.append((b"mcp-protocol-version", STATELESS.encode()))
            method = message.get("method") if isinstance(message, dict) else None
            if isinstance(method, str):
                headers.append((b"mcp-method", _header_value(method)))
            params = message.get("params") if isinstance(message, dict) else None
            name = params.get("name", params.get("uri")) if isinstance(params, dict) else None
            if isinstance(name, str):
                headers.append((b"mcp-name", _header_value(name)))
        return headers

    # sending ------------------------------------------------------------------------------------------
    def post(self, body: bytes, headers: list[tuple[bytes, bytes]], test: str, method: str = "POST") -> httpx.Response:
        """One request; an SSE answer is read up to its final message (or, for a stateless
        subscriptions/listen, its acknowledgement: the stream itself stays open until we close it)."""
        with self.http.stream(method, self.url, content=body, headers=headers) as resp:
            if resp.headers.get("content-type", "").startswith("text/event-stream"):
                data = b""
                for chunk in resp.iter_bytes():
                    data += chunk
                    if b"\n\n" in data and (b'"result"' in data or b'"error"' in data
                                             or b"notifications/subscriptions/acknowledged" in data):
                        complete = data[:data.rindex(b"\n\n") + 2]
                        if _sse_done(complete):
                            data = complete
                            break
            else:
                data = resp.read()
            status, resp_headers = resp.status_code, resp.headers
        self.sent += 1
        self.by_test[test] += 1
        return httpx.Response(status, headers=resp_headers, content=data)

    def tick(self) -> None:
        self.examples += 1
        if self.examples % HEALTH_EVERY == 0:
            self.still_serving()

    def still_serving(self) -> None:
        """A normal tools/call succeeds on a session of its own, and statelessly."""
        if self._health_sid is None:
            self._health_sid = self.initialize("2025-11-25")
        word = uuid.uuid4().hex
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo__echo", "arguments": {"text": word}}}
        resp = self.http.post(self.url, json=call, headers={"Accept": ACCEPT.decode(), "Mcp-Session-Id": self._health_sid,
                                                            "MCP-Protocol-Version": "2025-11-25"})
        assert resp.status_code == 200, f"the proxy stopped serving: HTTP {resp.status_code}: {resp.text[:500]}"
        assert _final(resp)["result"]["content"][0]["text"] == word, resp.text[:500]
        self.healthy_calls += 1

    def close(self) -> None:
        self.http.close()


def _sse_done(data: bytes) -> bool:
    for block in data.split(b"\n\n"):
        payload = b"\n".join(line[5:].lstrip() for line in block.split(b"\n") if line.startswith(b"data:"))
        try:
            message = json.loads(payload) if payload else None
        except ValueError:
            continue
        if isinstance(message, dict) and ("result" in message or "error" in message
                                          or message.get("method") == "notifications/subscriptions/acknowledged"):
            return True
    return False


def _header_value(text: str) -> bytes:
    """A header value as 2026-07-28 clients send it: plain when visible ASCII, else base64."""
    if text and all(0x20 < ord(c) < 0x7F for c in text):
        return text.encode()
    return b"=?base64?" + base64.b64encode(text.encode("utf-8", "surrogatepass")) + b"?="


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzer]:
    tmp: Path = tmp_path_factory.mktemp("fuzz_mcp")
    with ProcessGroup(tmp) as group:
        stack = Stack(group, tmp)
        ports = [free_port(), free_port()]
        procs = [stack.start(f"{name}-{port}", [sys.executable, "-m", "only1mcp.cli", "fixture", name, "--port",
                                                str(port)]) for name, port in zip(("conformance", "echo"), ports)]
        for port, proc in zip(ports, procs):
            wait_port(port, proc)
        servers = "".join(f'[[servers]]\nname = "{name}"\n[[servers.replicas]]\nurl = "http://127.0.0.1:{port}/mcp"\n'
                          for name, port in zip(("conf", "echo"), ports))
        url, proxy = stack.proxy(servers, proxy_extra=f"max_body_bytes = {MAX_BODY}\ncall_timeout = 5.0")
        fz = Fuzzer(url)
        started = time.monotonic()
        fz.still_serving()
        yield fz
        fz.still_serving()
        fz.close()
        elapsed = time.monotonic() - started
        print(f"\nfuzz /mcp: {fz.sent} generated requests in {elapsed:.1f} s "
              f"({fz.healthy_calls} health calls); by test: {dict(fz.by_test)}")
        log = proxy.log_path.read_text(errors="replace")
        assert "Traceback" not in log, f"the proxy logged a traceback:\n{log[-4000:]}"


# -- the oracle ------------------------------------------------------------------------------------------
_UNPARSEABLE = object()


def _parse(body: bytes) -> Any:
    """What the body is to a JSON parser as strict as the proxy's (RFC 8259, UTF-8, no NaN)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _UNPARSEABLE


def _valid_id(message: Any) -> tuple[bool, Any]:
    if isinstance(message, dict) and "id" in message:
        value = message["id"]
        # the proxy's JSON parser holds integers of 64 bits; a bigger one arrives as a float: not valid
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return True, value
    return False, None


def _messages(resp: httpx.Response) -> list[Any]:
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        found, data = [], []
        for line in [*resp.text.split("\n"), ""]:  # not splitlines: U+2028 may sit in a JSON string
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line and data:
                if "".join(data).strip():  # the priming event (an id, empty data) carries no message
                    found.append(json.loads("\n".join(data)))
                data = []
        return found
    body = json.loads(resp.content)
    return body if isinstance(body, list) else [body]


def _final(resp: httpx.Response) -> dict[str, Any]:
    replies = [m for m in _messages(resp) if isinstance(m, dict) and ("result" in m or "error" in m)]
    assert replies, f"no JSON-RPC response in HTTP {resp.status_code}: {resp.text[:500]!r}"
    return replies[-1]


def _strings(value: Any) -> list[str]:
    """Every string in a JSON value, keys too (iteratively: values nest 1000 levels deep)."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            found.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _without(text: str, sent: Any) -> str:
    for echoed in sorted(set(_strings(sent)), key=len, reverse=True):
        if echoed:
            text = text.replace(echoed, "").replace(repr(echoed), "").replace(json.dumps(echoed), "")
    return text


def _check_reply(reply: Any, sent: Any, context: str) -> None:
    assert isinstance(reply, dict), reply
    assert reply.get("jsonrpc") == "2.0", reply
    assert ("result" in reply) != ("error" in reply), f"exactly one of result and error: {reply}"
    ok, request_id = _valid_id(sent)
    if "error" in reply:
        error = reply["error"]
        assert isinstance(error, dict) and set(error) <= {"code", "message", "data"}, reply
        code = error.get("code")
        assert isinstance(code, int) and not isinstance(code, bool), reply
        assert -32768 <= code <= -32000, f"error code outside the JSON-RPC ranges: {reply}"
        assert code != -32603, f"an internal error: the proxy did not foresee this input: {reply}"
        assert isinstance(error.get("message"), str) and error["message"], reply
        # what the client sent may come back (a method name "AError"): only the proxy's own words count
        own = _without(error["message"], sent)
        assert not _EXC.search(own), f"an exception class in an error message: {reply}"
        assert not _EXC.search(_without(json.dumps(error.get("data")), sent)), f"an exception class in data: {reply}"
        assert reply.get("id") == (request_id if ok else None), \
            f"id {reply.get('id')!r} does not echo the request's id ({request_id if ok else None!r}): {reply}"
    else:
        assert ok, f"a result for a message without a valid id: {reply}"
        assert reply.get("id") == request_id, reply
        assert isinstance(reply["result"], dict), reply
        if context == STATELESS:
            assert reply["result"].get("resultType") in ("complete", "input_required"), reply


def check(resp: httpx.Response, body: bytes, context: str, http_method: str = "POST") -> Any:
    """Every invariant of an answer to ``body``; return the final JSON-RPC reply (or None for a 202)."""
    status = resp.status_code
    assert status < 500, f"HTTP {status}: {resp.text[:1000]!r} for {body[:300]!r}"
    text = resp.content.decode("utf-8", "replace")
    assert not _TRACE.search(text), f"a traceback in the body: {text[:2000]}"
    for name, value in resp.headers.items():
        assert not _TRACE.search(value) and not _EXC.search(value), f"header {name}: {value}"
    if http_method != "POST":  # GET and DELETE carry no body: the transport answers alone
        assert status in (200, 400, 404, 405, 406), f"unexpected HTTP {status} for {http_method}: {text[:500]}"
        if status >= 400:
            assert resp.headers["content-type"].startswith("application/json"), resp.headers
            reply = resp.json()
            assert reply.get("jsonrpc") == "2.0" and reply.get("id") is None, reply
            assert isinstance(reply["error"]["code"], int) and isinstance(reply["error"]["message"], str), reply
            return reply
        return None
    sent = _parse(body)
    if status == 202:
        assert resp.content == b"", resp.content[:300]
        assert isinstance(sent, (dict, list)), f"202 for a body that is not a JSON-RPC message: {body[:300]!r}"
        if isinstance(sent, dict):
            assert "id" not in sent or "method" not in sent, f"202 for a request: {body[:300]!r}"
        return None
    assert status in (200, 400, 403, 404, 405, 406, 413, 415), f"unexpected HTTP {status}: {text[:500]}"
    assert resp.content, f"HTTP {status} with an empty body for {body[:300]!r}"
    replies = _messages(resp)
    if status >= 400:  # the transport answers its errors with one JSON-RPC error object
        assert resp.headers["content-type"].startswith("application/json"), resp.headers
        assert len(replies) == 1 and "error" in replies[0], f"HTTP {status} without a JSON-RPC error: {text[:500]}"
    if status in (403, 406, 413, 415):  # refused before the body is read: nothing to echo
        assert replies[0]["error"]["code"] == -32600 and replies[0].get("id") is None, replies[0]
        return replies[0]
    if sent is _UNPARSEABLE:
        assert status == 400, f"HTTP {status} for a body that is not JSON: {body[:300]!r}"
        reply = replies[0]
        assert reply["error"]["code"] == -32700 and reply.get("id") is None, reply
        assert reply["error"]["message"].startswith("Parse error"), reply
        return reply
    if isinstance(sent, list) and status == 200 and not resp.headers["content-type"].startswith("text/event-stream"):
        body_json = resp.json()
        assert isinstance(body_json, list) and body_json, body_json  # a batch's answer is an array
        ids = [_valid_id(m)[1] for m in sent if _valid_id(m)[0]]
        for reply in body_json:
            assert isinstance(reply, dict) and reply.get("jsonrpc") == "2.0", reply
            assert reply.get("id") is None or reply.get("id") in ids, reply
            if "error" in reply:
                assert isinstance(reply["error"].get("code"), int) and isinstance(reply["error"].get("message"), str)
        return body_json[-1]
    if isinstance(sent, dict) and sent.get("method") == "subscriptions/listen" and status == 200:
        notes = _messages(resp)  # a listen stream: acknowledged, then notifications until we hang up
        if notes and notes[0].get("method") == "notifications/subscriptions/acknowledged":
            assert all("result" not in m and "error" not in m for m in notes), notes
            return None
    reply = _final(resp)
    _check_reply(reply, sent if isinstance(sent, dict) else None, context)
    return reply


def send_and_check(fz: Fuzzer, test: str, body: bytes, context: str, message: Any = None,
                   headers: list[tuple[bytes, bytes]] | None = None, method: str = "POST") -> Any:
    hdrs = fz.headers_for(context, message) if headers is None else headers
    resp = fz.post(body, hdrs, test, method)
    try:
        return check(resp, body, context)
    finally:
        fz.tick()


# -- strategies ------------------------------------------------------------------------------------------
contexts = st.sampled_from(CONTEXTS)
ints = st.one_of(st.integers(-(2**63), 2**64 - 1), st.integers(), st.sampled_from([0, -1, 2**63, 2**64, -(2**63) - 1,
                                                                                    10**30, -(10**30)]))
ids = st.one_of(ints, st.text(max_size=40), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(),
                st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
                st.text(min_size=1000, max_size=5000))
KNOWN_METHODS = ["initialize", "ping", "tools/list", "tools/call", "prompts/list", "prompts/get", "resources/list",
                 "resources/read", "resources/templates/list", "resources/subscribe", "resources/unsubscribe",
                 "completion/complete", "logging/setLevel", "server/discover", "subscriptions/listen",
                 "notifications/initialized", "notifications/cancelled", "notifications/progress",
                 "notifications/roots/list_changed"]
methods = st.one_of(st.sampled_from(KNOWN_METHODS), st.text(max_size=60),
                    st.text(min_size=500, max_size=20_000), st.sampled_from(["", "rpc.discover", "tools/", "/",
                                                                             "tools/call\x00", "TOOLS/CALL"]))
TOOLS = ["echo__echo", "conf__test_simple_text", "conf__test_error_handling", "conf__test_image_content"]
tool_names = st.one_of(st.sampled_from(TOOLS), st.text(max_size=200), st.text(min_size=129, max_size=50_000),
                       st.sampled_from(["echo__", "__echo", "echo", "conf__", "echo__echo ", "ECHO__ECHO"]))
json_leaf = st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=50))
json_values = st.recursive(json_leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                             st.dictionaries(st.text(max_size=10), kids, max_size=4)),
                           max_leaves=20)


def nested(depth: int, leaf: Any = 1, kind: str = "list") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def encode(value: Any, ascii_only: bool = True) -> bytes:
    """JSON as a lenient client writes it (Python's json: NaN and Infinity literals, huge integers)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def with_meta(message: dict[str, Any], context: str) -> dict[str, Any]:
    """A 2026-07-28 request carries its version and capabilities in params._meta."""
    if context != STATELESS:
        return message
    params = message.get("params", {})
    if isinstance(params, dict):
        params = {**params, "_meta": {f"{META}protocolVersion": STATELESS, f"{META}clientCapabilities": {},
                                      f"{META}clientInfo": {"name": "fuzz", "version": "0"}}}
    return {**message, "params": params}


# -- 1. malformed JSON -----------------------------------------------------------------------------------
VALID = [{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo__echo", "arguments": {"text": "x"}}},
         {"jsonrpc": "2.0", "id": "a", "method": "tools/list", "params": {}},
         {"jsonrpc": "2.0", "method": "notifications/initialized"}]


@st.composite
def malformed_json(draw: st.DrawFn) -> bytes:
    base = encode(draw(st.sampled_from(VALID)))
    kind = draw(st.sampled_from(["truncate", "trailing", "utf8", "bom", "nan", "raw", "splice", "empty", "nul"]))
    if kind == "truncate":
        return base[:draw(st.integers(0, len(base) - 1))]
    if kind == "trailing":
        return base + draw(st.sampled_from([b"x", b"}", b",", b"{}", b" garbage", b"\x00", b"]", b"\xff"]))
    if kind == "utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28\x8c\x28", b"\x80", b"\xc0\xaf"]))
        cut = draw(st.integers(0, len(base)))
        return base[:cut] + bad + base[cut:]
    if kind == "bom":
        return draw(st.sampled_from([b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe"])) + base
    if kind == "nan":
        literal = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"]))
        return draw(st.sampled_from([b'{"jsonrpc": "2.0", "id": %s, "method": "ping"}',
                                     b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": '
                                     b'"echo__echo", "arguments": {"text": %s}}}'])) % literal
    if kind == "raw":
        return draw(st.binary(max_size=200))
    if kind == "splice":
        cut = draw(st.integers(0, len(base)))
        return base[:cut] + draw(st.binary(min_size=1, max_size=8)) + base[cut:]
    if kind == "nul":
        return base.replace(b'"2.0"', b'"2.0\x00"')
    return b""


@given(body=malformed_json(), context=contexts)
@example(body=b'{"jsonrpc": "2.0", "id": 1, "method": ', context="2025-11-25")
@example(body=b"\xef\xbb\xbf" + encode(VALID[0]), context=STATELESS)
@example(body=b'{"jsonrpc": "2.0", "id": NaN, "method": "ping"}', context="none")
def test_malformed_json(fuzzer: Fuzzer, body: bytes, context: str) -> None:
    send_and_check(fuzzer, "malformed_json", body, context, _parse(body))


# -- 2. wrong JSON-RPC shapes and types ------------------------------------------------------------------
_MISSING = object()


@st.composite
def rpc_shapes(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {}
    jsonrpc = draw(st.one_of(st.just("2.0"), st.just("2.0"), st.sampled_from(["1.0", "2", "2.00", "", " 2.0"]),
                             json_leaf, st.just(_MISSING)))
    if jsonrpc is not _MISSING:
        message["jsonrpc"] = jsonrpc
    request_id = draw(st.one_of(ids, st.just(_MISSING)))
    if request_id is not _MISSING:
        message["id"] = request_id
    method = draw(st.one_of(methods, json_leaf, st.just(_MISSING)))
    if method is not _MISSING:
        message["method"] = method
    params = draw(st.one_of(st.just(_MISSING), json_values, st.dictionaries(st.text(max_size=10), json_values,
                                                                             max_size=4)))
    if params is not _MISSING:
        message["params"] = params
    for extra in draw(st.lists(st.sampled_from(["result", "error", "extra", "ID", "Method"]), max_size=2, unique=True)):
        message[extra] = draw(json_values)
    return message


@given(message=rpc_shapes(), context=contexts)
@example(message={"jsonrpc": "2.0", "id": 2**64, "method": "ping"}, context="2025-11-25")
@example(message={"jsonrpc": "2.0", "id": -(2**63), "method": "ping"}, context="2025-06-18")
@example(message={"jsonrpc": "2.0", "id": 7, "result": {}}, context=STATELESS)  # found: the id was not echoed
@example(message={"jsonrpc": "2.0", "id": False, "method": "initialize"}, context="2025-03-26")  # found: id false echoed
@example(message={"jsonrpc": "1.0", "id": 7, "method": "tools/list"}, context=STATELESS)
@example(message={"jsonrpc": "2.0", "id": "x", "error": {"code": 1, "message": "m"}}, context="2025-03-26")
def test_rpc_shapes(fuzzer: Fuzzer, message: dict[str, Any], context: str) -> None:
    if context == STATELESS and isinstance(message.get("params", {}), dict):
        message = with_meta(message, context)
    body = encode(message)
    send_and_check(fuzzer, "rpc_shapes", body, context, message)


# -- 3. batches ------------------------------------------------------------------------------------------
@given(batch=st.lists(st.one_of(rpc_shapes(), st.sampled_from(VALID), json_leaf), max_size=6),
       context=contexts)
@example(batch=[], context="2025-03-26")
@example(batch=[{"jsonrpc": "2.0", "id": 1, "method": "ping"}] * 3, context="2025-03-26")
@example(batch=[[]], context="2025-03-26")
def test_batches(fuzzer: Fuzzer, batch: list[Any], context: str) -> None:
    body = encode(batch)
    send_and_check(fuzzer, "batches", body, context, batch)


# -- 4. deep nesting, long strings ------------------------------------------------------------------------
@given(depth=st.one_of(st.integers(1, 1200), st.sampled_from([200, 254, 255, 256, 257, 300, 1023, 1024, 1025, 10_000])),
       kind=st.sampled_from(["list", "dict"]),
       where=st.sampled_from(["arguments", "params", "id", "top", "meta"]), context=contexts)
@example(depth=10_000, kind="list", where="top", context="2025-11-25")
@example(depth=300, kind="dict", where="arguments", context="2025-11-25")
@example(depth=300, kind="dict", where="arguments", context=STATELESS)
@example(depth=300, kind="list", where="meta", context="2025-11-25")
def test_deep_nesting(fuzzer: Fuzzer, depth: int, kind: str, where: str, context: str) -> None:
    deep = nested(depth, "x", kind)
    if where == "top":
        message: Any = deep
    elif where == "id":
        message = {"jsonrpc": "2.0", "id": deep, "method": "ping"}
    elif where == "params":
        message = {"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {"cursor": deep}}
    elif where == "meta":
        message = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                   "params": {"name": "echo__echo", "arguments": {"text": "x"}, "_meta": {"progressToken": deep}}}
    else:
        message = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                   "params": {"name": "echo__echo", "arguments": {"text": "x", "deep": deep}}}
    if isinstance(message, dict) and where != "meta":
        message = with_meta(message, context)
    body = json.dumps(message).encode() if depth < 900 else _encode_deep(message)
    send_and_check(fuzzer, "deep_nesting", body, context, message if depth < 900 else None)


def _encode_deep(value: Any) -> bytes:
    """json.dumps recurses; very deep values are written iteratively."""
    parts: list[bytes] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            parts.append(item)
        elif isinstance(item, list):
            parts.append(b"[")
            stack.append(b"]")
            for i, x in enumerate(reversed(item)):
                stack.append(x)
                if i < len(item) - 1:
                    stack.append(b",")
        elif isinstance(item, dict):
            parts.append(b"{")
            stack.append(b"}")
            entries = list(item.items())
            for i, (k, v) in enumerate(reversed(entries)):
                stack.append(v)
                stack.append(json.dumps(k).encode() + b":")
                if i < len(entries) - 1:
                    stack.append(b",")
        else:
            parts.append(json.dumps(item).encode())
    return b"".join(parts)


@given(size=st.sampled_from([1_000, 10_000, 100_000, 200_000, MAX_BODY - 100, MAX_BODY + 1, 400_000]),
       where=st.sampled_from(["method", "tool", "argument", "id", "cursor", "session"]),
       char=st.sampled_from(["a", "é", "\u4e16", "\U0001f600", "\x00", "\\", '"']), context=contexts)
def test_long_strings(fuzzer: Fuzzer, size: int, where: str, char: str, context: str) -> None:
    long = char * (size // len(char.encode()))
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                               "params": {"name": "echo__echo", "arguments": {"text": "x"}}}
    headers = None
    if where == "method":
        message["method"] = long
    elif where == "tool":
        message["params"]["name"] = long
    elif where == "argument":
        message["params"]["arguments"]["text"] = long
    elif where == "id":
        message["id"] = long
    elif where == "cursor":
        message = {"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {"cursor": long}}
    else:
        headers = [(b"accept", ACCEPT), (b"content-type", b"application/json"),
                   (b"mcp-session-id", (long.encode("ascii", "replace") if char == "a" else b"s" * size)[:60_000]),
                   (b"mcp-protocol-version", b"2025-11-25")]
    message = with_meta(message, context)
    body = encode(message, ascii_only=char in ("a", "\\", '"'))
    if headers is None and context == STATELESS and where in ("method", "tool"):
        # header values this long are refused by the HTTP layer; send the body's method in the header anyway
        headers = [(b"accept", ACCEPT), (b"content-type", b"application/json"),
                   (b"mcp-protocol-version", STATELESS.encode()), (b"mcp-method", b"tools/call")]
    send_and_check(fuzzer, "long_strings", body, context, message, headers)


# -- 5. unknown methods, tools/call with odd arguments ----------------------------------------------------
PARAM_KEYS = ["name", "uri", "cursor", "arguments", "ref", "argument", "level", "requestId", "reason", "_meta",
              "protocolVersion", "capabilities", "clientInfo", "progressToken", "progress", "notifications",
              "requestState", "inputResponses", "context"]
plausible_values = st.one_of(json_values, st.sampled_from(TOOLS), st.sampled_from(
    ["test://static-text", "test://template/{id}", "ref/prompt", "ref/resource", "debug", "emergency",
     "eyJrIjoidG9vbHMiLCJwIjoxfQ==", "eyJrIjoidG9vbHMiLCJwIjp0cnVlfQ==", "eyJrIjoidG9vbHMiLCJwIjotMX0=",
     "only1mcp-1"]), st.fixed_dictionaries({"type": st.sampled_from(["ref/prompt", "ref/resource"]),
                                             "name": json_values, "uri": json_values}),
    st.fixed_dictionaries({"progressToken": json_values}))
plausible_params = st.dictionaries(st.one_of(st.sampled_from(PARAM_KEYS), st.text(max_size=8)), plausible_values,
                                   max_size=5)


@given(method=methods, params=st.one_of(json_values, st.dictionaries(st.text(max_size=10), json_values, max_size=4),
                                        plausible_params, plausible_params, plausible_params),
       request_id=st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=20)), context=contexts)
@example(method="no/such/method", params={}, request_id=1, context="2025-11-25")
@example(method="no/such/method", params={}, request_id=1, context=STATELESS)
@example(method="subscriptions/listen", params={}, request_id=0, context=STATELESS)  # a stream: read its ack
@example(method="completion/complete", params={"ref": {"type": "ref/prompt", "name": {"a": 1}}}, request_id=1,
         context="2025-11-25")
@example(method="resources/read", params={"uri": ["x"]}, request_id=1, context=STATELESS)
@example(method="prompts/get", params={"name": "x", "arguments": [1]}, request_id=1, context="2025-06-18")
def test_methods_and_params(fuzzer: Fuzzer, method: str, params: Any, request_id: Any, context: str) -> None:
    message = with_meta({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}, context)
    send_and_check(fuzzer, "methods_and_params", encode(message), context, message)


@given(method=st.sampled_from(KNOWN_METHODS), params=plausible_params,
       request_id=st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=20), st.just(_MISSING)), context=contexts)
@example(method="resources/unsubscribe", params={"uri": ["x"]}, request_id=1, context="2025-11-25")
@example(method="resources/subscribe", params={"uri": {"a": 1}}, request_id=1, context="2025-11-25")
@example(method="notifications/cancelled", params={"requestId": {"a": 1}}, request_id=_MISSING, context="2025-11-25")
def test_known_methods(fuzzer: Fuzzer, method: str, params: dict[str, Any], request_id: Any, context: str) -> None:
    """Every method the proxy knows, with params made of the keys it reads and odd values."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if request_id is not _MISSING:
        message["id"] = request_id
    message = with_meta(message, context)
    send_and_check(fuzzer, "known_methods", encode(message), context, message)


odd_arguments = st.one_of(
    json_values,
    st.dictionaries(st.text(max_size=30), json_values, max_size=8),
    st.fixed_dictionaries({"text": st.one_of(st.text(max_size=300), json_values)}),
    st.builds(lambda d, k: {"text": "x", "deep": nested(d, 1, k)}, st.integers(1, 600), st.sampled_from(["list", "dict"])),
    st.builds(lambda n: {"text": "x", "many": list(range(n))}, st.integers(0, 20_000)),
    st.builds(lambda n: {f"k{i}": i for i in range(n)}, st.integers(0, 3000)),
    st.sampled_from([None, [], "", 0, "not an object", [1, 2], {"text": None}, {"": ""}, {"text": "\ud800"},
                     {"text": "\u202e\u200b\ufeff\U0010ffff"}]),
)


@given(name=tool_names, arguments=st.one_of(odd_arguments, st.just(_MISSING)), context=contexts,
       ascii_only=st.booleans())
@example(name="echo__echo", arguments={"text": "x", "deep": nested(300, 1, "dict")}, context="2025-11-25",
         ascii_only=True)
@example(name="echo__echo", arguments={"text": "\ud800"}, context="2025-11-25", ascii_only=False)
@example(name="echo__echo", arguments="not an object", context=STATELESS, ascii_only=True)
def test_tools_call_arguments(fuzzer: Fuzzer, name: Any, arguments: Any, context: str, ascii_only: bool) -> None:
    params: dict[str, Any] = {"name": name}
    if arguments is not _MISSING:
        params["arguments"] = arguments
    message = with_meta({"jsonrpc": "2.0", "id": fuzzer.sent, "method": "tools/call", "params": params}, context)
    reply = send_and_check(fuzzer, "tools_call_arguments", encode(message, ascii_only), context, message)
    if name == "echo__echo" and isinstance(arguments, dict) and isinstance(arguments.get("text"), str) \
            and reply is not None and "result" in reply and not reply["result"].get("isError"):
        assert reply["result"]["content"][0]["text"] == arguments["text"], reply  # unicode survives the trip


# -- 5b. 2026-07-28 input_required rounds: retries with odd inputResponses and requestState -------------
def _stateless_call(fz: Fuzzer, name: str, arguments: dict[str, Any], extra: dict[str, Any] | None = None,
                    capabilities: dict[str, Any] | None = None) -> tuple[bytes, dict[str, Any], httpx.Response]:
    params: dict[str, Any] = {"name": name, "arguments": arguments, **(extra or {})}
    params["_meta"] = {f"{META}protocolVersion": STATELESS, f"{META}clientCapabilities": capabilities or {}}
    message = {"jsonrpc": "2.0", "id": fz.sent, "method": "tools/call", "params": params}
    body = encode(message)
    return body, message, fz.post(body, fz.headers_for(STATELESS, message), "input_required")


answers = st.one_of(json_values, st.fixed_dictionaries({"action": st.one_of(st.sampled_from(["accept", "decline",
                                                                                             "cancel"]), json_leaf),
                                                         "content": st.one_of(json_values, st.fixed_dictionaries(
                                                             {"name": json_leaf, "email": json_leaf}))}))


@given(state=st.one_of(st.just("real"), st.just("real"), st.text(max_size=30), json_values),
       responses=st.one_of(st.builds(lambda a: {"@key": a}, answers), st.builds(lambda a: {"@key": a}, answers),
                           json_values))
@hsettings(max_examples=600 if FUZZ else 60)  # a bad answer costs the upstream half a second
@example(state="real", responses={"@key": {"action": "accept", "content": {"name": "n", "email": "e@x"}}})
@example(state="real", responses={"@key": 5})
@example(state="real", responses=[1])
@example(state="real", responses=None)  # was: no answer, the call waited to its timeout
@example(state="real", responses={"other": {"action": "accept"}})
@example(state=["not", "a", "string"], responses={"@key": {"action": "decline"}})
def test_input_required_retries(fuzzer: Fuzzer, state: Any, responses: Any) -> None:
    body, _message, resp = _stateless_call(fuzzer, "conf__test_elicitation", {"message": "fuzz"},
                                           capabilities={"elicitation": {}})
    first = check(resp, body, STATELESS)
    fuzzer.tick()
    result = first["result"]
    assert result["resultType"] == "input_required", first
    [key] = result["inputRequests"]
    real_state = result["requestState"]
    if isinstance(responses, dict) and "@key" in responses:
        responses = {key: responses["@key"]}
    retry = {"requestState": real_state if state == "real" else state, "inputResponses": responses}
    body, _message, resp = _stateless_call(fuzzer, "conf__test_elicitation", {"message": "fuzz"}, retry,
                                           capabilities={"elicitation": {}})
    reply = check(resp, body, STATELESS)
    fuzzer.tick()
    if state != "real" and "error" in reply:
        assert reply["error"]["code"] == -32602, reply
    refused = not isinstance(responses, dict) or key not in responses or not isinstance(responses[key], dict)
    if refused and state == "real":  # was: forwarded upstream, which could not read it and waited to its timeout
        assert resp.status_code == 400 and reply["error"]["code"] == -32602, reply
        assert "inputResponses" in reply["error"]["message"], reply
    if state != "real" or not isinstance(responses, dict) or key not in responses or refused:
        # the first call is still parked: answer it properly, so it ends now (not at the call timeout)
        fix = {"requestState": real_state, "inputResponses": {key: {"action": "decline"}}}
        body, _message, resp = _stateless_call(fuzzer, "conf__test_elicitation", {"message": "fuzz"}, fix,
                                               capabilities={"elicitation": {}})
        done = check(resp, body, STATELESS)
        assert "action=decline" in done["result"]["content"][0]["text"], done


# -- 6. headers that disagree with the body --------------------------------------------------------------
header_bytes = st.one_of(
    # what HTTP/1.1 lets a header value hold: visible ASCII, inner spaces and tabs, obs-text
    st.binary(min_size=0, max_size=60).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F or c == 9)
                                            .strip(b" \t")),
    st.sampled_from([b"2026-07-28", b"2025-11-25", b"2025-03-26", b"2024-11-05", b"1999-01-01", b"", b"tools/call",
                     b"tools/list", b"=?base64?dG9vbHMvY2FsbA==?=", b"=?base64?!!!?=", b"=?base64?/w==?=",
                     b"=?base64??=", b"echo__echo", b"=?base64?ZWNob19fZWNobw==?=", b"\xff\xfe", b"caf\xc3\xa9"]))


@st.composite
def header_cases(draw: st.DrawFn) -> tuple[list[tuple[bytes, bytes]], dict[str, Any], str]:
    context = draw(contexts)
    method = draw(st.sampled_from(["tools/call", "tools/list", "server/discover", "resources/read", "prompts/get",
                                   "ping", "subscriptions/listen"]))
    params: dict[str, Any] = {"name": draw(st.sampled_from(TOOLS)), "arguments": {"text": "hi"}}
    if method == "resources/read":
        params = {"uri": draw(st.sampled_from(["test://static-text", "nope://x", ""]))}
    message = with_meta({"jsonrpc": "2.0", "id": draw(st.integers(0, 10**6)), "method": method, "params": params},
                        draw(st.sampled_from([context, STATELESS, "none"])))
    if draw(st.booleans()) and isinstance(message["params"], dict) and "_meta" in message["params"]:
        meta = dict(message["params"]["_meta"])
        mutation = draw(st.sampled_from(["version", "caps", "drop"]))
        if mutation == "version":
            meta[f"{META}protocolVersion"] = draw(st.one_of(json_leaf, st.sampled_from(["2025-11-25", "2099-01-01"])))
        elif mutation == "caps":
            meta[f"{META}clientCapabilities"] = draw(json_values)
        else:
            meta.pop(draw(st.sampled_from(sorted(meta))))
        message["params"]["_meta"] = meta
    headers = Fuzzer.headers_for(_FAKE, context, message)
    for name in draw(st.lists(st.sampled_from([b"mcp-method", b"mcp-name", b"mcp-protocol-version", b"content-type",
                                               b"accept", b"mcp-session-id"]), max_size=3, unique=True)):
        action = draw(st.sampled_from(["replace", "drop", "duplicate"]))
        value = draw(st.one_of(header_bytes, st.sampled_from([b"text/plain", b"application/jsonx", b"text/event-stream",
                                                              b"*/*", b"application/json; charset=latin-1"])))
        if action in ("replace", "drop"):
            headers = [(k, v) for k, v in headers if k != name]
        if action != "drop":
            headers.append((name, value))
    return headers, message, context


class _FakeSessions:
    """headers_for without a proxy: real session ids are filled in at send time."""

    def session(self, version: str) -> str:
        return f"@session:{version}"


_FAKE = _FakeSessions()


@given(case=header_cases())
@example(case=([(b"accept", ACCEPT), (b"content-type", b"application/json"), (b"mcp-protocol-version", b"2026-07-28"),
                (b"mcp-method", b"tools/list")],
               with_meta({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                          "params": {"name": "echo__echo", "arguments": {"text": "hi"}}}, STATELESS), STATELESS))
@example(case=([(b"accept", ACCEPT), (b"content-type", b"application/json"), (b"mcp-protocol-version", b"2026-07-28"),
                (b"mcp-method", b"tools/call"), (b"mcp-name", b"=?base64?/w==?=")],
               with_meta({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                          "params": {"name": "echo__echo", "arguments": {"text": "hi"}}}, STATELESS), STATELESS))
@example(case=([(b"accept", b"text/html"), (b"content-type", b"application/json")],
               {"jsonrpc": "2.0", "id": 3, "method": "ping"}, "none"))
@example(case=([(b"accept", ACCEPT), (b"content-type", b"application/jsonx")],  # was taken as JSON
               {"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}, "none"))
@example(case=([(b"accept", ACCEPT), (b"content-type", b"Application/JSON; charset=utf-8")],
               {"jsonrpc": "2.0", "id": 3, "method": "ping"}, "none"))
def test_headers_disagree(fuzzer: Fuzzer, case: tuple[list[tuple[bytes, bytes]], dict[str, Any], str]) -> None:
    headers, message, context = case
    real = []
    for name, value in headers:
        if value.startswith(b"@session:"):
            value = fuzzer.session(value.decode()[9:]).encode()
        real.append((name, value))
    reply = send_and_check(fuzzer, "headers_disagree", encode(message), context, message, real)
    last = {name: value for name, value in real}  # a repeated header: the proxy reads the last one
    content_type = last.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
    accept = last.get(b"accept", b"")
    if b"application/json" not in accept and b"*/*" not in accept:
        assert reply is not None and reply["error"]["message"].startswith("Not Acceptable"), reply
    elif content_type != b"application/json":
        assert reply is not None and reply["error"]["message"].startswith("Unsupported Media Type"), reply


# -- 7. Mcp-Session-Id: duplicate, unknown, missing, malformed --------------------------------------------
@given(kind=st.sampled_from(["unknown", "missing", "malformed", "duplicate", "duplicate_same", "empty", "spaces",
                             "prefix", "case"]),
       version=st.sampled_from([*SESSION_VERSIONS, None]), http_method=st.sampled_from(["POST", "POST", "GET", "DELETE"]),
       junk=header_bytes, message=st.sampled_from(VALID))
@example(kind="duplicate", version="2025-11-25", http_method="POST", junk=b"x", message=VALID[0])
@example(kind="malformed", version="2025-11-25", http_method="DELETE", junk=b"\xff\xfe", message=VALID[0])
def test_session_ids(fuzzer: Fuzzer, kind: str, version: str | None, http_method: str, junk: bytes,
                     message: dict[str, Any]) -> None:
    real = fuzzer.session(version or "2025-11-25").encode()
    sids = {"unknown": [uuid.uuid4().hex.encode()], "missing": [], "malformed": [junk], "duplicate": [real, junk or b"x"],
            "duplicate_same": [real, real], "empty": [b""], "spaces": [real[:5] + b" " + real[5:]], "prefix": [real[:-1]],
            "case": [real.swapcase()]}[kind]
    if http_method == "DELETE" and real in sids and kind != "spaces":
        sids = [s if s != real else real + b"x" for s in sids]  # never end the shared sessions
    headers = [(b"accept", ACCEPT if http_method != "GET" else b"application/json"),
               (b"content-type", b"application/json")]
    headers += [(b"mcp-session-id", s) for s in sids]
    if version is not None:
        headers.append((b"mcp-protocol-version", version.encode()))
    body = encode(message) if http_method == "POST" else b""
    resp = fuzzer.post(body, headers, "session_ids", http_method)
    try:
        check(resp, body, version or "none", http_method)
        if http_method != "POST":
            assert resp.status_code in (400, 404, 406), resp.text  # never a deleted or opened shared session
    finally:
        fuzzer.tick()


# -- regressions: what the fuzzing found, pinned -------------------------------------------------------
def _post_json(fz: Fuzzer, message: Any, context: str) -> httpx.Response:
    body = encode(message)
    return fz.post(body, fz.headers_for(context, message), "regressions")


@pytest.mark.parametrize("context", ["2025-11-25", STATELESS])
def test_arguments_too_deep_to_forward(fuzzer: Fuzzer, context: str) -> None:
    """Arguments 256-1024 levels deep parse, but cannot be written upstream again: that was an internal
    error (-32603, a logged traceback) counted against the replica's health; now a precise -32602."""
    failures = _echo_failures(fuzzer)
    for depth in (256, 300, 1000):
        message = with_meta({"jsonrpc": "2.0", "id": depth, "method": "tools/call",
                             "params": {"name": "echo__echo", "arguments": {"text": "x", "deep": nested(depth)}}},
                            context)
        resp = fuzzer.post(_encode_deep(message), fuzzer.headers_for(context, message), "regressions")
        error = _final(resp)["error"]
        assert error["code"] == -32602 and "nested too deeply" in error["message"], error
        assert _final(resp)["id"] == depth
    ok = with_meta({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "echo__echo", "arguments": {"text": "x", "deep": nested(50)}}}, context)
    reply = _final(_post_json(fuzzer, ok, context))
    assert reply.get("result", {}).get("content", [{}])[0].get("text") == "x", reply
    assert _echo_failures(fuzzer) == failures, "the client's unforwardable params counted against the replica"
    fuzzer.still_serving()


def _echo_failures(fz: Fuzzer) -> int:
    view = fz.http.get(fz.url.replace("/mcp", "/admin/upstreams")).json()
    return int(view["servers"]["echo"]["replicas"][0]["health"]["failures"])


def test_unsubscribe_needs_a_string_uri(fuzzer: Fuzzer) -> None:
    """A list or object as the uri of resources/unsubscribe was an internal error (unhashable, a traceback)."""
    for uri in (["x"], {"a": 1}):
        message = {"jsonrpc": "2.0", "id": 4, "method": "resources/unsubscribe", "params": {"uri": uri}}
        error = _final(_post_json(fuzzer, message, "2025-11-25"))["error"]
        assert error == {"code": -32602, "message": "resources/unsubscribe: 'uri' must be a string"}, error


def test_session_answer_that_is_not_an_object(fuzzer: Fuzzer) -> None:
    """A client answering elicitation/create with "result": 5 on a session: the upstream gets an error at
    once (it was forwarded 5, could not read it, and the call waited to its 5 s timeout)."""
    headers = {"Accept": ACCEPT.decode(), "MCP-Protocol-Version": "2025-11-25"}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "conf__test_elicitation", "arguments": {"message": "m"}}}
    started = time.monotonic()
    with httpx.Client(timeout=15.0) as other:
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}},
                           "clientInfo": {"name": "fuzz", "version": "0"}}}
        sid = other.post(fuzzer.url, json=init, headers={"Accept": ACCEPT.decode()}).headers["mcp-session-id"]
        headers["Mcp-Session-Id"] = sid
        other.post(fuzzer.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        with fuzzer.http.stream("POST", fuzzer.url, json=call, headers=headers) as stream:
            lines = stream.iter_lines()
            asked = next(json.loads(line[5:]) for line in lines  # past the priming event (empty data)
                         if line.startswith("data:") and line[5:].strip())
            assert asked["method"] == "elicitation/create", asked
            answer = other.post(fuzzer.url, json={"jsonrpc": "2.0", "id": asked["id"], "result": 5}, headers=headers)
            assert answer.status_code == 202, answer.text
            reply = next(json.loads(line[5:]) for line in lines if line.startswith("data:") and '"id":1' in line)
    assert time.monotonic() - started < 3, "the upstream waited for an answer it could read"
    assert "error" in reply or reply["result"]["isError"] is True, reply


def test_forged_cursors_are_invalid(fuzzer: Fuzzer) -> None:
    """A cursor whose position is true (or negative, or of another list) is refused, not read as 1."""
    for payload in (b'{"k":"tools","p":true}', b'{"k":"tools","p":-1}', b'{"k":"prompts","p":0}'):
        cursor = base64.urlsafe_b64encode(payload).decode()
        message = {"jsonrpc": "2.0", "id": 6, "method": "tools/list", "params": {"cursor": cursor}}
        error = _final(_post_json(fuzzer, message, "2025-11-25"))["error"]
        assert error == {"code": -32602, "message": "Invalid cursor for tools"}, error


def test_ids_beyond_64_bits_are_named(fuzzer: Fuzzer) -> None:
    """An integer id past 64 bits cannot be echoed exactly: refused, saying so (not "must be an integer")."""
    resp = fuzzer.post(b'{"jsonrpc": "2.0", "id": 18446744073709551616, "method": "ping"}',
                       fuzzer.headers_for("2025-11-25", None), "regressions")
    assert resp.status_code == 400
    reply = resp.json()
    assert reply["id"] is None and "beyond 64 bits" in reply["error"]["message"], reply
    resp = fuzzer.post(b'{"jsonrpc": "2.0", "id": 18446744073709551615, "method": "ping"}',
                       fuzzer.headers_for("2025-11-25", None), "regressions")
    assert resp.json() == {"jsonrpc": "2.0", "id": 2**64 - 1, "result": {}}


def test_stateless_invalid_body_echoes_id(fuzzer: Fuzzer) -> None:
    for message in ({"jsonrpc": "1.0", "id": 7, "method": "tools/list"}, {"jsonrpc": "2.0", "id": "r", "result": {}}):
        resp = _post_json(fuzzer, message, STATELESS)
        assert resp.status_code == 400 and resp.json()["id"] == message["id"], resp.text
    resp = _post_json(fuzzer, {"jsonrpc": "2.0", "id": True, "method": "ping"}, "2025-11-25")
    assert resp.status_code == 400 and resp.json()["id"] is None, resp.text


# -- the count -------------------------------------------------------------------------------------------
def test_request_count(fuzzer: Fuzzer) -> None:
    """Runs last: every fuzz test sent its requests, and the file reached its bar."""
    generated = {name: count for name, count in fuzzer.by_test.items() if name != "regressions"}
    if not generated:
        pytest.skip("no fuzz test ran before this one (selected alone)")
    profile = hsettings.default
    for name, count in generated.items():
        assert count >= min(profile.max_examples, 50), f"{name} sent only {count} requests"
    total = sum(generated.values())
    print(f"\nfuzz /mcp: {total} generated requests sent (profile max_examples={profile.max_examples})")
    if len(generated) == 11:  # the whole file ran
        assert total >= MIN_REQUESTS, f"only {total} requests, the bar is {MIN_REQUESTS}"
