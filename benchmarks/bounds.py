"""Measured bounds for issue 17's throughput targets: beside the engine's warm pass, bare
numba loops that do the same work over the engine's own tables with nothing else, in the
same process.

    python -m benchmarks --bounds [--accesses N]

"The same work" is checked, not assumed: a bare loop's TLB misses, walks, references by
dimension and paging-structure-cache hits and misses must equal the engine's counters
over its warm pass (the bare loop makes two passes and counts the second, so both start
the pass from the state the first pass left). The bare loops know one machine: x86-64
guest tables, 4-level EPT, 4K pages, one VM and one address space, reads only (a warm
pass writes no accessed or dirty flag), every set a power of two, LRU everywhere. What
they leave out is what makes the engine a model: plugins' formats, policies and walk
caches behind one interface, every event counted, faults, page sizes, several VMs and
address spaces, writes.

Rows per target:

- *bare ... + walks (same work)*: the same TLB lookups and fills, and on each miss the
  same walk (the same entries read, the same paging-structure-cache probes and fills);
- *+ leaf loads only*: perfect walk caches: a walk reads only its leaf entries (the
  guest's, and in 2D the EPT entry of the data page), the least any walk with walk
  caches reads from the tables: the ceiling of any model of this machine;
- *+ full walks, no walk cache*: every level of both dimensions read (24 references in
  2D), no cache probed.
"""
from __future__ import annotations

import functools
import time

import numpy as np
from numba import njit

from slatframe.counters import Counters
from slatframe.engine import make_engine
from slatframe.machine import build_machine
from slatframe.report import table

FRAME = 0x000FFFFFFFFFF000
LARGE = 128  # the page-size bit of an x86-64 or EPT non-leaf-level entry
GUEST, HOST = 0, 1
# counts[]: TLB L1 misses, L2 misses, walks, guest refs, host refs, then per dimension and
# PSC level (2, 3, 4): hits at PSC_HITS + 3 * dim + level - 2, misses 6 further on
L1_MISSES, L2_MISSES, WALKS, REFS_GUEST, REFS_HOST, PSC_HITS = 0, 1, 2, 3, 4, 5
PSC_MISSES = PSC_HITS + 6
PSC_WAYS = np.array([32, 8, 4], dtype=np.int64)  # levels 2, 3, 4: the psc plugin's default sizes
NONE, WALK, LEAVES = 0, 1, 2  # what a bare loop does on a TLB miss
SKYLAKE = [(16, 4), (128, 12)]  # benchmarks' TLB: (sets, ways) per level


@njit(cache=True, inline="always")
def load(slot_of, words, pa):
    return words[slot_of[pa >> 12], (pa >> 3) & 511]


@njit(cache=True, inline="always")
def shift_of(level):
    return 12 + 9 * (level - 1)


@njit(cache=True, inline="always")
def lru_victim(tags, stamps, ways):
    """The way an LRU set (a row of tags and one of stamps) fills: the first invalid
    one (tag -1), else the least recently used."""
    v = 0
    for w in range(ways):
        if tags[w] == -1:
            return w
        if stamps[w] < stamps[v]:
            v = w
    return v


@njit(cache=True, inline="always")
def psc_probe(keys, vals, stamps, on, dim, address, clock, counts):
    """The first hit, deepest level first: (level to read next, table), or (-1, 0)."""
    if not on:
        return -1, 0
    for li in range(3):
        k = address >> shift_of(li + 2)
        for w in range(PSC_WAYS[li]):
            if keys[dim, li, w] == k:
                clock[0] += 1
                stamps[dim, li, w] = clock[0]
                counts[PSC_HITS + 3 * dim + li] += 1
                return li + 1, vals[dim, li, w]
        counts[PSC_MISSES + 3 * dim + li] += 1
    return -1, 0


@njit(cache=True, inline="always")
def psc_fill(keys, vals, stamps, dim, level, address, table, clock):
    li = level - 2
    v = lru_victim(keys[dim, li], stamps[dim, li], PSC_WAYS[li])
    keys[dim, li, v] = address >> shift_of(level)
    vals[dim, li, v] = table
    clock[0] += 1
    stamps[dim, li, v] = clock[0]


