"""Bad input and failing upstreams, through a real proxy process, by raw Streamable HTTP.

Each case asserts the exact HTTP status and JSON-RPC error code (and that the
message names the problem), then that a normal ``tools/call`` on the same proxy
still succeeds. Upstream faults come from ``only1mcp fixture faults`` (over HTTP
and over stdio): a tool that kills its process mid-call, one that sleeps past the
server's timeout, and a server that is down when the proxy starts. No response
body may contain a Python traceback.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _raw import RawClient, expect_error, final, text_of
from conftest import Stack, wait_port

from only1mcp.jobs.bench._procs import Managed, ProcessGroup

STDIO_FAULTS = [sys.executable, "-m", "only1mcp.cli", "fixture", "faults", "--stdio"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server(name: str, target: str | list[str], extra: str = "") -> str:
    """A [[servers]] table with one replica: a URL, or a command (a JSON list of strings is TOML too)."""
    replica = f"command = {json.dumps(target)}" if isinstance(target, list) else f'url = "{target}"'
    return f'[[servers]]\nname = "{name}"\n{extra}\n[[servers.replicas]]\n{replica}\n'


class Upstreams:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        # Both start at once (each pays the mcp SDK import), then both are awaited.
        ports = [free_port(), free_port()]
        procs = [stack.start(f"{name}-{port}", [sys.executable, "-m", "only1mcp.cli", "fixture", name, "--port",
                                                str(port)]) for name, port in zip(("conformance", "faults"), ports)]
        for port, proc in zip(ports, procs):
            wait_port(port, proc)
        self.conformance, self.faults = (f"http://127.0.0.1:{port}/mcp" for port in ports)


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstreams]:
    tmp: Path = tmp_path_factory.mktemp("bad_input")
    with ProcessGroup(tmp) as group:
        yield Upstreams(Stack(group, tmp))


@pytest.fixture(scope="module")
def front(upstreams: Upstreams) -> str:
    """A proxy fronting the conformance fixture and the faults server, with a 1 KiB body limit."""
    url, _proc = upstreams.stack.proxy(_server("conf", upstreams.conformance) + _server("faults", upstreams.faults),
                                       proxy_extra="max_body_bytes = 1024")
    return url


@pytest.fixture
def client(front: str) -> Iterator[RawClient]:
    with RawClient(front) as raw:
        yield raw
        raw.assert_no_traceback()


def still_serving(raw: RawClient) -> None:
    """A fresh session's normal tools/call succeeds on the same proxy."""
    word = uuid.uuid4().hex
    assert text_of(raw.call_tool(raw.initialize(), "faults__echo", {"text": word})) == word


# -- malformed requests on a session --------------------------------------------------
def test_malformed_json(client: RawClient) -> None:
    sid = client.initialize()
    resp = client.post(b'{"jsonrpc": "2.0", "id": 1, "method": ', sid=sid)
    expect_error(resp, 400, -32700, "Parse error")
    assert final(resp)["id"] is None
    still_serving(client)


def test_wrong_jsonrpc_version(client: RawClient) -> None:
    sid = client.initialize()
    resp = client.post({"jsonrpc": "1.0", "id": 7, "method": "tools/list"}, sid=sid)
    expect_error(resp, 400, -32600, 'jsonrpc must be "2.0"')
    assert final(resp)["id"] == 7
    still_serving(client)


@pytest.mark.parametrize("bad_id", [1.5, True, None, {"n": 1}, [1]], ids=["float", "bool", "null", "object", "array"])
def test_id_of_wrong_type(client: RawClient, bad_id: object) -> None:
    sid = client.initialize()
    resp = client.post({"jsonrpc": "2.0", "id": bad_id, "method": "tools/list"}, sid=sid)
    expect_error(resp, 400, -32600, "id must be a string or an integer")
    still_serving(client)


