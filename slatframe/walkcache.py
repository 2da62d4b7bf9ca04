"""Walk caches (reference tier): translation caches besides the TLB.

Three kinds, each a set-associative array with a TLB replacement policy; the walker
(:mod:`slatframe.walker`) consults them at three points of a walk:

- ``prefix`` (paging-structure cache, Intel SDM 4.10.3): keyed by the address bits that
  select an entry of ``level`` (the format's :meth:`~slatframe.paging.PageTableFormat.prefix`:
  va >> (12 + 9*(level-1)) for 9-bit indices) and the context; holds the
  address of the table that entry points at. A hit lets the walk start below it,
  skipping the references above. Only present non-leaf entries are cached.
- ``entry`` (page walk cache, AMD; Bhargava et al., ASPLOS 2008): keyed by the physical
  address of a page-table entry of the covered levels, in units of the entry's size (pa
  // entry bytes); holds the entry. A hit saves
  that one memory reference. Only present non-leaf entries are cached.
- ``translation`` (nested TLB): keyed by guest-physical page and VM; holds the gPA ->
  hPA translation, so a hit skips a whole second-level walk.

Entries are tagged by VM (and asid in the guest dimension), so no cache can return
another context's entry; what a guest invalidation removes is in :meth:`invalidate`.

Every kind, the three above included, attaches at one of three points of a walk and
is consulted there only through that point's protocol, so a plugin's kind is an
ordinary peer of the builtin ones:

- ``"start"`` (:class:`StartCache`; PrefixCache): probed with the address before a
  dimension's first read; a hit names the level to read next and its table.
- ``"entry"`` (:class:`EntryPointCache`; EntryCache): probed with a table entry's
  physical address before it is read; a hit is the entry, saving that reference.
- ``"host"`` (:class:`HostPointCache`; TranslationCache): probed with a gPA before a
  second-level walk; a hit is the host translation, saving the whole walk.

The compiled tier runs the three builtin kinds in its loop and a plugin's kind through
the kernels of its point (:class:`slatframe.records.StartCacheKernels`,
``EntryCacheKernels``, ``HostCacheKernels``); a plugin's kind without them runs in the
reference tier.
"""
from __future__ import annotations

from typing import Any, Protocol

from .paging import PAGE_SHIFT
from .setassoc import SetAssoc

GUEST, HOST = 0, 1
DIMENSIONS = {"guest": (GUEST,), "host": (HOST,), "both": (GUEST, HOST)}
START, ENTRY, HOST_POINT = "start", "entry", "host"  #: the points a walk cache attaches at
POINTS = (START, ENTRY, HOST_POINT)


class StartCache(Protocol):
    """A walk cache at the start point, consulted where a dimension's walk starts.

    ``probe(dim, fmt, vm, asid, address)`` returns (level to read next, physical address
    of its table) to skip the levels above, or None; the walk counts a hit or a miss of
    ``hits`` / ``misses`` (counter names) per probe and stops probing at the first hit.
    Caches with a fixed ``resumes_at`` level (a PSC of level L resumes at L - 1) are
    probed first, the deepest first (as ChampSim takes the deepest PSC hit); the others
    after them, in config order. ``learn(dim, fmt, vm, asid, address, level, table)``
    tells it the table that ``level``'s entry on ``address``'s path points at (every
    non-leaf entry the walk reads, below a hit too). ``invalidate(scope, vm, asid)`` as
    :meth:`WalkCache.invalidate`. ``dimensions`` are the dimensions it covers (GUEST,
    HOST); ``name`` names it.
    """

    point: str
    name: str
    hits: str
    misses: str
    dimensions: frozenset[int]

    def probe(self, dim: int, fmt: Any, vm: int, asid: int, address: int) -> tuple[int, int] | None: ...
    def learn(self, dim: int, fmt: Any, vm: int, asid: int, address: int, level: int, table: int) -> None: ...
    def invalidate(self, scope: str, vm: int, asid: int) -> None: ...


