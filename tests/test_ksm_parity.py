"""slatframe's ``ksm`` with Linux's defaults against a naive model of mm/ksm.c
(tests/naive_ksm.py) on resident VM images: pages_shared, pages_sharing, pages_unshared,
pages_volatile and full scans at every wake-up, in both engine tiers; analytic counts for
identical pages (stable node chains of max_page_sharing); the dedup.wakeups metric and the
warning of a run whose strategy never woke up."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from naive_ksm import NaiveKsm
from slatframe.engine import run_machine
from slatframe.testing import build, tiny_config
from slatframe.trace import READ, TRACE_DTYPE, WRITE

PAGE = 4096
BASE = 1 << 30  # the trace's first virtual address (a 1G-aligned region: one page-table page)
TOUCHED = 8  # virtual pages each VM touches before the first wake-up
SLEEP = 50  # records between wake-ups
FIELDS = ("dedup.pages_shared", "dedup.pages_sharing", "dedup.pages_unshared", "dedup.pages_volatile",
          "dedup.full_scans")


def page_bytes(token: int) -> bytes:
    """The 4K page standing for ``token`` (0: the zero page)."""
    return token.to_bytes(8, "little") * 512


def guest_layout(image_pages: int) -> tuple[list[int], list[int]]:
    """The guest kernel's frames above the image: (table frames, data frames by virtual page).
    It allocates from the image's end: the root table at the first fault, then for the first
    page its data frame and the three tables below the root, then one data frame a page."""
    p = image_pages
    return [p, p + 2, p + 3, p + 4], [p + 1] + [p + 4 + j for j in range(1, TOUCHED)]


def make_trace(n_vms: int, wakeups: int, writes: list[tuple[int, int, int]]) -> np.ndarray:
    """Each VM reads its TOUCHED pages, then VM 0 re-reads page 0; ``writes`` are
    (record, vm, virtual page). The trace has one record after the last wake-up."""
    t = np.zeros(wakeups * SLEEP + 1, dtype=TRACE_DTYPE)
    t["op"] = READ
    t["vaddr"] = BASE
    for vm in range(n_vms):
        at = slice(vm * TOUCHED, (vm + 1) * TOUCHED)
        t["vm"][at] = vm
        t["vaddr"][at] = BASE + np.arange(TOUCHED, dtype=np.uint64) * PAGE
    for record, vm, page in writes:
        assert record >= n_vms * TOUCHED
        t["vm"][record], t["op"][record], t["vaddr"][record] = vm, WRITE, BASE + page * PAGE
    return t


def run_slatframe(tmp_path, images: list[list[int]], trace, engine: str, **ksm):
    paths = []
    for i, tokens in enumerate(images):
        paths.append(tmp_path / f"vm{i}.img")
        paths[-1].write_bytes(b"".join(page_bytes(t) for t in tokens))
    np.savez(tmp_path / "t.npz", **{k: trace[k] for k in ("vm", "asid", "op", "vaddr")})
    vms = [{"name": f"vm{i}", "memory": "4M", "image": str(p)} for i, p in enumerate(paths)]
    raw = tiny_config(experiment={"name": "ksm", "engine": engine, "chunk_size": 1000},
                      machine={"slat": "intel-ept", "host_memory": "1G"}, vms=vms,
                      workload={"source": "npz", "path": str(tmp_path / "t.npz")},
                      dedup={"strategy": "ksm", "sleep": SLEEP, **ksm})
    return run_machine(*build(raw))


def run_naive(images: list[list[int]], trace, **ksm) -> list[dict[str, int]]:
    """The naive model on the same pages: the image, then the guest's tables (unique) and
    data pages (zero until written; every write is new content)."""
    mms = []
    for vm, tokens in enumerate(images):
        mm = {g: page_bytes(t) for g, t in enumerate(tokens)}
        tables, data = guest_layout(len(tokens))
        mm.update({g: ("table", vm, g) for g in tables})
        mm.update({g: page_bytes(0) for g in data})
        mms.append(mm)
    model = NaiveKsm(mms, zero=page_bytes(0), **ksm)
    series, wakeups = [], (len(trace) - 1) // SLEEP
    writes = [(r, int(trace["vm"][r]), (int(trace["vaddr"][r]) - BASE) // PAGE)
              for r in np.flatnonzero(trace["op"] == WRITE)]
    for k in range(1, wakeups + 1):
        for record, vm, page in [w for w in writes if (k - 1) * SLEEP <= w[0] < k * SLEEP]:
            model.write(vm, guest_layout(len(images[vm]))[1][page], ("written", record))
        model.wake()
        series.append(model.stats())
    return series


def compare(tmp_path, images, writes=(), wakeups=40, **ksm):
    trace = make_trace(len(images), wakeups, list(writes))
    expected = run_naive(images, trace, **ksm)
    got = {}
    for engine in ("reference", "compiled"):
        result, machine = run_slatframe(tmp_path, images, trace, engine, **ksm)
        for vm, (backing, tokens) in enumerate(zip(machine.translator.backings, images)):
            tables, data = guest_layout(len(tokens))
            assert backing.guest_frames() == list(range(len(tokens) + 4 + TOUCHED))  # the layout assumed
        got[engine] = [{k: p[k] for k in FIELDS} for p in result.series["dedup"]]
        assert result.metrics["dedup.wakeups"] == wakeups
    assert got["reference"] == got["compiled"]
    for k, (mine, naive) in enumerate(zip(got["reference"], expected)):
        assert mine == naive, f"wake-up {k + 1}"
    return expected, result.metrics


def first_at(series, scans):
    return next(p for p in series if p["dedup.full_scans"] >= scans)


def test_identical_pages_form_chains_of_max_page_sharing(tmp_path):
    """900 identical image pages over three VMs: ceil(900 / 256) = 4 shared pages after the
    second full scan, none after the first; the 24 zero data pages share one; the 12
    page-table pages stay unshared."""
    images = [[7] * 300 for _ in range(3)]
    series = compare(tmp_path, images)[0]
    one, two = first_at(series, 1), first_at(series, 2)
    assert one["dedup.pages_sharing"] == 0 and one["dedup.pages_volatile"] == 3 * (300 + 4 + TOUCHED)
    assert (two["dedup.pages_shared"], two["dedup.pages_sharing"], two["dedup.pages_unshared"]) == \
        (4 + 1, 900 - 4 + 3 * TOUCHED - 1, 12)
    assert series[-1]["dedup.full_scans"] >= 3 and series[-1]["dedup.pages_shared"] == 5


def test_pools_of_duplicates(tmp_path):
    rng = np.random.default_rng(3)
    images = [[int(x) for x in rng.integers(1, 40, 250)] + list(range(1000 * (v + 1), 1000 * (v + 1) + 30))
              for v in range(3)]
    compare(tmp_path, images)


@pytest.mark.parametrize("use_zero_pages", [False, True])
def test_zero_pages(tmp_path, use_zero_pages):
    images = [[0] * 120 + [5] * 40 + [0] * 60, [0] * 200 + [6] * 3]
    series = compare(tmp_path, images, use_zero_pages=use_zero_pages)[0]
    zeros = 180 + 200 + 2 * TOUCHED  # image zero pages and the guests' untouched data pages
    last = first_at(series, 2)
    if use_zero_pages:  # onto the zero page: not counted as shared
        assert (last["dedup.pages_shared"], last["dedup.pages_sharing"]) == (2, 40 - 1 + 3 - 1)
    else:  # zeros: ceil(416 / 256) = 2 shared pages
        assert (last["dedup.pages_shared"], last["dedup.pages_sharing"]) == (2 + 2, zeros - 2 + 40 - 1 + 3 - 1)


def test_pages_written_between_scans(tmp_path):
    """Data pages written before their first or second visit stay volatile that scan;
    pages written every wake-up never merge; merged pages written later break COW and keep
    their items on the stable node until the scanner comes back (the kernel's counts)."""
    images = [[3] * 100 + [0] * 20, [3] * 80]
    n = 2 * TOUCHED
    writes = [(n + 5, 0, 1), (n + 60, 1, 2), (n + 400, 0, 3)]  # once each, at various scan phases
    writes += [(k * SLEEP + 7, 1, 5) for k in range(1, 40)]  # every wake-up
    writes += [(k, 0, 6) for k in range(700, 1900, 150)]  # after merging: COW breaks
    series, metrics = compare(tmp_path, images, writes=writes, wakeups=40)
    assert max(p["dedup.pages_volatile"] for p in series[10:]) > 0 and metrics["dedup.cow_breaks"] > 0


def test_dedup_never_woke_up_says_so(tmp_path):
    images = [[1] * 50, [1] * 50]
    trace = make_trace(2, 1, [])[:SLEEP]  # shorter than one interval
    result, _ = run_slatframe(tmp_path, images, trace, "reference")
    assert result.metrics["dedup.wakeups"] == 0 and result.series == {}
    assert len(result.warnings) == 1 and "never woke up" in result.warnings[0]
    trace = make_trace(2, 3, [])
    result, _ = run_slatframe(tmp_path, images, trace, "reference")
    assert result.metrics["dedup.wakeups"] == 3 and result.warnings == []


def test_resident_images_need_no_touch(tmp_path):
    """A trace touching one page still finds every image page resident: the ideal merger
    shares them at its first run, and host memory in use counts them."""
    images = [[9] * 500, [9] * 500, [9] * 500]
    trace = make_trace(3, 1, [])
    for path in range(3):
        (tmp_path / f"vm{path}.img").write_bytes(b"".join(page_bytes(t) for t in images[path]))
    np.savez(tmp_path / "t.npz", **{k: trace[k] for k in ("vm", "asid", "op", "vaddr")})
    vms = [{"name": f"vm{i}", "memory": "4M", "image": str(tmp_path / f"vm{i}.img")} for i in range(3)]
    raw = tiny_config(machine={"slat": "shadow", "host_memory": "1G"}, vms=vms,
                      workload={"source": "npz", "path": str(tmp_path / "t.npz")},
                      dedup={"strategy": "ideal", "interval": SLEEP})
    m = run_machine(*build(raw))[0].metrics
    assert m["dedup.pages_shared"] == 2 and m["dedup.pages_sharing"] == 1500 - 1 + 3 * TOUCHED - 1
    assert m["faults.host"] == 3 * (4 + TOUCHED)  # the image pages were never faulted in
    raw["dedup"]["interval"] = 10 * SLEEP  # never wakes up: every backed page is in use
    idle = run_machine(*build(raw))[0].metrics
    assert idle["dedup.host_bytes_in_use"] - m["dedup.host_bytes_in_use"] == m["dedup.bytes_saved"]
    assert idle["dedup.host_bytes_in_use"] >= 3 * (500 + 4 + TOUCHED) * PAGE


def test_cli_prints_the_warning(tmp_path):
    images = [[1] * 10]
    (tmp_path / "vm0.img").write_bytes(b"".join(page_bytes(t) for t in images[0]))
    trace = make_trace(1, 1, [])[:10]
    np.savez(tmp_path / "t.npz", **{k: trace[k] for k in ("vm", "asid", "op", "vaddr")})
    (tmp_path / "c.toml").write_text(
        '[experiment]\nname = "w"\nengine = "reference"\n[machine]\nslat = "intel-ept"\nhost_memory = "1G"\n'
        '[[tlb.levels]]\nname = "l1"\nsets = 4\nways = 2\n'
        f'[[vms]]\nname = "vm0"\nmemory = "4M"\nimage = "{tmp_path / "vm0.img"}"\n'
        f'[workload]\nsource = "npz"\npath = "{tmp_path / "t.npz"}"\n[dedup]\nstrategy = "ksm"\n')
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "slatframe.cli", "run", str(tmp_path / "c.toml"),
                           "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "slatframe: warning: the dedup strategy 'ksm' never woke up" in proc.stderr
    saved = json.loads(out.read_text())
    assert saved["metrics"]["dedup.wakeups"] == 0 and len(saved["warnings"]) == 1
