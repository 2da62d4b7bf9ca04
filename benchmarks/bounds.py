"""Issue 17's throughput targets beside bare numba loops that do the same counting
work over the engine's own tables, in the same process.

    python -m benchmarks --bounds [--accesses N]

Rows per target, each timed on a warm pass (after a first pass from empty TLBs and caches,
as the engine's warm pass follows its cold one), the rows taken in turn:

- *the engine's counts*: the same LRU TLB lookups and fills and, on each miss, the same
  walk: the same entries read from the engine's simulated memory (in 2D every table
  address through the EPT), the same paging-structure-cache probes (deepest level
  first) and fills (before the next level's read), LRU. Checked, not assumed: its
  second pass's TLB misses, walks, references by dimension and each walk cache's hits
  and misses must equal the engine's counters over its warm pass, and each access's
  host-physical address the engine's (the benchmark stops otherwise). Where the engine
  serves a walk from its walk memo (plain runs: slatframe/engine/loop.py) it reads no
  entry; the bare loop reads them every time.
- *the same loop, its modes read at run time*: what generality costs a numba loop.
- *leaf loads only*: perfect walk caches: a walk reads only its guest leaf entry and, in
  2D, the EPT entry of the data page, from arrays filled before the pass; it models no
  walk cache, so it does not count as the engine does.
- *full walks, no walk cache*: every level of both dimensions (24 references in 2D).

The bare loops know one machine: x86-64 guest tables, 4-level EPT, 4K pages, one VM and
one address space, reads only (a warm pass writes no accessed or dirty flag), every set
a power of two, LRU everywhere, ways compared without a branch. What they leave out is
what makes the engine a model: plugins' formats, policies and walk caches behind one
interface, records read in chunks and checked for events, faults, writes, page sizes,
several VMs and address spaces.
"""
from __future__ import annotations

import functools
import time

import numpy as np
from numba import njit

from slatframe.counters import Counters
from slatframe.engine import make_engine
from slatframe.engine.shape import shape_of
from slatframe.machine import build_machine
from slatframe.report import table

FRAME = 0x000FFFFFFFFFF000
LARGE = 128  # the page-size bit of an x86-64 or EPT non-leaf-level entry
GUEST, HOST = 0, 1
# counts[]: TLB L1 misses, L2 misses, walks, guest refs, host refs, PSC fills, then per
# dimension and PSC level (2, 3, 4): hits at PSC_HITS + 3 * dim + level - 2, misses 6 further on
L1_MISSES, L2_MISSES, WALKS, REFS_GUEST, REFS_HOST, PSC_FILLS, PSC_HITS = 0, 1, 2, 3, 4, 5, 6
PSC_MISSES = PSC_HITS + 6
COUNTS = PSC_MISSES + 6
PSC_WAYS = np.array([32, 8, 4], dtype=np.int64)  # levels 2, 3, 4: the psc plugin's default sizes
WALK, LEAVES = 1, 2  # what a bare loop does on a TLB miss
SKYLAKE = [(16, 4), (128, 12)]  # benchmarks' TLB: (sets, ways) per level


@njit(cache=True, forceinline=True)
def load(slot_of, words, pa):
    return words[slot_of[pa >> 12], (pa >> 3) & 511]


@njit(cache=True, forceinline=True)
def shift_of(level):
    return 12 + 9 * (level - 1)


@njit(cache=True, forceinline=True)
def leaf_address(e, level, address):
    """Where ``address`` leads through entry ``e`` of ``level`` if it is a leaf (level 1,
    or the page-size bit set), else -1."""
    if level != 1 and (e & LARGE) == 0:
        return -1
    sh = shift_of(level)
    return (e & FRAME & ~((1 << sh) - 1)) | (address & ((1 << sh) - 1))


@njit(cache=True, forceinline=True)
def lru_victim(stamps, ways):
    """The way an LRU set fills: the first invalid one, else the least recently used.
    An invalid way's stamp is 0 and a valid one's above, so that is the first way with
    the smallest stamp (a scan without a branch: a conditional move per way)."""
    v, oldest = 0, stamps[0]
    for w in range(1, ways):
        older = stamps[w] < oldest
        v = w if older else v
        oldest = stamps[w] if older else oldest
    return v


