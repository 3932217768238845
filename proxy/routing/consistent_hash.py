"""Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2016; Vimeo, HAProxy).

Each replica owns ``vnodes`` points on a 64-bit ring, placed by hashing its id, so a
key (the client session, or a digest of the call's arguments) lands on the same replica
while the replica set is unchanged, and when one replica leaves only the keys it owned
move. The load bound keeps a hot key from melting its home: a replica already carrying
``ceil(load_factor × (total in flight + 1) / n)`` calls is skipped and the walk goes on
clockwise to the next distinct replica.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from only1mcp.proxy.routing.base import POLICIES, Decision, RouteRequest

__all__ = ["ConsistentHash", "HashRing", "DEFAULT_VNODES"]

DEFAULT_VNODES = 100  # ~10 % spread in key share per replica; more points cost memory, not time per call
_RING_CACHE = 8  # replica sets seen recently (one down, back up …); rebuilding a ring costs n × vnodes hashes
_KEY_NAMES = {"session": "session id", "arguments": "argument hash"}


def _point(text: str) -> int:
    # blake2b, not hash(): the same key must map to the same replica across restarts and processes.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """The ring for one replica set. Points depend only on replica ids, never on the set's order or size."""

    def __init__(self, ids: Sequence[str], vnodes: int = DEFAULT_VNODES) -> None:
        points = sorted((_point(f"{rid}#{v}"), rid) for rid in ids for v in range(vnodes))
        self._points = [p for p, _ in points]
        self._owners = [rid for _, rid in points]
        self._distinct = len(set(ids))

    def walk(self, key_point: int) -> Iterator[str]:
        """Distinct replica ids clockwise from ``key_point``: the key's home first."""
        start = bisect.bisect_right(self._points, key_point)
        seen: set[str] = set()
        size = len(self._points)
        for step in range(size):
            owner = self._owners[(start + step) % size]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == self._distinct:
                    return


class ConsistentHash:
    name = "consistent_hash"

    def __init__(self, hash_key: str = "session", hash_load_factor: float = 1.25,
                 vnodes: int = DEFAULT_VNODES) -> None:
        if hash_key not in _KEY_NAMES:
            raise ValueError(f"hash_key must be one of {', '.join(_KEY_NAMES)}, got {hash_key!r}")
        if not hash_load_factor >= 1:  # below 1 the bound could refuse every replica
            raise ValueError(f"hash_load_factor must be at least 1, got {hash_load_factor!r}")
        if vnodes < 1:
            raise ValueError("vnodes must be positive")
        self.hash_key = hash_key
        self.load_factor = hash_load_factor
        self.vnodes = vnodes
        self._rings: OrderedDict[frozenset[str], HashRing] = OrderedDict()

    def cap(self, candidates: Sequence[Any]) -> float:
        """Most calls in flight a replica may already carry and still take this one."""
        if math.isinf(self.load_factor):
            return math.inf
        total = sum(c.inflight for c in candidates)
        return math.ceil(self.load_factor * (total + 1) / len(candidates))

    def choose(self, candidates: Sequence[Any], request: RouteRequest) -> Decision:
        cap = self.cap(candidates)
        key = request.session_id if self.hash_key == "session" else request.args_hash
        if key is None:
            # No key, no affinity to keep: the first candidate under the bound, in the pool's order.
            replica = next((c for c in candidates if c.inflight < cap), None) or _least(candidates)
            return Decision(replica, self.name, f"consistent_hash: no {_KEY_NAMES[self.hash_key]} to hash; "
                                                f"{replica.id} is the first candidate under the load cap {cap}")
        key_point = _point(key)
        by_id = {c.id: c for c in candidates}
        home = None
        for rid in self._ring(by_id).walk(key_point):
            replica = by_id[rid]
            if home is None:
                home = replica
            if replica.inflight < cap:
                break
        else:  # unreachable with load_factor >= 1 (not every replica can exceed the mean); stay safe
            replica = _least(candidates)
        # The key's own digest, never the key: session ids are credentials and reasons get logged.
        tag = f"key {key_point >> 32:08x}"
        if replica is home:
            return Decision(replica, self.name, f"consistent_hash: {tag} → {replica.id}, its home "
                                                f"({replica.inflight} in flight < cap {cap})")
        return Decision(replica, self.name, f"consistent_hash: {tag} home {home.id} is at the load cap "
                                            f"({home.inflight} in flight ≥ {cap}); walked the ring to {replica.id}")

    def _ring(self, by_id: dict[str, Any]) -> HashRing:
        ids = frozenset(by_id)
        ring = self._rings.get(ids)
        if ring is None:
            ring = self._rings[ids] = HashRing(sorted(ids), self.vnodes)
            if len(self._rings) > _RING_CACHE:
                self._rings.popitem(last=False)
        else:
            self._rings.move_to_end(ids)
        return ring


def _least(candidates: Sequence[Any]) -> Any:
    return min(candidates, key=lambda c: c.inflight)


POLICIES[ConsistentHash.name] = ConsistentHash
