"""Random sequences of process events (fork, exec, exit, map_shared) among accesses,
unmaps, protects and switches: every scheme either runs them or stops with one
sentence (a SlatframeError), never a traceback, and both engine tiers agree."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from slatframe.errors import SlatframeError
from slatframe.testing import assert_engines_agree, build, run_trace, tiny_config
from slatframe.trace import (CONTEXT_SWITCH, EXEC, EXIT, FLUSH, FORK, INVLPG, MAP, MAP_SHARED, PROTECT, READ,
                             TRACE_DTYPE, UNMAP, WRITE)

CI = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
OPS = [READ, WRITE, READ, WRITE, FORK, EXEC, EXIT, MAP_SHARED, MAP, UNMAP, PROTECT, INVLPG, FLUSH, CONTEXT_SWITCH]
BASE = 1 << 30

_CONFIGS: dict[str, tuple] = {}
SHADOWS = {"shadow-2": {"cached_roots": 2},  # shadow variants: their options
           "shadow-unsync-pool": {"writes": "unsync", "unsync_limit": 3, "pool_pages": 12, "pool_refill": 5},
           "shadow-enlightened": {"enlightened": True, "pool_permille": 1}}


def config(slat: str):
    if slat not in _CONFIGS:
        machine = {"slat": {"name": "shadow", **SHADOWS[slat]} if slat in SHADOWS else slat, "host_memory": "16G"}
        _CONFIGS[slat] = build(tiny_config(experiment={"name": "test", "per_asid": True},  # both tiers charge asids alike
                                           machine=machine, vms=[{"name": "vm0", "memory": "4G"},
                                                                 {"name": "vm1", "memory": "4G"}]))
    return _CONFIGS[slat]


@st.composite
def process_traces(draw) -> np.ndarray:
    n = draw(st.integers(1, 60))
    t = np.zeros(n, dtype=TRACE_DTYPE)
    for i in range(n):
        op = draw(st.sampled_from(OPS))
        asid = draw(st.integers(0, 4))
        if op in (FORK, CONTEXT_SWITCH):
            va = draw(st.integers(0, 5))
        else:
            va = BASE + draw(st.integers(0, 40)) * 4096 + draw(st.integers(0, 4095)) + \
                draw(st.sampled_from([0, 0, 1 << 30, 1 << 39]))
        t[i] = (draw(st.integers(0, 1)), asid, op, va, 0)
    return t


@pytest.mark.parametrize("slat", ["native", "intel-ept", "shadow", *SHADOWS])
@CI
@given(trace=process_traces())
def test_process_events_run_or_stop_with_one_sentence(slat, trace):
    try:
        run_trace(*config(slat), trace)
    except SlatframeError as exc:
        assert "\n" not in str(exc) and str(exc).endswith(".")
        return
    counts = assert_engines_agree(*config(slat), trace, chunk_size=7)
    assert counts.get("processes.created", 0) == int(np.count_nonzero(trace["op"] == FORK))