@njit(cache=True, forceinline=True)
def lookup(tags, p, ways):
    """The way holding page ``p`` in a TLB set, or -1 (stopping at the hit)."""
    for w in range(ways):
        if tags[w] == p:
            return w
    return -1


@njit(cache=True, forceinline=True)
def find(keys, k, ways):
    """The way holding key ``k`` (keys are unique in a set), or -1: every way compared,
    without an early exit, which the compiler may vectorise."""
    hit = -1
    for w in range(ways):
        hit = w if keys[w] == k else hit
    return hit


@njit(cache=True, forceinline=True)
def psc_probe(keys, vals, stamps, on, dim, address, clock, counts):
    """The first hit, deepest level first: (level to read next, table), or (-1, 0)."""
    if not on:
        return -1, 0
    for li in range(3):
        w = find(keys[dim, li], address >> shift_of(li + 2), PSC_WAYS[li])
        if w >= 0:
            clock[0] += 1
            stamps[dim, li, w] = clock[0]
            counts[PSC_HITS + 3 * dim + li] += 1
            return li + 1, vals[dim, li, w]
        counts[PSC_MISSES + 3 * dim + li] += 1
    return -1, 0


@njit(cache=True, forceinline=True)
def psc_fill(keys, vals, stamps, dim, level, address, table, clock, counts):
    li = level - 2
    v = lru_victim(stamps[dim, li], PSC_WAYS[li])
    counts[PSC_FILLS] += 1
    keys[dim, li, v] = address >> shift_of(level)
    vals[dim, li, v] = table
    clock[0] += 1
    stamps[dim, li, v] = clock[0]


@njit(cache=True, forceinline=True)
def host_walk(slot_of, words, hroot, gpa, keys, vals, stamps, psc, clock, counts):
    level, table = psc_probe(keys, vals, stamps, psc, HOST, gpa, clock, counts)
    if level < 0:
        level, table = 4, hroot
    pending = 0
    while True:
        pa = table + ((gpa >> shift_of(level)) & 511) * 8
        if pending and psc:
            psc_fill(keys, vals, stamps, HOST, pending, gpa, pa & ~4095, clock, counts)
        e = load(slot_of, words, pa)
        counts[REFS_HOST] += 1
        hpa = leaf_address(e, level, gpa)
        if hpa >= 0:
            return hpa
        pending = level
        table = e & FRAME
        level -= 1


@njit(cache=True, forceinline=True)
def walk(slot_of, words, groot, hroot, two_d, va, keys, vals, stamps, psc, clock, counts):
    """The walk of va, as the engine's walk reads entries and probes and fills its
    paging-structure caches; returns the data's host-physical address."""
    level, table = psc_probe(keys, vals, stamps, psc, GUEST, va, clock, counts)
    physical = level >= 0 or not two_d
    if level < 0:
        level, table = 4, groot
    pending = 0
    while True:
        pa = table + ((va >> shift_of(level)) & 511) * 8
        if not physical:
            pa = host_walk(slot_of, words, hroot, pa, keys, vals, stamps, psc, clock, counts)
        if pending and psc:
            psc_fill(keys, vals, stamps, GUEST, pending, va, pa & ~4095, clock, counts)
        e = load(slot_of, words, pa)
        counts[REFS_GUEST] += 1
        gpa = leaf_address(e, level, va)
        if gpa >= 0:
            if two_d:
                return host_walk(slot_of, words, hroot, gpa, keys, vals, stamps, psc, clock, counts)
            return gpa
        pending = level
        table = e & FRAME
        physical = not two_d
        level -= 1


