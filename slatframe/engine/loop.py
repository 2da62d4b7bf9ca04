"""The compiled engine's per-access loop (numba). Mirrors the reference tier exactly:
``slatframe/tlb.py`` (TLB hierarchy), ``slatframe/walkcache.py`` and
``slatframe/walker.py`` (walks). Software events (faults, control records, context
and VM switches) stop the loop and are handled in Python by the same code both tiers
share; the loop then resumes.

This file is not imported to run: :mod:`slatframe.engine.codegen` copies it below a
generated header that defines the policy dispatch (``policy_hit`` ...) over every
registered policy kernel, and numba compiles and caches that module. All state is in
int64 numpy arrays; see :mod:`slatframe.engine.compiled` for their layout.
"""
import numpy as np
from numba import njit

from slatframe.engine._policy_stub import policy_fill, policy_hit, policy_invalidate, policy_victim  # STUB

# loop status
DONE = 0
FAULT = 1
EVENT = 2  # a record the software side must see first (control op, switch of asid or VM)

# counters
C_ACCESSES = 0
C_WALKS = 1
C_REFS = 2
C_REFS_GUEST = 3
C_REFS_HOST = 4
C_REFS_MAX = 5
C_ABORTED = 6
C_REFS_ABORTED = 7
C_AD_WRITES = 8
C_ON_HIT = 9
C_SPLINTERED = 10
C_FIXED = 11  # then hits/misses per TLB level, then hits/misses per walk cache

# walk-cache kinds
PREFIX = 1
ENTRY = 2
TRANSLATION = 3

# format array fields
F_LEVELS = 0
F_PRESENT = 1
F_LEAF = 2
F_FRAME = 3
F_WRITE = 4
F_ACCESSED = 5
F_DIRTY = 6

# fault kinds (as slatframe.walker)
NO_ROOT = 1
GUEST_NOT_PRESENT = 2
GUEST_PROTECTION = 3
HOST_NOT_PRESENT = 4
HOST_PROTECTION = 5

GUEST = 0
HOST = 1
WRITE = 1
IFETCH = 2
CONTEXT_SWITCH = 16
PAGE_MASK = 4095


# -- memory ----------------------------------------------------------------------------

@njit(cache=True)
def mem_read(slot_of, words, addr):
    frame = addr >> 12
    if frame >= slot_of.shape[0]:
        return 0
    row = slot_of[frame]
    if row < 0:
        return 0
    return words[row, (addr >> 3) & 511]


@njit(cache=True)
def mem_write(slot_of, words, addr, value):
    words[slot_of[addr >> 12], (addr >> 3) & 511] = value


# -- set-associative arrays (slatframe/setassoc.py) --------------------------------------

@njit(cache=True)
def sa_find(ctx, key, i, s, c, k, ways):
    for w in range(ways):
        if ctx[i, s, w] == c and key[i, s, w] == k:
            return w
    return -1


@njit(cache=True)
def sa_lookup(ctx, key, pstate, pid, i, si, s, c, k, ways):
    """Way of (c, k) in set s of array i (policy state si), or -1; a hit tells the policy."""
    w = sa_find(ctx, key, i, s, c, k, ways)
    if w >= 0:
        policy_hit(pid, pstate[si], s, w)
    return w


@njit(cache=True)
def sa_place(ctx, key, pstate, pid, i, si, s, c, k, ways):
    """The way ``(c, k)`` goes to: its own, the first invalid one, or the policy's victim.
    Returns (way, evicted?, evicted ctx, evicted key); the caller writes the values and
    then calls policy_fill."""
    w = sa_find(ctx, key, i, s, c, k, ways)
    if w >= 0:
        return w, False, -1, 0
    for x in range(ways):
        if ctx[i, s, x] == -1:
            ctx[i, s, x] = c
            key[i, s, x] = k
            return x, False, -1, 0
    w = policy_victim(pid, pstate[si], s)
    ev_c, ev_k = ctx[i, s, w], key[i, s, w]
    ctx[i, s, w] = c
    key[i, s, w] = k
    return w, True, ev_c, ev_k


@njit(cache=True)
def sa_drop(ctx, key, pstate, pid, i, si, s, w):
    ctx[i, s, w] = -1
    key[i, s, w] = 0
    policy_invalidate(pid, pstate[si], s, w)


