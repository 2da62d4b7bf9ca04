"""The shadow pages a shadowing hypervisor keeps: which guest table each one shadows,
how they link into trees, how much host memory they hold, and their age.

One shadow page (a table of the guest's format in host memory) shadows one guest table
(KVM's ``kvm_mmu_page`` with its ``gfn``) or, below a guest large page that the host maps
with smaller pages, no guest table ("direct"). A guest table with a shadow page is
write-protected: the hypervisor sees its stores. Pages are kept in creation order so a
bounded pool can zap the oldest (KVM's ``active_mmu_pages``). Zapping a page here frees
its whole subtree (KVM unlinks the children of a zapped page and keeps them for reuse
until they are zapped in turn; here they are rebuilt through hidden faults instead).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import attrs

from slatframe.paging import PAGE_SIZE, PageTableFormat

DIRECT = -1  #: ``ShadowPage.shadows`` of a page below a guest large page
NOTHING, LEAF, TABLE = 0, 1, 2  #: what :meth:`ShadowPages.zap_entry` cleared


@attrs.define(slots=True, eq=False)
class ShadowPage:
    """One shadow table: its VM, the root of its tree, the level of its entries, its parent
    table and the host address of the entry there that points at it (-1 for a root), the
    guest table it shadows (guest-physical, or :data:`DIRECT`), its bytes and its child
    tables."""

    vm: int
    root: int
    level: int
    parent: int
    parent_entry: int
    shadows: int
    size: int
    children: set[int] = attrs.field(factory=set)


class ShadowPages:
    """Every shadow page of every VM, with the gauges ``shadow.table_bytes`` (and its
    ``.peak``) and the counters ``shadow.pages_built`` and ``shadow.pages_zapped``."""

    def __init__(self, fmt: PageTableFormat, host: Any, counters: Any, n_vms: int) -> None:
        self.fmt = fmt
        self.host = host
        self.counters = counters
        self.pages: dict[int, ShadowPage] = {}
        self.age: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(n_vms)]  # oldest first
        # per VM: each 4K page of a shadowed guest table -> the shadow pages of that table
        self.shadowing: list[dict[int, set[int]]] = [{} for _ in range(n_vms)]

    def count(self, vm: int) -> int:
        """Shadow pages ``vm`` holds now."""
        return len(self.age[vm])

    def new(self, vm: int, level: int, parent: int, parent_entry: int, shadows: int, size: int) -> int:
        """Allocate a shadow table below ``parent`` (-1: the root of a new tree), pointed
        at from ``parent_entry``, and record it (the caller stores that entry)."""
        table = self.host.alloc(size)
        root = table if parent < 0 else self.pages[parent].root
        self.pages[table] = ShadowPage(vm, root, level, parent, parent_entry, shadows, size)
        if parent >= 0:
            self.pages[parent].children.add(table)
        self.age[vm][table] = None
        if shadows != DIRECT:
            for page in range(shadows, shadows + size, PAGE_SIZE):
                self.shadowing[vm].setdefault(page, set()).add(table)
        self.counters.gauge_add("shadow.table_bytes", size)
        self.counters.add("shadow.pages_built")
        return table

    def shadows_of(self, vm: int, gpa: int) -> set[int]:
        """The shadow pages of the guest table that holds guest-physical address ``gpa``
        (empty: its page is not write-protected)."""
        return self.shadowing[vm].get(gpa & ~(PAGE_SIZE - 1), set())

    def zap(self, table: int) -> None:
        """Free ``table`` and its subtree and clear the entry that pointed at it."""
        page = self.pages[table]
        if page.parent >= 0:
            self.fmt.store(self.host, page.parent_entry, 0)
            self.pages[page.parent].children.discard(table)
        self._free(table)

    def zap_entry(self, table: int, entry: int) -> int:
        """Clear the entry at host address ``entry`` of shadow page ``table``, freeing the
        subtree it pointed at. Returns what it cleared: NOTHING (not present), a LEAF, or
        a TABLE (then the walk caches of the tree's address space are stale too)."""
        value = self.fmt.load(self.host, entry)
        if not self.fmt.is_present(value):
            return NOTHING
        holder = self.pages[table]
        self.fmt.store(self.host, entry, 0)
        if self.fmt.is_leaf(value, holder.level):
            return LEAF
        child = self.fmt.frame(value, holder.level)
        holder.children.discard(child)
        self._free(child)
        return TABLE

    def drop_tree(self, root: int) -> None:
        """Free every page of ``root``'s tree."""
        self._free(root)

    def _free(self, table: int) -> None:
        page = self.pages.pop(table)
        for child in page.children:
            self._free(child)
        self.age[page.vm].pop(table)
        if page.shadows != DIRECT:
            shadowing = self.shadowing[page.vm]
            for guest_page in range(page.shadows, page.shadows + page.size, PAGE_SIZE):
                shadowing[guest_page].discard(table)
                if not shadowing[guest_page]:
                    del shadowing[guest_page]
        self.host.free(table, page.size)
        self.counters.add("shadow.pages_zapped")
        self.counters.gauge_add("shadow.table_bytes", -page.size)
