"""Deduplication: sharing counts against an independent hashlib count over real files,
KSM's convergence and volatility guard, COW breaks, and large pages split."""
from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from slatframe.engine import run_machine
from slatframe.paging import walk
from slatframe.testing import build, tiny_config
from slatframe.trace import TRACE_DTYPE, WRITE

PAGE = 4096
VM_MEMORY = 4 << 20  # two 2M host pages


def real_files():
    """Real binaries of this machine (a few hundred KiB each)."""
    names = ["ls", "cat", "grep", "sed", "cp", "mv", "true", "date"]
    found = [Path(shutil.which(n)) for n in names if shutil.which(n)]
    found = [p for p in found if 16 * PAGE < p.stat().st_size < 600 * PAGE]
    if len(found) < 4:
        pytest.skip("needs four real binaries")
    return found


def make_images(tmp_path):
    """Three VM images: two share a file, one shares nothing with them."""
    a, b, c, d = real_files()[:4]
    layout = {"vm0": [a, b], "vm1": [a, c], "vm2": [d]}
    paths = {}
    for vm, files in layout.items():
        data = b"".join(f.read_bytes().ljust(-(-f.stat().st_size // PAGE) * PAGE, b"\0") for f in files)
        assert len(data) < VM_MEMORY // 2  # leave room for the guest's tables
        paths[vm] = tmp_path / f"{vm}.img"
        paths[vm].write_bytes(data)
    return paths


def table_pages(kernel):
    """Guest frames holding the guest kernel's page tables (found by walking them by hand:
    bit 0 present, bit 7 a large leaf, bits 51:12 the next table)."""
    found, todo = set(), [(root, 4) for root in kernel.roots.values()]
    while todo:
        table, level = todo.pop()
        found.add(table >> 12)
        if level == 1:
            continue
        for i in range(512):
            entry = kernel.phys.read(table + 8 * i)
            if entry & 1 and not entry & 0x80:
                todo.append((entry & 0xFFFFFFFFFF000, level - 1))
    return found


def hashlib_count(paths, backed_pages, tables):
    """pages_shared / pages_sharing of the backed pages, by hashing each page's bytes (the
    guest's page-table pages hold what the kernel wrote, unique, not the image's bytes)."""
    groups = Counter()
    for vm, path in enumerate(paths):
        data = path.read_bytes()
        for gfn in backed_pages[vm]:
            if gfn in tables[vm]:
                continue
            page = data[gfn * PAGE:(gfn + 1) * PAGE].ljust(PAGE, b"\0")
            groups[hashlib.sha256(page).hexdigest()] += 1
    shared = sum(1 for n in groups.values() if n > 1)
    sharing = sum(n - 1 for n in groups.values() if n > 1)
    return shared, sharing


def touch_trace(n_vms, touched=900, rereads=3000, writes=(), seed=0):
    """Each VM touches `touched` distinct pages (so its guest allocates gPAs across both
    2M host pages), then re-reads; `writes` are (vm, page) written every 50 records."""
    rng = np.random.default_rng(seed)
    parts = []
    for vm in range(n_vms):
        t = np.zeros(touched, dtype=TRACE_DTYPE)
        t["vm"] = vm
        t["vaddr"] = (np.arange(touched, dtype=np.uint64) << np.uint64(12)) + np.uint64(1 << 30)
        parts.append(t)
    again = np.zeros(rereads, dtype=TRACE_DTYPE)
    again["vm"] = rng.integers(0, n_vms, rereads)
    again["vaddr"] = (rng.integers(0, touched, rereads).astype(np.uint64) << np.uint64(12)) + np.uint64(1 << 30)
    for k, (vm, page) in enumerate(writes):
        at = np.arange(k, rereads, 50)
        again["vm"][at] = vm
        again["vaddr"][at] = (np.uint64(page) << np.uint64(12)) + np.uint64(1 << 30)
        again["op"][at] = WRITE
    return np.concatenate(parts + [again])


def dedup_config(tmp_path, images, trace, strategy, engine="reference", host_page="2M", slat="intel-ept", **tlb):
    trace_path = tmp_path / "t.npz"
    np.savez(trace_path, **{k: trace[k] for k in ("vm", "asid", "op", "vaddr")})
    vms = [{"name": vm, "memory": VM_MEMORY, "host_page_size": host_page, "image": str(p)}
           for vm, p in images.items()]
    raw = tiny_config(experiment={"name": "dedup", "engine": engine, "chunk_size": 1000},
                      machine={"slat": slat, "host_memory": "1G"}, vms=vms,
                      tlb={"levels": [{"name": "l1", "sets": 16, "ways": 4, "page_sizes": ["4K", "2M"]}], **tlb},
                      workload={"source": "npz", "path": str(trace_path)}, dedup=strategy)
    return build(raw)


def backed(machine):
    return [backing.guest_frames() for backing in machine.translator.backings]


@pytest.mark.parametrize("engine,slat", [("reference", "intel-ept"), ("compiled", "intel-ept"),
                                         ("reference", "shadow"), ("compiled", "amd-npt")])
def test_ideal_matches_an_independent_hashlib_count(tmp_path, engine, slat):
    images = make_images(tmp_path)
    config, reg = dedup_config(tmp_path, images, touch_trace(3), {"strategy": "ideal", "interval": 1000},
                               engine=engine, slat=slat)
    result, machine = run_machine(config, reg)
    pages = backed(machine)
    assert all(len(p) == VM_MEMORY // PAGE for p in pages)  # both host pages of every VM backed
    tables = [table_pages(k) for k in machine.translator.kernels]
    shared, sharing = hashlib_count(list(images.values()), pages, tables)
    m = result.metrics
    assert (m["dedup.pages_shared"], m["dedup.pages_sharing"]) == (shared, sharing)
    assert shared > 3 and m["dedup.bytes_saved"] == sharing * PAGE
    assert m["dedup.large_pages_split"] == 6  # every 2M host page held a merged page


def test_ksm_converges_to_ideal_two_full_scans_after_the_last_page_appears(tmp_path):
    """All pages are backed within the first 2700 records; the scan that starts after that
    (the second) records their checksums, the third merges them."""
    images = make_images(tmp_path)
    trace = touch_trace(3, rereads=15_000)
    ideal, _ = run_machine(*dedup_config(tmp_path, images, trace, {"strategy": "ideal", "interval": 1000}))
    ksm, _ = run_machine(*dedup_config(tmp_path, images, trace, {
        "strategy": "ksm", "pages_to_scan": 1000, "sleep": 1000, "max_page_sharing": 100_000}))
    target = (ideal.metrics["dedup.pages_shared"], ideal.metrics["dedup.pages_sharing"])
    series = ksm.series["dedup"]
    first = next(p for p in series if p["dedup.full_scans"] >= 3)
    assert (first["dedup.pages_shared"], first["dedup.pages_sharing"]) == target
    before = [p for p in series if p["dedup.full_scans"] < 1]
    assert before and all(p["dedup.pages_sharing"] == 0 for p in before)  # scan 1 only records checksums
    assert (ksm.metrics["dedup.pages_shared"], ksm.metrics["dedup.pages_sharing"]) == target


def test_ksm_max_page_sharing_caps_each_shared_page(tmp_path):
    images = make_images(tmp_path)
    trace = touch_trace(3, rereads=15_000)
    ksm, machine = run_machine(*dedup_config(tmp_path, images, trace, {
        "strategy": "ksm", "pages_to_scan": 1000, "sleep": 1000, "max_page_sharing": 64}))
    refs = machine.dedup_host.refs
    assert refs and max(refs.values()) <= 64
    assert ksm.metrics["dedup.pages_shared"] == len(refs)
    assert ksm.metrics["dedup.pages_sharing"] == sum(refs.values()) - len(refs)


def test_ksm_never_merges_pages_kept_being_written(tmp_path):
    images = make_images(tmp_path)
    written = [(0, p) for p in range(0, 40, 4)]
    trace = touch_trace(3, rereads=30_000, writes=written)
    config, reg = dedup_config(tmp_path, images, trace,
                               {"strategy": "ksm", "pages_to_scan": 1000, "sleep": 1000})
    result, machine = run_machine(config, reg)
    kernel, dedup = machine.translator.kernels[0], machine.dedup_host
    for vm, page in written:
        gpa = kernel.lookup(0, (page << 12) + (1 << 30)).entry & 0xFFFFFFFFFF000
        assert not dedup.is_shared(vm, gpa >> 12)
    assert result.metrics["dedup.pages_volatile"] >= len(written)
    assert result.metrics["dedup.pages_sharing"] > 0


def test_writes_to_merged_pages_break_cow(tmp_path):
    images = make_images(tmp_path)
    trace = touch_trace(3, rereads=6000, writes=[(1, p) for p in range(5)])
    result, machine = run_machine(*dedup_config(tmp_path, images, trace, {"strategy": "ideal", "interval": 1000}))
    m = result.metrics
    assert m["dedup.cow_breaks"] > 0
    assert m["vm_exits.ept_violation"] == m["faults.host"]
    # every mapping of a shared frame is read-only in the EPT; every other one is writable
    for vm, backing in enumerate(machine.translator.backings):
        for gfn in backing.guest_frames()[:200]:
            step = walk(backing.fmt, backing.root, gfn << 12, machine.context.host)
            assert backing.fmt.is_writable(step.entry) == (not machine.dedup_host.is_shared(vm, gfn))


def shadow_leaves(host, root):
    """(va, hPA frame, writable) of every present leaf of a shadow table tree, decoded by
    hand (bit 0 present, bit 1 writable, bit 7 a large leaf, bits 51:12 the frame)."""
    todo, found = [(root, 4, 0)], []
    while todo:
        table, level, base = todo.pop()
        for i in range(512):
            entry = host.read(table + 8 * i)
            if not entry & 1:
                continue
            va = base | (i << (12 + 9 * (level - 1)))
            if level == 1 or entry & 0x80:
                size = 1 << (12 + 9 * (level - 1))
                found.append((va, entry & 0xFFFFFFFFFF000 & ~(size - 1), size, bool(entry & 2)))
            else:
                todo.append((entry & 0xFFFFFFFFFF000, level - 1, va))
    return found


def test_shadow_leaves_follow_merges_and_cow_breaks(tmp_path):
    """Under shadow paging every shadow leaf left after merges and COW breaks maps what
    the guest's tables and the hypervisor's backing say now, and is read-only exactly
    when it maps a shared frame."""
    images = make_images(tmp_path)
    trace = touch_trace(3, rereads=6000, writes=[(1, p) for p in range(5)])
    result, machine = run_machine(*dedup_config(tmp_path, images, trace, {"strategy": "ideal", "interval": 1000},
                                                slat="shadow"))
    m, host, dedup = result.metrics, machine.context.host, machine.dedup_host
    assert m["dedup.cow_breaks"] > 0 and m["dedup.pages_sharing"] > 0
    translator, checked = machine.translator, 0
    for (vm, asid), root in np.ndenumerate(translator.hw.guest_roots.array):
        if root < 0:
            continue
        kernel, backing = translator.kernels[vm], translator.backings[vm]
        for va, frame, size, writable in shadow_leaves(host, int(root)):
            for offset in range(0, size, 64 * PAGE):
                guest = kernel.lookup(asid, va + offset)
                gsize = 1 << (12 + 9 * (guest.level - 1))
                gpa = (guest.entry & 0xFFFFFFFFFF000 & ~(gsize - 1)) | ((va + offset) & (gsize - 1))
                assert frame + offset == backing.lookup(gpa)
                shared = dedup.is_shared(vm, gpa >> 12)
                assert not (shared and writable)
                checked += 1
    assert checked > 1000


@pytest.mark.parametrize("host_page", ["2M", "1G"])
def test_shadow_and_nested_split_the_same_large_pages(registry, host_page):
    """The same merges split the same host large pages, level by level (1G -> 2M -> 4K),
    whether the second level is a radix table (EPT) or the shadowing hypervisor's record."""
    vms = [{"name": f"vm{i}", "memory": "1G", "host_page_size": host_page,
            "content": {"zero_fraction": 0.3, "pool_fraction": 0.5, "pool_pages": 300}} for i in range(2)]
    results = {}
    for slat in ("intel-ept", "shadow"):
        raw = tiny_config(machine={"slat": slat, "host_memory": "8G"}, vms=vms,
                          tlb={"levels": [{"name": "l1", "sets": 16, "ways": 4, "page_sizes": ["4K", "2M", "1G"]}]},
                          workload={"source": "synthetic", "distribution": "uniform", "accesses": 3000,
                                    "footprint": "64M", "write_fraction": 0.05},
                          dedup={"strategy": "ideal", "interval": 2000})
        results[slat] = run_machine(*build(raw, registry))[0].metrics
    ept, shadow = results["intel-ept"], results["shadow"]
    assert ept["dedup.merges"] == shadow["dedup.merges"] > 0
    assert ept["dedup.large_pages_split"] == shadow["dedup.large_pages_split"] > 0


@pytest.mark.parametrize("strategy,slat", [("ideal", "intel-ept"), ("ksm", "intel-ept"),
                                           ("zero-pages", "intel-ept"), ("ksm", "shadow")])
def test_engines_agree_with_dedup(tmp_path, strategy, slat):
    images = make_images(tmp_path)
    trace = touch_trace(3, rereads=8000, writes=[(2, 7), (0, 3)])
    options = {"strategy": strategy}
    if strategy == "ksm":
        options.update(pages_to_scan=700, sleep=900, use_zero_pages=True)
    else:
        options["interval"] = 900
    results = [run_machine(*dedup_config(tmp_path, images, trace, options, engine=e, slat=slat))[0]
               for e in ("reference", "compiled")]
    assert results[0].engine == "reference" and results[1].engine == "compiled"
    strip = lambda m: {k: v for k, v in m.items() if v}  # noqa: E731
    assert strip(results[0].metrics) == strip(results[1].metrics)
    assert results[0].series == results[1].series


def test_dedup_splits_large_pages_and_costs_tlb_misses(registry):
    """2M host pages, content from a shared pool: KSM saves memory and splits host large
    pages, so the same trace takes more TLB misses than without dedup."""
    vms = [{"name": f"vm{i}", "memory": "64M", "host_page_size": "2M",
            "content": {"zero_fraction": 0.2, "pool_fraction": 0.6, "pool_pages": 2000}} for i in range(2)]
    raw = tiny_config(machine={"slat": "intel-ept", "host_memory": "4G"}, vms=[
        {**vm, "guest_page_size": "2M"} for vm in vms],
        tlb={"levels": [{"name": "l1", "sets": 16, "ways": 4, "page_sizes": ["4K", "2M"]},
                        {"name": "l2", "sets": 64, "ways": 8, "page_sizes": ["4K", "2M"]}]},
        workload={"source": "synthetic", "distribution": "zipf", "accesses": 60_000, "footprint": "24M"})
    plain, _ = run_machine(*build(raw, registry))
    raw["dedup"] = {"strategy": "ksm", "pages_to_scan": 4000, "sleep": 5000}
    merged, _ = run_machine(*build(raw, registry))
    p, m = plain.metrics, merged.metrics
    assert m["dedup.large_pages_split"] > 0 and m["dedup.bytes_saved"] > 0
    assert m["tlb.l2.misses"] > p["tlb.l2.misses"]
    assert m["tlb.splintered_fills"] > p["tlb.splintered_fills"]


def test_zero_pages_merges_exactly_the_zero_filled_pages(tmp_path):
    images = make_images(tmp_path)
    result, machine = run_machine(*dedup_config(tmp_path, images, touch_trace(3),
                                                 {"strategy": "zero-pages", "interval": 1000}))
    tables = [table_pages(k) for k in machine.translator.kernels]
    zero = 0
    for vm, (path, gfns) in enumerate(zip(images.values(), backed(machine))):
        data = path.read_bytes()
        zero += sum(1 for g in gfns if g not in tables[vm] and not any(data[g * PAGE:(g + 1) * PAGE]))
    assert result.metrics["dedup.zero_pages"] == zero > 0
    assert result.metrics["dedup.pages_shared"] == 0


def test_dedup_needs_a_hypervisor(registry):
    from slatframe.errors import ConfigError

    with pytest.raises(ConfigError, match="dedup = 'ideal' is not allowed: SLAT scheme 'native' has no hypervisor"):
        run_machine(*build(tiny_config(machine={"slat": "native"}, dedup={"strategy": "ideal"}), registry))


def test_a_warmup_restarts_the_dedup_counts(tmp_path):
    """With a warmup, KSM's counted figures (full scans, pages scanned, merges) are those
    after it: the run without a warmup, minus its figures at the last wake-up before the
    warmup ends (a wake-up falling on the boundary counts after it)."""
    images = make_images(tmp_path)
    trace = touch_trace(3, rereads=30_000)
    options = {"strategy": "ksm", "pages_to_scan": 1000, "sleep": 1000}
    whole, _ = run_machine(*dedup_config(tmp_path, images, trace, options))
    config, reg = dedup_config(tmp_path, images, trace, options)
    import attrs
    warm, _ = run_machine(attrs.evolve(config, experiment=attrs.evolve(config.experiment, warmup=20_000)), reg)
    at = [p for p in whole.series["dedup"] if p["records"] < 20_000][-1]
    assert warm.series["dedup"][0]["records"] == 20_000
    for name in ("dedup.full_scans", "dedup.pages_scanned", "dedup.merges"):
        assert warm.metrics[name] == whole.metrics[name] - at[name], name
    assert whole.metrics["dedup.full_scans"] > at["dedup.full_scans"] > 0
    assert warm.metrics["dedup.pages_sharing"] == whole.metrics["dedup.pages_sharing"]  # state, not a count


def test_one_page_content_ids_equal_the_vectorized_ones():
    """A 4K backing asks for one page's content at a time (Python integers); a 2M backing
    for 512 at once (numpy): the ids must be the same."""
    from slatframe.contents import VmContents

    for vm, seed in ((0, 1), (3, 123456789)):
        contents = VmContents(vm, 1 << 20, seed, 0.2, 0.5, 777)
        together = contents.initial(4096, 2048)
        one_by_one = [int(contents.initial(4096 + i)[0]) for i in range(2048)]
        assert together.tolist() == one_by_one
        assert len(set(one_by_one)) > 700  # zero, pool and unique pages all occur
