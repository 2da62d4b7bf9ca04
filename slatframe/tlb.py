"""Set-associative TLB arrays (reference tier) and the hierarchy that looks them up in order.

A level holds entries of the page sizes it is configured with. For a page size ``s``
the set index is the virtual page number ``va >> log2(s)`` modulo ``sets``; the tag is
(vm, asid, page size, virtual page number). Invalid ways are filled first; when the set
is full the policy's ``victim`` chooses. The policy is told of every hit and fill.
"""
from __future__ import annotations

from typing import Any, Iterable

from .config import TlbLevelConfig


class TlbLevel:
    """One TLB array with its replacement policy."""

    def __init__(self, config: TlbLevelConfig, policy: Any) -> None:
        self.config = config
        self.name = config.name
        self.sets = config.sets
        self.ways = config.ways
        self.policy = policy
        self.shifts = tuple(size.bit_length() - 1 for size in sorted(config.page_sizes))
        self.sizes = frozenset(config.page_sizes)
        # tags[set][way] is None or (vm, asid, shift, vpn); where maps a tag to its way
        self.tags: list[list[Any]] = [[None] * self.ways for _ in range(self.sets)]
        self.data: list[list[Any]] = [[None] * self.ways for _ in range(self.sets)]
        self.where: dict[tuple, int] = {}

    def lookup(self, vm: int, asid: int, va: int) -> Any:
        """The cached translation of ``va`` or None; a hit updates the policy."""
        for shift in self.shifts:
            vpn = va >> shift
            way = self.where.get((vm, asid, shift, vpn))
            if way is not None:
                s = vpn % self.sets
                self.policy.hit(s, way)
                return self.data[s][way]
        return None

    def fill(self, vm: int, asid: int, va: int, translation: Any) -> None:
        """Insert ``translation`` (a :class:`slatframe.machine.Translation`) if this level
        holds its page size."""
        if translation.size not in self.sizes:
            return
        shift = translation.size.bit_length() - 1
        vpn = va >> shift
        s = vpn % self.sets
        tag = (vm, asid, shift, vpn)
        row = self.tags[s]
        way = self.where.get(tag)
        if way is None:
            try:
                way = row.index(None)
            except ValueError:
                way = self.policy.victim(s)
                del self.where[row[way]]
            row[way] = tag
            self.where[tag] = way
        self.data[s][way] = translation
        self.policy.fill(s, way)

    def invalidate_page(self, vm: int, asid: int, va: int) -> int:
        """Drop the entries of every page size that map ``va`` (INVLPG)."""
        dropped = 0
        for shift in self.shifts:
            vpn = va >> shift
            way = self.where.pop((vm, asid, shift, vpn), None)
            if way is not None:
                s = vpn % self.sets
                self.tags[s][way] = None
                self.data[s][way] = None
                dropped += 1
        return dropped

    def invalidate(self, keep_if) -> int:
        """Drop every entry whose tag fails ``keep_if(tag)``; returns how many."""
        dropped = 0
        for s, row in enumerate(self.tags):
            for w, tag in enumerate(row):
                if tag is not None and not keep_if(tag):
                    del self.where[tag]
                    row[w] = None
                    self.data[s][w] = None
                    dropped += 1
        return dropped


class TlbHierarchy:
    """Levels looked up in order; a hit in level i refills the levels above it, a miss
    in every level is a walk whose result fills every level that holds its size."""

    def __init__(self, levels: Iterable[TlbLevel]) -> None:
        self.levels = list(levels)

    def invalidate(self, scope: str, vm: int = 0, asid: int = 0, va: int = 0) -> None:
        """Carry out a :class:`slatframe.machine.Invalidation`."""
        if scope == "all":
            keep = lambda tag: False  # noqa: E731
        elif scope == "vm":
            keep = lambda tag: tag[0] != vm  # noqa: E731
        elif scope == "asid":
            keep = lambda tag: (tag[0], tag[1]) != (vm, asid)  # noqa: E731
        elif scope == "page":
            for level in self.levels:
                level.invalidate_page(vm, asid, va)
            return
        else:
            raise ValueError(f"unknown invalidation scope {scope!r}")
        for level in self.levels:
            level.invalidate(keep)
