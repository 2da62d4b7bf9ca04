"""Accessed/dirty flag writes, splintering, and several VMs on one host."""
from __future__ import annotations

import numpy as np
import pytest

from slatframe.errors import SimulationError
from slatframe.testing import build, run_trace, tiny_config
from slatframe.trace import READ, WRITE, make_trace

from naive import prefixes


def ad_model(pages, writes):
    """Entry writes to set A/D flags: one per non-leaf entry ever used, and per leaf one
    for the first use plus one more if it was first read and later written."""
    upper = set()
    first_is_write: dict[int, bool] = {}
    written_later: set[int] = set()
    for page, w in zip(pages, writes):
        upper.update(prefixes(page, 4)[:-1])
        if page not in first_is_write:
            first_is_write[page] = w
        elif w and not first_is_write[page]:
            written_later.add(page)
    return len(upper) + len(first_is_write) + len(written_later)


def trace_and_columns(seed, n=4000):
    rng = np.random.default_rng(seed)
    pages = (rng.integers(0, 3, n) << 20) + rng.integers(0, 300, n)
    writes = rng.random(n) < 0.3
    return make_trace(pages.astype(np.uint64) << np.uint64(12), op=np.where(writes, WRITE, READ)), pages, writes


@pytest.mark.parametrize("slat", ["native", "intel-ept", "amd-npt"])
def test_guest_ad_writes_match_model(registry, slat):
    trace, pages, writes = trace_and_columns(3)
    machine = {"slat": slat}
    if slat != "native":
        machine["slat"] = {"name": slat, "ad_bits": False}  # only the guest dimension writes
    config, reg = build(tiny_config(machine=machine, tlb={"levels": [{"name": "l1", "sets": 16, "ways": 4}]}),
                        registry)
    counts, _ = run_trace(config, reg, trace)
    assert counts["walk.ad_writes"] == ad_model(pages.tolist(), writes.tolist())
    # a write through a clean TLB entry walks again to set the dirty flag
    assert counts["walks"] == counts["tlb.l1.misses"] + counts["walk.on_hit"]


def test_second_level_ad_bits_add_writes(registry):
    trace, pages, writes = trace_and_columns(4)
    counts = {}
    for ad in (False, True):
        config, reg = build(tiny_config(machine={"slat": {"name": "intel-ept", "ad_bits": ad}}), registry)
        counts[ad] = run_trace(config, reg, trace)[0]
    assert counts[True]["walk.ad_writes"] > counts[False]["walk.ad_writes"]
    assert counts[True]["walk.refs"] == counts[False]["walk.refs"]


def test_splintered_fills(registry):
    """2M guest pages on 4K host pages: every translation is a 4K TLB entry."""
    trace, _, _ = trace_and_columns(5, 2000)
    config, reg = build(tiny_config(machine={"slat": "intel-ept"},
                                    tlb={"levels": [{"name": "l1", "sets": 4, "ways": 4, "page_sizes": ["4K", "2M"]}]},
                                    vms=[{"name": "a", "guest_page_size": "2M", "host_page_size": "4K"}]), registry)
    counts, _ = run_trace(config, reg, trace)
    assert counts["tlb.splintered_fills"] == counts["walks"] > 0


@pytest.mark.parametrize("slat", ["native", "intel-ept", "amd-npt", "shadow"])
def test_vms_share_the_host_pool_and_not_frames(registry, slat):
    n = 3000
    rng = np.random.default_rng(8)
    vaddrs = (rng.integers(0, 200, n) << 12).astype(np.uint64)
    trace = make_trace(vaddrs, vm=rng.integers(0, 3, n))
    config, reg = build(tiny_config(machine={"slat": slat},
                                    vms=[{"name": f"vm{i}"} for i in range(3)]), registry)
    _, hpa = run_trace(config, reg, trace)
    owner: dict[int, int] = {}
    for vm, pa in zip(trace["vm"].tolist(), hpa.tolist()):
        assert owner.setdefault(pa >> 12, vm) == vm  # a host frame belongs to one VM


@pytest.mark.parametrize("slat", ["native", "intel-ept", "shadow"])
def test_out_of_host_memory_is_a_clear_error(registry, slat):
    config, reg = build(tiny_config(machine={"slat": slat, "host_memory": "1M"},
                                    vms=[{"name": "a", "memory": "64M"}]), registry)
    trace = make_trace((np.arange(600) << 12).astype(np.uint64))
    with pytest.raises(SimulationError, match="host memory is exhausted"):
        run_trace(config, reg, trace)


def test_out_of_guest_memory_is_a_clear_error(registry):
    config, reg = build(tiny_config(machine={"slat": "intel-ept"}, vms=[{"name": "small", "memory": "256K"}]),
                        registry)
    with pytest.raises(SimulationError, match="guest memory of VM small"):
        run_trace(config, reg, make_trace((np.arange(600) << 12).astype(np.uint64)))
