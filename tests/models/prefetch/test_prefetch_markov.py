"""The next-tool model (models/prefetch/markov.py): back-off, top-k, bounds, decay, state."""

from __future__ import annotations

import json

import pytest

from only1mcp.models.prefetch import NextToolModel, PrefetchStateError


def train(model: NextToolModel, sessions: list[list[str]]) -> NextToolModel:
    for tools in sessions:
        for i, tool in enumerate(tools):
            model.learn_one(tools[:i], tool)
    return model


def test_a_seen_context_decides_and_an_unseen_one_backs_off() -> None:
    # After (search, get) comes comments; after (list, get) comes user: only order 2 tells them apart.
    model = train(NextToolModel(order=2), [["search", "get", "comments"]] * 20 + [["list", "get", "user"]] * 20)
    assert model.predict_one(["search", "get"], 1)[0][0] == "comments"
    assert model.predict_one(["list", "get"], 1)[0][0] == "user"
    after_search = model.predict_proba_one(["search", "get"])
    assert after_search["comments"] > 0.9 and sum(after_search.values()) == pytest.approx(1.0)
    # (write, get) was never seen: the order-1 context "get" decides, half and half.
    unseen = model.predict_proba_one(["write", "get"])
    assert unseen["comments"] == pytest.approx(unseen["user"]) and unseen["comments"] > 0.3
    # A tool never seen at all as a context: back to the unigram, every tool possible.
    assert set(model.predict_proba_one(["nothing"])) == {"search", "list", "get", "comments", "user"}


def test_order_one_ignores_the_older_call_and_the_first_call_is_predicted() -> None:
    model = train(NextToolModel(order=1), [["search", "get", "comments"]] * 20 + [["list", "get", "user"]] * 20)
    p = model.predict_proba_one(["search", "get"])
    assert p["comments"] == pytest.approx(p["user"])
    first = model.predict_one([], 2)  # the START context: sessions begin with search or list
    assert {tool for tool, _ in first} == {"search", "list"}


def test_top_k_is_sorted_and_bounded() -> None:
    model = train(NextToolModel(), [["a", "b"]] * 5 + [["a", "c"]] * 3 + [["a", "d"]])
    top = model.predict_one(["a"], 3)
    assert [t for t, _ in top] == ["b", "c", "d"]
    assert top[0][1] > top[1][1] > top[2][1]
    assert NextToolModel().predict_one(["a"]) == []  # nothing learned: nothing predicted


def test_memory_is_bounded_and_decay_forgets_old_habits() -> None:
    model = NextToolModel(order=2, max_contexts=5, max_successors=2)
    train(model, [[f"t{i}", f"t{i + 1}", f"t{i + 2}"] for i in range(50)])
    assert len(model.state()["contexts"]) <= 5
    model = NextToolModel(order=1, max_successors=2)
    train(model, [["a", "b"], ["a", "c"], ["a", "d"]])
    counts = {tuple(ctx): c for ctx, c in model.state()["contexts"]}
    assert len(counts[("a",)]) == 2
    fading = train(NextToolModel(order=1, decay=0.8), [["a", "old"]] * 30 + [["a", "new"]] * 5)
    steady = train(NextToolModel(order=1), [["a", "old"]] * 30 + [["a", "new"]] * 5)
    assert fading.predict_one(["a"], 1)[0][0] == "new" and steady.predict_one(["a"], 1)[0][0] == "old"


def test_state_round_trips_through_json_and_bad_states_are_refused() -> None:
    model = train(NextToolModel(order=2, decay=0.99), [["search", "get", "comments"], ["list", "get", "user"]] * 5)
    state = json.loads(json.dumps(model.state()))
    restored = NextToolModel.from_state(state)
    assert restored.state() == state
    assert restored.predict_proba_one(["search", "get"]) == pytest.approx(model.predict_proba_one(["search", "get"]))
    restored.learn_one(["search"], "get")  # and it goes on learning
    bad = [
        "not a mapping", {**state, "model": "argument_sources"}, {**state, "version": 99},
        {k: v for k, v in state.items() if k != "unigram"}, {**state, "unigram": {"get": -1}},
        {**state, "unigram": {"get": float("nan")}}, {**state, "contexts": [[["a", "b", "c"], {"x": 1}]]},
        {**state, "contexts": [[["a"], {"x": "many"}]]}, {**state, "order": -1}, {**state, "contexts": "garbage"},
    ]
    for corrupt in bad:
        with pytest.raises(PrefetchStateError):
            NextToolModel.from_state(corrupt)  # type: ignore[arg-type]
