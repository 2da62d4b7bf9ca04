"""Cores and vCPUs (issue 34, phase 1): per-core TLBs and walk caches, the schedulers,
per-core and per-vCPU metrics. Each count is checked against an independent route: the
single-core path, an analytic count, the trace itself, or a brute-force scheduler."""
from __future__ import annotations

import math
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slatframe.engine import choose_engine, run_experiment
from slatframe.errors import ConfigError, PluginError
from slatframe.registry import Registry
from slatframe.smp import Placed, SmpContext, by_rule, placed_chunks
from slatframe.testing import build, tiny_config
from slatframe.trace import CONTEXT_SWITCH, READ, TRACE_DTYPE, UNMAP, WRITE

from slatframe_plugins.schedulers import TimeSliced, TimeSlicedOptions

PAGE = 4096
BASE = 1 << 30


def records(rows: list[tuple[int, int, int, int, int]]) -> np.ndarray:
    """(vm, asid, op, vaddr, thread) rows as a trace."""
    return np.array(rows, dtype=TRACE_DTYPE)


def smp_raw(tmp_path: Path, trace: np.ndarray, cores: int, vcpus: list[int], **extra) -> dict:
    np.savez(tmp_path / "t.npz", **{k: trace[k] for k in TRACE_DTYPE.names})
    raw = tiny_config(experiment={"name": "smp", "chunk_size": 97},
                      machine={"slat": extra.pop("slat", "native"), "host_memory": "4G", "cores": cores,
                               **extra.pop("machine", {})},
                      vms=[{"name": f"v{i}", "memory": "256M", "vcpus": k} for i, k in enumerate(vcpus)],
                      workload={"source": "npz", "path": str(tmp_path / "t.npz")})
    raw.update(extra)
    return raw


def run(raw: dict) -> dict:
    return run_experiment(*build(raw), engine="reference").metrics


def random_trace(seed: int, n: int, vms: int, threads: int, asids: int = 2) -> np.ndarray:
    """Threads of ``vms`` VMs reading and writing 48 pages of each address space, with
    explicit and implicit context switches."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        vm, thread, asid = int(rng.integers(vms)), int(rng.integers(threads)), int(rng.integers(asids))
        if rng.random() < 0.02:
            rows.append((vm, asid, CONTEXT_SWITCH, asid, thread))
            continue
        page = int(rng.zipf(1.4)) % 48
        rows.append((vm, asid, WRITE if rng.random() < 0.3 else READ, BASE + (asid << 24) + page * PAGE, thread))
    return records(rows)


def unscoped(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith(("core.", "vm."))}


def test_one_core_of_several_counts_as_a_machine_of_one(tmp_path):
    """Every record placed on core 0 of a 3-core machine gives the single-core counts,
    and core 0's metrics are the totals."""
    trace = random_trace(1, 3000, vms=2, threads=1)
    tlb = {"levels": [{"name": "l1", "sets": 4, "ways": 2}, {"name": "l2", "sets": 16, "ways": 4}], "tagged": False}
    one = run(smp_raw(tmp_path, trace, 1, [1, 1], tlb=tlb, walk_caches=[{"type": "pwc"}]))
    three = run(smp_raw(tmp_path, trace, 3, [1, 1], tlb=tlb, walk_caches=[{"type": "pwc"}],
                        machine={"scheduler": {"name": "pinned", "placement": [0, 0]}}))
    assert unscoped(three) == unscoped(one)
    assert one["events.vm_switch"] > 0 and not any(k.startswith("core.") for k in one)
    for name, value in unscoped(one).items():
        if not name.startswith(("derived.", "cycles.per_access", "translation_overhead", "walk.refs_max")):
            assert three[f"core.0.{name}"] == pytest.approx(value), name
    assert three["core.1.accesses"] == three["core.2.accesses"] == 0


@pytest.mark.parametrize("shared", [False, True])
def test_each_core_walks_for_its_own_tlb_unless_the_levels_are_shared(tmp_path, shared):
    """Two threads on two cores read the same 6 pages: a private TLB walks once per page
    per core; a shared one once per page. The guest maps each page once either way."""
    pages = [BASE + p * PAGE for p in range(6)]
    trace = records([(0, 0, READ, va, t) for t in (0, 1) for va in pages] * 2)
    levels = [{"name": "l1", "sets": 4, "ways": 4, "shared": shared}]
    m = run(smp_raw(tmp_path, trace, 2, [2], tlb={"levels": levels}))
    assert m["faults.guest"] == 6
    assert m["walks"] == (6 if shared else 12)
    assert m["core.0.accesses"] == m["core.1.accesses"] == 12
    assert m["vm.v0.vcpu.0.walks"] == 6 and m["vm.v0.vcpu.1.walks"] == (0 if shared else 6)


