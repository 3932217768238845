"""SIEVE (Zhang et al., "SIEVE is simpler than LRU", NSDI'24), sized in bytes.

One FIFO queue, newest at the head, a visited bit per entry and a hand that walks from the
oldest entry toward the newest. A hit only sets the bit (no reordering, unlike LRU). To
evict, the hand clears the bits of visited entries and stops at the first unvisited one,
which goes; the hand stays where it stopped, so entries it passed keep their place and new
entries are the likeliest victims ("quick demotion"), while popular ones are retained
without moving ("lazy promotion"). A victim found expired is taken regardless of its bit.
"""

from __future__ import annotations

from only1mcp.proxy.cache.base import POLICIES, Entry, ResponseCache

__all__ = ["SieveCache"]


class _Node(Entry):
    __slots__ = ("visited", "newer", "older")

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.visited = False
        self.newer: _Node | None = None
        self.older: _Node | None = None


class SieveCache(ResponseCache):
    name = "sieve"
    entry_type = _Node

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        # A doubly linked list: O(1) removal from the middle (expiry, invalidation) while the
        # hand keeps its position, which an OrderedDict cannot hold.
        self._newest: _Node | None = None
        self._oldest: _Node | None = None
        self._hand: _Node | None = None

    def _admit(self, entry: Entry, previous: Entry | None) -> None:
        assert isinstance(entry, _Node)
        entry.visited = isinstance(previous, _Node) and previous.visited  # a replacement keeps its bit
        entry.older = self._newest
        if self._newest is not None:
            self._newest.newer = entry
        self._newest = entry
        if self._oldest is None:
            self._oldest = entry

    def _on_hit(self, entry: Entry) -> None:
        assert isinstance(entry, _Node)
        entry.visited = True

    def _unlink(self, entry: Entry) -> None:
        assert isinstance(entry, _Node)
        if self._hand is entry:
            self._hand = entry.newer
        self._detach(entry)

    def _make_room(self, now: float) -> None:
        node = self._hand or self._oldest
        assert node is not None  # only called while the cache holds bytes
        while node.visited and not node.expired(now):
            node.visited = False
            node = node.newer or self._oldest  # past the newest, wrap to the oldest
            assert node is not None
        self._hand = node.newer
        self._detach(node)
        self._evicted(node, now)

    def _on_clear(self) -> None:
        self._newest = self._oldest = self._hand = None

    def _detach(self, node: _Node) -> None:
        if node.newer is not None:
            node.newer.older = node.older
        else:
            self._newest = node.older
        if node.older is not None:
            node.older.newer = node.newer
        else:
            self._oldest = node.newer
        node.newer = node.older = None


POLICIES[SieveCache.name] = SieveCache
