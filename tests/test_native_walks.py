"""Native walks: reference counts against analytic counts, and hPAs against a dict model."""
from __future__ import annotations

import numpy as np
import pytest

from slatframe.testing import build, run_trace, tiny_config
from slatframe.trace import make_trace

def expected_aborted_refs(pages_in_order, levels, leaf_level):
    """Refs of each faulting walk: a walk reads level after level until it finds the first
    entry whose prefix has never been mapped (the index bits above that level)."""
    seen = set()
    total = 0
    for page in pages_in_order:  # page = va >> 12
        refs = 0
        for level in range(levels, leaf_level - 1, -1):
            refs += 1
            prefix = (level, page >> (9 * (level - 1)))
            if prefix not in seen:
                break
        total += refs
        for level in range(levels, leaf_level - 1, -1):
            seen.add((level, page >> (9 * (level - 1))))
    return total


@pytest.mark.parametrize("fmt,levels", [("x86-64", 4), ("x86-64-la57", 5)])
@pytest.mark.parametrize("page_size,leaf_level", [("4K", 1), ("2M", 2), ("1G", 3)])
def test_refs_per_walk_and_faults(registry, fmt, levels, page_size, leaf_level):
    rng = np.random.default_rng(levels * 10 + leaf_level)
    # distinct pages spread over a 2**44-byte range, each visited twice in a row and then
    # again after a different page, so the one-entry TLB misses on the third visit
    shift = 12 + 9 * (leaf_level - 1)
    pages = np.unique(rng.integers(0, 1 << (44 - shift), 300 if leaf_level < 3 else 60)) << shift  # (1G: 60 GiB)
    rng.shuffle(pages)
    vaddrs = np.concatenate([pages, pages[::-1]]).astype(np.uint64)
    raw = tiny_config(machine={"slat": "native", "guest_format": fmt, "host_memory": "2T"},
                      tlb={"levels": [{"name": "l1", "sets": 1, "ways": 1, "page_sizes": [page_size]}]},
                      vms=[{"name": "vm0", "memory": "1T", "guest_page_size": page_size}])
    config, reg = build(raw, registry)
    counts, _ = run_trace(config, reg, make_trace(vaddrs))
    n = len(pages)
    refs_per_walk = levels - leaf_level + 1
    first_touch = [int(p) >> 12 for p in pages]
    # every access misses the one-entry TLB except the repeat at the turn-around
    assert counts["walks"] == 2 * n - 1 == counts["tlb.l1.misses"]
    assert counts["walk.refs"] == refs_per_walk * counts["walks"]
    assert counts["walk.refs_max"] == refs_per_walk
    assert counts["faults.guest"] == n == counts["walk.aborted"]
    assert counts["walk.refs_aborted"] == expected_aborted_refs(first_touch, levels, leaf_level)


def test_hpa_matches_dict_model(registry):
    """Native: the hPA of each access is its page's frame plus the offset; frames are
    distinct per page and stable over the run."""
    rng = np.random.default_rng(3)
    vaddrs = (rng.integers(0, 4000, 10_000) * 4096 + rng.integers(0, 4096, 10_000)).astype(np.uint64)
    config, reg = build(tiny_config(tlb={"levels": [{"name": "l1", "sets": 8, "ways": 4}]}), registry)
    _, hpa = run_trace(config, reg, make_trace(vaddrs))
    frame_of: dict[int, int] = {}
    for va, pa in zip(vaddrs.tolist(), hpa.tolist()):
        assert pa & 0xFFF == va & 0xFFF
        assert frame_of.setdefault(va >> 12, pa >> 12) == pa >> 12
    assert len(set(frame_of.values())) == len(frame_of)


def test_host_memory_exhaustion_is_clear(registry):
    from slatframe.errors import SimulationError

    raw = tiny_config(machine={"slat": "native", "host_memory": "64K"})
    config, reg = build(raw, registry)
    with pytest.raises(SimulationError, match="host memory is exhausted"):
        run_trace(config, reg, make_trace(np.arange(64, dtype=np.uint64) << np.uint64(12)))
