"""TLB miss counts against independent per-set models written here."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from slatframe.testing import build, run_trace, tiny_config
from slatframe.trace import make_trace

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def lru_misses(pages, sets, ways):
    cache = [OrderedDict() for _ in range(sets)]
    misses = 0
    for p in pages:
        s = cache[p % sets]
        if p in s:
            s.move_to_end(p)
        else:
            misses += 1
            if len(s) == ways:
                s.popitem(last=False)
            s[p] = True
    return misses


def fifo_misses(pages, sets, ways):
    cache = [OrderedDict() for _ in range(sets)]
    misses = 0
    for p in pages:
        s = cache[p % sets]
        if p not in s:
            misses += 1
            if len(s) == ways:
                s.popitem(last=False)
            s[p] = True
    return misses


def lfu_misses(pages, sets, ways):
    """Per set: a list of [page, hits]; the victim is the lowest count, ties the lowest way."""
    cache = [[] for _ in range(sets)]
    misses = 0
    for p in pages:
        s = cache[p % sets]
        for slot in s:
            if slot[0] == p:
                slot[1] += 1
                break
        else:
            misses += 1
            if len(s) < ways:
                s.append([p, 0])
            else:
                victim = min(range(ways), key=lambda w: (s[w][1], w))
                s[victim] = [p, 0]
    return misses


def page_stream(kind: str, n: int, pages: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.integers(0, pages, n)
    ranks = rng.zipf(1.3, n) % pages
    return rng.permutation(pages)[ranks]


MODELS = {"lru": lru_misses, "fifo": fifo_misses}


@pytest.mark.parametrize("policy", ["lru", "fifo"])
@pytest.mark.parametrize("kind", ["uniform", "zipf"])
@pytest.mark.parametrize("sets,ways", [(1, 8), (4, 2), (16, 4), (8, 1)])
def test_single_level_misses_match_model(registry, policy, kind, sets, ways):
    pages = page_stream(kind, 3000, 300, seed=sets * 31 + ways)
    config, reg = build(tiny_config(tlb={"levels": [
        {"name": "l1", "sets": sets, "ways": ways, "policy": policy}]}), registry)
    trace = make_trace(pages.astype(np.uint64) * 4096 + 0x10000000)
    counts, _ = run_trace(config, reg, trace)
    assert counts["tlb.l1.misses"] == MODELS[policy](pages.tolist(), sets, ways)
    assert counts["tlb.l1.hits"] + counts["tlb.l1.misses"] == len(pages)


def test_plugin_file_policy_matches_model():
    """The LFU example plugin of docs/plugin-authors.md, loaded from a config."""
    raw = tiny_config(experiment={"name": "lfu", "plugins": ["plugins/lfu_policy.py"]},
                      tlb={"levels": [{"name": "l1", "sets": 4, "ways": 4, "policy": "lfu"}]})
    config, reg = build(raw, base_dir=EXAMPLES)
    pages = page_stream("zipf", 3000, 200, seed=5)
    counts, _ = run_trace(config, reg, make_trace(pages.astype(np.uint64) << np.uint64(12)))
    assert counts["tlb.l1.misses"] == lfu_misses(pages.tolist(), 4, 4)


def test_two_levels_filter_like_two_models(registry):
    """With one page size and an L1 smaller than L2, an L2 lookup happens exactly on an L1
    miss, and every walk fills both: L2 sees the L1 miss stream, except that an L2 hit also
    refills L1 (so L1 behaves as a plain LRU over all accesses)."""
    pages = page_stream("zipf", 4000, 400, seed=9)
    config, reg = build(tiny_config(tlb={"levels": [
        {"name": "l1", "sets": 4, "ways": 2}, {"name": "l2", "sets": 16, "ways": 4}]}), registry)
    counts, _ = run_trace(config, reg, make_trace(pages.astype(np.uint64) << np.uint64(12)))
    # L1 model: LRU over every access
    assert counts["tlb.l1.misses"] == lru_misses(pages.tolist(), 4, 2)
    # L2 model: LRU over the L1 miss stream
    l1 = [OrderedDict() for _ in range(4)]
    stream = []
    for p in pages.tolist():
        s = l1[p % 4]
        if p in s:
            s.move_to_end(p)
            continue
        stream.append(p)
        if len(s) == 2:
            s.popitem(last=False)
        s[p] = True
    assert counts["tlb.l2.hits"] + counts["tlb.l2.misses"] == len(stream)
    assert counts["tlb.l2.misses"] == lru_misses(stream, 16, 4)
    assert counts["walks"] == counts["tlb.l2.misses"]
