"""Planted secrets: one full run of a real proxy, then every output it made is searched for them.

The proxy (``build_app`` served by uvicorn with the CLI's own configuration, in this process so
its logs reach ``caplog`` at DEBUG and its events an in-memory sink) fronts two real upstream
processes: the faults fixture (echo, cached lookup, write, a call that times out, a crash) and
the conformance fixture (a resource template whose URI carries client input). Unique markers
are planted in the client token, the admin token, a wrong token, the events' hash key, an
upstream header, the Redis password, a webhook URL, and in tool arguments and results; the
run includes refusals (bad tokens, an unknown tool, a refused reload with a mistyped token)
and upstream failures (a timeout, a validation error, a crash).

Then: credentials appear nowhere, not even in successful answers; arguments and results
appear in no log line, event, metrics label, admin answer or error the proxy wrote (events
carry them only as a keyed hash and sizes). The upstreams' own answers, which may echo the
arguments back to their caller, are the only place such data may show.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _raw import RawClient, final, text_of
from _served import Served
from conftest import Stack

from only1mcp.events import keyed_hash
from only1mcp.jobs.bench._procs import free_port

RUN = uuid.uuid4().hex[:10]


def planted(what: str) -> str:
    return f"planted-{what}-{RUN}"


# Credentials: must show nowhere at all.
CLIENT_TOKEN, ADMIN_TOKEN, WRONG_TOKEN = planted("client-token"), planted("admin-token"), planted("wrong-token")
HASH_KEY, UPSTREAM_KEY = planted("hash-key"), planted("upstream-key")
REDIS_PASSWORD, WEBHOOK_SECRET = planted("redis-password"), planted("webhook-path")
CREDENTIALS = (CLIENT_TOKEN, ADMIN_TOKEN, WRONG_TOKEN, HASH_KEY, UPSTREAM_KEY, REDIS_PASSWORD, WEBHOOK_SECRET)
# Client data: arguments (and the results that echo them), and the name of a tool nobody serves.
ECHOED, LOOKED_UP, WRITTEN = planted("echo-arg"), planted("lookup-arg"), planted("write-arg")
MISTYPED, UNKNOWN_ARG, UNKNOWN_NAME = planted("mistyped-arg"), planted("unknown-tool-arg"), planted("unknown-name")
STATELESS, TEMPLATE_ID = planted("stateless-arg"), planted("uri-id")
DATA = (ECHOED, LOOKED_UP, WRITTEN, MISTYPED, UNKNOWN_ARG, UNKNOWN_NAME, STATELESS, TEMPLATE_ID)


def config_text(port: int, faults: str, conformance: str, auth: str | None = None) -> str:
    auth = auth or f'tokens = ["{CLIENT_TOKEN}"]\nadmin_token = "{ADMIN_TOKEN}"'
    return f"""
[proxy]
listen = "127.0.0.1:{port}"
log_level = "debug"

[auth]
{auth}

[events]
hash_key = "{HASH_KEY}"

[store]
redis_url = "redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0"

[cache]
default_ttl = 30.0

[[servers]]
name = "faults"
namespace = "faults"
[servers.tools.sleep]
timeout = 0.5
[servers.remediation]
webhook = "https://hooks.example/services/{WEBHOOK_SECRET}"
[[servers.replicas]]
url = "{faults}"
headers = {{ "X-Upstream-Key" = "{UPSTREAM_KEY}" }}

[[servers]]
name = "conf"
namespace = "conf"
[[servers.replicas]]
url = "{conformance}"
"""


class Outputs:
    """Everything the proxy said, by channel."""

    def __init__(self) -> None:
        self.bodies: list[str] = []  # every answer, successful ones included (credentials only)
        self.errors: list[str] = []  # error answers the proxy wrote itself
        self.admin: list[str] = []  # every /admin answer
        self.metrics = ""

    def keep(self, resp: httpx.Response, into: list[str] | None = None) -> httpx.Response:
        self.bodies.append(f"{resp.status_code} {dict(resp.headers)} {resp.text}")
        if into is not None:
            into.append(resp.text)
        return resp


@pytest.fixture
def run(stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[tuple[Served, Outputs, Path]]:
    faults, _ = stack.fixture("faults")
    conformance, _ = stack.fixture("conformance")
    path = tmp_path / "proxy.toml"
    path.write_text(config_text(free_port(), faults, conformance))
    caplog.set_level(logging.DEBUG)
    with Served(path, reloadable=True) as served:
        yield served, Outputs(), path
    # the context ends first: the logs of the shutdown are searched too


def _mcp_calls(served: Served, out: Outputs) -> dict[str, Any]:
    """The client's part of the run; returns what later checks need (ids of a routed call)."""
    url = f"{served.base}/mcp"
    with RawClient(url) as refused:  # wrong or missing credentials
        for headers in ({"Authorization": f"Bearer {WRONG_TOKEN}"}, {"X-API-Key": WRONG_TOKEN}, {}):
            resp = refused.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers)
            assert resp.status_code == 401
            out.keep(resp, out.errors)
    with RawClient(url) as raw:
        raw.http.headers["Authorization"] = f"Bearer {CLIENT_TOKEN}"
        sid = raw.initialize()
        assert text_of(raw.call_tool(sid, "faults__echo", {"text": ECHOED})) == ECHOED
        resp, echo_reply = raw.request(sid, "tools/call", {"name": "faults__echo", "arguments": {"text": ECHOED}})
        routed = {"jsonrpc_id": echo_reply["id"], "request_id": resp.headers["only1mcp-request-id"]}
        for _ in range(2):  # read-only: the second answer comes from the cache
            assert LOOKED_UP in text_of(raw.call_tool(sid, "faults__lookup", {"key": LOOKED_UP}))
        assert WRITTEN in text_of(raw.call_tool(sid, "faults__write", {"key": WRITTEN}))
        # the upstream refuses a mistyped argument: its answer (which may quote it) is relayed as it is
        mistyped = raw.call_tool(sid, "faults__echo", {"text": {"nested": MISTYPED}})
        assert "error" in mistyped or mistyped["result"].get("isError"), mistyped
        read = raw.request(sid, "resources/read", {"uri": f"test://template/{TEMPLATE_ID}/data"})[1]
        assert TEMPLATE_ID in json.dumps(read["result"]), read
        # errors the proxy writes itself: an unknown tool (its arguments), a timeout
        resp, reply = raw.request(sid, "tools/call", {"name": f"faults__{UNKNOWN_NAME}", "arguments": {"x": UNKNOWN_ARG}})
        assert "error" in reply, reply
        out.errors.append(json.dumps(reply["error"]).replace(UNKNOWN_NAME, "<the name it was asked>"))
        resp, reply = raw.request(sid, "tools/call", {"name": "faults__sleep", "arguments": {"seconds": 5}})
        assert "error" in reply, reply
        out.keep(resp, out.errors)
        # 2026-07-28, no session
        stateless = raw.stateless("tools/call", {"name": "faults__echo", "arguments": {"text": STATELESS}})
        assert text_of(final(stateless)) == STATELESS
        # the upstream dies mid-call; the next call finds no replica
        for _ in range(2):
            resp, reply = raw.request(sid, "tools/call", {"name": "faults__crash", "arguments": {}})
            assert "error" in reply, reply
            out.keep(resp, out.errors)
        out.bodies += raw.bodies
    return routed