@njit(cache=True)
def leaf_tables(slot_of, words, groot, hroot, two_d, vas, guest_leaf, host_leaf):
    """For each 2M region of the trace's addresses, the host-physical address of its guest
    leaf table (``guest_leaf[va >> 21]``) and, in 2D, of the EPT leaf table of each 2M
    region of guest-physical memory its data lies in (``host_leaf[gpa >> 21]``): what
    perfect walk caches would hold."""
    counts = np.zeros(COUNTS, dtype=np.int64)
    none = np.zeros((1, 1, 1), dtype=np.int64)
    clock = np.zeros(1, dtype=np.int64)
    for i in range(vas.shape[0]):
        va = vas[i]
        table, pa = groot, 0
        for level in range(4, 0, -1):
            pa = table + ((va >> shift_of(level)) & 511) * 8
            if two_d:
                pa = host_walk(slot_of, words, hroot, pa, none, none, none, False, clock, counts)
            table = load(slot_of, words, pa) & FRAME
        guest_leaf[va >> 21] = pa & ~4095
        if two_d:
            t = hroot
            for level in range(4, 1, -1):
                t = load(slot_of, words, t + ((table >> shift_of(level)) & 511) * 8) & FRAME
            host_leaf[table >> 21] = t


def fresh_state(tlb: list) -> tuple:
    """Empty TLBs and paging-structure caches for ``same_work``: tags (-1: invalid),
    stamps (0: never used) and values of one or two TLB levels, ``tlb`` = [(sets, ways),
    ...]; keys, values and stamps of the caches; the caches' and the TLB's clocks."""
    (s1, w1), (s2, w2) = tlb[0], (tlb[1] if len(tlb) > 1 else (1, 1))
    keys = np.full((2, 3, 32), -1, dtype=np.int64)
    return (np.full((s1, w1), -1, dtype=np.int64), np.zeros((s1, w1), dtype=np.int64),
            np.zeros((s1, w1), dtype=np.int64), np.full((s2, w2), -1, dtype=np.int64),
            np.zeros((s2, w2), dtype=np.int64), np.zeros((s2, w2), dtype=np.int64),
            keys, np.zeros_like(keys), np.zeros_like(keys), np.zeros(2, dtype=np.int64))


@functools.lru_cache(maxsize=None)
def same_work_loop(on_miss: int, psc: bool, two_d: bool, record: bool = False, generic: bool = False):
    """The bare loop for one kind of miss handling, compiled with ``on_miss``, ``psc``,
    ``two_d`` and ``record`` as constants (numba folds a closure's variables). With
    ``generic`` it reads the first three from its ``modes`` argument at run time
    instead: the same loop, to measure what that costs."""

    @njit(cache=True)  # (numba keys a closure's cache entry by its variables' values)
    def same_work(vas, two_levels, state, slot_of, words, groot, hroot, guest_leaf, host_leaf, counts, hpas,
                  modes):
        """One pass over ``vas`` from ``state`` (fresh_state; left as the pass leaves
        it): an LRU TLB of one or two levels, filling every level on a walk and the
        first level on a second-level hit; on a miss ``on_miss`` (WALK, LEAVES).
        ``counts``: the pass's counts; ``hpas[i]``: access i's host-physical address
        (with ``record``). Returns the sum of the translated addresses (so that nothing
        is left out)."""
        t1, a1, v1, t2, a2, v2, keys, vals, stamps, clock = state
        miss_mode, psc_mode, two_d_mode = (modes[0], modes[1] != 0, modes[2] != 0) if generic else \
            (on_miss, psc, two_d)
        l1_sets, l1_ways = t1.shape
        l2_sets, l2_ways = t2.shape
        counts[:] = 0
        tick = clock[1]
        total = 0
        for i in range(vas.shape[0]):
            va = vas[i]
            p = va >> 12
            tick += 1
            s = p & (l1_sets - 1)
            hit = lookup(t1[s], p, l1_ways)
            if hit >= 0:
                a1[s, hit] = tick
                value = v1[s, hit]
            else:
                counts[L1_MISSES] += 1
                q = p & (l2_sets - 1)
                h2 = lookup(t2[q], p, l2_ways) if two_levels else -1
                if h2 >= 0:
                    a2[q, h2] = tick
                    value = v2[q, h2]
                else:
                    if two_levels:
                        counts[L2_MISSES] += 1
                    counts[WALKS] += 1
                    value = 0
                    if miss_mode == WALK:
                        value = walk(slot_of, words, groot, hroot, two_d_mode, va, keys, vals, stamps, psc_mode,
                                     clock, counts) & ~4095
                    elif miss_mode == LEAVES:
                        value = load(slot_of, words, guest_leaf[va >> 21] + ((va >> 12) & 511) * 8) & FRAME
                        if two_d_mode:
                            value = load(slot_of, words, host_leaf[value >> 21] + ((value >> 12) & 511) * 8) \
                                & FRAME
                    if two_levels:
                        h2 = lru_victim(a2[q], l2_ways)
                        t2[q, h2] = p
                        v2[q, h2] = value
                        a2[q, h2] = tick
                v = lru_victim(a1[s], l1_ways)
                t1[s, v] = p
                v1[s, v] = value
                a1[s, v] = tick
            if record:
                hpas[i] = value + (va & 4095)
            total += value + (va & 4095)
        clock[1] = tick
        return total

    return same_work