def test_a_mapping_change_leaves_no_stale_entry_on_another_core(tmp_path):
    """Thread 1 on core 1 caches page P; thread 0 on core 0 unmaps it; thread 1's next
    read walks (and faults: P is gone) instead of hitting the stale entry."""
    p = BASE + 5 * PAGE
    trace = records([(0, 0, READ, p, 0), (0, 0, READ, p, 1), (0, 0, READ, p, 1), (0, 0, UNMAP, p, 0),
                     (0, 0, READ, p, 1)])
    m = run(smp_raw(tmp_path, trace, 2, [2]))
    assert (m["core.0.walks"], m["core.1.walks"]) == (1, 2)
    assert (m["core.0.faults.guest"], m["core.1.faults.guest"]) == (1, 1)
    assert m["core.1.tlb.l1.hits"] == 1


def test_a_vm_switch_flushes_only_its_own_core(tmp_path):
    """Untagged TLBs: VMs 0 and 1 take turns on core 0 (each turn flushes it); VM 2 on
    core 1 keeps its entry through their switches."""
    p = BASE + PAGE
    rows = [(2, 0, READ, p, 0)]
    for _ in range(3):
        rows += [(0, 0, READ, p, 0), (1, 0, READ, p, 0), (2, 0, READ, p, 0)]
    m = run(smp_raw(tmp_path, records(rows), 2, [1, 1, 1], tlb={"levels": [{"name": "l1", "sets": 4, "ways": 2}],
                                                                 "tagged": False},
                    machine={"scheduler": {"name": "pinned", "placement": [0, 0, 1]}}))
    assert m["core.1.walks"] == 1 and m["core.1.tlb.l1.hits"] == 3
    assert m["core.0.events.vm_switch"] == 5 and m["core.0.walks"] == 6
    assert m["core.1.events.vm_switch"] == 0


@pytest.mark.parametrize("slat", ["native", "intel-ept", "shadow"])
def test_cores_and_vcpus_add_up_to_the_totals(tmp_path, slat):
    """Random threads of two VMs (3 and 2 vCPUs) on 4 cores: per core and per vCPU, every
    count adds up to the totals (and the VM's), and each vCPU's and core's accesses are
    what the trace and the placement give."""
    trace = random_trace(7, 2500, vms=2, threads=5)
    placement = [3, 1, 0, 1, 2]
    m = run(smp_raw(tmp_path, trace, 4, [3, 2], slat=slat, experiment={"name": "smp", "per_asid": True},
                    machine={"scheduler": {"name": "pinned", "placement": placement}}))
    counters = [k for k in m if f"core.0.{k}" in m and not k.startswith(("derived.", "cycles.per_access",
                                                                          "translation_overhead"))]
    assert "walks" in counters and "events.context_switch" in counters
    for k in counters:
        assert math.isclose(sum(m[f"core.{c}.{k}"] for c in range(4)), m[k], abs_tol=1e-6), k
        for vm, n in (("v0", 3), ("v1", 2)):
            assert math.isclose(sum(m[f"vm.{vm}.vcpu.{j}.{k}"] for j in range(n)), m[f"vm.{vm}.{k}"],
                                abs_tol=1e-6), (vm, k)
    access = trace["op"] < CONTEXT_SWITCH
    vcpu = trace["thread"] % np.where(trace["vm"] == 0, 3, 2)
    first = np.where(trace["vm"] == 0, 0, 3)
    core = np.asarray(placement)[first + vcpu]
    for c in range(4):
        assert m[f"core.{c}.accesses"] == np.count_nonzero(access & (core == c))
    for vm, n in ((0, 3), (1, 2)):
        for j in range(n):
            assert m[f"vm.v{vm}.vcpu.{j}.accesses"] == np.count_nonzero(access & (trace["vm"] == vm) & (vcpu == j))


