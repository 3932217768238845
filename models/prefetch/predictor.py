"""The next-call predictor: the next-tool model, the argument model and the session memory together.

Per session it predicts the next calls as concrete (tool, arguments) with a confidence, the tool's
probability times the filling's: ``learn_one`` after every call (any call, safe or not: a write
tells what comes next too), ``predict_one`` when deciding what to prefetch, ``end_session`` when
the session ends (its memory is dropped). Only tools the session has already called are predicted
for prefetch, and only those ``eligible`` says are safe — the issue's eligibility rule.

The saved state is the two models' statistics; the session memory is never saved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from only1mcp.models.prefetch.markov import NextToolModel
from only1mcp.prefetch._state import PrefetchStateError, check_header, header, malformed
from only1mcp.prefetch.arguments import ArgumentModel
from only1mcp.prefetch.memory import SessionStore

__all__ = ["PredictedCall", "NextCallPredictor"]

_VERSION = 1


@dataclass(frozen=True)
class PredictedCall:
    tool: str
    args: dict[str, Any] = field(hash=False)
    confidence: float  # tool_probability × args_probability
    tool_probability: float
    args_probability: float


class NextCallPredictor:
    """Next calls per session: NextToolModel × ArgumentModel over a SessionStore."""

    name = "next_call"

    def __init__(self, tools: NextToolModel | None = None, arguments: ArgumentModel | None = None,
                 sessions: SessionStore | None = None) -> None:
        self.tools = tools if tools is not None else NextToolModel()
        self.arguments = arguments if arguments is not None else ArgumentModel()
        self.sessions = sessions if sessions is not None else SessionStore()  # an empty store is falsy

    def learn_one(self, session: str, tool: str, args: Mapping[str, Any] | None, result: Any = None,
                  now: float = 0.0, client: str = "") -> None:
        """Learn from a finished call of ``session`` (of ``client``: its constants fill only that client's
        calls), then remember it in the session's memory."""
        memory = self.sessions.get(session, now)
        memory.client = client
        self.tools.learn_one(memory.history, tool)
        self.arguments.learn_one(memory, tool, args)
        memory.observe(tool, args, result, now)

    def predict_tools(self, session: str, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` likeliest next tools of the session (any tool, eligible or not)."""
        memory = self.sessions.peek(session)
        return self.tools.predict_one(list(memory.history) if memory else [], k)

    def predict_one(self, session: str, k: int = 3, eligible: Callable[[str], bool] | None = None,
                    min_confidence: float = 0.0, fillings: int = 2) -> list[PredictedCall]:
        """Concrete next calls for prefetch, most confident first: among the ``k`` likeliest tools,
        those the session already called and ``eligible`` accepts, each with up to ``fillings``
        argument fillings; only those with confidence ≥ ``min_confidence``."""
        memory = self.sessions.peek(session)
        if memory is None:
            return []
        out = []
        for tool, p in self.tools.predict_one(list(memory.history), k):
            if tool not in memory.called or (eligible is not None and not eligible(tool)):
                continue
            for args, q in self.arguments.predict_one(memory, tool, fillings):
                if p * q >= min_confidence:
                    out.append(PredictedCall(tool, args, p * q, p, q))
        out.sort(key=lambda c: -c.confidence)
        return out

    def end_session(self, session: str) -> bool:
        """The session ended: drop its memory. Whether it was remembered."""
        return self.sessions.end(session)

    def state(self) -> dict[str, Any]:
        return {**header(self.name, _VERSION), "tools": self.tools.state(), "arguments": self.arguments.state()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], sessions: SessionStore | None = None) -> NextCallPredictor:
        """A predictor continuing from ``state()`` with an empty session memory; PrefetchStateError when
        the state is not a valid one."""
        state = check_header(state, cls.name, _VERSION)
        try:
            tools, arguments = state["tools"], state["arguments"]
        except (KeyError, TypeError) as exc:
            raise malformed(cls.name, exc) from exc
        if not isinstance(tools, Mapping) or not isinstance(arguments, Mapping):
            raise PrefetchStateError(f"{cls.name}: the models' states must be mappings")
        return cls(NextToolModel.from_state(tools), ArgumentModel.from_state(arguments), sessions)