def _admin_and_metrics(served: Served, out: Outputs, path: Path, routed: dict[str, Any]) -> None:
    base, admin = served.base, {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=base, timeout=20) as http:
        for headers in ({}, {"Authorization": f"Bearer {WRONG_TOKEN}"}, {"Authorization": f"Bearer {CLIENT_TOKEN}"}):
            resp = out.keep(http.get("/admin/config", headers=headers), out.errors)
            assert resp.status_code in (401, 403), resp.text
        resp = out.keep(http.get("/metrics", headers={"X-API-Key": WRONG_TOKEN}), out.errors)
        assert resp.status_code == 401
        for view in ("upstreams", "cache", "config", "overrides", "remediation",
                     f"decisions/{routed['jsonrpc_id']}", f"explain/{routed['request_id']}"):
            resp = out.keep(http.get(f"/admin/{view}", headers=admin), out.admin)
            assert resp.status_code == 200, (view, resp.text)
        assert out.keep(http.post("/admin/reload", headers=admin), out.admin).status_code == 200
        # A mistyped token in the file: the refusal (answer and log) names the key, not the value.
        good = path.read_text()
        path.write_text(good.replace(f'admin_token = "{ADMIN_TOKEN}"', f'admin_token = ["{ADMIN_TOKEN}"]'))
        refused = out.keep(http.post("/admin/reload", headers=admin), out.admin)
        assert refused.status_code == 400 and "auth.admin_token" in refused.text, refused.text
        # The published demo token, in a proxy that is no demo: refused as at start-up.
        path.write_text(good.replace(f'tokens = ["{CLIENT_TOKEN}"]', 'tokens = ["only1mcp-demo-token"]'))
        refused = out.keep(http.post("/admin/reload", headers=admin), out.admin)
        assert refused.status_code == 400 and "[proxy] demo = true" in refused.text, refused.text
        path.write_text(good)
        assert out.keep(http.post("/admin/reload", headers=admin), out.admin).status_code == 200
        resp = out.keep(http.get("/metrics", headers={"X-API-Key": CLIENT_TOKEN}))
        assert resp.status_code == 200 and "only1mcp_calls_total" in resp.text
        out.metrics = resp.text


def _found(markers: tuple[str, ...], **channels: str) -> list[str]:
    return [f"{marker} in {name}" for name, text in channels.items() for marker in markers if marker in text]


def test_no_planted_secret_in_any_output(run: tuple[Served, Outputs, Path], caplog: pytest.LogCaptureFixture,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    served, out, path = run
    routed = _mcp_calls(served, out)
    _admin_and_metrics(served, out, path, routed)
    served.__exit__()  # stop now (idempotent): the shutdown's log lines belong to the run
    events = served.sink.events
    logs = caplog.text
    printed = "".join(capfd.readouterr())
    assert logs.count("\n") > 20, "the run logged almost nothing: is the capture working?"
    assert len(events) >= 10

    every = {"logs": logs, "printed": printed, "events": "\n".join(e.to_json().decode() for e in events),
             "metrics": out.metrics, "admin": "\n".join(out.admin), "errors": "\n".join(out.errors)}
    leaks = _found(CREDENTIALS, bodies="\n".join(out.bodies), **every) + _found(DATA, **every)
    assert not leaks, "\n".join(leaks)

    # Arguments travel in events only as a keyed hash (with the planted key) and sizes.
    echoed = [e for e in events if e.tool == "faults__echo" and e.status == "ok"]
    assert echoed and all(e.args_hash == keyed_hash(HASH_KEY.encode(), {"text": ECHOED}) for e in echoed[:2])
    assert all(e.request_bytes > len(ECHOED) and e.response_bytes > len(ECHOED) for e in echoed[:2])
    # the call of an unknown tool is an event, without the name it asked for
    assert any(e.method == "tools/call" and e.error_class == "invalid_params" and e.tool is None for e in events)
    assert 'tool="resources/read"' in out.metrics  # a resource URI is no metrics label
