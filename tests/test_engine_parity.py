"""The compiled engine gives the reference engine's counters and hPAs, for every builtin
scheme, policy and walk cache, on random, zipf, sequential and churn traces."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slatframe.engine import choose_engine
from slatframe.testing import assert_engines_agree, build, tiny_config
from slatframe.trace import (CONTEXT_SWITCH, FLUSH, IFETCH, INVLPG, MAP, PROTECT, READ, TRACE_DTYPE, UNMAP,
                             WRITE)

SCHEMES = ["native", "intel-ept", "amd-npt", "shadow"]
POLICIES = ["lru", "fifo", "random", "tree-plru", "srrip"]
CACHES = {
    "none": [],
    "psc": [{"type": "psc", "level": lv} for lv in (4, 3, 2)] + [{"type": "psc", "level": 2, "dimension": "host"}],
    "pwc": [{"type": "pwc", "ways": 8, "sets": 2}],
    "ntlb": [{"type": "nested-tlb", "ways": 4, "sets": 2, "covers": "tables"}, {"type": "nested-tlb", "name": "n2"}],
}
ALL_CACHES = [c for caches in CACHES.values() for c in caches]


def trace(kind: str, n: int = 2500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.zeros(n, dtype=TRACE_DTYPE)
    if kind == "uniform":
        pages = rng.integers(0, 3000, n)
    elif kind == "zipf":
        pages = rng.permutation(3000)[rng.zipf(1.2, n) % 3000]
    elif kind == "sequential":
        pages = np.arange(n) // 3
    else:  # churn: control events, two VMs, three address spaces
        pages = rng.integers(0, 200, n)
        t["op"] = rng.choice([READ, READ, WRITE, IFETCH, MAP, UNMAP, PROTECT, INVLPG, FLUSH, CONTEXT_SWITCH], n)
        t["vm"] = rng.integers(0, 2, n)
        t["asid"] = rng.integers(0, 3, n)
    t["vaddr"] = ((pages.astype(np.uint64) % np.uint64(1 << 20)) << np.uint64(12)) + (pages.astype(np.uint64) >> np.uint64(20) << np.uint64(33))
    if kind != "churn":
        t["op"] = np.where(rng.random(n) < 0.3, WRITE, np.where(rng.random(n) < 0.1, IFETCH, READ))
    t["vaddr"][t["op"] == CONTEXT_SWITCH] = t["asid"][t["op"] == CONTEXT_SWITCH]
    return t


def config_for(registry, slat, policy="lru", caches=(), **tlb):
    levels = [{"name": "itlb", "sets": 4, "ways": 2, "side": "instruction", "policy": policy},
              {"name": "dtlb", "sets": 4, "ways": 4, "side": "data", "policy": policy,
               "page_sizes": ["4K", "2M"]},
              {"name": "stlb", "sets": 16, "ways": 6, "policy": policy, "page_sizes": ["4K", "2M"]}]
    raw = tiny_config(machine={"slat": slat}, tlb={"levels": levels, **tlb}, walk_caches=list(caches),
                      vms=[{"name": "a"}, {"name": "b", "guest_page_size": "2M"}])
    return build(raw, registry)


KINDS = ["uniform", "zipf", "sequential", "churn"]
#: Every (policy, scheme), (policy, trace kind) and (scheme, trace kind) pair, each
#: (policy, scheme) once: the trace kind of policy i under scheme j is KINDS[(i + j) % 4].
PAIRWISE = [(policy, slat, KINDS[(i + j) % len(KINDS)])
            for i, policy in enumerate(POLICIES) for j, slat in enumerate(SCHEMES)]
EVERY = [(policy, slat, kind) for policy in POLICIES for slat in SCHEMES for kind in KINDS]


def _policies_with_every_walk_cache(registry, policy, slat, kind):
    config, reg = config_for(registry, slat, policy, ALL_CACHES)
    counts = assert_engines_agree(config, reg, trace(kind), chunk_size=997)
    assert counts["accesses"] > 0


@pytest.mark.parametrize("policy,slat,kind", PAIRWISE)
def test_policies_with_every_walk_cache(registry, policy, slat, kind):
    _policies_with_every_walk_cache(registry, policy, slat, kind)


@pytest.mark.slow  # every combination; the pairs above cover each policy, scheme and trace kind with each other
@pytest.mark.parametrize("policy,slat,kind", [c for c in EVERY if c not in PAIRWISE])
def test_policies_with_every_walk_cache_every_combination(registry, policy, slat, kind):
    _policies_with_every_walk_cache(registry, policy, slat, kind)


@pytest.mark.parametrize("caches,slat,kind", [(caches, slat, ("zipf", "churn")[(i + j) % 2])
                                              for i, caches in enumerate(CACHES) for j, slat in enumerate(SCHEMES)])
def test_walk_caches_one_at_a_time(registry, slat, caches, kind):
    _walk_caches_one_at_a_time(registry, slat, caches, kind)


@pytest.mark.slow  # the other trace kind of each pair above
@pytest.mark.parametrize("caches,slat,kind", [(caches, slat, ("zipf", "churn")[(i + j + 1) % 2])
                                              for i, caches in enumerate(CACHES) for j, slat in enumerate(SCHEMES)])
def test_walk_caches_one_at_a_time_other_trace(registry, slat, caches, kind):
    _walk_caches_one_at_a_time(registry, slat, caches, kind)


def _walk_caches_one_at_a_time(registry, slat, caches, kind):
    config, reg = config_for(registry, slat, "lru", CACHES[caches])
    assert_engines_agree(config, reg, trace(kind, seed=3))


@pytest.mark.parametrize("inclusion", ["non-inclusive", "inclusive", "exclusive"])
@pytest.mark.parametrize("tagged", [True, False])
def test_hierarchy_options(registry, inclusion, tagged):
    config, reg = config_for(registry, "intel-ept", "srrip", ALL_CACHES, inclusion=inclusion, tagged=tagged)
    assert_engines_agree(config, reg, trace("churn", seed=4))


@pytest.mark.parametrize("inclusion", ["non-inclusive", "inclusive", "exclusive"])
def test_set_counts_that_are_not_powers_of_two(registry, inclusion):
    """The compiled loop masks power-of-two set counts and divides the others: both index
    sets as the reference tier does (TLBs, walk caches and data caches)."""
    levels = [{"name": "l1", "sets": 3, "ways": 2, "page_sizes": ["4K", "2M"]},
              {"name": "l2", "sets": 12, "ways": 5, "page_sizes": ["4K", "2M"]}]
    caches = [{"type": "pwc", "sets": 3, "ways": 4}, {"type": "nested-tlb", "sets": 5, "ways": 2},
              {"type": "psc", "level": 2, "sets": 6, "ways": 2}]
    cost = {"model": "cache-aware", "l1d_size": "1536", "l1d_ways": 2, "l2_size": "6K", "l2_ways": 4,
            "llc_size": "20K", "llc_ways": 4}
    raw = tiny_config(machine={"slat": "amd-npt"}, tlb={"levels": levels, "inclusion": inclusion},
                      walk_caches=caches, cost=cost, vms=[{"name": "a"}, {"name": "b", "guest_page_size": "2M"}])
    config, reg = build(raw, registry)
    counts = assert_engines_agree(config, reg, trace("zipf", seed=5))
    assert counts["dcache.walk.llc"] > 0 and counts["tlb.l2.hits"] > 0


WIDE_LEVELS = [{"name": "l1", "sets": 1, "ways": 12}, {"name": "l2", "sets": 1, "ways": 80, "page_sizes": ["4K", "2M"]}]
WIDE_CACHES = [{"type": "psc", "level": 2, "ways": 80}, {"type": "nested-tlb", "ways": 20}]  # (l1's 12 ways: scanned)


def wide_config(registry, policy, inclusion="inclusive"):
    levels = [dict(lv, policy=policy) for lv in WIDE_LEVELS]
    caches = [dict(WIDE_CACHES[0], policy=policy), WIDE_CACHES[1]]
    raw = tiny_config(machine={"slat": "intel-ept"}, tlb={"levels": levels, "inclusion": inclusion},
                      walk_caches=caches, vms=[{"name": "a"}, {"name": "b", "guest_page_size": "2M"}])
    return build(raw, registry)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("kind", ["zipf", "churn"])
def test_wide_sets_with_an_index(registry, policy, kind):
    """Sets wider than 16 ways are looked up through an index, narrower ones scanned
    (compiled tier): the same ways are found, filled, dropped and evicted as by the
    reference tier's full scans."""
    config, reg = wide_config(registry, policy)
    counts = assert_engines_agree(config, reg, trace(kind, n=4000, seed=6))
    assert counts["tlb.l1.hits"] > 0 and counts["tlb.l2.hits"] > 0


