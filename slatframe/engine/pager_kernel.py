"""The compiled loop's demand pager (slatframe/engine/demand.py): a not-present fault of
a guest or of a host served as the Python fault handlers would serve it.

Compiled apart and called by the loop through its address (``pg[PG_KERNEL]``,
:func:`slatframe.engine.kernel_slots.call_pager`), like a plugin's kernel: faults are
rare next to accesses, and compiled into the loop this code made every loop variant's
compile half a minute longer. Under ``NUMBA_DISABLE_JIT`` nothing calls it (every fault
goes to Python).

pg: the pager's control words (PG_*; the loop reads PG_ON and PG_KERNEL, which loop.py
names too); pvm[vm]: what the loop may serve of the VM (PV_*); plog[k]: the k-th guest
mapping served, for Python (PL_*; then a (table, the entry pointing at it) pair per table
created, top down); hlog[k]: the k-th host page backed (vm, gPA, hPA).
"""
from numba import njit

from slatframe.engine.walklib import (F_FRAME, F_LEAF, F_LEAF_MASK, F_LEVELS, F_PRESENT, F_SHIFT, entry_load,
                                      entry_pa, entry_store, frame_of)
from slatframe.walker import GUEST_NOT_PRESENT, HOST_NOT_PRESENT

GUEST = 0
HOST = 1

PG_ON = 0  # 1: the loop serves the not-present faults pvm enables
PG_KERNEL = 1  # the address of serve() compiled apart (slatframe.engine.plugin_kernels)
PG_NEXT = 2  # the host memory's bump pointer (bytes)
PG_LIMIT = 3  # host allocations end at or below this (the memory's size, and the frames slot_of covers)
PG_ROWS = 4  # rows of words in use
PG_ROW_CAP = 5  # rows of words there are
PG_TAKEN = 6  # host bytes allocated here since Python last settled
PG_LOGGED = 7  # rows of plog in use
PG_COUNT = 8  # the count columns of a guest fault, of the entries written, of the entries a fault wrote
PG_TABLE_BITS = 9  # a guest non-leaf entry's bits beside its frame (PageTableFormat.table_entry)
PG_HLOGGED = 10  # rows of hlog in use
PG_HCOUNT = 11  # the count columns of a host fault, of a VM exit, of the scheme's exit reason
PG_HTABLES = 12  # second-level tables created here since Python last settled
PG_HTABLE_BITS = 13  # a second-level non-leaf entry's bits beside its frame
PG_COLUMNS = 14
PV_ON = 0  # 1: the loop may serve the VM's guest not-present faults
PV_SIZE = 1  # the guest's page size, its leaf level, a leaf entry's bits beside its frame
PV_LEVEL = 2
PV_LEAF_BITS = 3
PV_HON = 4  # 1: ... and its host not-present faults (RadixBacking.fault)
PV_HSIZE = 5  # the host page size, its second-level leaf level, a leaf entry's bits
PV_HLEVEL = 6
PV_HLEAF_BITS = 7
PV_GNEXT = 8  # 2D: the guest kernel's bump pointer in guest-physical memory, and its end
PV_GLIMIT = 9
PV_COLUMNS = 10
PL_VM = 0
PL_ASID = 1
PL_VA = 2
PL_LEAF = 3  # the leaf entry's address (in the kernel's memory)
PL_TABLES = 4  # tables created
PL_FIRST = 5
PL_COLUMNS = PL_FIRST + 2 * 6


@njit(cache=True, forceinline=True, _nrt=False)
def pager_store(slot_of, words, fmts, f, pg, pa, entry):
    """Store an entry of format row f in host memory (PhysicalMemory.write: a frame's
    first word gives it the next row of ``words``)."""
    frame = pa >> 12
    if slot_of[frame] < 0:
        slot_of[frame] = pg[PG_ROWS]
        pg[PG_ROWS] += 1
    entry_store(slot_of, words, fmts, f, pa, entry)