@njit(cache=True, inline="always")
def host_walk(slot_of, words, hroot, gpa, keys, vals, stamps, psc, clock, counts):
    level, table = psc_probe(keys, vals, stamps, psc, HOST, gpa, clock, counts)
    if level < 0:
        level, table = 4, hroot
    pending = 0
    while True:
        pa = table + ((gpa >> shift_of(level)) & 511) * 8
        if pending and psc:
            psc_fill(keys, vals, stamps, HOST, pending, gpa, pa & ~4095, clock)
        e = load(slot_of, words, pa)
        counts[REFS_HOST] += 1
        if level == 1 or (e & LARGE) != 0:
            sh = shift_of(level)
            return (e & FRAME & ~((1 << sh) - 1)) | (gpa & ((1 << sh) - 1))
        pending = level
        table = e & FRAME
        level -= 1


@njit(cache=True, inline="always")
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
            psc_fill(keys, vals, stamps, GUEST, pending, va, pa & ~4095, clock)
        e = load(slot_of, words, pa)
        counts[REFS_GUEST] += 1
        if level == 1 or (e & LARGE) != 0:
            sh = shift_of(level)
            gpa = (e & FRAME & ~((1 << sh) - 1)) | (va & ((1 << sh) - 1))
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
    counts = np.zeros(PSC_MISSES + 6, dtype=np.int64)
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


@functools.lru_cache(maxsize=None)
def same_work_loop(on_miss: int, psc: bool, two_d: bool):
    """The bare loop for one kind of miss handling, compiled with ``on_miss``, ``psc``
    and ``two_d`` as constants (numba folds a closure's variables): the same loop taking
    them as arguments ran at a third of the speed (13 against 34 M/s, 16x4 with 1D
    walks): never-taken branches cost a loop this size registers and layout, as they
    cost the engine, one loop for every configuration."""

    @njit(cache=True)  # (numba keys a closure's cache entry by its variables' values)
    def same_work(vas, passes, l1_sets, l1_ways, l2_sets, l2_ways, slot_of, words, groot, hroot, guest_leaf,
                  host_leaf, counts):
        """A bare loop over ``vas``: an LRU TLB of one or two levels (``l2_sets`` 0: one),
        filling every level on a walk and the first level on a second-level hit; on a miss
        ``on_miss`` (NONE, WALK, LEAVES). ``counts`` holds the last pass's counts; returns
        the sum of the translated addresses (so that nothing is left out)."""
        t1 = np.full((l1_sets, l1_ways), -1, dtype=np.int64)
        a1 = np.zeros((l1_sets, l1_ways), dtype=np.int64)
        t2 = np.full((max(l2_sets, 1), max(l2_ways, 1)), -1, dtype=np.int64)
        a2 = np.zeros_like(t2)
        v1 = np.zeros_like(t1)
        v2 = np.zeros_like(t2)
        keys = np.full((2, 3, 32), -1, dtype=np.int64)
        vals = np.zeros_like(keys)
        stamps = np.zeros_like(keys)
        clock = np.zeros(1, dtype=np.int64)  # the walk caches' recency: one stamp per probe hit or fill
        tick = 0
        total = 0
        for _ in range(passes):
            counts[:] = 0
            total = 0
            for i in range(vas.shape[0]):
                va = vas[i]
                p = va >> 12
                tick += 1
                s = p & (l1_sets - 1)
                hit = -1
                for w in range(l1_ways):
                    if t1[s, w] == p:
                        hit = w
                        break
                if hit >= 0:
                    a1[s, hit] = tick
                    total += v1[s, hit] + (va & 4095)
                    continue
                counts[L1_MISSES] += 1
                value = 0
                h2 = -1
                q = p & (l2_sets - 1)
                if l2_sets > 0:
                    for w in range(l2_ways):
                        if t2[q, w] == p:
                            h2 = w
                            break
                if h2 >= 0:
                    a2[q, h2] = tick
                    value = v2[q, h2]
                else:
                    if l2_sets > 0:
                        counts[L2_MISSES] += 1
                    counts[WALKS] += 1
                    if on_miss == WALK:
                        value = walk(slot_of, words, groot, hroot, two_d, va, keys, vals, stamps, psc, clock,
                                     counts) & ~4095
                    elif on_miss == LEAVES:
                        value = load(slot_of, words, guest_leaf[va >> 21] + ((va >> 12) & 511) * 8) & FRAME
                        if two_d:
                            value = load(slot_of, words, host_leaf[value >> 21] + ((value >> 12) & 511) * 8) & FRAME
                    if l2_sets > 0:
                        h2 = lru_victim(t2[q], a2[q], l2_ways)
                        t2[q, h2] = p
                        v2[q, h2] = value
                        a2[q, h2] = tick
                v = lru_victim(t1[s], a1[s], l1_ways)
                t1[s, v] = p
                v1[s, v] = value
                a1[s, v] = tick
                total += value + (va & 4095)
        return total

    return same_work


