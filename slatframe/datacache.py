"""The data-cache hierarchy that page-walk references (and optionally data accesses) go
through, so a cost model can charge each reference what the level holding its line costs.

A cost model asks for one by returning a :class:`DataCacheSpec` from its record's
``data_caches(options)``. Levels are looked up in order (L1 first); a line found at level
k is served by k, a line found nowhere by memory. Every level that missed is filled
(non-inclusive, no back-invalidation) and evicts its least recently used line. Each
reference is counted in ``dcache.walk.<level>`` (a walk reference: an entry read that no
walk cache served, in completed and aborted walks alike) or ``dcache.data.<level>`` (the
access itself, when ``data_accesses``), with ``memory`` as the level after the last.
"""
from __future__ import annotations

import attrs
import numpy as np

from .setassoc import set_mask

LINE_SHIFT = 6  #: 64-byte lines
WALK, DATA = 0, 1
KIND_NAMES = ("walk", "data")


@attrs.frozen
class CacheLevelSpec:
    """One level: its name (in counter names), capacity in bytes and associativity. The
    size is a whole number (at least one) of sets of ``ways`` 64-byte lines: a size that is
    not is a ValueError, never rounded."""

    name: str
    size: int
    ways: int

    def __attrs_post_init__(self) -> None:
        line_set = self.ways << LINE_SHIFT if isinstance(self.ways, int) and self.ways > 0 else 0
        if not line_set or not isinstance(self.size, int) or self.size <= 0 or self.size % line_set:
            raise ValueError(f"data cache level {self.name!r}: size {self.size!r} with {self.ways!r} ways is not "
                             f"a whole number of sets of {self.ways!r} x {1 << LINE_SHIFT}-byte lines")

    @property
    def sets(self) -> int:
        return self.size // (self.ways << LINE_SHIFT)


@attrs.frozen
class DataCacheSpec:
    """The levels, first to last, and whether data accesses go through them too."""

    levels: tuple[CacheLevelSpec, ...]
    data_accesses: bool = True

    def counter_names(self) -> list[str]:
        """Counter names in the order the compiled tier lays them out: kind-major."""
        names = [lv.name for lv in self.levels] + ["memory"]
        return [f"dcache.{kind}.{name}" for kind in KIND_NAMES for name in names]


class DataCaches:
    """The reference tier's hierarchy: per level, per set, a list of lines (-1 empty) and
    a list of their last-use clocks."""

    def __init__(self, spec: DataCacheSpec, counters) -> None:
        self.spec = spec
        self.levels = spec.levels
        self.tags = [[[-1] * lv.ways for _ in range(lv.sets)] for lv in spec.levels]
        self.ages = [[[0] * lv.ways for _ in range(lv.sets)] for lv in spec.levels]
        self.clock = 0
        self.values = counters.values
        self.names = spec.counter_names()

    def access(self, pa: int, kind: int) -> int:
        """Look ``pa``'s line up; return the index of the level that served it
        (``len(levels)`` for memory) after counting it and filling the levels that missed."""
        line = pa >> LINE_SHIFT
        self.clock += 1
        served = len(self.levels)
        for k, lv in enumerate(self.levels):
            s = line % lv.sets
            tags = self.tags[k][s]
            for w in range(lv.ways):
                if tags[w] == line:
                    self.ages[k][s][w] = self.clock
                    served = k
                    break
            if served == k:
                break
        for k in range(served):
            s = line % self.levels[k].sets
            tags, ages = self.tags[k][s], self.ages[k][s]
            victim = tags.index(-1) if -1 in tags else ages.index(min(ages))
            tags[victim] = line
            ages[victim] = self.clock
        self.values[self.names[kind * (len(self.levels) + 1) + served]] += 1
        return served

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The compiled tier's state: ``dcfg[D, 3]`` (sets, ways, set mask or -1), ``dctl[4]`` (levels,
        data accesses?, first counter index (set by the engine), clock), ``dtag`` and
        ``dage[D, S, W]``."""
        D = max(1, len(self.levels))
        S = max([lv.sets for lv in self.levels] + [1])
        W = max([lv.ways for lv in self.levels] + [1])
        dcfg = np.ones((D, 3), dtype=np.int64)
        for k, lv in enumerate(self.levels):
            dcfg[k] = (lv.sets, lv.ways, set_mask(lv.sets))
        dctl = np.array([len(self.levels), 1 if self.spec.data_accesses else 0, 0, 0], dtype=np.int64)
        return dcfg, dctl, np.full((D, S, W), -1, dtype=np.int64), np.zeros((D, S, W), dtype=np.int64)


def no_data_caches() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The compiled tier's state when the run has no data-cache hierarchy."""
    return (np.ones((1, 3), dtype=np.int64), np.zeros(4, dtype=np.int64),
            np.full((1, 1, 1), -1, dtype=np.int64), np.zeros((1, 1, 1), dtype=np.int64))
