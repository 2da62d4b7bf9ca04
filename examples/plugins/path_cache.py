"""A translation-path cache as an outside plugin: walk-cache type ``tpc``, a kind of its own
that both engine tiers run.

Barr, Cox and Rixner ("Translation Caching: Skip, Don't Walk (the Page Table)", ISCA 2010)
compare paging-structure caches that hold one entry per table level (Intel's PSCs, the
builtin ``psc``) with a translation-path cache (TPC), whose every entry holds a whole
path: the table pointers of every level above the last for one 2M-aligned region
(``key`` = the address bits above level 1's index), tagged by context. A probe compares
the address with every entry at every level and skips to the deepest level any entry
matches: an entry for another 2M region of the same 1G region still skips the top two
levels. So one entry serves what takes three PSC entries, and partial matches come free.

Rules, identical in the reference object and the kernels:

- ``probe``: among valid entries of the walk's context (dimension, VM, asid), the deepest
  level L >= 2 at which an entry's key and the address agree on the bits above level L's
  index and the entry knows the table L's entry points at; ties go to the lowest entry.
  A hit marks the entry used (LRU) and remembers it as the last hit; the walk reads
  level L - 1 next. The walk counts one hit or one miss per probe
  (``walk_cache.<name>.hits``/``.misses``), and probes only when no ``psc`` hit.
- ``learn`` (the walk found the table that ``level``'s entry on the address's path points
  at): the entry of the address's context and key gets that table. If there is none, one
  is taken (the first invalid, else the least recently used) and starts with the tables
  of the last hit's entry for the levels above ``level`` that lie on this path (so a
  path learned below a partial hit is whole). Learning marks the entry used.
- ``invalidate``: a guest INVLPG or CR3 load drops the context's guest entries (as the
  builtin caches), a VM's second-level change drops the VM's, ``all`` everything; the
  last hit is forgotten.

Options: ``entries`` (fully associative, LRU), ``dimension`` (guest or host), ``name``.
"""
from __future__ import annotations

import attrs
import numpy as np
from numba import njit

from slatframe import hookimpl
from slatframe.engine.walklib import F_LEVELS, F_SHIFT
from slatframe.options import nonempty_name, option
from slatframe.records import StartCacheKernels, WalkCacheRecord
from slatframe.walkcache import DIMENSIONS, GUEST, START

# kernel state: row 0 is (entries, last hit entry or -1, clock); row e >= 1 an entry
VALID, DIM, VM, ASID, KEY, USED = 0, 1, 2, 3, 4, 5
TABLE = 5  #: column TABLE + level: the table that level's entry points at (-1: unknown), levels 2..6
COLUMNS = TABLE + 7
SCOPES = {"page": 0, "asid": 1, "vm": 2, "all": 3}


@attrs.frozen
class TpcOptions:
    name: str = option("tpc", "name used in metrics: walk_cache.<name>.hits / .misses", check=nonempty_name)
    entries: int = option(16, "paths held (fully associative, least recently used replaced)", min=1, max=4096)
    dimension: str = option("guest", "walk dimension: guest (or 1D) or host (second level)",
                            choices=("guest", "host"))


@attrs.define
class Path:
    ctx: tuple[int, int, int]
    key: int
    tables: dict[int, int]
    used: int = 0


class PathCache:
    """The reference tier's TPC (rules in the module docstring)."""

    point = START

    def __init__(self, name: str, dimensions: tuple[int, ...], entries: int) -> None:
        self.name = name
        self.hits, self.misses = f"walk_cache.{name}.hits", f"walk_cache.{name}.misses"
        self.dimensions = frozenset(dimensions)
        self.paths: list[Path | None] = [None] * entries
        self.clock = 0
        self.last_hit: int | None = None

    @staticmethod
    def _on_path(path: Path, fmt, address: int, level: int) -> bool:
        return path.key >> (fmt.shift(level) - fmt.shift(2)) == address >> fmt.shift(level)

    def probe(self, dim: int, fmt, vm: int, asid: int, address: int) -> tuple[int, int] | None:
        self.last_hit = None
        best: tuple[int, int] | None = None
        for i, path in enumerate(self.paths):
            if path is None or path.ctx != (dim, vm, asid):
                continue
            for level in range(2, fmt.levels + 1):  # deepest first
                if level in path.tables and self._on_path(path, fmt, address, level):
                    if best is None or level < best[0]:
                        best = (level, i)
                    break
        if best is None:
            return None
        level, i = best
        self.clock += 1
        self.paths[i].used = self.clock
        self.last_hit = i
        return level - 1, self.paths[i].tables[level]

    def learn(self, dim: int, fmt, vm: int, asid: int, address: int, level: int, table: int) -> None:
        ctx, key = (dim, vm, asid), address >> fmt.shift(2)
        found = next((i for i, p in enumerate(self.paths) if p is not None and p.ctx == ctx and p.key == key), None)
        if found is None:
            inherited: dict[int, int] = {}
            hit = self.paths[self.last_hit] if self.last_hit is not None else None
            if hit is not None and hit.ctx == ctx:
                inherited = {lv: t for lv, t in hit.tables.items()
                             if level < lv <= fmt.levels and self._on_path(hit, fmt, address, lv)}
            free = [i for i, p in enumerate(self.paths) if p is None]
            found = free[0] if free else min(range(len(self.paths)), key=lambda i: self.paths[i].used)
            self.paths[found] = Path(ctx, key, inherited)
        self.paths[found].tables[level] = table
        self.clock += 1
        self.paths[found].used = self.clock

    def invalidate(self, scope: str, vm: int, asid: int) -> None:
        for i, path in enumerate(self.paths):
            if path is None:
                continue
            d, v, a = path.ctx
            if scope == "all" or (scope == "vm" and v == vm) or (scope in ("page", "asid") and d == GUEST
                                                                 and v == vm and a == asid):
                self.paths[i] = None
        self.last_hit = None


