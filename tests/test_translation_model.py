"""Every scheme's hPAs against brute-force decoding of the tables and a dict model."""
from __future__ import annotations

import numpy as np
import pytest

from slatframe.counters import Counters
from slatframe.engine.reference import ReferenceEngine
from slatframe.machine import build_machine
from slatframe.testing import build, tiny_config
from slatframe.trace import READ, TRACE_DTYPE, WRITE

from naive import EPT_RWX, P, decode

SCHEMES = ["native", "intel-ept", "amd-npt", "shadow"]


def random_trace(n, seed):
    """10^4 accesses over 2 VMs x 3 address spaces, pages clustered so tables are shared."""
    rng = np.random.default_rng(seed)
    t = np.zeros(n, dtype=TRACE_DTYPE)
    t["vm"] = rng.integers(0, 2, n)
    t["asid"] = rng.integers(0, 3, n)
    region = rng.integers(0, 8, n).astype(np.uint64) << np.uint64(30)
    t["vaddr"] = region + (rng.integers(0, 600, n).astype(np.uint64) << np.uint64(12)) + rng.integers(0, 4096, n).astype(np.uint64)
    t["op"] = np.where(rng.random(n) < 0.3, WRITE, READ)
    return t


def run(slat, gsize, hsize, trace):
    raw = tiny_config(machine={"slat": slat, "host_memory": "64G"},
                      tlb={"levels": [{"name": "l1", "sets": 8, "ways": 4, "page_sizes": ["4K", "2M"]},
                                      {"name": "l2", "sets": 64, "ways": 8, "page_sizes": ["4K", "2M"]}]},
                      vms=[{"name": f"vm{i}", "memory": "8G", "guest_page_size": gsize,
                            "host_page_size": hsize} for i in range(2)])
    config, reg = build(raw)
    machine = build_machine(config, reg, Counters())
    hpa = np.zeros(len(trace), dtype=np.uint64)
    ReferenceEngine(machine).run_chunk(trace, hpa)
    return machine, hpa


def expected_hpa(slat, machine, vm, asid, va):
    """Decode the guest tables by hand, then the host mapping (tables or the dict)."""
    tr = machine.translator
    host = machine.context.host
    if slat == "native":
        return decode(host.read, tr.kernels[vm].roots[asid], va, 4, P)[0]
    if slat == "shadow":
        backing = tr.backings[vm]
        gpa_of = lambda gpa: backing.pages[gpa // backing.page_size] + gpa % backing.page_size
        gpa = decode(lambda a: host.read(gpa_of(a)), tr.kernels[vm].roots[asid], va, 4, P)[0]
        via_shadow = decode(host.read, tr.hw.guest_roots.get(vm, asid), va, 4, P)
        hpa = gpa_of(gpa)
        assert via_shadow is None or via_shadow[0] == hpa  # a filled shadow entry agrees
        return hpa
    present = EPT_RWX if slat == "intel-ept" else P
    root = tr.backings[vm].root
    to_hpa = lambda gpa: decode(host.read, root, gpa, 4, present)[0]
    gpa = decode(host.read, tr.kernels[vm].roots[asid], va, 4, P, resolve=to_hpa)[0]
    return to_hpa(gpa)


@pytest.mark.parametrize("slat,gsize,hsize", [  # native has no host pages: only its default, 4K
    (slat, g, h) for slat in SCHEMES for g, h in (("4K", "4K"), ("2M", "4K"), ("4K", "2M"), ("2M", "2M"))
    if slat != "native" or h == "4K"])
def test_hpa_matches_brute_force(slat, gsize, hsize):
    trace = random_trace(10_000, seed=11)
    machine, hpa = run(slat, gsize, hsize, trace)
    model: dict[tuple[int, int, int], int] = {}
    for (vm, asid, op, va, _), pa in zip(trace.tolist(), hpa.tolist()):
        assert pa == expected_hpa(slat, machine, vm, asid, va)
        assert pa & 0xFFF == va & 0xFFF
        assert model.setdefault((vm, asid, va >> 12), pa >> 12) == pa >> 12
    # no two guest pages share a host frame (nothing is deduplicated here)
    assert len(set(model.values())) == len(model)


def test_schemes_agree_on_guest_layout():
    """The guest kernel is the same under every hypervisor: it hands out the same gPAs."""
    trace = random_trace(3000, seed=2)
    gpas = {}
    for slat in ("intel-ept", "amd-npt", "shadow"):
        machine, _ = run(slat, "4K", "4K", trace)
        kernel = machine.translator.kernels[0]
        gpas[slat] = [kernel.lookup(asid, va).entry & 0xFFFFFFFFFF000
                      for vm, asid, op, va, _ in trace.tolist() if vm == 0]
    assert gpas["intel-ept"] == gpas["amd-npt"] == gpas["shadow"]


@pytest.mark.parametrize("slat", ["intel-ept", "amd-npt"])
def test_software_mirrors_match_the_tables(slat):
    """The hypervisor's dict and the guest kernel's leaf index agree with the radix tables
    that hardware walks."""
    machine, _ = run(slat, "4K", "2M", random_trace(3000, seed=4))
    for backing in machine.translator.backings:
        assert backing.pages
        for gpage, hpa in backing.pages.items():
            gpa = gpage * backing.page_size + 123
            assert backing.lookup(gpa) == backing.table_lookup(gpa) == hpa + 123
    for kernel in machine.translator.kernels:
        for asid, space in kernel.spaces.items():
            for page, address in space.items():
                step = kernel.lookup(asid, page << kernel.shift)
                assert step.present and step.entry_address == address
