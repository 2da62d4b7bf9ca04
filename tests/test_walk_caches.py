"""Walk caches: analytic reference counts, and never a result different from no cache."""
from __future__ import annotations

import numpy as np
import pytest

from slatframe.counters import Counters
from slatframe.engine.reference import ReferenceEngine
from slatframe.machine import build_machine
from slatframe.testing import build, run_trace, tiny_config
from slatframe.trace import MAP, PROTECT, READ, TRACE_DTYPE, UNMAP, WRITE, FLUSH, INVLPG, make_trace

ONE_ENTRY = {"levels": [{"name": "l1", "sets": 1, "ways": 1}]}
PSC_ALL = [{"type": "psc", "level": 2, "ways": 64}, {"type": "psc", "level": 3, "ways": 8},
           {"type": "psc", "level": 4, "ways": 4}]


def alternating_pages(regions, per_region, seed=0):
    """Pages in a few 2M regions, never the same page twice in a row."""
    rng = np.random.default_rng(seed)
    base = (rng.permutation(1000)[:regions].astype(np.uint64) << np.uint64(21))
    pages = base[rng.integers(0, regions, 4000)] + (rng.integers(0, per_region, 4000).astype(np.uint64) << np.uint64(12))
    keep = np.concatenate([[True], pages[1:] != pages[:-1]])
    return pages[keep]


def test_native_pde_cache_leaves_one_reference(registry):
    vaddrs = alternating_pages(regions=5, per_region=50)
    config, reg = build(tiny_config(tlb=ONE_ENTRY, walk_caches=[{"type": "psc", "level": 2, "ways": 32}]), registry)
    c, _ = run_trace(config, reg, make_trace(vaddrs))
    regions = len(np.unique(vaddrs >> np.uint64(21)))
    # the first completed walk of a region reads 4 entries and fills the PDE cache; every
    # later walk in that region starts at the page table: 1 reference
    assert c["walk.refs"] == c["walks"] + 3 * regions
    # probes: one per walk, completed or aborted; misses: the faulting first walk and the
    # first completed walk of each region
    assert c["walk_cache.psc-guest-l2.misses"] == 2 * regions
    assert c["walk_cache.psc-guest-l2.hits"] == c["walks"] + c["walk.aborted"] - 2 * regions


def steady_state(raw, registry, vaddrs):
    """Counters of a second pass over the same trace (tables and caches warm)."""
    config, reg = build(raw, registry)
    counters = Counters()
    engine = ReferenceEngine(build_machine(config, reg, counters))
    engine.run_chunk(make_trace(vaddrs))
    before = dict(counters.values)
    engine.run_chunk(make_trace(vaddrs))
    return {k: v - before.get(k, 0) for k, v in counters.values.items()}


@pytest.mark.parametrize("caches,refs", [
    ([], 24),
    # guest PDE cache: 1 guest reference, its table's hPA cached, then one host walk (4)
    ([{"type": "psc", "level": 2}], 5),
    # and the EPT's own PDE cache: the final host walk reads only the EPT leaf
    ([{"type": "psc", "level": 2}, {"type": "psc", "level": 2, "dimension": "host"}], 2),
    # a nested TLB as well: the final gPA hits it, no host reference at all
    ([{"type": "psc", "level": 2}, {"type": "psc", "level": 2, "dimension": "host"},
      {"type": "nested-tlb", "ways": 512}], 1),
    # a nested TLB alone skips all five host walks: the 4 guest references remain
    ([{"type": "nested-tlb", "ways": 512}], 4),
    # a page walk cache of non-leaf entries of both dimensions: each of the 5 host walks
    # reads only its leaf, the guest walk only its leaf: 1 + 5 = 6
    ([{"type": "pwc", "ways": 64}], 6),
])
def test_2d_steady_state_references(registry, caches, refs):
    vaddrs = alternating_pages(regions=1, per_region=8, seed=1)
    raw = tiny_config(machine={"slat": "intel-ept"}, tlb=ONE_ENTRY, walk_caches=caches)
    c = steady_state(raw, registry, vaddrs)
    assert c["walks"] == len(vaddrs) and c.get("walk.aborted", 0) == 0
    assert c["walk.refs"] == refs * c["walks"]


