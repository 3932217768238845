"""Adaptive TTLs (models/prefetch/ttl.py) and write-aware invalidation (invalidation.py)."""

from __future__ import annotations

import json
import math

import pytest

from only1mcp.models.prefetch import AdaptiveTTL, PrefetchStateError, WriteInvalidation


def feed(model: AdaptiveTTL, tool: str, change_every_s: float | None, gap_s: float, pairs: int) -> None:
    """Fetch ``pairs + 1`` times, ``gap_s`` apart; the answer changes every ``change_every_s``."""
    for i in range(pairs + 1):
        t = i * gap_s
        version = 0 if change_every_s is None else int(t // change_every_s)
        model.learn_one(tool, f"{tool}:key", f"v{version}", t)


def test_an_unseen_tool_gets_the_default() -> None:
    assert AdaptiveTTL(min_ttl=5, max_ttl=500, default_ttl=60).predict_one("new") == pytest.approx(60, rel=0.05)


def test_a_result_that_never_changes_earns_the_upper_bound() -> None:
    model = AdaptiveTTL(min_ttl=10, max_ttl=600, default_ttl=60)
    feed(model, "get_user", None, gap_s=300, pairs=200)
    assert model.predict_one("get_user") == 600
    assert model.pairs("get_user")[0] == 0


def test_a_result_that_always_changes_gets_the_lower_bound() -> None:
    model = AdaptiveTTL(min_ttl=10, max_ttl=600, default_ttl=60)
    feed(model, "get_shipment", 1.0, gap_s=30, pairs=200)
    assert model.predict_one("get_shipment") == 10


def test_the_ttl_follows_the_change_rate_within_bounds() -> None:
    # Changes every 1,000 s, fetched every 50 s: λ ≈ 1/1000, so a 5 % stale chance ≈ 51 s.
    model = AdaptiveTTL(min_ttl=1, max_ttl=10_000, default_ttl=60, target=0.05, decay=1.0)
    feed(model, "list_comments", 1000.0, gap_s=50, pairs=2000)
    assert model.rate("list_comments") == pytest.approx(1 / 1000, rel=0.3)
    assert model.predict_one("list_comments") == pytest.approx(-math.log(0.95) * 1000, rel=0.3)
    for tool, change in (("a", 10.0), ("b", 100.0), ("c", None)):
        feed(model, tool, change, gap_s=20, pairs=300)
        assert 1 <= model.predict_one(tool) <= 10_000
    assert model.predict_one("a") < model.predict_one("b") < model.predict_one("c")


def test_forget_breaks_the_pair_and_the_key_memory_is_bounded() -> None:
    model = AdaptiveTTL(max_keys=3)
    model.learn_one("t", "k", "v1", 0.0)
    model.forget("k")
    assert not model.learn_one("t", "k", "v2", 10.0)  # no previous answer: no pair
    assert model.learn_one("t", "k", "v2", 20.0)
    for i in range(10):
        model.learn_one("t", f"other{i}", "v", 30.0 + i)
    assert len(model._last) == 3


def test_ttl_state_round_trips_and_bad_states_are_refused() -> None:
    model = AdaptiveTTL(min_ttl=5, max_ttl=900, default_ttl=30)
    feed(model, "x", 100.0, gap_s=10, pairs=50)
    state = json.loads(json.dumps(model.state()))
    restored = AdaptiveTTL.from_state(state)
    assert restored.state() == state and restored.predict_one("x") == model.predict_one("x")
    rows = state["tools"]["x"]
    for corrupt in ({**state, "model": "x"}, {**state, "buckets": 3}, {**state, "tools": {"x": rows[:1]}},
                    {**state, "tools": {"x": [[-1.0] * len(rows[0]), rows[1]]}}, {**state, "min_ttl": 1000},
                    {k: v for k, v in state.items() if k != "target"}, {**state, "tools": {"x": "nope"}}):
        with pytest.raises(PrefetchStateError):
            AdaptiveTTL.from_state(corrupt)


def test_invalidation_learns_which_writes_change_which_reads() -> None:
    model = WriteInvalidation(threshold=0.05)
    assert model.invalidates("update", "get")  # unseen: one half, above the threshold
    for _ in range(60):
        model.learn_one("update", "get", changed=True)
        model.learn_one("update", "search", changed=False)
    assert model.predict_one("update", "get") > 0.95 and model.invalidates("update", "get")
    assert model.predict_one("update", "search") < 0.05 and not model.invalidates("update", "search")
    state = json.loads(json.dumps(model.state()))
    assert WriteInvalidation.from_state(state).state() == state
    for corrupt in ({**state, "pairs": [["a", "b", 3, 1]]}, {**state, "version": 2}, {**state, "pairs": [["a"]]}):
        with pytest.raises(PrefetchStateError):
            WriteInvalidation.from_state(corrupt)
