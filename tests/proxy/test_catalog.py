"""The merged catalog, cursors and the routing interface: pure units, no I/O."""

from __future__ import annotations

import pytest

from only1mcp.errors import INVALID_PARAMS, RPCError
from only1mcp.proxy.catalog import Catalog, expose_name, template_regex
from only1mcp.proxy.cursor import decode_cursor, encode_cursor
from only1mcp.proxy.routing import POLICIES, RouteRequest, make_policy

NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def test_names_are_namespaced_and_empty_namespace_keeps_them() -> None:
    assert expose_name("search", "query", 64) == "search__query"
    assert expose_name("", "query", 64) == "query"


def test_names_with_characters_mcp_forbids_are_mended() -> None:
    assert expose_name("fs", "read file/v2", 64) == "fs__read_file_v2"


def test_long_names_are_shortened_deterministically_and_without_collision() -> None:
    a = expose_name("a_very_long_namespace_name", "x" * 60 + "1", 64)
    b = expose_name("a_very_long_namespace_name", "x" * 60 + "2", 64)
    assert len(a) == 64 and len(b) == 64 and a != b
    assert a == expose_name("a_very_long_namespace_name", "x" * 60 + "1", 64)
    assert set(a) <= NAME_CHARS


def test_order_is_configuration_order_then_upstream_order() -> None:
    catalog = Catalog([("b", "b"), ("a", "a")])
    catalog.update("a", "tools", [{"name": "z"}, {"name": "y"}])
    catalog.update("b", "tools", [{"name": "m"}])
    assert [t["name"] for t in catalog.lists["tools"]] == ["b__m", "a__z", "a__y"]


def test_conflicts_are_reported_and_both_tools_stay_reachable() -> None:
    catalog = Catalog([("one", ""), ("two", "")])
    catalog.update("one", "tools", [{"name": "search"}])
    catalog.update("two", "tools", [{"name": "search"}])
    names = [t["name"] for t in catalog.lists["tools"]]
    assert names == ["search", "two__search"]
    assert catalog.lookup("tools", "two__search").server == "two"
    assert catalog.lookup("tools", "two__search").upstream_name == "search"
    assert len(catalog.conflicts) == 1 and "'two'" in catalog.conflicts[0] and "'one'" in catalog.conflicts[0]


def test_update_says_whether_the_exposed_list_changed() -> None:
    catalog = Catalog([("s", "s")])
    assert catalog.update("s", "tools", [{"name": "a"}]) is True
    assert catalog.update("s", "tools", [{"name": "a"}]) is False
    assert catalog.forget("s") == ["tools"] and catalog.lists["tools"] == []


def test_resource_templates_route_uris_to_their_server() -> None:
    catalog = Catalog([("files", ""), ("db", "")])
    catalog.update("files", "resourceTemplates", [{"uriTemplate": "file:///{path}", "name": "f"}])
    catalog.update("db", "resourceTemplates", [{"uriTemplate": "db://{table}/rows/{id}", "name": "d"}])
    assert catalog.server_for_uri("db://users/rows/7") == "db"
    assert catalog.server_for_uri("file:///etc") == "files"
    assert catalog.server_for_uri("http://elsewhere") is None
    assert template_regex("x://{+path}").match("x://a/b/c")


def test_cursors_round_trip_and_reject_what_the_proxy_did_not_issue() -> None:
    assert decode_cursor("tools", encode_cursor("tools", 100)) == (100, None)
    assert decode_cursor("resources", encode_cursor("resources", 2, "up-cursor")) == (2, "up-cursor")
    for bad in ("nope", encode_cursor("prompts", 1), 42, encode_cursor("tools", -1)):
        with pytest.raises(RPCError) as info:
            decode_cursor("tools", bad)
        assert info.value.code == INVALID_PARAMS


class _Replica:
    def __init__(self, name: str) -> None:
        self.id, self.inflight = name, 0


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
def test_every_policy_picks_a_candidate_and_explains_why(policy_name: str) -> None:
    policy = make_policy(policy_name)
    candidates = [_Replica("r0"), _Replica("r1"), _Replica("r2")]
    for _ in range(10):
        decision = policy.choose(candidates, RouteRequest("s", "tools/call", "t"))
        assert decision.replica in candidates and decision.policy == policy_name and decision.reason


def test_round_robin_takes_turns() -> None:
    policy = make_policy("round_robin")
    candidates = [_Replica("r0"), _Replica("r1"), _Replica("r2")]
    picks = [policy.choose(candidates, RouteRequest("s", "tools/call")).replica.id for _ in range(6)]
    assert sorted(picks) == ["r0", "r0", "r1", "r1", "r2", "r2"] and picks[:3] != picks[1:4]