# -- kernels ------------------------------------------------------------------------------------

def init(cache: PathCache) -> np.ndarray:
    state = np.zeros((len(cache.paths) + 1, COLUMNS), dtype=np.int64)
    state[0, :3] = (len(cache.paths), -1, 0)
    state[1:, TABLE + 1:] = -1
    return state


@njit(_nrt=False)
def on_path(state, j, e, fmts, dim, address, level):
    return (state[j, e, KEY] >> (fmts[dim, F_SHIFT + level] - fmts[dim, F_SHIFT + 2])) == \
        (address >> fmts[dim, F_SHIFT + level])


@njit(_nrt=False)
def mine(state, j, e, dim, vm, asid):
    return state[j, e, VALID] != 0 and state[j, e, DIM] == dim and state[j, e, VM] == vm and \
        state[j, e, ASID] == asid


@njit(_nrt=False)
def probe(state, j, dim, vm, asid, address, fmts):
    state[j, 0, 1] = -1
    best, best_level = -1, 99
    for e in range(1, state[j, 0, 0] + 1):
        if not mine(state, j, e, dim, vm, asid):
            continue
        for level in range(2, fmts[dim, F_LEVELS] + 1):
            if state[j, e, TABLE + level] >= 0 and on_path(state, j, e, fmts, dim, address, level):
                if level < best_level:
                    best, best_level = e, level
                break
    if best < 0:
        return -1
    state[j, 0, 2] += 1
    state[j, best, USED] = state[j, 0, 2]
    state[j, 0, 1] = best
    return state[j, best, TABLE + best_level] | (best_level - 1)


@njit(_nrt=False)
def learn(state, j, dim, vm, asid, address, level, table, fmts):
    entries = state[j, 0, 0]
    key = address >> fmts[dim, F_SHIFT + 2]
    found = -1
    for e in range(1, entries + 1):
        if mine(state, j, e, dim, vm, asid) and state[j, e, KEY] == key:
            found = e
            break
    if found < 0:
        hit = state[j, 0, 1]
        inherit = hit >= 0 and mine(state, j, hit, dim, vm, asid)
        found = -1
        for e in range(1, entries + 1):  # the first invalid entry, else the least recently used
            if state[j, e, VALID] == 0:
                found = e
                break
        if found < 0:
            found = 1
            for e in range(2, entries + 1):
                if state[j, e, USED] < state[j, found, USED]:
                    found = e
        for lv in range(1, 7):  # (reads the hit's cell before writing it, should they be one entry)
            keep = inherit and level < lv <= fmts[dim, F_LEVELS] and state[j, hit, TABLE + lv] >= 0 and \
                on_path(state, j, hit, fmts, dim, address, lv)
            state[j, found, TABLE + lv] = state[j, hit, TABLE + lv] if keep else -1
        state[j, found, VALID] = 1
        state[j, found, DIM] = dim
        state[j, found, VM] = vm
        state[j, found, ASID] = asid
        state[j, found, KEY] = key
    state[j, found, TABLE + level] = table
    state[j, 0, 2] += 1
    state[j, found, USED] = state[j, 0, 2]


@njit(_nrt=False)
def invalidate(state, j, scope, vm, asid):
    for e in range(1, state[j, 0, 0] + 1):
        if state[j, e, VALID] == 0:
            continue
        if scope == 3 or (scope == 2 and state[j, e, VM] == vm) or \
                (scope < 2 and state[j, e, DIM] == GUEST and state[j, e, VM] == vm and state[j, e, ASID] == asid):
            state[j, e, VALID] = 0
    state[j, 0, 1] = -1


def make_tpc(options: TpcOptions, ctx) -> PathCache:
    return PathCache(options.name, DIMENSIONS[options.dimension], options.entries)


@hookimpl
def slatframe_walk_caches():
    return [WalkCacheRecord(name="tpc", summary="translation-path cache (Barr et al., ISCA 2010): whole paths",
                            factory=make_tpc, options=TpcOptions,
                            kernels=StartCacheKernels(init=init, probe=probe, learn=learn, invalidate=invalidate))]