class EntryPointCache(Protocol):
    """A walk cache at the entry point, consulted before each table entry is read.

    ``covers(dim, level)``: whether it holds entries of that dimension and level (only
    then is it probed, and a hit or a miss counted; level 0 asks about any level). ``probe(dim, fmt, vm, asid, level,
    pa)`` returns the entry at physical address ``pa`` (the walk then makes no memory
    reference for it) or None; caches are probed in config order up to the first hit.
    ``fill(dim, fmt, vm, asid, level, pa, entry)`` follows each present non-leaf entry
    the walk read from memory. ``invalidate`` as :class:`StartCache`.
    """

    point: str
    name: str
    hits: str
    misses: str

    def covers(self, dim: int, level: int = 0) -> bool: ...
    def probe(self, dim: int, fmt: Any, vm: int, asid: int, level: int, pa: int) -> int | None: ...
    def fill(self, dim: int, fmt: Any, vm: int, asid: int, level: int, pa: int, entry: int) -> None: ...
    def invalidate(self, scope: str, vm: int, asid: int) -> None: ...


class HostPointCache(Protocol):
    """A walk cache at the host point, consulted before each second-level walk of a 2D walk.

    ``serves(table_access)``: whether it is consulted for a gPA of a guest table entry
    (True) or of the data (False). ``probe(vm, gpa, write, need_dirty)`` returns (hPA of
    the 4K page, writable, dirty, host page size) or None; a hit must allow the access
    (``write`` needs writable, ``need_dirty`` needs dirty). Caches are probed in config
    order up to the first hit. ``fill(vm, gpa, table_access, value)`` follows each
    completed second-level walk. ``invalidate`` as :class:`StartCache`.
    """

    point: str
    name: str
    hits: str
    misses: str

    def serves(self, table_access: bool) -> bool: ...
    def probe(self, vm: int, gpa: int, write: bool, need_dirty: bool) -> tuple[int, bool, bool, int] | None: ...
    def fill(self, vm: int, gpa: int, table_access: bool, value: tuple[int, bool, bool, int]) -> None: ...
    def invalidate(self, scope: str, vm: int, asid: int) -> None: ...


#: What the walk uses of a cache at each point (``resumes_at`` is optional).
POINT_MEMBERS = {
    START: ("name", "hits", "misses", "dimensions", "probe", "learn", "invalidate"),
    ENTRY: ("name", "hits", "misses", "covers", "probe", "fill", "invalidate"),
    HOST_POINT: ("name", "hits", "misses", "serves", "probe", "fill", "invalidate"),
}


class WalkCache:
    """Common parts: a name for metrics, the dimensions and levels covered, the array."""

    kind = ""

    def __init__(self, name: str, dimensions: tuple[int, ...], levels: tuple[int, ...],
                 sets: int, ways: int, policy: Any, ctx: Any) -> None:
        """``policy`` is a resolved TLB-policy reference; ``ctx`` the machine context."""
        self.name = name
        self.dimensions = frozenset(dimensions)
        self.levels = frozenset(levels)
        self.sets = sets
        self.ways = ways
        self.policy = policy
        self.array = SetAssoc(sets, ways, ctx.make_policy(policy, sets, ways, f"walk_cache.{name}"),
                              group=3)  # contexts: (dim, vm, asid), the first fields of every kind's key
        self.hits = f"walk_cache.{name}.hits"
        self.misses = f"walk_cache.{name}.misses"

    def covers(self, dim: int, level: int = 0) -> bool:
        return dim in self.dimensions and (not level or level in self.levels)

    def invalidate(self, scope: str, vm: int, asid: int) -> None:
        """Guest invalidations (INVLPG, CR3 loads, unmap, protect) drop the guest-dimension
        entries of the asid (Intel SDM 4.10.4.1: INVLPG invalidates all paging-structure
        caches of the current PCID); ``vm`` and ``all`` (INVEPT-like) drop more."""
        if scope in ("page", "asid"):
            self.array.remove_groups(lambda context: context == (GUEST, vm, asid))
        elif scope == "vm":
            self.array.remove_groups(lambda context: context[1] == vm)
        else:
            self.array.remove_groups(lambda context: True)