@njit(cache=True)
def sa_remove(ctx, key, pstate, pid, i, si, s, c, k, ways):
    w = sa_find(ctx, key, i, s, c, k, ways)
    if w >= 0:
        sa_drop(ctx, key, pstate, pid, i, si, s, w)


# -- TLB hierarchy (slatframe/tlb.py) ------------------------------------------------------

@njit(cache=True)
def tlb_ctx(vm, asid, shift):
    return (vm << 24) | (asid << 8) | shift


@njit(cache=True)
def tlb_holds(tlb, level, shift):
    nshifts, shifts = tlb[4], tlb[5]
    for j in range(nshifts[level]):
        if shifts[level, j] == shift:
            return True
    return False


@njit(cache=True)
def tlb_insert(tlb, pstate, path, npath, pos, c, k, page, shift, wr, di):
    """Insert into level path[pos]; handle the victim as the inclusion policy says."""
    sets, ways, pid, ctx, key, val, inclusion = tlb[0], tlb[1], tlb[3], tlb[6], tlb[7], tlb[8], tlb[9]
    while True:
        level = path[pos]
        s = k % sets[level]
        w, evicted, ev_c, ev_k = sa_place(ctx, key, pstate, pid[level], level, level, s, c, k, ways[level])
        ev_page, ev_wr, ev_di = val[level, s, w, 0], val[level, s, w, 2], val[level, s, w, 3]
        val[level, s, w, 0] = page
        val[level, s, w, 1] = shift
        val[level, s, w, 2] = wr
        val[level, s, w, 3] = di
        policy_fill(pid[level], pstate[level], s, w)
        if not evicted or inclusion == 0:
            return
        if inclusion == 1:  # inclusive: back-invalidate the levels before this one
            for j in range(pos):
                lj = path[j]
                sa_remove(ctx, key, pstate, pid[lj], lj, lj, ev_k % sets[lj], ev_c, ev_k, ways[lj])
            return
        ev_shift = ev_c & 0xFF  # exclusive: the victim moves to the next level holding its size
        nxt = -1
        for j in range(pos + 1, npath):
            if tlb_holds(tlb, path[j], ev_shift):
                nxt = j
                break
        if nxt < 0:
            return
        pos, c, k, page, shift, wr, di = nxt, ev_c, ev_k, ev_page, ev_shift, ev_wr, ev_di


@njit(cache=True)
def tlb_fill_from_walk(tlb, pstate, path, npath, vm, asid, va, page, shift, wr, di):
    c, k = tlb_ctx(vm, asid, shift), va >> shift
    for pos in range(npath):
        if tlb_holds(tlb, path[pos], shift):
            tlb_insert(tlb, pstate, path, npath, pos, c, k, page, shift, wr, di)
            if tlb[9] == 2:
                return


@njit(cache=True)
def tlb_fill_from_hit(tlb, pstate, path, npath, depth, c, k, page, shift, wr, di):
    if tlb[9] == 2:  # exclusive: move the entry to the first level holding its size
        first = -1
        for pos in range(npath):
            if tlb_holds(tlb, path[pos], shift):
                first = pos
                break
        if first != depth:
            level = path[depth]
            sa_remove(tlb[6], tlb[7], pstate, tlb[3][level], level, level, k % tlb[0][level], c, k,
                      tlb[1][level])
            tlb_insert(tlb, pstate, path, npath, first, c, k, page, shift, wr, di)
        return
    for pos in range(depth):
        if tlb_holds(tlb, path[pos], shift):
            tlb_insert(tlb, pstate, path, npath, pos, c, k, page, shift, wr, di)


@njit(cache=True)
def tlb_invalidate(tlb, pstate, scope, vm, asid, va):
    """scope: 0 page, 1 asid, 2 vm, 3 all (slatframe.tlb.TlbHierarchy.invalidate)."""
    sets, ways, pid, nshifts, shifts, ctx, key = tlb[0], tlb[1], tlb[3], tlb[4], tlb[5], tlb[6], tlb[7]
    for level in range(sets.shape[0]):
        if scope == 0:
            for j in range(nshifts[level]):
                shift = shifts[level, j]
                vpn = va >> shift
                sa_remove(ctx, key, pstate, pid[level], level, level, vpn % sets[level],
                          tlb_ctx(vm, asid, shift), vpn, ways[level])
            continue
        for s in range(sets[level]):
            for w in range(ways[level]):
                c = ctx[level, s, w]
                if c == -1:
                    continue
                if scope == 3 or (c >> 24) == vm and (scope == 2 or ((c >> 8) & 0xFFFF) == asid):
                    sa_drop(ctx, key, pstate, pid[level], level, level, s, w)


