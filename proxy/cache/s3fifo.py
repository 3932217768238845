"""S3-FIFO (Yang et al., "FIFO queues are all you need for cache eviction", SOSP'23), sized in bytes.

Three FIFO queues: a small one (S, ~10 % of the bytes) that every new key enters, a main
one (M, the rest), and a ghost queue (G) of keys recently evicted from S, without values.
Most keys in real traces are requested once; S lets those leave quickly, so a scan cannot
flush M. Each entry has a frequency counter capped at 3, bumped on hits only:

* evicting from S: the oldest entry moves to M (counter cleared) if it was hit while in S,
  else it is evicted and its key goes to G;
* evicting from M: the oldest entry with a counter above 0 is reinserted with the counter
  minus one (a 2-bit CLOCK); the first with 0 is evicted;
* inserting: a key found in G was evicted too early, so it goes straight to M.

We evict from S while it holds at least its share of the bytes (or M is empty), else from
M, and an entry found expired on the way is simply dropped (never promoted nor ghosted).
"""

from __future__ import annotations

from collections import OrderedDict

from only1mcp.proxy.cache.base import POLICIES, Entry, ResponseCache

__all__ = ["S3FIFOCache"]

MAX_FREQ = 3  # two bits


class _Entry(Entry):
    __slots__ = ("freq", "in_main")

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.freq = 0
        self.in_main = False


class S3FIFOCache(ResponseCache):
    name = "s3fifo"
    entry_type = _Entry

    def __init__(self, max_bytes: int, small_share: float = 0.10, move_to_main_threshold: int = 1) -> None:
        super().__init__(max_bytes)
        self._small_target = small_share * max_bytes
        self._main_target = max_bytes - self._small_target
        # "Accessed at least once while in S" (the paper's text and its original runs); its
        # Algorithm 1 and later libCacheSim defaults use 2.
        self._threshold = move_to_main_threshold
        self._small: OrderedDict[str, _Entry] = OrderedDict()  # oldest first
        self._main: OrderedDict[str, _Entry] = OrderedDict()
        self._ghost: OrderedDict[str, tuple[int, str]] = OrderedDict()  # key -> (size, tag)
        self._small_bytes = self._main_bytes = self._ghost_bytes = 0

    # -- hooks ---------------------------------------------------------------------------

    def _admit(self, entry: Entry, previous: Entry | None) -> None:
        assert isinstance(entry, _Entry)
        if isinstance(previous, _Entry):  # a replacement keeps the old entry's standing
            entry.freq, to_main = previous.freq, previous.in_main
        else:
            ghost = self._ghost.pop(entry.key, None)
            if ghost is not None:
                self._ghost_bytes -= ghost[0]
            to_main = ghost is not None
        self._push(entry, to_main)

    def _on_hit(self, entry: Entry) -> None:
        assert isinstance(entry, _Entry)
        entry.freq = min(entry.freq + 1, MAX_FREQ)

    def _unlink(self, entry: Entry) -> None:
        assert isinstance(entry, _Entry)
        if entry.in_main:
            del self._main[entry.key]
            self._main_bytes -= entry.size
        else:
            del self._small[entry.key]
            self._small_bytes -= entry.size

    def _make_room(self, now: float) -> None:
        if self._small and (self._small_bytes >= self._small_target or not self._main):
            self._evict_small(now)
        else:
            self._evict_main(now)

    def _on_invalidate(self, tag: str) -> None:
        # A server whose tools changed starts afresh: no early admission to M from old ghosts.
        for key in [k for k, (_, t) in self._ghost.items() if t == tag]:
            self._ghost_bytes -= self._ghost.pop(key)[0]

    def _on_clear(self) -> None:
        self._small.clear()
        self._main.clear()
        self._ghost.clear()
        self._small_bytes = self._main_bytes = self._ghost_bytes = 0

    # -- the queues ----------------------------------------------------------------------

    def _push(self, entry: _Entry, to_main: bool) -> None:
        entry.in_main = to_main
        if to_main:
            self._main[entry.key] = entry
            self._main_bytes += entry.size
        else:
            self._small[entry.key] = entry
            self._small_bytes += entry.size

    def _evict_small(self, now: float) -> None:
        while self._small:
            _, entry = self._small.popitem(last=False)
            self._small_bytes -= entry.size
            if entry.expired(now):
                self._evicted(entry, now)
                return
            if entry.freq >= self._threshold:
                entry.freq = 0  # its hits in S earned the move; in M it starts over
                self._push(entry, to_main=True)
                if self._main_bytes > self._main_target:
                    self._evict_main(now)
                    return
                continue
            self._evicted(entry, now)
            self._remember(entry)
            return
        self._evict_main(now)  # everything in S was promoted and M still had room

    def _evict_main(self, now: float) -> None:
        while True:
            _, entry = self._main.popitem(last=False)
            if entry.freq > 0 and not entry.expired(now):
                entry.freq -= 1
                self._main[entry.key] = entry  # reinserted at the new end; bytes unchanged
                continue
            self._main_bytes -= entry.size
            self._evicted(entry, now)
            return

    def _remember(self, entry: _Entry) -> None:
        """Put an evicted key in G: FIFO, as many bytes as M holds (the paper's "as many
        entries as M", sized in bytes) and never more keys than the cache holds entries,
        so ghost memory stays in proportion however small the results are."""
        self._ghost[entry.key] = (entry.size, entry.tag)
        self._ghost_bytes += entry.size
        while self._ghost and (self._ghost_bytes > self._main_target or len(self._ghost) > len(self._entries)):
            _, (size, _) = self._ghost.popitem(last=False)
            self._ghost_bytes -= size


POLICIES[S3FIFOCache.name] = S3FIFOCache
