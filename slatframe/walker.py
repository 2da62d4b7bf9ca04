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
from .walk_record import WalkRecorder
from .walkcache import ENTRY, GUEST, HOST, HOST_POINT, POINT_MEMBERS, POINTS, START, PrefixCache

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


class Walker:
    """The radix walk (1D, or 2D with a host format) for one machine: hardware view,
    memory, counters and walk caches, each consulted through its point's protocol
    (:mod:`slatframe.walkcache`)."""

    def __init__(self, hw: HardwareView, memory: Any, counters: Counters, caches: list[Any],
                 data_caches: Any = None) -> None:
        for cache in caches:
            check_walk_cache(cache, hw.walk)
        self.hw = hw
        self.data_caches = data_caches  # slatframe.datacache.DataCaches: where each reference is served
        self.memory = memory
        self.counters = counters
        at = {point: [c for c in caches if c.point == point] for point in POINTS}
        fixed = sorted((c for c in at[START] if getattr(c, "resumes_at", None) is not None),
                       key=lambda c: c.resumes_at)  # deepest first; stable, so config order within a level
        started = fixed + [c for c in at[START] if getattr(c, "resumes_at", None) is None]
        self.formats = {GUEST: hw.guest_format, HOST: hw.host_format}
        levels = {d: fmt.levels if fmt is not None else 0 for d, fmt in self.formats.items()}
        self.start = {d: [c for c in started if d in c.dimensions
                          and (getattr(c, "resumes_at", None) is None or c.resumes_at < levels[d])]
                      for d in (GUEST, HOST)}  # (a fixed level the format lacks is never probed)
        self.entry = {d: [c for c in at[ENTRY] if c.covers(d)] for d in (GUEST, HOST)}
        self.ntlb = at[HOST_POINT]
        for dim, fmt in ((GUEST, hw.guest_format), (HOST, hw.host_format)):
            prefix = [c for c in self.start[dim] if isinstance(c, PrefixCache)]
            if prefix and fmt is not None and _own_geometry(fmt):
                raise ConfigError(
                    f"walk cache {prefix[0].name!r} keys entries by the prefixes of "
                    f"PageTableFormat's geometry (its index_bits), but page-table format {fmt.name!r} "
                    "defines its own index, prefix, shift or page_size, so its prefixes would be wrong.")
        self.refs = [0, 0, 0]  #: the current walk's references: guest (or 1D), host, A/D writes
        self.caches = list(caches)
        self.recorder: WalkRecorder | None = None  #: set when a run observer records walks

    # -- one dimension -------------------------------------------------------------
    def _skip(self, dim: int, fmt: PageTableFormat, vm: int, asid: int, address: int) -> tuple[int, int] | None:
        """The first start-cache hit: (level to read next, table address). Each probe
        counts a hit or a miss."""
        values = self.counters.values
        for cache in self.start[dim]:
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
        """(entry, came from an entry-point cache) for the entry of format ``fmt``
        (default: the dimension's format) at ``pa``."""
        fmt = fmt or self.formats[dim]
        values = self.counters.values
        for cache in self.entry[dim]:
            if cache.covers(dim, level):
                entry = cache.probe(dim, fmt, vm, asid, level, pa)
                if entry is not None:
                    if not _count(entry):
                        raise PluginError(f"walk cache {cache.name!r}: its probe returned {entry!r}; an entry-point "
                                          "cache returns None or the entry, an int of 0 or more.")
                    values[cache.hits] += 1
                    if self.recorder is not None:
                        self.recorder.ref(pa, level, dim, True)
                    return entry, True
                values[cache.misses] += 1
        self.refs[dim] += 1
        if self.recorder is not None:
            self.recorder.ref(pa, level, dim, False)
        if self.data_caches is not None:
            self.data_caches.access(pa, WALK_REF)
        return fmt.load(self.memory, pa), False

    def _fill_entry(self, dim: int, fmt: PageTableFormat, vm: int, asid: int, level: int, pa: int,
                    entry: int) -> None:
        for cache in self.entry[dim]:
            if cache.covers(dim, level):
                cache.fill(dim, fmt, vm, asid, level, pa, entry)

    def walk_dimension(self, dim: int, fmt: PageTableFormat, vm: int, asid: int, root: int, address: int,
                       accessed: bool, dirty: bool, write: bool, resolve, top: int | None = None
                       ) -> tuple[int, int] | Fault:
        """Walk one dimension: (leaf entry, level) or a Fault. ``resolve(entry_address)``
        turns an entry address into the physical address read (a 2D walk passes its host
        translation; it returns a Fault to abort). ``top`` starts the walk at that level's
        table ``root`` instead of the format's root (start caches are then not probed)."""
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
            if pending is not None:  # the table we just located (below the root: one page)
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
            if not cache.serves(table_access):
                continue
            found = cache.probe(vm, gpa, write, need_dirty)
            if found is not None:
                if not (isinstance(found, tuple) and len(found) == 4 and _count(found[0]) and _count(found[3])
                        and found[3] >= 1 << PAGE_SHIFT and found[3] & (found[3] - 1) == 0
                        and found[0] & ((1 << PAGE_SHIFT) - 1) == 0):
                    raise PluginError(f"walk cache {cache.name!r}: its probe returned {found!r}; a host-point cache "
                                      "returns None or (hPA of the 4K page, writable, dirty, host page size: a "
                                      "power of two of 4096 or more).")
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
            if cache.serves(table_access):
                cache.fill(vm, gpa, table_access, (hpa & ~((1 << PAGE_SHIFT) - 1), writable, dirty, size))
        return hpa, size, writable, dirty

    # -- a whole walk -----------------------------------------------------------------
    def walk(self, vm: int, asid: int, va: int, op: int) -> Translation | Fault:
        """One hardware walk for ``va``; counts it as done or aborted."""
        self.refs = [0, 0, 0]
        root = self.hw.guest_roots.get(vm, asid)
        if root < 0:
            return Fault(NO_ROOT, va)
        if self.recorder is not None:
            self.recorder.begin(vm, asid, va, op, *self.probes())
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
            return self._recorded(got)
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
                return self._recorded(host)
            address, hsize, host_writable, host_dirty = host
            writable, dirty = writable and host_writable, dirty and host_dirty
            if hsize < gsize:
                counters.add("tlb.splintered_fills")
                size = hsize
        counters.walk_done(refs[0], refs[1], refs[2])
        return self._recorded(Translation(address & ~(size - 1), size, writable, dirty))

    def probes(self) -> tuple[int, int]:
        """The walk caches' hits and misses so far, summed over the caches."""
        values = self.counters.values
        return sum(values[c.hits] for c in self.caches), sum(values[c.misses] for c in self.caches)

    def _recorded(self, got: Translation | Fault) -> Translation | Fault:
        """``got``, after the walk that ends with it is recorded (if it is being recorded)."""
        if self.recorder is not None:
            if isinstance(got, Fault):
                self.recorder.end(got.kind, got.address, 0, *self.probes())
            else:
                self.recorder.end(0, got.page, got.size.bit_length() - 1, *self.probes())
        return got