def test_unknown_method(client: RawClient) -> None:
    sid = client.initialize()
    resp, _ = client.request(sid, "no/such/method", {})
    expect_error(resp, 200, -32601, "Method not found", "no/such/method")
    still_serving(client)


@pytest.mark.parametrize("name", ["faults__no_such_tool", "nobody__echo", "echo"])
def test_unknown_tool(client: RawClient, name: str) -> None:
    sid = client.initialize()
    resp, _ = client.request(sid, "tools/call", {"name": name, "arguments": {}})
    expect_error(resp, 200, -32602, "Unknown tool", name)
    still_serving(client)


def test_invalid_params(client: RawClient) -> None:
    sid = client.initialize()
    resp, _ = client.request(sid, "tools/call", {"name": "faults__echo", "arguments": ["not", "an", "object"]})
    expect_error(resp, 200, -32602, "'arguments' must be an object")
    resp = client.post({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": [1, 2]}, sid=sid)
    expect_error(resp, 200, -32602, "params must be an object")
    resp, _ = client.request(sid, "tools/call", {"arguments": {}})
    expect_error(resp, 200, -32602, "'name' must be a string")
    resp = client.post({"jsonrpc": "2.0", "id": 4, "method": "initialize", "params": "2025-11-25"})
    expect_error(resp, 200, -32602, "protocolVersion is required")
    still_serving(client)


def test_malformed_notifications_and_responses(client: RawClient) -> None:
    """Odd shapes in messages that get no answer, or rare ones, are errors or ignored, never a 500."""
    sid = client.initialize()
    for params in ({"requestId": {"not": "hashable"}}, [1, 2]):
        resp = client.post({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}, sid=sid)
        assert resp.status_code == 202, resp.text
    resp, _ = client.request(sid, "logging/setLevel", {"level": ["debug"]})
    expect_error(resp, 200, -32602, "level must be one of")
    old = client.initialize("2025-03-26")
    batch = [{"jsonrpc": "2.0", "id": "never-asked", "result": {}}, {"jsonrpc": "2.0", "id": 1, "method": "ping"}]
    resp = client.post(batch, sid=old, version="2025-03-26")
    assert resp.status_code == 200 and resp.json() == [{"jsonrpc": "2.0", "id": 1, "result": {}}]
    still_serving(client)


# -- transport-level problems ---------------------------------------------------------
def test_missing_session_id(client: RawClient) -> None:
    resp = client.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, version="2025-11-25")
    expect_error(resp, 400, -32600, "Mcp-Session-Id header is required")
    still_serving(client)


def test_unknown_session_id(client: RawClient) -> None:
    resp = client.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, sid="no-such-session-" + uuid.uuid4().hex)
    expect_error(resp, 404, -32600, "Session not found")
    still_serving(client)


def test_bad_protocol_version_header(client: RawClient) -> None:
    sid = client.initialize()
    resp = client.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, sid=sid, version="1999-01-01")
    expect_error(resp, 400, -32600, "MCP-Protocol-Version", "1999-01-01")
    still_serving(client)


def test_oversized_body(client: RawClient) -> None:
    sid = client.initialize()
    big = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": "faults__echo", "arguments": {"text": "x" * 2000}}}
    expect_error(client.post(big, sid=sid), 413, -32600, "Payload Too Large", "1024")
    # Without a Content-Length (chunked), the limit is enforced while reading.
    chunks = iter([b'{"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {"pad": "', b"y" * 1500, b'"}}'])
    expect_error(client.post(chunks, sid=sid), 413, -32600, "Payload Too Large")
    still_serving(client)


def test_batch_on_2025_11_25_session(client: RawClient) -> None:
    sid = client.initialize()
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]
    expect_error(client.post(batch, sid=sid), 400, -32600, "batches are only allowed in protocol version 2025-03-26")
    still_serving(client)


