"""Predictive caching: what a session will call next, with which arguments, and how long a result
stays right.

* ``markov.NextToolModel``: variable-order Markov chain over tool names with Witten–Bell back-off;
* ``arguments.ArgumentModel``: "argument slot ← source" statistics (an earlier argument, a value of
  a recent result, a constant) per (tool, argument name);
* ``memory.SessionStore``: the bounded per-session memory those read (never saved, dropped at the
  session's end);
* ``predictor.NextCallPredictor``: the three together, concrete next calls with a confidence;
* ``ttl.AdaptiveTTL``: per-tool TTLs from how often a repeated call's answer changed;
* ``invalidation.WriteInvalidation``: which cached reads a write makes stale, per (write, read) tool.

Every model learns one call at a time (``learn_one``), predicts any time (``predict_one``), and saves
its statistics as JSON-able data (``state`` / ``from_state``; a bad state raises PrefetchStateError).
"""

from only1mcp.models.prefetch._state import PrefetchStateError
from only1mcp.models.prefetch.arguments import ArgumentModel, recent_arguments
from only1mcp.models.prefetch.invalidation import WriteInvalidation
from only1mcp.models.prefetch.markov import START, NextToolModel
from only1mcp.models.prefetch.memory import SessionMemory, SessionStore
from only1mcp.models.prefetch.predictor import NextCallPredictor, PredictedCall
from only1mcp.models.prefetch.ttl import AdaptiveTTL
from only1mcp.models.prefetch.values import result_values, text_tokens

__all__ = [
    "PrefetchStateError", "ArgumentModel", "recent_arguments", "START", "NextToolModel", "SessionMemory",
    "SessionStore", "NextCallPredictor", "PredictedCall", "AdaptiveTTL", "WriteInvalidation", "result_values",
    "text_tokens",
]
