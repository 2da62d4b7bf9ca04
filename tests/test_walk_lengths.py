"""References per walk against the analytic counts, for every scheme and page size."""
from __future__ import annotations

import numpy as np
import pytest

from slatframe.testing import build, run_trace, tiny_config
from slatframe.trace import make_trace

SIZES = {"4K": 1, "2M": 2, "1G": 3}


def expected(slat, g_levels, h_levels, gsize, hsize):
    """(guest refs, host refs) of one walk with no walk caches."""
    n = g_levels - SIZES[gsize] + 1
    if slat == "native":
        return n, 0
    if slat == "shadow":
        return g_levels - min(SIZES[gsize], SIZES[hsize]) + 1, 0
    m = h_levels - SIZES[hsize] + 1
    return n, (n + 1) * m


CASES = [
    # slat, guest format, host format options, guest size, host size
    ("native", "x86-64", None, "4K", "4K"),
    ("native", "x86-64-la57", None, "4K", "4K"),
    ("native", "x86-64", None, "2M", "4K"),
    ("native", "x86-64", None, "1G", "4K"),
    ("intel-ept", "x86-64", {"name": "ept"}, "4K", "4K"),
    ("amd-npt", "x86-64", {"name": "npt"}, "4K", "4K"),
    ("intel-ept", "x86-64-la57", {"name": "ept", "levels": 5}, "4K", "4K"),
    ("amd-npt", "x86-64-la57", {"name": "npt", "levels": 5}, "4K", "4K"),
    ("intel-ept", "x86-64", {"name": "ept"}, "2M", "4K"),
    ("amd-npt", "x86-64", {"name": "npt"}, "2M", "4K"),
    ("intel-ept", "x86-64", {"name": "ept"}, "4K", "1G"),
    ("amd-npt", "x86-64", {"name": "npt"}, "4K", "1G"),
    ("intel-ept", "x86-64", {"name": "ept"}, "4K", "2M"),
    ("intel-ept", "x86-64", {"name": "ept"}, "2M", "2M"),
    ("amd-npt", "x86-64", {"name": "npt"}, "1G", "1G"),
    ("shadow", "x86-64", None, "4K", "4K"),
    ("shadow", "x86-64", None, "2M", "4K"),
    ("shadow", "x86-64", None, "2M", "2M"),
    ("shadow", "x86-64-la57", None, "4K", "4K"),
]


@pytest.mark.parametrize("slat,gfmt,hfmt,gsize,hsize", CASES)
def test_refs_per_walk(registry, slat, gfmt, hfmt, gsize, hsize):
    g_levels = 5 if gfmt.endswith("la57") else 4
    h_levels = (hfmt or {}).get("levels", 4)
    machine = {"slat": slat, "guest_format": gfmt, "host_memory": "256G"}
    if hfmt:
        machine["host_format"] = hfmt
    raw = tiny_config(machine=machine,
                      tlb={"levels": [{"name": "l1", "sets": 1, "ways": 1, "page_sizes": ["4K", "2M", "1G"]}]},
                      vms=[{"name": "vm0", "memory": "64G", "guest_page_size": gsize, "host_page_size": hsize}])
    config, reg = build(raw, registry)
    rng = np.random.default_rng(7)
    pages = np.unique(rng.integers(0, 1 << 22, 150)) << 12  # 4K pages over 16 GiB
    rng.shuffle(pages)
    # touch every page, then the same pages again in reverse: with a one-entry TLB every
    # access misses except where two neighbours share a TLB-entry-sized page
    trace = make_trace(np.concatenate([pages, pages[::-1]]).astype(np.uint64))
    counts, _ = run_trace(config, reg, trace)
    guest, host = expected(slat, g_levels, h_levels, gsize, hsize)
    walks = counts["walks"]
    entry_size = 1 << (12 + 9 * (min(SIZES[gsize], SIZES[hsize]) - 1)) if slat != "native" else \
        1 << (12 + 9 * (SIZES[gsize] - 1))
    assert walks == counts["tlb.l1.misses"] >= len(np.unique(pages // entry_size))
    assert counts["walk.refs"] == (guest + host) * walks
    assert counts["walk.refs_guest"] == guest * walks
    assert counts["walk.refs_host"] == host * walks
    assert counts["walk.refs_max"] == guest + host


def test_headline_counts():
    """The table of the issue, spelled out: 4, 5, 24, 35, 19, 14 and 4."""
    assert expected("native", 4, 0, "4K", "4K") == (4, 0)
    assert expected("native", 5, 0, "4K", "4K") == (5, 0)
    assert sum(expected("intel-ept", 4, 4, "4K", "4K")) == 24
    assert sum(expected("amd-npt", 5, 5, "4K", "4K")) == 35
    assert sum(expected("intel-ept", 4, 4, "2M", "4K")) == 19
    assert sum(expected("intel-ept", 4, 4, "4K", "1G")) == 14
    assert sum(expected("shadow", 4, 0, "4K", "4K")) == 4
