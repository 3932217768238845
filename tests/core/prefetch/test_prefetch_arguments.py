"""Argument prediction (only1mcp/prefetch/arguments.py) from a session's own history."""

from __future__ import annotations

import json

import pytest

from only1mcp.prefetch import ArgumentModel, PrefetchStateError, SessionMemory, recent_arguments


def search_result(prefix: str, n: int = 3) -> str:
    return json.dumps({"items": [{"id": f"{prefix}-{i}", "author": f"u-{prefix}-{i}"} for i in range(n)]})


def session(model: ArgumentModel, prefix: str) -> SessionMemory:
    """search → get_item(the first hit) → list_comments(the same id, limit 20) → get_user(its author)."""
    memory = SessionMemory()
    calls = [("search", {"q": f"query {prefix}"}, search_result(prefix)),
             ("get_item", {"id": f"{prefix}-0"}, json.dumps({"id": f"{prefix}-0", "author": f"u-{prefix}-0"})),
             ("list_comments", {"item_id": f"{prefix}-0", "limit": 20}, "no comments"),
             ("get_user", {"user_id": f"u-{prefix}-0"}, "ok")]
    for tool, args, result in calls:
        model.learn_one(memory, tool, args)
        memory.observe(tool, args, result)
    return memory


def test_an_id_from_the_last_result_fills_the_next_call() -> None:
    model = ArgumentModel()
    for k in range(10):
        session(model, f"s{k}")
    memory = SessionMemory()
    memory.observe("search", {"q": "new"}, search_result("fresh"))  # ids never seen in training
    (args, confidence), *_ = model.predict_one(memory, "get_item")
    assert args == {"id": "fresh-0"} and confidence > 0.8
    _, source = model.candidates(memory, "get_item", "id")[0][1:]
    assert source[0] == "res" and source[2] == "items.0.id"


def test_earlier_arguments_and_constants_fill_the_rest() -> None:
    model = ArgumentModel()
    for k in range(20):
        session(model, f"s{k}")
    memory = SessionMemory()
    memory.observe("search", {"q": "new"}, search_result("fresh"))
    memory.observe("get_item", {"id": "fresh-0"}, json.dumps({"id": "fresh-0", "author": "u-9"}))
    (args, confidence), *_ = model.predict_one(memory, "list_comments")
    assert args == {"item_id": "fresh-0", "limit": 20} and confidence > 0.7  # an earlier argument and a constant
    memory.observe("list_comments", args, "nothing")
    (args, _), *_ = model.predict_one(memory, "get_user")
    assert args == {"user_id": "u-9"}  # the author from the get_item result, two calls back


def test_a_constant_fills_only_the_calls_of_the_client_that_typed_it() -> None:
    model = ArgumentModel()
    for _ in range(8):  # client A reads the same record first in each of its sessions
        memory = SessionMemory()
        memory.client = "client-a"
        model.learn_one(memory, "get_item", {"id": "acme-private-7"})
        memory.observe("get_item", {"id": "acme-private-7"}, "ok")
    a, b = SessionMemory(), SessionMemory()
    a.client, b.client = "client-a", "client-b"
    (args, confidence), *_ = model.predict_one(a, "get_item")
    assert args == {"id": "acme-private-7"} and confidence > 0.6  # learned, for A
    assert model.predict_one(b, "get_item") == []  # never offered to B
    slot = model._slots[("get_item", "id", "")]
    model.learn_one(b, "get_item", {"id": "b-1"})  # B's own call: A's constant was not available to it
    assert slot[("const", "client-a", "sacme-private-7")] == [8.0, 7.0]
    assert slot[("const", "client-b", "sb-1")] == [1.0, 0.0]
    assert ArgumentModel.from_state(model.state()).predict_one(b, "get_item") == []  # the state keeps the owner


def test_text_results_are_scanned_for_ids() -> None:
    model, memory = ArgumentModel(), SessionMemory()
    for k in range(6):
        text = f"Found: KB-{k}1 refund policy\nKB-{k}2 shipping"
        model.learn_one(memory, "search_kb", {"query": "refund"})
        memory.observe("search_kb", {"query": "refund"}, text)
        model.learn_one(memory, "get_article", {"article_id": f"KB-{k}1"})
        memory.observe("get_article", {"article_id": f"KB-{k}1"}, "body")
    memory.observe("search_kb", {"query": "x"}, "Found: KB-77 one\nKB-78 two")
    assert model.predict_one(memory, "get_article")[0][0] == {"article_id": "KB-77"}


def test_nothing_is_predicted_without_a_source_and_k_fillings_are_distinct() -> None:
    model = ArgumentModel()
    assert model.predict_one(SessionMemory(), "get_item") == []  # never seen
    for k in range(10):
        session(model, f"s{k}")
    # An empty memory has no id to take: at most a stale constant (an id once used), with little confidence.
    assert all(confidence < 0.2 for _, confidence in model.predict_one(SessionMemory(), "get_item"))
    memory = SessionMemory()
    memory.observe("search", {"q": "new"}, search_result("fresh"))
    fillings = model.predict_one(memory, "get_item", k=3)
    assert len({json.dumps(a, sort_keys=True) for a, _ in fillings}) == len(fillings)
    assert [c for _, c in fillings] == sorted((c for _, c in fillings), reverse=True)


def test_recent_arguments_is_the_naive_filling() -> None:
    memory = SessionMemory()
    memory.observe("get_item", {"id": "a"}, None)
    memory.observe("get_user", {"id": "b"}, None)
    assert recent_arguments(memory, "get_item") == {"id": "b"}  # the latest value by name, from any tool
    assert recent_arguments(memory, "never") is None


def test_state_round_trips_and_bad_states_are_refused() -> None:
    model = ArgumentModel(decay=0.999)
    for k in range(5):
        session(model, f"s{k}")
    state = json.loads(json.dumps(model.state()))
    restored = ArgumentModel.from_state(state)
    assert restored.state() == state
    memory = SessionMemory()
    memory.observe("search", {"q": "new"}, search_result("z"))
    assert restored.predict_one(memory, "get_item") == model.predict_one(memory, "get_item")
    slot = state["slots"][0]
    bad = [
        {**state, "model": "next_tool_markov"}, {**state, "version": 0}, {k: v for k, v in state.items() if k != "slots"},
        {**state, "slots": [[slot[0], slot[1], slot[2], [["weird", "^", "x", 1, 1]]]]},
        {**state, "slots": [[slot[0], slot[1], slot[2], [["arg", "^", "x", 1, 5]]]]},  # more matches than uses
        {**state, "slots": [[slot[0], slot[1], slot[2], [["const", "", "not a value key", 1, 1]]]]},
        {**state, "signatures": [["t", [[["a"], -3]]]]}, {**state, "slots": [["only", "two"]]},
    ]
    for corrupt in bad:
        with pytest.raises(PrefetchStateError):
            ArgumentModel.from_state(corrupt)
