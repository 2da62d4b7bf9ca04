"""Demand paging in the compiled loop (slatframe/engine/demand.py): a first touch the
loop serves (a guest's fault, and under nested paging the host's) leaves the machine
exactly as the Python fault handlers would, which the reference tier (that never serves
one in a loop) shows."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slatframe.counters import Counters
from slatframe.engine import make_engine
from slatframe.machine import build_machine
from slatframe.testing import build, process_churn, run_chunks, tiny_config
from slatframe.trace import READ, TRACE_DTYPE, UNMAP, WRITE

TLB = {"levels": [{"name": "l1", "sets": 4, "ways": 2}]}


def run(config, registry, trace, tier, chunk=700):
    counters = Counters()
    machine = build_machine(config, registry, counters)
    engine = make_engine(tier, machine, registry)
    hpa = np.zeros(len(trace), dtype=np.uint64)
    run_chunks(engine, config, registry, trace, chunk, hpa)
    return engine, machine, counters, hpa


def state(machine):
    """Everything a fault changes: each kernel's roots, leaves and tables, and the host
    memory's allocator and stored words."""
    host = machine.context.host
    frames = np.flatnonzero(host.slot_of >= 0)
    words = {int(f): host.words[host.slot_of[f]].tolist() for f in frames}
    content = host.content[:np.flatnonzero(host.content).max() + 1] if host.content.any() else []
    translator = machine.translator
    kernels = [(k.roots, k.spaces, k.tables, k.free, getattr(k.phys, "next_free", None)) for k in translator.kernels]
    backings = [(b.pages, b.small) for b in getattr(translator, "backings", [])]
    return kernels, backings, host.next_free, host.allocated, host.rows, words, list(content)


def nonzero(counts):
    return {name: value for name, value in counts.items() if value}


def agree(config, registry, trace, chunk=700):
    """Run both tiers; assert every count, hPA and the machine's state agree; return the
    compiled engine and the counts."""
    _, ref_machine, ref, ref_hpa = run(config, registry, trace, "reference", chunk)
    engine, machine, comp, hpa = run(config, registry, trace, "compiled", chunk)
    assert nonzero(comp.as_dict()) == nonzero(ref.as_dict())
    assert {scope: nonzero(c) for scope, c in comp.by_scope().items()} == \
        {scope: nonzero(c) for scope, c in ref.by_scope().items()}
    assert (hpa == ref_hpa).all()
    assert state(machine) == state(ref_machine)
    return engine, ref.as_dict()


def records(rows):
    trace = np.zeros(len(rows), dtype=TRACE_DTYPE)
    trace["vm"], trace["asid"], trace["op"], trace["vaddr"] = zip(*rows)
    return trace


@pytest.mark.parametrize("slat, host_page", [("native", "4K"), ("intel-ept", "4K"), ("intel-ept", "2M"),
                                             ("amd-npt", "4K")])
def test_the_loop_maps_every_first_touch_as_the_kernel_would(slat, host_page):
    """Two VMs (4K and 2M guest pages), two address spaces, walks with and without walk
    caches: every fault is served in the loop (the guest's: as many as distinct pages
    touched, counted from the trace; under nested paging the host's too), and nothing
    differs from the reference tier."""
    rng = np.random.default_rng(5)
    n = 2000
    vm = rng.integers(0, 2, n)
    asid = rng.integers(0, 2, n)
    va = (1 << 30) - (8 << 20) + rng.integers(0, 16 << 20, n)  # 16 MiB across a 1G boundary: tables on the way
    op = np.where(rng.random(n) < 0.3, WRITE, READ)
    trace = records(list(zip(vm, asid, op, va)))
    pages = {(int(v), int(a), int(x) >> (12 if v == 0 else 21)) for v, a, x in zip(vm, asid, va)}
    for walk_caches in ([], [{"type": "psc", "level": lv} for lv in (4, 3, 2)]):
        config, registry = build(tiny_config(
            tlb=TLB, walk_caches=walk_caches, experiment={"name": "t", "seed": 1, "per_asid": True},
            machine={"slat": slat, "host_memory": "4G"},
            vms=[{"name": "vm0", "memory": "1G", "host_page_size": host_page},
                 {"name": "vm1", "memory": "1G", "guest_page_size": "2M", "host_page_size": host_page}]))
        engine, counts = agree(config, registry, trace)
        assert counts["faults.guest"] == len(pages)
        assert engine.pager.served == counts["faults.guest"] + counts.get("faults.host", 0)
        assert (counts.get("faults.host", 0) > 0) == (slat != "native")


def test_pages_freed_to_reuse_are_mapped_by_python():
    """After an unmap frees a page, the next fault reuses it (GuestOs.alloc's free list
    first), which the loop leaves to Python: 100 first touches in the loop, then 10
    unmaps each followed by a fresh touch that takes the freed page."""
    base = 1 << 30
    rows = [(0, 0, WRITE, base + p * 4096) for p in range(100)]
    for j in range(10):
        rows += [(0, 0, UNMAP, base + j * 4096), (0, 0, READ, base + (100 + j) * 4096)]
    config, registry = build(tiny_config(tlb=TLB))
    engine, counts = agree(config, registry, records(rows))
    assert counts["faults.guest"] == 110
    assert engine.pager.served == 100


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**16), slat=st.sampled_from(["native", "intel-ept"]),
       host_page=st.sampled_from(["4K", "2M"]), chunk=st.integers(1, 300))
def test_the_machine_agrees_through_process_churn(seed, slat, host_page, chunk):
    """Forks, exits, execs, shared mappings, unmaps and protects among first touches (the
    loop serves some faults, Python the others, and the kernel's free lists come and go):
    the whole machine state as in the reference tier, whatever the chunk boundaries."""
    vm = {"name": "vm0", "memory": "1G", **({"host_page_size": host_page} if slat != "native" else {})}
    config, registry = build(tiny_config(tlb=TLB, machine={"slat": slat, "host_memory": "4G"}, vms=[vm]))
    agree(config, registry, process_churn(seed, n=300, exec_share=0.3), chunk)
