"""The agile-paging example plugin (examples/plugins/agile_paging.py): references per
walk against the paper's count, its VM exits against a count of the guest's table
writes, and its compiled walk kernel against its reference walk."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slatframe.counters import Counters
from slatframe.engine import choose_engine
from slatframe.engine.compiled import compiled_refusals
from slatframe.machine import build_machine
from slatframe.testing import assert_engines_agree, build, run_trace, tiny_config
from slatframe.trace import CONTEXT_SWITCH, INVLPG, PROTECT, UNMAP, make_trace

PLUGIN = str(Path(__file__).resolve().parents[1] / "examples" / "plugins" / "agile_paging.py")


def agile_config(shadow_levels: int, slat: str = "agile"):
    machine = {"slat": {"name": slat, "shadow_levels": shadow_levels} if slat == "agile" else slat,
               "host_memory": "64G"}
    raw = tiny_config(experiment={"name": "agile", "plugins": [PLUGIN]}, machine=machine,
                      tlb={"levels": [{"name": "l1", "sets": 1, "ways": 1}]},
                      vms=[{"name": "vm0", "memory": "16G"}])
    return build(raw)


def pages_over(n: int, span_bits: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pages = np.unique(rng.integers(0, 1 << (span_bits - 12), n)) << 12
    rng.shuffle(pages)
    return pages.astype(np.uint64)


@pytest.mark.parametrize("s", [1, 2, 3])
def test_references_per_walk_are_the_papers_count(s):
    """s + (4 - s) x 5 + 4 references: 20, 16, 12 (Gandhi et al., ISCA 2016, sec. 3)."""
    config, reg = agile_config(s)
    pages = pages_over(150, 44, seed=7)
    counts, _ = run_trace(config, reg, make_trace(np.concatenate([pages, pages[::-1]])))
    walks = counts["walks"]
    assert walks >= len(pages)
    assert counts["walk.refs"] == (s + (4 - s) * 5 + 4) * walks
    assert counts["walk.refs_guest"] == 4 * walks
    assert counts["walk.refs_host"] == ((4 - s) * 4 + 4) * walks
    assert counts["walk.refs_max"] == {1: 20, 2: 16, 3: 12}[s]


def clustered_pages(seed: int) -> np.ndarray:
    """4K pages in a few 2M regions of a few 1G regions of a few 512G regions, shuffled,
    so first touches write into tables of every level."""
    rng = np.random.default_rng(seed)
    pages = set()
    for top in rng.choice(512, 3, replace=False):
        for giga in rng.choice(512, 3, replace=False):
            for mega in rng.choice(512, 3, replace=False):
                for small in rng.choice(512, 4, replace=False):
                    pages.add((int(top) << 39) | (int(giga) << 30) | (int(mega) << 21) | (int(small) << 12))
    out = np.array(sorted(pages), dtype=np.uint64)
    rng.shuffle(out)
    return out


def deepest_existing_levels(pages: np.ndarray) -> list[int]:
    """For each first touch, the level of the deepest guest table that already exists,
    which the guest kernel's map writes into (4: a new root entry)."""
    seen = {39: set(), 30: set(), 21: set()}
    levels = []
    for va in (int(p) for p in pages):
        level = 1
        for shift, lv in ((21, 2), (30, 3), (39, 4)):
            if va >> shift not in seen[shift]:
                level = lv
        for shift in seen:
            seen[shift].add(va >> shift)
        levels.append(level)
    return levels


@pytest.mark.parametrize("s", [1, 2, 3])
def test_only_writes_to_shadowed_guest_tables_exit(s):
    """A first touch whose map writes into a table of the top s levels exits once for the
    write and twice for shadow fills (one to inject the guest's fault, one after it);
    page faults and second-level exits are those of nested paging on the same trace."""
    pages = clustered_pages(seed=11)
    trace = make_trace(np.concatenate([pages, pages]))
    counts, _ = run_trace(*agile_config(s), trace)
    nested, _ = run_trace(*agile_config(s, slat="intel-ept"), trace)
    shadowed = sum(level >= 5 - s for level in deepest_existing_levels(pages))
    assert 0 < shadowed < len(pages)
    assert counts["vm_exits.agile_pt_write"] == shadowed
    assert counts["vm_exits.agile_fill"] == 2 * shadowed
    assert counts["faults.guest"] == nested["faults.guest"] == len(pages)
    assert counts["vm_exits.ept_violation"] == nested["vm_exits.ept_violation"]


@pytest.mark.parametrize("s,host_page,ad_bits,cost", [
    (1, "4K", True, None), (2, "2M", True, None), (3, "4K", False, None),
    (2, "4K", True, {"model": "cache-aware", "data_accesses": True, "l1d_size": "1K", "l1d_ways": 2,
                     "l2_size": "4K", "l2_ways": 4, "llc_size": "16K", "llc_ways": 4}),
])
def test_auto_runs_the_compiled_walk_kernel_with_the_reference_walks_counts(s, host_page, ad_bits, cost):
    """The walk's kernels against its reference object: shadow fills, injected guest
    faults, second-level faults, writes, context switches and unmaps; every counter and
    every hPA agree, and auto picks the compiled tier."""
    machine = {"slat": {"name": "agile", "shadow_levels": s, "ad_bits": ad_bits}, "host_memory": "64G"}
    raw = tiny_config(experiment={"name": "agile", "plugins": [PLUGIN]}, machine=machine,
                      tlb={"levels": [{"name": "l1", "sets": 2, "ways": 2}]},
                      vms=[{"name": "vm0", "memory": "16G", "host_page_size": host_page}],
                      **({"cost": cost} if cost else {}))
    config, reg = build(raw)
    assert choose_engine(config, reg)[0] == "compiled"
    rng = np.random.default_rng(s)
    pages = clustered_pages(seed=20 + s)
    n = 3000
    trace = make_trace(pages[rng.zipf(1.3, n) % len(pages)] + rng.integers(0, 4096, n).astype(np.uint64),
                       (rng.random(n) < 0.3).astype(np.uint8))
    trace["asid"] = rng.integers(0, 2, n)
    events = rng.choice(n, 60, replace=False)
    trace["op"][events] = rng.choice([UNMAP, PROTECT, INVLPG, CONTEXT_SWITCH], 60)
    trace["vaddr"][events[trace["op"][events] == CONTEXT_SWITCH]] = 1
    counts = assert_engines_agree(config, reg, trace, chunk_size=577)
    assert counts["vm_exits.agile_fill"] > 0 and counts["walks"] > 0


def test_a_walk_kernel_is_refused_beside_walk_caches():
    """Kernels consult no walk caches, so a machine whose kernel walk has any is refused
    by the compiled tier (the agile walk's own factory refuses them earlier)."""
    config, reg = agile_config(2)
    machine = build_machine(config, reg, Counters())
    assert compiled_refusals(machine, reg) == []
    machine.walk_caches = [object()]
    why = compiled_refusals(machine, reg)
    assert any("walk 'agile'" in w and "consult no walk caches" in w for w in why)
