"""An invalidation costs what it removes (issue 37, N10): a dedup merge invalidates its
VM's TLB and walk-cache entries (INVEPT), and with a large TLB that must visit the VM's
entries, not every set and way, in both tiers, with the counts of a full sweep.

Each tier counts the entries its invalidations examine and drop (the reference tier's
``SetAssoc.examined`` / ``.removed``, the compiled tier's ``occ`` columns ``O_EXAMINED`` /
``O_REMOVED``): diagnostics, not metrics, so no test here times anything."""
from __future__ import annotations

import numpy as np
import pytest

import slatframe.engine as engine_module
from slatframe.engine import run_machine
from slatframe.setassoc import SetAssoc
from slatframe.testing import build, tiny_config
from slatframe.translation import Invalidation

#: large TLB levels: few sets of many ways (indexed sets), and many sets of few ways
WIDE = {"name": "big", "sets": 16, "ways": 1 << 16, "policy": "srrip", "page_sizes": ["4K", "2M"]}
MANY = {"name": "big", "sets": 50_000, "ways": 4, "policy": "srrip", "page_sizes": ["4K", "2M"]}


def dedup_raw(big: dict, vms: int) -> dict:
    """Ideal dedup under EPT with a large second TLB level, a PSC, a PWC and a large nested TLB."""
    content = {"zero_fraction": 0.2, "pool_fraction": 0.6, "pool_pages": 500}
    return tiny_config(
        experiment={"loop": "generic"},
        machine={"slat": "intel-ept", "host_memory": "2G"},
        vms=[{"name": f"vm{i}", "memory": "16M", "guest_page_size": "2M", "host_page_size": "2M",
              "content": content} for i in range(vms)],
        tlb={"levels": [{"name": "l1", "sets": 16, "ways": 4, "page_sizes": ["4K", "2M"]}, big]},
        walk_caches=[{"type": "psc", "level": 2}, {"type": "pwc", "sets": 4, "ways": 256},
                     {"type": "nested-tlb", "sets": 64, "ways": 1024}],
        workload={"source": "synthetic", "distribution": "zipf", "zipf_exponent": 0.9, "accesses": 1500,
                  "footprint": "6M", "write_fraction": 0.05},
        dedup={"strategy": "ideal", "interval": 300})


def run_keeping_engine(raw: dict, tier: str, monkeypatch) -> tuple:
    """(result, the engine that ran it)."""
    made = []

    def make(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    real = engine_module.make_engine
    monkeypatch.setattr(engine_module, "make_engine", make)
    result, _ = run_machine(*build(raw), engine=tier)
    monkeypatch.setattr(engine_module, "make_engine", real)
    return result, made[0]


def reference_counts(engine) -> list[tuple[int, int]]:
    """(examined, removed) per structure: TLB levels, then walk caches."""
    machine = engine.machine
    arrays = [lv.array for lv in machine.tlb.levels] + [c.array for c in machine.walk_caches]
    return [(a.examined, a.removed) for a in arrays]


def compiled_counts(engine) -> list[tuple[int, int]]:
    k, occ = engine.k, engine.occ
    return [(int(row[k.O_EXAMINED]), int(row[k.O_REMOVED])) for row in occ]


@pytest.mark.parametrize("big", [WIDE, MANY], ids=["16 sets x 64K ways", "50K sets x 4 ways"])
def test_dedup_invalidations_examine_only_what_they_drop(big, monkeypatch):
    """One VM, so every entry an INVEPT-like invalidation meets is one it drops: each
    tier examines exactly the entries it removes (a sweep would examine every slot), the
    tiers remove the same entries from each structure, and every metric agrees."""
    raw = dedup_raw(big, vms=1)
    ref, ref_engine = run_keeping_engine(raw, "reference", monkeypatch)
    comp, comp_engine = run_keeping_engine(raw, "compiled", monkeypatch)
    assert ref.engine == "reference" and comp.engine == "compiled"
    assert ref.metrics["dedup.merges"] > 100
    strip = lambda m: {k: v for k, v in m.items() if v}  # noqa: E731
    assert strip(ref.metrics) == strip(comp.metrics)
    assert ref.series == comp.series
    ref_counts, comp_counts = reference_counts(ref_engine), compiled_counts(comp_engine)
    assert ref_counts == comp_counts[:len(ref_counts)]
    assert all(examined == removed for examined, removed in ref_counts)
    assert ref_counts[1][1] > 0  # the large level lost entries to merges


def test_an_invalidation_of_a_vm_without_entries_examines_nothing(monkeypatch):
    """Two VMs: after a run, a VM's INVEPT drops its entries, examining only them (the
    reference tier) or at most the valid entries (the compiled tier stops at the VM's
    last one); a second one finds none and examines nothing, in both tiers."""
    raw = dedup_raw(WIDE, vms=2)
    for tier, counts in (("reference", reference_counts), ("compiled", compiled_counts)):
        _, engine = run_keeping_engine(raw, tier, monkeypatch)
        before = counts(engine)
        valid = engine.occ[:, engine.k.O_VALID].copy() if tier == "compiled" else None
        engine.invalidate(Invalidation("vm", 0))
        first = counts(engine)
        engine.invalidate(Invalidation("vm", 0))
        assert counts(engine) == first, tier
        examined = [e1 - e0 for (e0, _), (e1, _) in zip(before, first)]
        removed = [r1 - r0 for (_, r0), (_, r1) in zip(before, first)]
        assert removed[1] > 0, tier  # the large level held entries of VM 0
        if tier == "reference":
            assert examined == removed
        else:
            assert all(e <= v for e, v in zip(examined, valid)) and not engine.occ[:, engine.k.O_VMS].any()


class Recorder:
    """A policy that records the invalidations it hears of."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def hit(self, s: int, way: int) -> None:
        pass

    fill = hit

    def victim(self, s: int) -> int:
        return 0

    def invalidate(self, s: int, way: int) -> None:
        self.calls.append((s, way))


def test_set_assoc_drops_contexts_in_set_and_way_order():
    """remove_groups drops a context's entries in the order a sweep of every set and way
    would (the order a policy's invalidate hears them), examining no other entry."""
    policy = Recorder()
    array = SetAssoc(8, 1024, policy, group=2)
    rng = np.random.default_rng(3)
    keys = [(int(vm), int(asid), 12, int(vpn)) for vm, asid, vpn in
            zip(rng.integers(0, 3, 400), rng.integers(0, 2, 400), rng.integers(0, 1 << 20, 400))]
    for key in dict.fromkeys(keys):
        array.fill(key, key[3] % 8, key)
    mine = [(s, w) for s, row in enumerate(array.tags) for w, tag in enumerate(row)
            if tag is not None and tag[0] == 1]
    assert array.remove_groups(lambda context: context[0] == 1) == len(mine) > 0
    assert policy.calls == mine
    assert array.examined == array.removed == len(mine)
    assert array.remove_groups(lambda context: context[0] == 1) == 0 and array.examined == len(mine)
    rest = [(s, w) for s, row in enumerate(array.tags) for w, tag in enumerate(row) if tag is not None]
    policy.calls.clear()
    assert array.remove_if(lambda key: True) == len(rest)
    assert policy.calls == rest and not array.where and not array.members
