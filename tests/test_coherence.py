"""Keeping translations coherent on several vCPUs (issue 34, phase 3): shootdowns, IPIs,
VM exits and remote flushes, each against a count worked out from the trace by hand,
and translations against a machine of one vCPU (a stale entry would change an hPA)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slatframe.errors import SlatframeError
from slatframe.testing import assert_engines_agree, build, run_placed, tiny_config
from slatframe.trace import (CONTEXT_SWITCH, EXEC, EXIT, FLUSH, FORK, INVLPG, PROTECT, READ, TRACE_DTYPE, UNMAP,
                             WRITE)

PAGE = 4096
BASE = 1 << 30
TLB = {"levels": [{"name": "l1", "sets": 64, "ways": 4}]}  # 256 entries: nothing here is evicted


def trace(rows: list[tuple[int, int, int, int, int]]) -> np.ndarray:
    """(vm, asid, op, vaddr, thread) rows."""
    return np.array(rows, dtype=TRACE_DTYPE)


def machine(vcpus: int, slat: str = "native", **extra) -> tuple:
    """One VM of ``vcpus`` vCPUs, each on a core of its own (thread t on vCPU t)."""
    raw = tiny_config(machine={"slat": slat, "host_memory": "4G", "cores": vcpus, **extra},
                      vms=[{"name": "vm0", "memory": "256M", "vcpus": vcpus}], tlb=TLB)
    return build(raw)


def page(n: int) -> int:
    return BASE + n * PAGE


def counts(config_registry: tuple, rows: list) -> dict:
    totals, _, scoped = run_placed(*config_registry, trace(rows))
    out = dict(totals)
    for scope, part in scoped.items():
        if scope is None:  # work before the first record (none of these tests has any)
            continue
        core = scope[3]
        for name, n in part.items():
            out[f"core.{core}.{name}"] = out.get(f"core.{core}.{name}", 0) + n
    return out


def warm(k: int, shared: int = 5) -> list:
    """Each of ``k`` threads reads the shared page and a page of its own."""
    return [(0, 0, READ, page(shared), t) for t in range(k)] + [(0, 0, READ, page(10 + t), t) for t in range(k)]


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("slat, ipiv, exits", [("native", False, 0), ("intel-ept", False, 1), ("intel-ept", True, 0),
                                               ("amd-npt", False, 1)])
def test_one_unmap_is_one_shootdown_of_every_other_vcpu(k, slat, ipiv, exits):
    """k threads cache page 5; thread 0 unmaps it: 1 shootdown, k - 1 IPIs (each a VM
    exit under a hypervisor without IPI virtualization), the k - 1 remote entries gone
    (each thread's next read of page 5 walks), the threads' own pages kept (they hit)."""
    rows = warm(k) + [(0, 0, UNMAP, page(5), 0)] + warm(k)
    m = counts(machine(k, slat, ipi_virtualization=ipiv), rows)
    assert (m["tlb.shootdowns"], m["ipi.sent"], m["ipi.received"]) == (1, k - 1, k - 1)
    assert m.get("vm_exits.ipi", 0) == exits * (k - 1)
    assert m["tlb.remote_invalidations"] == k - 1
    assert m["walks"] == 3 * k  # page 5 twice and its own page once, per thread
    assert all(m[f"core.{c}.walks"] == 3 for c in range(k))
    assert m["faults.guest"] == 1 + k + 1  # page 5 twice (mapped again), each own page once
    assert m["core.0.tlb.shootdowns"] == 1 and m["core.1.ipi.received"] == 1


@pytest.mark.parametrize("pages, full", [(33, False), (34, True)])
def test_more_than_33_pages_is_one_full_flush(pages, full):
    """Thread 0 unmaps a range of consecutive pages both threads read: one shootdown,
    one IPI; above Linux's ceiling of 33 pages the receiver flushes the whole address
    space, so thread 1's own page (10) is gone too and its next read walks."""
    rng = [page(100 + i) for i in range(pages)]
    rows = [(0, 0, READ, va, t) for t in (0, 1) for va in rng] + [(0, 0, READ, page(10), 1)]
    rows += [(0, 0, UNMAP, va, 0) for va in rng] + [(0, 0, READ, page(10), 1)]
    m = counts(machine(2), rows)
    assert (m["tlb.shootdowns"], m["ipi.sent"]) == (1, 1)
    assert m["core.1.walks"] == pages + 1 + full


@pytest.mark.parametrize("pages, invlpg, cr3", [(33, 33, 0), (34, 0, 1)])
def test_under_shadow_paging_the_receiver_s_flush_exits(pages, invlpg, cr3):
    """Under shadow paging the receiver's flush is the guest's INVLPG of each page (an
    exit each) or, above the ceiling, a CR3 load (one exit)."""
    rng = [page(100 + i) for i in range(pages)]
    rows = [(0, 0, READ, va, t) for t in (0, 1) for va in rng]
    rows += [(0, 0, UNMAP, va, 0) for va in rng]
    m = counts(machine(2, "shadow"), rows)
    assert m.get("core.1.vm_exits.invlpg", 0) == invlpg
    assert m.get("core.1.vm_exits.cr3_write", 0) == cr3
    assert m["core.0.vm_exits.invlpg"] == pages  # the sender's own, one per unmap record


@pytest.mark.parametrize("k", [2, 4])
def test_a_shadow_zap_flushes_every_running_vcpu(k):
    """Under shadow paging (emulated guest table writes), thread 0's unmap of a page
    every thread caches: the guest's shootdown (k - 1 IPIs, each an exit, each receiver's
    INVLPG an exit) and the hypervisor's flush of the zapped shadow entry: one remote
    flush, a host IPI and an exit on each of the k - 1 other running vCPUs."""
    m = counts(machine(k, "shadow"), warm(k) + [(0, 0, UNMAP, page(5), 0)])
    assert m["vm_exits.ipi"] == k - 1
    assert m["vm_exits.invlpg"] == 1 + (k - 1)
    assert (m["hypervisor.remote_flushes"], m["hypervisor.flush_ipis"], m["vm_exits.remote_flush"]) == \
        (1, k - 1, k - 1)
    assert m["hypervisor.remote_flushes.leaf_zapped"] == 1


@pytest.mark.parametrize("slat", [{"name": "shadow", "enlightened": True}, {"name": "intel-ept", "enlightened": True}])
@pytest.mark.parametrize("k", [2, 4])
def test_an_enlightened_guest_shoots_down_by_one_hypercall(slat, k):
    """k threads cache page 5 and their own pages; thread 0 unmaps page 5: one flush
    hypercall, no IPI; the hypervisor flushes each other vCPU's whole TLB context and
    kicks it (each runs on its core): k - 1 remote-flush exits, and every thread's own
    page walks again."""
    rows = warm(k) + [(0, 0, UNMAP, page(5), 0)] + warm(k)
    m = counts(machine(k, slat), rows)
    assert m["tlb.shootdowns"] == m["tlb.flush_hypercalls"] == 1
    assert m.get("ipi.sent", 0) == 0 and m.get("vm_exits.ipi", 0) == 0
    own = 1 if slat["name"] == "shadow" else 0  # its unmap's INVLPG is a hypercall too; its zap kicks them too
    assert m["core.0.vm_exits.hypercall"] == 1 + own
    assert all(m.get(f"core.{c}.vm_exits.hypercall", 0) == 0 for c in range(1, k))
    assert m["vm_exits.remote_flush"] == (k - 1) * (1 + own)
    assert all(m[f"core.{c}.walks"] == 4 for c in range(1, k))  # 5, own, 5 again, own again


@pytest.mark.parametrize("pv", [False, True])
def test_kvm_s_paravirtual_flush_sends_no_ipi_to_a_preempted_vcpu(pv):
    """vCPUs 1 and 2 share core 1 (vCPU 2 ran last there, so vCPU 1 is preempted); all
    three threads cache page 5; thread 0 unmaps it. Without the paravirtual flush both
    get an IPI (each an exit); with it only vCPU 2 does, and vCPU 1 is flushed for its
    next run: its next read of page 5 walks either way."""
    raw = tiny_config(machine={"slat": {"name": "intel-ept", "pv_tlb_flush": pv}, "host_memory": "4G", "cores": 2,
                               "scheduler": {"name": "pinned", "placement": [0, 1, 1]}},
                      vms=[{"name": "vm0", "memory": "256M", "vcpus": 3}], tlb=TLB)
    rows = [(0, 0, READ, page(5), t) for t in range(3)] + [(0, 0, UNMAP, page(5), 0), (0, 0, READ, page(5), 1)]
    m = counts(build(raw), rows)
    assert (m["ipi.sent"], m["vm_exits.ipi"]) == ((1, 1) if pv else (2, 2))
    assert m.get("tlb.pv_flushes", 0) == pv
    # vCPU 1's first read (vCPU 2's hits the entry it filled: tags are per VM) and its read after the unmap
    assert m["core.1.walks"] == 2


def test_the_mask_is_cleared_lazily_and_a_stale_vcpu_catches_up():
    """Thread 1 reads pages 5 and 6 of space 0, then runs space 1. Thread 0's unmap of
    page 5 sends no IPI (thread 1 runs another space); when thread 1 comes back to space 0
    its core flushes the space first (tlb_gen), so page 6 walks again. Then it runs space
    1 again, and thread 0's exit of space 0 (it frees page tables) does reach it, once."""
    rows = [(0, 0, READ, page(5), 0), (0, 0, READ, page(5), 1), (0, 0, READ, page(6), 1),
            (0, 1, READ, page(7), 1),  # thread 1 switches to space 1
            (0, 0, UNMAP, page(5), 0)]
    m = counts(machine(2), rows)
    assert m.get("ipi.sent", 0) == 0 and m.get("tlb.shootdowns", 0) == 0
    back = rows + [(0, 0, READ, page(6), 1)]
    m = counts(machine(2), back)
    assert m["tlb.catch_up_flushes"] == 1
    assert m["core.1.walks"] == 4  # 5, 6, 7, and 6 again after the catch-up flush
    gone = back + [(0, 1, READ, page(7), 1), (0, 0, EXIT, 0, 0)]
    m = counts(machine(2), gone)
    assert (m["ipi.sent"], m["core.1.ipi.received"]) == (1, 1)


def test_a_cow_break_is_shot_down_so_both_threads_see_the_copy():
    """Threads 0 and 1 of process 0 read page 5; it forks; thread 0 writes page 5 (a
    copy-on-write copy) and thread 1 reads it: thread 1 must see the copy, at the hPA of
    thread 0's write, not the frame the child keeps."""
    rows = [(0, 0, WRITE, page(5), 0), (0, 0, READ, page(5), 1), (0, 0, FORK, 1, 0), (0, 0, READ, page(5), 1),
            (0, 0, WRITE, page(5), 0), (0, 0, READ, page(5), 1), (0, 1, READ, page(5), 0)]
    m, hpa, _ = run_placed(*machine(2), trace(rows))
    assert hpa[5] == hpa[4] != hpa[6]
    assert m["guest.cow_copies"] == 1
    assert m["tlb.shootdowns"] == 2  # the fork's flush of the parent and the copy's
    assert m["ipi.sent"] == 2


# -- translations on several vCPUs are those of one: a stale entry would show -----------

OPS = [READ, WRITE, READ, WRITE, READ, UNMAP, PROTECT, FORK, EXIT, INVLPG, FLUSH, CONTEXT_SWITCH]
CI = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def threaded_traces(draw) -> np.ndarray:
    n = draw(st.integers(1, 80))
    t = np.zeros(n, dtype=TRACE_DTYPE)
    for i in range(n):
        op = draw(st.sampled_from(OPS))
        va = draw(st.integers(0, 5)) if op in (FORK, CONTEXT_SWITCH) else page(draw(st.integers(0, 12)))
        t[i] = (0, draw(st.integers(0, 2)), op, va, draw(st.integers(0, 3)))
    return t


_BUILT: dict = {}


SCHEMES = {"native": "native", "intel-ept": "intel-ept", "shadow": "shadow",
           "shadow-unsync": {"name": "shadow", "writes": "unsync"},
           "ept-enlightened": {"name": "intel-ept", "enlightened": True},
           "ept-pv-flush": {"name": "intel-ept", "pv_tlb_flush": True}}


def built(slat: str, vcpus: int, cores: int) -> tuple:
    key = (slat, vcpus, cores)
    if key not in _BUILT:
        raw = tiny_config(machine={"slat": SCHEMES[slat], "host_memory": "4G", "cores": cores},
                          vms=[{"name": "vm0", "memory": "256M", "vcpus": vcpus}], tlb=TLB,
                          walk_caches=[{"type": "pwc"}])
        _BUILT[key] = build(raw)
    return _BUILT[key]


@pytest.mark.parametrize("slat", list(SCHEMES))
@pytest.mark.parametrize("vcpus, cores", [(4, 4), (4, 2), (3, 1)])
@CI
@given(rows=threaded_traces())
def test_every_access_translates_as_on_one_vcpu(slat, vcpus, cores, rows):
    """Random threads of three processes with unmaps, protects, forks, exits and
    flushes: on several vCPUs every access reaches the hPA it reaches on one, and the
    guest takes the same faults; the counts of each core add up to the totals."""
    try:
        one, one_hpa, _ = run_placed(*built(slat, 1, 1), rows)
    except SlatframeError:
        return  # a trace one vCPU refuses (an exit of a space never run, ...) is no test
    many, many_hpa, scoped = run_placed(*built(slat, vcpus, cores), rows, chunk_size=7)
    differ = np.flatnonzero(one_hpa != many_hpa)
    assert not differ.size, f"record {differ[0]} {rows[differ[0]]}: {one_hpa[differ[0]]:#x} on one vCPU, " \
                            f"{many_hpa[differ[0]]:#x} on {vcpus}"
    for name in ("faults.guest", "accesses", "guest.cow_copies", "guest.pt_writes"):
        assert many.get(name, 0) == one.get(name, 0), name
    for name in ("ipi.sent", "walks", "vm_exits"):
        assert sum(part.get(name, 0) for part in scoped.values()) == many.get(name, 0)


A, B = 1 << 30, (1 << 30) + 4096
#: (asid, op, address, thread) rows after which a page is touched that a change of its space
#: removed while another vCPU held it: three guest faults on one vCPU, as many on several
#: (two vCPUs on two cores under native paging, unless STALE_ON says otherwise)
STALE = {
    # thread 1 leaves asid 1 for asid 0; thread 0 unmaps A of asid 1 (no IPI: thread 1 runs
    # another space); thread 1, still in asid 0, unmaps B of asid 1 (it flushes B only);
    # back in asid 1 it must catch up on A's unmap
    "sender-in-another-space": [(1, READ, A, 1), (0, READ, B, 0), (0, READ, B, 1), (1, UNMAP, A, 0),
                                (1, UNMAP, B, 1), (1, READ, A, 1)],
    # both threads in asid 1; thread 0 exits it; the asid's new space is run by both again
    # without a switch; thread 1 unmaps A, which thread 0 holds
    "exit": [(1, READ, A, 0), (1, READ, A, 1), (1, EXIT, 0, 0), (1, READ, A, 1), (1, READ, A, 0),
             (1, UNMAP, A, 1), (1, READ, A, 0)],
    "exec": [(1, READ, A, 0), (1, READ, A, 1), (1, EXEC, 0, 0), (1, READ, A, 1), (1, READ, A, 0),
             (1, UNMAP, A, 0), (1, READ, A, 1)],
    # (found in a clean-clone run) vCPUs 0 and 2 share core 0; vCPU 0 touches B in asid 2 and
    # leaves for asid 0; vCPU 1 unmaps B (no IPI: no one runs asid 2); vCPU 2, which never ran
    # asid 2, starts it on core 0 and touches B: the TLB tags entries by VM, so vCPU 0's entry
    # for B was still there for it
    "new-to-a-space": [(2, READ, B, 0), (0, READ, A, 0), (2, UNMAP, B, 1), (0, READ, A, 0), (0, READ, A, 0),
                       (2, READ, B, 2)],
}
STALE_ON = {"new-to-a-space": ("intel-ept", 4, 2)}  #: (scheme, vCPUs, cores) of a case


@pytest.mark.parametrize("tier", ["reference", "compiled"])
@pytest.mark.parametrize("case", list(STALE))
def test_no_stale_entry_after_a_space_changes(case, tier):
    """Regressions found by the random-threads test: a vCPU kept a translation its space
    had lost, so it took fewer faults than one vCPU does (the analytic count: the first
    touch, the touch in the new space or after the unmap, and the last touch)."""
    rows = np.zeros(len(STALE[case]), dtype=TRACE_DTYPE)
    rows["asid"], rows["op"], rows["vaddr"], rows["thread"] = zip(*STALE[case])
    slat, vcpus, cores = STALE_ON.get(case, ("native", 2, 2))
    one, one_hpa, _ = run_placed(*built(slat, 1, 1), rows, tier=tier)
    many, many_hpa, _ = run_placed(*built(slat, vcpus, cores), rows, tier=tier)
    assert one["faults.guest"] == many["faults.guest"] == 3
    assert (one_hpa == many_hpa).all()


@pytest.mark.parametrize("tier", ["reference", "compiled"])
def test_a_vcpu_that_moves_back_to_a_core_does_not_take_its_old_entry(tier):
    """A scheduler may move a vCPU between cores (the hook's contract): vCPU 0 touches A on
    core 0 and moves to core 1; vCPU 1 unmaps A there, and its IPI flushes vCPU 0 on core
    1; vCPU 0 moves back to core 0, which still held A. As KVM flushes a vCPU's context on
    a pCPU it moves to, each move flushes (two here) and A's touch faults again, as on one
    vCPU (the analytic count: A, B, and A after the unmap)."""
    from slatframe.counters import Counters
    from slatframe.engine import make_engine
    from slatframe.machine import build_machine

    rows = np.zeros(4, dtype=TRACE_DTYPE)
    rows["asid"], rows["op"], rows["vaddr"] = 1, [READ, READ, UNMAP, READ], [A, B, A, A]
    one, one_hpa, _ = run_placed(*built("native", 1, 1), rows, tier=tier)
    config, registry = built("native", 2, 2)
    counters = Counters()
    engine = make_engine(tier, build_machine(config, registry, counters), registry)
    hpa = np.zeros(len(rows), dtype=np.uint64)
    engine.run_chunk(rows, hpa_out=hpa, vcpu=np.array([0, 0, 1, 0]), core=np.array([0, 1, 1, 0]))
    engine.settle()
    moved = counters.as_dict()
    assert one["faults.guest"] == moved["faults.guest"] == 3
    assert moved["tlb.migration_flushes"] == 2 and (hpa[[0, 1, 3]] == one_hpa[[0, 1, 3]]).all()


@pytest.mark.parametrize("slat", list(SCHEMES))
@pytest.mark.parametrize("vcpus, cores", [(4, 4), (4, 2), (3, 1)])
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=threaded_traces(), chunk=st.integers(1, 40))
def test_both_tiers_agree_on_random_threads(slat, vcpus, cores, rows, chunk):
    """The compiled tier against the reference tier, through random shootdowns, remote
    flushes, hypercalls and catch-up flushes: every counter, every scope's counts (each
    vCPU's and core's) and every hPA equal, whatever the chunk boundaries (a gathered
    flush may end a chunk)."""
    try:
        run_placed(*built(slat, vcpus, cores), rows)
    except SlatframeError:
        return  # a trace the machine refuses (an exit of a space never run, ...) is no test
    assert_engines_agree(*built(slat, vcpus, cores), rows, chunk_size=chunk)


