"""Per-VM and per-address-space metrics: the same in both tiers, adding up to the totals,
and equal to counts taken from the trace itself."""
from __future__ import annotations

import math

import numpy as np
import pytest

import slatframe
from slatframe.testing import tiny_config
from slatframe.trace import CONTEXT_SWITCH, READ, TRACE_DTYPE, WRITE

PAGE = 4096
BASE = 1 << 30
VMS = ("alpha", "beta")
RATIOS = ("cycles.per_access", "translation_overhead")  # each scope's own ratio, not a share (so are derived.*)


def scheduled_trace(seed: int, n: int = 4000, asids: int = 3) -> np.ndarray:
    """Two VMs taking turns in bursts, each switching among ``asids`` address spaces
    (explicit switch records and implicit ones), 30% writes over 64 pages per space."""
    rng = np.random.default_rng(seed)
    t = np.zeros(n, dtype=TRACE_DTYPE)
    vm = asid = 0
    for i in range(n):
        if rng.random() < 0.02:
            vm = 1 - vm
        if rng.random() < 0.01:  # an explicit switch
            asid = int(rng.integers(0, asids))
            t[i] = (vm, asid, CONTEXT_SWITCH, asid, 0)
            continue
        if rng.random() < 0.01:  # an implicit one: an access of another address space
            asid = int(rng.integers(0, asids))
        page = int(rng.zipf(1.3)) % 64
        t[i] = (vm, asid, WRITE if rng.random() < 0.3 else READ, BASE + (asid << 24) + page * PAGE + 8, 0)
    return t


def config(tmp_path, trace: np.ndarray, slat: str, **experiment) -> dict:
    np.savez(tmp_path / "t.npz", **{k: trace[k] for k in ("vm", "asid", "op", "vaddr")})
    return tiny_config(experiment={"name": "per-vm", "chunk_size": 777, **experiment},
                       machine={"slat": slat, "host_memory": "4G"},
                       vms=[{"name": name, "memory": "1G"} for name in VMS],
                       workload={"source": "npz", "path": str(tmp_path / "t.npz")})


def broken_down(metrics: dict) -> list[str]:
    """The metrics the per-VM figures break down: those every VM reports."""
    return [k for k in metrics if f"vm.{VMS[0]}.{k}" in metrics and k not in RATIOS and not k.startswith("derived.")]


def assert_adds_up(metrics: dict, scopes: list[str], total_prefix: str = "") -> None:
    for k in broken_down(metrics):
        total = metrics[f"{total_prefix}{k}"]
        parts = sum(metrics.get(f"{scope}.{k}", 0) for scope in scopes)
        assert math.isclose(parts, total, rel_tol=1e-12, abs_tol=1e-9), (k, parts, total)