def index_problems(k, tag, ways_of):
    """Every way a wide set's chains reach, checked against a scan of its tags."""
    problems = []
    for i, ways in enumerate(ways_of):
        if ways <= k.INDEX_MIN_WAYS:
            continue
        for s in range(tag.shape[1]):
            valid = {w for w in range(ways) if tag[i, s, k.CTX * ways + w] != -1}
            reached = []
            for b in range(k.BUCKETS):
                w = tag[i, s, 4 * ways + b]
                while w >= 0 and len(reached) <= ways:
                    if k.bucket(tag[i, s, w], ways) != 4 * ways + b:
                        problems.append(f"array {i} set {s}: way {w} in the wrong chain")
                    reached.append(int(w))
                    w = tag[i, s, k.NEXT * ways + w]
            if sorted(reached) != sorted(valid) or tag[i, s, -1] != len(valid):
                problems.append(f"array {i} set {s}: chains reach {sorted(reached)}, valid ways {sorted(valid)}, "
                                f"count {tag[i, s, -1]}")
    return problems


def test_wide_set_index_matches_a_scan_of_the_tags(registry):
    """After fills, evictions, back-invalidations and flushes (churn trace, inclusive
    hierarchy), each wide set's index chains hold exactly its valid ways, each in its key's
    chain, and its count is their number."""
    from slatframe.counters import Counters
    from slatframe.engine import make_engine
    from slatframe.engine.compiled import walk_rows
    from slatframe.machine import build_machine

    config, reg = wide_config(registry, "lru")
    engine = make_engine("compiled", build_machine(config, reg, Counters()), reg)
    tcfg, ttag = engine.tlb[0], engine.tlb[1]
    wcfg, wtag = walk_rows(engine.k, engine.wcfg), engine.wtag[0]  # core 0's walk caches
    problems, held = [], []
    ctxs = slice(engine.k.CTX * 80, (engine.k.CTX + 1) * 80)  # the 80-way L2's and PSC's
    for kind in ("zipf", "churn"):
        engine.run_chunk(trace(kind, n=4000, seed=6))
        held.append(((ttag[1, 0, ctxs] != -1).sum(), (wtag[0, 0, ctxs] != -1).sum()))
        problems += index_problems(engine.k, ttag, tcfg[:, 1]) + index_problems(engine.k, wtag, wcfg[:, 4])
    assert not problems, problems[:5]
    assert max(n for n, _ in held) > 8 and max(n for _, n in held) > 3, held  # (the chains checked held entries)


