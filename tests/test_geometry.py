"""Page-table geometry (per-level index widths, 4- and 8-byte entries, roots smaller or
larger than a page) in both engine tiers: references per walk against the level counts,
translations and accessed/dirty flags against a decoder written here from the format
descriptions (Intel SDM 4.3 for 32-bit paging), and refusals of geometries no walk can
follow."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from slatframe.counters import Counters
from slatframe.engine import choose_engine, make_engine
from slatframe.errors import ConfigError, SimulationError, SlatframeError
from slatframe.machine import build_machine
from slatframe.memory import PhysicalMemory
from slatframe.paging import PageTableFormat, map_page, walk
from slatframe.testing import assert_engines_agree, build, tiny_config
from slatframe.trace import MAP, READ, WRITE, make_trace

HERE = Path(__file__).resolve().parent
FORMATS = str(HERE / "geometry_formats.py")
ARM = str(HERE.parent / "examples" / "plugins" / "arm64_stage2.py")
SMALL_WORKLOAD = {"source": "synthetic", "accesses": 1000, "footprint": "1M", "base": 1 << 28}  # (unused: traces)
ONE_ENTRY_TLB = {"levels": [{"name": "l1", "sets": 1, "ways": 1, "page_sizes": ["4K"]}]}


def entry32(read, addr: int) -> int:
    """The little-endian 4-byte entry at ``addr``, cut from its 8-byte word by numpy."""
    word = np.array([read(addr & ~7)], dtype=np.uint64)
    return int(word.view("<u4")[(addr >> 2) & 1])


def decode(read, root: int, va: int, geometry: list[tuple[int, int]], entry_bytes: int, frame: int):
    """A hand walk: ``geometry`` lists (index shift, index bits) from the root down; a
    present entry (bit 0) with bit 7 set above the last level is a large page. Returns
    (physical address, leaf entry address, leaf entry) or None."""
    table = root
    for depth, (shift, bits) in enumerate(geometry):
        addr = table + ((va >> shift) & ((1 << bits) - 1)) * entry_bytes
        entry = entry32(read, addr) if entry_bytes == 4 else read(addr)
        if not entry & 1:
            return None
        if depth == len(geometry) - 1 or entry & (1 << 7):
            return (entry & frame & ~((1 << shift) - 1)) | (va & ((1 << shift) - 1)), addr, entry
        table = entry & frame
    raise AssertionError("unreachable")


X86_32 = [(22, 10), (12, 10)]


def native(guest_format: str, page_size: str = "4K", plugins=(), **extra):
    sections = {"tlb": ONE_ENTRY_TLB, "workload": SMALL_WORKLOAD, **extra}
    raw = tiny_config(experiment={"name": "geometry", "plugins": list(plugins)},
                      machine={"slat": "native", "host_memory": "4G", "guest_format": guest_format},
                      vms=[{"name": "vm0", "memory": "1G", "guest_page_size": page_size}], **sections)
    return build(raw)


def spread_trace(seed: int, bits: int, n: int = 300, op=READ) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pages = np.unique(rng.integers(0, 1 << (bits - 12), n, dtype=np.uint64)) << np.uint64(12)
    rng.shuffle(pages)
    return make_trace(np.concatenate([pages, pages[::-1]]), op)


# -- x86 32-bit paging: two levels of 10 bits, 4-byte entries ------------------------------

@pytest.mark.parametrize("page_size,refs", [("4K", 2), ("4M", 1)])
def test_x86_32_walks_one_reference_per_level_in_both_tiers(page_size, refs):
    config, reg = native("x86-32", page_size, tlb={"levels": [{"name": "l1", "sets": 1, "ways": 1,
                                                               "page_sizes": [page_size]}]})
    assert choose_engine(config, reg)[0] == "compiled"
    counts = assert_engines_agree(config, reg, spread_trace(3, 32), chunk_size=211)
    assert counts["walks"] >= 300
    assert counts["walk.refs"] == refs * counts["walks"] and counts["walk.refs_max"] == refs


@pytest.mark.parametrize("guest,host,refs", [("4K", "4K", 14), ("4M", "4K", 9), ("4M", "2M", 7)])
def test_x86_32_guest_under_ept_makes_n_plus_1_times_m_plus_1_minus_1_references(guest, host, refs):
    """(2+1)(4+1)-1 = 14; a 4M guest page skips one guest level: (1+1)(4+1)-1 = 9, and a
    2M host page one host level: (1+1)(3+1)-1 = 7."""
    raw = tiny_config(machine={"slat": "intel-ept", "host_memory": "8G", "guest_format": "x86-32"},
                      workload=SMALL_WORKLOAD,
                      tlb={"levels": [{"name": "l1", "sets": 1, "ways": 1, "page_sizes": ["4K", "2M", "4M"]}]},
                      vms=[{"name": "vm0", "memory": "3G", "guest_page_size": guest, "host_page_size": host}])
    config, reg = build(raw)
    assert choose_engine(config, reg)[0] == "compiled"
    counts = assert_engines_agree(config, reg, spread_trace(5, 32), chunk_size=389)
    assert counts["walk.refs"] == refs * counts["walks"] and counts["walk.refs_max"] == refs


def run_tier(tier: str, config, reg, trace):
    machine = build_machine(config, reg, Counters())
    engine = make_engine(tier, machine, reg)
    hpa = np.zeros(len(trace), dtype=np.uint64)
    engine.run_chunk(trace, hpa)
    return machine, hpa


def test_x86_32_neighbouring_entries_keep_their_own_accessed_and_dirty_flags():
    """Pages next to each other have their 4-byte leaves in one 8-byte word: setting A
    and D in one must leave its neighbour as it was. Both tiers leave the same memory,
    and a hand decoder finds every translation and flag the trace implies."""
    config, reg = native("x86-32")
    rng = np.random.default_rng(11)
    pages = np.arange(64, dtype=np.uint64) + np.uint64(0x12345)
    ops = rng.integers(0, 2, len(pages) * 3).astype(np.uint8)
    order = np.concatenate([rng.permutation(pages) for _ in range(3)])
    offsets = rng.integers(0, 4096, len(order), dtype=np.uint64)
    trace = make_trace((order << np.uint64(12)) + offsets, ops)
    written = {int(p) for p, op in zip(order, ops) if op == WRITE}
    memories = {}
    for tier in ("reference", "compiled"):
        machine, hpa = run_tier(tier, config, reg, trace)
        host = machine.context.host
        root = machine.translator.hw.guest_roots.get(0, 0)
        for i, va in enumerate(trace["vaddr"].tolist()):
            pa, _, _ = decode(host.read, root, va, X86_32, 4, 0xFFFFF000)
            assert int(hpa[i]) == pa
        for page in pages.tolist():
            _, addr, entry = decode(host.read, root, page << 12, X86_32, 4, 0xFFFFF000)
            assert entry & (1 << 5), f"page {page:#x}: accessed flag"
            assert bool(entry & (1 << 6)) == (page in written), f"page {page:#x}: dirty flag"
        memories[tier] = {f: host.words[host.slot_of[f]].tobytes() for f in np.flatnonzero(host.slot_of >= 0)}
    assert memories["reference"] == memories["compiled"]


# -- roots of four entries and of four concatenated tables ---------------------------------

@pytest.mark.parametrize("name,geometry,bits", [
    ("wide-root", [(39, 11), (30, 9), (21, 9), (12, 9)], 50),
    ("small-root", [(30, 2), (21, 9), (12, 9)], 32),
])
def test_roots_smaller_and_larger_than_a_page(name, geometry, bits):
    config, reg = native(name, plugins=[FORMATS])
    assert choose_engine(config, reg)[0] == "compiled"
    trace = spread_trace(7, bits)
    counts = assert_engines_agree(config, reg, trace, chunk_size=173)
    assert counts["walk.refs"] == len(geometry) * counts["walks"]
    machine, hpa = run_tier("compiled", config, reg, trace)
    root = machine.translator.hw.guest_roots.get(0, 0)
    leaves = set()
    for i, va in enumerate(trace["vaddr"].tolist()):
        pa, addr, _ = decode(machine.context.host.read, root, va, geometry, 8, ((1 << 52) - 1) & ~0xFFF)
        assert int(hpa[i]) == pa
    root_entries = {root + ((va >> geometry[0][0]) & ((1 << geometry[0][1]) - 1)) * 8 for va in trace["vaddr"].tolist()}
    if name == "wide-root":
        assert max(root_entries) - root >= 3 * 4096, "the trace reaches the root's last concatenated table"
    else:
        assert max(root_entries) - root == 24, "the trace reaches the fourth root entry"
    del leaves


def test_prefix_caches_key_by_the_formats_own_index_shifts():
    """Paging-structure caches of every level over the wide root: both tiers count the
    same hits, and a hit skips exactly the levels above it."""
    psc = [{"type": "psc", "level": level, "sets": 1, "ways": 4} for level in (4, 3, 2)]
    config, reg = native("wide-root", plugins=[FORMATS], walk_caches=psc)
    accesses = spread_trace(9, 50, n=200)
    trace = np.concatenate([make_trace(np.unique(accesses["vaddr"]), MAP), accesses])  # no walk faults
    counts = assert_engines_agree(config, reg, trace, chunk_size=97)
    assert "walk.aborted" not in counts
    hits = sum(counts.get(f"walk_cache.psc-guest-l{lv}.hits", 0) for lv in (4, 3, 2))
    assert hits > 0
    skipped = sum(counts.get(f"walk_cache.psc-guest-l{lv}.hits", 0) * (5 - lv) for lv in (4, 3, 2))
    assert counts["walk.refs"] == 4 * counts["walks"] - skipped


# -- ARM stage 2 with concatenated roots -----------------------------------------------------

def test_a_40_bit_stage_2_reaches_its_second_concatenated_root_table():
    reg = build(tiny_config(experiment={"name": "arm", "plugins": [ARM]}))[1]
    fmt = reg.get("page-table formats", "arm64-stage2").factory(
        reg.get("page-table formats", "arm64-stage2").options(ipa_bits=40))
    assert fmt.levels == 3 and fmt.table_bytes(3) == 8192 and fmt.va_bits == 40
    mem = PhysicalMemory(1 << 30)
    root = mem.alloc(fmt.table_alloc(3))
    gpa = 600 << 30  # IPA bits 39:30 = 600: an entry of the root's second table
    map_page(fmt, root, gpa, 0x5000, 4096, mem, mem.alloc)
    step = walk(fmt, root, gpa + 0x123, mem)
    assert step.present and step.refs == 3 and step.level == 1
    first = mem.read(root + 600 * 8)
    assert first & 0b11 == 0b11 and root + 600 * 8 >= root + 4096
    assert fmt.frame(step.entry, 1) | 0x123 == 0x5123


@pytest.mark.parametrize("ipa_bits,memory,ok", [(39, "512G", True), (39, "1T", False), (40, "1T", True),
                                                 (40, "2T", False)])
def test_stage_2_input_width_bounds_vm_memory(ipa_bits, memory, ok):
    raw = tiny_config(experiment={"name": "arm", "plugins": [ARM]},
                      machine={"slat": "intel-ept", "host_memory": "64G",
                               "host_format": {"name": "arm64-stage2", "ipa_bits": ipa_bits}},
                      vms=[{"name": "vm0", "memory": memory}])
    if ok:
        build(raw)
    else:
        with pytest.raises(ConfigError, match=r"vms\[0\]\.memory.*translates \d+-bit"):
            build(raw)


# -- refusals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fields,words", [
    (dict(levels=2, index_bits=(9, 9), entry_bytes=4, frame_mask=0xFFFFF000),
     "every table below the root must fill one 4K page"),
    (dict(levels=2, index_bits=(9, 14)), "a root is at most 16 concatenated 4K tables"),
    (dict(levels=2, index_bits=(9,)), "one positive width per level"),
    (dict(levels=2, entry_bytes=2), "allowed are 4 and 8"),
    (dict(levels=2, index_bits=(10, 10), entry_bytes=4, frame_mask=0xFFFFF000, present_mask=1 << 40),
     "bits 0-31, and present_mask do not"),
    (dict(levels=2, leaf_levels=(2,)), "level 1 is always a leaf level"),
    (dict(levels=2, accessed_flag=1 << 7), "must not share bits with present_mask, leaf_mask or frame_mask"),
    (dict(levels=2, dirty_flag=1 << 12), "must not share bits with present_mask, leaf_mask or frame_mask"),
])
def test_geometries_no_walk_can_follow_are_refused(fields, words):
    base = dict(name="bad", levels=4, leaf_levels=(1,), present_mask=1)
    with pytest.raises(ValueError, match=words):
        PageTableFormat(**{**base, **fields})


def test_a_plugin_format_with_a_bad_geometry_is_one_sentence(tmp_path):
    plugin = tmp_path / "bad_format.py"
    plugin.write_text(
        "from slatframe import hookimpl\nfrom slatframe.paging import PageTableFormat\n"
        "from slatframe.records import PageTableFormatRecord\n"
        "def make(options):\n"
        "    return PageTableFormat(name='odd', levels=2, index_bits=(10, 10), leaf_levels=(1,), present_mask=1)\n"
        "@hookimpl\ndef slatframe_page_table_formats():\n"
        "    return [PageTableFormatRecord(name='odd', summary='x', factory=make)]\n")
    with pytest.raises(SlatframeError) as err:
        native("odd", plugins=[str(plugin)])
    message = str(err.value)
    assert "odd" in message and "4K page" in message and "\n" not in message


def test_host_memory_must_fit_the_formats_physical_addresses():
    with pytest.raises(ConfigError, match=r"machine\.host_memory.*32-bit physical addresses"):
        build(tiny_config(machine={"slat": "native", "host_memory": "8G", "guest_format": "x86-32"},
                          workload=SMALL_WORKLOAD))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1023), st.integers(0, (1 << 32) - 1)), min_size=1, max_size=40))
def test_four_byte_entries_store_and_load_without_touching_their_neighbours(writes):
    """Random 4-byte stores into one table against a list model of its 1024 slots."""
    fmt = PageTableFormat(name="x", levels=2, index_bits=(10, 10), entry_bytes=4, leaf_levels=(1,), present_mask=1,
                          frame_mask=0xFFFFF000)
    mem = PhysicalMemory(1 << 20)
    table = mem.alloc(4096)
    model = [0] * 1024
    for slot, value in writes:
        fmt.store(mem, table + 4 * slot, value)
        model[slot] = value
    assert [fmt.load(mem, table + 4 * slot) for slot in range(1024)] == model
    assert [entry32(mem.read, table + 4 * slot) for slot in range(1024)] == model


STUCK_SCHEME = '''
from slatframe import hookimpl
from slatframe.records import SlatSchemeRecord
from slatframe_plugins.native import NativeTranslator
from slatframe.walker import NO_ROOT


class Forgetful(NativeTranslator):
    """Sets roots, but never maps a page: every walk faults again."""

    def handle_fault(self, vm, asid, va, op, fault):
        if fault.kind == NO_ROOT:
            return super().handle_fault(vm, asid, va, op, fault)
        return []


@hookimpl
def slatframe_slat_schemes():
    return [SlatSchemeRecord(name="forgetful", summary="maps nothing", guest_format="x86-64",
                             factory=lambda options, ctx: Forgetful(ctx), backs_guest_memory=False)]
'''


@pytest.mark.parametrize("tier", ["reference", "compiled"])
def test_a_scheme_whose_fault_handler_makes_no_progress_stops_the_run(tmp_path, tier):
    """A bug in a scheme (or in a format's codec) that leaves the walk faulting forever is
    one sentence, not a hang."""
    plugin = tmp_path / "forgetful.py"
    plugin.write_text(STUCK_SCHEME)
    config, reg = build(tiny_config(experiment={"name": "stuck", "plugins": [str(plugin)]},
                                    machine={"slat": "forgetful", "host_memory": "4G"}))
    engine = make_engine(tier, build_machine(config, reg, Counters()), reg)
    with pytest.raises(SimulationError, match=r"faulted more than 1000 times in a row.*'forgetful'"):
        engine.run_chunk(make_trace([0x1000]))
