"""Predictive caching: what a session will call next, with which arguments, and how long a result
stays right.

* ``markov.NextToolModel``: variable-order Markov chain over tool names with Witten–Bell back-off;
* ``arguments.ArgumentModel`` (core): "argument slot ← source" statistics (an earlier argument, a value of
  a recent result, a constant) per (tool, argument name);
* ``memory.SessionStore`` (core): the bounded per-session memory those read (never saved, dropped at the
  session's end);
* ``predictor.NextCallPredictor``: the three together, concrete next calls with a confidence;
* ``ttl.AdaptiveTTL``: per-tool TTLs from how often a repeated call's answer changed;
* ``invalidation.WriteInvalidation``: which cached reads a write makes stale, per (write, read) tool.

The argument model, the session memory and result values live in the core package
``only1mcp.prefetch`` (the proxy fills predicted calls with them and may not import ``models/``);
they are re-exported here under their old names.

Every model learns one call at a time (``learn_one``), predicts any time (``predict_one``), and saves
its statistics as JSON-able data (``state`` / ``from_state``; a bad state raises PrefetchStateError).
"""

from only1mcp.models.prefetch.invalidation import WriteInvalidation
from only1mcp.models.prefetch.markov import START, NextToolModel
from only1mcp.models.prefetch.predictor import NextCallPredictor, PredictedCall
from only1mcp.models.prefetch.ttl import AdaptiveTTL
from only1mcp.prefetch import (
    ArgumentModel, PrefetchStateError, SessionMemory, SessionStore, recent_arguments, result_values, text_tokens,
)

__all__ = [
    "PrefetchStateError", "ArgumentModel", "recent_arguments", "START", "NextToolModel", "SessionMemory",
    "SessionStore", "NextCallPredictor", "PredictedCall", "AdaptiveTTL", "WriteInvalidation", "result_values",
    "text_tokens",
]