@njit(cache=True, _nrt=False)
def backed(slot_of, words, fmts, host_roots, vm, gpa):
    """The hPA of ``gpa`` in VM ``vm``'s second-level tables (a software look-up, which
    gives what the backing's dicts give), or -1 where it is not backed."""
    table = host_roots[vm]
    level = fmts[HOST, F_LEVELS]
    while True:
        entry = entry_load(slot_of, words, fmts, HOST, entry_pa(fmts, HOST, table, gpa, level))
        if (entry & fmts[HOST, F_PRESENT]) == 0:
            return -1
        if level == 1 or (entry & fmts[HOST, F_LEAF_MASK]) == fmts[HOST, F_LEAF]:
            return frame_of(fmts, HOST, entry, level) + (gpa & ((1 << fmts[HOST, F_SHIFT + level]) - 1))
        table = frame_of(fmts, HOST, entry, level)
        level -= 1


@njit(cache=True, _nrt=False)
def missing_tables(slot_of, words, fmts, f, root, address, leaf_level, host_roots, vm, two):
    """What map_page would create on ``address``'s path (reads only): (the tables
    missing down to ``leaf_level``, the table holding the first missing entry (else the
    leaf-level table), its level). -1 tables: a larger page maps it (map_page refuses), or
    (``two``: tables at guest-physical addresses) a table is not backed."""
    table = root
    level = fmts[f, F_LEVELS]
    while level > leaf_level:
        pa = entry_pa(fmts, f, table, address, level)
        if two:
            pa = backed(slot_of, words, fmts, host_roots, vm, pa)
            if pa < 0:
                return -1, table, level
        entry = entry_load(slot_of, words, fmts, f, pa)
        if (entry & fmts[f, F_PRESENT]) == 0:
            return level - leaf_level, table, level
        if (entry & fmts[f, F_LEAF_MASK]) == fmts[f, F_LEAF]:
            return -1, table, level
        table = frame_of(fmts, f, entry, level)
        level -= 1
    return 0, table, level


@njit(cache=True, _nrt=False)
def back_page(slot_of, words, fmts, host_roots, pg, pvm, hlog, cnt, vm, gpa):
    """A host fault at ``gpa`` as slatframe.backing.RadixBacking serves it: counted (a
    host fault and the scheme's exit), a host page of the VM's host page size, then each
    missing second-level table top down, bump-allocated from host memory at their natural
    alignment, each entry stored; logged in ``hlog``. False, having changed nothing, when
    the loop may not or cannot (no room left; a larger page in the way)."""
    if pvm[vm, PV_HON] == 0 or pg[PG_HLOGGED] >= hlog.shape[0]:
        return False
    size, leaf_level = pvm[vm, PV_HSIZE], pvm[vm, PV_HLEVEL]
    missing, table, level = missing_tables(slot_of, words, fmts, HOST, host_roots[vm], gpa, leaf_level,
                                           host_roots, vm, False)
    if missing < 0:
        return False
    page = (pg[PG_NEXT] + size - 1) & ~(size - 1)
    if page + size + missing * 4096 > pg[PG_LIMIT] or pg[PG_ROWS] + missing + 1 > pg[PG_ROW_CAP]:
        return False
    pg[PG_NEXT] = page + size
    pg[PG_TAKEN] += size
    frame = fmts[HOST, F_FRAME]
    for _ in range(missing):
        new = pg[PG_NEXT]
        pg[PG_NEXT] = new + 4096
        pg[PG_TAKEN] += 4096
        pager_store(slot_of, words, fmts, HOST, pg, entry_pa(fmts, HOST, table, gpa, level),
                    (new & frame) | pg[PG_HTABLE_BITS])
        table = new
        level -= 1
    pager_store(slot_of, words, fmts, HOST, pg, entry_pa(fmts, HOST, table, gpa, leaf_level),
                (page & frame) | pvm[vm, PV_HLEAF_BITS])
    pg[PG_HTABLES] += missing
    log = hlog[pg[PG_HLOGGED]]
    pg[PG_HLOGGED] += 1
    log[0] = vm
    log[1] = gpa & ~(size - 1)
    log[2] = page
    count = pg[PG_HCOUNT]
    cnt[count] += 1
    cnt[count + 1] += 1
    cnt[count + 2] += 1
    return True