def engine_pass(config, registry, trace: np.ndarray, chunk: int = 65536):
    """An engine's cold pass then a warm pass over ``trace``: (the engine, its machine, the
    warm pass's counter deltas)."""
    counters = Counters()
    machine = build_machine(config, registry, counters)
    engine = make_engine("compiled", machine, registry)
    before: dict = {}
    for warm in (False, True):
        if warm:
            before = dict(counters.as_dict())
        for i in range(0, len(trace), chunk):
            engine.run_chunk(trace[i:i + chunk])
    after = counters.as_dict()
    return engine, machine, {k: v - before.get(k, 0) for k, v in after.items()}


class Bare:
    """The bare loops of one target: the engine's own tables after its cold and warm
    passes over ``trace`` (``self.counts``: the warm pass's counters), and what perfect
    walk caches would hold. ``tlb``: (sets, ways) of one or two levels."""

    def __init__(self, config, registry, trace: np.ndarray, tlb: list, two_d: bool) -> None:
        engine, machine, self.counts = engine_pass(config, registry, trace)
        host = machine.context.host
        self.names = [level.name for level in machine.tlb.levels]
        self.two_d = two_d
        self.vas = trace["vaddr"].astype(np.int64)
        slot_of, words = host.slot_of, host.words.view(np.int64)
        groot = int(engine.hw.guest_roots.array[0, 0])
        hroot = int(np.asarray(engine.hw.host_roots).reshape(-1)[0]) if two_d else 0
        guest_leaf = np.zeros(int(self.vas.max() >> 21) + 1, dtype=np.int64)
        host_leaf = np.zeros(1 << 16, dtype=np.int64)
        leaf_tables(slot_of, words, groot, hroot, two_d, self.vas, guest_leaf, host_leaf)
        (s1, w1), (s2, w2) = tlb[0], (tlb[1] if len(tlb) > 1 else (0, 0))
        self.args = (s1, w1, s2, w2, slot_of, words, groot, hroot, guest_leaf, host_leaf)

    def run(self, on_miss: int, psc: bool, passes: int) -> tuple[int, dict]:
        """The loop's sum of translated addresses and its last pass's counts, named as
        the engine's counters."""
        c = np.zeros(PSC_MISSES + 6, dtype=np.int64)
        total = same_work_loop(on_miss, psc, self.two_d)(self.vas, passes, *self.args, c)
        return total, self.named(c, psc)

    def rate(self, on_miss: int, psc: bool, rounds: int = 3) -> float:
        """Accesses per second of one pass from empty TLBs and caches, best of ``rounds``."""
        loop = same_work_loop(on_miss, psc, self.two_d)
        c = np.zeros(PSC_MISSES + 6, dtype=np.int64)
        loop(self.vas[:1000], 1, *self.args, c)  # compile
        best = 0.0
        for _ in range(rounds):
            start = time.perf_counter()
            loop(self.vas, 1, *self.args, c)
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

    def differences(self, psc: bool) -> dict:
        """{counter: (the bare loop's, the engine's)} where the same-work loop (two
        passes, the second counted) and the engine's warm pass disagree."""
        _, ours = self.run(WALK, psc, 2)
        return {k: (v, self.counts.get(k, 0)) for k, v in ours.items() if self.counts.get(k, 0) != v}


