"""What a page walk needs in numba, shared by the compiled loop (``loop.py``) and the
kernels of walk plugins (:class:`slatframe.records.WalkKernels`): simulated memory,
page-table entries decoded by a format's row of ``fmts`` (:func:`format_row`), and the
data-cache hierarchy every walk reference may go through.

A walk plugin's kernel ``walk(slot_of, words, state, dcfg, dctl, dtag, dage, cnt, vm,
asid, va, op, out)`` reads memory with :func:`mem_read` / :func:`entry_load`, sends each
reference through :func:`dc_access` when ``dctl[0]`` (the number of data-cache levels)
is not 0, and reports in ``out`` (columns ``O_*``): a fault kind and address, or the
translation (page base, size shift, writable, dirty), and in every case the references
it made by dimension, the entries it wrote (accessed/dirty) and whether the fill was
splintered. The loop counts the walk from ``out`` as the reference tier's
:class:`slatframe.counters.Counters` does.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from ..walker import GUEST_NOT_PRESENT, GUEST_PROTECTION, HOST_NOT_PRESENT, HOST_PROTECTION

# fmts columns
F_LEVELS = 0
F_PRESENT = 1
F_LEAF = 2
F_FRAME = 3
F_WRITE = 4
F_ACCESSED = 5
F_DIRTY = 6
F_LEAF_MASK = 7  # a leaf above level 1: entry & F_LEAF_MASK == F_LEAF
F_ESHIFT = 8  # log2 of the entry size (3: 8 bytes, 2: 4 bytes)
F_SHIFT = 8  # column F_SHIFT + l: the lowest address bit of level l's index (l = 1..6)
F_IMASK = 14  # column F_IMASK + l: level l's index mask
F_COLUMNS = 21

# out columns of a walk
O_FAULT = 0  # 0: translated, else a fault kind (slatframe.walker); a NO_ROOT fault is not counted as a walk
O_ADDRESS = 1  # the fault's address
O_PAGE = 2  # the translation: page base (physical), its size's shift, writable, dirty
O_SHIFT = 3
O_WRITABLE = 4
O_DIRTY = 5
O_REFS_GUEST = 6  # references of the first dimension (or 1D)
O_REFS_HOST = 7  # references of the second dimension
O_AD_WRITES = 8  # entries written to set accessed/dirty flags
O_SPLINTERED = 9  # 1: the translation's size is the smaller host page (tlb.splintered_fills)
OUT_COLUMNS = 10


def format_row(fmt: Any) -> np.ndarray:
    """A :class:`slatframe.paging.PageTableFormat`'s row of ``fmts`` (columns ``F_*``):
    codec masks, then the entry width and each level's index shift and mask; zeros for
    no format."""
    row = np.zeros(F_COLUMNS, dtype=np.int64)
    if fmt is None:
        return row
    row[:F_ESHIFT + 1] = (fmt.levels, fmt.present_mask, fmt.leaf_flag, fmt.frame_mask, fmt.write_flag,
                          fmt.accessed_flag, fmt.dirty_flag, fmt.leaf_mask, fmt.entry_bytes.bit_length() - 1)
    for level in range(1, fmt.levels + 1):
        row[F_SHIFT + level] = fmt.shift(level)
        row[F_IMASK + level] = (1 << fmt.index_bits[level - 1]) - 1
    return row


# -- memory: the words of slatframe.memory.PhysicalMemory (slot_of, words) ------------------

@njit(cache=True, forceinline=True, _nrt=False)
def mem_read(slot_of, words, addr):
    frame = addr >> 12
    if frame >= slot_of.shape[0]:
        return 0
    row = slot_of[frame]
    if row < 0:
        return 0
    return words[row, (addr >> 3) & 511]


@njit(cache=True, forceinline=True, _nrt=False)
def mem_write(slot_of, words, addr, value):
    words[slot_of[addr >> 12], (addr >> 3) & 511] = value


@njit(cache=True, forceinline=True, _nrt=False)
def entry_load(slot_of, words, fmts, f, pa):
    """The entry of format row f at pa (PageTableFormat.load): a word, or half of one."""
    if fmts[f, F_ESHIFT] == 3:
        return mem_read(slot_of, words, pa)
    return (mem_read(slot_of, words, pa & ~7) >> ((pa & 4) << 3)) & 0xFFFFFFFF


@njit(cache=True, forceinline=True, _nrt=False)
def entry_store(slot_of, words, fmts, f, pa, entry):
    """PageTableFormat.store: a 4-byte entry keeps the other half of its word."""
    if fmts[f, F_ESHIFT] == 3:
        mem_write(slot_of, words, pa, entry)
        return
    at = (pa & 4) << 3
    word = pa & ~7
    mem_write(slot_of, words, word, (mem_read(slot_of, words, word) & ~(0xFFFFFFFF << at)) | (entry << at))


@njit(cache=True, forceinline=True, _nrt=False)
def set_of(key, sets, mask):
    """The set of ``key``: a mask when ``sets`` is a power of two (no division), else modulo."""
    if mask >= 0:
        return key & mask
    return key % sets


# -- the data-cache hierarchy (slatframe/datacache.py) ------------------------------------
# dcfg[k] = (sets, ways, mask) of level k; dctl = (levels, data accesses?, first counter, clock);
# dtag/dage[k, s, w] = line (-1 empty) and last use.

@njit(cache=True, forceinline=True, _nrt=False)
def dc_access(dcfg, dctl, dtag, dage, cnt, pa, kind):
    """Look ``pa``'s line up level by level; fill the levels that missed (LRU victim);
    count the serving level (``nlevels`` = memory) for ``kind`` (0 walk, 1 data)."""
    nlevels = dctl[0]
    if nlevels == 0:
        return
    line = pa >> 6
    clock = dctl[3] + 1
    dctl[3] = clock
    served = nlevels
    for k in range(nlevels):
        s = set_of(line, dcfg[k, 0], dcfg[k, 2])
        for w in range(dcfg[k, 1]):
            if dtag[k, s, w] == line:
                dage[k, s, w] = clock
                served = k
                break
        if served == k:
            break
    for k in range(served):
        s = set_of(line, dcfg[k, 0], dcfg[k, 2])
        victim = 0
        oldest = dage[k, s, 0]
        for w in range(dcfg[k, 1]):
            if dtag[k, s, w] == -1:
                victim = w
                break
            age = dage[k, s, w]
            if age < oldest:  # the oldest so far in a register (as the TLB policies)
                oldest = age
                victim = w
        dtag[k, s, victim] = line
        dage[k, s, victim] = clock
    cnt[dctl[2] + kind * (nlevels + 1) + served] += 1


# -- page-table entries of the format in row f of fmts ----------------------------------------

@njit(cache=True, forceinline=True, _nrt=False)
def entry_step(slot_of, words, fmts, f, pa, entry, level, accessed, dirty, write):
    """A/D update of a present entry of format row f: (entry, leaf?, protection?, wrote?)."""
    leaf = level == 1 or (entry & fmts[f, F_LEAF_MASK]) == fmts[f, F_LEAF]
    wrote = False
    if accessed:
        updated = entry | fmts[f, F_ACCESSED]
        if leaf and dirty and (entry & fmts[f, F_WRITE]) != 0:
            updated |= fmts[f, F_DIRTY]
        if updated != entry:
            entry_store(slot_of, words, fmts, f, pa, updated)
            wrote = True
            entry = updated
    protection = leaf and write and (entry & fmts[f, F_WRITE]) == 0
    return entry, leaf, protection, wrote


@njit(cache=True, forceinline=True, _nrt=False)
def frame_of(fmts, f, entry, level):
    if level > 1 and (entry & fmts[f, F_LEAF_MASK]) == fmts[f, F_LEAF]:
        return entry & fmts[f, F_FRAME] & ~((1 << fmts[f, F_SHIFT + level]) - 1)
    return entry & fmts[f, F_FRAME]


@njit(cache=True, forceinline=True, _nrt=False)
def entry_pa(fmts, f, table, address, level):
    return table + (((address >> fmts[f, F_SHIFT + level]) & fmts[f, F_IMASK + level]) << fmts[f, F_ESHIFT])


# -- radix walks without walk caches, for walk plugins' kernels ------------------------------
NOT_PRESENT = 1  # statuses of physical_walk
PROTECTION = 2


@njit(cache=True, forceinline=True, _nrt=False)
def walk_read(slot_of, words, fmts, f, pa, dcfg, dctl, dtag, dage, cnt, out, column):
    """One walk reference to the entry of format row f at ``pa``: counted in
    ``out[column]`` and sent through the data caches (slatframe.walker.Walker.read_entry
    without entry caches)."""
    out[column] += 1
    if dctl[0] != 0:
        dc_access(dcfg, dctl, dtag, dage, cnt, pa, 0)
    return entry_load(slot_of, words, fmts, f, pa)


@njit(cache=True, _nrt=False)
def physical_walk(slot_of, words, fmts, f, table, address, level, accessed, dirty, write, dcfg, dctl, dtag,
                  dage, cnt, out, column):
    """Walk format row f's tables in physical memory from ``table`` at ``level`` down, with
    no walk caches (``Walker.walk_dimension`` with no ``resolve``): (0, leaf entry, its
    level), or (NOT_PRESENT or PROTECTION, entry, level). References go to
    ``out[column]``, accessed/dirty writes to ``out[O_AD_WRITES]``."""
    while True:
        pa = entry_pa(fmts, f, table, address, level)
        entry = walk_read(slot_of, words, fmts, f, pa, dcfg, dctl, dtag, dage, cnt, out, column)
        if (entry & fmts[f, F_PRESENT]) == 0:
            return NOT_PRESENT, entry, level
        entry, leaf, protection, wrote = entry_step(slot_of, words, fmts, f, pa, entry, level, accessed, dirty,
                                                    write)
        if wrote:
            out[O_AD_WRITES] += 1
        if leaf:
            return (PROTECTION if protection else 0), entry, level
        table = frame_of(fmts, f, entry, level)
        level -= 1


@njit(cache=True, _nrt=False)
def host_translation(slot_of, words, fmts, f, root, gpa, write, table_access, host_ad, table_access_dirties,
                     dcfg, dctl, dtag, dage, cnt, out):
    """A gPA through the second-level tables of format row f from ``root``, with no nested
    TLB (``Walker.host_translation``): (fault kind or 0, hPA, page-size shift, writable,
    dirty); references in ``out[O_REFS_HOST]``."""
    need_dirty = host_ad and (write or (table_access and table_access_dirties))
    status, entry, level = physical_walk(slot_of, words, fmts, f, root, gpa, fmts[f, F_LEVELS], host_ad,
                                         need_dirty, write, dcfg, dctl, dtag, dage, cnt, out, O_REFS_HOST)
    if status == NOT_PRESENT:
        return HOST_NOT_PRESENT, 0, 0, 0, 0
    if status == PROTECTION:
        return HOST_PROTECTION, 0, 0, 0, 0
    shift = fmts[f, F_SHIFT + level]
    hpa = frame_of(fmts, f, entry, level) | (gpa & ((1 << shift) - 1))
    writable = 1 if (entry & fmts[f, F_WRITE]) != 0 else 0
    dirty = 1 if not host_ad or fmts[f, F_DIRTY] == 0 or (entry & fmts[f, F_DIRTY]) != 0 else 0
    return 0, hpa, shift, writable, dirty


@njit(cache=True, _nrt=False)
def guest_levels(slot_of, words, fmts, g, h, two_d, host_root, table, va, level, write, host_ad, dirties, dcfg,
                 dctl, dtag, dage, cnt, out):
    """The first dimension of a radix walk without walk caches, from ``table`` at
    ``level`` down (``Walker.walk_dimension``): in a 2D walk (``two_d``) each entry's gPA
    goes through format row h's second level from ``host_root`` first. Returns (True,
    leaf entry, its level), or (False, 0, 0) with the fault reported in ``out``."""
    while True:
        pa = entry_pa(fmts, g, table, va, level)
        if two_d:
            gaddr = pa
            kind, pa, _, _, _ = host_translation(slot_of, words, fmts, h, host_root, gaddr, False, True, host_ad,
                                                 dirties, dcfg, dctl, dtag, dage, cnt, out)
            if kind != 0:
                fault(out, kind, gaddr)
                return False, 0, 0
        entry = walk_read(slot_of, words, fmts, g, pa, dcfg, dctl, dtag, dage, cnt, out, O_REFS_GUEST)
        if (entry & fmts[g, F_PRESENT]) == 0:
            fault(out, GUEST_NOT_PRESENT, va)
            return False, 0, 0
        entry, leaf, protection, wrote = entry_step(slot_of, words, fmts, g, pa, entry, level, True, write, write)
        if wrote:
            out[O_AD_WRITES] += 1
        if leaf:
            if protection:
                fault(out, GUEST_PROTECTION, va)
                return False, 0, 0
            return True, entry, level
        table = frame_of(fmts, g, entry, level)
        level -= 1


@njit(cache=True, _nrt=False)
def translated(slot_of, words, fmts, g, h, two_d, host_root, entry, level, va, write, host_ad, dirties, dcfg, dctl,
               dtag, dage, cnt, out):
    """Report in ``out`` the translation that format row g's leaf ``entry`` at ``level``
    gives ``va`` (``Walker.complete``): in a 2D walk the data's gPA goes through the
    second level last, and a fault there is reported instead."""
    shift = fmts[g, F_SHIFT + level]
    address = frame_of(fmts, g, entry, level) | (va & ((1 << shift) - 1))
    writable = 1 if (entry & fmts[g, F_WRITE]) != 0 else 0
    dirty = 1 if fmts[g, F_DIRTY] == 0 or (entry & fmts[g, F_DIRTY]) != 0 else 0
    if two_d:
        kind, hpa, hshift, host_writable, host_dirty = host_translation(
            slot_of, words, fmts, h, host_root, address, write, False, host_ad, dirties, dcfg, dctl, dtag, dage,
            cnt, out)
        if kind != 0:
            fault(out, kind, address)
            return
        address, writable, dirty = hpa, writable & host_writable, dirty & host_dirty
        if hshift < shift:
            out[O_SPLINTERED] = 1
            shift = hshift
    out[O_PAGE] = address & ~((1 << shift) - 1)
    out[O_SHIFT] = shift
    out[O_WRITABLE] = writable
    out[O_DIRTY] = dirty


@njit(cache=True, forceinline=True, _nrt=False)
def fault(out, kind, address):
    """Report a fault in ``out``."""
    out[O_FAULT] = kind
    out[O_ADDRESS] = address


@njit(cache=True, forceinline=True, _nrt=False)
def begin(out):
    """Clear ``out``'s counts before a walk."""
    for k in range(OUT_COLUMNS):
        out[k] = 0
