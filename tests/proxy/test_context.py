"""tools/list context optimisation (proxy/context.py), on a real proxy in front of the toolbox fixture's
five servers (110 tools): ranked pruned lists for opted-in clients, the full list for the others,
the search meta-tool enabling what it finds (with list_changed on the GET stream), calls by name of
unlisted tools, bad search input, and the history's memory bounds.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _raw import RawClient, expect_error, final, text_of
from conftest import PYTHON, Stack, wait_port

from only1mcp.context import ContextSettings
from only1mcp.errors import ConfigError
from only1mcp.jobs.bench._procs import ProcessGroup, free_ports
from only1mcp.jobs.servers.toolbox_catalog import SERVERS
from only1mcp.proxy.catalog import Catalog
from only1mcp.proxy.context import _OVERALL_MAX, Context, History
from only1mcp.proxy.sessions import ClientSession
from only1mcp.proxy.toolsearch import ToolIndex, stem, words
from only1mcp.settings import parse_settings

SEARCH = "only1mcp_search_tools"
CATALOG = sum(len(tools) for _name, _what, tools in SERVERS)
OPTED = ["ctx-ranked", "ctx-search", "ctx-unlisted", "ctx-bad", "ctx-optout"]  # configured in [context] clients
OTHERS = ["ctx-plain", "ctx-capability", "ctx-cold-a", "ctx-cold-b"]


def client_id(token: str) -> str:
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def toolbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """The toolbox fixture's five servers (one process) and the [[servers]] tables naming them."""
    tmp = tmp_path_factory.mktemp("context")
    with ProcessGroup(tmp) as group:
        stack = Stack(group, tmp)
        ports = free_ports(len(SERVERS))
        proc = stack.start("toolbox", [PYTHON, "-m", "only1mcp.jobs.servers.toolbox",
                                       *[arg for port in ports for arg in ("--port", str(port))]])
        for port in ports:
            wait_port(port, proc)
        servers = "".join(f'[[servers]]\nname = "{name}"\n[[servers.replicas]]\nurl = "http://127.0.0.1:{port}/mcp"\n'
                          for (name, _what, _tools), port in zip(SERVERS, ports))
        yield stack, servers


def start_proxy(stack: Stack, servers: str, context: str) -> str:
    tokens = json.dumps(OPTED + OTHERS)
    url, _ = stack.proxy(f"[auth]\ntokens = {tokens}\n\n[context]\n{textwrap.dedent(context)}\n{servers}",
                         proxy_extra="page_size = 500")
    with connect(url, "ctx-plain") as client:  # serving once every server's tools are listed
        sid = initialize(client, {"experimental": {"only1mcp/context": {"enabled": False}}})  # even under "*"
        client.poll(lambda: len(client.tool_names(sid)) == CATALOG, timeout=30)
    return url


@pytest.fixture(scope="module")
def proxy_url(toolbox: tuple[Stack, str]) -> str:
    stack, servers = toolbox
    clients = json.dumps([client_id(t) for t in OPTED])
    return start_proxy(stack, servers, f"enabled = true\nclients = {clients}\nmax_tools = 3\n")


def connect(url: str, token: str) -> RawClient:
    client = RawClient(url)
    client.http.headers["Authorization"] = f"Bearer {token}"
    return client


def initialize(client: RawClient, capabilities: dict) -> str:
    resp = client.post({"jsonrpc": "2.0", "id": client.next_id(), "method": "initialize",
                        "params": {"protocolVersion": "2025-11-25", "capabilities": capabilities,
                                   "clientInfo": {"name": "context-test", "version": "0"}}})
    sid = resp.headers["mcp-session-id"]
    assert client.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, sid=sid).status_code == 202
    return sid


def search(client: RawClient, sid: str, arguments: object) -> dict:
    _resp, reply = client.request(sid, "tools/call", {"name": SEARCH, "arguments": arguments})
    return reply


# -- through the proxy ---------------------------------------------------------------------------------
def test_an_opted_in_client_gets_its_most_called_tools_and_the_search_tool(proxy_url: str) -> None:
    with connect(proxy_url, "ctx-ranked") as client:
        sid = client.initialize()
        for tool, times in (("tracker__get_issue", 3), ("repos__get_file", 2), ("shop__get_order", 1)):
            for _ in range(times):
                assert json.loads(text_of(client.call_tool(sid, tool, {})))["ok"]
        client.call_tool(sid, "people__get_user", {})  # once, long ago: loses to the three above
        time.sleep(0.01)
        client.call_tool(sid, "shop__get_order", {})
        later = client.initialize()  # a new session: ranked from the history, max_tools = 3
        names = client.tool_names(later)
        assert names == [SEARCH, "tracker__get_issue", "repos__get_file", "shop__get_order"]
        tool = next(t for t in final(client.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, sid=later))
                    ["result"]["tools"] if t["name"] == SEARCH)
        assert tool["inputSchema"]["required"] == ["query"] and tool["annotations"]["readOnlyHint"] is True
        client.assert_no_traceback()


