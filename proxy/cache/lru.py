"""LRU: evict the entry used least recently. The baseline the other policies are measured
against; an ``OrderedDict`` gives O(1) touch and eviction."""

from __future__ import annotations

from collections import OrderedDict

from only1mcp.proxy.cache.base import POLICIES, Entry, ResponseCache

__all__ = ["LRUCache"]


class LRUCache(ResponseCache):
    name = "lru"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self._order: OrderedDict[str, Entry] = OrderedDict()  # least recent first

    def _admit(self, entry: Entry, previous: Entry | None) -> None:
        self._order[entry.key] = entry  # a write is a use: newest end

    def _on_hit(self, entry: Entry) -> None:
        self._order.move_to_end(entry.key)

    def _unlink(self, entry: Entry) -> None:
        del self._order[entry.key]

    def _make_room(self, now: float) -> None:
        _, victim = self._order.popitem(last=False)
        self._evicted(victim, now)

    def _on_clear(self) -> None:
        self._order.clear()


POLICIES[LRUCache.name] = LRUCache