def test_auto_takes_compiled_only_with_kernels(registry):
    config, reg = config_for(registry, "native")
    assert choose_engine(config, reg)[0] == "compiled"
    here = Path(__file__).resolve().parents[1] / "examples"
    raw = tiny_config(experiment={"name": "x", "plugins": ["plugins/lfu_policy.py"]},
                      tlb={"levels": [{"name": "l1", "sets": 4, "ways": 4, "policy": "lfu"}]})
    config, reg = build(raw, base_dir=here)
    tier, why = choose_engine(config, reg)
    assert tier == "reference" and "'lfu'" in why and "tlb.levels[0]" in why


def test_loop_python_bodies_agree_with_bounds_checks(tmp_path):
    """The loop's code run as plain Python (NUMBA_DISABLE_JIT=1: every index is checked)
    agrees with the reference engine on a churn trace with every walk cache, and with
    none (the plain walk and its memo)."""
    script = tmp_path / "nojit.py"
    script.write_text(
        "import sys; sys.path.insert(0, %r)\n"
        "from test_engine_parity import config_for, trace, ALL_CACHES\n"
        "from slatframe.registry import Registry\n"
        "from slatframe.testing import assert_engines_agree\n"
        "config, reg = config_for(Registry(), 'intel-ept', 'tree-plru', ALL_CACHES, inclusion='exclusive')\n"
        "assert_engines_agree(config, reg, trace('churn', n=600, seed=9))\n"
        "config, reg = config_for(Registry(), 'native', 'lru')\n"
        "assert_engines_agree(config, reg, trace('churn', n=600, seed=9))\n"
        "print('agree')\n" % str(Path(__file__).parent))
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", SLATFRAME_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and "agree" in proc.stdout, proc.stderr[-2000:]
