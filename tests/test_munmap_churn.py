"""The munmap-churn workload (threads returning memory to the kernel) and the
shootdown-scaling example: its records against counts worked out from the options, and
a run's shootdowns against the count its schedule of frees gives."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from slatframe.engine import run_experiment
from slatframe.testing import build, tiny_config
from slatframe.trace import UNMAP

from slatframe_plugins.munmap_churn import ChurnOptions, churn

PAGE = 4096


@pytest.mark.parametrize("threads, periods", [(1, 3), (3, 2), (4, 1)])
def test_each_thread_frees_its_own_pages_once_a_period(threads, periods):
    o = ChurnOptions(threads=threads, accesses=40 * threads * periods, free_every=40, free_pages=3, arena=8 * PAGE,
                     shared=2 * PAGE)
    one = np.concatenate(list(churn(o, 10_000, 5)))
    assert np.array_equal(one, np.concatenate(list(churn(o, 7, 5))))  # the chunk size changes nothing
    unmap = one["op"] == UNMAP
    assert np.count_nonzero(~unmap) == o.accesses
    assert np.count_nonzero(unmap) == threads * periods * o.free_pages
    for t in range(threads):
        mine = one[unmap & (one["thread"] == t)]
        arena = o.base + t * o.arena
        pages = (mine["vaddr"] - arena) // PAGE
        assert ((mine["vaddr"] >= arena) & (mine["vaddr"] < arena + o.arena)).all()
        assert pages.tolist() == [(i % (o.arena // PAGE)) for i in range(periods * o.free_pages)]
        runs = np.flatnonzero(unmap & (one["thread"] == t))
        assert (np.diff(runs.reshape(periods, o.free_pages), axis=1) == 1).all()  # each free back to back
    accesses = one[~unmap]
    assert (accesses["thread"] == np.arange(len(accesses)) % threads).all()  # one record of each in turn


@pytest.mark.parametrize("k", [2, 4])
def test_every_free_but_the_first_is_a_shootdown_of_the_other_threads(k):
    """Thread 0 frees right after its first access, before the others ran; every later
    free reaches the k - 1 other vCPUs: 2k - 1 shootdowns in two periods."""
    raw = tiny_config(machine={"slat": "native", "host_memory": "4G", "cores": k},
                      vms=[{"name": "vm0", "memory": "1G", "vcpus": k}],
                      workload={"source": "munmap-churn", "threads": k, "accesses": 2 * 60 * k, "free_every": 60,
                                "free_pages": 4, "arena": "64K", "shared": "16K"})
    m = run_experiment(*build(raw)).metrics
    assert m["events.unmap"] == 2 * k * 4
    assert (m["tlb.shootdowns"], m["ipi.sent"]) == (2 * k - 1, (2 * k - 1) * (k - 1))


def test_the_scaling_script_prints_one_row_per_scheme_and_vcpu_count(capsys):
    path = Path(__file__).resolve().parents[1] / "examples" / "shootdown_scaling.py"
    spec = importlib.util.spec_from_file_location("shootdown_scaling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--per-thread", "400", "--vcpus", "1", "2", "--schemes", "EPT", "EPT + IPIv",
                  "--set", "workload.free_every=100"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [(r[0], r[-7]) for r in rows] == [("EPT", "1"), ("EPT", "2"), ("EPT", "1"), ("EPT", "2")]
    ipis = [float(r[-5]) for r in rows]
    # 2 threads x 400 accesses, a free every 100: 8 frees, of which all but thread 0's first reach the other vCPU
    assert ipis[0] == ipis[2] == 0 and ipis[1] == ipis[3] == 7 / 8
    flush_exits = [float(r[-4]) for r in rows]
    assert flush_exits[1] == ipis[1] and flush_exits[3] == 0  # IPI virtualization: no exit


def test_a_free_period_longer_than_the_run_builds_only_what_the_run_needs():
    """free_every far beyond the accesses: thread 0 frees once, after its first access;
    no other thread's free falls inside the run (and no period-sized array is made)."""
    o = ChurnOptions(threads=2, accesses=100, free_every=10 ** 12, free_pages=3, arena=8 * PAGE, shared=2 * PAGE)
    t = np.concatenate(list(churn(o, 64, 1)))
    assert np.count_nonzero(t["op"] != UNMAP) == 100
    assert t["op"][1:4].tolist() == [UNMAP] * 3 and (t["thread"][1:4] == 0).all()
    assert np.count_nonzero(t["op"] == UNMAP) == 3
