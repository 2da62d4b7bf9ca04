"""TLB hierarchy features against independent models: sides, tagging, inclusion."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from slatframe.testing import build, run_trace, tiny_config
from slatframe.trace import IFETCH, READ, TRACE_DTYPE, make_trace

from test_tlb_policies import lru_misses


class Lru:
    """One LRU array over hashable keys with a key -> set function."""

    def __init__(self, sets, ways):
        self.sets, self.ways = sets, ways
        self.rows = [OrderedDict() for _ in range(sets)]

    def row(self, key):
        return self.rows[key[-1] % self.sets]

    def hit(self, key):
        row = self.row(key)
        if key in row:
            row.move_to_end(key)
            return True
        return False

    def insert(self, key):
        """Insert; return the evicted key or None."""
        row = self.row(key)
        if key in row:
            row.move_to_end(key)
            return None
        out = row.popitem(last=False)[0] if len(row) == self.ways else None
        row[key] = True
        return out

    def remove(self, key):
        self.row(key).pop(key, None)

    def clear(self):
        for r in self.rows:
            r.clear()


def stream(n, pages, seed):
    rng = np.random.default_rng(seed)
    ranks = rng.zipf(1.2, n) % pages
    return rng.permutation(pages)[ranks]


def test_instruction_and_data_sides(registry):
    n = 4000
    rng = np.random.default_rng(1)
    pages = stream(n, 300, 2)
    ops = np.where(rng.random(n) < 0.4, IFETCH, READ)
    levels = [{"name": "itlb", "sets": 4, "ways": 2, "side": "instruction"},
              {"name": "dtlb", "sets": 4, "ways": 4, "side": "data"},
              {"name": "stlb", "sets": 16, "ways": 4}]
    config, reg = build(tiny_config(tlb={"levels": levels}), registry)
    c, _ = run_trace(config, reg, make_trace(pages.astype(np.uint64) << np.uint64(12), op=ops))
    ipages = pages[ops == IFETCH].tolist()
    dpages = pages[ops == READ].tolist()
    assert c["tlb.itlb.hits"] + c["tlb.itlb.misses"] == len(ipages)
    assert c["tlb.dtlb.hits"] + c["tlb.dtlb.misses"] == len(dpages)
    assert c["tlb.itlb.misses"] == lru_misses(ipages, 4, 2)
    assert c["tlb.dtlb.misses"] == lru_misses(dpages, 4, 4)
    # the unified level sees both miss streams, in trace order
    itlb, dtlb, stlb = Lru(4, 2), Lru(4, 4), Lru(16, 4)
    misses = 0
    for p, op in zip(pages.tolist(), ops.tolist()):
        first = itlb if op == IFETCH else dtlb
        if first.hit((p,)):
            continue
        if not stlb.hit((p,)):
            misses += 1
            stlb.insert((p,))
        first.insert((p,))
    assert c["tlb.stlb.misses"] == misses


@pytest.mark.parametrize("tagged", [True, False])
def test_untagged_tlb_flushes_on_context_switch(registry, tagged):
    n = 3000
    rng = np.random.default_rng(4)
    t = np.zeros(n, dtype=TRACE_DTYPE)
    t["vaddr"] = (rng.integers(0, 40, n) << 12).astype(np.uint64)
    t["asid"] = (np.arange(n) // 50) % 3  # a switch every 50 accesses
    config, reg = build(tiny_config(tlb={"tagged": tagged, "levels": [{"name": "l1", "sets": 8, "ways": 8}]}),
                        registry)
    c, _ = run_trace(config, reg, t)
    model, misses, current = Lru(8, 8), 0, None
    for asid, va in zip(t["asid"].tolist(), t["vaddr"].tolist()):
        if current is not None and asid != current and not tagged:
            model.clear()
        current = asid
        key = (asid, va >> 12)
        if not model.hit(key):
            misses += 1
            model.insert(key)
    assert c["tlb.l1.misses"] == misses
    assert c["events.context_switch"] == int(np.count_nonzero(np.diff(t["asid"].astype(int))))


@pytest.mark.parametrize("inclusion", ["non-inclusive", "inclusive", "exclusive"])
def test_inclusion_policies(registry, inclusion):
    pages = stream(5000, 200, 7).tolist()
    config, reg = build(tiny_config(tlb={"inclusion": inclusion, "levels": [
        {"name": "l1", "sets": 2, "ways": 2}, {"name": "l2", "sets": 4, "ways": 4}]}), registry)
    c, _ = run_trace(config, reg, make_trace(np.array(pages, dtype=np.uint64) << np.uint64(12)))
    l1, l2 = Lru(2, 2), Lru(4, 4)
    m1 = m2 = 0
    for p in pages:
        key = (p,)
        if l1.hit(key):
            continue
        m1 += 1
        in_l2 = l2.hit(key)
        if not in_l2:
            m2 += 1
        if inclusion == "exclusive":
            if in_l2:
                l2.remove(key)
            victim = l1.insert(key)
            if victim is not None:
                l2.insert(victim)
            continue
        if not in_l2:
            victim = l2.insert(key)
            if inclusion == "inclusive" and victim is not None:
                l1.remove(victim)
        l1.insert(key)
    assert (c["tlb.l1.misses"], c["tlb.l2.misses"]) == (m1, m2)
