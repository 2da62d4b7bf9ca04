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

from benchmarks.__main__ import CONFIGS, TLB, workload  # noqa: E402
from benchmarks.bounds import LEAVES, SKYLAKE, WALK, Bare  # noqa: E402
from benchmarks.end_to_end import e2e_config, fed_run, skylake_toml  # noqa: E402
from slatframe.config import load_config  # noqa: E402
from slatframe.engine import run_experiment  # noqa: E402
from slatframe.testing import build, tiny_config  # noqa: E402
from slatframe.tracefile import write_npz  # noqa: E402


def nested(accesses: int, seed: int = 3) -> np.ndarray:
    """Uniform over 4096 pages in 48 2M regions, in 10 1G regions, in 6 512G regions:
    a few more of each than the guest's PDE, PDPTE and PML4E caches hold (32, 8 and 4
    entries), so that each of them hits and misses, and a cache of another size or
    keying counts otherwise; more pages than the 1536-entry L2 TLB holds. (The host
    dimension's gPAs all lie in the first 1G region: its PDPTE and PML4E caches always
    hit, here as in any run of an 8G VM.)"""
    rng = np.random.default_rng(seed)
    l4 = rng.choice(np.arange(1, 256), 6, replace=False)
    l3 = [(int(l4[i % 6]), int(x)) for i, x in enumerate(rng.choice(512, 10, replace=False))]
    l2 = [l3[i % 10] + (int(x),) for i, x in enumerate(rng.choice(512, 48, replace=False))]
    pages = [(a << 27) | (b << 18) | (c << 9) | int(d) for i, (a, b, c) in enumerate(l2)
             for d in rng.choice(512, 4096 // 48 + (i < 4096 % 48), replace=False)]
    t = workload("walk-heavy", accesses)
    t["vaddr"] = np.array(pages, dtype=np.uint64)[rng.integers(0, len(pages), accesses)] << np.uint64(12)
    return t


@pytest.mark.parametrize("label", ["intel-ept 2D + TLB + PSC", "native + TLB + PSC"])
def test_bare_walks_with_pscs_count_and_translate_as_the_engine(label):
    config, registry = build(tiny_config(tlb=TLB, vms=[{"name": "vm0", "memory": "8G"}], **CONFIGS[label]))
    bare = Bare(config, registry, nested(30_000), SKYLAKE, "2D" in label)
    for level in (2, 3, 4):  # each guest walk cache hits and misses: the comparison can see each one
        assert bare.counts[f"walk_cache.psc-guest-l{level}.hits"] > 200
        assert bare.counts[f"walk_cache.psc-guest-l{level}.misses"] > 200
    assert bare.counts["walks"] > 15_000
    assert bare.differences(WALK, True) == {}  # every counter, and every access's host-physical address
    assert bare.differences(LEAVES, False, same_counts=False) == {}  # perfect caches: the same addresses


def test_bare_lru_and_walks_count_and_translate_as_the_engine_for_the_end_to_end_config():
    config, registry = e2e_config()
    bare = Bare(config, registry, workload("hit-heavy", 30_000), [(16, 4)], False)
    assert bare.counts["walks"] > 10_000
    assert bare.differences(WALK, False) == {}


def test_fed_bare_loop_misses_as_a_run_of_the_skylake_like_config_counts(tmp_path):
    """The end-to-end benchmark's Skylake-like table times a bare two-level loop fed by
    slatframe's reader beside `slatframe run`: its misses per level are the reference
    tier's counts for the same file and config."""
    write_npz(tmp_path / "t.npz", workload("hit-heavy", 30_000), compressed=False)
    (tmp_path / "sky.toml").write_text(skylake_toml("generic", "t.npz"))
    config, registry = load_config(tmp_path / "sky.toml")
    metrics = run_experiment(config, registry, engine="reference").metrics
    misses = fed_run(str(tmp_path / "sky.toml"))["misses"]
    assert metrics["tlb.l1d.misses"] > 10_000 and metrics["tlb.l2.misses"] > 500  # both levels miss often
    assert misses == [metrics["tlb.l1d.misses"], metrics["tlb.l2.misses"]]