class PrefixCache(WalkCache):
    """Start point: keyed by the format's :meth:`~slatframe.paging.PageTableFormat.prefix`
    of the address for its level; the value is the physical address of the next table.
    Builtin caches hold one level (``resumes_at`` is the level below it)."""

    kind = "prefix"
    point = START

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if len(self.levels) != 1:
            raise ValueError(f"walk cache {self.name!r}: a PrefixCache holds entries of one level")
        (self.level,) = self.levels
        self.resumes_at = self.level - 1

    def probe(self, dim: int, fmt: Any, vm: int, asid: int, address: int) -> tuple[int, int] | None:
        table = self.lookup(dim, vm, asid, self.level, fmt.prefix(address, self.level))
        return None if table is None else (self.level - 1, table)

    def learn(self, dim: int, fmt: Any, vm: int, asid: int, address: int, level: int, table: int) -> None:
        if level == self.level:
            self.fill(dim, vm, asid, level, fmt.prefix(address, level), table)

    def lookup(self, dim: int, vm: int, asid: int, level: int, prefix: int) -> int | None:
        return self.array.lookup((dim, vm, asid, level, prefix), prefix % self.sets)

    def fill(self, dim: int, vm: int, asid: int, level: int, prefix: int, table: int) -> None:
        self.array.fill((dim, vm, asid, level, prefix), prefix % self.sets, table)


class EntryCache(WalkCache):
    """Entry point: keyed by the entry's physical address in units of its size (pa //
    entry bytes); the value is the entry."""

    kind = "entry"
    point = ENTRY

    def probe(self, dim: int, fmt: Any, vm: int, asid: int, level: int, pa: int) -> int | None:
        slot = pa // fmt.entry_bytes
        return self.array.lookup((dim, vm, asid, slot), slot % self.sets)

    def fill(self, dim: int, fmt: Any, vm: int, asid: int, level: int, pa: int, entry: int) -> None:
        slot = pa // fmt.entry_bytes
        self.array.fill((dim, vm, asid, slot), slot % self.sets, entry)

    def invalidate(self, scope: str, vm: int, asid: int) -> None:
        # physically tagged: a guest invalidation cannot tell which lines changed, so it
        # drops all of the VM's guest-dimension entries (conservative; never a false hit)
        if scope in ("page", "asid"):
            self.array.remove_groups(lambda context: context[0] == GUEST and context[1] == vm)
        else:
            super().invalidate(scope, vm, asid)


class TranslationCache(WalkCache):
    """Host point: gPA 4K page -> (hPA 4K page, writable, dirty, host page size) of one VM
    (a larger host page is cached 4K at a time)."""

    kind = "translation"
    point = HOST_POINT

    def __init__(self, *args: Any, tables_only: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tables_only = tables_only

    def serves(self, table_access: bool) -> bool:
        return table_access or not self.tables_only

    def probe(self, vm: int, gpa: int, write: bool, need_dirty: bool) -> tuple[int, bool, bool, int] | None:
        page = gpa >> PAGE_SHIFT
        found = self.array.lookup((HOST, vm, 0, page), page % self.sets)
        if found is None or (write and not found[1]) or (need_dirty and not found[2]):
            return None
        return found

    def fill(self, vm: int, gpa: int, table_access: bool, value: tuple[int, bool, bool, int]) -> None:
        page = gpa >> PAGE_SHIFT
        self.array.fill((HOST, vm, 0, page), page % self.sets, value)

    def invalidate(self, scope: str, vm: int, asid: int) -> None:
        if scope in ("vm", "all"):  # only second-level changes (INVEPT) affect gPA -> hPA
            super().invalidate(scope, vm, asid)
