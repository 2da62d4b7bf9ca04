"""Shadow paging exits, counted against an independent model of the guest kernel."""
from __future__ import annotations

import numpy as np
import pytest

from slatframe.testing import build, run_trace, tiny_config
from slatframe.trace import CONTEXT_SWITCH, FLUSH, INVLPG, MAP, PROTECT, READ, TRACE_DTYPE, UNMAP

from naive import GuestTablesModel, prefixes


def churn_trace(n, seed):
    """Reads, maps, unmaps, protects, invlpgs, flushes and context switches over 3 asids."""
    rng = np.random.default_rng(seed)
    ops = rng.choice([READ, READ, READ, MAP, UNMAP, PROTECT, INVLPG, FLUSH, CONTEXT_SWITCH], n)
    t = np.zeros(n, dtype=TRACE_DTYPE)
    t["op"] = ops
    pages = rng.integers(0, 64, n).astype(np.uint64) + (rng.integers(0, 3, n).astype(np.uint64) << np.uint64(27))
    t["vaddr"] = pages << np.uint64(12)
    asid = 0
    for i in range(n):  # accesses carry the current asid; switches name the next one
        if ops[i] == CONTEXT_SWITCH:
            asid = int(rng.integers(0, 3))
            t["vaddr"][i] = asid
        t["asid"][i] = asid
    return t


def expected_exits(trace):
    """pt_write: entries the guest kernel writes into a table the shadow has a page for
    (the root once the asid has run; a lower table once an access went through it);
    cr3_write: switches and flushes; invlpg: unmaps, protects and invlpgs; injected guest
    faults: first touches."""
    kernels: dict[int, GuestTablesModel] = {}
    shadowed: dict[int, set] = {}
    pt_write = cr3 = invlpg = guest_faults = 0
    for op, asid, va in zip(trace["op"].tolist(), trace["asid"].tolist(), trace["vaddr"].tolist()):
        k = kernels.setdefault(asid, GuestTablesModel())
        protected = shadowed.setdefault(asid, set())
        page = va >> 12
        trapped = lambda entries: sum(1 for e in entries if k.holder(e) in protected)  # noqa: E731
        if op == READ:
            protected.add("root")  # the first access makes the shadow root
            if page not in k.mapped:
                guest_faults += 1
                pt_write += trapped(k.map_entries(page))
            protected.update(prefixes(page, 4)[:-1])  # the hidden fault shadows the path
        elif op == MAP:
            pt_write += trapped(k.map_entries(page))
        elif op in (UNMAP, PROTECT):
            leaf = prefixes(page, 4)[-1]
            pt_write += trapped([leaf]) * (k.unmap(page) if op == UNMAP else k.protect(page))
            invlpg += 1
        elif op == INVLPG:
            invlpg += 1
        elif op in (FLUSH, CONTEXT_SWITCH):
            cr3 += 1
    return pt_write, cr3, invlpg, guest_faults


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_exit_per_pt_write_and_context_switch(registry, seed):
    trace = churn_trace(3000, seed)
    config, reg = build(tiny_config(machine={"slat": "shadow"},
                                    tlb={"levels": [{"name": "l1", "sets": 8, "ways": 4}]}), registry)
    counts, _ = run_trace(config, reg, trace)
    pt_write, cr3, invlpg, guest_faults = expected_exits(trace)
    assert pt_write > 100 and cr3 > 100
    assert counts["vm_exits.pt_write"] == pt_write
    assert counts["vm_exits.cr3_write"] == cr3
    assert counts["vm_exits.invlpg"] == invlpg
    assert counts["faults.guest"] == guest_faults
    assert counts["vm_exits"] == pt_write + cr3 + invlpg + counts["vm_exits.page_fault"]


@pytest.mark.parametrize("slat", ["native", "intel-ept", "amd-npt"])
def test_other_schemes_take_no_exit_for_guest_events(registry, slat):
    trace = churn_trace(2000, 4)
    config, reg = build(tiny_config(machine={"slat": slat}), registry)
    counts, _ = run_trace(config, reg, trace)
    assert counts["faults.guest"] == expected_exits(trace)[3]
    assert counts.get("vm_exits", 0) == counts.get("faults.host", 0)  # only second-level faults exit
    assert all(not k.startswith("vm_exits.") or k.endswith(("ept_violation", "npf")) for k in counts)


def test_unmap_invalidates(registry):
    """After an unmap, the next access faults again and gets a fresh mapping. (The freed
    page goes to the next page the kernel maps, 0x9000 here, so a stale translation of
    0x5000 would show as that page.)"""
    t = np.zeros(5, dtype=TRACE_DTYPE)
    t["vaddr"] = [0x5000, 0x5000, 0x9000, 0x5000, 0x5000]
    t["op"] = [READ, UNMAP, READ, READ, READ]
    for slat in ("native", "intel-ept", "shadow"):
        config, reg = build(tiny_config(machine={"slat": slat}), registry)
        counts, hpa = run_trace(config, reg, t)
        assert counts["faults.guest"] == 3, slat
        assert hpa[2] == hpa[0] and hpa[3] != hpa[0] and hpa[3] == hpa[4], slat
