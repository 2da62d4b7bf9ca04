"""The TLB hierarchy's shape, which a shaped engine module compiles in.

The generic loop reads, for every access, which levels it looks up (``paths``) and which
page sizes each level holds (``tcfg``). A shaped module has them as constants
(``SHAPE_*`` in ``loop.py``): its lookups unroll and their offsets and shifts fold, which
runs hit-heavy traces 1.35 to 1.7x faster (docs/performance.md, session 14). Each shape is
a module of its own, compiled once (one to four minutes) and then loaded from numba's
cache. Only the shape is compiled in: a sweep over sets, ways, latencies or policies
reuses one shaped module.
"""
from __future__ import annotations

from typing import Any

import attrs

#: page sizes a TLB level holds, at most (the columns of the engine's TLB config rows)
MAX_SHIFTS = 4


@attrs.frozen
class Shape:
    """Levels in lookup order (every access looks up all of them), each one's page-size
    shifts in ascending order."""

    shifts: tuple[tuple[int, ...], ...]

    def constants(self) -> list[str]:
        """The three ``SHAPE_*`` lines of ``loop.py``, for this shape."""
        padded = [tuple(s) + (0,) * (MAX_SHIFTS - len(s)) for s in self.shifts]
        return [f"SHAPE_LEVELS = {len(self.shifts)}",
                f"SHAPE_NSHIFTS = ({''.join(f'{len(s)}, ' for s in self.shifts)})",
                f"SHAPE_SHIFTS = ({''.join(f'{p!r}, ' for p in padded)})"]

    def describe(self) -> str:
        """For a result's engine reason: '2 levels (4K | 4K, 2M)'."""
        names = {12: "4K", 21: "2M", 30: "1G"}
        sizes = " | ".join(", ".join(names.get(s, f"2^{s}") for s in level) for level in self.shifts)
        return f"{len(self.shifts)} level{'s' if len(self.shifts) != 1 else ''} ({sizes})"


def shape_of(config: Any) -> tuple[Shape | None, str]:
    """The shape of ``config``'s TLB hierarchy, or None and why a shaped loop cannot run it
    (a level serving only instruction fetches or only data accesses: the two kinds of
    access would look up different levels)."""
    split = config.tlb.split_level()
    if split is not None:
        return None, (f"TLB level {split[1].name!r} serves {split[1].side} accesses only, and a shaped loop "
                      "needs every level to serve both")
    levels = config.tlb.levels
    return Shape(tuple(tuple(sorted(size.bit_length() - 1 for size in lv.page_sizes)) for lv in levels)), ""
