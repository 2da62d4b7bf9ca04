"""Demand paging inside the compiled loop: a first touch served without leaving it.

Every first touch of a page is a fault, and a fault handled in Python costs about 20 us
(the handler, and the loop's return and re-entry): a GUPS run over gigabytes makes a
million of them. A SLAT scheme whose translator offers ``demand_paging()``
(:class:`slatframe.guest.DemandPaging` per VM: a not-present fault is a count and the
guest kernel's demand fault, nothing else) lets the loop map such pages itself
(``loop.py``, ``demand_map``), exactly as :meth:`slatframe.guest.GuestOs.map` would:
the same frames from the host's bump allocator, the same entries in the same words, the
same counts. The loop logs each mapping; :meth:`LoopPager.settle` then brings the
kernel's bookkeeping (its leaves and tables) and the host memory's up to date, before
Python sees anything else.

The promise belongs to the class that defines both ``demand_paging`` and ``handle_fault``:
a subclass that handles faults its own way does not inherit it. The loop leaves a fault
to Python whenever its result could differ: a kernel with freed
pages or tables to reuse, shared mappings (map_shared), a kernel whose entry stores are
trapped (``on_store``), a format whose codec is not :class:`PageTableFormat`'s own, 2D
walks, walk plugins, walk recording, several cores or vCPUs, and when it runs out of
room (frames, rows of words, log rows) until Python makes more.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..paging import PAGE_SIZE, PageTableFormat

#: rows of the mapping log: the loop returns to Python (a fault handled there) when it is full
LOG_ROWS = 8192
#: bytes of host frames past the bump pointer made ready before each loop call
AHEAD = 64 << 20
#: rows of words made ready before each loop call (a mapping writes at most one per level)
ROWS_AHEAD = 256
#: the counts a served fault adds besides the scheme's own (slatframe.guest.GuestOs._stored)
WRITES = ("guest.pt_writes", "guest.pt_writes.fault")


def _own_codec(fmt: PageTableFormat) -> bool:
    """The format encodes and stores entries as PageTableFormat does (the loop's copy)."""
    cls = type(fmt)
    return all(getattr(cls, name) is getattr(PageTableFormat, name)
               for name in ("table_entry", "leaf_entry", "store", "load", "entry_address", "table_alloc"))


def _owner(obj: Any, name: str) -> type | None:
    """The class of ``obj`` that defines ``name``."""
    return next((cls for cls in type(obj).__mro__ if name in vars(cls)), None)


class LoopPager:
    """The pager's arrays for the loop (``pg``, ``pvm``, ``plog``: loop.py) and the
    Python side of each loop call: :meth:`ready` before, :meth:`settle` after."""

    def __init__(self, k: Any, machine: Any, one_dimension: bool, smp: bool, walk_plugin: bool) -> None:
        self.k = k
        ctx = machine.context
        self.host = ctx.host
        self.pg = np.zeros(k.PG_COLUMNS, dtype=np.int64)
        self.pvm = np.zeros((max(1, len(ctx.vms)), 4), dtype=np.int64)
        self.plog = np.zeros((LOG_ROWS, k.PL_COLUMNS), dtype=np.int64)
        translator = machine.translator
        offer = getattr(translator, "demand_paging", None)
        # (a subclass that handles faults its own way does not inherit the promise)
        promised = offer is not None and _owner(translator, "demand_paging") is _owner(translator, "handle_fault")
        paging = offer() if promised and one_dimension and not smp and not walk_plugin else None
        fmt = ctx.guest_format
        self.paging: list[Any] = []
        if paging and _own_codec(fmt):
            counters = {p.counter for p in paging if p is not None}
            self.paging = [p if p is not None and p.kernel.phys is ctx.host and p.kernel.counters is ctx.counters
                           and len(counters) == 1 else None for p in paging]
        self.counter = next((p.counter for p in self.paging if p is not None), None)
        self.served = 0  #: faults the loop served so far
        self.pg[k.PG_TABLE_BITS] = fmt.table_entry(0)

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.pg, self.pvm, self.plog

    @property
    def active(self) -> bool:
        """Whether the loop may serve any VM's faults (else its arrays stay off)."""
        return self.counter is not None

    def names(self) -> list[str]:
        """The count columns the loop adds to (in this order, from ``first``)."""
        return [self.counter, *WRITES] if self.active else []

    def columns(self, first: int) -> None:
        self.pg[self.k.PG_COUNT] = first

    def ready(self, recording: bool) -> None:
        """Before a loop call: which VMs the loop may serve now, and room in host memory."""
        k, pg, pvm = self.k, self.pg, self.pvm
        on = 0
        for vm, p in enumerate(self.paging):
            pvm[vm, 0] = 0
            if p is None or recording:
                continue
            kernel = p.kernel
            if kernel.on_store is not None or kernel.free.get(kernel.page_size) or kernel.free.get(PAGE_SIZE) \
                    or any(kernel.shared_vmas.values()):
                continue
            level = kernel.fmt.level_of_size(kernel.page_size)
            pvm[vm] = (1, kernel.page_size, level, kernel.fmt.leaf_entry(0, level, True))
            on = 1
        pg[k.PG_ON] = on
        if on:
            host = self.host
            pg[k.PG_LIMIT], pg[k.PG_ROW_CAP] = host.room(AHEAD, ROWS_AHEAD)
            pg[k.PG_NEXT], pg[k.PG_ROWS] = host.next_free, host.rows
            pg[k.PG_TAKEN] = pg[k.PG_LOGGED] = 0

    def settle(self) -> None:
        """After a loop call: the host memory's and each kernel's bookkeeping of the pages
        the loop mapped (GuestOs._map's, in the order they were mapped)."""
        k, pg = self.k, self.pg
        if not pg[k.PG_ON]:
            return
        self.host.took(int(pg[k.PG_NEXT]), int(pg[k.PG_TAKEN]), int(pg[k.PG_ROWS]))
        logged = int(pg[k.PG_LOGGED])
        pg[k.PG_TAKEN] = pg[k.PG_LOGGED] = 0
        if not logged:
            return
        self.served += logged
        log = self.plog[:logged]
        key = (log[:, k.PL_VM] << 16) | log[:, k.PL_ASID]
        one = bool((key == key[0]).all())  # (the usual case: every mapping in one address space)
        for space in [int(key[0])] if one else np.unique(key).tolist():
            rows = log if one else log[key == space]
            vm, asid = space >> 16, space & 0xFFFF
            kernel = self.paging[vm].kernel
            kernel.spaces[asid].update(zip((rows[:, k.PL_VA] >> kernel.shift).tolist(), rows[:, k.PL_LEAF].tolist()))
        first = k.PL_FIRST
        for row in log[log[:, k.PL_TABLES] > 0].tolist():  # (a table for every 512 pages or so)
            vm, asid, tables = row[k.PL_VM], row[k.PL_ASID], row[k.PL_TABLES]
            self.paging[vm].kernel.tables[asid].extend(
                (row[first + 2 * t], PAGE_SIZE, row[first + 2 * t + 1]) for t in range(tables))