def churn(n, seed):
    rng = np.random.default_rng(seed)
    t = np.zeros(n, dtype=TRACE_DTYPE)
    t["op"] = rng.choice([READ, READ, READ, WRITE, WRITE, MAP, UNMAP, PROTECT, INVLPG, FLUSH], n)
    t["asid"] = rng.integers(0, 2, n)
    t["vm"] = rng.integers(0, 2, n)
    t["vaddr"] = ((rng.integers(0, 4, n) << 30) + (rng.integers(0, 40, n) << 12)
                  + rng.integers(0, 4096, n)).astype(np.uint64)
    return t


ALL_CACHES = [*PSC_ALL, {"type": "psc", "level": 2, "dimension": "host"},
              {"type": "psc", "level": 3, "dimension": "host"},
              {"type": "pwc", "ways": 8}, {"type": "nested-tlb", "ways": 8, "policy": "fifo"}]


@pytest.mark.parametrize("slat", ["native", "intel-ept", "amd-npt", "shadow"])
@pytest.mark.parametrize("tagged", [True, False])
def test_walk_caches_never_change_a_result(registry, slat, tagged):
    """Unmaps, protects, writes and flushes with every walk cache on: the hPA of every
    access and every fault are the same as with no walk cache (no false hit)."""
    trace = churn(3000, seed=5)
    results = []
    for caches in ([], ALL_CACHES):
        tlb = {"tagged": tagged, "levels": [{"name": "l1", "sets": 4, "ways": 4},
                                            {"name": "l2", "sets": 16, "ways": 4}]}
        raw = tiny_config(machine={"slat": slat}, tlb=tlb, walk_caches=caches,
                          vms=[{"name": "a"}, {"name": "b"}])
        config, reg = build(raw, registry)
        results.append(run_trace(config, reg, trace))
    (plain, hpa_plain), (cached, hpa_cached) = results
    assert np.array_equal(hpa_plain, hpa_cached)
    for key in ("faults.guest", "faults.host", "walks", "tlb.l1.misses", "tlb.l2.misses"):
        assert plain.get(key) == cached.get(key), key
    assert cached["walk.refs"] < plain["walk.refs"]


@pytest.mark.parametrize("event,drops", [(INVLPG, True), (UNMAP, True), (PROTECT, True),
                                          (FLUSH, True), (READ, False)])
def test_guest_invalidations_drop_paging_structure_entries(registry, event, drops):
    """Intel SDM 4.10.4.1: INVLPG (and so unmap/protect, which the guest follows with
    INVLPG) and a CR3 flush drop every paging-structure-cache entry of the PCID; they
    leave the nested TLB (gPA -> hPA) alone."""
    caches = [{"type": "psc", "level": 2}, {"type": "nested-tlb", "ways": 64, "covers": "tables"}]
    config, reg = build(tiny_config(machine={"slat": "intel-ept"}, tlb=ONE_ENTRY, walk_caches=caches), registry)
    counters = Counters()
    engine = ReferenceEngine(build_machine(config, reg, counters))
    warm = make_trace(np.array([0x200000, 0x201000, 0x202000, 0x203000, 0x200000], dtype=np.uint64))
    engine.run_chunk(warm)
    before = dict(counters.values)
    after = np.zeros(3, dtype=TRACE_DTYPE)
    after["vaddr"] = [0x209000, 0x201000, 0x203000]
    after["op"] = [event, READ, READ]
    engine.run_chunk(after)
    diff = {k: v - before.get(k, 0) for k, v in counters.values.items()}
    walks = 3 if event == READ else 2
    assert diff["walks"] == walks
    assert diff.get("walk_cache.psc-guest-l2.misses", 0) == (1 if drops else 0)
    # the guest's tables were all cached in the nested TLB and stay cached
    # (with the PDE cache warm no table gPA is translated at all)
    assert diff.get("walk_cache.ntlb.misses", 0) == 0
    assert (diff.get("walk_cache.ntlb.hits", 0) > 0) == drops