@njit(cache=True, _nrt=False)
def guest_map(slot_of, words, fmts, roots, host_roots, pg, pvm, plog, hlog, cnt, vm, asid, va, two):
    """A guest's not-present fault as slatframe.guest.GuestOs.map serves it when nothing
    freed waits to be reused: a fresh page of the VM's page size, then each missing
    table top down, from the kernel's bump allocator at their natural alignment (host
    memory under a 1D walk; with ``two``, guest-physical memory, where a new table's first
    store backs its page: back_page); each entry stored as PageTableFormat.store would,
    counted as the guest's faults and entry writes are; logged in ``plog``. False, having
    changed nothing, when the loop may not or cannot (no room left in memory, ``words``
    or the logs; a larger page in the way; a table not backed)."""
    if pvm[vm, PV_ON] == 0 or pg[PG_LOGGED] >= plog.shape[0]:
        return False
    size, leaf_level = pvm[vm, PV_SIZE], pvm[vm, PV_LEVEL]
    missing, table, level = missing_tables(slot_of, words, fmts, GUEST, roots[vm, asid], va, leaf_level,
                                           host_roots, vm, two)
    if missing < 0:
        return False
    if two:  # room for the page and tables in guest memory, and for backing each table
        page = (pvm[vm, PV_GNEXT] + size - 1) & ~(size - 1)
        hsize, hlevels = pvm[vm, PV_HSIZE], fmts[HOST, F_LEVELS]
        if page + size + missing * 4096 > pvm[vm, PV_GLIMIT] or (missing > 0 and (
                pvm[vm, PV_HON] == 0 or pg[PG_HLOGGED] + missing > hlog.shape[0]
                or pg[PG_NEXT] + missing * (2 * hsize + hlevels * 4096) > pg[PG_LIMIT]
                or pg[PG_ROWS] + missing * (hlevels + 1) + 1 > pg[PG_ROW_CAP])):
            return False
        pvm[vm, PV_GNEXT] = page + size
    else:
        page = (pg[PG_NEXT] + size - 1) & ~(size - 1)
        if page + size + missing * 4096 > pg[PG_LIMIT] or pg[PG_ROWS] + missing + 1 > pg[PG_ROW_CAP]:
            return False
        pg[PG_NEXT] = page + size
        pg[PG_TAKEN] += size
    log = plog[pg[PG_LOGGED]]
    pg[PG_LOGGED] += 1
    frame = fmts[GUEST, F_FRAME]
    for k in range(missing):  # (the entries above the first missing one are as read above)
        if two:
            new = pvm[vm, PV_GNEXT]
            pvm[vm, PV_GNEXT] = new + 4096
        else:
            new = pg[PG_NEXT]
            pg[PG_NEXT] = new + 4096
            pg[PG_TAKEN] += 4096
        pa = entry_pa(fmts, GUEST, table, va, level)
        at = backed(slot_of, words, fmts, host_roots, vm, pa) if two else pa  # (read above: backed)
        pager_store(slot_of, words, fmts, GUEST, pg, at, (new & frame) | pg[PG_TABLE_BITS])
        if two and backed(slot_of, words, fmts, host_roots, vm, new) < 0:  # its first touch comes next
            back_page(slot_of, words, fmts, host_roots, pg, pvm, hlog, cnt, vm, new)  # (room checked above)
        log[PL_FIRST + 2 * k] = new
        log[PL_FIRST + 2 * k + 1] = pa
        table = new
        level -= 1
    pa = entry_pa(fmts, GUEST, table, va, leaf_level)
    at = backed(slot_of, words, fmts, host_roots, vm, pa) if two else pa
    pager_store(slot_of, words, fmts, GUEST, pg, at, (page & frame) | pvm[vm, PV_LEAF_BITS])
    log[PL_VM] = vm
    log[PL_ASID] = asid
    log[PL_VA] = va
    log[PL_LEAF] = pa
    log[PL_TABLES] = missing
    count = pg[PG_COUNT]
    cnt[count] += 1
    cnt[count + 1] += missing + 1
    cnt[count + 2] += missing + 1
    return True


@njit(cache=True, _nrt=False)
def serve(slot_of, words, fmts, roots, host_roots, pg, pvm, plog, hlog, cnt, vm, asid, address, kind, two):
    """Serve the fault ``kind`` at ``address`` (a guest's at its virtual address, a host's
    at its guest-physical one) of VM ``vm``'s address space ``asid``: 1 if served, 0 if
    Python must (nothing changed)."""
    if kind == GUEST_NOT_PRESENT:
        return 1 if guest_map(slot_of, words, fmts, roots, host_roots, pg, pvm, plog, hlog, cnt, vm, asid, address,
                              two != 0) else 0
    if kind == HOST_NOT_PRESENT:
        return 1 if back_page(slot_of, words, fmts, host_roots, pg, pvm, hlog, cnt, vm, address) else 0
    return 0
