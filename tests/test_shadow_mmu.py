"""Shadow paging as hypervisors build it (plugins/shadow.py options): write-protection
only of shadowed guest tables, emulated vs out-of-sync leaf tables, Xen's limit of
out-of-sync pages, a bounded pool of shadow pages, an enlightened guest. Each count is
worked out by hand from the option's rule; every translation is checked against the
guest's own tables."""
from __future__ import annotations

import numpy as np
import pytest

from slatframe.counters import Counters
from slatframe.engine.reference import ReferenceEngine
from slatframe.errors import ConfigError
from slatframe.machine import build_machine
from slatframe.testing import assert_engines_agree, build, process_churn, run_trace, tiny_config
from slatframe.trace import ACCESS_OPS, MAP, PROTECT, READ, TRACE_DTYPE, WRITE

BASE = 1 << 30


def records(rows):
    t = np.zeros(len(rows), dtype=TRACE_DTYPE)
    for i, (asid, op, va) in enumerate(rows):
        t[i]["asid"], t[i]["op"], t[i]["vaddr"] = asid, op, va
    return t


PSCS = [{"type": "psc", "level": level} for level in (4, 3, 2)]  #: paging-structure caches


def shadow(guest_page="4K", walk_caches=(), **options):
    return build(tiny_config(machine={"slat": {"name": "shadow", **options}, "host_memory": "16G"},
                             vms=[{"name": "vm0", "memory": "4G", "guest_page_size": guest_page}],
                             walk_caches=list(walk_caches)))


def forkwait_trace(P, S, F):
    from slatframe_plugins.synthetic import ForkwaitOptions, forkwait

    return np.concatenate(list(forkwait(ForkwaitOptions(forks=F, private_pages=P, shared_pages=S), 64, 1)))


def test_emulated_writes_per_fork():
    """Forkwait (P private pages, S shared 1G above, F forks; the child writes 2 private
    pages, reads 1 shared and exits; the parent writes 1 and reads 1 shared page) with
    every store to a shadowed guest table emulated. The setup's maps come before the
    first access, when nothing is shadowed. Per fork, the stores that trap:
    - fork: the parent's writable private leaves, all P the first time, then the 1 it
      wrote again (the child's new tables are not shadowed);
    - child: its first copy-on-write store is into a table not yet shadowed (its shadow
      root is new), its second is (1); the shared page's fault stores 3 entries, only
      the one into its shadowed PDPT traps (1);
    - exit: its P private and 1 shared leaves and the 5 entries pointing at its tables,
      each in a shadowed table (P + 6);
    - parent: the store reusing its page after the child left (1)."""
    P, S, F = 6, 4, 5
    counts, _ = run_trace(*shadow(), forkwait_trace(P, S, F))
    assert counts["vm_exits.pt_write"] == counts["shadow.emulated_writes"] == P + (F - 1) + F * (1 + 1 + P + 6 + 1)
    assert "shadow.unsyncs" not in counts and "shadow.resyncs" not in counts


@pytest.mark.parametrize("unsync_limit", [0, 3])
def test_out_of_sync_leaf_tables_per_fork(unsync_limit):
    """The same forkwait with leaf tables left out of sync. Upper-level stores are still
    emulated: per fork the child's shared fault's PDPT store and its exit's 5 table
    entries (6 pt_write). A leaf table goes out of sync at its first store (one
    page_fault exit each): the parent's at the first fork, then at each reuse store
    after the fork's flush resynced it (1 + F); the child's at its second copy-on-write
    store and its shared page's table at exit (2 per fork). The fork's CR3 load resyncs
    the parent's table (F resyncs); nothing else is out of sync at a CR3 load of a live
    process. At most 2 tables are out of sync at once, so Xen's limit of 3 changes
    nothing here."""
    P, S, F = 6, 4, 5
    emulated, _ = run_trace(*shadow(), forkwait_trace(P, S, F))
    counts, _ = run_trace(*shadow(writes="unsync", unsync_limit=unsync_limit), forkwait_trace(P, S, F))
    assert counts["vm_exits.pt_write"] == counts["shadow.emulated_writes"] == 6 * F
    assert counts["shadow.unsyncs"] == (1 + F) + 2 * F
    assert counts["shadow.resyncs"] == F
    # the hidden faults are the same (a resync drops what an emulated store zapped)
    assert counts["vm_exits.page_fault"] - counts["shadow.unsyncs"] == emulated["vm_exits.page_fault"]
    assert counts["vm_exits.cr3_write"] == emulated["vm_exits.cr3_write"] == 4 * F