# -- walk caches (slatframe/walkcache.py) ------------------------------------------------

@njit(cache=True)
def wc_ctx(dim, vm, asid, level):
    return (dim << 40) | (vm << 24) | (asid << 8) | level


@njit(cache=True)
def wc_invalidate(wc, pstate, base, scope, vm, asid):
    """scope as tlb_invalidate; each kind drops what its reference class drops."""
    kind, sets, ways, pid, ctx, key = wc[0], wc[3], wc[4], wc[5], wc[7], wc[8]
    for j in range(kind.shape[0]):
        if kind[j] == TRANSLATION and scope < 2:
            continue
        for s in range(sets[j]):
            for w in range(ways[j]):
                c = ctx[j, s, w]
                if c == -1:
                    continue
                c_dim, c_vm, c_asid = c >> 40, (c >> 24) & 0xFFFF, (c >> 8) & 0xFFFF
                if scope < 2:
                    drop = c_dim == GUEST and c_vm == vm and (kind[j] == ENTRY or c_asid == asid)
                elif scope == 2:
                    drop = c_vm == vm
                else:
                    drop = True
                if drop:
                    sa_drop(ctx, key, pstate, pid[j], j, base + j, s, w)


@njit(cache=True)
def wc_probe_prefix(wc, pstate, base, cnt, hitbase, dim, vm, asid, address, levels):
    """Deepest prefix-cache hit: (level to read next, table address) or (-1, 0)."""
    sets, ways, pid, ctx, key, val, probe, nprobe = wc[3], wc[4], wc[5], wc[7], wc[8], wc[9], wc[10], wc[11]
    for p in range(nprobe[dim]):
        j, level = probe[dim, p, 0], probe[dim, p, 1]
        if level > levels:
            continue
        pre = address >> (12 + 9 * (level - 1))
        s = pre % sets[j]
        w = sa_lookup(ctx, key, pstate, pid[j], j, base + j, s, wc_ctx(dim, vm, asid, level), pre, ways[j])
        if w >= 0:
            cnt[hitbase + 2 * j] += 1
            return level - 1, val[j, s, w, 0]
        cnt[hitbase + 2 * j + 1] += 1
    return -1, 0


@njit(cache=True)
def wc_fill(wc, pstate, base, j, s, c, k, v0, v1, v2, v3):
    pid, ctx, key, val = wc[5], wc[7], wc[8], wc[9]
    w, _, _, _ = sa_place(ctx, key, pstate, pid[j], j, base + j, s, c, k, wc[4][j])
    val[j, s, w, 0] = v0
    val[j, s, w, 1] = v1
    val[j, s, w, 2] = v2
    val[j, s, w, 3] = v3
    policy_fill(pid[j], pstate[base + j], s, w)


@njit(cache=True)
def wc_fill_prefix(wc, pstate, base, dim, vm, asid, address, level, table):
    lists, nlist = wc[12], wc[13]
    for p in range(nlist[dim]):
        j = lists[dim, p]
        if wc[1][j] >> level & 1:
            pre = address >> (12 + 9 * (level - 1))
            wc_fill(wc, pstate, base, j, pre % wc[3][j], wc_ctx(dim, vm, asid, level), pre, table, 0, 0, 0)


@njit(cache=True)
def read_entry(mem, wc, pstate, base, cnt, hitbase, refs, dim, vm, asid, level, pa):
    """(entry, from an entry cache?)"""
    sets, ways, pid, ctx, key, val, lists, nlist = wc[3], wc[4], wc[5], wc[7], wc[8], wc[9], wc[14], wc[15]
    for p in range(nlist[dim]):
        j = lists[dim, p]
        if wc[1][j] >> level & 1:
            line = pa >> 3
            s = line % sets[j]
            w = sa_lookup(ctx, key, pstate, pid[j], j, base + j, s, wc_ctx(dim, vm, asid, 0), line, ways[j])
            if w >= 0:
                cnt[hitbase + 2 * j] += 1
                return val[j, s, w, 0], True
            cnt[hitbase + 2 * j + 1] += 1
    refs[dim] += 1
    return mem_read(mem[0], mem[1], pa), False