def engine_pass(config, registry, trace: np.ndarray, chunk: int = 65536):
    """An engine's cold pass then a warm pass over ``trace``: (the engine, its machine, the
    warm pass's counter deltas, the warm pass's host-physical address of each access)."""
    counters = Counters()
    machine = build_machine(config, registry, counters)
    engine = make_engine("compiled", machine, registry)
    hpas = np.zeros(len(trace), dtype=np.int64)
    before: dict = {}
    for warm in (False, True):
        if warm:
            before = dict(counters.as_dict())
        for i in range(0, len(trace), chunk):
            engine.run_chunk(trace[i:i + chunk], hpas[i:i + chunk])
    after = counters.as_dict()
    return engine, machine, {k: v - before.get(k, 0) for k, v in after.items()}, hpas


class Bare:
    """The bare loops of one target over the engine's own tables after its cold and
    warm passes over ``trace`` (``self.counts``, ``self.hpas``: the warm pass's counters
    and addresses), and what perfect walk caches would hold. ``tlb``: (sets, ways) of
    one or two levels."""

    def __init__(self, config, registry, trace: np.ndarray, tlb: list, two_d: bool) -> None:
        engine, machine, self.counts, self.hpas = engine_pass(config, registry, trace)
        host = machine.context.host
        self.names = [level.name for level in machine.tlb.levels]
        self.tlb = tlb
        self.two_d = two_d
        self.vas = trace["vaddr"].astype(np.int64)
        slot_of, words = host.slot_of, host.words.view(np.int64)
        groot = int(engine.hw.guest_roots.array[0, 0])
        hroot = int(np.asarray(engine.hw.host_roots).reshape(-1)[0]) if two_d else 0
        guest_leaf = np.zeros(int(self.vas.max() >> 21) + 1, dtype=np.int64)
        host_leaf = np.zeros(1 << 16, dtype=np.int64)
        leaf_tables(slot_of, words, groot, hroot, two_d, self.vas, guest_leaf, host_leaf)
        self.tables = (slot_of, words, groot, hroot, guest_leaf, host_leaf)

    def passes(self, on_miss: int, psc: bool, record: bool = False, generic: bool = False):
        """A function running one pass of that bare loop over the trace from where the
        last left its TLBs and caches (empty at first): (sum of addresses, counts array,
        addresses)."""
        loop = same_work_loop(on_miss, psc, self.two_d, record, generic)
        state = fresh_state(self.tlb)
        counts = np.zeros(COUNTS, dtype=np.int64)
        hpas = np.zeros(len(self.vas) if record else 1, dtype=np.int64)
        modes = np.array([on_miss, psc, self.two_d], dtype=np.int64)

        def one() -> tuple:
            return loop(self.vas, len(self.tlb) > 1, state, *self.tables, counts, hpas, modes), counts, hpas

        return one

    def rate(self, on_miss: int, psc: bool, rounds: int = 3, generic: bool = False) -> float:
        """Accesses per second of a warm pass (after a first pass from empty TLBs and
        caches, as the engine's), best of ``rounds``."""
        one = self.passes(on_miss, psc, generic=generic)
        one()
        best = 0.0
        for _ in range(rounds):
            start = time.perf_counter()
            one()
            best = max(best, len(self.vas) / (time.perf_counter() - start))
        return best

    def named(self, c: np.ndarray, psc: bool) -> dict:
        ours = {f"tlb.{self.names[0]}.misses": int(c[L1_MISSES]), "walks": int(c[WALKS]),
                "walk.refs_guest": int(c[REFS_GUEST]), "walk.refs_host": int(c[REFS_HOST])}
        if len(self.names) > 1:
            ours[f"tlb.{self.names[1]}.misses"] = int(c[L2_MISSES])
        if psc:
            for dim, name in enumerate(("guest", "host")):
                for li in range(3):
                    for kind, at in (("hits", PSC_HITS), ("misses", PSC_MISSES)):
                        key = f"walk_cache.psc-{name}-l{li + 2}.{kind}"
                        if key in self.counts or c[at + 3 * dim + li]:
                            ours[key] = int(c[at + 3 * dim + li])
        return ours

    def differences(self, on_miss: int, psc: bool, same_counts: bool = True) -> dict:
        """{what: (the bare loop's, the engine's)} where that bare loop's second pass and
        the engine's warm pass disagree: the TLB misses, with ``same_counts`` every
        counter (named as the engine's), and "addresses" (how many accesses translated to
        another host-physical address: a loop that walks translates every access)."""
        one = self.passes(on_miss, psc, record=True)
        one()
        _, counts, hpas = one()
        ours = self.named(counts, psc)
        if not same_counts:
            ours = {k: v for k, v in ours.items() if k.startswith("tlb.")}
        wrong = {k: (v, self.counts.get(k, 0)) for k, v in ours.items() if self.counts.get(k, 0) != v}
        if not np.array_equal(hpas, self.hpas):
            wrong["addresses"] = (int(np.count_nonzero(hpas != self.hpas)), 0)
        return wrong

    def per_walk(self) -> str:
        """The engine's warm pass: references, walk-cache probes and (the same-work
        loop's) fills per walk."""
        walks = self.counts.get("walks", 0)
        if not walks:
            return "no walks"
        probes = sum(v for k, v in self.counts.items() if k.startswith("walk_cache.psc-"))
        _, counts, _ = self.passes(WALK, True)()
        return (f"{self.counts['walk.refs'] / walks:.2f} references, {probes / walks:.2f} probes and "
                f"{counts[PSC_FILLS] / counts[WALKS]:.2f} fills per walk")