@pytest.mark.parametrize("cores, vcpus, extra", [
    (2, [2], {}),
    (4, [3, 2], {"slat": "intel-ept", "walk_caches": [{"type": "pwc"}, {"type": "nested-tlb"}]}),
    (2, [3, 2], {"machine": {"scheduler": {"name": "time-sliced", "quantum": 7, "window": 50}},
                 "tlb": {"tagged": False, "inclusion": "inclusive",
                         "levels": [{"name": "l1", "sets": 4, "ways": 2},
                                    {"name": "l2", "sets": 8, "ways": 4, "shared": True}]}}),
    (1, [3], {"slat": "shadow", "experiment": {"name": "smp", "chunk_size": 97, "per_asid": True}}),
])
def test_the_compiled_tier_runs_cores_and_vcpus_as_the_reference_tier_does(tmp_path, cores, vcpus, extra):
    """The whole run (scheduler, coherence, per-core and per-vCPU metrics) in both tiers:
    every metric equal, and ``auto`` takes the compiled tier."""
    trace = random_trace(5, 1500, vms=len(vcpus), threads=4)
    config, registry = build(smp_raw(tmp_path, trace, cores, vcpus, **extra))
    assert choose_engine(config, registry, "auto")[0] == "compiled"
    compiled = run_experiment(config, registry, engine="compiled")
    reference = run_experiment(config, registry, engine="reference")
    assert compiled.engine == "compiled" and compiled.metrics == reference.metrics
    assert any(key.startswith("core.1.") for key in reference.metrics) == (cores > 1)
    assert reference.metrics["vm.v0.vcpu.1.accesses"] > 0


@pytest.mark.parametrize("placement, key, text", [
    ([0, 1], "machine.scheduler.placement", "has 2 cores, which is not allowed: it lists the core of each vCPU"),
    ([0, 1, 2], "machine.scheduler.placement[2]", "= 2 is not allowed: cores go from 0 to 1"),
])
def test_a_placement_that_does_not_fit_is_refused(tmp_path, placement, key, text):
    raw = smp_raw(tmp_path, random_trace(3, 50, 1, 3), 2, [3],
                  machine={"scheduler": {"name": "pinned", "placement": placement}})
    with pytest.raises(ConfigError) as info:
        build(raw)
    assert key in str(info.value) and text in str(info.value)


OUTSIDE = '''
import attrs
import numpy as np
from slatframe import hookimpl
from slatframe.records import SchedulerRecord
from slatframe.smp import Placed, thread_vcpus


@attrs.frozen
class Options:
    mode: str = "last"


class LastCore:
    """Every vCPU on the last core (or, to test the core's checks, a wrong placement)."""

    def __init__(self, options, ctx):
        self.mode, self.ctx = options.mode, ctx

    def schedule(self, chunks):
        for chunk in chunks:
            core = np.full(len(chunk), self.ctx.cores - 1 + (self.mode == "beyond"))
            if self.mode == "drop":
                chunk, core = chunk[1:], core[1:]
            vcpu = thread_vcpus(chunk, self.ctx)
            yield Placed(chunk["vaddr"] if self.mode == "addresses" else chunk, vcpu, core)


@hookimpl
def slatframe_schedulers():
    return [SchedulerRecord(name="last-core", summary="every vCPU on the last core", options=Options,
                            factory=LastCore)]
'''


@pytest.mark.parametrize("mode", ["last", "beyond", "drop", "addresses"])
def test_an_outside_scheduler_runs_and_its_mistakes_are_named(tmp_path, mode):
    (tmp_path / "sched.py").write_text(OUTSIDE)
    trace = random_trace(4, 300, vms=1, threads=2)
    raw = smp_raw(tmp_path, trace, 3, [2], machine={"scheduler": {"name": "last-core", "mode": mode}})
    raw["experiment"]["plugins"] = [str(tmp_path / "sched.py")]
    if mode == "last":
        m = run(raw)
        assert m["core.2.accesses"] == m["accesses"] == np.count_nonzero(trace["op"] < CONTEXT_SWITCH)
        return
    with pytest.raises(PluginError) as info:
        run(raw)
    assert str(info.value).startswith("scheduler 'last-core' ")
    dropped = math.ceil(300 / 97)  # one record of each chunk (experiment.chunk_size = 97)
    expected = {"beyond": "cores from 0 to 2", "drop": f"placed {300 - dropped} records of the workload's 300",
                "addresses": "not a one-dimensional array of slatframe.trace.TRACE_DTYPE (got ndarray of uint64)"}
    assert expected[mode] in str(info.value)