@st.composite
def smp_machines(draw) -> tuple:
    """A machine of two cores and two VMs (2 and 3 vCPUs): scheme, inclusion, tagging, a
    shared L2, scheduler and per-asid scopes drawn."""
    slat = draw(st.sampled_from(["native", "intel-ept", "shadow"]))
    levels = [{"name": "l1", "sets": 4, "ways": 2},
              {"name": "l2", "sets": 8, "ways": 4, "shared": draw(st.booleans())}]
    scheduler = draw(st.sampled_from([{"name": "pinned"}, {"name": "pinned", "placement": [1, 1, 0, 1, 0]},
                                      {"name": "time-sliced", "quantum": draw(st.integers(1, 9)), "window": 64}]))
    raw = tiny_config(experiment={"name": "t", "seed": 3, "per_asid": draw(st.booleans())},
                      machine={"slat": slat, "host_memory": "4G", "cores": 2, "scheduler": scheduler},
                      vms=[{"name": "a", "memory": "2G", "vcpus": 2}, {"name": "b", "memory": "2G", "vcpus": 3}],
                      tlb={"levels": levels, "tagged": draw(st.booleans()),
                           "inclusion": draw(st.sampled_from(["non-inclusive", "inclusive", "exclusive"]))},
                      walk_caches=[{"type": "pwc"}] + ([{"type": "nested-tlb"}] if slat == "intel-ept" else []))
    return raw


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=smp_machines(), seed=st.integers(0, 2 ** 20), chunk=st.integers(30, 400))
def test_both_tiers_agree_on_two_vms_and_any_scheduler(raw, seed, chunk):
    """The compiled tier against the reference tier on two VMs of several vCPUs, shared
    and private TLB levels, every inclusion, tagged or not, pinned or time-sliced: a
    churn of both VMs' threads (unmaps, protects, flushes, switches, evictions)."""
    from slatframe.testing import churn_trace

    rng = np.random.default_rng(seed)
    trace = churn_trace(seed, n=600, events=30)
    trace["vm"] = rng.integers(0, 2, len(trace))
    trace["thread"] = rng.integers(0, 4, len(trace))
    assert_engines_agree(*build(raw), trace, chunk_size=chunk)
