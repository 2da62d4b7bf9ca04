"""The hashed page-table example plugin (examples/plugins/hashed_paging.py): references
per walk against the design's count (d parallel probes), its cuckoo insertions against a
naive model written here, its translations, control events against counts derived by
hand, where its references go in the data caches, and its compiled walk kernel against
its reference walk."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from slatframe.counters import Counters
from slatframe.engine import choose_engine
from slatframe.engine.reference import NO_HPA, ReferenceEngine
from slatframe.errors import ConfigError
from slatframe.machine import build_machine
from slatframe.testing import assert_engines_agree, build, run_trace, tiny_config
from naive import BruteForceCaches, LoggingMemory
from slatframe.trace import CONTEXT_SWITCH, FLUSH, INVLPG, MAP, PROTECT, READ, TRACE_DTYPE, UNMAP, WRITE, make_trace

PLUGIN = str(Path(__file__).resolve().parents[1] / "examples" / "plugins" / "hashed_paging.py")
ONE_ENTRY = {"levels": [{"name": "l1", "sets": 1, "ways": 1}]}


def _plugin_module():
    spec = importlib.util.spec_from_file_location("hashed_paging_under_test", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Only the documented hash function and key are taken from the plugin; the rest is ours.
_mod = _plugin_module()
way_hash, search_key, MAX_KICKS = _mod.way_hash, _mod.search_key, _mod.MAX_KICKS


def hashed_config(ways=2, buckets=4096, entries_per_line=1, tlb=ONE_ENTRY, **sections):
    slat = {"name": "hashed", "ways": ways, "buckets": buckets, "entries_per_line": entries_per_line}
    raw = tiny_config(experiment={"name": "hashed", "plugins": [PLUGIN]},
                      machine={"slat": slat, "host_memory": "4G"}, tlb=tlb, **sections)
    return build(raw)


def distinct_pages(n: int, seed: int, span_bits: int = 40) -> np.ndarray:
    """``n`` distinct 4K page addresses below 2**span_bits, in random order."""
    rng = np.random.default_rng(seed)
    pages = np.unique(rng.integers(0, 1 << (span_bits - 12), 3 * n))[:n]
    assert len(pages) == n
    rng.shuffle(pages)
    return pages.astype(np.uint64) << np.uint64(12)


# -- 1. references per walk ------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_every_walk_makes_d_references(d):
    """A one-entry TLB and N distinct pages touched twice: 2N completed walks and N
    aborted ones (the first touches fault), each exactly d references; the accessed
    flag is set once per page."""
    n = 200
    pages = distinct_pages(n, seed=d)
    counts, _ = run_trace(*hashed_config(ways=d, buckets=256), make_trace(np.concatenate([pages, pages])))
    assert counts["walks"] == 2 * n
    assert counts["walk.aborted"] == counts["faults.guest"] == n
    assert counts["walk.refs"] == d * counts["walks"]
    assert counts["walk.refs_aborted"] == d * counts["walk.aborted"]
    assert counts["walk.refs_max"] == d
    assert counts["walk.refs_host"] == 0
    assert counts["walk.ad_writes"] == n


# -- 2. the software side against a naive cuckoo model ----------------------------------
class CuckooModel:
    """d-ary cuckoo insertion as the plugin's docstring states it, over dicts: first
    empty way; else kick from way 0, the kicked item trying its other ways from the next
    one, then kicking in the next way; MAX_KICKS kicks, then rehash twice as big,
    re-inserting every item (way by way, slot by slot) and then the homeless one."""

    def __init__(self, d: int, buckets: int) -> None:
        self.d, self.buckets = d, buckets
        self.ways: list[dict[int, int]] = [{} for _ in range(d)]
        self.kicks = self.rehashes = 0

    def _place(self, key: int) -> int | None:
        slots = [way_hash(w, key, self.buckets) for w in range(self.d)]
        for w in range(self.d):
            if slots[w] not in self.ways[w]:
                self.ways[w][slots[w]] = key
                return None
        if self.d == 1:
            return key
        w = 0
        for _ in range(MAX_KICKS):
            s = way_hash(w, key, self.buckets)
            key, self.ways[w][s] = self.ways[w][s], key
            self.kicks += 1
            for step in range(1, self.d):
                other = (w + step) % self.d
                s = way_hash(other, key, self.buckets)
                if s not in self.ways[other]:
                    self.ways[other][s] = key
                    return None
            w = (w + 1) % self.d
        return key

    def insert(self, key: int) -> None:
        homeless = self._place(key)
        if homeless is None:
            return
        items = [way[s] for way in self.ways for s in sorted(way)] + [homeless]
        while True:
            self.rehashes += 1
            self.buckets *= 2
            self.ways = [{} for _ in range(self.d)]
            if all(self._place(k) is None for k in items):
                return

    def where(self, key: int) -> tuple[int, int]:
        for w, way in enumerate(self.ways):
            s = way_hash(w, key, self.buckets)
            if way.get(s) == key:
                return w, s
        raise KeyError(key)


def run_machine(config, registry, trace):
    counters = Counters()
    machine = build_machine(config, registry, counters)
    hpa = np.zeros(len(trace), dtype=np.uint64)
    ReferenceEngine(machine).run_chunk(trace, hpa)
    return machine, counters.as_dict(), hpa


@pytest.mark.parametrize("d,buckets,per_line,n", [(2, 64, 1, 150), (3, 32, 1, 150), (2, 16, 3, 150),
                                                   (4, 16, 1, 120), (1, 64, 1, 40)])
def test_kicks_and_rehashes_match_a_naive_cuckoo_model(d, buckets, per_line, n):
    """The same first touches fed to the model give the plugin's kicks, rehashes and
    final size; each page's tag and entry sit where the model put its key, in the layout
    the docstring gives, and the entry's frame is the one the access went to."""
    rng = np.random.default_rng(100 + d)
    pages = distinct_pages(n, seed=d * 7 + per_line, span_bits=30)
    if per_line > 1:  # neighbours share a slot: touch some of them too
        pages = np.unique(np.concatenate([pages, pages[: n // 2] ^ np.uint64(1 << 12)]))
        rng.shuffle(pages)
    offsets = rng.integers(0, 4096, len(pages)).astype(np.uint64)
    trace = make_trace(np.concatenate([pages, pages]) + np.concatenate([offsets, offsets]))
    machine, counts, hpa = run_machine(*hashed_config(ways=d, buckets=buckets, entries_per_line=per_line), trace)

    model = CuckooModel(d, buckets)
    seen = set()
    for va in pages.tolist():
        key = search_key(0, va >> 12, per_line)
        if key not in seen:
            seen.add(key)
            model.insert(key)
    assert model.rehashes >= 1 and (d == 1 or model.kicks > 0)  # the case exercises displacement
    assert counts.get("hashed.kicks", 0) == model.kicks
    assert counts.get("hashed.rehashes", 0) == model.rehashes
    assert counts["faults.guest"] == len(pages)

    table = machine.translator.tables[0]
    assert table.buckets == model.buckets
    host = machine.context.host
    stride = 16 if per_line == 1 else (32 if per_line <= 3 else 64)
    for i, va in enumerate(pages.tolist()):
        vpn = va >> 12
        key = search_key(0, vpn, per_line)
        w, s = model.where(key)
        slot = table.bases[w] + s * stride
        assert host.read(slot) == key + 1
        entry = host.read(slot + 8 * (1 + vpn % per_line))
        assert entry & 1 and entry & ((1 << 52) - 4096) == int(hpa[i]) & ~4095  # present, its frame


# -- 3. translations ------------------------------------------------------------------------
def test_translations_are_consistent_and_keep_offsets():
    """Three address spaces, shared virtual pages among them, kicks and rehashes on the
    way, a small TLB: the same (asid, page) always reaches the same frame, different
    ones different frames outside the table, and the offset within the page is kept."""
    rng = np.random.default_rng(5)
    pages = distinct_pages(300, seed=9, span_bits=36)
    n = 6000
    trace = np.zeros(n, dtype=TRACE_DTYPE)
    trace["vaddr"] = rng.choice(pages, n) + rng.integers(0, 4096, n).astype(np.uint64)
    trace["asid"] = rng.integers(0, 3, n)
    trace["op"] = np.where(rng.random(n) < 0.3, WRITE, READ)
    machine, counts, hpa = run_machine(*hashed_config(ways=2, buckets=64,
                                                      tlb={"levels": [{"name": "l1", "sets": 8, "ways": 2}]}),
                                       trace)
    assert counts["hashed.rehashes"] >= 1 and counts["hashed.kicks"] > 0
    frame_of: dict[tuple[int, int], int] = {}
    owner: dict[int, tuple[int, int]] = {}
    for rec, pa in zip(trace.tolist(), hpa.tolist()):
        _, asid, _, va, _ = rec
        assert pa & 4095 == va & 4095
        page = (asid, va >> 12)
        frame = pa >> 12
        assert frame_of.setdefault(page, frame) == frame
        assert owner.setdefault(frame, page) == page
    assert counts["faults.guest"] == len(frame_of)
    table = machine.translator.tables[0]
    size = table.buckets * table.slot_bytes
    for base in table.bases:
        assert not any(base <= f << 12 < base + size for f in owner)


# -- 4. control events ----------------------------------------------------------------------
A, B = 0x5000 + 0x123, 0x9000 + 0x40
#: (vm, asid, op, vaddr) and the counts after it, derived by hand from the design:
#: (faults.guest, completed walks, aborted walks, A/D writes, writes through a TLB entry that walked)
CONTROL_STEPS = [
    ((0, 0, READ, A), (1, 1, 1, 1, 0)),        # first touch: fault, walk, accessed flag
    ((0, 0, WRITE, A), (1, 2, 1, 2, 1)),       # clean TLB entry: walk again, dirty flag
    ((0, 0, WRITE, A), (1, 2, 1, 2, 1)),       # writable and dirty: a TLB hit
    ((0, 0, PROTECT, A), (1, 2, 1, 2, 1)),     # write flag cleared, page invalidated
    ((0, 0, READ, A), (1, 3, 1, 2, 1)),        # TLB miss, no fault, flags already set
    ((0, 0, WRITE, A), (2, 4, 2, 2, 2)),       # read-only entry: protection fault, then writable
    ((0, 0, UNMAP, A), (2, 4, 2, 2, 2)),       # entry removed, page invalidated
    ((0, 0, READ, A), (3, 5, 3, 3, 2)),        # faults again: a fresh frame
    ((0, 0, MAP, B), (3, 5, 3, 3, 2)),         # mapped by the kernel ahead of use
    ((0, 0, READ, B), (3, 6, 3, 4, 2)),        # no fault
    ((0, 0, INVLPG, B), (3, 6, 3, 4, 2)),
    ((0, 0, READ, B), (3, 7, 3, 4, 2)),        # invalidated: walks, no fault
    ((0, 0, FLUSH, 0), (3, 7, 3, 4, 2)),
    ((0, 0, READ, A), (3, 8, 3, 4, 2)),        # flushed: walks, no fault
    ((0, 0, CONTEXT_SWITCH, 1), (3, 8, 3, 4, 2)),
    ((0, 1, READ, A), (4, 9, 4, 5, 2)),        # another address space: its own page
    ((0, 0, READ, A), (4, 9, 4, 5, 2)),        # back in asid 0: tagged TLB hit
]


def control_trace(steps) -> np.ndarray:
    trace = np.zeros(len(steps), dtype=TRACE_DTYPE)
    for i, ((vm, asid, op, va), _) in enumerate(steps):
        trace[i] = (vm, asid, op, va, 0)
    return trace


@pytest.mark.parametrize("d", [1, 3])
def test_control_events_against_counts_by_hand(d):
    names = ("faults.guest", "walks", "walk.aborted", "walk.ad_writes", "walk.on_hit")
    config, registry = hashed_config(ways=d, tlb={"levels": [{"name": "l1", "sets": 4, "ways": 2}]})
    for k in range(1, len(CONTROL_STEPS) + 1):
        counts, hpa = run_trace(config, registry, control_trace(CONTROL_STEPS[:k]))
        assert tuple(counts.get(name, 0) for name in names) == CONTROL_STEPS[k - 1][1], CONTROL_STEPS[k - 1][0]
        assert counts.get("walk.refs", 0) == d * counts["walks"]
        assert counts.get("walk.refs_aborted", 0) == d * counts.get("walk.aborted", 0)
    first, after_unmap, other_asid = int(hpa[0]), int(hpa[7]), int(hpa[15])
    assert [int(hpa[i]) for i in (1, 2, 4, 5)] == [first] * 4
    assert int(hpa[13]) == int(hpa[16]) == after_unmap
    assert len({first >> 12, after_unmap >> 12, other_asid >> 12, int(hpa[9]) >> 12}) == 4
    assert all(int(hpa[i]) & 4095 == 0x123 for i in (0, 7, 13, 15, 16))
    assert all(int(hpa[i]) == NO_HPA for i in (3, 6, 8, 10, 12, 14))


# -- 5. both tiers, and what it refuses -----------------------------------------------------
@pytest.mark.parametrize("d,buckets,per_line,cost", [
    (1, 64, 1, None), (2, 16, 3, None), (4, 16, 1, None),
    (3, 64, 1, {"model": "cache-aware", "data_accesses": True, "l1d_size": "1K", "l1d_ways": 2,
                "l2_size": "4K", "l2_ways": 4, "llc_size": "16K", "llc_ways": 4}),
])
def test_auto_runs_the_compiled_walk_kernel_with_the_reference_walks_counts(d, buckets, per_line, cost):
    """The walk's kernels (walk_kernel, walk_state) against its reference object: every
    counter, including the data caches' and the rehashes the software side makes
    between loop passes, and every hPA, with control events in the trace."""
    sections = {"cost": cost} if cost else {}
    config, reg = hashed_config(ways=d, buckets=buckets, entries_per_line=per_line,
                                tlb={"levels": [{"name": "l1", "sets": 4, "ways": 2}]}, **sections)
    assert choose_engine(config, reg)[0] == "compiled"
    rng = np.random.default_rng(d)
    pages = distinct_pages(300, seed=40 + d, span_bits=32)
    n = 4000
    trace = np.zeros(n, dtype=TRACE_DTYPE)
    trace["vaddr"] = pages[rng.zipf(1.2, n) % len(pages)] + rng.integers(0, 4096, n).astype(np.uint64)
    trace["op"][rng.random(n) < 0.3] = WRITE
    trace["asid"] = rng.integers(0, 2, n)
    events = rng.choice(n, 120, replace=False)
    trace["op"][events] = rng.choice([UNMAP, PROTECT, INVLPG, FLUSH], 120)
    counts = assert_engines_agree(config, reg, trace, chunk_size=733)
    assert counts.get("hashed.rehashes", 0) >= 1 and counts["walk.refs"] == d * counts["walks"]


def test_refuses_large_pages_walk_caches_and_bad_sizes():
    trace = make_trace(np.array([0x1000], dtype=np.uint64))
    config, reg = hashed_config(vms=[{"name": "vm0", "memory": "1G", "guest_page_size": "2M"}])
    with pytest.raises(ConfigError, match=r"vms\[0\]\.guest_page_size must be 4K"):
        run_trace(config, reg, trace)
    config, reg = hashed_config(walk_caches=[{"type": "pwc"}])
    with pytest.raises(ConfigError, match="models no walk caches"):
        run_trace(config, reg, trace)
    with pytest.raises(ConfigError, match="power of two"):
        hashed_config(buckets=48)
    with pytest.raises(ConfigError, match="ways"):
        hashed_config(ways=5)


# -- 6. references through the data caches ------------------------------------------------
@pytest.mark.parametrize("d", [2, 4])
def test_walk_references_go_through_the_data_caches_one_line_per_way(d):
    """Log the words each walk reads: they fall in exactly d lines, one per way (a tag and
    its entry share a line); a brute-force LRU hierarchy over those lines (and the data
    accesses) gives the level counts the run reports."""
    caches = {"l1d_size": "1K", "l1d_ways": 2, "l2_size": "4K", "l2_ways": 4, "llc_size": "16K", "llc_ways": 4}
    config, registry = hashed_config(ways=d, buckets=256, tlb={"levels": [{"name": "l1", "sets": 4, "ways": 2}]},
                                     cost={"model": "cache-aware", "data_accesses": True, **caches})
    rng = np.random.default_rng(d)
    pages = distinct_pages(400, seed=31)
    n = 3000
    trace = np.zeros(n, dtype=TRACE_DTYPE)
    trace["vaddr"] = pages[rng.zipf(1.3, n) % len(pages)] + rng.integers(0, 64, n).astype(np.uint64) * np.uint64(64)
    trace["op"][rng.random(n) < 0.2] = WRITE
    counters = Counters()
    machine = build_machine(config, registry, counters)
    logged = machine.walker.memory = LoggingMemory(machine.walker.memory)
    plain_walk = machine.walker.walk

    def marked_walk(*args):
        logged.log.append(None)
        return plain_walk(*args)
    machine.walker.walk = marked_walk
    engine = ReferenceEngine(machine)
    brute = BruteForceCaches([(1024, 2), (4096, 4), (16384, 4)])
    names = ("l1d", "l2", "llc", "memory")
    expected = {f"dcache.{kind}.{level}": 0 for kind in ("walk", "data") for level in names}
    hpa = np.zeros(1, dtype=np.uint64)
    walks = 0
    for i in range(n):
        logged.log.clear()
        engine.run_chunk(trace[i:i + 1], hpa)
        lines: list[list[int]] = []
        for pa in logged.log:
            if pa is None:
                lines.append([])
            elif not lines[-1] or lines[-1][-1] != pa // 64:
                lines[-1].append(pa // 64)
        for walk_lines in lines:
            walks += 1
            assert len(walk_lines) == len(set(walk_lines)) == d
            for line in walk_lines:
                expected[f"dcache.walk.{names[brute.access(line * 64)]}"] += 1
        if hpa[0] != NO_HPA:
            expected[f"dcache.data.{names[brute.access(int(hpa[0]))]}"] += 1
    values = counters.values
    assert walks == values["walks"] + values["walk.aborted"]
    assert {k: values.get(k, 0) for k in expected} == expected
    assert sum(expected[f"dcache.walk.{k}"] for k in names) == values["walk.refs"] + values["walk.refs_aborted"]
