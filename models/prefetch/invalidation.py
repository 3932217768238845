"""Write-aware invalidation: which cached results a write makes stale, learned per (write tool, read tool).

A cached read shares an argument value with a write (``update_record(key=doc-5)`` and
``get_document(key=doc-5)``; ``add_comment(issue_id=ISS-7)`` and ``list_comments(issue_id=ISS-7)``):
the write may have changed what the read returns, and a TTL alone would serve the old result until
it expires. Whether it did is learned from what the upstream says next: when such a read is next
fetched, its answer is compared with the one cached at the time of the write — changed or not — and
counted for the (write tool, read tool) pair, decayed by ``decay`` per observation of the pair.

``predict_one(write, read)`` is the smoothed chance that the write changed the read,
(changed + 1) / (observations + 2), so an unseen pair starts at one half; the cache drops the
read's entry when that chance is at least ``threshold`` (the accepted chance of serving a stale
result). Pairs are bounded by ``max_pairs`` (least recently observed dropped).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from only1mcp.prefetch._state import PrefetchStateError, check_header, header, malformed, require

__all__ = ["WriteInvalidation"]

_VERSION = 1


class WriteInvalidation:
    """P(a write changed a read sharing an argument value with it), per (write tool, read tool)."""

    name = "write_invalidation"

    def __init__(self, threshold: float = 0.05, decay: float = 0.99, max_pairs: int = 10_000) -> None:
        if not 0.0 <= threshold <= 1.0 or not 0.0 < decay <= 1.0 or max_pairs < 1:
            raise ValueError("threshold must be in [0, 1], decay in (0, 1], max_pairs >= 1")
        self.threshold, self.decay, self.max_pairs = float(threshold), float(decay), int(max_pairs)
        self._pairs: OrderedDict[tuple[str, str], list[float]] = OrderedDict()  # → [changed, observations]
        self.learned = 0

    def learn_one(self, write: str, read: str, changed: bool) -> None:
        """After ``write``, the next upstream answer to a read of tool ``read`` sharing a value with
        it had ``changed`` (from the answer cached when the write happened) or not."""
        key = (write, read)
        counts = self._pairs.pop(key, None) or [0.0, 0.0]
        counts[0], counts[1] = counts[0] * self.decay + bool(changed), counts[1] * self.decay + 1.0
        self._pairs[key] = counts
        while len(self._pairs) > self.max_pairs:
            self._pairs.popitem(last=False)
        self.learned += 1

    def predict_one(self, write: str, read: str) -> float:
        changed, seen = self._pairs.get((write, read), (0.0, 0.0))
        return (changed + 1.0) / (seen + 2.0)

    def invalidates(self, write: str, read: str) -> bool:
        """Whether the cache should drop a ``read`` entry sharing an argument value with ``write``."""
        return self.predict_one(write, read) >= self.threshold

    def state(self) -> dict[str, Any]:
        return {**header(self.name, _VERSION), "threshold": self.threshold, "decay": self.decay,
                "max_pairs": self.max_pairs, "learned": self.learned,
                "pairs": [[w, r, c, n] for (w, r), (c, n) in self._pairs.items()]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> WriteInvalidation:
        """A model continuing from ``state()``; PrefetchStateError when the state is not a valid one."""
        state = check_header(state, cls.name, _VERSION)
        try:
            model = cls(threshold=state["threshold"], decay=state["decay"], max_pairs=state["max_pairs"])
            model.learned = int(state["learned"])
            for write, read, changed, seen in state["pairs"]:
                require(isinstance(write, str) and isinstance(read, str), cls.name, f"bad pair {write!r}/{read!r}")
                require(all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                            for x in (changed, seen)) and 0 <= changed <= seen + 1e-9, cls.name,
                        f"bad counts {changed!r}/{seen!r}")
                model._pairs[(write, read)] = [float(changed), float(seen)]
        except PrefetchStateError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise malformed(cls.name, exc) from exc
        require(len(model._pairs) <= model.max_pairs, cls.name, "more pairs than max_pairs")
        return model