def warm_passes(config, registry, trace: np.ndarray, chunk: int = 65536):
    """A function timing one more warm pass of one compiled engine over ``trace``
    (accesses per second), after its cold pass."""
    engine = make_engine("compiled", build_machine(config, registry, Counters()), registry)

    def one_pass() -> float:
        start = time.perf_counter()
        for i in range(0, len(trace), chunk):
            engine.run_chunk(trace[i:i + chunk])
        return len(trace) / (time.perf_counter() - start)

    one_pass()
    return one_pass


def bound_rows(label: str, bare: Bare, psc: bool, on_miss: list, engine_pass_rate, rounds: int = 3) -> list:
    """Rows for one target: each bare loop's rate and the engine's (best of ``rounds``,
    taken in turn, so that a slow minute of a shared machine slows all alike), and each
    bare loop's rate as a multiple of the engine's. Raises if the same-work loop does
    not count what the engine counts, or if the loops that translate disagree on the
    addresses."""
    wrong = bare.differences(psc)
    if wrong:
        raise AssertionError(f"{label}: the bare loop counts differently from the engine: {wrong}")
    sums = {bare.run(mode, with_psc, 1)[0] for _, mode, with_psc in on_miss if mode != NONE}
    if len(sums) > 1:
        raise AssertionError(f"{label}: the bare loops translated to different addresses")
    best = [0.0] * (len(on_miss) + 1)
    for _ in range(rounds):
        for j, (_, mode, with_psc) in enumerate(on_miss):
            best[j] = max(best[j], bare.rate(mode, with_psc, rounds=1))
        best[-1] = max(best[-1], engine_pass_rate())
    rows = [(label, what, f"{rate / 1e6:.2f}", f"{rate / best[-1]:.2f}x")
            for (what, _, _), rate in zip(on_miss, best)]
    return rows + [(label, "engine, warm pass", f"{best[-1] / 1e6:.2f}", "1.00x")]


def bounds(accesses: int) -> None:
    """Print issue 17's throughput targets, each beside its bare loops."""
    from slatframe.testing import build, tiny_config

    from .__main__ import CONFIGS, TLB, workload
    from .end_to_end import e2e_config

    rows = []
    hit = workload("hit-heavy", accesses)
    config, registry = e2e_config()
    rows += bound_rows("run itself within 2x: hit-heavy, native + one 16x4 level",
                       Bare(config, registry, hit, [(16, 4)], False), False,
                       [("bare LRU 16x4 (the issue's yardstick)", NONE, False),
                        ("bare LRU 16x4 + walks (same work)", WALK, False)], warm_passes(config, registry, hit))
    for kind, label, target in (("hit-heavy", "native + TLB + PSC", "40 M/s"),
                                ("walk-heavy", "intel-ept 2D + TLB + PSC", "5 M/s")):
        trace = hit if kind == "hit-heavy" else workload(kind, accesses)
        config, registry = build(tiny_config(tlb=TLB, vms=[{"name": "vm0", "memory": "8G"}], **CONFIGS[label]))
        on_miss = [("bare two levels + walks with PSCs (same work)", WALK, True),
                   ("bare two levels + leaf loads only", LEAVES, False),
                   ("bare two levels + full walks, no walk cache", WALK, False)]
        if kind == "hit-heavy":  # 1,024 pages: the walks are the cold pass's
            on_miss = [("bare two levels, 16x4 + 128x12", NONE, False)] + on_miss[:1]
        rows += bound_rows(f"{target}: {kind}, {label}", Bare(config, registry, trace, SKYLAKE, "2D" in label), True,
                           on_miss, warm_passes(config, registry, trace))
    print(f"{accesses:,} accesses per pass; each row the best of three passes taken in turn (the engine's warm)")
    print(table(rows, ("target", "what runs", "M accesses/s", "its rate / the engine's")))
