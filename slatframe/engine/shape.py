"""The TLB hierarchy's shape, which a shaped engine module compiles in, and the whole TLB
config, which an exact module compiles in.

The generic loop reads, for every access, which levels it looks up (``paths``) and which
page sizes each level holds (``tcfg``). A shaped module has them as constants
(``SHAPE_*`` in ``loop.py``): its lookups unroll and their offsets and shifts fold, which
runs hit-heavy traces 1.35 to 1.7x faster (docs/performance.md, session 14). Only the
shape is compiled in: a sweep over sets, ways, latencies or policies reuses one shaped
module. An exact module (``experiment.loop = "exact"``) also has each level's sets, ways
and policy as constants, so its set index is a mask or a constant modulo and its policy
calls are direct: faster again on hit-heavy traces (docs/performance.md, session 16), at
the price of a module per TLB config. Each module is compiled once (about half a minute)
and then loaded from numba's cache.
"""
from __future__ import annotations

from typing import Any, Mapping

import attrs

from ..setassoc import set_mask

#: page sizes a TLB level holds, at most (the columns of the engine's TLB config rows)
MAX_SHIFTS = 4

#: what an engine reason calls the two compiled-in loops
SHAPED_LOOP = "the loop compiled for the TLB's shape"
EXACT_LOOP = "the loop compiled for this TLB config"

#: loop.py's geometry lines when sets, ways and policies are run-time values
GENERIC_GEOMETRY = ["SHAPE_EXACT = 0", "SHAPE_SETS = (0,)", "SHAPE_MASKS = (0,)", "SHAPE_WAYS = (0,)",
                    "SHAPE_PIDS = (0,)"]


@attrs.frozen
class Shape:
    """Levels in lookup order (every access looks up all of them), each one's page-size
    shifts in ascending order; for an exact module also each level's sets, ways and TLB
    policy name (empty tuples: a shaped module, whose geometry and policies are run-time
    values)."""

    shifts: tuple[tuple[int, ...], ...]
    sets: tuple[int, ...] = ()
    ways: tuple[int, ...] = ()
    policies: tuple[str, ...] = ()

    @property
    def exact(self) -> bool:
        """Whether the whole TLB config is compiled in, not only its shape."""
        return bool(self.sets)

    def constants(self, policy_ids: Mapping[str, int] | None = None) -> list[str]:
        """The ``SHAPE_*`` lines of ``loop.py`` for this shape; an exact shape's policies as
        their dispatch numbers in ``policy_ids`` (the engine's numbering for the registry)."""
        padded = [tuple(s) + (0,) * (MAX_SHIFTS - len(s)) for s in self.shifts]
        lines = [f"SHAPE_LEVELS = {len(self.shifts)}",
                 f"SHAPE_NSHIFTS = ({''.join(f'{len(s)}, ' for s in self.shifts)})",
                 f"SHAPE_SHIFTS = ({''.join(f'{p!r}, ' for p in padded)})"]
        if not self.exact:
            return lines + GENERIC_GEOMETRY
        if policy_ids is None:
            raise ValueError("an exact shape's constants need the registry's policy numbers")

        def row(values) -> str:
            return f"({''.join(f'{v}, ' for v in values)})"

        return lines + ["SHAPE_EXACT = 1", f"SHAPE_SETS = {row(self.sets)}",
                        f"SHAPE_MASKS = {row(set_mask(s) for s in self.sets)}", f"SHAPE_WAYS = {row(self.ways)}",
                        f"SHAPE_PIDS = {row(policy_ids[p] for p in self.policies)}"]

    def loop_name(self) -> str:
        """What a result's engine reason and the build command call this shape's loop."""
        return f"{EXACT_LOOP if self.exact else SHAPED_LOOP}, {self.describe()}"

    def describe(self) -> str:
        """For a result's engine reason: '2 levels (4K | 4K, 2M)', or for an exact shape
        '2 levels (16x4 lru, 4K | 128x12 lru, 4K, 2M)' (sets x ways, policy, page sizes)."""
        names = {12: "4K", 21: "2M", 30: "1G"}
        sizes = [", ".join(names.get(s, f"2^{s}") for s in level) for level in self.shifts]
        if self.exact:
            sizes = [f"{sets}x{ways} {policy}, {size}"
                     for sets, ways, policy, size in zip(self.sets, self.ways, self.policies, sizes)]
        return f"{len(self.shifts)} level{'s' if len(self.shifts) != 1 else ''} ({' | '.join(sizes)})"


def shape_of(config: Any, exact: bool = False) -> tuple[Shape | None, str]:
    """The shape of ``config``'s TLB hierarchy (with ``exact``, also each level's sets, ways
    and policy), or None and why a shaped loop cannot run it (a level serving only
    instruction fetches or only data accesses: the two kinds of access would look up
    different levels)."""
    split = config.tlb.split_level()
    if split is not None:
        return None, (f"TLB level {split[1].name!r} serves {split[1].side} accesses only, and a loop compiled "
                      "for the TLB needs every level to serve both")
    levels = config.tlb.levels
    shifts = tuple(tuple(sorted(size.bit_length() - 1 for size in lv.page_sizes)) for lv in levels)
    if not exact:
        return Shape(shifts), ""
    return Shape(shifts, tuple(lv.sets for lv in levels), tuple(lv.ways for lv in levels),
                 tuple(lv.policy.name for lv in levels)), ""