def test_a_client_not_opted_in_sees_the_whole_catalog(proxy_url: str) -> None:
    with connect(proxy_url, "ctx-plain") as client:
        sid = client.initialize()
        client.call_tool(sid, "tracker__get_issue", {})
        names = client.tool_names(client.initialize())
        assert len(names) == CATALOG and SEARCH not in names
        expect_error(client.post({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                                  "params": {"name": SEARCH, "arguments": {"query": "refund"}}}, sid=sid),
                     200, -32602, f"Unknown tool: {SEARCH}")


def test_a_client_opts_in_or_out_by_its_initialize_capability(proxy_url: str) -> None:
    with connect(proxy_url, "ctx-capability") as client:  # not configured
        sid = initialize(client, {"experimental": {"only1mcp/context": {}}})
        names = client.tool_names(sid)
        assert names[0] == SEARCH and len(names) < CATALOG
    with connect(proxy_url, "ctx-optout") as client:  # configured, and says no
        sid = initialize(client, {"experimental": {"only1mcp/context": {"enabled": False}}})
        assert len(client.tool_names(sid)) == CATALOG


def test_search_finds_by_description_words_and_enables_with_list_changed(proxy_url: str) -> None:
    with connect(proxy_url, "ctx-search") as client:
        sid = client.initialize()
        before = client.tool_names(sid)
        assert "shop__refund_order" not in before
        reply = search(client, sid, {"query": "give a customer their money back: refund", "limit": 3})
        found = [tool["name"] for tool in json.loads(text_of(reply))]
        assert found[0] == "shop__refund_order" and len(found) <= 3
        first = json.loads(text_of(reply))[0]
        assert first["inputSchema"]["required"] == ["order_id", "reason"] and "Refund" in first["description"]
        with client.http.stream("GET", proxy_url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid,
                                                           "MCP-Protocol-Version": "2025-11-25"}) as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():  # the queued notification comes first (after any priming event)
                if line.startswith("data:") and line[5:].strip():
                    assert json.loads(line[5:])["method"] == "notifications/tools/list_changed"
                    break
        after = client.tool_names(sid)
        assert set(after) == set(before) | set(found) and "shop__refund_order" in after
        other = client.initialize()  # a search enables for its own session only
        assert "shop__refund_order" not in client.tool_names(other)
        assert json.loads(text_of(client.call_tool(sid, "shop__refund_order", {"order_id": "o1", "reason": "late"})))


def test_an_unlisted_tool_called_by_name_still_works_and_joins_the_session_list(proxy_url: str) -> None:
    with connect(proxy_url, "ctx-unlisted") as client:
        sid = client.initialize()
        client.call_tool(sid, "tracker__get_issue", {})
        sid = client.initialize()
        assert "people__get_org_chart" not in client.tool_names(sid)
        reply = client.call_tool(sid, "people__get_org_chart", {"user_id": "U1"})
        assert json.loads(text_of(reply)) == {"server": "people", "tool": "get_org_chart", "ok": True,
                                              "arguments": ["user_id"]}
        assert "people__get_org_chart" in client.tool_names(sid)


@pytest.mark.parametrize(("arguments", "words_"), [
    ({}, ["'query' must be a non-empty string"]),
    ({"query": ""}, ["'query' must be a non-empty string"]),
    ({"query": "   \n"}, ["'query' must be a non-empty string"]),
    ({"query": 42}, ["'query' must be a non-empty string"]),
    ({"query": ["refund"]}, ["'query' must be a non-empty string"]),
    ({"query": "x" * 1001}, ["1001 characters", "at most 1000"]),
    ({"query": "refund", "limit": "3"}, ["'limit' must be an integer from 1 to 50"]),
    ({"query": "refund", "limit": 0}, ["'limit' must be an integer from 1 to 50"]),
    ({"query": "refund", "limit": 51}, ["'limit' must be an integer from 1 to 50"]),
    ({"query": "refund", "limit": True}, ["'limit' must be an integer from 1 to 50"]),
    ({"query": "refund", "limit": 2.5}, ["'limit' must be an integer from 1 to 50"]),
    ({"query": "refund", "scope": "all"}, ["unknown argument(s) scope"]),
    ("refund", ["'arguments' must be an object"]),
])
def test_bad_search_input_is_a_clear_json_rpc_error(proxy_url: str, arguments: object, words_: list[str]) -> None:
    with connect(proxy_url, "ctx-bad") as client:
        sid = client.initialize()
        resp = client.post({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                            "params": {"name": SEARCH, "arguments": arguments}}, sid=sid)
        error = expect_error(resp, 200, -32602, *words_)
        assert final(resp)["id"] == 7 and len(error["message"]) < 300
        assert "result" in search(client, sid, {"query": "refund"})  # and the session goes on
        client.assert_no_traceback()