def warm_passes(config, registry, trace: np.ndarray, chunk: int = 65536, shape=None):
    """A function timing one more warm pass of one compiled engine (its loop shaped for
    ``shape``, or generic) over ``trace`` (accesses per second), after its cold pass."""
    engine = make_engine("compiled", build_machine(config, registry, Counters()), registry, shape)

    def one_pass() -> float:
        start = time.perf_counter()
        for i in range(0, len(trace), chunk):
            engine.run_chunk(trace[i:i + chunk])
        return len(trace) / (time.perf_counter() - start)

    one_pass()
    return one_pass


def engine_rows(config, registry, trace: np.ndarray) -> list:
    """(what, a function timing one warm pass) of the engine with its generic loop, then
    with its loop shaped for the config's TLB, then with its loop for the whole TLB config
    (``experiment.loop = "exact"``)."""
    return [("engine, warm pass", warm_passes(config, registry, trace)),
            ("engine, shaped loop, warm pass", warm_passes(config, registry, trace, shape=shape_of(config)[0])),
            ("engine, exact loop, warm pass", warm_passes(config, registry, trace,
                                                          shape=shape_of(config, exact=True)[0]))]


def bound_rows(label: str, bare: Bare, loops: list, engines: list, rounds: int = 3, yardstick=None) -> list:
    """Rows for one target: each bare loop's rate and the engines' (best of ``rounds``,
    taken in turn, so that a slow minute of a shared machine slows all alike), and each
    row's rate as a multiple of the first engine's (:func:`engine_rows`). ``loops``:
    (what, on_miss, psc, generic, same counts?); ``yardstick``: (what, a function timing
    one pass) for a first row. Raises where a loop's TLB misses or translated addresses differ from the
    engine's, or, for a loop meant to count as the engine does, any of its counters."""
    for what, mode, psc, generic, same_counts in loops:
        if generic:
            continue  # the loop above it, compiled otherwise
        wrong = bare.differences(mode, psc, same_counts)
        if wrong:
            raise AssertionError(f"{label}, {what}: the bare loop differs from the engine: {wrong}")
    timed = [(what, functools.partial(bare.rate, mode, psc, 1, generic)) for what, mode, psc, generic, _ in loops]
    timed = ([yardstick] if yardstick else []) + timed + engines
    best = [0.0] * len(timed)
    for _ in range(rounds):
        for j, (_, rate) in enumerate(timed):
            best[j] = max(best[j], rate())
    engine = best[len(timed) - len(engines)]
    return [(label, what, f"{rate / 1e6:.2f}", f"{rate / engine:.2f}x") for (what, _), rate in zip(timed, best)]


