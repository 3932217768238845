"""Per-session memory: what a session called, with which arguments, and what came back.

The argument model fills a predicted call from here, so it lives where the calls are seen (the
proxy, or the benchmark's replay) and only there: in memory, never on a topic or on disk, dropped
when the session ends. It is bounded twice over: per session, the tool history (``max_history``),
the latest call of at most ``max_calls`` tools (LRU) with at most ``max_values`` values of each
result, and ``max_values`` argument names; across sessions, at most ``max_sessions`` sessions (the
least recently active dropped first) and none idle for longer than ``idle_s``.

A *source* names where a value can come from, as a tuple:

* ``("arg", who, name)``: argument ``name`` of a call,
* ``("res", who, path)``: the value at ``path`` of a call's result (``values.result_values``),
* ``("const", client, value_key)``: a constant (its canonical form, ``_state.value_key``) that this
  memory's client used (``SessionMemory.client``; "" when clients are not told apart): a value one
  client typed is never offered to fill another client's call,

where ``who`` is ``"^"`` (the session's previous call), ``"*"`` (arguments only: the latest value
of that argument name in any call) or a tool name (that tool's latest call in the session).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from only1mcp.prefetch._state import key_value, value_key
from only1mcp.prefetch.values import result_values

__all__ = ["Source", "CallMemo", "SessionMemory", "SessionStore", "PREVIOUS", "ANY"]

Source = tuple[str, str, str]
PREVIOUS, ANY = "^", "*"


class CallMemo:
    """One remembered call: its tool, its arguments and the values of its result, each with its
    canonical key (computed once, here)."""

    __slots__ = ("tool", "args", "values", "arg_keys", "value_keys", "by_key")

    def __init__(self, tool: str, args: Mapping[str, Any], values: Mapping[str, Any] | Iterable[tuple[str, Any]]
                 ) -> None:
        self.tool, self.args, self.values = tool, dict(args), dict(values)
        # canonical value → (kind, name or path) holding it, arguments first: built once per call, so
        # finding who holds a value is a look-up per remembered call instead of a walk over all of them.
        # One pass per mapping (the proxy builds one of these after every call).
        by_key: dict[str, list[tuple[str, str]]] = {}
        arg_keys: dict[str, str] = {}
        for name, v in self.args.items():
            if v is not None:
                vkey = arg_keys[name] = value_key(v)
                by_key.setdefault(vkey, []).append(("arg", name))
        value_keys: dict[str, str] = {}
        for path, v in self.values.items():  # result values are strings and numbers: value_key's first cases
            kind = type(v)
            if kind is str:
                vkey = "s" + v
            elif kind is int:
                vkey = "i" + str(v)
            elif v is None:
                continue
            else:
                vkey = value_key(v)
            value_keys[path] = vkey
            held = by_key.get(vkey)
            if held is None:
                by_key[vkey] = [("res", path)]
            else:
                held.append(("res", path))
        self.arg_keys, self.value_keys, self.by_key = arg_keys, value_keys, by_key


class SessionMemory:
    """One session's bounded memory (see the module doc)."""

    def __init__(self, max_history: int = 8, max_calls: int = 8, max_values: int = 64) -> None:
        self.max_calls, self.max_values = max_calls, max_values
        self.history: deque[str] = deque(maxlen=max_history)  # tool names, oldest first
        self.called: dict[str, None] = {}  # every tool this session called (the prefetch eligibility rule)
        self.previous: CallMemo | None = None
        self.latest: OrderedDict[str, CallMemo] = OrderedDict()  # tool → its latest call, least recent first
        self.any_args: OrderedDict[str, Any] = OrderedDict()  # argument name → its latest value in any call
        self.any_keys: dict[str, str] = {}  # argument name → that value's key
        self.calls = 0
        self.last_seen = 0.0
        self.client = ""  # whose session (the owner's identity key): only its own constants resolve here
        self._index: dict[str, list[Source]] | None = None

    def observe(self, tool: str, args: Mapping[str, Any] | None, result: Any = None, now: float = 0.0) -> None:
        """Remember a finished call (``result`` as text or JSON data; None when unknown)."""
        memo = CallMemo(tool, args or {}, result_values(result, max_values=self.max_values))  # it copies both
        args = memo.args
        self.history.append(tool)
        if tool not in self.called and len(self.called) < 4096:
            self.called[tool] = None
        self.previous = memo
        self.latest[tool] = memo
        self.latest.move_to_end(tool)
        while len(self.latest) > self.max_calls:
            self.latest.popitem(last=False)
        for name, value in args.items():
            self.any_args[name] = value
            self.any_args.move_to_end(name)
            if name in memo.arg_keys:
                self.any_keys[name] = memo.arg_keys[name]
            else:
                self.any_keys.pop(name, None)
        while len(self.any_args) > self.max_values:
            self.any_keys.pop(self.any_args.popitem(last=False)[0], None)
        self.calls += 1
        self.last_seen = max(self.last_seen, now)
        self._index = None

    def resolve(self, source: Source) -> Any:
        """The value ``source`` points at in this session now, or None."""
        kind, who, key = source
        if kind == "const":
            return key_value(key) if who == self.client else None
        if who == ANY:
            return self.any_args.get(key) if kind == "arg" else None
        memo = self.previous if who == PREVIOUS else self.latest.get(who)
        if memo is None:
            return None
        return (memo.args if kind == "arg" else memo.values).get(key)

    def resolve_key(self, source: Source) -> str | None:
        """The canonical key of what ``source`` points at now (``value_key(resolve(source))``), or None."""
        kind, who, key = source
        if kind == "const":
            return key if who == self.client else None
        if who == ANY:
            return self.any_keys.get(key) if kind == "arg" else None
        memo = self.previous if who == PREVIOUS else self.latest.get(who)
        if memo is None:
            return None
        return (memo.arg_keys if kind == "arg" else memo.value_keys).get(key)

    def sources(self) -> Iterator[tuple[Source, str]]:
        """Every (source, canonical key of its value) the memory offers (constants aside)."""
        for who, memo in ([(PREVIOUS, self.previous)] if self.previous else []) + list(self.latest.items()):
            for name, vkey in memo.arg_keys.items():
                yield ("arg", who, name), vkey
            for path, vkey in memo.value_keys.items():
                yield ("res", who, path), vkey
        for name, vkey in self.any_keys.items():
            yield ("arg", ANY, name), vkey

    def holders(self, vkey: str) -> list[Source]:
        """The sources that hold the canonical value ``vkey`` now, in ``index()``'s order (what
        ``index().get(vkey, [])`` is, without building the whole index)."""
        found: list[Source] = []
        previous = self.previous
        if previous is not None:
            found.extend((kind, PREVIOUS, key) for kind, key in previous.by_key.get(vkey, ()))
        for who, memo in self.latest.items():
            held = memo.by_key.get(vkey)
            if held:
                found.extend((kind, who, key) for kind, key in held)
        found.extend(("arg", ANY, name) for name, key in self.any_keys.items() if key == vkey)
        return found

    def index(self) -> dict[str, list[Source]]:
        """Canonical value → the sources that hold it now (built once per call, on demand)."""
        if self._index is None:
            index: dict[str, list[Source]] = {}
            for source, vkey in self.sources():
                index.setdefault(vkey, []).append(source)
            self._index = index
        return self._index

    def seen_values(self) -> set[str]:
        """Canonical forms of every value in the memory (arguments and results)."""
        return set(self.index())


