"""The compiled engine's per-access loop (numba). Mirrors the reference tier exactly:
``slatframe/tlb.py`` (TLB hierarchy), ``slatframe/walkcache.py`` and
``slatframe/walker.py`` (walks). Software events (faults, control records, context
and VM switches) stop the loop and are handled in Python by the same code both tiers
share; the loop then resumes.

This file is not imported to run: :mod:`slatframe.engine.codegen` copies it below a
generated header that defines the policy dispatch (``policy_hit`` ...): the kernels of
inline policies (the builtins) are compiled in, and every other policy is called by the
address of its separately compiled kernel, from ``pk`` (:mod:`slatframe.engine.kernel_slots`),
which travels beside the policy states ``pstate``. A walk plugin's kernel (``wk``) and
plugin start caches' kernels (``ck``) are called by address the same way. numba compiles
and caches that module once.

State is in int64 arrays passed one by one (numba copies a tuple argument on every
call, which cost more than the work of a TLB hit); their layout is documented in
:mod:`slatframe.engine.compiled`. Small helpers are inlined into their callers.
"""
import numpy as np
from numba import config as numba_config
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

from slatframe.engine._policy_stub import policy_fill, policy_hit, policy_invalidate, policy_victim  # STUB
from slatframe.engine.kernel_slots import (call_efill, call_eprobe, call_forget, call_hfill, call_hprobe, call_learn,
                                          call_pager, call_probe, call_walk)
from slatframe.engine.walklib import (F_DIRTY, F_ESHIFT, F_LEVELS, F_PRESENT, F_SHIFT, F_WRITE, dc_access,
                                      entry_load, entry_pa, entry_step, frame_of, O_AD_WRITES, O_FAULT,
                                      O_REFS_GUEST, O_REFS_HOST, O_SPLINTERED, OUT_COLUMNS, set_of)

if numba_config.DISABLE_JIT:  # plain Python (NUMBA_DISABLE_JIT): the intrinsic has no Python body
    def trailing_zeros(x):  # noqa: F811
        return (int(x) & -int(x)).bit_length() - 1


# loop status
DONE = 0
FAULT = 1
EVENT = 2  # a record the software side must see first (control op, switch of asid or VM)

# walk recording: its control columns in ``out``, after the walk's own (below, "walk recording")
WT_ON = OUT_COLUMNS + 0
WT_EVERY = OUT_COLUMNS + 1
WT_LIMIT = OUT_COLUMNS + 2
WT_SEEN = OUT_COLUMNS + 3
WT_RECORDED = OUT_COLUMNS + 4
WT_ROWS = OUT_COLUMNS + 5
WT_REFS = OUT_COLUMNS + 6
WT_OPEN = OUT_COLUMNS + 7
WT_BASE = OUT_COLUMNS + 8
WT_CACHES = OUT_COLUMNS + 9
WT_WALKS_AT = OUT_COLUMNS + 10
WT_REFS_AT = OUT_COLUMNS + 11
WT_END = OUT_COLUMNS + 12  # then the walk rows (WT_WALK_COLUMNS each) and the reference rows (2 each)
WT_WALK_COLUMNS = 12

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

# tcfg columns
T_SETS = 0
T_WAYS = 1
T_SIDE = 2
T_PID = 3
T_NSHIFTS = 4
T_SHIFT0 = 5  # .. 8
T_MASK = 9  # sets - 1 when sets is a power of two, else -1

# The TLB hierarchy's shape compiled in (slatframe/engine/shape.py). In the generic module
# SHAPE_LEVELS is 0: an access's levels come from ``paths`` and their page sizes from
# ``tcfg``. A shaped module (codegen writes these three lines) serves only configs whose
# instruction fetches and data accesses both look up levels 0..SHAPE_LEVELS-1 in order,
# level l holding the SHAPE_NSHIFTS[l] page sizes SHAPE_SHIFTS[l][:n]: its lookups unroll
# and their offsets and shifts fold. Sets, ways and policies stay run-time values, unless
# SHAPE_EXACT is 1 (an exact module, for one TLB config): then level l has SHAPE_SETS[l]
# sets (index mask SHAPE_MASKS[l], -1 for a modulo), SHAPE_WAYS[l] ways and policy number
# SHAPE_PIDS[l], all constants of the lookup and the fill.
SHAPE_LEVELS = 0  # SHAPE
SHAPE_NSHIFTS = (0,)  # SHAPE
SHAPE_SHIFTS = ((0, 0, 0, 0),)  # SHAPE
SHAPE_EXACT = 0  # SHAPE
SHAPE_SETS = (0,)  # SHAPE
SHAPE_MASKS = (0,)  # SHAPE
SHAPE_WAYS = (0,)  # SHAPE
SHAPE_PIDS = (0,)  # SHAPE

# wcfg columns and kinds
W_KIND = 0
W_LEVELS = 1  # prefix kind: levels; entry kinds: levels covered, guest in bits 0-7, host in bits 8-15
W_DIMS = 2
W_SETS = 3
W_WAYS = 4
W_PID = 5
W_SERVES = 6  # host kinds: bit 0 serves the data's gPA, bit 1 the gPAs of guest table entries
W_MASK = 7  # as T_MASK
PREFIX = 1
ENTRY = 2
TRANSLATION = 3
START = 4  # a plugin's start cache (slatframe.walkcache.StartCache): W_PID is its slot in ck
ENTRY_PLUGIN = 5  # a plugin's entry-point cache (EntryPointCache), through its kernels in ck
HOST_PLUGIN = 6  # a plugin's host-point cache (HostPointCache), through its kernels in ck

# The walk's configuration ``wcfg``: one int64 array (numba passes each array argument as
# several machine words; packing did not change the loop's speed: docs/performance.md,
# session 27). Words: the hardware's flags (H_*), the
# lists' lengths (G_COUNT + L_*), the number of walk caches, where the lists and the probe
# order start, then a row of W_COLUMNS (W_*) per walk cache from G_ROWS; the lists
# (G_CACHES entries a row, rows L_*) and the probe order (per dimension, G_PROBES entries of
# cache, level) follow. slatframe/engine/compiled.py's ``walk_config`` writes it.
H_2D = 0  # a 2D walk (a host format)
H_HOST_AD = 1  # the host's tables keep accessed/dirty bits
H_TABLE_DIRTY = 2  # a table access dirties its host page
H_SMP = 3  # a machine of several cores or vCPUs
G_COUNT = 4  # 9 words: each list's length
G_CACHES = 13
G_LISTS = 14
G_PROBE = 15
G_PROBES = 16  # room for probes per dimension
G_ROWS = 24
W_COLUMNS = 8

# lists (their lengths at G_COUNT + L_*)
L_PROBE = 0  # + dim: the start point's probe order (cache, level)
L_PREFIX = 2  # + dim
L_ENTRY = 4  # + dim
L_NTLB = 6
L_START = 7  # + dim: start caches of plugin kinds, in config order

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


# memory, page-table entries and the data caches (dc_access): slatframe/engine/walklib.py

# A TLB or nested-TLB value packs a page frame (low 12 bits zero) with the page-size shift
# and the writable and dirty bits.
V_SHIFT = 63
V_WRITABLE = 6
V_DIRTY = 7


@njit(cache=True, forceinline=True, _nrt=False)
def pack(page, shift, writable, dirty):
    return page | shift | (writable << V_WRITABLE) | (dirty << V_DIRTY)


# -- set-associative arrays (slatframe/setassoc.py) --------------------------------------
# tag[i, s] is set s of array i, one row of int64 laid out by field for the array's own W
# ways: the keys at [0, W), the ctxs at [W, 2W) (-1: an invalid way), the values at
# [2W, 3W), each way's next way in its index chain at [3W, 4W). A set of at most
# INDEX_MIN_WAYS ways is scanned: up to 8 ways way by way to the first match, wider ones
# every key compared at once (12 ways: 96 bytes, two cache lines), a ctx read only where
# the key matches; a fill after a missed lookup takes the set's first invalid way from
# the occupancy bitmap (below) or the policy's victim, writes its fields, and keeps no
# index. Wider sets (a 32-way paging-structure
# cache, a fully associative array of hundreds of ways) keep an exact index over
# their valid ways, so a lookup or a miss reads a chain instead of scanning every way:
# BUCKETS chain heads at [4W, 4W + BUCKETS) (-1: empty), and the row's last column holds
# the number of valid ways. Rows are padded to whole 64-byte lines. The policy state of
# array i is pstate[si].
KEY, CTX, VAL, NEXT = 0, 1, 2, 3  # field f of way w is column f * W + w
FIELDS = 4  # fields per way: a wide set's chain heads start at column FIELDS * W