@njit(cache=True)
def fill_entry(wc, pstate, base, dim, vm, asid, level, pa, entry):
    lists, nlist = wc[14], wc[15]
    for p in range(nlist[dim]):
        j = lists[dim, p]
        if wc[1][j] >> level & 1:
            line = pa >> 3
            wc_fill(wc, pstate, base, j, line % wc[3][j], wc_ctx(dim, vm, asid, 0), line, entry, 0, 0, 0)


# -- walks (slatframe/walker.py) ---------------------------------------------------------

@njit(cache=True)
def entry_step(mem, fmt, refs, pa, entry, level, accessed, dirty, write):
    """A/D update of a present entry; returns (entry, leaf?, protection fault?)."""
    leaf = level == 1 or (entry & fmt[F_LEAF]) != 0
    if accessed:
        updated = entry | fmt[F_ACCESSED]
        if leaf and dirty and (entry & fmt[F_WRITE]) != 0:
            updated |= fmt[F_DIRTY]
        if updated != entry:
            mem_write(mem[0], mem[1], pa, updated)
            refs[2] += 1
            entry = updated
    protection = leaf and write and (entry & fmt[F_WRITE]) == 0
    return entry, leaf, protection


@njit(cache=True)
def frame_of(fmt, entry, level):
    if level > 1 and (entry & fmt[F_LEAF]) != 0:
        return entry & fmt[F_FRAME] & ~((1 << (12 + 9 * (level - 1))) - 1)
    return entry & fmt[F_FRAME]


@njit(cache=True)
def walk_physical(mem, wc, pstate, base, cnt, hitbase, refs, dim, fmt, vm, asid, root, address,
                  accessed, dirty, write):
    """One dimension whose tables are at physical addresses: (status, entry, level)."""
    levels = fmt[F_LEVELS]
    level, table = wc_probe_prefix(wc, pstate, base, cnt, hitbase, dim, vm, asid, address, levels)
    if level < 0:
        level, table = levels, root
    pending = 0
    while True:
        pa = table + ((address >> (12 + 9 * (level - 1))) & 511) * 8
        if pending:
            wc_fill_prefix(wc, pstate, base, dim, vm, asid, address, pending, pa & ~PAGE_MASK)
        entry, cached = read_entry(mem, wc, pstate, base, cnt, hitbase, refs, dim, vm, asid, level, pa)
        if (entry & fmt[F_PRESENT]) == 0:
            return (GUEST_NOT_PRESENT if dim == GUEST else HOST_NOT_PRESENT), entry, level
        entry, leaf, protection = entry_step(mem, fmt, refs, pa, entry, level, accessed, dirty, write)
        if leaf:
            if protection:
                return (GUEST_PROTECTION if dim == GUEST else HOST_PROTECTION), entry, level
            return 0, entry, level
        if not cached:
            fill_entry(wc, pstate, base, dim, vm, asid, level, pa, entry)
        pending = level
        table = frame_of(fmt, entry, level)
        level -= 1


@njit(cache=True)
def host_translate(mem, hw, wc, pstate, base, cnt, hitbase, refs, vm, gpa, write, table_access):
    """gPA -> (status, hPA, host page size, writable, dirty), through the nested TLBs."""
    hfmt, host_roots, host_ad, tad = hw[1], hw[4], hw[5], hw[6]
    need_dirty = host_ad != 0 and (write or (table_access and tad != 0))
    kind, sets, ways, pid, tables_only, ctx, key, val, ntlb, nntlb = (
        wc[0], wc[3], wc[4], wc[5], wc[6], wc[7], wc[8], wc[9], wc[16], wc[17])
    c = wc_ctx(HOST, vm, 0, 0)
    page = gpa >> 12
    for p in range(nntlb[0]):
        j = ntlb[p]
        if tables_only[j] and not table_access:
            continue
        s = page % sets[j]
        w = sa_lookup(ctx, key, pstate, pid[j], j, base + j, s, c, page, ways[j])
        if w >= 0 and (not write or val[j, s, w, 1] != 0) and (not need_dirty or val[j, s, w, 2] != 0):
            cnt[hitbase + 2 * j] += 1
            return 0, val[j, s, w, 0] | (gpa & PAGE_MASK), val[j, s, w, 3], val[j, s, w, 1], val[j, s, w, 2]
        cnt[hitbase + 2 * j + 1] += 1
    status, entry, level = walk_physical(mem, wc, pstate, base, cnt, hitbase, refs, HOST, hfmt, vm, 0,
                                         host_roots[vm], gpa, host_ad != 0, need_dirty, write)
    if status != 0:
        return status, 0, 0, 0, 0
    size = 1 << (12 + 9 * (level - 1))
    hpa = frame_of(hfmt, entry, level) | (gpa & (size - 1))
    writable = 1 if (entry & hfmt[F_WRITE]) != 0 else 0
    dirty = 1 if host_ad == 0 or hfmt[F_DIRTY] == 0 or (entry & hfmt[F_DIRTY]) != 0 else 0
    for p in range(nntlb[0]):
        j = ntlb[p]
        if not tables_only[j] or table_access:
            wc_fill(wc, pstate, base, j, page % sets[j], c, page, hpa & ~PAGE_MASK, writable, dirty, size)
    return 0, hpa, size, writable, dirty


