"""The agile-paging example plugin (examples/plugins/agile_paging.py): references per
walk against the paper's count, its VM exits against a count of the guest's table
writes, and the tier it runs in."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slatframe.engine import choose_engine
from slatframe.errors import ConfigError
from slatframe.testing import build, run_trace, tiny_config
from slatframe.trace import make_trace

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


def test_agile_runs_in_the_reference_tier_and_says_why():
    config, reg = agile_config(2)
    tier, why = choose_engine(config, reg)
    assert tier == "reference" and "walk 'agile'" in why and "agile_paging.py" in why
    with pytest.raises(ConfigError, match="walk 'agile'"):
        choose_engine(config, reg, "compiled")
