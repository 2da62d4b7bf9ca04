"""The cuts benchmark (benchmarks/cuts.py) edits the text of the engine's generated
module: each of its edits must still find its text in the loop exactly once, and every
variant it builds must still be valid Python, or the benchmark would time something else
than it says (it also stops on a missing edit when it runs; this keeps it from rotting
between runs, which compile for minutes and are not part of the tests)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package

from benchmarks.cuts import VARIANTS, edited  # noqa: E402
from slatframe.engine.codegen import module_source, policy_ids  # noqa: E402
from slatframe.testing import build, tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def source_and_lru():
    _, registry = build(tiny_config())
    return module_source(registry), policy_ids(registry)["lru"]


@pytest.mark.parametrize("label", list(VARIANTS))
def test_every_variant_applies_and_parses(source_and_lru, label):
    source, lru = source_and_lru
    for what, cuts in VARIANTS[label]:
        text = edited(source, cuts, 2, lru)
        ast.parse(text)  # a SyntaxError here names the variant in the traceback
        for j, name in enumerate(cuts):  # each cut changes what the cuts before it left
            assert edited(source, cuts[:j + 1], 2, lru) != edited(source, cuts[:j], 2, lru), (what, name)


def test_a_missing_edit_stops_with_the_cut_name(source_and_lru):
    source, lru = source_and_lru
    with pytest.raises(LookupError, match="'no walk'"):
        edited(source, ["no walk"], 2, lru)  # its text exists only after "one walk"


def test_cuts_refuse_a_config_whose_policy_they_would_replace():
    """"LRU called directly" compiles LRU in: a FIFO TLB is refused, not timed as LRU."""
    from benchmarks.__main__ import workload
    from benchmarks.cuts import cut_rows

    config, registry = build(tiny_config(tlb={"levels": [{"name": "l1d", "sets": 16, "ways": 4, "latency": 1,
                                                           "policy": "fifo"}]},
                                         vms=[{"name": "vm0", "memory": "8G"}],
                                         machine={"slat": "native", "host_memory": "64G"}))
    label = next(iter(VARIANTS))
    with pytest.raises(ValueError, match="policy to be LRU"):
        cut_rows(label, config, registry, workload("hit-heavy", 2000), 1, ("yardstick", lambda: 1.0))
