"""The compiled engine's per-structure arrays start on a 64-byte line (rows padded to
whole lines then start on one), and aligning copies every value."""
from __future__ import annotations

import numpy as np
import pytest

from slatframe.counters import Counters
from slatframe.engine import make_engine
from slatframe.engine.compiled import line_aligned
from slatframe.machine import build_machine
from slatframe.testing import build, tiny_config


@pytest.mark.parametrize("shape", [(1,), (3, 5, 7), (2, 1, 9), (4, 8)])
def test_an_aligned_copy_starts_on_a_line_and_holds_the_same_values(shape):
    a = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape) * 7 - 3
    out = line_aligned(a)
    assert out.ctypes.data % 64 == 0 and out.flags.c_contiguous and out.flags.writeable
    assert out.shape == a.shape and np.array_equal(out, a)


def test_the_engine_arrays_rows_start_on_lines():
    walk_caches = [{"type": "psc", "level": lv} for lv in (4, 3, 2)]
    config, registry = build(tiny_config(machine={"slat": "intel-ept"}, walk_caches=walk_caches))
    engine = make_engine("compiled", build_machine(config, registry, Counters()), registry)
    ttag, pstate = engine.tlb[1], engine.pstate
    for name, array in (("ttag", ttag), ("wtag", engine.wtag), ("pstate", pstate), ("occ", engine.occ)):
        assert array.ctypes.data % 64 == 0, name
    assert (ttag.shape[-1] * 8) % 64 == 0 and (pstate.shape[-1] * 8) % 64 == 0