def bounds(accesses: int) -> None:
    """Print issue 17's throughput targets, each beside its bare loops."""
    from slatframe.testing import build, tiny_config

    from .__main__ import CONFIGS, TLB, bare_rate, workload
    from .end_to_end import e2e_config

    rows, notes = [], []
    hit = workload("hit-heavy", accesses)
    pages = (hit["vaddr"] >> np.uint64(12)).astype(np.int64)
    config, registry = e2e_config()
    bare = Bare(config, registry, hit, [(16, 4)], False)
    rows += bound_rows("run itself within 2x: hit-heavy, native + one 16x4 level", bare,
                       [("bare LRU 16x4 + a 4-level walk per miss (the engine's counts)", WALK, False, False, True),
                        ("  the same loop, its modes read at run time", WALK, False, True, False)],
                       engine_rows(config, registry, hit),
                       yardstick=("the issue's yardstick: benchmarks' bare LRU loop, 16x4",
                                  functools.partial(bare_rate, pages, 1, 16, 4)))
    notes.append(f"run itself: the engine walked on {bare.counts.get('walks', 0):,} misses, most of them served by "
                 "its walk memo without a load; the bare loop loads 4 entries on every one")
    for kind, label, target in (("hit-heavy", "native + TLB + PSC", "40 M/s"),
                                ("walk-heavy", "intel-ept 2D + TLB + PSC", "5 M/s")):
        trace = hit if kind == "hit-heavy" else workload(kind, accesses)
        config, registry = build(tiny_config(tlb=TLB, vms=[{"name": "vm0", "memory": "8G"}], **CONFIGS[label]))
        bare = Bare(config, registry, trace, SKYLAKE, "2D" in label)
        if kind == "hit-heavy":  # 1,024 pages: no walk in a warm pass
            loops = [("bare two levels, 16x4 + 128x12 (the engine's counts)", WALK, True, False, True),
                     ("  the same loop, its modes read at run time", WALK, True, True, False)]
        else:
            loops = [("bare two levels + 2D walks with the same PSCs (the engine's counts)", WALK, True, False, True),
                     ("  the same loop, its modes read at run time", WALK, True, True, False),
                     ("bare two levels + leaf loads only (perfect walk caches)", LEAVES, False, False, False),
                     ("bare two levels + full 2D walks, no walk cache", WALK, False, False, False)]
            notes.append(f"2D walk-heavy, the engine's warm pass: {bare.per_walk()}")
        rows += bound_rows(f"{target}: {kind}, {label}", bare, loops, engine_rows(config, registry, trace))
    print(f"{accesses:,} accesses per pass; each row the best of three warm passes taken in turn")
    print(table(rows, ("target", "what runs", "M accesses/s", "its rate / the engine's generic loop's")))
    for note in notes:
        print(note)
