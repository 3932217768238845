"""The next-call predictor (models/prefetch/predictor.py): eligibility, session end, state without sessions."""

from __future__ import annotations

import json

import pytest

from only1mcp.models.prefetch import NextCallPredictor, PrefetchStateError, SessionStore


def run_sessions(predictor: NextCallPredictor, n: int) -> None:
    for k in range(n):
        s = f"s{k}"
        predictor.learn_one(s, "search_items", {"q": "x"}, json.dumps({"items": [{"id": f"I{k}"}]}))
        predictor.learn_one(s, "get_item", {"id": f"I{k}"}, json.dumps({"id": f"I{k}"}))
        predictor.learn_one(s, "delete_item", {"id": f"I{k}"}, "ok")
        predictor.learn_one(s, "search_items", {"q": "x"}, json.dumps({"items": [{"id": f"J{k}"}]}))
        predictor.learn_one(s, "get_item", {"id": f"J{k}"}, json.dumps({"id": f"J{k}"}))


def test_predicts_a_concrete_call_for_a_tool_the_session_already_called() -> None:
    predictor = NextCallPredictor()
    run_sessions(predictor, 20)
    predictor.learn_one("new", "search_items", {"q": "y"}, json.dumps({"items": [{"id": "Z"}]}))
    # get_item is the likely next tool, but this session never called it: not eligible.
    assert predictor.predict_tools("new", 1)[0][0] == "get_item"
    assert all(call.tool != "get_item" for call in predictor.predict_one("new", k=5))
    predictor.learn_one("new", "get_item", {"id": "Z"}, json.dumps({"id": "Z"}))
    predictor.learn_one("new", "delete_item", {"id": "Z"}, "ok")
    predictor.learn_one("new", "search_items", {"q": "y"}, json.dumps({"items": [{"id": "W"}]}))
    best = predictor.predict_one("new")[0]
    assert (best.tool, best.args) == ("get_item", {"id": "W"})
    assert best.confidence == pytest.approx(best.tool_probability * best.args_probability) and best.confidence > 0.5


def test_unsafe_tools_are_never_proposed_when_eligible_says_so() -> None:
    predictor = NextCallPredictor()
    run_sessions(predictor, 20)
    predictor.learn_one("s0", "get_item", {"id": "Q"}, json.dumps({"id": "Q"}))  # next is usually delete_item
    assert predictor.predict_tools("s0", 1)[0][0] == "delete_item"
    safe = predictor.predict_one("s0", k=5, eligible=lambda tool: not tool.startswith("delete_"))
    assert safe and all(call.tool != "delete_item" for call in safe)
    assert all(c.confidence >= 0.3 for c in predictor.predict_one("s0", k=5, min_confidence=0.3))


def test_ending_a_session_drops_its_memory_and_the_state_never_holds_sessions() -> None:
    predictor = NextCallPredictor(sessions=SessionStore(max_sessions=5))
    run_sessions(predictor, 20)
    assert len(predictor.sessions) == 5  # bounded
    assert predictor.end_session("s19") and predictor.predict_one("s19") == [] and not predictor.end_session("s19")
    state = json.loads(json.dumps(predictor.state()))
    text = json.dumps(state)
    assert '"s18"' not in text and "previous" not in text and "latest" not in text  # no sessions, no session memory
    restored = NextCallPredictor.from_state(state)
    assert len(restored.sessions) == 0 and restored.state() == state
    for corrupt in ({**state, "model": "x"}, {**state, "tools": "x"}, {k: v for k, v in state.items() if k != "arguments"},
                    {**state, "arguments": {**state["arguments"], "version": 7}}):
        with pytest.raises(PrefetchStateError):
            NextCallPredictor.from_state(corrupt)
