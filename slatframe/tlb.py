"""TLB levels (reference tier) and the hierarchy that looks them up in order.

A level holds entries of the page sizes it is configured with. For a page size ``s``
the set index is the virtual page number ``va >> log2(s)`` modulo ``sets``; the tag is
(vm, asid, log2(s), virtual page number). A level serves data accesses, instruction
fetches or both (``side``); a lookup visits, in order, the levels of its side.

Fills between levels follow ``tlb.inclusion``:

- ``non-inclusive``: a hit in level i refills the levels before it; a walk fills every
  level that holds its page size. Evictions are independent.
- ``inclusive``: as non-inclusive, and an entry evicted from a level is also removed from
  the levels before it (back-invalidation), so each level holds a subset of the next.
- ``exclusive``: a walk fills only the first level that holds the size; a hit in a later
  level moves the entry to the first level; an entry evicted from a level moves to the
  next level of its side that holds its size (a victim TLB).
"""
from __future__ import annotations

from typing import Any, Iterable

from .config import TlbLevelConfig
from .setassoc import SetAssoc
from .trace import IFETCH


class TlbLevel:
    """One TLB array with its replacement policy."""

    def __init__(self, config: TlbLevelConfig, policy: Any) -> None:
        self.config = config
        self.name = config.name
        self.sets = config.sets
        self.array = SetAssoc(config.sets, config.ways, policy, group=2)  # contexts: (vm, asid)
        self.shifts = tuple(size.bit_length() - 1 for size in sorted(config.page_sizes))
        self.sizes = frozenset(config.page_sizes)
        self.instruction = config.side in ("instruction", "unified")
        self.data = config.side in ("data", "unified")

    def lookup(self, vm: int, asid: int, va: int) -> tuple[tuple, Any] | None:
        """(tag, translation) of ``va`` or None; a hit updates the policy."""
        for shift in self.shifts:
            vpn = va >> shift
            tag = (vm, asid, shift, vpn)
            found = self.array.lookup(tag, vpn % self.sets)
            if found is not None:
                return tag, found
        return None

    def holds(self, translation: Any) -> bool:
        return translation.size in self.sizes

    def fill(self, tag: tuple, translation: Any) -> tuple[tuple, Any] | None:
        """Insert under ``tag``; returns the evicted (tag, translation), if any."""
        return self.array.fill(tag, tag[3] % self.sets, translation)

    def remove(self, tag: tuple) -> bool:
        return self.array.remove(tag, tag[3] % self.sets)

    def invalidate_page(self, vm: int, asid: int, va: int) -> None:
        """Drop the entries of every page size that map ``va`` (INVLPG)."""
        for shift in self.shifts:
            vpn = va >> shift
            self.array.remove((vm, asid, shift, vpn), vpn % self.sets)


def tag_of(vm: int, asid: int, va: int, size: int) -> tuple:
    shift = size.bit_length() - 1
    return vm, asid, shift, va >> shift


class TlbHierarchy:
    """The configured levels, looked up in order, with the configured inclusion."""

    def __init__(self, levels: Iterable[TlbLevel], inclusion: str = "non-inclusive") -> None:
        self.levels = list(levels)
        self.inclusion = inclusion
        self.data_path = [i for i, lv in enumerate(self.levels) if lv.data]
        self.instruction_path = [i for i, lv in enumerate(self.levels) if lv.instruction]

    def path(self, op: int) -> list[int]:
        return self.instruction_path if op == IFETCH else self.data_path

    def fill_from_walk(self, path: list[int], vm: int, asid: int, va: int, translation: Any) -> None:
        tag = tag_of(vm, asid, va, translation.size)
        for i in path:
            if self.levels[i].holds(translation):
                self._insert(path, i, tag, translation)
                if self.inclusion == "exclusive":
                    return

    def fill_from_hit(self, path: list[int], depth: int, tag: tuple, translation: Any) -> None:
        """Level ``path[depth]`` hit: refill the levels before it (or move, if exclusive)."""
        if self.inclusion == "exclusive":
            first = next(j for j in path if self.levels[j].holds(translation))
            if first != path[depth]:
                self.levels[path[depth]].remove(tag)
                self._insert(path, first, tag, translation)
            return
        for i in path[:depth]:
            if self.levels[i].holds(translation):
                self._insert(path, i, tag, translation)

    def _insert(self, path: list[int], i: int, tag: tuple, translation: Any) -> None:
        evicted = self.levels[i].fill(tag, translation)
        if evicted is None or self.inclusion == "non-inclusive":
            return
        old_tag, old_translation = evicted
        if self.inclusion == "inclusive":
            for j in path:
                if j == i:
                    break
                self.levels[j].remove(old_tag)
            return
        # exclusive: the victim moves down to the next level of the path that holds its size
        for j in path[path.index(i) + 1:]:
            if self.levels[j].holds(old_translation):
                self._insert(path, j, old_tag, old_translation)
                return

    def invalidate(self, scope: str, vm: int = 0, asid: int = 0, va: int = 0) -> None:
        """Carry out a :class:`slatframe.translation.Invalidation`."""
        if scope == "page":
            for level in self.levels:
                level.invalidate_page(vm, asid, va)
            return
        if scope == "all":
            select = lambda context: True  # noqa: E731
        elif scope == "vm":
            select = lambda context: context[0] == vm  # noqa: E731
        elif scope == "asid":
            select = lambda context: context == (vm, asid)  # noqa: E731
        else:
            raise ValueError(f"unknown invalidation scope {scope!r}")
        for level in self.levels:
            level.array.remove_groups(select)
