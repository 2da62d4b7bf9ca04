"""The three builtin walk-cache kinds written again from scratch as an outside plugin file,
one per point of the walk-cache contract, to show the contract expresses them and to give
the builtins an independent route: ``outside-psc`` (start point), ``outside-pwc`` (entry
point) and ``outside-ntlb`` (host point), each with kernels (``outside-ntlb-uncompiled``
has none). Each is least recently used over ``sets`` x ``ways``, on OrderedDicts in the
reference objects and on a plain array in the kernels, not on slatframe.setassoc, and
takes the options of the builtin it copies (its keys and its invalidation rules are those
in slatframe/walkcache.py's docstrings)."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
from numba import njit

from slatframe import hookimpl
from slatframe.engine.walklib import F_ESHIFT, F_SHIFT
from slatframe.records import EntryCacheKernels, HostCacheKernels, StartCacheKernels, WalkCacheRecord
from slatframe.walkcache import DIMENSIONS, GUEST
from slatframe_plugins.walk_caches import _CHAMPSIM_PSC_WAYS, NestedTlbOptions, PscOptions, PwcOptions


class Lru:
    """``sets`` OrderedDicts of at most ``ways`` keys each, oldest first."""

    def __init__(self, name: str, sets: int, ways: int) -> None:
        self.name = name
        self.hits, self.misses = f"walk_cache.{name}.hits", f"walk_cache.{name}.misses"
        self.ways = ways
        self.rows: list[OrderedDict] = [OrderedDict() for _ in range(sets)]

    def get(self, key: tuple, index: int):
        row = self.rows[index % len(self.rows)]
        if key in row:
            row.move_to_end(key)
            return row[key]
        return None

    def put(self, key: tuple, index: int, value) -> None:
        row = self.rows[index % len(self.rows)]
        if key not in row and len(row) == self.ways:
            row.popitem(last=False)
        row[key] = value
        row.move_to_end(key)

    def drop(self, scope: str, vm: int, asid: int, any_asid: bool = False) -> None:
        for row in self.rows:
            for key in [k for k in row if scope == "all" or k[1] == vm and (
                    scope == "vm" or k[0] == GUEST and (any_asid or k[2] == asid))]:
                del row[key]


class OutsidePsc(Lru):
    point = "start"

    def __init__(self, o: PscOptions, ctx) -> None:
        super().__init__(o.cache_name(), o.sets, o.ways or _CHAMPSIM_PSC_WAYS[o.level])
        self.dimensions = frozenset(DIMENSIONS[o.dimension])
        self.level, self.resumes_at = o.level, o.level - 1

    def probe(self, dim, fmt, vm, asid, address):
        prefix = address >> fmt.shift(self.level)
        table = self.get((dim, vm, asid, prefix), prefix)
        return None if table is None else (self.level - 1, table)

    def learn(self, dim, fmt, vm, asid, address, level, table):
        if level == self.level:
            prefix = address >> fmt.shift(level)
            self.put((dim, vm, asid, prefix), prefix, table)

    def invalidate(self, scope, vm, asid):
        self.drop(scope, vm, asid)


class OutsidePwc(Lru):
    point = "entry"

    def __init__(self, o: PwcOptions, ctx) -> None:
        super().__init__(o.name, o.sets, o.ways)
        self.dimensions, self.levels = frozenset(DIMENSIONS[o.dimension]), frozenset(o.levels)

    def covers(self, dim, level=0):
        return dim in self.dimensions and (not level or level in self.levels)

    def probe(self, dim, fmt, vm, asid, level, pa):
        return self.get((dim, vm, asid, pa // fmt.entry_bytes), pa // fmt.entry_bytes)

    def fill(self, dim, fmt, vm, asid, level, pa, entry):
        self.put((dim, vm, asid, pa // fmt.entry_bytes), pa // fmt.entry_bytes, entry)

    def invalidate(self, scope, vm, asid):
        self.drop(scope, vm, asid, any_asid=True)  # physically tagged: every asid of the VM


class OutsideNestedTlb(Lru):
    point = "host"

    def __init__(self, o: NestedTlbOptions, ctx) -> None:
        super().__init__(o.name, o.sets, o.ways)
        self.tables_only = o.covers == "tables"

    def serves(self, table_access):
        return table_access or not self.tables_only

    def probe(self, vm, gpa, write, need_dirty):
        found = self.get((1, vm, 0, gpa >> 12), gpa >> 12)
        if found is None or (write and not found[1]) or (need_dirty and not found[2]):
            return None
        return found

    def fill(self, vm, gpa, table_access, value):
        self.put((1, vm, 0, gpa >> 12), gpa >> 12, value)

    def invalidate(self, scope, vm, asid):
        if scope in ("vm", "all"):
            self.drop(scope, vm, asid)


# -- kernels: one least-recently-used array per cache, its state row 0 (sets, ways, clock,
# the PSC's level) and row 1 + s * ways + w a line (valid, key 0-3, value, last use); keys
# as the reference objects': (dim, vm, asid, prefix / entry slot), or (1, vm, 0, gPA page).
VALID, KEY, VALUE, USED = 0, 1, 5, 6


def init(cache: Lru) -> np.ndarray:
    state = np.zeros((1 + len(cache.rows) * cache.ways, 7), dtype=np.int64)
    state[0, :4] = (len(cache.rows), cache.ways, 0, getattr(cache, "level", 0))
    return state


@njit(_nrt=False)
def find(state, j, k0, k1, k2, k3, index):
    """The line holding the key, or minus (the set's first line + 1)."""
    ways = state[j, 0, 1]
    first = 1 + (index % state[j, 0, 0]) * ways
    for e in range(first, first + ways):
        if state[j, e, VALID] and state[j, e, KEY] == k0 and state[j, e, KEY + 1] == k1 and \
                state[j, e, KEY + 2] == k2 and state[j, e, KEY + 3] == k3:
            return e
    return -first - 1


@njit(_nrt=False)
def touch(state, j, e):
    state[j, 0, 2] += 1
    state[j, e, USED] = state[j, 0, 2]


@njit(_nrt=False)
def get(state, j, k0, k1, k2, k3, index):
    """The line holding the key, marked used, or -1."""
    e = find(state, j, k0, k1, k2, k3, index)
    if e < 0:
        return -1
    touch(state, j, e)
    return e


@njit(_nrt=False)
def put(state, j, k0, k1, k2, k3, index, value):
    e = find(state, j, k0, k1, k2, k3, index)
    if e < 0:
        first = -e - 1
        e = -1
        for line in range(first, first + state[j, 0, 1]):  # an invalid line, else the oldest
            if not state[j, line, VALID]:
                e = line
                break
        if e < 0:
            e = first
            for line in range(first + 1, first + state[j, 0, 1]):
                if state[j, line, USED] < state[j, e, USED]:
                    e = line
        state[j, e, VALID] = 1
        state[j, e, KEY], state[j, e, KEY + 1], state[j, e, KEY + 2], state[j, e, KEY + 3] = k0, k1, k2, k3
    state[j, e, VALUE] = value
    touch(state, j, e)


@njit(_nrt=False)
def drop(state, j, scope, vm, asid, any_asid):
    """Lru.drop: scope 0 page / 1 asid (the VM's guest lines of ``asid``, or of any asid),
    2 the VM's lines, 3 all."""
    for e in range(1, 1 + state[j, 0, 0] * state[j, 0, 1]):
        if state[j, e, VALID] and (scope == 3 or state[j, e, KEY + 1] == vm and (
                scope == 2 or state[j, e, KEY] == GUEST and (any_asid or state[j, e, KEY + 2] == asid))):
            state[j, e, VALID] = 0


@njit(_nrt=False)
def psc_probe(state, j, dim, vm, asid, address, fmts):
    level = state[j, 0, 3]
    prefix = address >> fmts[dim, F_SHIFT + level]
    e = get(state, j, dim, vm, asid, prefix, prefix)
    return -1 if e < 0 else state[j, e, VALUE] | (level - 1)


@njit(_nrt=False)
def psc_learn(state, j, dim, vm, asid, address, level, table, fmts):
    if level == state[j, 0, 3]:
        prefix = address >> fmts[dim, F_SHIFT + level]
        put(state, j, dim, vm, asid, prefix, prefix, table)


@njit(_nrt=False)
def psc_invalidate(state, j, scope, vm, asid):
    drop(state, j, scope, vm, asid, False)


@njit(_nrt=False)
def pwc_probe(state, j, dim, vm, asid, level, pa, fmts):
    slot = pa >> fmts[dim, F_ESHIFT]
    e = get(state, j, dim, vm, asid, slot, slot)
    return -1 if e < 0 else state[j, e, VALUE]


@njit(_nrt=False)
def pwc_fill(state, j, dim, vm, asid, level, pa, entry, fmts):
    slot = pa >> fmts[dim, F_ESHIFT]
    put(state, j, dim, vm, asid, slot, slot, entry)


@njit(_nrt=False)
def pwc_invalidate(state, j, scope, vm, asid):
    drop(state, j, scope, vm, asid, True)


@njit(_nrt=False)
def ntlb_probe(state, j, vm, gpa, write, need_dirty):
    e = get(state, j, 1, vm, 0, gpa >> 12, gpa >> 12)
    if e < 0:
        return -1
    value = state[j, e, VALUE]
    if (write and not (value >> 6) & 1) or (need_dirty and not (value >> 7) & 1):
        return -1
    return value


@njit(_nrt=False)
def ntlb_fill(state, j, vm, gpa, table_access, value):
    put(state, j, 1, vm, 0, gpa >> 12, gpa >> 12, value)


@njit(_nrt=False)
def ntlb_invalidate(state, j, scope, vm, asid):
    if scope >= 2:
        drop(state, j, scope, vm, asid, False)


NTLB_KERNELS = HostCacheKernels(init=init, probe=ntlb_probe, fill=ntlb_fill, invalidate=ntlb_invalidate)


@hookimpl
def slatframe_walk_caches():
    return [
        WalkCacheRecord(name="outside-psc", summary="psc, written outside the core", factory=OutsidePsc,
                        options=PscOptions, kernels=StartCacheKernels(
                            init=init, probe=psc_probe, learn=psc_learn, invalidate=psc_invalidate)),
        WalkCacheRecord(name="outside-pwc", summary="pwc, written outside the core", factory=OutsidePwc,
                        options=PwcOptions, kernels=EntryCacheKernels(
                            init=init, probe=pwc_probe, fill=pwc_fill, invalidate=pwc_invalidate)),
        WalkCacheRecord(name="outside-ntlb", summary="nested-tlb, written outside the core",
                        factory=OutsideNestedTlb, options=NestedTlbOptions, kernels=NTLB_KERNELS),
        WalkCacheRecord(name="outside-ntlb-uncompiled", summary="outside-ntlb without its kernels",
                        factory=OutsideNestedTlb, options=NestedTlbOptions),
    ]
