"""The guest's processes (fork, exec, exit, shared mappings; slatframe.guest.GuestOs):
page-table stores by cause, copy-on-write faults and copies, and what shadow paging
charges for them, against counts worked out by hand; both engine tiers agree."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slatframe.engine import run_experiment
from slatframe.errors import ConfigError, SimulationError
from slatframe.testing import assert_engines_agree, build, process_churn, run_trace, tiny_config
from slatframe.trace import EXEC, EXIT, FORK, MAP, MAP_SHARED, READ, TRACE_DTYPE, WRITE

BASE = 1 << 30  #: one 2M region: mapping its first page takes 3 table entries and a leaf (4-level)
TABLE_ENTRIES = 3  #: PML4E, PDPTE, PDE written when the first page of a region is mapped
SCHEMES = ("native", "intel-ept", "amd-npt", "shadow")


def records(rows: list[tuple[int, int, int]]) -> np.ndarray:
    """A trace from (asid, op, vaddr) rows."""
    t = np.zeros(len(rows), dtype=TRACE_DTYPE)
    for i, (asid, op, va) in enumerate(rows):
        t[i]["asid"], t[i]["op"], t[i]["vaddr"] = asid, op, va
    return t


def page(i: int) -> int:
    return BASE + i * 4096


def config(slat: str):
    return build(tiny_config(machine={"slat": slat, "host_memory": "16G"}, vms=[{"name": "vm0", "memory": "4G"}]))


def parent_with(n: int, shared: int = 0) -> list[tuple[int, int, int]]:
    """Process 0 maps ``n`` private pages and ``shared`` shared ones, in one 2M region."""
    return [(0, MAP, page(i)) for i in range(n)] + [(0, MAP_SHARED, page(n + i)) for i in range(shared)]


@pytest.mark.parametrize("slat", SCHEMES)
def test_fork_write_protects_each_private_leaf_and_copies_the_tables(slat):
    n, shared = 7, 2
    counts, _ = run_trace(*config(slat), records(parent_with(n, shared) + [(0, FORK, 1)]))
    assert counts["guest.pt_writes.map"] == TABLE_ENTRIES + n + shared
    # the parent's n private leaves write-protected, then the child's tables and private
    # leaves (shared ones are not copied: the child faults them in)
    assert counts["guest.pt_writes.fork"] == n + TABLE_ENTRIES + n
    assert counts["processes.created"] == 1 and counts["events.fork"] == 1
    if slat == "shadow":  # the parent never ran: no shadow page, no write-protected table
        assert "vm_exits.pt_write" not in counts
        assert counts["vm_exits.cr3_write"] == 1  # the fork's TLB flush is a CR3 load


@pytest.mark.parametrize("slat", SCHEMES)
def test_copy_on_write_copies_while_shared_and_reuses_the_last_mapping(slat):
    n = 4
    trace = records(parent_with(n, 1) + [
        (0, FORK, 1),
        (1, READ, page(2)),  # 0: the child reads the parent's frame
        (0, READ, page(2)),  # 1
        (1, WRITE, page(2)),  # 2: copy (the parent still maps it)
        (0, WRITE, page(2)),  # 3: the parent's is now its last mapping: reused
        (1, WRITE, page(2)),  # 4: no fault
        (0, READ, page(2)),  # 5
        (1, WRITE, page(n)),  # 6: the shared page stays writable: no fault
        (0, READ, page(n)),  # 7
    ])
    counts, hpa = run_trace(*config(slat), trace)
    data = hpa[trace["op"] < 16]
    assert data[0] == data[1] and data[2] != data[0] and data[3] == data[0] and data[4] == data[2]
    assert data[6] == data[7]
    assert counts["faults.guest.cow"] == 2 and counts["guest.cow_copies"] == 1
    # one leaf store per copy-on-write fault, and the child's fault on the shared page
    assert counts["guest.pt_writes.fault"] == 3


@pytest.mark.parametrize("slat", SCHEMES)
def test_exit_and_exec_clear_every_leaf_and_free_every_table(slat):
    n = 5
    trace = records(parent_with(n) + [(0, FORK, 1), (1, EXIT, 0), (0, WRITE, page(1)), (0, EXEC, 0),
                                      (0, READ, page(3))])
    counts, _ = run_trace(*config(slat), trace)
    assert counts["guest.pt_writes.exit"] == n + TABLE_ENTRIES  # the child's leaves, then its 3 tables
    assert counts["guest.pt_writes.exec"] == n + TABLE_ENTRIES
    assert counts["processes.exited"] == 1
    # the parent's write after the child left: its page's last mapping, reused, no copy
    assert counts["faults.guest.cow"] == 1 and "guest.cow_copies" not in counts
    # after exec the address space is empty: the read maps a page and its tables again
    assert counts["guest.pt_writes.fault"] == 1 + TABLE_ENTRIES + 1


def test_freed_pages_and_tables_are_reused_across_process_churn():
    """Forty fork-touch-exit cycles use no more guest memory than the first."""
    cycle = [(0, FORK, 1), (1, WRITE, page(0)), (1, WRITE, page(600)), (1, EXIT, 0)]
    config_, reg = config("intel-ept")
    from slatframe.counters import Counters
    from slatframe.engine import make_engine
    from slatframe.machine import build_machine

    machine = build_machine(config_, reg, Counters())
    engine = make_engine("reference", machine, reg)
    engine.run_chunk(records(parent_with(3)))
    high = []
    for _ in range(40):
        engine.run_chunk(records(cycle))
        high.append(machine.translator.kernels[0].phys.next_free)
    assert high[0] == high[-1]


@pytest.mark.parametrize("slat", SCHEMES + ("shadow-2-roots",))
def test_both_tiers_agree_through_process_churn(slat):
    trace = process_churn(len(slat), n=400, exec_share=0.3)
    made = shadow_config(2) if slat == "shadow-2-roots" else config(slat)
    counts = assert_engines_agree(*made, trace, chunk_size=97)
    assert counts["processes.created"] > 3 and counts["faults.guest.cow"] > 0
    if slat == "shadow-2-roots":
        assert counts["shadow.roots_evicted"] > 10


def test_a_fork_into_a_live_process_is_one_sentence():
    trace = records(parent_with(1) + [(1, READ, page(0)), (0, FORK, 1)])
    with pytest.raises(SimulationError, match=r"VM vm0: a fork of asid 0 names child asid 1, which is a live "
                                              r"process"):
        run_trace(*config("native"), trace)


def test_a_scheme_that_does_not_model_processes_refuses_process_events(tmp_path):
    agile = str(Path(__file__).resolve().parents[1] / "examples" / "plugins" / "agile_paging.py")
    raw = tiny_config(experiment={"name": "a", "plugins": [agile]}, machine={"slat": "agile", "host_memory": "16G"},
                      vms=[{"name": "vm0", "memory": "4G"}])
    trace = tmp_path / "t.npz"
    t = records(parent_with(1) + [(0, FORK, 1)])
    np.savez(trace, **{name: t[name] for name in t.dtype.names})
    raw["workload"] = {"source": "npz", "path": str(trace)}
    with pytest.raises(ConfigError, match=r"the trace has a fork record \(op 22, vm 0, asid 0\), and the SLAT "
                                          r"scheme's translator \(AgileTranslator\) does not model the guest's "
                                          r"processes"):
        run_experiment(*build(raw))


def test_shadow_rebuilds_a_process_after_exec():
    """After exec the old shadow root is gone: the first access walks a fresh one."""
    trace = records(parent_with(2) + [(0, READ, page(0)), (0, EXEC, 0), (0, READ, page(0)), (0, READ, page(0))])
    counts, hpa = run_trace(*config("shadow"), trace)
    data = hpa[trace["op"] < 16]
    assert data[1] == data[2]
    # exec's stores trap (all its tables are shadowed), its TLB flush is a CR3 load; the
    # first read after makes a new shadow root, so the guest's store into its root traps,
    # not those into the 3 new tables below it
    assert counts["guest.pt_writes.exec"] == 2 + TABLE_ENTRIES
    assert counts["vm_exits.pt_write"] == counts["guest.pt_writes.exec"] + 1
    assert counts["vm_exits.cr3_write"] == 1
    assert counts["faults.guest"] == 1  # (the trace has no context switch: the one CR3 load is exec's flush)


def test_trace_info_counts_processes(tmp_path, capsys):
    import json

    from slatframe.cli import main

    t = records(parent_with(2) + [(0, FORK, 1), (0, FORK, 2), (1, EXIT, 0), (2, EXEC, 0), (2, READ, page(0))])
    path = tmp_path / "p.npz"
    np.savez(path, **{name: t[name] for name in t.dtype.names})
    assert main(["trace", "info", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["processes.created"] == 2 and stats["processes.exited"] == 1 and stats["ops.exec"] == 1


def shadow_config(cached_roots: int):
    return build(tiny_config(machine={"slat": {"name": "shadow", "cached_roots": cached_roots},
                                      "host_memory": "16G"}, vms=[{"name": "vm0", "memory": "4G"}]))


@pytest.mark.parametrize("cached_roots", [0, 2, 3])
def test_more_address_spaces_than_shadow_caches_rebuild_on_every_switch(cached_roots):
    """P processes each touching k pages, run round-robin R times. With all roots kept
    (or P of them) only the first touches exit (twice: injected guest fault, then the
    hidden fill); with fewer, every switch after the first ``cached_roots`` drops the
    least recently run process, whose next slice rebuilds its k leaves (one hidden
    fault each) and its 4 shadow tables (root, PDPT, PD, PT)."""
    P, k, R = 3, 5, 4
    rows = []
    for _ in range(R):
        for p in range(P):
            rows += [(p, READ, page(100 * p + i)) for i in range(k)]
    counts, _ = run_trace(*shadow_config(cached_roots), records(rows))
    first = 2 * P * k
    kept = cached_roots == 0 or cached_roots >= P
    evictions = 0 if kept else P * R - cached_roots
    assert counts.get("shadow.roots_evicted", 0) == evictions
    assert counts["vm_exits.page_fault"] == first + (0 if kept else (R - 1) * P * k)
    assert counts.get("shadow.pages_zapped", 0) == 4 * evictions
    live = P if kept else cached_roots
    # (the switch drops the victim before the next slice builds anything)
    assert counts["shadow.table_bytes"] == counts["shadow.table_bytes.peak"] == 4 * 4096 * live


def test_exit_frees_the_shadow_tables():
    counts, _ = run_trace(*shadow_config(0), records(parent_with(2) + [(0, READ, page(0)), (0, FORK, 1),
                                                                        (1, READ, page(1)), (1, EXIT, 0)]))
    assert counts["shadow.pages_zapped"] == 4 and counts["shadow.table_bytes"] == 4 * 4096


@pytest.mark.parametrize("slat", SCHEMES)
def test_forkwait_counts_per_fork(slat):
    """The forkwait generator's trace against its page-table stores worked out by hand:
    P private and S shared parent pages (private at base, shared 1G above: 3 + 2 tables),
    F forks; each child copies its 2 written pages, faults in 1 shared page (2 tables and
    a leaf) and exits; the parent then reuses its 1 written page."""
    from slatframe_plugins.synthetic import ForkwaitOptions, forkwait

    P, S, F = 6, 4, 5
    trace = np.concatenate(list(forkwait(ForkwaitOptions(forks=F, private_pages=P, shared_pages=S), 7, 1)))
    counts, _ = run_trace(*config(slat), trace)
    assert counts["guest.pt_writes.map"] == 5 + P + S
    # the first fork write-protects all P parent leaves; later ones only the page the
    # parent wrote again; each copies 3 tables and P leaves into the child
    assert counts["guest.pt_writes.fork"] == (P + 3 + P) + (F - 1) * (1 + 3 + P)
    assert counts["guest.pt_writes.fault"] == F * (2 + (2 + 1) + 1)
    assert counts["guest.pt_writes.exit"] == F * ((P + 1) + 5)
    assert counts["faults.guest.cow"] == 3 * F and counts["guest.cow_copies"] == 2 * F
    assert counts["guest.cow_copy_bytes"] == 2 * F * 4096
    assert counts["processes.created"] == counts["processes.exited"] == F
    if slat == "shadow":  # per fork: the fork's and the exit's TLB flushes, a switch each way
        assert counts["vm_exits.cr3_write"] == 4 * F
        # stores into shadowed tables (tests/test_shadow_mmu.py works the count out)
        assert counts["vm_exits.pt_write"] == P + (F - 1) + F * (P + 9)


@pytest.mark.parametrize("host_page,tables", [("4K", 4), ("2M", 3)])
def test_second_level_table_bytes(host_page, tables):
    """One guest page touched: the guest's 4 tables and the page lie in the first 2M of
    guest memory, so the second level needs its root and 3 tables below it with 4K host
    pages, its root and 2 with 2M ones."""
    raw = tiny_config(machine={"slat": "intel-ept", "host_memory": "16G"},
                      vms=[{"name": "vm0", "memory": "4G", "host_page_size": host_page}])
    counts, _ = run_trace(*build(raw), records([(0, READ, page(0))]))
    assert counts["slat.table_bytes"] == tables * 4096


@pytest.mark.parametrize("guest_page", ["4K", "2M"])
def test_the_cost_model_charges_the_guests_copies(guest_page):
    """cycles.cow = 4 KiB copies x cow_copy: per fork of the forkwait workload the child
    writes two private pages 4K apart, two copies of 4K guest pages, or one of the 2M
    guest page that holds both (512 copies of 4 KiB)."""
    raw = tiny_config(machine={"slat": "intel-ept", "host_memory": "16G"},
                      vms=[{"name": "vm0", "memory": "4G", "guest_page_size": guest_page}],
                      workload={"source": "forkwait", "forks": 5, "private_pages": 4, "shared_pages": 2},
                      cost={"model": "fixed", "cow_copy": 300})
    result = run_experiment(*build(raw))
    assert result.metrics["cycles.cow"] == 5 * (2 if guest_page == "4K" else 512) * 300
