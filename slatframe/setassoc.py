"""A set-associative array of tagged values with a pluggable replacement policy.

TLB levels and walk caches are both made of these: a lookup finds a tag in its set and
tells the policy of the hit; a fill takes the first invalid way, or the policy's victim.

Keys are tuples whose first ``group`` fields name a context (a TLB's (vm, asid), a walk
cache's (dim, vm, asid)); the array indexes its entries by context, so an invalidation
of contexts (:meth:`SetAssoc.remove_groups`) visits their entries only, never the whole
array, and drops them in the order a sweep of every set and way would.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable


class SetAssoc:
    """``sets`` x ``ways`` entries; the caller chooses each key's set."""

    def __init__(self, sets: int, ways: int, policy: Any, group: int = 0) -> None:
        """``group``: how many leading fields of a (tuple) key name its context."""
        self.sets = sets
        self.ways = ways
        self.policy = policy
        self.group = group
        self.tags: list[list[Hashable | None]] = [[None] * ways for _ in range(sets)]
        self.values: list[list[Any]] = [[None] * ways for _ in range(sets)]
        self.where: dict[Hashable, int] = {}
        self.members: dict[Hashable, dict[Hashable, int]] = {}  # context -> {key: set}
        self.examined = 0  #: entries invalidations looked at (a diagnostic: not a metric)
        self.removed = 0  #: entries invalidations dropped
        self._on_invalidate = getattr(policy, "invalidate", None)  # optional in the contract

    def context(self, key: Hashable) -> Hashable:
        """The context ``key`` belongs to: its first ``group`` fields."""
        return key[:self.group] if self.group else None

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
                self._unindex(row[way])
            row[way] = key
            self.where[key] = way
            self.members.setdefault(self.context(key), {})[key] = s
        self.values[s][way] = value
        self.policy.fill(s, way)
        return evicted

    def remove(self, key: Hashable, s: int) -> bool:
        way = self.where.pop(key, None)
        if way is None:
            return False
        self._unindex(key)
        self._clear(s, way)
        return True

    def remove_groups(self, select: Callable[[Hashable], bool]) -> int:
        """Drop every entry of the contexts ``select`` accepts; returns how many."""
        entries = self._entries(self.members[c] for c in list(self.members) if select(c))
        return self._drop(entries)

    def remove_if(self, drop: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key satisfies ``drop``; returns how many."""
        return self._drop([entry for entry in self._entries(self.members.values()) if drop(entry[2])])

    def _entries(self, groups: Iterable[dict[Hashable, int]]) -> list[tuple[int, int, Hashable]]:
        """(set, way, key) of every entry of ``groups``, counted as examined."""
        entries = [(s, self.where[key], key) for keys in groups for key, s in keys.items()]
        self.examined += len(entries)
        return entries

    def _drop(self, entries: list[tuple[int, int, Hashable]]) -> int:
        """Drop ``entries`` (set, way, key) in set and way order, as a sweep would."""
        entries.sort(key=lambda entry: entry[:2])
        for s, way, key in entries:
            del self.where[key]
            self._unindex(key)
            self._clear(s, way)
        self.removed += len(entries)
        return len(entries)

    def _clear(self, s: int, way: int) -> None:
        self.tags[s][way] = None
        self.values[s][way] = None
        if self._on_invalidate is not None:
            self._on_invalidate(s, way)

    def _unindex(self, key: Hashable) -> None:
        context = self.context(key)
        keys = self.members[context]
        del keys[key]
        if not keys:
            del self.members[context]


def set_mask(sets: int) -> int:
    """``sets - 1`` when ``sets`` is a power of two (the compiled loop then masks a key
    instead of dividing it), else -1 (it takes the key modulo ``sets``)."""
    return sets - 1 if sets & (sets - 1) == 0 else -1
