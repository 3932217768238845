"""``Mcp-Param-*`` headers (2026-07-28 ``x-mcp-header``), through a real proxy and a real upstream.

The upstream (``_header_upstream.py``, the mcp SDK's server, spoken to in 2026-07-28) answers
with the ``Mcp-Param-*`` headers each call arrived with, and itself refuses a call whose headers
disagree with its body. So: the proxy mirrors the annotated arguments (ASCII as is, anything
else as ``=?base64?…?=``), leaves out a tool whose annotation breaks the rules, lists again and
retries once when the upstream answers -32020; and, as the server of 2026-07-28 clients, refuses
their calls whose headers are missing, extra, malformed or different (400, -32020).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _raw import STATELESS, RawClient, expect_error, final, text_of
from conftest import Stack, wait_port
from mcp import Client

from only1mcp.jobs.bench._procs import ProcessGroup, free_port

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

_META = "io.modelcontextprotocol/"
UPSTREAM = Path(__file__).with_name("_header_upstream.py")


class Env:
    def __init__(self, stack: Stack) -> None:
        port = free_port()
        upstream = stack.start(f"header-upstream-{port}", [sys.executable, str(UPSTREAM), str(port)])
        wait_port(port, upstream)
        self.url, self.proc = stack.proxy(f"""
            [[servers]]
            name = "h"
            [[servers.replicas]]
            url = "http://127.0.0.1:{port}/mcp"
            protocol = "2026-07-28"
        """)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("param_headers")
    with ProcessGroup(tmp) as group:
        yield Env(Stack(group, tmp))


def _b64(text: str) -> str:
    return "=?base64?" + base64.b64encode(text.encode()).decode() + "?="


CASES = [  # arguments → the Mcp-Param-* headers the upstream must receive
    ("h__route", {"region": "us-west1"}, {"mcp-param-region": "us-west1"}),
    ("h__route", {"region": "Hello, 世界", "priority": 42, "urgent": True},
     {"mcp-param-region": "=?base64?SGVsbG8sIOS4lueVjA==?=", "mcp-param-priority": "42", "mcp-param-urgent": "true"}),
    ("h__route", {"region": " padded ", "urgent": False}, {"mcp-param-region": _b64(" padded "),
                                                           "mcp-param-urgent": "false"}),
    ("h__route", {"region": "line1\nline2"}, {"mcp-param-region": "=?base64?bGluZTEKbGluZTI=?="}),
    ("h__route", {"region": "=?base64?literal?="}, {"mcp-param-region": "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="}),
    ("h__nested", {"target": {"zone": "eu-1"}}, {"mcp-param-zone": "eu-1"}),
    ("h__nested", {"target": {}}, {}),  # no value, no header
]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_annotated_arguments_reach_the_upstream_as_headers(env: Env, mode: str) -> None:
    async def scenario() -> list[dict[str, str]]:
        async with Client(env.url, mode=mode) as client:  # at 2026-07-28 the client sends them to the proxy too
            received = []
            for name, arguments, _ in CASES:
                result = await client.call_tool(name, arguments)
                assert not result.is_error, result
                received.append(json.loads(result.content[0].text))
            return received

    assert asyncio.run(scenario()) == [headers for _, _, headers in CASES]


def test_a_tool_whose_annotation_breaks_the_rules_is_left_out(env: Env) -> None:
    with RawClient(env.url) as raw:
        names = raw.tool_names(raw.initialize())
    assert {"h__route", "h__nested", "h__plain"} <= set(names) and "h__broken" not in names
    log = env.proc.log_path.read_text()
    assert "tool 'broken' left out" in log and "reached from the root through `properties` alone" in log


def _stateless(env: Env, arguments: dict[str, Any], headers: list[tuple[str, str | bytes]],
               name: str = "h__route") -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": name, "arguments": arguments,
                       "_meta": {f"{_META}protocolVersion": STATELESS, f"{_META}clientCapabilities": {}}}}
    base = [("Accept", "application/json, text/event-stream"), ("Content-Type", "application/json"),
            ("MCP-Protocol-Version", STATELESS), ("Mcp-Method", "tools/call"), ("Mcp-Name", name)]
    return httpx.post(env.url, content=json.dumps(body), headers=base + headers, timeout=30)


def test_the_proxy_refuses_stateless_calls_whose_headers_disagree(env: Env) -> None:
    args = {"region": "Hello, 世界", "priority": 7}
    good = [("Mcp-Param-Region", _b64("Hello, 世界")), ("Mcp-Param-Priority", "7")]
    accepted = _stateless(env, args, good)
    assert accepted.status_code == 200, accepted.text
    assert json.loads(text_of(final(accepted))) == {"mcp-param-region": _b64("Hello, 世界"),
                                                     "mcp-param-priority": "7"}
    assert _stateless(env, args, [good[0], ("mcp-param-priority", "7.0")]).status_code == 200  # numerically equal

    refused = {
        "is missing": [good[1]],
        "does not match": [("Mcp-Param-Region", _b64("Hello")), good[1]],
        "characters": [("Mcp-Param-Region", "Hello, 世界".encode()), good[1]],  # non-ASCII must be base64
        "malformed": [("Mcp-Param-Region", "=?base64?!!!?="), good[1]],
        "is present but": [*good, ("Mcp-Param-Urgent", "true")],  # a header for an argument not sent
        "more than once": [*good, ("Mcp-Param-Region", _b64("Hello, 世界"))],
    }
    for words, headers in refused.items():
        expect_error(_stateless(env, args, headers), 400, -32020, "Header mismatch", words)
    ascii_only = _stateless(env, {"region": "us-west1"}, [("Mcp-Param-Region", "us-west1")])
    assert ascii_only.status_code == 200, ascii_only.text
    unannotated = _stateless(env, {"target": {}}, [], name="h__nested")
    assert unannotated.status_code == 200 and json.loads(text_of(final(unannotated))) == {}


def test_session_calls_are_not_checked_against_mcp_param_headers(env: Env) -> None:
    with RawClient(env.url) as raw:
        sid = raw.initialize()
        resp = raw.post({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                         "params": {"name": "h__route", "arguments": {"region": "eu"}}},
                        sid=sid, headers={"Mcp-Param-Region": "somewhere else"})
        assert resp.status_code == 200 and json.loads(text_of(final(resp))) == {"mcp-param-region": "eu"}


def test_a_header_mismatch_upstream_relists_and_retries_once(env: Env) -> None:
    with RawClient(env.url) as raw:
        sid = raw.initialize()
        assert json.loads(text_of(raw.call_tool(sid, "h__plain", {"label": "a"}))) == {}
        raw.call_tool(sid, "h__relabel")  # the upstream now wants Mcp-Param-Label, and says nothing
        reply = raw.call_tool(sid, "h__plain", {"label": "b"})  # -32020 upstream, a new listing, the retry
        assert json.loads(text_of(reply)) == {"mcp-param-label": "b"}