def region(i):
    """A page in its own 2M region (its own leaf table), all below one PDPT."""
    return BASE + (i << 21)


@pytest.mark.parametrize("limit,unsyncs,resyncs", [(0, 4, 0), (3, 4 * 5, 4 * 5 - 3)])
def test_xen_limit_resyncs_the_oldest_out_of_sync_table(limit, unsyncs, resyncs):
    """A process touches a page in each of 4 leaf tables, then 5 times over writes and
    write-protects each in turn (the protect a leaf store and an INVLPG; from the second
    round the write is a guest fault whose store makes the page writable again). Without
    a limit each table goes out of sync at its first store and stays so; with 3 allowed,
    each table's first store of a round finds it resynced to make room for the others
    (FIFO over 4 in 3): 4 unsyncs a round, each after the third resyncing the oldest."""
    rows = [(0, MAP, region(i)) for i in range(4)] + [(0, READ, region(i)) for i in range(4)]
    for _ in range(5):
        for i in range(4):
            rows += [(0, WRITE, region(i)), (0, PROTECT, region(i))]
    counts, _ = run_trace(*shadow(writes="unsync", unsync_limit=limit), records(rows))
    assert counts["shadow.unsyncs"] == unsyncs
    assert counts.get("shadow.resyncs", 0) == resyncs
    assert counts["vm_exits.invlpg"] == 4 * 5
    assert "vm_exits.pt_write" not in counts


def far(i):
    """A page in its own 512G region: 3 tables (PDPT, PD, PT) of its own below the root."""
    return (i + 1) << 39


@pytest.mark.parametrize("k", [2, 3, 4, 6])
def test_bounded_pool_zaps_the_oldest_pages(k):
    """A pool of 12 shadow pages: a fault that finds fewer than 5 free zaps the oldest
    until 5 are, so the root and 3 regions fit (10 pages; the fourth region's fault
    zaps the oldest region's 3). Cycling over k regions R times, k <= 3 builds each
    once, k > 3 misses every time (the oldest region is always the next one needed)."""
    R, resident = 4, 3
    rows = [(0, MAP, far(i)) for i in range(k)]
    rows += [(0, READ, far(i)) for _ in range(R) for i in range(k)]
    counts, _ = run_trace(*shadow(pool_pages=12, pool_refill=5), records(rows))
    builds = k if k <= resident else k * R
    assert counts["vm_exits.page_fault"] == builds  # hidden faults only (the pages were mapped first)
    assert counts["shadow.pages_built"] == 1 + 3 * builds
    assert counts.get("shadow.pool_reclaims", 0) == max(0, builds - resident)
    assert counts["shadow.table_bytes.peak"] == 4096 * (1 + 3 * min(k, resident))
    assert "shadow.roots_evicted" not in counts  # the running root is never zapped


def test_a_full_pool_drops_other_address_spaces_roots_oldest_first():
    """Two processes, each touching 2 far regions: a root and 6 pages. With a pool of 10
    only 3 are free after one, so the other's first fault zaps the oldest page, the
    first process's root, with its tree (7 pages), and back again."""
    rows = [(a, READ, far(i)) for a in (0, 1, 0) for i in range(2)]
    counts, _ = run_trace(*shadow(pool_pages=10, pool_refill=5), records(rows))
    assert counts["shadow.roots_evicted"] == 2
    assert counts["shadow.pages_zapped"] == 14
    # an injected fault and a hidden one per first touch, a hidden one per rebuilt page
    assert counts["vm_exits.page_fault"] == 4 + 4 + 2