class SessionStore:
    """Session id → SessionMemory, bounded in count and idle time; ``end`` forgets a session."""

    def __init__(self, max_sessions: int = 10_000, idle_s: float = 1800.0,
                 on_drop: Callable[[str], None] | None = None, **memory_options: int) -> None:
        if max_sessions < 1 or idle_s <= 0:
            raise ValueError("max_sessions must be >= 1 and idle_s > 0")
        self.max_sessions, self.idle_s = int(max_sessions), float(idle_s)
        self.memory_options = memory_options
        # Told the id of each session the store forgets by itself (the bound, idleness), so an owner that
        # keeps something per session (the proxy: session hash → live session) forgets it too.
        self.on_drop = on_drop
        self._sessions: OrderedDict[str, SessionMemory] = OrderedDict()  # least recently active first

    def get(self, session: str, now: float = 0.0) -> SessionMemory:
        """The session's memory, created when new; marks it active."""
        memory = self._sessions.get(session)
        if memory is None:
            memory = self._sessions[session] = SessionMemory(**self.memory_options)
            memory.last_seen = now
            while len(self._sessions) > self.max_sessions:
                dropped, _ = self._sessions.popitem(last=False)
                if self.on_drop is not None:
                    self.on_drop(dropped)
        else:
            self._sessions.move_to_end(session)
        return memory

    def peek(self, session: str) -> SessionMemory | None:
        return self._sessions.get(session)

    def end(self, session: str) -> bool:
        """Forget the session (it ended); whether it was remembered."""
        return self._sessions.pop(session, None) is not None

    def clear(self) -> None:
        """Forget every session (the owner stops)."""
        self._sessions.clear()

    def expire(self, now: float) -> int:
        """Forget sessions idle for longer than ``idle_s``; how many."""
        dropped = 0
        sessions = self._sessions
        while sessions:  # oldest first, no copy: the proxy runs this every second over up to max_sessions
            session, memory = next(iter(sessions.items()))
            if now - memory.last_seen <= self.idle_s:
                break  # the rest were active later
            del sessions[session]
            dropped += 1
            if self.on_drop is not None:
                self.on_drop(session)
        return dropped

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session: object) -> bool:
        return session in self._sessions
