"""TLB miss counts against independent per-set models written here."""
from __future__ import annotations

import zlib
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


def generic_misses(pages, sets, ways, make_state, on_hit, on_fill, choose):
    """Per-set simulation: ``slots`` lists the resident pages by way (None = invalid)."""
    slots = [[None] * ways for _ in range(sets)]
    state = [make_state() for _ in range(sets)]
    misses = 0
    for p in pages:
        s = p % sets
        if p in slots[s]:
            on_hit(state[s], slots[s].index(p))
            continue
        misses += 1
        way = slots[s].index(None) if None in slots[s] else choose(state[s])
        slots[s][way] = p
        on_fill(state[s], way)
    return misses


def srrip_misses(pages, sets, ways, bits=2):
    top = 2 ** bits - 1

    def choose(rrpv):
        while top not in rrpv:
            rrpv[:] = [v + 1 for v in rrpv]
        return rrpv.index(top)

    return generic_misses(pages, sets, ways, lambda: [top] * ways,
                          lambda r, w: r.__setitem__(w, 0), lambda r, w: r.__setitem__(w, top - 1), choose)


def plru_misses(pages, sets, ways):
    """Tree PLRU as a recursive structure: each node is [bit, left, right] or a way number;
    bit 1 means the victim is on the right."""
    leaves = 1
    while leaves < ways:
        leaves *= 2

    def tree(lo, n):
        return lo if n == 1 else [0, tree(lo, n // 2), tree(lo + n // 2, n // 2)]

    def ways_in(node):
        return {node} if isinstance(node, int) else ways_in(node[1]) | ways_in(node[2])

    def touch(node, way):
        while not isinstance(node, int):
            go_right = way in ways_in(node[2])
            node[0] = 0 if go_right else 1
            node = node[2] if go_right else node[1]

    def choose(node):
        while not isinstance(node, int):
            right_ok = node[0] == 1 and min(ways_in(node[2])) < ways
            node = node[2] if right_ok else node[1]
        return node

    return generic_misses(pages, sets, ways, lambda: tree(0, leaves), touch, touch, choose)


def random_misses(pages, sets, ways, seed_state):
    """xorshift64* as published by Vigna, victim = (output >> 32) mod ways."""
    st = [seed_state]
    M = 2 ** 64

    def choose(_):
        x = st[0]
        x ^= x >> 12
        x = (x ^ (x << 25)) % M
        x ^= x >> 27
        st[0] = x
        return ((x * 0x2545F4914F6CDD1D) % M >> 32) % ways

    return generic_misses(pages, sets, ways, lambda: None, lambda *a: None, lambda *a: None, choose)


def page_stream(kind: str, n: int, pages: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.integers(0, pages, n)
    ranks = rng.zipf(1.3, n) % pages
    return rng.permutation(pages)[ranks]


MODELS = {"lru": lru_misses, "fifo": fifo_misses, "srrip": srrip_misses, "tree-plru": plru_misses}


@pytest.mark.parametrize("policy", ["lru", "fifo", "srrip", "tree-plru"])
@pytest.mark.parametrize("kind", ["uniform", "zipf"])
@pytest.mark.parametrize("sets,ways", [(1, 8), (4, 2), (16, 4), (8, 1), (2, 12), (4, 6)])
def test_single_level_misses_match_model(registry, policy, kind, sets, ways):
    pages = page_stream(kind, 3000, 300, seed=sets * 31 + ways)
    config, reg = build(tiny_config(tlb={"levels": [
        {"name": "l1", "sets": sets, "ways": ways, "policy": policy}]}), registry)
    trace = make_trace(pages.astype(np.uint64) * 4096 + 0x10000000)
    counts, _ = run_trace(config, reg, trace)
    assert counts["tlb.l1.misses"] == MODELS[policy](pages.tolist(), sets, ways)
    assert counts["tlb.l1.hits"] + counts["tlb.l1.misses"] == len(pages)


def test_random_policy_matches_model(registry):
    config, reg = build(tiny_config(tlb={"levels": [{"name": "l1", "sets": 4, "ways": 6, "policy": "random"}]}),
                        registry)
    pages = page_stream("zipf", 3000, 300, seed=3)
    counts, _ = run_trace(config, reg, make_trace(pages.astype(np.uint64) << np.uint64(12)))
    # the policy's seed is the first draw of the level's own generator, as documented
    seed_state = int(np.random.default_rng([1, zlib.crc32(b"tlb.l1")]).integers(1, 1 << 63))
    assert counts["tlb.l1.misses"] == random_misses(pages.tolist(), 4, 6, seed_state)
    other, _ = build(tiny_config(experiment={"name": "t", "seed": 2},
                                 tlb={"levels": [{"name": "l1", "sets": 4, "ways": 6, "policy": "random"}]}), registry)
    assert run_trace(other, reg, make_trace(pages.astype(np.uint64) << np.uint64(12)))[0] != counts


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


def test_compiled_plugin_file_policy_agrees_with_its_reference():
    """The compiled LFU example of docs/plugin-authors.md: auto picks the compiled tier,
    and both tiers agree with each other and with the model."""
    from slatframe.engine import choose_engine
    from slatframe.testing import assert_engines_agree

    raw = tiny_config(experiment={"name": "lfu", "plugins": ["plugins/lfu_policy_compiled.py"]},
                      tlb={"levels": [{"name": "l1", "sets": 4, "ways": 4, "policy": "lfu"}]})
    config, reg = build(raw, base_dir=EXAMPLES)
    assert choose_engine(config, reg)[0] == "compiled"
    pages = page_stream("zipf", 3000, 200, seed=5)
    counts = assert_engines_agree(config, reg, make_trace(pages.astype(np.uint64) << np.uint64(12)))
    assert counts["tlb.l1.misses"] == lfu_misses(pages.tolist(), 4, 4)