# -- time-sliced: the scheduler against a brute-force simulation of its rule -----------


def brute_time_sliced(trace: np.ndarray, ctx: SmpContext, home: list[int], quantum: int, window: int
                      ) -> list[tuple[int, int]]:
    """(trace index, core) of each record in the order the rule runs them, simulated
    record by record: per window, each core runs its vCPUs in turn, ``quantum`` records
    each, skipping those with none left; the cores take turns a record at a time."""
    first = [sum(ctx.vcpus[:v]) for v in range(len(ctx.vcpus))]
    members = [[g for g in range(len(home)) if home[g] == c] for c in range(ctx.cores)]
    position, used = [0] * ctx.cores, [0] * ctx.cores
    out = []
    for start in range(0, len(trace), window):
        queues = [deque() for _ in home]
        for i in range(start, min(start + window, len(trace))):
            vm = int(trace["vm"][i])
            queues[first[vm] + int(trace["thread"][i]) % ctx.vcpus[vm]].append(i)
        runs = []
        for c in range(ctx.cores):
            run_c = []
            mine = members[c]
            while any(queues[g] for g in mine):
                g = mine[position[c]]
                if not queues[g]:
                    position[c], used[c] = (position[c] + 1) % len(mine), 0
                    continue
                run_c.append(queues[g].popleft())
                used[c] += 1
                if used[c] == quantum:
                    position[c], used[c] = (position[c] + 1) % len(mine), 0
            runs.append(run_c)
        for t in range(max(map(len, runs), default=0)):
            out += [(r[t], c) for c, r in enumerate(runs) if t < len(r)]
    return out


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_time_sliced_runs_each_core_s_vcpus_in_turn(data):
    vcpus = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    cores = data.draw(st.integers(1, 3))
    total = sum(vcpus)
    home = data.draw(st.lists(st.integers(0, cores - 1), min_size=total, max_size=total))
    quantum, window = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 40))
    n = data.draw(st.integers(0, 120))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    trace = np.zeros(n, dtype=TRACE_DTYPE)
    trace["vm"] = rng.integers(0, len(vcpus), n)
    trace["thread"] = rng.integers(0, 4, n)
    trace["vaddr"] = np.arange(n)
    ctx = SmpContext(cores=cores, vcpus=tuple(vcpus))
    expected = brute_time_sliced(trace, ctx, home, quantum, window)
    chunk = data.draw(st.integers(1, 50))  # the order must not depend on how the trace is chunked
    scheduler = TimeSliced(TimeSlicedOptions(quantum=quantum, window=window, placement=tuple(home)), ctx)
    placed = list(placed_chunks(scheduler, (trace[i:i + chunk] for i in range(0, n, chunk)), ctx, "time-sliced"))
    arrays = [by_rule(p.records, vcpus, np.asarray(home, dtype=np.int64)) for p in placed]
    got = [(int(va), int(c)) for p, (_, core) in zip(placed, arrays) for va, c in zip(p.records["vaddr"], core)]
    assert got == expected
    vcpu = [int(k) for v, _ in arrays for k in v]
    assert vcpu == [int(trace["thread"][i]) % vcpus[int(trace["vm"][i])] for i, _ in expected]