BUCKETS = 32
INDEX_MIN_WAYS = 16
HASH_MUL = -7046029254386353131  # 0x9E3779B97F4A7C15 (Fibonacci hashing) as an int64


def row_words(ways: int) -> int:
    """The length of a set's row for arrays of up to ``ways`` ways (whole 64-byte lines)."""
    return -(-(FIELDS * ways + BUCKETS + 1) // 8) * 8


@njit(cache=True, forceinline=True, _nrt=False)
def col(field, w, ways):
    """The column of ``field`` of way ``w`` in a set of ``ways`` ways."""
    return field * ways + w


@njit(cache=True, forceinline=True, _nrt=False)
def bucket(k, ways):
    """The column of the chain head for key ``k`` in a wide set's index."""
    return FIELDS * ways + (((k * HASH_MUL) >> 40) & (BUCKETS - 1))


@njit(cache=True, forceinline=True, _nrt=False)
def index_link(tag, i, s, w, k, ways):
    b = bucket(k, ways)
    tag[i, s, col(NEXT, w, ways)] = tag[i, s, b]
    tag[i, s, b] = w


@njit(cache=True, forceinline=True, _nrt=False)
def index_unlink(tag, i, s, w, k, ways):
    b = bucket(k, ways)
    x = tag[i, s, b]
    if x == w:
        tag[i, s, b] = tag[i, s, col(NEXT, w, ways)]
        return
    while x >= 0:  # (a way missing from its chain ends the search rather than looping)
        nxt = tag[i, s, col(NEXT, x, ways)]
        if nxt == w:
            tag[i, s, col(NEXT, x, ways)] = tag[i, s, col(NEXT, w, ways)]
            return
        x = nxt


# Occupancy: occ[si] (si as in pstate: TLB level l, then walk cache L + j) counts and
# locates structure si's valid entries, so that an invalidation visits those only, in the
# order of a sweep of every set and way (slatframe.setassoc.SetAssoc.remove_groups):
# O_VALID valid entries; O_EXAMINED / O_REMOVED entries invalidations examined / dropped
# (a diagnostic, not a metric); O_BITS + d where bitmap level d starts and O_TOP the
# words of level 2; from O_VMS the valid entries of each VM; then the bitmaps: bit x of
# level 0 is slot x (set * ways + way) valid, bit x of level d + 1 is word x of level d
# nonzero (each level has a zero word past its last bit).
O_VALID = 0
O_EXAMINED = 1
O_REMOVED = 2
O_BITS = 3  # .. 5
O_TOP = 6
O_VMS = 8


@njit(cache=True, forceinline=True, _nrt=False)
def ctx_vm(c):
    """The VM of a TLB or walk-cache ctx (bits 24-39 of both)."""
    return (c >> 24) & 0xFFFF


@njit(cache=True, forceinline=True, _nrt=False)
def bit(x):
    """The int64 with bit ``x & 63`` set (bit 63 is the sign bit)."""
    return np.int64(1) << (x & 63)


@njit(cache=True, forceinline=True, _nrt=False)
def lowest_bit(word):
    """The index of the lowest set bit of ``word`` (nonzero)."""
    n = 0
    for width in (32, 16, 8, 4, 2, 1):
        if word & ((1 << width) - 1) == 0:
            n += width
            word >>= width
    return n


@njit(cache=True, forceinline=True, _nrt=False)
def occ_add(occ, si, c, slot):
    """``slot`` of structure si, invalid until now, holds an entry of ctx ``c``."""
    occ[si, O_VALID] += 1
    occ[si, O_VMS + ctx_vm(c)] += 1
    x = slot
    for d in range(3):
        q = occ[si, O_BITS + d] + (x >> 6)
        word = occ[si, q]
        occ[si, q] = word | bit(x)
        if word != 0:
            return
        x >>= 6


@njit(cache=True, forceinline=True, _nrt=False)
def occ_drop(occ, si, c, slot):
    """``slot`` of structure si, which held an entry of ctx ``c``, is invalid now."""
    occ[si, O_VALID] -= 1
    occ[si, O_VMS + ctx_vm(c)] -= 1
    x = slot
    for d in range(3):
        q = occ[si, O_BITS + d] + (x >> 6)
        word = occ[si, q] & ~bit(x)
        occ[si, q] = word
        if word != 0:
            return
        x >>= 6


@njit(cache=True, _nrt=False)
def occ_next(occ, si, slot):
    """The first valid slot of structure si at or after ``slot`` (at most its number of
    slots), or -1."""
    x, level = slot, -1
    for d in range(3):  # the rest of x's word at level d, else (at level d + 1) the words after it
        q = x >> 6
        word = occ[si, occ[si, O_BITS + d] + q] & (np.int64(-1) << (x & 63))  # bits x & 63 and up
        if word != 0:
            x, level = (q << 6) | lowest_bit(word), d
            break
        x = q + 1
    if level < 0:  # nothing in x's word of level 2: the words of level 2 after it
        for q in range(x, occ[si, O_TOP]):
            word = occ[si, occ[si, O_BITS + 2] + q]
            if word != 0:
                x, level = (q << 6) | lowest_bit(word), 2
                break
        if level < 0:
            return -1
    for d in range(level - 1, -1, -1):  # down to level 0: each set bit names a nonzero word
        x = (x << 6) | lowest_bit(occ[si, occ[si, O_BITS + d] + x])
    return x


@njit(cache=True, forceinline=True, _nrt=False)
def sa_find(tag, i, s, c, k, ways):
    if ways > INDEX_MIN_WAYS:  # wide sets: follow the key's chain
        w = tag[i, s, bucket(k, ways)]
        while w >= 0:
            if tag[i, s, col(KEY, w, ways)] == k and tag[i, s, col(CTX, w, ways)] == c:
                return w
            w = tag[i, s, col(NEXT, w, ways)]
        return -1
    if ways <= 8:  # a few ways: the first whose key and ctx match
        for w in range(ways):
            if tag[i, s, col(KEY, w, ways)] == k and tag[i, s, col(CTX, w, ways)] == c:
                return w
        return -1
    match = 0
    for w in range(ways):  # every key compared, without a branch (the compiler vectorises it)
        match |= np.int64(tag[i, s, col(KEY, w, ways)] == k) << w
    while match != 0:  # (a key may be in the set under other ctxs too)
        w = trailing_zeros(match)
        if tag[i, s, col(CTX, w, ways)] == c:
            return w
        match &= match - 1
    return -1


@njit(cache=True, forceinline=True, _nrt=False)
def sa_value(tag, i, s, w, ways):
    """The value of way ``w``."""
    return tag[i, s, col(VAL, w, ways)]


@njit(cache=True, forceinline=True, _nrt=False)
def sa_ctx(tag, i, s, w, ways):
    """The ctx of way ``w`` (-1: invalid)."""
    return tag[i, s, col(CTX, w, ways)]


@njit(cache=True, forceinline=True, _nrt=False)
def sa_lookup(tag, pstate, pk, pid, i, si, s, c, k, ways):
    """Way of (c, k) in set s of array i, or -1; a hit tells the policy."""
    w = sa_find(tag, i, s, c, k, ways)
    if w >= 0:
        policy_hit(pid, pstate, pk, si, s, w)
    return w


@njit(cache=True, forceinline=True, _nrt=False)
def sa_free(tag, occ, i, si, s, ways):
    """The first invalid way of the set, or -1. A set of up to INDEX_MIN_WAYS ways reads
    it from the occupancy bitmap of structure si (its ways are adjacent bits there, in
    one word or two), a wider one scans its contexts unless it counts them all valid."""
    if ways > INDEX_MIN_WAYS:
        if tag[i, s, tag.shape[2] - 1] == ways:
            return -1
        for x in range(ways):
            if tag[i, s, col(CTX, x, ways)] == -1:
                return x
        return -1
    x = s * ways
    q = occ[si, O_BITS] + (x >> 6)
    off = x & 63
    valid = occ[si, q] >> off  # (an arithmetic shift: bits from 64 - off up copy bit 63)
    if off + ways > 64:  # the set's last ways are in the next word
        valid = (valid & ((np.int64(1) << (64 - off)) - 1)) | (occ[si, q + 1] << (64 - off))
    full = (np.int64(1) << ways) - 1
    valid &= full
    if valid == full:
        return -1
    return trailing_zeros(~valid)


@njit(cache=True, _nrt=False)
def sa_own(tag, i, s, c, k, ways):
    """sa_find, called rather than inlined (a fill that may find its own way: one copy of
    the lookup for every inlined fill)."""
    return sa_find(tag, i, s, c, k, ways)


@njit(cache=True, forceinline=True, _nrt=False)
def sa_place(tag, pstate, pk, occ, pid, i, si, s, c, k, ways, absent, value):
    """Write ``(c, k) -> value`` to its own way, the first invalid one, or the policy's
    victim, and tell the policy. Returns (evicted?, evicted ctx, key, value).
    ``absent``: the caller knows ``(c, k)`` is not in the set (a lookup of it just
    missed), so its own way is not looked for. Keeps ``occ[si]``."""
    own = -1 if absent else sa_own(tag, i, s, c, k, ways)
    free = -1
    if own >= 0:
        w = own
    else:
        free = sa_free(tag, occ, i, si, s, ways)
        # one call site for the victim: each inlined copy of the policy dispatch costs compile time
        w = free if free >= 0 else policy_victim(pid, pstate, pk, si, s)
        if w < 0 or w >= ways:  # a policy kernel's bug must not write outside the set
            raise IndexError("a TLB policy's victim kernel returned a way outside its set")
    ev_c, ev_k, ev_value = tag[i, s, col(CTX, w, ways)], tag[i, s, col(KEY, w, ways)], tag[i, s, col(VAL, w, ways)]
    tag[i, s, col(VAL, w, ways)] = value
    policy_fill(pid, pstate, pk, si, s, w)
    if own >= 0:
        return False, -1, 0, 0
    if ways > INDEX_MIN_WAYS:
        if free >= 0:
            tag[i, s, tag.shape[2] - 1] += 1
        else:
            index_unlink(tag, i, s, w, ev_k, ways)
        index_link(tag, i, s, w, k, ways)
    tag[i, s, col(CTX, w, ways)] = c
    tag[i, s, col(KEY, w, ways)] = k
    if free >= 0:
        occ_add(occ, si, c, s * ways + w)
        return False, -1, 0, 0
    if ctx_vm(ev_c) != ctx_vm(c):  # the slot stays valid: only its VM's count moves
        occ[si, O_VMS + ctx_vm(ev_c)] -= 1
        occ[si, O_VMS + ctx_vm(c)] += 1
    return True, ev_c, ev_k, ev_value


@njit(cache=True, forceinline=True, _nrt=False)
def sa_drop(tag, pstate, pk, occ, pid, i, si, s, w, ways):
    if ways > INDEX_MIN_WAYS:
        index_unlink(tag, i, s, w, tag[i, s, col(KEY, w, ways)], ways)
        tag[i, s, tag.shape[2] - 1] -= 1
    occ_drop(occ, si, tag[i, s, col(CTX, w, ways)], s * ways + w)
    tag[i, s, col(CTX, w, ways)] = -1
    tag[i, s, col(KEY, w, ways)] = 0
    policy_invalidate(pid, pstate, pk, si, s, w)


@njit(cache=True, forceinline=True, _nrt=False)
def sa_remove(tag, pstate, pk, occ, pid, i, si, s, c, k, ways):
    w = sa_find(tag, i, s, c, k, ways)
    if w >= 0:
        sa_drop(tag, pstate, pk, occ, pid, i, si, s, w, ways)


# -- TLB hierarchy (slatframe/tlb.py) ------------------------------------------------------

@njit(cache=True, forceinline=True, _nrt=False)
def tlb_ctx(vm, asid, shift):
    return (vm << 24) | (asid << 8) | shift


@njit(cache=True, forceinline=True, _nrt=False)
def path_len(npath):
    """How many levels an access looks up (a constant in a shaped module)."""
    return npath if SHAPE_LEVELS == 0 else SHAPE_LEVELS


@njit(cache=True, forceinline=True, _nrt=False)
def path_level(path, depth):
    """The level an access looks up at ``depth`` (a constant in a shaped module)."""
    return path[depth] if SHAPE_LEVELS == 0 else depth


@njit(cache=True, forceinline=True, _nrt=False)
def level_nshifts(tcfg, level):
    """How many page sizes ``level`` holds."""
    return tcfg[level, T_NSHIFTS] if SHAPE_LEVELS == 0 else SHAPE_NSHIFTS[level]


@njit(cache=True, forceinline=True, _nrt=False)
def level_shift(tcfg, level, j):
    """The ``j``-th page size (its shift) ``level`` holds."""
    return tcfg[level, T_SHIFT0 + j] if SHAPE_LEVELS == 0 else SHAPE_SHIFTS[level][j]


@njit(cache=True, forceinline=True, _nrt=False)
def level_set(tcfg, level, key):
    """The set of ``level`` that ``key`` maps to."""
    if SHAPE_EXACT == 0:
        return set_of(key, tcfg[level, T_SETS], tcfg[level, T_MASK])
    return set_of(key, SHAPE_SETS[level], SHAPE_MASKS[level])


@njit(cache=True, forceinline=True, _nrt=False)
def level_ways(tcfg, level):
    """How many ways ``level``'s sets have."""
    return tcfg[level, T_WAYS] if SHAPE_EXACT == 0 else SHAPE_WAYS[level]


@njit(cache=True, forceinline=True, _nrt=False)
def level_pid(tcfg, level):
    """``level``'s TLB policy (its dispatch number)."""
    return tcfg[level, T_PID] if SHAPE_EXACT == 0 else SHAPE_PIDS[level]


@njit(cache=True, forceinline=True, _nrt=False)
def tlb_holds(tcfg, level, shift):
    for j in range(level_nshifts(tcfg, level)):
        if level_shift(tcfg, level, j) == shift:
            return True
    return False


@njit(cache=True, forceinline=True, _nrt=False)
def tlb_place(tcfg, ttag, pstate, pk, occ, level, row, c, k, value, absent):
    """Write one entry into ``level`` (its structure ``row``: see ``lrow`` in ``run``):
    (evicted?, and the evicted ctx, key, value); ``absent`` as sa_place."""
    s = level_set(tcfg, level, k)
    pid = level_pid(tcfg, level)
    return sa_place(ttag, pstate, pk, occ, pid, row, row, s, c, k, level_ways(tcfg, level), absent, value)


@njit(cache=True, _nrt=False)
def tlb_victim(tcfg, ttag, inclusion, pstate, pk, occ, lr, path, npath, pos, ev_c, ev_k, ev_value):
    """What an inclusive or exclusive hierarchy does with the entry an insert into
    path[pos] evicted (not inlined: non-inclusive hierarchies never come here)."""
    while True:
        if inclusion == 1:  # inclusive: back-invalidate the levels before this one
            for j in range(pos):
                lj = path[j]
                rj = lr[lj]
                sj = set_of(ev_k, tcfg[lj, T_SETS], tcfg[lj, T_MASK])
                sa_remove(ttag, pstate, pk, occ, tcfg[lj, T_PID], rj, rj, sj, ev_c, ev_k, tcfg[lj, T_WAYS])
            return
        ev_shift = ev_c & 0xFF  # exclusive: the victim moves to the next level holding its size
        nxt = -1
        for j in range(pos + 1, npath):
            if tlb_holds(tcfg, path[j], ev_shift):
                nxt = j
                break
        if nxt < 0:
            return
        evicted, ev_c, ev_k, ev_value = tlb_place(tcfg, ttag, pstate, pk, occ, path[nxt], lr[path[nxt]], ev_c, ev_k,
                                                  ev_value, False)
        if not evicted:
            return
        pos = nxt


@njit(cache=True, forceinline=True, _nrt=False)
def tlb_insert(tcfg, ttag, inclusion, pstate, pk, occ, lr, path, npath, pos, c, k, value, absent):
    """Insert into level path[pos]; handle the victim as the inclusion policy says;
    ``absent`` as sa_place."""
    level = path_level(path, pos)
    evicted, ev_c, ev_k, ev_value = tlb_place(tcfg, ttag, pstate, pk, occ, level, lr[level], c, k, value, absent)
    if evicted and inclusion != 0:
        tlb_victim(tcfg, ttag, inclusion, pstate, pk, occ, lr, path, npath, pos, ev_c, ev_k, ev_value)


@njit(cache=True, forceinline=True, _nrt=False)
def tlb_fill_from_walk(tcfg, ttag, inclusion, pstate, pk, occ, lr, path, npath, vm, asid, va, value, shift, missed):
    """Fill the levels of ``path`` that hold ``shift``. ``missed``: this access's lookup
    missed at every level of ``path``, for each of its page sizes, so no level holds the
    entry (a walk does not touch the TLB, and an insert into one level adds nothing to
    another), and each insert skips the search for the entry's own way."""
    c, k = tlb_ctx(vm, asid, shift), va >> shift
    for pos in range(path_len(npath)):
        if tlb_holds(tcfg, path_level(path, pos), shift):
            tlb_insert(tcfg, ttag, inclusion, pstate, pk, occ, lr, path, npath, pos, c, k, value, missed)
            if inclusion == 2:
                return


@njit(cache=True, _nrt=False)
def tlb_exclusive_hit(tcfg, ttag, inclusion, pstate, pk, occ, lr, path, npath, depth, c, k, value, shift):
    """An exclusive hierarchy moves a hit below the first level holding its size to that
    level (not inlined: other hierarchies never come here)."""
    first = -1
    for pos in range(npath):
        if tlb_holds(tcfg, path[pos], shift):
            first = pos
            break
    if first != depth:
        level = path[depth]
        row = lr[level]
        sl = set_of(k, tcfg[level, T_SETS], tcfg[level, T_MASK])
        sa_remove(ttag, pstate, pk, occ, tcfg[level, T_PID], row, row, sl, c, k, tcfg[level, T_WAYS])
        tlb_insert(tcfg, ttag, inclusion, pstate, pk, occ, lr, path, npath, first, c, k, value, False)


@njit(cache=True, forceinline=True, _nrt=False)
def tlb_fill_from_hit(tcfg, ttag, inclusion, pstate, pk, occ, lr, path, npath, depth, c, k, value, shift):
    """Fill the levels before ``depth`` (where the lookup hit) that hold ``shift``. Each of
    them was looked up for this page size just before and missed, and an insert adds the
    entry to its own level only (an inclusive victim is removed, never added), so no
    insert looks for the entry's own way (``absent``)."""
    if inclusion == 2:
        tlb_exclusive_hit(tcfg, ttag, inclusion, pstate, pk, occ, lr, path, npath, depth, c, k, value, shift)
        return
    for pos in range(depth):
        if tlb_holds(tcfg, path_level(path, pos), shift):
            tlb_insert(tcfg, ttag, inclusion, pstate, pk, occ, lr, path, npath, pos, c, k, value, True)


@njit(cache=True, forceinline=True, _nrt=False)
def occ_left(occ, si, scope, vm):
    """Whether structure si holds entries an invalidation of ``scope`` (3 all, else the
    VM's) may drop."""
    return occ[si, O_VALID] > 0 if scope == 3 else occ[si, O_VMS + vm] > 0


@njit(cache=True, _nrt=False)
def tlb_invalidate(tcfg, ttag, pstate, pk, occ, lr, scope, vm, asid, va):
    """scope: 0 page, 1 asid, 2 vm, 3 all (slatframe.tlb.TlbHierarchy.invalidate), in the
    levels of one core (``lr``: its row of ``lrow``, see ``run``). A level visits only
    its valid entries (occ), in set and way order, and only while the scope may have some
    left: a level without any costs nothing."""
    for lv in range(tcfg.shape[0]):
        level = lr[lv]  # the structure's row in ttag, pstate and occ
        sets, ways, pid = tcfg[lv, T_SETS], tcfg[lv, T_WAYS], tcfg[lv, T_PID]
        if scope == 0:
            for j in range(tcfg[lv, T_NSHIFTS]):
                shift = tcfg[lv, T_SHIFT0 + j]
                vpn = va >> shift
                s = set_of(vpn, sets, tcfg[lv, T_MASK])
                sa_remove(ttag, pstate, pk, occ, pid, level, level, s, tlb_ctx(vm, asid, shift), vpn, ways)
            continue
        slot = occ_next(occ, level, 0) if occ_left(occ, level, scope, vm) else -1
        while slot >= 0:
            s = slot // ways
            w = slot - s * ways
            c = sa_ctx(ttag, level, s, w, ways)
            occ[level, O_EXAMINED] += 1
            if scope == 3 or ctx_vm(c) == vm and (scope == 2 or ((c >> 8) & 0xFFFF) == asid):
                sa_drop(ttag, pstate, pk, occ, pid, level, level, s, w, ways)
                occ[level, O_REMOVED] += 1
                if not occ_left(occ, level, scope, vm):
                    break
            slot = occ_next(occ, level, slot + 1)


# -- walk caches (slatframe/walkcache.py) ------------------------------------------------

@njit(cache=True, forceinline=True, _nrt=False)
def wc_of(wcfg, j, field):
    """Field ``field`` (W_*) of walk cache ``j``."""
    return wcfg[G_ROWS + W_COLUMNS * j + field]


@njit(cache=True, forceinline=True, _nrt=False)
def wc_count(wcfg, row):
    """The length of list ``row`` (L_*)."""
    return wcfg[G_COUNT + row]


@njit(cache=True, forceinline=True, _nrt=False)
def wc_list(wcfg, row, p):
    """Entry ``p`` of list ``row`` (L_*): a walk cache."""
    return wcfg[wcfg[G_LISTS] + row * wcfg[G_CACHES] + p]


@njit(cache=True, forceinline=True, _nrt=False)
def wc_probe(wcfg, dim, p, k):
    """Probe ``p`` of dimension ``dim``'s start point: its cache (k 0) or level (k 1)."""
    return wcfg[wcfg[G_PROBE] + 2 * (dim * wcfg[G_PROBES] + p) + k]


@njit(cache=True, forceinline=True, _nrt=False)
def wc_ctx(dim, vm, asid, level):
    return (dim << 40) | (vm << 24) | (asid << 8) | level


@njit(cache=True, _nrt=False)
def wc_invalidate(wcfg, wtag, pstate, pk, occ, cstate, ck, base, scope, vm, asid):
    """scope as tlb_invalidate; each kind drops what its reference class drops, visiting
    only its valid entries, as tlb_invalidate (scopes 0 and 1 drop entries of the VM)."""
    for j in range(wcfg[G_CACHES]):
        kind = wc_of(wcfg, j, W_KIND)
        if kind >= START:  # a plugin's kind
            call_forget(ck[2, wc_of(wcfg, j, W_PID)], cstate, j, scope, vm, asid)
            continue
        if kind == 0 or (kind == TRANSLATION and scope < 2):
            continue
        si, ways = base + j, wc_of(wcfg, j, W_WAYS)
        slot = occ_next(occ, si, 0) if occ_left(occ, si, scope, vm) else -1
        while slot >= 0:
            s = slot // ways
            w = slot - s * ways
            c = sa_ctx(wtag, j, s, w, ways)
            occ[si, O_EXAMINED] += 1
            c_dim, c_vm, c_asid = c >> 40, ctx_vm(c), (c >> 8) & 0xFFFF
            if scope < 2:
                drop = c_dim == GUEST and c_vm == vm and (kind == ENTRY or c_asid == asid)
            elif scope == 2:
                drop = c_vm == vm
            else:
                drop = True
            if drop:
                sa_drop(wtag, pstate, pk, occ, wc_of(wcfg, j, W_PID), j, si, s, w, ways)
                occ[si, O_REMOVED] += 1
                if not occ_left(occ, si, scope, vm):
                    break
            slot = occ_next(occ, si, slot + 1)


@njit(cache=True, _nrt=False)
def wc_fill(wcfg, wtag, pstate, pk, occ, base, j, s, c, k, value):
    pid = wc_of(wcfg, j, W_PID)
    sa_place(wtag, pstate, pk, occ, pid, j, base + j, s, c, k, wc_of(wcfg, j, W_WAYS), False, value)


@njit(cache=True, forceinline=True, _nrt=False)
def wc_probe_prefix(wcfg, wtag, pstate, pk, cstate, ck, base, cnt, hitbase, fmts, dim, vm,
                    asid, address):
    """The first start-point hit, in the reference walker's order (wc_probe: builtin PSCs
    deepest first, then plugins' start caches): (level to read next, table) or (-1, 0)."""
    levels = fmts[dim, F_LEVELS]
    for p in range(wc_count(wcfg, L_PROBE + dim)):
        j, level = wc_probe(wcfg, dim, p, 0), wc_probe(wcfg, dim, p, 1)
        if wc_of(wcfg, j, W_KIND) == START:  # a plugin's start cache, through its kernel
            found = call_probe(ck[0, wc_of(wcfg, j, W_PID)], cstate, j, dim, vm, asid, address, fmts)
            if found >= 0:
                if (found & PAGE_MASK) < 1 or (found & PAGE_MASK) >= levels:  # a kernel's bug must not walk off
                    raise ValueError("a start cache's probe kernel returned a level outside 1 to the format's "
                                     "levels - 1")
                cnt[hitbase + 2 * j] += 1
                return found & PAGE_MASK, found & ~PAGE_MASK
            cnt[hitbase + 2 * j + 1] += 1
            continue
        pre = address >> fmts[dim, F_SHIFT + level]
        s = set_of(pre, wc_of(wcfg, j, W_SETS), wc_of(wcfg, j, W_MASK))
        w = sa_lookup(wtag, pstate, pk, wc_of(wcfg, j, W_PID), j, base + j, s, wc_ctx(dim, vm, asid, level), pre,
                      wc_of(wcfg, j, W_WAYS))
        if w >= 0:
            cnt[hitbase + 2 * j] += 1
            return level - 1, sa_value(wtag, j, s, w, wc_of(wcfg, j, W_WAYS))
        cnt[hitbase + 2 * j + 1] += 1
    return -1, 0


@njit(cache=True, forceinline=True, _nrt=False)
def wc_fill_prefix(wcfg, wtag, pstate, pk, occ, cstate, ck, base, fmts, dim, vm, asid, address, level,
                   table):
    for p in range(wc_count(wcfg, L_PREFIX + dim)):
        j = wc_list(wcfg, L_PREFIX + dim, p)
        if wc_of(wcfg, j, W_LEVELS) >> level & 1:
            pre = address >> fmts[dim, F_SHIFT + level]
            s = set_of(pre, wc_of(wcfg, j, W_SETS), wc_of(wcfg, j, W_MASK))
            wc_fill(wcfg, wtag, pstate, pk, occ, base, j, s, wc_ctx(dim, vm, asid, level), pre, table)
    for p in range(wc_count(wcfg, L_START + dim)):
        j = wc_list(wcfg, L_START + dim, p)
        call_learn(ck[1, wc_of(wcfg, j, W_PID)], cstate, j, dim, vm, asid, address, level, table, fmts)


@njit(cache=True, forceinline=True, _nrt=False)
def read_entry(slot_of, words, fmts, wcfg, wtag, pstate, pk, cstate, ck, base, cnt, hitbase, dim,
               vm, asid, level, pa):
    """(entry, from an entry-point cache?); reads memory (one reference) on a miss."""
    for p in range(wc_count(wcfg, L_ENTRY + dim)):
        j = wc_list(wcfg, L_ENTRY + dim, p)
        if wc_of(wcfg, j, W_LEVELS) >> (level + 8 * dim) & 1:
            if wc_of(wcfg, j, W_KIND) == ENTRY_PLUGIN:
                got = call_eprobe(ck[0, wc_of(wcfg, j, W_PID)], cstate, j, dim, vm, asid, level, pa, fmts)
                if got >= 0:
                    cnt[hitbase + 2 * j] += 1
                    return got, True
                cnt[hitbase + 2 * j + 1] += 1
                continue
            line = pa >> fmts[dim, F_ESHIFT]
            s = set_of(line, wc_of(wcfg, j, W_SETS), wc_of(wcfg, j, W_MASK))
            w = sa_lookup(wtag, pstate, pk, wc_of(wcfg, j, W_PID), j, base + j, s, wc_ctx(dim, vm, asid, 0), line,
                          wc_of(wcfg, j, W_WAYS))
            if w >= 0:
                cnt[hitbase + 2 * j] += 1
                return sa_value(wtag, j, s, w, wc_of(wcfg, j, W_WAYS)), True
            cnt[hitbase + 2 * j + 1] += 1
    return entry_load(slot_of, words, fmts, dim, pa), False


@njit(cache=True, forceinline=True, _nrt=False)
def fill_entry(wcfg, wtag, pstate, pk, occ, cstate, ck, base, fmts, dim, vm, asid, level, pa, entry):
    for p in range(wc_count(wcfg, L_ENTRY + dim)):
        j = wc_list(wcfg, L_ENTRY + dim, p)
        if wc_of(wcfg, j, W_LEVELS) >> (level + 8 * dim) & 1:
            if wc_of(wcfg, j, W_KIND) == ENTRY_PLUGIN:
                call_efill(ck[1, wc_of(wcfg, j, W_PID)], cstate, j, dim, vm, asid, level, pa, entry, fmts)
                continue
            line = pa >> fmts[dim, F_ESHIFT]
            s = set_of(line, wc_of(wcfg, j, W_SETS), wc_of(wcfg, j, W_MASK))
            wc_fill(wcfg, wtag, pstate, pk, occ, base, j, s, wc_ctx(dim, vm, asid, 0), line, entry)


# -- walk recording (slatframe/walk_record.py) ---------------------------------------------
# Kept in ``out`` after the walk's own columns, so the loop takes no array more for it:
# WT_ON (recording asked for), WT_EVERY, WT_LIMIT, WT_SEEN (walks started), WT_RECORDED,
# WT_ROWS / WT_REFS (rows since Python last drained them), WT_OPEN (the walk now running
# is recorded), WT_BASE (the trace index of the chunk's record 0), WT_CACHES, and where
# the rows start: walk rows (record, vm, asid, va, op, fault, result, page shift, first
# ref, refs, cache hits, cache misses) at WT_WALKS_AT, reference rows (pa, level | dim << 8
# | cached << 9) at WT_REFS_AT.

@njit(cache=True, _nrt=False)
def wt_probes(cnt, hitbase, caches, miss):
    total = 0
    for j in range(caches):
        total += cnt[hitbase + 2 * j + miss]
    return total


@njit(cache=True, _nrt=False)
def wt_begin(out, cnt, hitbase, i, vm, asid, va, op):
    """A walk starts: record it if it is sampled (as WalkRecorder.begin)."""
    seen = out[WT_SEEN]
    out[WT_SEEN] = seen + 1
    if out[WT_RECORDED] < out[WT_LIMIT] and seen % out[WT_EVERY] == 0:
        r = out[WT_WALKS_AT] + out[WT_ROWS] * WT_WALK_COLUMNS
        out[r], out[r + 1], out[r + 2], out[r + 3], out[r + 4] = out[WT_BASE] + i, vm, asid, va, op
        out[r + 8] = out[WT_REFS]
        out[r + 10] = wt_probes(cnt, hitbase, out[WT_CACHES], 0)
        out[r + 11] = wt_probes(cnt, hitbase, out[WT_CACHES], 1)
        out[WT_OPEN] = 1


@njit(cache=True, forceinline=True, _nrt=False)
def wt_ref(out, pa, level, dim, cached):
    k = out[WT_REFS]
    at = out[WT_REFS_AT] + 2 * k
    out[at] = pa
    out[at + 1] = level | (dim << 8) | ((1 if cached else 0) << 9)
    out[WT_REFS] = k + 1


@njit(cache=True, _nrt=False)
def wt_end(out, cnt, hitbase):
    """The walk ended (out as walk leaves it); a walk that found no root never started."""
    if out[0] == NO_ROOT:
        out[WT_SEEN] -= 1
        out[WT_OPEN] = 0
        return
    if out[WT_OPEN] == 0:
        return
    r = out[WT_WALKS_AT] + out[WT_ROWS] * WT_WALK_COLUMNS
    out[r + 5] = out[0]
    if out[0] == 0:
        out[r + 6], out[r + 7] = out[2], out[3]
    else:
        out[r + 6], out[r + 7] = out[1], 0
    out[r + 9] = out[WT_REFS] - out[r + 8]
    out[r + 10] = wt_probes(cnt, hitbase, out[WT_CACHES], 0) - out[r + 10]
    out[r + 11] = wt_probes(cnt, hitbase, out[WT_CACHES], 1) - out[r + 11]
    out[WT_ROWS] += 1
    out[WT_RECORDED] += 1
    out[WT_OPEN] = 0


# -- walks (slatframe/walker.py) ---------------------------------------------------------




@njit(cache=True, forceinline=True, _nrt=False)
def walk(slot_of, words, fmts, roots, host_roots, wcfg, wtag, pstate, pk, occ, cstate,
         ck, base, cnt, hitbase, vm, asid, va, op, out, dcfg, dctl, dtag, dage):
    """One hardware walk (slatframe.walker.Walker.walk), both dimensions in one loop.

    The guest loop reads one guest entry per turn; in a 2D walk every table address it
    reads at, and finally the data's gPA, first goes through the nested TLBs or the host
    loop (written once, below). On success out = [0, 0, page, shift, writable, dirty];
    on a fault out = [kind, address]."""
    root = roots[vm, asid] if asid < roots.shape[1] else -1
    if root < 0:
        out[0] = NO_ROOT
        out[1] = va
        return
    write = op == WRITE
    two_d = wcfg[H_2D] != 0
    host_ad = wcfg[H_HOST_AD] != 0
    g_refs = h_refs = ad_writes = 0
    status = fault_at = 0
    levels = fmts[GUEST, F_LEVELS]
    glevel, gtable = wc_probe_prefix(wcfg, wtag, pstate, pk, cstate, ck, base, cnt,
                                     hitbase, fmts, GUEST, vm, asid, va)
    physical = glevel >= 0 or not two_d
    if glevel < 0:
        glevel, gtable = levels, root
    gpending = 0
    final = False  # the guest leaf is found: translate the data's gPA
    gentry = gpa = hpa = hsize = 0
    host_writable = host_dirty = 1
    while True:
        addr = gpa if final else entry_pa(fmts, GUEST, gtable, va, glevel)
        pa = addr
        if not physical:
            # -- gPA -> hPA: nested TLBs, else a walk of the second-level tables --------
            table_access = not final
            hwrite = write and final
            served = 2 if table_access else 1  # the W_SERVES bit of this gPA
            need_dirty = host_ad and (hwrite or (table_access and wcfg[H_TABLE_DIRTY] != 0))
            c = wc_ctx(HOST, vm, 0, 0)
            page = addr >> 12
            hit = False
            for p in range(wc_count(wcfg, L_NTLB)):
                j = wc_list(wcfg, L_NTLB, p)
                if (wc_of(wcfg, j, W_SERVES) & served) == 0:
                    continue
                if wc_of(wcfg, j, W_KIND) == HOST_PLUGIN:
                    value = call_hprobe(ck[0, wc_of(wcfg, j, W_PID)], cstate, j, vm, addr, 1 if hwrite else 0,
                                        1 if need_dirty else 0)
                    if value >= 0:
                        cnt[hitbase + 2 * j] += 1
                        pa = (value & ~PAGE_MASK) | (addr & PAGE_MASK)
                        hsize = 1 << (value & V_SHIFT)
                        host_writable, host_dirty = (value >> V_WRITABLE) & 1, (value >> V_DIRTY) & 1
                        hit = True
                        break
                    cnt[hitbase + 2 * j + 1] += 1
                    continue
                s = set_of(page, wc_of(wcfg, j, W_SETS), wc_of(wcfg, j, W_MASK))
                w = sa_lookup(wtag, pstate, pk, wc_of(wcfg, j, W_PID), j, base + j, s, c, page, wc_of(wcfg, j, W_WAYS))
                if w >= 0:
                    value = sa_value(wtag, j, s, w, wc_of(wcfg, j, W_WAYS))
                    nt_writable, nt_dirty = (value >> V_WRITABLE) & 1, (value >> V_DIRTY) & 1
                    if (not hwrite or nt_writable != 0) and (not need_dirty or nt_dirty != 0):
                        cnt[hitbase + 2 * j] += 1
                        pa = (value & ~PAGE_MASK) | (addr & PAGE_MASK)
                        hsize, host_writable, host_dirty = 1 << (value & V_SHIFT), nt_writable, nt_dirty
                        hit = True
                        break
                cnt[hitbase + 2 * j + 1] += 1
            if not hit:
                hlevels = fmts[HOST, F_LEVELS]
                hlevel, htable = wc_probe_prefix(wcfg, wtag, pstate, pk, cstate, ck, base,
                                                 cnt, hitbase, fmts, HOST, vm, 0, addr)
                if hlevel < 0:
                    hlevel, htable = hlevels, host_roots[vm]
                hpending = 0
                while True:
                    hpa_entry = entry_pa(fmts, HOST, htable, addr, hlevel)
                    if hpending:
                        wc_fill_prefix(wcfg, wtag, pstate, pk, occ, cstate, ck, base, fmts, HOST, vm, 0,
                                       addr, hpending, hpa_entry & ~PAGE_MASK)
                    hentry, cached = read_entry(slot_of, words, fmts, wcfg, wtag, pstate, pk, cstate,
                                                ck, base, cnt, hitbase, HOST, vm, 0, hlevel, hpa_entry)
                    if out[WT_OPEN] != 0:
                        wt_ref(out, hpa_entry, hlevel, HOST, cached)
                    if not cached:
                        h_refs += 1
                        if dctl[0] != 0:  # no call (and its argument marshalling) without caches
                            dc_access(dcfg, dctl, dtag, dage, cnt, hpa_entry, 0)
                    if (hentry & fmts[HOST, F_PRESENT]) == 0:
                        status = HOST_NOT_PRESENT
                        break
                    hentry, leaf, protection, wrote = entry_step(slot_of, words, fmts, HOST, hpa_entry, hentry,
                                                                 hlevel, host_ad, need_dirty, hwrite)
                    if wrote:
                        ad_writes += 1
                    if leaf:
                        if protection:
                            status = HOST_PROTECTION
                        break
                    if not cached:
                        fill_entry(wcfg, wtag, pstate, pk, occ, cstate, ck, base, fmts, HOST, vm, 0,
                                   hlevel, hpa_entry, hentry)
                    hpending = hlevel
                    htable = frame_of(fmts, HOST, hentry, hlevel)
                    hlevel -= 1
                if status != 0:
                    fault_at = addr
                    break
                hshift = fmts[HOST, F_SHIFT + hlevel]
                hsize = 1 << hshift
                pa = frame_of(fmts, HOST, hentry, hlevel) | (addr & (hsize - 1))
                host_writable = 1 if (hentry & fmts[HOST, F_WRITE]) != 0 else 0
                host_dirty = 1 if not host_ad or fmts[HOST, F_DIRTY] == 0 or (hentry & fmts[HOST, F_DIRTY]) != 0 \
                    else 0
                for p in range(wc_count(wcfg, L_NTLB)):
                    j = wc_list(wcfg, L_NTLB, p)
                    if wc_of(wcfg, j, W_SERVES) & served:
                        value = pack(pa & ~PAGE_MASK, hshift, host_writable, host_dirty)
                        if wc_of(wcfg, j, W_KIND) == HOST_PLUGIN:
                            call_hfill(ck[1, wc_of(wcfg, j, W_PID)], cstate, j, vm, addr, served >> 1, value)
                            continue
                        s = set_of(page, wc_of(wcfg, j, W_SETS), wc_of(wcfg, j, W_MASK))
                        wc_fill(wcfg, wtag, pstate, pk, occ, base, j, s, c, page, value)
        if final:
            hpa = pa
            break
        # -- one guest entry, at physical address pa ----------------------------------------
        if gpending:
            wc_fill_prefix(wcfg, wtag, pstate, pk, occ, cstate, ck, base, fmts, GUEST, vm, asid, va,
                           gpending, pa & ~PAGE_MASK)
        entry, cached = read_entry(slot_of, words, fmts, wcfg, wtag, pstate, pk, cstate, ck, base,
                                   cnt, hitbase, GUEST, vm, asid, glevel, pa)
        if out[WT_OPEN] != 0:
            wt_ref(out, pa, glevel, GUEST, cached)
        if not cached:
            g_refs += 1
            if dctl[0] != 0:
                dc_access(dcfg, dctl, dtag, dage, cnt, pa, 0)
        if (entry & fmts[GUEST, F_PRESENT]) == 0:
            status, fault_at = GUEST_NOT_PRESENT, va
            break
        entry, leaf, protection, wrote = entry_step(slot_of, words, fmts, GUEST, pa, entry, glevel, True, write,
                                                    write)
        if wrote:
            ad_writes += 1
        if leaf:
            if protection:
                status, fault_at = GUEST_PROTECTION, va
                break
            gentry = entry
            gpa = frame_of(fmts, GUEST, entry, glevel) | (va & ((1 << fmts[GUEST, F_SHIFT + glevel]) - 1))
            if not two_d:
                hpa = gpa
                break
            final = True
            physical = False
            continue
        if not cached:
            fill_entry(wcfg, wtag, pstate, pk, occ, cstate, ck, base, fmts, GUEST, vm, asid, glevel, pa,
                       entry)
        gpending = glevel
        gtable = frame_of(fmts, GUEST, entry, glevel)
        physical = not two_d
        glevel -= 1
    if status != 0:
        out[0] = status
        out[1] = fault_at
        cnt[C_ABORTED] += 1
        cnt[C_REFS_ABORTED] += g_refs + h_refs
        cnt[C_AD_WRITES] += ad_writes
        return
    shift = fmts[GUEST, F_SHIFT + glevel]
    writable = 1 if (gentry & fmts[GUEST, F_WRITE]) != 0 else 0
    dirty = 1 if fmts[GUEST, F_DIRTY] == 0 or (gentry & fmts[GUEST, F_DIRTY]) != 0 else 0
    if two_d:
        writable &= host_writable
        dirty &= host_dirty
        if hsize < (1 << shift):
            cnt[C_SPLINTERED] += 1
            shift = 12
            while (1 << shift) < hsize:
                shift += 1
    total = g_refs + h_refs
    cnt[C_WALKS] += 1
    cnt[C_REFS] += total
    cnt[C_REFS_GUEST] += g_refs
    cnt[C_REFS_HOST] += h_refs
    cnt[C_AD_WRITES] += ad_writes
    if total > cnt[C_REFS_MAX]:
        cnt[C_REFS_MAX] = total
    out[0] = 0
    out[2] = hpa & ~((1 << shift) - 1)
    out[3] = shift
    out[4] = writable
    out[5] = dirty


# The walk memo of plain_walk: what a walk of the 4K page (vm, asid, vpn) returned, so
# that the next walk of it is counted without reading the tables again. A plain walk (no
# walk cache, no data cache) that finds every entry on its path present with its accessed
# flag set (and, for a write, the leaf dirty) reads and writes nothing that could change
# its result, so its result and counts are those of the last walk of the page, as long as
# no table entry changed since. Within one call of the loop tables change only by the
# walks' own accessed/dirty writes (the software side changes them between calls), so
# the memo is valid for one generation: each call of ``run`` starts a new one, and so does
# every walk that writes an entry (a dirty flag set on a large page's leaf changes what a
# walk of its other 4K pages returns). memo[0, 0] is the generation; row 1 + h is (vpn,
# vm << 32 | asid, generation, packed TLB value | references << 8: bits 8-11, which a
# packed value leaves clear).
MEMO_ROWS = 2048  # a power of two
WRITABLE_DIRTY = (1 << V_WRITABLE) | (1 << V_DIRTY)


@njit(cache=True, forceinline=True, _nrt=False)
def memo_row(vm, asid, vpn):
    return 1 + ((((vpn ^ (asid << 20) ^ (vm << 36)) * HASH_MUL) >> 40) & (MEMO_ROWS - 1))


@njit(cache=True, forceinline=True, _nrt=False)
def plain_walk_done(cnt, out, refs, value):
    """Count a plain walk that translated, with ``refs`` references, and report its
    packed TLB ``value`` in ``out`` (as walk() reports)."""
    cnt[C_WALKS] += 1
    cnt[C_REFS] += refs
    cnt[C_REFS_GUEST] += refs
    if refs > cnt[C_REFS_MAX]:
        cnt[C_REFS_MAX] = refs
    out[0] = 0
    out[2] = value & ~PAGE_MASK
    out[3] = value & V_SHIFT
    out[4] = (value >> V_WRITABLE) & 1
    out[5] = (value >> V_DIRTY) & 1


@njit(cache=True, forceinline=True, _nrt=False)
def plain_walk(slot_of, words, fmts, roots, cnt, vm, asid, va, op, out, memo):
    """walk() for the commonest case, with nothing it does not need: one dimension, no
    walk cache of any kind, no data caches, no walk recorded (the loop's ``plain``).
    The same references, A/D writes, faults and counts as walk() then; a walk the memo
    (above) holds is counted from it."""
    write = op == WRITE
    vpn = va >> 12
    r = memo_row(vm, asid, vpn)
    if memo[r, 0] == vpn and memo[r, 1] == (vm << 32 | asid) and memo[r, 2] == memo[0, 0]:
        v = memo[r, 3]
        if not write or (v & WRITABLE_DIRTY) == WRITABLE_DIRTY:  # else the walk writes the dirty flag, or faults
            plain_walk_done(cnt, out, (v >> 8) & 15, v & ~0xF00)
            return
    root = roots[vm, asid] if asid < roots.shape[1] else -1
    if root < 0:
        out[0] = NO_ROOT
        out[1] = va
        return
    level = fmts[GUEST, F_LEVELS]
    table = root
    refs = ad_writes = 0
    while True:
        pa = entry_pa(fmts, GUEST, table, va, level)
        entry = entry_load(slot_of, words, fmts, GUEST, pa)
        refs += 1
        if (entry & fmts[GUEST, F_PRESENT]) == 0:
            status = GUEST_NOT_PRESENT
            break
        entry, leaf, protection, wrote = entry_step(slot_of, words, fmts, GUEST, pa, entry, level, True, write,
                                                    write)
        if wrote:
            ad_writes += 1
        if leaf:
            status = GUEST_PROTECTION if protection else 0
            break
        table = frame_of(fmts, GUEST, entry, level)
        level -= 1
    cnt[C_AD_WRITES] += ad_writes
    if status != 0:
        out[0] = status
        out[1] = va
        cnt[C_ABORTED] += 1
        cnt[C_REFS_ABORTED] += refs
        return
    shift = fmts[GUEST, F_SHIFT + level]
    value = pack(frame_of(fmts, GUEST, entry, level) & ~((1 << shift) - 1), shift,
                 1 if (entry & fmts[GUEST, F_WRITE]) != 0 else 0,
                 1 if fmts[GUEST, F_DIRTY] == 0 or (entry & fmts[GUEST, F_DIRTY]) != 0 else 0)
    plain_walk_done(cnt, out, refs, value)
    if ad_writes:
        memo[0, 0] += 1  # an entry changed: what the memo holds may be stale
    memo[r, 0] = vpn
    memo[r, 1] = vm << 32 | asid
    memo[r, 2] = memo[0, 0]
    memo[r, 3] = value | (refs << 8)


@njit(cache=True, forceinline=True, _nrt=False)
def count_walk(cnt, out):
    """Count a walk plugin's walk from its ``out`` (as slatframe.counters.Counters does)."""
    if out[O_FAULT] == NO_ROOT:  # no root loaded: no walk started (as slatframe.walker)
        return
    refs = out[O_REFS_GUEST] + out[O_REFS_HOST]
    cnt[C_AD_WRITES] += out[O_AD_WRITES]
    if out[O_FAULT] != 0:
        cnt[C_ABORTED] += 1
        cnt[C_REFS_ABORTED] += refs
        return
    cnt[C_WALKS] += 1
    cnt[C_REFS] += refs
    cnt[C_REFS_GUEST] += out[O_REFS_GUEST]
    cnt[C_REFS_HOST] += out[O_REFS_HOST]
    if refs > cnt[C_REFS_MAX]:
        cnt[C_REFS_MAX] = refs
    cnt[C_SPLINTERED] += out[O_SPLINTERED]


# -- demand paging (slatframe/engine/demand.py): the pager, compiled apart, is called by its
# address; the loop reads two of its control words (slatframe/engine/pager_kernel.py)
PG_ON = 0  # 1: the pager may serve faults
PG_KERNEL = 1  # its address
SERVED_MAX = 4  # faults the pager serves for one record (a guest's, then a host's): more go to Python


# -- the loop --------------------------------------------------------------------------------

@njit(cache=True, nogil=True, _nrt=False)
def run(chunk, start, stop, resume_walk, hpa_out, record_hpa, place, current_asid, last_vcpu, core_of,
        slot_of, words, fmts, roots, host_roots, tcfg, ttag, lrow, inclusion,
        wcfg, wtag, pstate, pk, cnt2d, out, paths, npaths, content, written,
        track_writes, dcfg, dctl, dtag, dage, wk, wstate, cstate, ck, memo, occ, pg, pvm, plog, hlog):
    """Process records ``start`` to ``stop`` of ``chunk`` (a C-contiguous TRACE_DTYPE
    array, read in place); returns (status, index). On FAULT, ``out`` holds
    the fault and the record is resumed with ``resume_walk``; on EVENT the software side
    handles record ``index`` first. ``paths[0]`` / ``paths[1]`` list the levels an
    instruction fetch / a data access looks up; ``wcfg`` is the walk's configuration
    (its layout above, from H_2D). With ``track_writes`` a write gives its
    host frame the next content id (``written[0]``); with ``dctl[1]`` the access goes
    through the data caches (after its walk's references). ``wk``: the address of a walk
    plugin's kernel (0: the radix walk here), called with its ``wstate``; ``cstate`` and
    ``ck`` are the plugins' start caches' states and kernel addresses. ``out`` also
    holds the walk recording's control columns and rows (``out[WT_ON]`` 0: no walk is
    recorded). ``memo`` is plain_walk's walk memo, valid for this call only; ``occ`` the
    TLB levels' and walk caches' occupancy (above, before sa_find). ``pg``, ``pvm``,
    ``plog`` and ``hlog``: the demand pager's (slatframe/engine/pager_kernel.py).

    Cores and vCPUs: with ``wcfg[H_SMP]`` nonzero (a machine of several cores or vCPUs),
    ``place`` is (vcpu, core, first, vcpus, home): record i runs on vCPU ``vcpu[i]`` of its VM
    (machine-wide vCPU ``first[vm] + vcpu[i]``) and core ``core[i]``, or, when ``home`` is not
    empty, on vCPU ``thread mod vcpus[vm]`` of its VM (its thread field) and that machine-wide
    vCPU's home core ``home[first[vm] + vCPU]``; else
    every record runs on core 0, and VM v's only vCPU is vCPU v. ``current_asid[vcpu]``
    and ``last_vcpu[core]`` are the software side's; the loop stops (EVENT) at a record
    whose vCPU is not the last one on its core, or (several vCPUs) whose vCPU starts
    running an address space, or that runs on another core than ``core_of[vcpu]`` (the
    core each vCPU last ran on, which Python keeps: a vCPU's first record, or a move,
    which flushes its TLB context there). ``lrow[core, level]`` is the row of TLB level
    ``level`` of ``core`` in ``ttag``, ``pstate`` and ``occ`` (a shared level has one row
    for all cores); walk cache j of
    ``core`` is ``wtag[core, j]`` and ``cstate[core, j]``, and row ``ttag.shape[0] +
    core * wcfg[G_CACHES] + j`` of ``pstate`` and ``occ``. A record's counts go to row
    ``vcpu * cores + core`` of ``cnt2d`` (row 0 with one core and one vCPU per VM),
    which Python charges to that vCPU's and core's scope. Compiled
    without numba's reference counting (``_nrt=False``):
    nothing here allocates; and without the GIL (``nogil``), so that a reader thread
    (:mod:`slatframe.prefetch`) prepares the next chunk meanwhile."""
    n = stop
    hitbase = C_FIXED + 2 * tcfg.shape[0]
    smp = wcfg[H_SMP] != 0
    ncores, rows, ncaches = lrow.shape[0], ttag.shape[0], wcfg[G_CACHES]
    vcpu = core = crow = 0
    pvcpu, pcore, first, vcpus, home = place
    by_thread = home.shape[0] != 0
    served_at, served = -1, 0  # the record whose faults the loop served last, and how many
    cnt, lr = cnt2d[0], lrow[0]
    plain = wk == 0 and wcfg[H_2D] == 0 and dctl[0] == 0 and out[WT_ON] == 0  # plain_walk() will do
    for p in range(L_START + 2):
        if wc_count(wcfg, p) != 0:
            plain = False
    memo[0, 0] += 1  # the software side may have changed tables since the last call
    i = start
    while i < n:
        rec = chunk[i]
        vm, asid, op, va = np.int64(rec["vm"]), np.int64(rec["asid"]), np.int64(rec["op"]), np.int64(rec["vaddr"])
        if smp:
            if by_thread:
                thread, k = np.int64(rec["thread"]), vcpus[vm]
                vcpu = first[vm] + (thread if thread < k else thread % k)
                core = home[vcpu]
            else:
                vcpu, core = first[vm] + pvcpu[i], pcore[i]
            crow = vcpu * ncores + core  # its row of counts (views of it and of lrow only off the hit path)
        else:
            vcpu = vm
        side = 0 if op == IFETCH else 1
        path = paths[side]
        npath = npaths[side]
        translated = False  # a TLB hit that needs no walk
        missed = False  # the lookup ran and missed at every level
        if not resume_walk:
            if vcpu != last_vcpu[core] or op >= CONTEXT_SWITCH:
                return EVENT, i
            running = current_asid[vcpu]
            if running != asid:
                if running >= 0 or smp:  # (a vCPU's first address space enters its mm_cpumask, in Python)
                    return EVENT, i
                current_asid[vcpu] = asid
            if smp and core_of[vcpu] != core:  # a vCPU's first record, or it moved: Python flushes (coherence.at)
                return EVENT, i
            cnt2d[crow, C_ACCESSES] += 1
            found = False
            s = w = c = vpn = shift = value = 0
            for depth in range(path_len(npath)):
                level = path_level(path, depth)
                row = lrow[core, level]
                for j in range(level_nshifts(tcfg, level)):
                    shift = level_shift(tcfg, level, j)
                    vpn = va >> shift
                    s = level_set(tcfg, level, vpn)
                    c = tlb_ctx(vm, asid, shift)
                    w = sa_lookup(ttag, pstate, pk, level_pid(tcfg, level), row, row, s, c, vpn,
                                  level_ways(tcfg, level))
                    if w >= 0:
                        found = True
                        break
                if found:
                    cnt2d[crow, C_FIXED + 2 * level] += 1
                    value = sa_value(ttag, row, s, w, level_ways(tcfg, level))
                    if depth > 0:
                        tlb_fill_from_hit(tcfg, ttag, inclusion, pstate, pk, occ, lrow[core], path, npath, depth, c,
                                          vpn, value, shift)
                    break
                cnt2d[crow, C_FIXED + 2 * level + 1] += 1
            writable_dirty = (1 << V_WRITABLE) | (1 << V_DIRTY)
            if found and not (op == WRITE and (value & writable_dirty) != writable_dirty):
                translated = True
            elif found:
                cnt2d[crow, C_ON_HIT] += 1
            else:
                missed = True
        if not translated:
            cnt, lr = cnt2d[crow], lrow[core]
            resume_walk = False
            if plain:
                plain_walk(slot_of, words, fmts, roots, cnt, vm, asid, va, op, out, memo)
            elif wk != 0:
                call_walk(wk, slot_of, words, wstate, dcfg, dctl, dtag, dage, cnt, vm, asid, va, op, out)
                count_walk(cnt, out)
            else:
                if out[WT_ON] != 0:
                    wt_begin(out, cnt, hitbase, i, vm, asid, va, op)
                walk(slot_of, words, fmts, roots, host_roots, wcfg, wtag[core], pstate, pk, occ, cstate[core], ck,
                     rows + core * ncaches, cnt, hitbase, vm, asid, va, op, out, dcfg, dctl, dtag, dage)
                if out[WT_ON] != 0:
                    wt_end(out, cnt, hitbase)
            if out[0] != 0:
                if served_at != i:
                    served_at, served = i, 0
                if pg[PG_ON] != 0 and served < SERVED_MAX and (out[0] == GUEST_NOT_PRESENT or
                                                               out[0] == HOST_NOT_PRESENT) and \
                        call_pager(pg[PG_KERNEL], slot_of, words, fmts, roots, host_roots, pg, pvm, plog, hlog, cnt,
                                   vm, asid, out[1], out[0], wcfg[H_2D]) != 0:
                    served += 1  # (a record that faults again and again goes to Python: it says why)
                    memo[0, 0] += 1
                    resume_walk = True
                    continue  # the walk again, as after a fault Python handled
                return FAULT, i
            shift = out[3]
            value = pack(out[2], shift, out[4], out[5])
            tlb_fill_from_walk(tcfg, ttag, inclusion, pstate, pk, occ, lr, path, npath, vm, asid, va, value, shift,
                               missed)
        hpa = (value & ~PAGE_MASK) + (va & ((1 << shift) - 1))
        if record_hpa:
            hpa_out[i] = hpa
        if dctl[1] != 0:
            dc_access(dcfg, dctl, dtag, dage, cnt2d[crow], hpa, 1)
        if track_writes and op == WRITE:
            content[hpa >> 12] = written[0]
            written[0] += 1
        i += 1
    return DONE, i
