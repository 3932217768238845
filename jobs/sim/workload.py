"""Workloads: which tool each client session calls next, with which ``key``, and when.

A workload profile (JSON) gives the tools, a start distribution and a transition
matrix (``{"from": {"to": weight}}``, rows need not sum to 1), so each session is a
Markov chain over tools: a search is usually followed by fetching a document, an
update by a read, and so on. Keys are Zipf-distributed over ``keys`` ranks with
exponent ``zipf_s``, and with probability ``repeat_key`` a call reuses the
session's previous key, so hot keys and follow-up calls on the same key occur the
way they do in real traffic.

Everything is drawn from ``random.Random`` streams seeded by strings, so the same
seed gives the same sequences on every run and machine: one stream for arrivals
(open loop) and one per session for its tools and keys. Session ``s``'s ``n``-th
call is therefore the same in open and closed loop.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_WORKLOAD", "PlannedCall", "SessionChain", "Workload", "Zipf", "open_loop_schedule"]

DEFAULT_WORKLOAD: dict[str, Any] = {
    "start": {"search": 0.7, "get_document": 0.2, "update_record": 0.1},
    "transitions": {
        "search": {"search": 0.2, "get_document": 0.5, "summarize": 0.2, "update_record": 0.1},
        "get_document": {"get_document": 0.3, "summarize": 0.3, "search": 0.2, "update_record": 0.15,
                         "delete_record": 0.05},
        "summarize": {"search": 0.5, "get_document": 0.3, "update_record": 0.2},
        "update_record": {"get_document": 0.4, "search": 0.4, "update_record": 0.1, "delete_record": 0.1},
        "delete_record": {"search": 0.8, "get_document": 0.2},
    },
    "keys": 500,
    "zipf_s": 1.1,
    "repeat_key": 0.4,
    "key_prefix": "doc-",
}


class Zipf:
    """Ranks 1..n with P(k) proportional to 1 / k**s, by inverse CDF (one draw per sample)."""

    def __init__(self, n: int, s: float) -> None:
        weights = [1.0 / k**s for k in range(1, n + 1)]
        self.cdf = list(itertools.accumulate(weights))

    def sample(self, rng: random.Random) -> int:
        return min(bisect.bisect_left(self.cdf, rng.random() * self.cdf[-1]), len(self.cdf) - 1) + 1


@dataclass(frozen=True)
class Workload:
    start: Mapping[str, float]
    transitions: Mapping[str, Mapping[str, float]]
    keys: int = 500
    zipf_s: float = 1.1
    repeat_key: float = 0.4
    key_prefix: str = "doc-"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Workload:
        unknown = set(raw) - {"start", "transitions", "keys", "zipf_s", "repeat_key", "key_prefix", "tools"}
        if unknown:
            raise ValueError(f"workload: unknown keys {sorted(unknown)}")
        merged = {**DEFAULT_WORKLOAD, **raw}
        merged.pop("tools", None)  # informative only: the tools are those the matrix names
        workload = cls(**merged)
        for row in [workload.start, *workload.transitions.values()]:
            if not row or any(w < 0 for w in row.values()) or sum(row.values()) <= 0:
                raise ValueError("workload: every distribution needs a positive total weight")
        return workload

    @classmethod
    def load(cls, file_or_json: str | None) -> Workload:
        """From a JSON file, an inline JSON object, or the default when None/empty."""
        if not file_or_json:
            return cls.from_dict(DEFAULT_WORKLOAD)
        text = file_or_json if file_or_json.lstrip().startswith("{") else Path(file_or_json).read_text()
        return cls.from_dict(json.loads(text))

    @property
    def tools(self) -> list[str]:
        names = dict.fromkeys(self.start)
        for source, row in self.transitions.items():
            names.update(dict.fromkeys([source, *row]))
        return list(names)

    def stationary_mix(self, steps: int = 200) -> dict[str, float]:
        """The long-run share of calls per tool (power iteration from the start distribution)."""
        tools = self.tools
        p = _normalised(self.start, tools)
        for _ in range(steps):
            nxt = dict.fromkeys(tools, 0.0)
            for source, mass in p.items():
                row = _normalised(self.transitions.get(source) or self.start, tools)
                for target, w in row.items():
                    nxt[target] += mass * w
            p = nxt
        return p


def _normalised(row: Mapping[str, float], tools: Sequence[str]) -> dict[str, float]:
    total = sum(row.values())
    return {t: row.get(t, 0.0) / total for t in tools}


class SessionChain:
    """One session's endless sequence of (tool, key), fixed by (seed, session)."""

    def __init__(self, workload: Workload, seed: int | str, session: int) -> None:
        self.workload = workload
        self.rng = random.Random(f"session:{seed}:{session}")
        self.zipf = _zipf(workload.keys, workload.zipf_s)
        self.tool: str | None = None
        self.key: str | None = None

    def _pick(self, row: Mapping[str, float]) -> str:
        names = list(row)
        return self.rng.choices(names, weights=[row[n] for n in names])[0]

    def next(self) -> tuple[str, str]:
        row = self.workload.start if self.tool is None else (self.workload.transitions.get(self.tool)
                                                             or self.workload.start)
        self.tool = self._pick(row)
        # Always draw both numbers, so whether a key repeats never shifts the later draws.
        repeat, rank = self.rng.random() < self.workload.repeat_key, self.zipf.sample(self.rng)
        if self.key is None or not repeat:
            self.key = f"{self.workload.key_prefix}{rank}"
        return self.tool, self.key

    def __iter__(self) -> Iterator[tuple[str, str]]:
        while True:
            yield self.next()


_ZIPFS: dict[tuple[int, float], Zipf] = {}


def _zipf(n: int, s: float) -> Zipf:
    if (n, s) not in _ZIPFS:  # sessions share one table
        _ZIPFS[(n, s)] = Zipf(n, s)
    return _ZIPFS[(n, s)]


@dataclass(frozen=True)
class PlannedCall:
    index: int
    t: float  # seconds after the start of the run
    session: int
    seq: int  # the session's n-th call, from 0
    tool: str
    key: str


def open_loop_schedule(
    workload: Workload, seed: int | str, sessions: int, rate: float, duration: float
) -> list[PlannedCall]:
    """Poisson arrivals at ``rate`` per second for ``duration`` seconds, each on a random session."""
    if sessions < 1 or rate <= 0 or duration <= 0:
        raise ValueError("sessions >= 1, rate > 0 and duration > 0 are required")
    arrivals = random.Random(f"arrivals:{seed}")
    chains = [SessionChain(workload, seed, s) for s in range(sessions)]
    seqs = [0] * sessions
    calls: list[PlannedCall] = []
    t = 0.0
    while True:
        # Unit-rate gaps scaled by the rate: the same seed at another rate is the same
        # pattern, stretched, rather than a different one.
        t += arrivals.expovariate(1.0) / rate
        if t >= duration:
            return calls
        session = arrivals.randrange(sessions)
        tool, key = chains[session].next()
        calls.append(PlannedCall(len(calls), t, session, seqs[session], tool, key))
        seqs[session] += 1