def test_foreign_origin(client: RawClient) -> None:
    sid = client.initialize()
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "faults__echo", "arguments": {"text": "hi"}}}
    resp = client.post(message, sid=sid, headers={"Origin": "http://evil.example.com"})
    expect_error(resp, 403, -32600, "Origin not allowed")
    # A loopback origin (a local web page) is admitted on the same session.
    port = client.url.split(":")[2].split("/")[0]
    resp = client.post(message, sid=sid, headers={"Origin": f"http://127.0.0.1:{port}"})
    assert resp.status_code == 200 and text_of(final(resp)) == "hi"
    still_serving(client)


def test_get_without_event_stream_accept(client: RawClient) -> None:
    sid = client.initialize()
    resp = client.send("GET", sid=sid, headers={"Accept": "application/json"})
    expect_error(resp, 406, -32600, "text/event-stream")
    with client.http.stream("GET", client.url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid,
                                                        "MCP-Protocol-Version": "2025-11-25"}) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
    still_serving(client)


def test_delete_then_reuse(client: RawClient) -> None:
    sid = client.initialize()
    assert text_of(client.call_tool(sid, "faults__echo", {"text": "before"})) == "before"
    assert client.send("DELETE", sid=sid).status_code == 200
    resp = client.post({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                        "params": {"name": "faults__echo", "arguments": {"text": "after"}}}, sid=sid)
    expect_error(resp, 404, -32600, "Session not found")
    expect_error(client.send("DELETE", sid=sid), 404, -32600, "Session not found")
    still_serving(client)


# -- the stateless 2026-07-28 revision ------------------------------------------------
def test_stateless_errors(client: RawClient) -> None:
    call = {"name": "faults__echo", "arguments": {"text": "stateless"}}
    ok = client.stateless("tools/call", call)
    assert ok.status_code == 200 and text_of(final(ok)) == "stateless"
    assert final(ok)["result"]["resultType"] == "complete"
    expect_error(client.stateless("tools/call", call, meta="2025-11-25"), 400, -32020, "MCP-Protocol-Version")
    error = expect_error(client.stateless("tools/list", {}, header="2099-01-01", meta="2099-01-01"),
                         400, -32022, "Unsupported protocol version")
    assert "2026-07-28" in error["data"]["supported"] and error["data"]["requested"] == "2099-01-01"
    expect_error(client.stateless("tools/list", {}, meta=None), 400, -32602, "_meta")
    expect_error(client.stateless("ping", {}), 404, -32601, "Method not found")
    expect_error(client.stateless("subscriptions/listen", {"notifications": [1]}), 400, -32602,
                 "params.notifications must be an object")
    still_serving(client)


# -- failing upstreams ----------------------------------------------------------------
@pytest.fixture(scope="module")
def faulty(upstreams: Upstreams) -> tuple[str, Managed]:
    """A proxy fronting conformance, a crashable faults server over HTTP and over stdio, and a slow one."""
    crash_url, _proc = upstreams.stack.fixture("faults")
    servers = (_server("conf", upstreams.conformance) + _server("fh", crash_url)
               + _server("fs", STDIO_FAULTS) + _server("slow", STDIO_FAULTS, "timeout = 0.5"))
    return upstreams.stack.proxy(servers)


@pytest.fixture
def faulty_client(faulty: tuple[str, Managed]) -> Iterator[tuple[RawClient, Managed]]:
    with RawClient(faulty[0]) as raw:
        yield raw, faulty[1]
        raw.assert_no_traceback()


def assert_log_clean(proxy: Managed) -> None:
    """Upstream failures are logged as one warning each: no traceback, no exception left unretrieved."""
    text = proxy.log_path.read_text(errors="replace")
    assert "Traceback" not in text and "never retrieved" not in text, text[-3000:]


def _conf_serves(raw: RawClient, sid: str) -> None:
    assert text_of(raw.call_tool(sid, "conf__test_simple_text")) == "This is a simple text response for testing."