@njit(cache=True)
def walk_guest_nested(mem, hw, wc, pstate, base, cnt, hitbase, refs, fmt, vm, asid, root, va, write, fault):
    """The guest dimension of a 2D walk: every table gPA through host_translate."""
    levels = fmt[F_LEVELS]
    level, table = wc_probe_prefix(wc, pstate, base, cnt, hitbase, GUEST, vm, asid, va, levels)
    physical = level >= 0
    if level < 0:
        level, table = levels, root
    pending = 0
    while True:
        addr = table + ((va >> (12 + 9 * (level - 1))) & 511) * 8
        if physical:
            pa = addr
        else:
            status, pa, _, _, _ = host_translate(mem, hw, wc, pstate, base, cnt, hitbase, refs, vm, addr,
                                                 False, True)
            if status != 0:
                fault[1] = addr
                return status, 0, 0
        if pending:
            wc_fill_prefix(wc, pstate, base, GUEST, vm, asid, va, pending, pa & ~PAGE_MASK)
        entry, cached = read_entry(mem, wc, pstate, base, cnt, hitbase, refs, GUEST, vm, asid, level, pa)
        if (entry & fmt[F_PRESENT]) == 0:
            fault[1] = va
            return GUEST_NOT_PRESENT, entry, level
        entry, leaf, protection = entry_step(mem, fmt, refs, pa, entry, level, True, write, write)
        if leaf:
            if protection:
                fault[1] = va
                return GUEST_PROTECTION, entry, level
            return 0, entry, level
        if not cached:
            fill_entry(wc, pstate, base, GUEST, vm, asid, level, pa, entry)
        pending = level
        table = frame_of(fmt, entry, level)
        physical = False
        level -= 1


@njit(cache=True)
def walk(mem, hw, wc, pstate, base, cnt, hitbase, vm, asid, va, op, out, refs):
    """One hardware walk (slatframe.walker.Walker.walk). On success out = [0, 0, page,
    shift, writable, dirty]; on a fault out = [kind, address, ...]. ``refs`` is scratch."""
    gfmt, two_d, roots = hw[0], hw[2], hw[3]
    refs[0] = refs[1] = refs[2] = 0
    root = roots[vm, asid] if asid < roots.shape[1] else -1
    if root < 0:
        out[0] = NO_ROOT
        out[1] = va
        return
    write = op == WRITE
    if two_d:
        status, entry, level = walk_guest_nested(mem, hw, wc, pstate, base, cnt, hitbase, refs, gfmt, vm,
                                                 asid, root, va, write, out)
    else:
        status, entry, level = walk_physical(mem, wc, pstate, base, cnt, hitbase, refs, GUEST, gfmt, vm,
                                             asid, root, va, True, write, write)
        out[1] = va
    if status != 0:
        out[0] = status
        cnt[C_ABORTED] += 1
        cnt[C_REFS_ABORTED] += refs[0] + refs[1]
        cnt[C_AD_WRITES] += refs[2]
        return
    gshift = 12 + 9 * (level - 1)
    address = frame_of(gfmt, entry, level) | (va & ((1 << gshift) - 1))
    writable = 1 if (entry & gfmt[F_WRITE]) != 0 else 0
    dirty = 1 if gfmt[F_DIRTY] == 0 or (entry & gfmt[F_DIRTY]) != 0 else 0
    shift = gshift
    if two_d:
        status, hpa, hsize, hw_writable, hw_dirty = host_translate(mem, hw, wc, pstate, base, cnt, hitbase,
                                                                   refs, vm, address, write, False)
        if status != 0:
            out[0] = status
            out[1] = address
            cnt[C_ABORTED] += 1
            cnt[C_REFS_ABORTED] += refs[0] + refs[1]
            cnt[C_AD_WRITES] += refs[2]
            return
        address = hpa
        writable &= hw_writable
        dirty &= hw_dirty
        if hsize < (1 << gshift):
            cnt[C_SPLINTERED] += 1
            shift = 12
            while (1 << shift) < hsize:
                shift += 1
    total = refs[0] + refs[1]
    cnt[C_WALKS] += 1
    cnt[C_REFS] += total
    cnt[C_REFS_GUEST] += refs[0]
    cnt[C_REFS_HOST] += refs[1]
    cnt[C_AD_WRITES] += refs[2]
    if total > cnt[C_REFS_MAX]:
        cnt[C_REFS_MAX] = total
    out[0] = 0
    out[2] = address & ~((1 << shift) - 1)
    out[3] = shift
    out[4] = writable
    out[5] = dirty


