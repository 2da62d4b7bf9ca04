"""The bounds benchmark's bare loops (benchmarks/bounds.py) count what the compiled
engine counts: an independent route, a few dozen lines of numba that know one machine
(x86-64 guest tables, EPT, LRU TLBs and paging-structure caches scanned way by way),
against the engine's set index, recency lists and format-driven walks. So the benchmark's
"same work" rows are the same work, and the engine's 2D walk-cache counts are checked by
a second implementation."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package

from benchmarks.__main__ import CONFIGS, REACH_PAGES, TLB, workload  # noqa: E402
from benchmarks.bounds import LEAVES, SKYLAKE, WALK, Bare  # noqa: E402
from benchmarks.end_to_end import e2e_config  # noqa: E402
from slatframe.testing import build, tiny_config  # noqa: E402


def scattered(accesses: int, pages: int = 4096, seed: int = 3) -> np.ndarray:
    """Uniform over ``pages`` pages scattered over the walk-heavy span (600 MiB, 300 2M
    regions: more than the 32-entry PDE caches hold), which the 1536-entry L2 TLB does
    not hold; few pages, so that the cold pass's faults stay few."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(100 * REACH_PAGES, pages, replace=False).astype(np.uint64)
    t = workload("walk-heavy", accesses)
    t["vaddr"] = (chosen[rng.integers(0, pages, accesses)] << np.uint64(12)) + np.uint64(1 << 32)
    return t


@pytest.mark.parametrize("label", ["intel-ept 2D + TLB + PSC", "native + TLB + PSC"])
def test_bare_walks_with_pscs_count_as_the_engine(label):
    config, registry = build(tiny_config(tlb=TLB, vms=[{"name": "vm0", "memory": "8G"}], **CONFIGS[label]))
    bare = Bare(config, registry, scattered(40_000), SKYLAKE, "2D" in label)
    assert bare.counts["walks"] > 20_000  # the warm pass walks: the comparison has something to compare
    assert bare.counts["walk_cache.psc-guest-l2.misses"] > 10_000  # and the PDE cache evicts
    assert bare.differences(psc=True) == {}
    with_caches, _ = bare.run(WALK, True, 1)
    leaves, _ = bare.run(LEAVES, False, 1)
    assert with_caches == leaves > 0  # perfect walk caches translate to the same addresses


def test_bare_lru_and_walks_count_as_the_engine_for_the_end_to_end_config():
    config, registry = e2e_config()
    trace = workload("hit-heavy", 30_000)
    bare = Bare(config, registry, trace, [(16, 4)], False)
    assert bare.counts["walks"] > 10_000
    assert bare.differences(psc=False) == {}