@pytest.mark.parametrize("slat", ["native", "intel-ept", "shadow"])
def test_per_vm_and_per_asid_metrics_agree_add_up_and_count_the_trace(tmp_path, slat):
    trace = scheduled_trace(seed=len(slat))
    raw = config(tmp_path, trace, slat, per_asid=True)
    ref = slatframe.run(raw, engine="reference").metrics
    comp = slatframe.run(raw, engine="compiled").metrics
    assert {k: v for k, v in ref.items() if k.startswith("vm.")} == \
        {k: v for k, v in comp.items() if k.startswith("vm.")}
    m = ref
    assert f"vm.{VMS[0]}.walk.refs" in m and f"vm.{VMS[1]}.tlb.l1.misses" in m
    assert_adds_up(m, [f"vm.{name}" for name in VMS])  # no dedup: no work between records
    assert not any(k.startswith("between_records.") for k in m)
    is_access = trace["op"] < CONTEXT_SWITCH
    for vm, name in enumerate(VMS):
        mine = trace[trace["vm"] == vm]
        asids = sorted(set(mine["asid"].tolist()))
        assert_adds_up(m, [f"vm.{name}.asid.{a}" for a in asids], total_prefix=f"vm.{name}.")
        assert m[f"vm.{name}.accesses"] == int(np.count_nonzero(is_access[trace["vm"] == vm]))
        for a in asids:
            accesses = mine[(mine["asid"] == a) & (mine["op"] < CONTEXT_SWITCH)]
            assert m[f"vm.{name}.asid.{a}.accesses"] == len(accesses)
            if slat == "native":  # 4K pages, nothing unmapped: one guest fault per page touched
                assert m[f"vm.{name}.asid.{a}.faults.guest"] == len(set((accesses["vaddr"] // PAGE).tolist()))


def test_per_vm_exits_by_reason_under_shadow_paging(tmp_path):
    trace = scheduled_trace(seed=7)
    m = slatframe.run(config(tmp_path, trace, "shadow"), engine="compiled").metrics
    reasons = [k for k in m if k.startswith("vm_exits.") and m[k]]
    assert reasons  # shadow paging exits on guest page faults and CR3 loads
    for k in reasons:
        assert m[f"vm.{VMS[0]}.{k}"] + m[f"vm.{VMS[1]}.{k}"] == m[k]
        reason = k[len("vm_exits."):]
        assert m[f"vm.{VMS[0]}.cycles.vm_exit.{reason}"] + m[f"vm.{VMS[1]}.cycles.vm_exit.{reason}"] == \
            m[f"cycles.vm_exit.{reason}"]
    assert not any(k.startswith(f"vm.{VMS[0]}.asid.") for k in m)  # per_asid is off by default


def test_a_vm_without_records_reports_zeros(tmp_path):
    trace = scheduled_trace(seed=3)
    trace["vm"] = 0
    m = slatframe.run(config(tmp_path, trace, "intel-ept"), engine="reference").metrics
    assert m[f"vm.{VMS[1]}.accesses"] == 0 and m[f"vm.{VMS[1]}.cycles.total"] == 0
    assert m[f"vm.{VMS[0]}.walks"] == m["walks"]


def test_warmup_restarts_the_per_vm_counts_too(tmp_path):
    trace = scheduled_trace(seed=5)
    m = slatframe.run(config(tmp_path, trace, "intel-ept", warmup=1500), engine="compiled").metrics
    assert m["accesses"] == int(np.count_nonzero(trace["op"][1500:] < CONTEXT_SWITCH))
    assert_adds_up(m, [f"vm.{name}" for name in VMS])


@pytest.mark.parametrize("engine", ["reference", "compiled"])
def test_dedup_wake_ups_are_work_between_records(tmp_path, engine):
    """A KSM wake-up scans between records: no VM's work, so it is reported apart, and
    the VMs' figures plus it add up to the totals; copy-on-write breaks are the VMs'."""
    trace = scheduled_trace(seed=11, n=6000)
    first = trace["op"][:3000]
    first[first == WRITE] = READ  # pages stay zero, so KSM merges them; later writes break them
    raw = config(tmp_path, trace, "intel-ept")
    raw["dedup"] = {"strategy": "ksm", "sleep": 1000, "pages_to_scan": 10_000}
    m = slatframe.run(raw, engine=engine).metrics
    assert m["dedup.pages_scanned"] > 0 and m["dedup.cow_breaks"] > 0
    assert m["between_records.dedup.pages_scanned"] == m["dedup.pages_scanned"]
    assert m["between_records.dedup.wakeups"] == m["dedup.wakeups"] == 5
    assert m[f"vm.{VMS[0]}.dedup.cow_breaks"] + m[f"vm.{VMS[1]}.dedup.cow_breaks"] == m["dedup.cow_breaks"]
    assert m[f"vm.{VMS[0]}.dedup.pages_scanned"] == 0
    assert m["between_records.accesses"] == 0
    assert_adds_up(m, [f"vm.{name}" for name in VMS] + ["between_records"])
