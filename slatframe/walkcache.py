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

A walk cache of a new kind attaches at the first of these points: an object whose
``point`` is ``"start"`` (:class:`StartCache`) is probed after the prefix caches, before
a dimension's first read, and told every table the walk locates; its compiled form is a
:class:`slatframe.records.StartCacheKernels`.
"""
from __future__ import annotations

from typing import Any, Protocol

from .paging import PAGE_SHIFT
from .setassoc import SetAssoc

GUEST, HOST = 0, 1
DIMENSIONS = {"guest": (GUEST,), "host": (HOST,), "both": (GUEST, HOST)}
START = "start"


class StartCache(Protocol):
    """A walk cache of a plugin's own kind, consulted where a dimension's walk starts.

    ``probe(dim, fmt, vm, asid, address)`` returns (level to read next, physical address
    of its table) to skip the levels above, or None; the walk counts a hit or a miss of
    ``hits`` / ``misses`` (counter names) per probe, and probes only when no prefix
    cache hit. ``learn(dim, fmt, vm, asid, address, level, table)`` tells it the table
    that ``level``'s entry on ``address``'s path points at (every non-leaf entry the walk
    reads, below a hit too). ``invalidate(scope, vm, asid)`` as :class:`WalkCache`.
    ``dimensions`` are the dimensions it covers (GUEST, HOST); ``name`` names it.
    """

    point: str
    name: str
    hits: str
    misses: str
    dimensions: frozenset[int]

    def probe(self, dim: int, fmt: Any, vm: int, asid: int, address: int) -> tuple[int, int] | None: ...
    def learn(self, dim: int, fmt: Any, vm: int, asid: int, address: int, level: int, table: int) -> None: ...
    def invalidate(self, scope: str, vm: int, asid: int) -> None: ...


#: What the radix walk uses of a start cache.
START_MEMBERS = ("name", "hits", "misses", "dimensions", "probe", "learn", "invalidate")


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
        self.array = SetAssoc(sets, ways, ctx.make_policy(policy, sets, ways, f"walk_cache.{name}"))
        self.hits = f"walk_cache.{name}.hits"
        self.misses = f"walk_cache.{name}.misses"

    def covers(self, dim: int, level: int = 0) -> bool:
        return dim in self.dimensions and (not level or level in self.levels)

    def invalidate(self, scope: str, vm: int, asid: int) -> None:
        """Guest invalidations (INVLPG, CR3 loads, unmap, protect) drop the guest-dimension
        entries of the asid (Intel SDM 4.10.4.1: INVLPG invalidates all paging-structure
        caches of the current PCID); ``vm`` and ``all`` (INVEPT-like) drop more."""
        if scope in ("page", "asid"):
            self.array.remove_if(lambda k: k[0] == GUEST and k[1] == vm and k[2] == asid)
        elif scope == "vm":
            self.array.remove_if(lambda k: k[1] == vm)
        else:
            self.array.remove_if(lambda k: True)


class PrefixCache(WalkCache):
    kind = "prefix"

    """``prefix`` is the format's :meth:`~slatframe.paging.PageTableFormat.prefix` of the
    address for ``level``; the value is the physical address of the next table."""

    def lookup(self, dim: int, vm: int, asid: int, level: int, prefix: int) -> int | None:
        return self.array.lookup((dim, vm, asid, level, prefix), prefix % self.sets)

    def fill(self, dim: int, vm: int, asid: int, level: int, prefix: int, table: int) -> None:
        self.array.fill((dim, vm, asid, level, prefix), prefix % self.sets, table)


class EntryCache(WalkCache):
    kind = "entry"

    """``slot`` is the entry's physical address in units of its size (pa // entry bytes)."""

    def lookup(self, dim: int, vm: int, asid: int, slot: int) -> int | None:
        return self.array.lookup((dim, vm, asid, slot), slot % self.sets)

    def fill(self, dim: int, vm: int, asid: int, slot: int, entry: int) -> None:
        self.array.fill((dim, vm, asid, slot), slot % self.sets, entry)

    def invalidate(self, scope: str, vm: int, asid: int) -> None:
        # physically tagged: a guest invalidation cannot tell which lines changed, so it
        # drops all of the VM's guest-dimension entries (conservative; never a false hit)
        if scope in ("page", "asid"):
            self.array.remove_if(lambda k: k[0] == GUEST and k[1] == vm)
        else:
            super().invalidate(scope, vm, asid)


class TranslationCache(WalkCache):
    """gPA 4K page -> (hPA 4K page, writable, dirty, host page size) of one VM (a larger
    host page is cached 4K at a time)."""

    kind = "translation"

    def __init__(self, *args: Any, tables_only: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tables_only = tables_only

    def lookup(self, vm: int, gpa: int) -> tuple | None:
        page = gpa >> PAGE_SHIFT
        return self.array.lookup((HOST, vm, 0, page), page % self.sets)

    def fill(self, vm: int, gpa: int, value: tuple) -> None:
        page = gpa >> PAGE_SHIFT
        self.array.fill((HOST, vm, 0, page), page % self.sets, value)

    def invalidate(self, scope: str, vm: int, asid: int) -> None:
        if scope in ("vm", "all"):  # only second-level changes (INVEPT) affect gPA -> hPA
            super().invalidate(scope, vm, asid)