def test_time_slicing_two_vms_on_one_core_switches_once_per_quantum(tmp_path):
    """Two VMs that alternate record by record, on one core with quantum 50: the core
    switches VMs once per 50 records (analytic), where pinned switches at every record."""
    rows = [(i % 2, 0, READ, BASE + (i // 2 % 8) * PAGE, 0) for i in range(400)]
    sliced = run(smp_raw(tmp_path, records(rows), 2, [1, 1],
                         machine={"scheduler": {"name": "time-sliced", "quantum": 50, "placement": [0, 0]}}))
    pinned = run(smp_raw(tmp_path, records(rows), 2, [1, 1],
                         machine={"scheduler": {"name": "pinned", "placement": [0, 0]}}))
    assert pinned["events.vm_switch"] == 399
    assert sliced["events.vm_switch"] == 400 // 50 - 1
    assert sliced["accesses"] == pinned["accesses"] == 400


def test_every_builtin_scheduler_is_registered():
    names = set(Registry().records["schedulers"])
    assert {"pinned", "time-sliced"} <= names


def test_the_run_summary_shows_each_core(tmp_path):
    from slatframe.report import summary

    trace = random_trace(5, 400, vms=1, threads=2)
    result = run_experiment(*build(smp_raw(tmp_path, trace, 2, [2])), engine="reference")
    lines = summary(result).splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("core "))
    rows = [line.split() for line in lines[head + 2:head + 4]]
    assert [(int(r[0]), int(r[1].replace(",", ""))) for r in rows] == \
        [(c, result.metrics[f"core.{c}.accesses"]) for c in (0, 1)]


def test_a_time_sliced_window_the_memory_cannot_hold_is_refused_by_name(tmp_path, monkeypatch):
    """The window is held in memory while it is reordered: a window of 2^30 records over a
    trace that long is refused before the run, naming the key; the same window over a
    short trace holds only the trace and is accepted."""
    monkeypatch.setenv("SLATFRAME_MEMORY_LIMIT", "2G")
    raw = tiny_config(machine={"slat": "native", "host_memory": "4G", "cores": 2,
                               "scheduler": {"name": "time-sliced", "window": 1 << 30}},
                      vms=[{"name": "vm0", "memory": "1G", "vcpus": 2}],
                      workload={"source": "synthetic", "accesses": 1 << 30, "footprint": "1M", "threads": 2})
    with pytest.raises(ConfigError, match=r"machine\.scheduler\.window = 1073741824 is not allowed: the run "
                                          r"would need about"):
        build(raw)
    raw["workload"]["accesses"] = 1000
    build(raw)


def test_dedup_wake_ups_and_a_warmup_on_several_cores_agree_in_both_tiers():
    """KSM merging pages of two 2-vCPU VMs time-sliced on 3 cores (each merge a hypervisor
    flush of the VM's vCPUs), with a warmup restart in the middle: every metric equal in
    both tiers, and the merges did flush other cores."""
    import slatframe

    sets = {"workload.accesses": 20000, "workload.threads": 3, "experiment.warmup": 7000,
            "dedup.sleep": 3000, "dedup.pages_to_scan": 20000, "machine.cores": 3,
            "machine.scheduler.name": "time-sliced", "machine.scheduler.quantum": 500,
            **{f"vms[{v}].{key}": value for v in (0, 1) for key, value in
               (("vcpus", 2), ("guest_page_size", "4K"), ("host_page_size", "4K"))}}
    ksm = Path(__file__).resolve().parents[1] / "examples" / "ksm-vs-large-pages.toml"
    reference = slatframe.run(ksm, set=sets, engine="reference")
    compiled = slatframe.run(ksm, set=sets, engine="compiled")
    assert compiled.metrics == reference.metrics
    assert reference.metrics["dedup.merges"] > 0 and reference.metrics["hypervisor.remote_flushes.dedup"] > 0
    assert reference.metrics["tlb.remote_invalidations"] > 0


# -- the default rule placed by the engine (Placed.home) against arrays placed record by record --

BY_HAND = '''
import attrs
import numpy as np
from slatframe import hookimpl
from slatframe.records import SchedulerRecord
from slatframe.smp import Placed

HOME = [3, 1, 0, 2, 1]


@attrs.frozen
class Options:
    mode: str = "by-hand"


class ByHand:
    """pinned's placement (HOME), record by record in Python; or home arrays that are wrong."""

    def __init__(self, options, ctx):
        self.mode, self.ctx = options.mode, ctx

    def schedule(self, chunks):
        first = [sum(self.ctx.vcpus[:v]) for v in range(len(self.ctx.vcpus))]
        for chunk in chunks:
            if self.mode == "short":
                yield Placed(chunk, home=np.array(HOME[:-1]))
            elif self.mode == "beyond":
                yield Placed(chunk, home=np.array(HOME[:-1] + [self.ctx.cores]))
            elif self.mode == "both":
                zeros = np.zeros(len(chunk), dtype=np.int64)
                yield Placed(chunk, zeros, zeros, home=np.array(HOME))
            else:
                vcpu = [int(t) % self.ctx.vcpus[int(vm)] for vm, t in zip(chunk["vm"], chunk["thread"])]
                core = [HOME[first[int(vm)] + k] for vm, k in zip(chunk["vm"], vcpu)]
                yield Placed(chunk, np.array(vcpu, dtype=np.int64), np.array(core, dtype=np.int64))


@hookimpl
def slatframe_schedulers():
    return [SchedulerRecord(name="by-hand", summary="pinned, by hand", options=Options, factory=ByHand)]
'''


@pytest.mark.parametrize("slat", ["native", "intel-ept"])
def test_the_engine_places_by_thread_as_arrays_placed_by_hand_do(tmp_path, slat):
    """pinned gives the engine its rule (Placed.home) and the compiled loop places each
    record from its thread field; a scheduler placing the same records by hand, record
    by record, must give every metric the same, in both tiers. Two VMs of 3 and 2 vCPUs
    on 4 cores, threads 0 to 6 (more threads than vCPUs)."""
    (tmp_path / "by_hand.py").write_text(BY_HAND)
    trace = random_trace(11, 1500, vms=2, threads=7)
    home = [3, 1, 0, 2, 1]
    runs = {}
    for scheduler in ({"name": "pinned", "placement": home}, {"name": "by-hand"}):
        raw = smp_raw(tmp_path, trace, 4, [3, 2], slat=slat, machine={"scheduler": scheduler})
        raw["experiment"]["plugins"] = [str(tmp_path / "by_hand.py")]
        for tier in ("reference", "compiled"):
            runs[scheduler["name"], tier] = run_experiment(*build(raw), engine=tier).metrics
    expected = runs["by-hand", "reference"]
    assert expected["core.3.accesses"] > 0 and expected["vm.v0.vcpu.2.accesses"] > 0
    for key, metrics in runs.items():
        assert metrics == expected, key


@pytest.mark.parametrize("mode, text", [
    ("short", "yielded a home of shape (4,) (int64); it is one integer per vCPU of the machine (5)"),
    ("beyond", "placed vCPU 4 of the machine on core 4; cores go from 0 to 3"),
    ("both", "yielded a Placed with both home and per-record vcpu and core"),
])
def test_a_wrong_home_is_named(tmp_path, mode, text):
    (tmp_path / "by_hand.py").write_text(BY_HAND)
    raw = smp_raw(tmp_path, random_trace(12, 200, vms=2, threads=3), 4, [3, 2],
                  machine={"scheduler": {"name": "by-hand", "mode": mode}})
    raw["experiment"]["plugins"] = [str(tmp_path / "by_hand.py")]
    with pytest.raises(PluginError) as info:
        run(raw)
    assert str(info.value).startswith("scheduler 'by-hand' ") and text in str(info.value)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_home_a_scheduler_yields_runs_or_is_named(data):
    """Fuzz: whatever ``home`` a scheduler yields (any shape, dtype or values), the core
    places by it or refuses it in one PluginError naming the scheduler."""
    ctx = SmpContext(cores=data.draw(st.integers(1, 4)), vcpus=tuple(data.draw(st.lists(st.integers(1, 3),
                                                                                         min_size=1, max_size=3))))
    kind = data.draw(st.sampled_from(["ints", "floats", "2d", "list", "bools"]))
    n = data.draw(st.one_of(st.just(ctx.total_vcpus), st.integers(0, 8)))
    values = data.draw(st.lists(st.integers(-2, 5), min_size=n, max_size=n))
    home = {"ints": lambda: np.array(values, dtype=np.int64), "floats": lambda: np.array(values, dtype=float),
            "2d": lambda: np.array(values, dtype=np.int32).reshape(1, -1), "list": lambda: values,
            "bools": lambda: np.array(values, dtype=bool)}[kind]()
    trace = np.zeros(5, dtype=TRACE_DTYPE)
    trace["vm"] = np.arange(5) % len(ctx.vcpus)
    trace["thread"] = np.arange(5)

    class Scheduler:
        def schedule(self, chunks):
            for chunk in chunks:
                yield Placed(chunk, home=home)

    try:
        placed = list(placed_chunks(Scheduler(), [trace], ctx, "fuzzed"))
    except PluginError as exc:
        assert str(exc).startswith("scheduler 'fuzzed' ") and "\n" not in str(exc)
        return
    got = placed[0].home
    assert len(values) == ctx.total_vcpus and got.tolist() == values and ((got >= 0) & (got < ctx.cores)).all()
    _, core = by_rule(placed[0].records, ctx.vcpus, got)
    assert ((core >= 0) & (core < ctx.cores)).all()