def _count(value: Any) -> bool:
    """An int (not a bool) of 0 or more."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0


def check_walk_cache(cache: Any, walk: str) -> None:
    """Refuse, in one sentence, a walk cache that attaches at no point of the radix walk
    or lacks what its point's protocol uses."""
    point = getattr(cache, "point", None)
    name = getattr(cache, "name", "?")
    if point not in POINTS:
        raise ConfigError(
            f"walk cache {name!r} is a {type(cache).__name__} whose point is {point!r}; the {walk!r} walk "
            f"consults caches at the points {', '.join(map(repr, POINTS))} (slatframe.walkcache: StartCache, "
            "EntryPointCache, HostPointCache); a cache of another kind needs a walk plugin that uses it.")
    missing = [m for m in POINT_MEMBERS[point] if not hasattr(cache, m)]
    if missing:
        raise ConfigError(
            f"walk cache {name!r} ({type(cache).__name__}) attaches at the {point!r} point but has no "
            f"{', '.join(missing)}; slatframe.walkcache lists what a cache at that point has.")
    resumes = getattr(cache, "resumes_at", None)
    if point == START and resumes is not None and (type(resumes) is not int or resumes < 1):
        raise ConfigError(f"walk cache {name!r} ({type(cache).__name__}) has resumes_at = {resumes!r}; a start "
                          "cache's resumes_at is None or the level its hits resume at, 1 or more.")


def _own_geometry(fmt: PageTableFormat) -> bool:
    """True when ``fmt``'s class replaces the core radix geometry."""
    return any(getattr(type(fmt), name) is not getattr(PageTableFormat, name)
               for name in ("index", "page_size", "prefix", "shift"))


def radix_walk(ctx: WalkContext) -> Walker:
    """Factory of the builtin ``radix`` walk plugin."""
    return Walker(ctx.hw, ctx.memory, ctx.counters, list(ctx.walk_caches), ctx.data_caches)
