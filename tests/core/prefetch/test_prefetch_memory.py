"""Session memory (only1mcp/prefetch/memory.py) and result values (values.py): bounded, dropped at the end."""

from __future__ import annotations

import json

from only1mcp.prefetch import SessionMemory, SessionStore, result_values, text_tokens


def test_json_results_are_walked_and_text_is_scanned() -> None:
    result = json.dumps({"items": [{"id": "ISS-1", "n": 3, "ok": True, "none": None}],
                         "title": "see ISS-2 and src/app/main.py today"})
    values = dict(result_values(result))
    assert values["items.0.id"] == "ISS-1" and values["items.0.n"] == 3
    assert "items.0.ok" not in values and "items.0.none" not in values  # booleans and nulls are not ids
    assert values["title~0"] == "ISS-2" and values["title~1"] == "src/app/main.py"
    assert text_tokens("Order ord_42 shipped, see KB-7. Thanks and regards") == ["ord_42", "KB-7"]
    assert result_values("plain words only") == [] and result_values(None) == []
    assert len(result_values(json.dumps({"items": list(range(1000))}), max_values=10)) == 10
    assert len(result_values(json.dumps({"items": list(range(1000))}), max_items=5)) == 5


def test_a_session_memory_is_bounded() -> None:
    memory = SessionMemory(max_history=4, max_calls=3, max_values=5)
    for i in range(50):
        args = {f"arg{i}": f"v{i}", "id": f"id{i}"}
        memory.observe(f"tool{i % 10}", args, json.dumps({"values": [f"x{i}-{j}" for j in range(20)]}))
    assert len(memory.history) == 4 and list(memory.history)[-1] == "tool9"
    assert len(memory.latest) == 3 and list(memory.latest) == ["tool7", "tool8", "tool9"]
    assert all(len(m.values) <= 5 for m in memory.latest.values())
    assert len(memory.any_args) <= 5 and len(memory.any_keys) <= 5
    assert len(memory.index()) <= (1 + 3) * (2 + 5) + 5  # previous + latest calls' arguments and values, names
    assert memory.calls == 50


def test_sources_resolve_to_what_the_session_saw() -> None:
    memory = SessionMemory()
    memory.observe("search", {"q": "a"}, json.dumps({"items": [{"id": "X"}]}))
    memory.observe("get", {"id": "X"}, json.dumps({"author": "U"}))
    assert memory.resolve(("res", "search", "items.0.id")) == "X"
    assert memory.resolve(("res", "^", "author")) == "U"  # the previous call
    assert memory.resolve(("arg", "*", "q")) == "a"
    assert memory.resolve(("const", "", "i20")) == 20
    assert memory.resolve(("res", "^", "items.0.id")) is None  # not in the previous call's result
    assert memory.index()["sX"] == [("arg", "^", "id"), ("res", "search", "items.0.id"), ("arg", "get", "id"),
                                    ("arg", "*", "id")]
    for vkey, sources in memory.index().items():  # the argument model's look-up agrees with the full index
        assert memory.holders(vkey) == sources
    assert memory.holders("snever seen") == []


def test_the_store_drops_ended_idle_and_surplus_sessions() -> None:
    store = SessionStore(max_sessions=3, idle_s=100.0)
    for i in range(5):
        store.get(f"s{i}", now=float(i)).observe("t", {"k": i}, None, now=float(i))
    assert len(store) == 3 and "s0" not in store and "s4" in store  # the least recently active went first
    assert store.end("s4") and "s4" not in store and not store.end("s4")
    assert store.peek("s4") is None
    assert store.expire(now=102.5) == 1 and "s2" not in store and "s3" in store  # idle more than 100 s
    store.get("s3", now=150.0).observe("t", {}, None, now=150.0)
    assert store.expire(now=240.0) == 0 and store.expire(now=251.0) == 1 and len(store) == 0


def test_the_store_tells_its_owner_what_it_forgets_by_itself() -> None:
    dropped: list[str] = []
    store = SessionStore(max_sessions=2, idle_s=10.0, on_drop=dropped.append)
    for i in range(3):
        store.get(f"s{i}", now=float(i)).observe("t", {}, None, now=float(i))
    assert dropped == ["s0"]  # the bound
    assert store.end("s2") and dropped == ["s0"]  # an end the owner asked for is not reported back
    assert store.expire(now=20.0) == 1 and dropped == ["s0", "s1"]  # idleness
    store.get("s9")
    store.clear()
    assert len(store) == 0 and dropped == ["s0", "s1"]


def test_deep_and_wide_results_are_walked_in_order_within_bounds() -> None:
    deep: object = "ISS-1"
    for _ in range(20):
        deep = {"a": deep, "n": 1}
    assert result_values(deep, max_depth=3) == [("a.a.n", 1), ("a.n", 1), ("n", 1)]
    wide = {f"k{i}": {"id": f"X-{i}", "flag": True} for i in range(500)}
    assert result_values(wide, max_values=3) == [("k0.id", "X-0"), ("k1.id", "X-1"), ("k2.id", "X-2")]
    assert result_values({"t": "a\u00a0b ISS-3"}) == [("t~0", "ISS-3")]  # any Unicode space makes it prose


def test_tokens_are_whole_runs_trimmed_to_letters_and_digits() -> None:
    text = "U104. -abc1 ab- cd x:y @@ISS-7## plain words, src/a.py: a1 KB-7 KB-7 héllo-2 _y1_"
    assert text_tokens(text) == ["U104", "abc1", "x:y", "ISS-7", "src/a.py", "KB-7", "llo-2"]  # y1: too short
    assert text_tokens(text, limit=2) == ["U104", "abc1"]
