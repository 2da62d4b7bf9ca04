"""The compiled loop's walk memo (``plain_walk`` in slatframe/engine/loop.py) counts a
walk it remembers as the reference walker counts the walk itself: the counts and hPAs of
both tiers agree where a remembered walk would go stale (a dirty flag set on a large
page through another of its 4K pages; a page write-protected between two loop calls),
and on random traces of reads, writes and table changes over a few large and small
pages with a one-entry TLB, where nearly every access walks."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from slatframe.testing import assert_engines_agree, build, tiny_config
from slatframe.trace import MAP, PROTECT, READ, TRACE_DTYPE, UNMAP, WRITE

TWO_MB = 1 << 21


def config(page_size: str):
    """Native paging, a one-entry TLB holding 4K and 2M pages, no walk cache: every
    access that is not to the last page walks, through ``plain_walk``."""
    return build(tiny_config(tlb={"levels": [{"name": "l1", "sets": 1, "ways": 1, "page_sizes": ["4K", "2M"]}]},
                             vms=[{"name": "vm0", "memory": "1G", "guest_page_size": page_size}]))


def records(ops: list[tuple[int, int]]) -> np.ndarray:
    t = np.zeros(len(ops), dtype=TRACE_DTYPE)
    t["op"] = [op for op, _ in ops]
    t["vaddr"] = [va for _, va in ops]
    return t


def test_a_dirty_flag_set_through_another_4k_page_of_a_large_page():
    """x and y share a 2M page: the write to y dirties the leaf x's walk read clean, so
    x's next walk returns a dirty page and the write to x then hits without a walk."""
    x, y, z = 0x40000000, 0x40000000 + 5 * 4096, 0x40000000 + TWO_MB
    warm = [(READ, x), (READ, z)]  # first touches (faults, one loop call each) before the case
    case = [(READ, x), (WRITE, y), (READ, z), (READ, x), (WRITE, x)]
    trace = records(warm + case)
    cfg, registry = config("2M")
    counts = assert_engines_agree(cfg, registry, trace, chunk_size=len(trace))
    assert counts.get("walk.on_hit", 0) == 1  # the write to y, after the clean read of x: not the write to x


def test_a_page_protected_between_loop_calls():
    """The software side write-protects x between two calls of the loop: the walk of x
    after it sees a read-only page, and the write to x faults in both tiers."""
    x, z = 0x40000000, 0x40000000 + TWO_MB
    trace = records([(WRITE, x), (READ, z), (WRITE, x), (READ, z), (PROTECT, x), (READ, x), (WRITE, x)])
    cfg, registry = config("4K")
    counts = assert_engines_agree(cfg, registry, trace, chunk_size=len(trace))
    assert counts.get("walk.on_hit", 0) == 1  # the last write, to the read-only page the read before it filled


OPS = st.sampled_from([READ, READ, READ, WRITE, WRITE, PROTECT, UNMAP, MAP])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(page_size=st.sampled_from(["4K", "2M"]),
       ops=st.lists(st.tuples(OPS, st.integers(0, 2), st.integers(0, 7)), min_size=1, max_size=60))
def test_random_reads_writes_and_table_changes(page_size, ops):
    trace = records([(op, 0x40000000 + region * TWO_MB + page * 4096) for op, region, page in ops])
    cfg, registry = config(page_size)
    assert_engines_agree(cfg, registry, trace, chunk_size=len(trace))
