"""What prefetch needs on both sides of the loop: the per-session memory and the argument model.

The proxy keeps each session's recent calls, arguments and result values in memory (never on a
topic, never on disk) and fills the arguments of a predicted call from them; the learning side
(``models/prefetch``: the next-tool model, TTLs, invalidation) and the cache benchmark's replay use
the same classes. They live in the core because the proxy may import nothing of ``models/``.

* ``memory.SessionStore`` / ``SessionMemory``: bounded per-session memory, dropped at the session's end;
* ``arguments.ArgumentModel``: "argument slot ← source" statistics per (tool, argument name);
* ``values.result_values``: the (path, value) pairs a result offers to later calls;
* ``settings.PrefetchSettings``: ``[prefetch]``, the proxy's executor (budget, bounds of the memory);
* ``PrefetchError``: the root of this package's errors (``PrefetchStateError``: a state that cannot
  be restored).
"""

from only1mcp.prefetch._state import PrefetchError, PrefetchStateError, value_key
from only1mcp.prefetch.arguments import ArgumentModel, recent_arguments
from only1mcp.prefetch.memory import ANY, PREVIOUS, CallMemo, SessionMemory, SessionStore, Source
from only1mcp.prefetch.settings import PrefetchSettings
from only1mcp.prefetch.values import parse_result, result_values, text_tokens

__all__ = [
    "PrefetchError", "PrefetchStateError", "value_key", "ArgumentModel", "recent_arguments", "ANY", "PREVIOUS",
    "CallMemo", "SessionMemory", "SessionStore", "Source", "parse_result", "result_values", "text_tokens",
    "PrefetchSettings",
]
