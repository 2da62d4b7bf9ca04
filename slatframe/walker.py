"""The hardware page walker (reference tier): 1D over one dimension of radix tables, or
2D with a second dimension, consulting walk caches, setting accessed/dirty flags.

A walk either returns a :class:`Translation` or stops at a :class:`Fault` (the
references it made are counted as an aborted walk); the engine then asks the SLAT
scheme's software (guest kernel, hypervisor) to handle the fault and walks again.
"""
from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from .counters import Counters
from .datacache import WALK as WALK_REF
from .errors import ConfigError, PluginError, SimulationError
from .paging import PAGE_SHIFT, PageTableFormat
from .trace import WRITE
from .translation import Translation
from .walkcache import GUEST, HOST, START, START_MEMBERS, EntryCache, PrefixCache, TranslationCache

# fault kinds
NO_ROOT = 1  #: the address space has no root table yet
GUEST_NOT_PRESENT = 2
GUEST_PROTECTION = 3  #: a write met a read-only guest (or 1D) leaf
HOST_NOT_PRESENT = 4
HOST_PROTECTION = 5


FAULT_LIMIT = 1000  #: faults in a row one access may take before the run stops (a scheme making no progress)


@attrs.frozen
class Fault:
    """Why a walk stopped; ``address`` is the gVA (guest kinds) or the gPA (host kinds)."""

    kind: int
    address: int


def stuck(vm: int, asid: int, va: int, fault: Fault, scheme: str) -> SimulationError:
    """The error of an access whose walk faulted more than :data:`FAULT_LIMIT` times in a row."""
    return SimulationError(
        f"the access to {va:#x} (vm {vm}, asid {asid}) faulted more than {FAULT_LIMIT} times in a row, the last a "
        f"fault of "
        f"kind {fault.kind} at {fault.address:#x}: SLAT scheme {scheme!r} handles it without the walk getting "
        "past it (its fault handler does not install what the walk reads).")


class RootTable:
    """Root table address of each (vm, asid); -1 where none exists yet. A numpy array so
    the compiled tier reads the same roots the software layer writes."""

    def __init__(self, n_vms: int) -> None:
        self.array = np.full((n_vms, 16), -1, dtype=np.int64)

    def get(self, vm: int, asid: int) -> int:
        return int(self.array[vm, asid]) if asid < self.array.shape[1] else -1

    def set(self, vm: int, asid: int, root: int) -> None:
        if asid >= self.array.shape[1]:
            grown = np.full((self.array.shape[0], max(asid + 1, 2 * self.array.shape[1])), -1, dtype=np.int64)
            grown[:, : self.array.shape[1]] = self.array
            self.array = grown
        self.array[vm, asid] = root


@attrs.define
class HardwareView:
    """What a SLAT scheme exposes to the hardware walker.

    ``guest_roots`` are the roots of the first dimension (a guest's tables, or a
    hypervisor's shadow tables); with a ``host_format`` the walk is 2D and
    ``host_roots[vm]`` is the root of VM ``vm``'s second-level tables. ``walk`` names the
    walk plugin (``slatframe_walks``) the hardware runs over this view; a scheme with a
    walk of its own names it here and may subclass this view to expose what it walks.
    """

    guest_format: PageTableFormat
    guest_roots: RootTable
    host_format: PageTableFormat | None = None
    host_roots: Any = None
    host_ad: bool = False
    table_access_dirties: bool = False
    walk: str = "radix"


@attrs.frozen
class WalkContext:
    """What a walk plugin's factory receives: the scheme's hardware view, host memory,
    the counters, the run's walk caches and the data caches walk references go through
    (None when the cost model asks for none)."""

    hw: HardwareView
    memory: Any
    counters: Counters
    walk_caches: tuple[Any, ...] = ()
    data_caches: Any = None


#: The walk-cache kinds :class:`Walker` consults.
RADIX_CACHE_KINDS = (PrefixCache, EntryCache, TranslationCache)


