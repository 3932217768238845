"""What the proxy learns per session for prefetch: each session's recent calls, their arguments and
result values (``only1mcp.prefetch.SessionStore``, in memory only), and, across sessions, where each
argument's value tends to come from (``ArgumentModel``).

The call path only appends the finished call to a list (``observe``); the learning runs about a
millisecond later in one batch (``drain``, on a timer), after the answer has been written to the
client, so a client never waits for it. Results are read within bounds: the structured content
when there is one (walked by ``result_values``, itself bounded), else the first text blocks up to
``result_bytes``. Memory is keyed by the keyed hash of the session id (what ``PrefetchDecision`` and
``RequestEvent`` carry); ``sessions`` maps that hash back to the live session, and both forget a
session when it ends, idles out or falls past the bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from only1mcp.prefetch import ArgumentModel, PrefetchSettings, SessionMemory, SessionStore

if TYPE_CHECKING:
    from only1mcp.proxy.sessions import ClientSession

__all__ = ["SessionLearner", "result_data", "DRAIN_DELAY_S", "MAX_PENDING"]

log = logging.getLogger("only1mcp.prefetch")

DRAIN_DELAY_S = 0.001  # after the answer is out: the answer is written within the loop's next few steps
MAX_PENDING = 10_000  # finished calls waiting to be learned; past it (a stalled loop) new ones are skipped
_TEXT_BLOCKS = 4  # content blocks of a result read for values
MAX_SOURCES = 12  # the argument model's sources per slot (see SessionLearner.__init__)


def result_data(result: Any, max_bytes: int) -> Any:
    """What of a tools/call result the memory reads: its structured content, else its first text blocks
    (at most ``max_bytes`` characters in all); None for an error result or one without either."""
    if not isinstance(result, dict) or result.get("isError"):
        return None
    structured = result.get("structuredContent")
    if isinstance(structured, (dict, list)):
        return structured
    content = result.get("content")
    if not isinstance(content, list):
        return None
    texts, left = [], max_bytes
    for block in content[:_TEXT_BLOCKS]:
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            text = block["text"][:left]
            texts.append(text)
            left -= len(text)
            if left <= 0:
                break
    if not texts:
        return None
    return texts[0] if len(texts) == 1 else "\n".join(texts)


class SessionLearner:
    """Session memory and the argument model, fed after each client tools/call (see the module doc)."""

    def __init__(self, settings: PrefetchSettings, session_hash: Callable[[str], str | None]) -> None:
        self.session_hash = session_hash
        self.result_bytes = settings.result_bytes
        self.store = SessionStore(settings.max_sessions, settings.session_idle, on_drop=self._forget,
                                  max_history=settings.max_calls, max_calls=settings.max_calls,
                                  max_values=settings.max_values)
        # 12 tracked sources per argument slot rather than 24: on the shipped agent traces the filled
        # arguments were as often right (60.6 % exact, 75.1 % at confidence >= 0.5, both ways) for ~10 % less
        # work per call; the source that decides is nearly always among the few most reliable.
        self.model = ArgumentModel(max_sources=MAX_SOURCES)
        self.sessions: dict[str, ClientSession] = {}  # session hash → the live session, while it has memory
        self._pending: list[tuple[ClientSession, str, Any, Any, float]] = []
        self._armed: asyncio.TimerHandle | None = None
        self.learned = 0  # calls learned
        self.skipped = 0  # calls not learned: too many pending (the loop was stalled)
        self.client_calls: Callable[[float], None] | None = None  # told each learned call's time (the budget)
        # Whether a tool could ever be prefetched (the executor's eligibility); the argument model learns only
        # those tools' arguments (its statistics are per tool: the others' would never be read), while the
        # memory keeps every call, since any call's arguments and results may fill a later one's.
        self.teaches: Callable[[str], bool] | None = None
        self.errors = 0  # calls whose learning failed (a bug): skipped, logged, the rest go on

    def configure(self, settings: PrefetchSettings) -> None:
        """New bounds (a reload): they apply from the next session and the next expiry on."""
        self.result_bytes = settings.result_bytes
        self.store.max_sessions, self.store.idle_s = settings.max_sessions, settings.session_idle
        self.store.memory_options = {"max_history": settings.max_calls, "max_calls": settings.max_calls,
                                     "max_values": settings.max_values}

    # -- on the call path --------------------------------------------------------------------
    def observe(self, session: ClientSession, tool: str, arguments: Any, result: Any) -> None:
        """A client's tools/call finished (``result`` None when it failed): learn from it shortly."""
        pending = self._pending
        if len(pending) >= MAX_PENDING:
            self.skipped += 1
            return
        pending.append((session, tool, arguments, result, time.monotonic()))
        if self._armed is None:
            self._armed = asyncio.get_running_loop().call_later(DRAIN_DELAY_S, self.drain)

    # -- off the call path -------------------------------------------------------------------
    def drain(self) -> None:
        """Learn every pending call, oldest first."""
        self._armed = None
        pending, self._pending = self._pending, []
        for session, tool, arguments, result, at in pending:
            if session.ended or session.id is None:  # it ended meanwhile: nothing of it is kept
                continue
            try:
                self.learn(session, tool, arguments if isinstance(arguments, dict) else {}, result, at)
            except Exception:  # never into the event loop, never losing the rest of the batch
                self.errors += 1
                log.exception("prefetch: learning from a call failed")

    def learn(self, session: ClientSession, tool: str, arguments: dict[str, Any], result: Any, at: float) -> None:
        """One finished call of ``session``: update the argument model from the memory as it was, then
        remember the call (the order the model expects)."""
        hashed = self.session_hash(session.id)  # type: ignore[arg-type]
        if hashed is None:
            return
        memory = self.store.get(hashed, at)
        memory.client = session.client  # its constants fill only this client's calls
        self.sessions[hashed] = session
        if self.teaches is None or self.teaches(tool):
            self.model.learn_one(memory, tool, arguments)
        memory.observe(tool, arguments, result_data(result, self.result_bytes), at)
        self.learned += 1
        if self.client_calls is not None:
            self.client_calls(at)

    def memory(self, hashed: str) -> tuple[ClientSession, SessionMemory] | None:
        """The live session with that hash and its memory, or None (unknown, ended or forgotten)."""
        session = self.sessions.get(hashed)
        memory = self.store.peek(hashed)
        if session is None or memory is None or session.ended:
            return None
        return session, memory

    def end(self, session: ClientSession) -> bool:
        """The session ended (DELETE, expiry, the transport closed): drop its memory now."""
        if session.id is None:
            return False
        hashed = self.session_hash(session.id)
        if hashed is None:
            return False
        self.sessions.pop(hashed, None)
        return self.store.end(hashed)

    def expire(self, now: float) -> int:
        """Forget memories idle past ``session_idle`` (``now``: time.monotonic())."""
        return self.store.expire(now)

    def _forget(self, hashed: str) -> None:
        self.sessions.pop(hashed, None)

    def close(self) -> None:
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None
        self._pending.clear()
        self.sessions.clear()
        self.store.clear()

    def stats(self) -> dict[str, int]:
        """Counts only: never an argument value or a result."""
        return {"sessions": len(self.store), "learned": self.learned, "skipped": self.skipped, "errors": self.errors,
                "pending": len(self._pending), "argument_slots": len(self.model._slots)}
