"""Demand paging inside the compiled loop: a first touch served without leaving it.

Every first touch of a page is a fault, and a fault handled in Python costs 20 to 30 us
(the handler, and the loop's return and re-entry): a GUPS run over gigabytes makes a
million of them. A SLAT scheme whose translator offers ``demand_paging()``
(:class:`slatframe.guest.DemandPaging` per VM) lets the loop serve them itself
(:mod:`slatframe.engine.pager_kernel`, compiled apart and called by its address), exactly
as Python would:

- a guest's not-present fault (``GuestOs.map``): a page of the VM's page size from the
  kernel's physical memory, then each missing table top down, each entry stored; under
  a hypervisor the kernel's memory is guest-physical (``VmPhysical``) and a table's
  first store backs its page (a host fault, below);
- a host's not-present fault (``Backing.fault`` of a ``RadixBacking``): a host page of
  the VM's host page size, then each missing second-level table, counted as
  ``faults.host`` and the scheme's exit.

The same frames from the same bump allocators at their natural alignment, the same
entries in the same words of simulated memory (a frame's first stored word takes the
next row of ``words``, as ``PhysicalMemory.write`` gives it), the same counts in the
loop's count row (so they go to the same scope). The loop logs each mapping;
:meth:`LoopPager.settle` brings the kernels', the backings' and host memory's
bookkeeping up to date before Python sees anything else.

The promise belongs to the class that defines both ``demand_paging`` and ``handle_fault``:
a subclass that handles faults its own way does not inherit it. The loop leaves a fault
to Python whenever its result could differ: a kernel with freed pages or tables to
reuse, shared mappings (map_shared), trapped entry stores (``on_store``), pages a
backing remapped one by one (dedup), walk plugins, walk recording, several cores or vCPUs, ``NUMBA_DISABLE_JIT`` (the pager
is not compiled), and whenever it runs out of room (frames, rows of words, log rows) until Python makes
more.
"""
from __future__ import annotations

from typing import Any

import numpy as np

import numba

from ..backing import RadixBacking
from ..guest import VmPhysical
from ..paging import PAGE_SIZE
from . import pager_kernel as pk
from .plugin_kernels import kernel_address

#: rows of each mapping log: the loop returns to Python (a fault handled there) when one is full
LOG_ROWS = 8192
#: bytes of host frames past the bump pointer made ready before each loop call
AHEAD = 64 << 20
#: rows of words made ready before each loop call
ROWS_AHEAD = 256
#: the counts a guest fault served adds besides the scheme's own (slatframe.guest.GuestOs._stored)
WRITES = ("guest.pt_writes", "guest.pt_writes.fault")
#: the gauge of the second-level tables' bytes (slatframe.backing.RadixBacking._table)
TABLE_BYTES = "slat.table_bytes"


def _owner(obj: Any, name: str) -> type | None:
    """The class of ``obj`` that defines ``name``."""
    return next((cls for cls in type(obj).__mro__ if name in vars(cls)), None)