@pytest.mark.parametrize("options,sentence", [
    ({"pool_pages": 100, "pool_permille": 20}, r"machine\.slat is not valid: set pool_pages or pool_permille, not both"),
    ({"pool_pages": 3}, r"machine\.slat\.pool_pages .*0 \(no bound\) or at least 10"),
    ({"writes": "lazy"}, r"machine\.slat\.writes .*emulate, unsync"),
])
def test_shadow_options_are_checked(options, sentence):
    with pytest.raises(ConfigError, match=sentence):
        shadow(**options)


def test_kvm_default_pool_is_two_percent_of_guest_pages():
    from slatframe_plugins.shadow import ShadowOptions, pool_limit

    assert pool_limit(ShadowOptions(pool_permille=20), 4 << 30) == (4 << 30) // 4096 // 50
    assert pool_limit(ShadowOptions(pool_permille=20), 8 << 20) == 64  # KVM_MIN_ALLOC_MMU_PAGES
    assert pool_limit(ShadowOptions(pool_pages=500), 4 << 30) == 500


def test_enlightened_guest_switches_and_flushes_by_hypercall():
    from test_shadow_exits import churn_trace, expected_exits

    trace = churn_trace(2000, 5)
    plain, _ = run_trace(*shadow(), trace)
    counts, _ = run_trace(*shadow(enlightened=True), trace)
    pt_write, cr3, invlpg, _ = expected_exits(trace)
    assert counts["vm_exits.hypercall"] == cr3 + invlpg
    assert "vm_exits.cr3_write" not in counts and "vm_exits.invlpg" not in counts
    assert counts["vm_exits"] == plain["vm_exits"]


VARIANTS = [{}, {"writes": "unsync"}, {"writes": "unsync", "unsync_limit": 3}, {"pool_pages": 24, "pool_refill": 5},
            {"writes": "unsync", "pool_pages": 16, "cached_roots": 2}]


@pytest.mark.parametrize("guest_page,walk_caches", [("4K", ()), ("2M", PSCS)], ids=["4K", "2M-pscs"])
@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "emulate")
def test_every_access_reaches_the_page_the_guest_maps(options, guest_page, walk_caches):
    """Out-of-sync tables, zapped pools and dropped roots never let an access through a
    stale shadow entry: after each access, its hPA is the host page backing the guest
    page its own tables map now, and a write found that mapping writable and dirty (a
    stale writable shadow leaf would let it write a copy-on-write page in place). With
    2M guest pages and paging-structure caches, a guest store to a large leaf frees the
    shadow table below it, which no cached walk may use after."""
    config, reg = shadow(guest_page, walk_caches, **options)
    machine = build_machine(config, reg, Counters())
    engine = ReferenceEngine(machine)
    translator = machine.translator
    trace = process_churn(sum(map(ord, str(options))))
    hpa = np.zeros(1, dtype=np.uint64)
    checked = 0
    for i in range(len(trace)):
        engine.run_chunk(trace[i:i + 1], hpa)
        asid, op, va = int(trace[i]["asid"]), int(trace[i]["op"]), int(trace[i]["vaddr"])
        if op not in ACCESS_OPS:
            continue
        step = translator.kernels[0].lookup(asid, va)
        assert step.present, f"record {i}: the guest does not map {va:#x} after the access"
        fmt = translator.fmt
        size = fmt.page_size(step.level)
        gpa = fmt.frame(step.entry, step.level) | (va & (size - 1))
        assert int(hpa[0]) == translator.backings[0].lookup(gpa), f"record {i}: {trace[i]}"
        if op == WRITE:
            assert fmt.is_writable(step.entry) and fmt.is_dirty(step.entry), f"record {i}: {trace[i]}"
        checked += 1
    assert checked > 400


@pytest.mark.parametrize("options", VARIANTS[1:], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_both_tiers_agree_under_each_shadow_option(options):
    counts = assert_engines_agree(*shadow(**options), process_churn(7), chunk_size=97)
    assert counts["processes.created"] > 3