def test_cold_start_full_list_then_what_every_client_uses(toolbox: tuple[Stack, str]) -> None:
    stack, servers = toolbox
    url = start_proxy(stack, servers, 'enabled = true\nclients = ["*"]\nmax_tools = 4\n')  # a fresh proxy
    with connect(url, "ctx-cold-a") as first, connect(url, "ctx-cold-b") as second:
        sid = first.initialize()
        names = first.tool_names(sid)  # no history anywhere: everything (and the search tool)
        assert names[0] == SEARCH and len(names) == CATALOG + 1
        first.call_tool(sid, "helpdesk__search_kb", {"query": "x"})
        first.call_tool(sid, "helpdesk__search_kb", {"query": "y"})
        first.call_tool(sid, "shop__get_order", {"order_id": "o"})
        assert len(first.tool_names(sid)) == CATALOG + 1  # a session's list is fixed at its start
        newcomer = second.initialize()  # no history of its own: the tools every client uses most
        assert second.tool_names(newcomer) == [SEARCH, "shop__get_order", "helpdesk__search_kb"]


# -- the parts, in process -------------------------------------------------------------------------------
def test_history_memory_stays_bounded_and_recent_calls_win() -> None:
    settings = ContextSettings(enabled=True, max_clients=50, max_tools_per_client=8, half_life=10.0)
    history = History()
    for client in range(500):
        for tool in range(40):
            history.record(f"c{client}", f"tool{tool}", float(client), settings)
    assert len(history.clients) == 50 and list(history.clients)[-1] == "c499" and "c449" not in history.clients
    assert all(len(counts) <= 8 for counts in history.clients.values())
    for tool in range(_OVERALL_MAX + 50):
        history.record(None, f"many{tool}", 1000.0, settings)
    assert len(history.overall) == _OVERALL_MAX
    fresh = History()
    for _ in range(8):
        fresh.record("c", "old", 0.0, settings)  # eight calls, 100 s (10 half-lives) ago ...
    fresh.record("c", "new", 100.0, settings)  # ... count less than one call now
    assert fresh.ranked("c", 100.0, settings.half_life) == ["new", "old"]


def test_the_search_tool_shadows_a_catalog_tool_of_its_name_for_opted_in_sessions() -> None:
    catalog = Catalog([("a", "")])
    catalog.update("a", "tools", [{"name": "find", "description": "an upstream tool"}, {"name": "other"}])
    settings = ContextSettings(enabled=True, clients=("*",), search_tool="find")
    context = Context(catalog, lambda: settings)
    session = ClientSession("s1", "2025-11-25", client="c")
    assert [tool["name"] for tool in context.tools(session)] == ["find", "other"]  # the meta-tool, then the rest
    assert context.tools(session)[0]["title"] == "Search tools"
    assert "content" in context.on_call("find", catalog.lookup("tools", "find"), {"query": "other"}, session)


def test_search_scorer_is_deterministic_and_matches_word_forms() -> None:
    assert [stem(w) for w in ("comments", "issues", "created", "create", "shipping", "addresses")] == \
        ["comment", "issu", "creat", "creat", "ship", "address"]
    assert words("getIssueComments list-orders ISS-1042") == ["get", "issu", "comment", "list", "order", "iss", "1042"]
    tools = [{"name": "a__get_issue", "description": "Get an issue by id."},
             {"name": "b__list_comments", "description": "List the comments on an issue.",
              "inputSchema": {"properties": {"issue_id": {"type": "string",
                                                          "description": "Issue id, e.g. ISS-1042"}}}},
             {"name": "c__refund", "description": "Refund an order."}]
    index = ToolIndex(tools)
    assert [t["name"] for t, _ in index.search("comments of ISS-7", 5)][0] == "b__list_comments"
    assert index.search("weather forecast", 5) == []
    assert [t["name"] for t, _ in index.search("c__refund", 1)] == ["c__refund"]
    assert index.search("issue", 5) == ToolIndex(list(tools)).search("issue", 5)


def test_context_settings_are_checked() -> None:
    settings = parse_settings({"context": {"enabled": True, "clients": ["*"]}}, "t.toml", {})
    assert settings.context.max_tools == 15 and settings.context.search_tool == SEARCH
    for bad, key in (({"max_tools": 0}, "context.max_tools"), ({"search_limit": 51}, "context.search_limit"),
                     ({"search_tool": "no spaces"}, "context.search_tool"), ({"half_life": -1}, "context.half_life"),
                     ({"clients": "token:x"}, "context.clients"), ({"prune": True}, "context.prune")):
        with pytest.raises(ConfigError) as info:
            parse_settings({"context": bad}, "t.toml", {})
        assert key in str(info.value)


def test_the_toolbox_catalog_is_five_servers_of_at_least_twenty_tools(tmp_path: Path) -> None:
    assert len(SERVERS) == 5 and all(len(tools) >= 20 for _name, _what, tools in SERVERS)
    names = [tool for _name, _what, tools in SERVERS for tool, *_ in tools]
    assert len(names) == len(set(names))
