"""A set-associative array of tagged values with a pluggable replacement policy.

TLB levels and walk caches are both made of these: a lookup finds a tag in its set and
tells the policy of the hit; a fill takes the first invalid way, or the policy's victim.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable


class SetAssoc:
    """``sets`` x ``ways`` entries; the caller chooses each key's set."""

    def __init__(self, sets: int, ways: int, policy: Any) -> None:
        self.sets = sets
        self.ways = ways
        self.policy = policy
        self.tags: list[list[Hashable | None]] = [[None] * ways for _ in range(sets)]
        self.values: list[list[Any]] = [[None] * ways for _ in range(sets)]
        self.where: dict[Hashable, int] = {}
        self._on_invalidate = getattr(policy, "invalidate", None)  # optional in the contract

    def lookup(self, key: Hashable, s: int) -> Any:
        """The value stored under ``key`` (in set ``s``) or None; a hit updates the policy."""
        way = self.where.get(key)
        if way is None:
            return None
        self.policy.hit(s, way)
        return self.values[s][way]

    def fill(self, key: Hashable, s: int, value: Any) -> tuple[Hashable, Any] | None:
        """Store ``value`` under ``key`` in set ``s``; returns the evicted (key, value)."""
        row = self.tags[s]
        way = self.where.get(key)
        evicted = None
        if way is None:
            try:
                way = row.index(None)
            except ValueError:
                way = self.policy.victim(s)
                if type(way) is not int or not 0 <= way < self.ways:  # a plugin's answer: check it
                    from .registry import check_victim
                    way = check_victim(self.policy, s, way, self.ways)
                evicted = (row[way], self.values[s][way])
                del self.where[row[way]]
            row[way] = key
            self.where[key] = way
        self.values[s][way] = value
        self.policy.fill(s, way)
        return evicted

    def remove(self, key: Hashable, s: int) -> bool:
        way = self.where.pop(key, None)
        if way is None:
            return False
        self.tags[s][way] = None
        self.values[s][way] = None
        if self._on_invalidate is not None:
            self._on_invalidate(s, way)
        return True

    def remove_if(self, drop: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key satisfies ``drop``; returns how many."""
        dropped = 0
        for s, row in enumerate(self.tags):
            for w, tag in enumerate(row):
                if tag is not None and drop(tag):
                    del self.where[tag]
                    row[w] = None
                    self.values[s][w] = None
                    if self._on_invalidate is not None:
                        self._on_invalidate(s, w)
                    dropped += 1
        return dropped


def set_mask(sets: int) -> int:
    """``sets - 1`` when ``sets`` is a power of two (the compiled loop then masks a key
    instead of dividing it), else -1 (it takes the key modulo ``sets``)."""
    return sets - 1 if sets & (sets - 1) == 0 else -1