class LoopPager:
    """The pager's arrays (``pg``, ``pvm``, ``plog``, ``hlog``: pager_kernel.py) and
    the Python side of each loop call: :meth:`ready` before, :meth:`settle` after."""

    def __init__(self, k: Any, machine: Any, smp: bool, walk_plugin: bool) -> None:
        if (k.PG_ON, k.PG_KERNEL) != (pk.PG_ON, pk.PG_KERNEL):
            raise RuntimeError("loop.py and pager_kernel.py disagree on the pager's control words")
        ctx = machine.context
        self.host, self.counters = ctx.host, ctx.counters
        self.pg = np.zeros(pk.PG_COLUMNS, dtype=np.int64)
        self.pvm = np.zeros((max(1, len(ctx.vms)), pk.PV_COLUMNS), dtype=np.int64)
        self.plog = np.zeros((LOG_ROWS, pk.PL_COLUMNS), dtype=np.int64)
        self.hlog = np.zeros((LOG_ROWS, 3), dtype=np.int64)
        translator = machine.translator
        offer = getattr(translator, "demand_paging", None)
        # (a subclass that handles faults its own way does not inherit the promise)
        promised = offer is not None and _owner(translator, "demand_paging") is _owner(translator, "handle_fault")
        hw = getattr(machine.walker, "hw", translator.hw)
        paging = offer() if promised and not smp and not walk_plugin and not numba.config.DISABLE_JIT else None
        self.paging: list[Any] = []
        if paging:  # (formats whose codec is not PageTableFormat's own never reach the compiled tier)
            self.paging = [p if p is not None and p.kernel.counters is ctx.counters and self._wired(p, hw) else None
                           for p in paging]
        names = {(p.counter, p.exit_reason) for p in self.paging if p is not None}
        if len(names) != 1:  # (one count column each: every VM the loop serves counts alike)
            self.paging = []
        self.counter, self.exit_reason = next(iter(names)) if len(names) == 1 else (None, None)
        self.served = 0  #: faults the loop served so far
        if self.active:
            self.pg[pk.PG_KERNEL] = kernel_address(pk.serve, "pager", "slatframe's demand pager")
        self.pg[pk.PG_TABLE_BITS] = ctx.guest_format.table_entry(0)
        if hw.host_format is not None:
            self.pg[pk.PG_HTABLE_BITS] = hw.host_format.table_entry(0)

    def _wired(self, p: Any, hw: Any) -> bool:
        """The kernel's memory is what the loop's walk reads: host memory under a 1D walk;
        guest-physical memory backed by ``p.backing``'s second-level tables (the ones the
        walk walks) under a 2D walk."""
        if hw.host_format is None:
            return p.kernel.phys is self.host and p.backing is None
        return (isinstance(p.backing, RadixBacking) and p.backing.host is self.host and p.backing.contents is None
                and isinstance(p.kernel.phys, VmPhysical) and p.kernel.phys.backed_by(p.backing, self.host)
                and p.backing.fmt is hw.host_format)

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.pg, self.pvm, self.plog, self.hlog

    @property
    def active(self) -> bool:
        """Whether the loop may serve any VM's faults (else its arrays stay off)."""
        return self.counter is not None

    def names(self) -> list[str]:
        """The count columns the loop adds to, from the one :meth:`columns` was given."""
        if not self.active:
            return []
        host = ["faults.host", "vm_exits", f"vm_exits.{self.exit_reason}"] if self.exit_reason is not None else []
        return [self.counter, *WRITES, *host]

    def columns(self, first: int) -> None:
        self.pg[pk.PG_COUNT] = first
        self.pg[pk.PG_HCOUNT] = first + 1 + len(WRITES)

    def ready(self, recording: bool) -> None:
        """Before a loop call: which VMs the loop may serve now, and room in host memory."""
        pg, pvm = self.pg, self.pvm
        on = 0
        for vm, p in enumerate(self.paging):
            pvm[vm, pk.PV_ON] = pvm[vm, pk.PV_HON] = 0
            if p is None:
                continue
            kernel = p.kernel
            if p.backing is not None:  # (what settle writes back, whatever the loop may serve)
                pvm[vm, pk.PV_GNEXT], pvm[vm, pk.PV_GLIMIT] = kernel.phys.next_free, kernel.phys.size
            if recording:
                continue
            if kernel.on_store is None and not kernel.free.get(kernel.page_size) and not kernel.free.get(PAGE_SIZE) \
                    and not any(kernel.shared_vmas.values()):
                level = kernel.fmt.level_of_size(kernel.page_size)
                pvm[vm, pk.PV_ON:pk.PV_LEAF_BITS + 1] = (1, kernel.page_size, level,
                                                       kernel.fmt.leaf_entry(0, level, True))
                on = 1
            backing = p.backing
            if backing is not None:
                if not backing.small:  # (no page remapped one by one: the tables and the dicts agree)
                    level = backing.fmt.level_of_size(backing.page_size)
                    pvm[vm, pk.PV_HON:pk.PV_HLEAF_BITS + 1] = (1, backing.page_size, level,
                                                             backing.fmt.leaf_entry(0, level, True))
                    on = 1
        pg[pk.PG_ON] = on
        if on:
            host = self.host
            pg[pk.PG_LIMIT], pg[pk.PG_ROW_CAP] = host.room(AHEAD, ROWS_AHEAD)
            pg[pk.PG_NEXT], pg[pk.PG_ROWS] = host.next_free, host.rows
            pg[pk.PG_TAKEN] = pg[pk.PG_LOGGED] = pg[pk.PG_HLOGGED] = pg[pk.PG_HTABLES] = 0

    def settle(self) -> None:
        """After a loop call: the host memory's, each backing's and each kernel's
        bookkeeping of what the loop mapped (in the order it was mapped)."""
        pg = self.pg
        if not pg[pk.PG_ON]:
            return
        pg[pk.PG_ON] = 0
        self.host.took(int(pg[pk.PG_NEXT]), int(pg[pk.PG_TAKEN]), int(pg[pk.PG_ROWS]))
        for vm, p in enumerate(self.paging):
            if p is not None and p.backing is not None:
                p.kernel.phys.next_free = int(self.pvm[vm, pk.PV_GNEXT])
        if pg[pk.PG_HTABLES]:
            self.counters.gauge_add(TABLE_BYTES, int(pg[pk.PG_HTABLES]) * PAGE_SIZE)
        backed = int(pg[pk.PG_HLOGGED])
        if backed:
            hlog = self.hlog[:backed]
            for vm in np.unique(hlog[:, 0]).tolist():
                rows = hlog[hlog[:, 0] == vm]
                backing = self.paging[vm].backing
                backing.pages.update(zip((rows[:, 1] >> backing.shift).tolist(), rows[:, 2].tolist()))
        logged = int(pg[pk.PG_LOGGED])
        self.served += logged + backed
        if logged:
            self._guest_maps(self.plog[:logged])

    def _guest_maps(self, log: np.ndarray) -> None:
        """GuestOs._map's bookkeeping of the pages the loop mapped: each leaf's address
        and each table created, with the entry pointing at it."""
        key = (log[:, pk.PL_VM] << 16) | log[:, pk.PL_ASID]
        one = bool((key == key[0]).all())  # (the usual case: every mapping in one address space)
        for space in [int(key[0])] if one else np.unique(key).tolist():
            rows = log if one else log[key == space]
            vm, asid = space >> 16, space & 0xFFFF
            kernel = self.paging[vm].kernel
            kernel.spaces[asid].update(zip((rows[:, pk.PL_VA] >> kernel.shift).tolist(), rows[:, pk.PL_LEAF].tolist()))
        first = pk.PL_FIRST
        for row in log[log[:, pk.PL_TABLES] > 0].tolist():  # (a table for every 512 pages or so)
            vm, asid, tables = row[pk.PL_VM], row[pk.PL_ASID], row[pk.PL_TABLES]
            self.paging[vm].kernel.tables[asid].extend(
                (row[first + 2 * t], PAGE_SIZE, row[first + 2 * t + 1]) for t in range(tables))