class Walker:
    """The radix walk (1D, or 2D with a host format) for one machine: hardware view,
    memory, counters and walk caches."""

    def __init__(self, hw: HardwareView, memory: Any, counters: Counters, caches: list[Any],
                 data_caches: Any = None) -> None:
        for cache in caches:
            if not isinstance(cache, RADIX_CACHE_KINDS) and getattr(cache, "point", None) != START:
                raise ConfigError(
                    f"walk cache {getattr(cache, 'name', '?')!r} is a {type(cache).__name__}, which the "
                    f"{hw.walk!r} walk cannot consult: it consults the kinds of slatframe.walkcache "
                    "(PrefixCache, EntryCache, TranslationCache and their subclasses) and caches whose "
                    f"point is {START!r} (slatframe.walkcache.StartCache); a cache of another kind needs a "
                    "walk plugin that uses it.")
            missing = [] if isinstance(cache, RADIX_CACHE_KINDS) else \
                [m for m in START_MEMBERS if not hasattr(cache, m)]
            if missing:
                raise ConfigError(
                    f"walk cache {getattr(cache, 'name', '?')!r} is a start cache ({type(cache).__name__}) without "
                    f"{', '.join(missing)}; slatframe.walkcache.StartCache lists what one has.")
        self.hw = hw
        self.data_caches = data_caches  # slatframe.datacache.DataCaches: where each reference is served
        self.memory = memory
        self.counters = counters
        self.prefix = {d: [c for c in caches if isinstance(c, PrefixCache) and c.covers(d)] for d in (GUEST, HOST)}
        self.entry = {d: [c for c in caches if isinstance(c, EntryCache) and c.covers(d)] for d in (GUEST, HOST)}
        self.ntlb = [c for c in caches if isinstance(c, TranslationCache)]
        self.start = {d: [c for c in caches if not isinstance(c, RADIX_CACHE_KINDS) and d in c.dimensions]
                      for d in (GUEST, HOST)}
        self.formats = {GUEST: hw.guest_format, HOST: hw.host_format}
        for dim, fmt in ((GUEST, hw.guest_format), (HOST, hw.host_format)):
            if self.prefix[dim] and fmt is not None and _own_geometry(fmt):
                raise ConfigError(
                    f"walk cache {self.prefix[dim][0].name!r} keys entries by the prefixes of "
                    f"PageTableFormat's geometry (its index_bits), but page-table format {fmt.name!r} "
                    "defines its own index, prefix, shift or page_size, so its prefixes would be wrong.")
        self.refs = [0, 0, 0]  #: the current walk's references: guest (or 1D), host, A/D writes

    # -- one dimension -------------------------------------------------------------
    def _skip(self, dim: int, fmt: PageTableFormat, vm: int, asid: int, address: int) -> tuple[int, int] | None:
        """Deepest prefix-cache hit: (level to read next, table address). Caches are
        probed from the lowest covered level up; each probe counts a hit or a miss."""
        values = self.counters.values
        for cache in sorted(self.prefix[dim], key=lambda c: min(c.levels)):
            for level in sorted(cache.levels):
                if level > fmt.levels:
                    continue
                table = cache.lookup(dim, vm, asid, level, fmt.prefix(address, level))
                if table is not None:
                    values[cache.hits] += 1
                    return level - 1, table
                values[cache.misses] += 1
        for cache in self.start[dim]:  # then start caches of other kinds, in config order
            found = cache.probe(dim, fmt, vm, asid, address)
            if found is not None:
                if not (isinstance(found, tuple) and len(found) == 2 and isinstance(found[0], int)
                        and 1 <= found[0] < fmt.levels and isinstance(found[1], int) and found[1] >= 0):
                    raise PluginError(f"walk cache {cache.name!r}: its probe returned {found!r}; a start cache "
                                      f"returns None or (level to read next, 1 to {fmt.levels - 1}, table address).")
                values[cache.hits] += 1
                return found
            values[cache.misses] += 1
        return None

    def read_entry(self, dim: int, vm: int, asid: int, level: int, pa: int,
                   fmt: PageTableFormat | None = None) -> tuple[int, bool]:
        """(entry, came from an entry cache) for the entry of format ``fmt`` (default:
        the dimension's format) at ``pa``."""
        fmt = fmt or self.formats[dim]
        values = self.counters.values
        for cache in self.entry[dim]:
            if level in cache.levels:
                entry = cache.lookup(dim, vm, asid, pa // fmt.entry_bytes)
                if entry is not None:
                    values[cache.hits] += 1
                    return entry, True
                values[cache.misses] += 1
        self.refs[dim] += 1
        if self.data_caches is not None:
            self.data_caches.access(pa, WALK_REF)
        return fmt.load(self.memory, pa), False

    def _fill_entry(self, dim: int, fmt: PageTableFormat, vm: int, asid: int, level: int, pa: int,
                    entry: int) -> None:
        for cache in self.entry[dim]:
            if level in cache.levels:
                cache.fill(dim, vm, asid, pa // fmt.entry_bytes, entry)

    def walk_dimension(self, dim: int, fmt: PageTableFormat, vm: int, asid: int, root: int, address: int,
                       accessed: bool, dirty: bool, write: bool, resolve, top: int | None = None
                       ) -> tuple[int, int] | Fault:
        """Walk one dimension: (leaf entry, level) or a Fault. ``resolve(entry_address)``
        turns an entry address into the physical address read (a 2D walk passes its host
        translation; it returns a Fault to abort). ``top`` starts the walk at that level's
        table ``root`` instead of the format's root (prefix caches are then not probed)."""
        level, table = fmt.levels if top is None else top, root
        table_is_physical = resolve is None
        hit = self._skip(dim, fmt, vm, asid, address) if top is None else None
        if hit is not None:
            level, table = hit
            table_is_physical = True
        pending = None  # (level, prefix-address) whose next table's physical address we learn next
        while True:
            addr = fmt.entry_address(table, address, level)
            if table_is_physical:
                pa = addr
            else:
                pa = resolve(addr)
                if isinstance(pa, Fault):
                    return pa
            if pending is not None:  # the table we just located: fill the prefix caches
                for cache in self.prefix[dim]:
                    if pending in cache.levels:
                        cache.fill(dim, vm, asid, pending, fmt.prefix(address, pending),
                                   pa & ~((1 << PAGE_SHIFT) - 1))  # a table below the root is one page
                for cache in self.start[dim]:
                    cache.learn(dim, fmt, vm, asid, address, pending, pa & ~((1 << PAGE_SHIFT) - 1))
            entry, cached = self.read_entry(dim, vm, asid, level, pa, fmt)
            if not fmt.is_present(entry):
                return Fault(GUEST_NOT_PRESENT if dim == GUEST else HOST_NOT_PRESENT, address)
            leaf = fmt.is_leaf(entry, level)
            if accessed:
                set_dirty = leaf and dirty and fmt.is_writable(entry)
                updated = entry | fmt.accessed_flag | (fmt.dirty_flag if set_dirty else 0)
                if updated != entry:
                    fmt.store(self.memory, pa, updated)
                    self.refs[2] += 1
                    entry = updated
            if leaf:
                if write and not fmt.is_writable(entry):
                    return Fault(GUEST_PROTECTION if dim == GUEST else HOST_PROTECTION, address)
                return entry, level
            if not cached:
                self._fill_entry(dim, fmt, vm, asid, level, pa, entry)
            pending = level
            table = fmt.frame(entry, level)
            table_is_physical = resolve is None
            level -= 1

    # -- the host dimension of a 2D walk ------------------------------------------------
    def host_translation(self, vm: int, gpa: int, write: bool, table_access: bool) -> tuple[int, int, bool, bool] | Fault:
        """gPA -> (hPA, host page size, writable, dirty), through the nested TLB if any."""
        hw = self.hw
        need_dirty = hw.host_ad and (write or (table_access and hw.table_access_dirties))
        values = self.counters.values
        for cache in self.ntlb:
            if cache.tables_only and not table_access:
                continue
            found = cache.lookup(vm, gpa)
            if found is not None and (not write or found[1]) and (not need_dirty or found[2]):
                values[cache.hits] += 1
                return found[0] | (gpa & ((1 << PAGE_SHIFT) - 1)), found[3], found[1], found[2]
            values[cache.misses] += 1
        fmt = hw.host_format
        got = self.walk_dimension(HOST, fmt, vm, 0, int(hw.host_roots[vm]), gpa, hw.host_ad, need_dirty, write, None)
        if isinstance(got, Fault):
            return got
        entry, level = got
        size = fmt.page_size(level)
        hpa = fmt.frame(entry, level) | (gpa & (size - 1))
        writable, dirty = fmt.is_writable(entry), (not hw.host_ad) or fmt.is_dirty(entry)
        for cache in self.ntlb:
            if not cache.tables_only or table_access:
                cache.fill(vm, gpa, (hpa & ~((1 << PAGE_SHIFT) - 1), writable, dirty, size))
        return hpa, size, writable, dirty

    # -- a whole walk -----------------------------------------------------------------
    def walk(self, vm: int, asid: int, va: int, op: int) -> Translation | Fault:
        """One hardware walk for ``va``; counts it as done or aborted."""
        self.refs = [0, 0, 0]
        root = self.hw.guest_roots.get(vm, asid)
        if root < 0:
            return Fault(NO_ROOT, va)
        write = op == WRITE
        got = self.walk_dimension(GUEST, self.hw.guest_format, vm, asid, root, va, True, write, write,
                                  self.resolver(vm))
        return self.complete(vm, va, write, got)

    def resolver(self, vm: int):
        """The ``resolve`` of a guest dimension: each gPA of a table entry through the
        second level (None for a 1D walk)."""
        if self.hw.host_format is None:
            return None

        def resolve(gpa: int):
            got = self.host_translation(vm, gpa, False, True)
            return got if isinstance(got, Fault) else got[0]
        return resolve

    def complete(self, vm: int, va: int, write: bool, got: tuple[int, int] | Fault) -> Translation | Fault:
        """Finish a walk whose first dimension ended in ``got`` (the guest leaf entry and
        its level, or a Fault): translate the data's gPA through the second level, and
        count the walk as done or aborted with the references in :attr:`refs`."""
        hw, counters, refs = self.hw, self.counters, self.refs
        if isinstance(got, Fault):
            counters.walk_aborted(refs[0] + refs[1], refs[2])
            return got
        entry, level = got
        gfmt = hw.guest_format
        gsize = gfmt.page_size(level)
        address = gfmt.frame(entry, level) | (va & (gsize - 1))
        writable, dirty = gfmt.is_writable(entry), gfmt.is_dirty(entry)
        size = gsize
        if hw.host_format is not None:
            host = self.host_translation(vm, address, write, False)
            if isinstance(host, Fault):
                counters.walk_aborted(refs[0] + refs[1], refs[2])
                return host
            address, hsize, host_writable, host_dirty = host
            writable, dirty = writable and host_writable, dirty and host_dirty
            if hsize < gsize:
                counters.add("tlb.splintered_fills")
                size = hsize
        counters.walk_done(refs[0], refs[1], refs[2])
        return Translation(address & ~(size - 1), size, writable, dirty)


def _own_geometry(fmt: PageTableFormat) -> bool:
    """True when ``fmt``'s class replaces the core radix geometry."""
    return any(getattr(type(fmt), name) is not getattr(PageTableFormat, name)
               for name in ("index", "page_size", "prefix", "shift"))


def radix_walk(ctx: WalkContext) -> Walker:
    """Factory of the builtin ``radix`` walk plugin."""
    return Walker(ctx.hw, ctx.memory, ctx.counters, list(ctx.walk_caches), ctx.data_caches)
