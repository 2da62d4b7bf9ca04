"""The ARM64 stage-2 example format (examples/plugins/arm64_stage2.py) as the host format
of nested paging: references per 2D walk against (n+1)(m+1)-1 in both engine tiers, and
the descriptors in host memory decoded bit by bit as the Arm ARM lays them out."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slatframe.counters import Counters
from slatframe.engine import choose_engine
from slatframe.engine.reference import ReferenceEngine
from slatframe.machine import build_machine
from slatframe.testing import assert_engines_agree, build, tiny_config
from slatframe.trace import make_trace

PLUGIN = str(Path(__file__).resolve().parents[1] / "examples" / "plugins" / "arm64_stage2.py")


def stage2_config(host_page_size: str):
    raw = tiny_config(experiment={"name": "arm", "plugins": [PLUGIN]},
                      machine={"slat": "intel-ept", "host_format": "arm64-stage2", "host_memory": "64G"},
                      tlb={"levels": [{"name": "l1", "sets": 1, "ways": 1, "page_sizes": ["4K", "2M", "1G"]}]},
                      vms=[{"name": "vm0", "memory": "16G", "host_page_size": host_page_size}])
    return build(raw)


def walk_trace() -> np.ndarray:
    rng = np.random.default_rng(7)
    pages = np.unique(rng.integers(0, 1 << 22, 150)) << 12
    rng.shuffle(pages)
    return make_trace(np.concatenate([pages, pages[::-1]]).astype(np.uint64))


@pytest.mark.parametrize("host_page_size,refs", [("4K", 19), ("2M", 14)])
def test_refs_per_2d_walk_in_both_tiers(host_page_size, refs):
    """A 4-level guest over 3 stage-2 levels: 4 guest references and 5 host walks of 3
    references (4K pages), or of 2 (2M blocks): 19 and 14."""
    config, reg = stage2_config(host_page_size)
    assert choose_engine(config, reg)[0] == "compiled"
    host_walk = {"4K": 3, "2M": 2}[host_page_size]
    assert refs == 4 + 5 * host_walk
    counts = assert_engines_agree(config, reg, walk_trace(), chunk_size=997)
    walks = counts["walks"]
    assert walks >= 150
    assert counts["walk.refs"] == refs * walks and counts["walk.refs_max"] == refs
    assert counts["walk.refs_host"] == 5 * host_walk * walks


def raw_stage2_walk(read, root: int, ipa: int) -> tuple[int, int, int]:
    """Decode stage-2 descriptors as the Arm ARM does (lookup levels 1-3 of the default
    40-bit IPA, whose level-1 table is two concatenated tables, 1024 entries): (output
    address, lookup level of the leaf, leaf descriptor)."""
    table = root
    for arm_level, shift, entries in ((1, 30, 1024), (2, 21, 512), (3, 12, 512)):
        desc = read(table + ((ipa >> shift) & (entries - 1)) * 8)
        kind = desc & 0b11
        assert kind & 1, f"invalid descriptor at level {arm_level}"
        address = desc & ((1 << 48) - 1) & ~((1 << 12) - 1)
        if arm_level == 3:
            assert kind == 0b11, "level 3 holds page descriptors only"
            return address | (ipa & 0xFFF), arm_level, desc
        if kind == 0b01:  # block
            return (address & ~((1 << shift) - 1)) | (ipa & ((1 << shift) - 1)), arm_level, desc
        table = address
    raise AssertionError("unreachable")


@pytest.mark.parametrize("host_page_size,leaf_level", [("4K", 3), ("2M", 2)])
def test_descriptors_in_host_memory_follow_the_arm_layout(host_page_size, leaf_level):
    config, reg = stage2_config(host_page_size)
    machine = build_machine(config, reg, Counters())
    ReferenceEngine(machine).run_chunk(walk_trace())
    backing = machine.translator.backings[0]
    frames = backing.guest_frames()
    assert len(frames) > 100
    for frame in frames:
        gpa = frame << 12
        hpa, level, desc = raw_stage2_walk(machine.context.host.read, backing.root, gpa)
        assert (hpa, level) == (backing.lookup(gpa), leaf_level)
        assert desc >> 6 & 0b11 == 0b11  # S2AP: read and write
        assert desc >> 2 & 0b1111 == 0b1111 and desc >> 8 & 0b11 == 0b11  # Normal WB, inner shareable
    touched = [f for f in frames if raw_stage2_walk(machine.context.host.read, backing.root, f << 12)[2] >> 10 & 1]
    assert touched, "hardware sets AF in the descriptors it used"