# -- the loop --------------------------------------------------------------------------------

@njit(cache=True)
def run(vm_col, asid_col, op_col, va_col, start, resume_walk, hpa_out, record_hpa,
        current_asid, last_vm, mem, hw, tlb, wc, pstate, cnt, out):
    """Process records from ``start``; returns (status, index). On FAULT, ``out`` holds
    the fault and the record is resumed with ``resume_walk``; on EVENT the software side
    handles record ``index`` first."""
    n = op_col.shape[0]
    sets, ways, side, pid, ctx, key, val = tlb[0], tlb[1], tlb[2], tlb[3], tlb[6], tlb[7], tlb[8]
    nlevels = sets.shape[0]
    base = nlevels
    hitbase = C_FIXED + 2 * nlevels
    path = np.empty(nlevels, dtype=np.int64)
    refs = np.zeros(3, dtype=np.int64)
    i = start
    while i < n:
        vm, asid, op, va = vm_col[i], asid_col[i], op_col[i], va_col[i]
        npath = 0
        for level in range(nlevels):
            if side[level] & (1 if op == IFETCH else 2):
                path[npath] = level
                npath += 1
        if not resume_walk:
            if vm != last_vm[0] or op >= CONTEXT_SWITCH:
                return EVENT, i
            running = current_asid[vm]
            if running != asid:
                if running >= 0:
                    return EVENT, i
                current_asid[vm] = asid
            cnt[C_ACCESSES] += 1
            found = False
            s = w = c = vpn = shift = page = wr = di = 0
            for depth in range(npath):
                level = path[depth]
                shifts_n, shifts = tlb[4], tlb[5]
                for j in range(shifts_n[level]):
                    shift = shifts[level, j]
                    vpn = va >> shift
                    s = vpn % sets[level]
                    c = tlb_ctx(vm, asid, shift)
                    w = sa_lookup(ctx, key, pstate, pid[level], level, level, s, c, vpn, ways[level])
                    if w >= 0:
                        found = True
                        break
                if found:
                    cnt[C_FIXED + 2 * level] += 1
                    page, wr, di = val[level, s, w, 0], val[level, s, w, 2], val[level, s, w, 3]
                    tlb_fill_from_hit(tlb, pstate, path, npath, depth, c, vpn, page, shift, wr, di)
                    break
                cnt[C_FIXED + 2 * level + 1] += 1
            if found and not (op == WRITE and (wr == 0 or di == 0)):
                if record_hpa:
                    hpa_out[i] = page + (va & ((1 << shift) - 1))
                i += 1
                continue
            if found:
                cnt[C_ON_HIT] += 1
        resume_walk = False
        walk(mem, hw, wc, pstate, base, cnt, hitbase, vm, asid, va, op, out, refs)
        if out[0] != 0:
            return FAULT, i
        shift = out[3]
        tlb_fill_from_walk(tlb, pstate, path, npath, vm, asid, va, out[2], shift, out[4], out[5])
        if record_hpa:
            hpa_out[i] = out[2] + (va & ((1 << shift) - 1))
        i += 1
    return DONE, i