def test_upstream_crash_mid_call(faulty_client: tuple[RawClient, Managed]) -> None:
    raw, proxy = faulty_client
    sid = raw.initialize()
    for _ in range(2):
        assert text_of(raw.call_tool(sid, "fs__echo", {"text": "warm"})) == "warm"
    assert text_of(raw.call_tool(sid, "fs__count")) == "3"
    for server in ("fh", "fs"):
        start = time.monotonic()
        reply = raw.call_tool(sid, f"{server}__crash")
        assert time.monotonic() - start < 5, "the crash was not reported promptly"
        assert reply["error"]["code"] == -32011, reply
        assert f"upstream '{server}' failed during the call" in reply["error"]["message"]
        assert reply["error"]["data"] == {"server": server}
        _conf_serves(raw, sid)  # the other servers keep serving
    # The HTTP upstream's process is gone for good: its calls fail fast, naming it.
    reply = raw.call_tool(sid, "fh__echo", {"text": "x"})
    assert reply["error"]["code"] == -32010 and "upstream 'fh'" in reply["error"]["message"]

    # The stdio upstream is respawned by the proxy: a fresh process, counting from zero.
    raw.poll(lambda: "result" in raw.call_tool(sid, "fs__echo", {"text": "back"}), timeout=15)
    assert text_of(raw.call_tool(sid, "fs__count")) == "2"
    assert text_of(raw.call_tool(raw.initialize(), "fs__echo", {"text": "new session"})) == "new session"
    assert_log_clean(proxy)


def test_upstream_timeout(faulty_client: tuple[RawClient, Managed]) -> None:
    raw, proxy = faulty_client
    sid = raw.initialize()
    start = time.monotonic()
    reply = raw.call_tool(sid, "slow__sleep", {"seconds": 5})
    elapsed = time.monotonic() - start
    assert reply["error"]["code"] == -32001, reply
    assert "upstream 'slow' did not answer within 0.5 s" in reply["error"]["message"]
    assert reply["error"]["data"] == {"server": "slow", "timeout_s": 0.5}
    assert 0.4 <= elapsed < 2.0, f"timed out after {elapsed:.2f}s, expected ~0.5s"
    # The proxy (and the same upstream session) answers the next call at once.
    start = time.monotonic()
    assert text_of(raw.call_tool(sid, "slow__echo", {"text": "next"})) == "next"
    assert time.monotonic() - start < 1.0
    _conf_serves(raw, sid)
    # The proxy sent notifications/cancelled: the stdio upstream's sleep was cancelled
    # (it says so on stderr, which the proxy logs), long before its 5 s were up.
    raw.poll(lambda: "faults: sleep(5) cancelled" in proxy.log_path.read_text(errors="replace"), timeout=2.5)
    assert_log_clean(proxy)


def test_upstream_down_at_startup(upstreams: Upstreams) -> None:
    port = free_port()  # nothing listens here yet
    servers = _server("conf", upstreams.conformance) + _server("late", f"http://127.0.0.1:{port}/mcp")
    url, proxy = upstreams.stack.proxy(servers, proxy_extra="connect_timeout = 1.0")
    with RawClient(url) as raw:
        sid = raw.initialize()
        _conf_serves(raw, sid)
        assert not any(name.startswith("late__") for name in raw.tool_names(sid))
        reply = raw.call_tool(sid, "late__echo", {"text": "x"})
        assert reply["error"]["code"] == -32010, reply
        assert "upstream 'late' is unavailable" in reply["error"]["message"]
        assert reply["error"]["data"] == {"server": "late"}

        upstreams.stack.fixture("faults", port=port)
        raw.poll(lambda: "late__echo" in raw.tool_names(sid), timeout=35, interval=0.3)
        assert text_of(raw.call_tool(sid, "late__echo", {"text": "joined"})) == "joined"
        _conf_serves(raw, sid)
        raw.assert_no_traceback()
    assert_log_clean(proxy)
