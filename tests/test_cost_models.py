"""Cost models: the cache-aware model's hit levels against a brute-force cache model fed
with the addresses the walker really read, presets, and every cycle figure recomputed
from a result file without the cost-model code."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slatframe.cli import main
from slatframe.counters import Counters
from slatframe.engine.reference import NO_HPA, ReferenceEngine
from slatframe.errors import ConfigError
from slatframe.machine import build_machine
from slatframe.testing import assert_engines_agree, build, tiny_config
from slatframe.trace import TRACE_DTYPE, WRITE

from naive import BruteForceCaches, LoggingMemory

SMALL_CACHES = {"l1d_size": "1K", "l1d_ways": 2, "l2_size": "4K", "l2_ways": 4, "llc_size": "16K", "llc_ways": 4}


def trace_of(n, pages, seed, writes=0.2):
    rng = np.random.default_rng(seed)
    t = np.zeros(n, dtype=TRACE_DTYPE)
    t["vaddr"] = (rng.zipf(1.3, n) % pages).astype(np.uint64) * np.uint64(4096) + \
        rng.integers(0, 64, n).astype(np.uint64) * np.uint64(64) + np.uint64(1 << 32)
    t["op"][rng.random(n) < writes] = WRITE
    return t


def cache_config(slat, data_accesses, walk_caches=()):
    return build(tiny_config(machine={"slat": slat, "host_memory": "4G"},
                             walk_caches=list(walk_caches),
                             cost={"model": "cache-aware", "data_accesses": data_accesses, **SMALL_CACHES}))


@pytest.mark.parametrize("slat,data_accesses,walk_caches", [
    ("native", True, []), ("intel-ept", False, []), ("amd-npt", True, [{"type": "pwc"}]),
    ("shadow", True, [])])
def test_hit_levels_match_a_brute_force_cache_model(slat, data_accesses, walk_caches):
    """Run record by record, log the addresses the walker read (and each access's hPA);
    a brute-force LRU hierarchy over that stream gives the counts the engines report."""
    config, registry = cache_config(slat, data_accesses, walk_caches)
    trace = trace_of(3000, 3000, seed=len(slat))
    counters = Counters()
    machine = build_machine(config, registry, counters)
    logged = machine.walker.memory = LoggingMemory(machine.walker.memory)
    engine = ReferenceEngine(machine)
    brute = BruteForceCaches([(1024, 2), (4096, 4), (16384, 4)])
    expected = {f"dcache.{kind}.{level}": 0 for kind in ("walk", "data") for level in ("l1d", "l2", "llc", "memory")}
    names = ("l1d", "l2", "llc", "memory")
    hpa = np.zeros(1, dtype=np.uint64)
    for i in range(len(trace)):
        logged.log.clear()
        engine.run_chunk(trace[i:i + 1], hpa)
        for pa in logged.log:
            expected[f"dcache.walk.{names[brute.access(pa)]}"] += 1
        if data_accesses and hpa[0] != NO_HPA:
            expected[f"dcache.data.{names[brute.access(int(hpa[0]))]}"] += 1
    got = {k: counters.values.get(k, 0) for k in expected}
    assert got == expected
    assert sum(expected[f"dcache.walk.{n}"] for n in names) == \
        counters.values["walk.refs"] + counters.values["walk.refs_aborted"]
    assert all(expected[f"dcache.walk.{n}"] > 0 for n in names)  # every level serves some
    compiled = assert_engines_agree(config, registry, trace, chunk_size=700)
    assert {k: compiled.get(k, 0) for k in expected} == expected


def test_presets_fill_unwritten_keys_and_written_keys_win():
    config, _ = build(tiny_config(cost={"model": "cache-aware", "preset": "amd-server", "l2_latency": 20}))
    o = config.cost.options
    assert (o.preset, o.l2_latency, o.l2_size, o.llc_size, o.vm_exit) == ("amd-server", 20, 512 << 10, 4 << 20, 1360)
    fixed, _ = build(tiny_config(cost={"model": "fixed", "preset": "intel-server"}))
    assert (fixed.cost.options.vm_exit, fixed.cost.options.walk_ref) == (1529, 14)
    with pytest.raises(ConfigError, match=r"cost.preset = 'arm' is not allowed"):
        build(tiny_config(cost={"model": "fixed", "preset": "arm"}))
    with pytest.raises(ConfigError, match=r"cost.preset = a list is not allowed: cost model 'fixed' has presets"):
        build(tiny_config(cost={"model": "fixed", "preset": ["amd-server"]}))


def test_overrides_below_a_plugin_named_by_a_string_use_its_name_key(tmp_path):
    """``cost = "cache-aware"`` plus ``--set cost.preset=...`` keeps the model (its table's
    name key is ``model``), as ``walk_caches = ["pwc"]`` plus ``walk_caches[0].ways`` keeps
    the type."""
    from slatframe.config import load_config

    path = tmp_path / "c.toml"
    path.write_text('walk_caches = ["pwc"]\ncost = "cache-aware"\n'
                    '[[tlb.levels]]\nname = "l1"\nsets = 4\nways = 2\n[workload]\nsource = "synthetic"\n')
    config, _ = load_config(path, ["cost.preset=amd-server", "cost.l2_latency=16", "walk_caches[0].ways=8"])
    assert (config.cost.name, config.cost.options.preset, config.cost.options.l2_latency) == \
        ("cache-aware", "amd-server", 16)
    assert (config.walk_caches[0].name, config.walk_caches[0].options.ways) == ("pwc", 8)


def test_presets_are_checked_when_a_plugin_registers(tmp_path):
    from slatframe.errors import PluginError
    from slatframe.testing import build as build_raw

    plugin = tmp_path / "p.py"
    plugin.write_text(
        "import attrs\nfrom slatframe import hookimpl\nfrom slatframe.options import option\n"
        "from slatframe.records import CostModelRecord\n"
        "@attrs.frozen\nclass O:\n    preset: str = option('')\n    a: int = option(1)\n"
        "@hookimpl\ndef slatframe_cost_models():\n"
        "    return [CostModelRecord(name='odd', summary='s', factory=O, options=O, presets={'x': {'b': 2}})]\n")
    with pytest.raises(PluginError, match=r"preset 'x' of cost model 'odd' sets 'b', which is not one of its options"):
        build_raw(tiny_config(experiment={"name": "t", "plugins": ["p.py"]}), base_dir=tmp_path)


def test_cache_aware_cycles_recompute_from_the_result(tmp_path):
    """Every cycle figure of the cache-aware model recomputed from the result file alone."""
    out = tmp_path / "r.json"
    example = Path(__file__).resolve().parents[1] / "examples" / "quickstart.toml"
    assert main(["run", str(example), "--out", str(out), "--quiet", "--set", "workload.accesses=20000",
                 "--set", "machine.slat=intel-ept", "--set", "cost={model='cache-aware', preset='amd-server'}"]) == 0
    result = json.loads(out.read_text())
    m, cfg = result["metrics"], result["config"]
    cost = cfg["cost"]
    latency = {"l1d": cost["l1d_latency"], "l2": cost["l2_latency"], "llc": cost["llc_latency"],
               "memory": cost["memory_latency"]}
    walk = sum(m[f"dcache.walk.{k}"] * v for k, v in latency.items())
    access = sum(m[f"dcache.data.{k}"] * v for k, v in latency.items())
    tlb = sum((m[f"tlb.{lv['name']}.hits"] + m[f"tlb.{lv['name']}.misses"]) * lv["latency"]
              for lv in cfg["tlb"]["levels"])
    exits = m["vm_exits"] * cost["vm_exit"]
    faults = m["faults.guest"] * cost["guest_fault"] + m["faults.host"] * cost["host_fault"]
    assert m["dcache.walk.memory"] > 0 and m["dcache.walk.l2"] > 0 and exits > 0
    assert (m["cycles.walk"], m["cycles.access"], m["cycles.tlb"], m["cycles.vm_exit"], m["cycles.fault"]) == \
        (walk, access, tlb, exits, faults)
    assert m["cycles.translation"] == tlb + walk + exits + faults
    assert m["cycles.total"] == tlb + walk + exits + faults + access
    assert m["translation_overhead"] == pytest.approx((tlb + walk + exits + faults) / m["cycles.total"])


def test_exit_work_by_reason_recomputes_from_the_result(tmp_path):
    """Each exit costs the round trip plus its reason's listed work; the per-reason
    figures add up to cycles.vm_exit."""
    out = tmp_path / "r.json"
    example = Path(__file__).resolve().parents[1] / "examples" / "forkwait.toml"
    assert main(["run", str(example), "--out", str(out), "--quiet", "--set", "workload.forks=10",
                 "--set", "machine.slat='shadow'", "--set",
                 "cost={model='fixed', exit_work=[{reason='pt_write', cycles=2000}, {reason='page_fault', cycles=700}]}"
                 ]) == 0
    result = json.loads(out.read_text())
    m, trip = result["metrics"], result["config"]["cost"]["vm_exit"]
    work = {"pt_write": 2000, "page_fault": 700}
    reasons = [k[len("vm_exits."):] for k in m if k.startswith("vm_exits.")]
    assert {"pt_write", "page_fault", "cr3_write"} <= set(reasons)
    for reason in reasons:
        assert m[f"cycles.vm_exit.{reason}"] == m[f"vm_exits.{reason}"] * (trip + work.get(reason, 0))
    assert m["cycles.vm_exit"] == sum(m[f"cycles.vm_exit.{r}"] for r in reasons) == \
        m["vm_exits"] * trip + m["vm_exits.pt_write"] * 2000 + m["vm_exits.page_fault"] * 700


@pytest.mark.parametrize("model", ["fixed", "cache-aware"])
def test_access_overlap_divides_only_the_data_accesses(model, tmp_path):
    """With access_overlap = 8.91, cycles.access is the data accesses' cycles / 8.91 in
    whole cycles; translation is not divided."""
    runs = {}
    for overlap in (1.0, 8.91):
        out = tmp_path / f"{overlap}.json"
        example = Path(__file__).resolve().parents[1] / "examples" / "quickstart.toml"
        assert main(["run", str(example), "--out", str(out), "--quiet", "--set", "workload.accesses=5000",
                     "--set", f"cost={{model='{model}', access_overlap={overlap}}}"]) == 0
        runs[overlap] = json.loads(out.read_text())["metrics"]
    serial, overlapped = runs[1.0], runs[8.91]
    assert overlapped["cycles.access"] == round(serial["cycles.access"] / 8.91)
    assert overlapped["cycles.translation"] == serial["cycles.translation"] > 0
    assert overlapped["cycles.total"] == overlapped["cycles.translation"] + overlapped["cycles.access"]


@pytest.mark.slow
def test_calibration_script_measures_an_overlap(capsys):
    """examples/calibrate_overlap.py end to end (gcc, valgrind, a few timed runs)."""
    import importlib.util
    import shutil

    if not (shutil.which("gcc") and shutil.which("valgrind")):
        pytest.skip("needs gcc and valgrind")
    path = Path(__file__).resolve().parents[1] / "examples" / "calibrate_overlap.py"
    spec = importlib.util.spec_from_file_location("calibrate_overlap", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--runs", "5", "--ghz", "2.0"]) == 0
    row = capsys.readouterr().out.splitlines()[2].split()
    assert int(row[0].replace(",", "")) > 10_000_000 and float(row[-1]) > 1


@pytest.mark.parametrize("work,sentence", [
    ([{"reason": "pt_write", "cycles": 1}, {"reason": "pt_write", "cycles": 2}],
     r"cost\.exit_work = .* is not allowed: each exit reason at most once; 'pt_write' is given 2 times"),
    ([{"reason": "pt write", "cycles": 1}], r"cost\.exit_work\[0\]\.reason = 'pt write' is not allowed"),
    ([{"reason": "pt_write", "cycles": -1}], r"cost\.exit_work\[0\]\.cycles"),
])
def test_exit_work_is_checked(work, sentence):
    with pytest.raises(ConfigError, match=sentence):
        build(tiny_config(cost={"model": "fixed", "exit_work": work}))


@pytest.mark.parametrize("model", ["fixed", "cache-aware"])
def test_an_exit_reason_no_scheme_counts_is_refused_with_a_close_match(registry, model):
    """It would never be charged: 'pt_wirte' was accepted and cost nothing."""
    raw = tiny_config(machine={"slat": "shadow"}, cost={"model": model, "exit_work": [
        {"reason": "pt_write", "cycles": 5}, {"reason": "pt_wirte", "cycles": 5000}]})
    with pytest.raises(ConfigError, match=r"cost\.exit_work\[1\]\.reason = 'pt_wirte' is not allowed: neither a "
                                          r"registered SLAT scheme nor the core counts exits of that reason \(did you "
                                          r"mean 'pt_write'\?\); the reasons counted are cr3_write, ept_violation, "
                                          r".*pt_write, remote_flush\."):
        build(raw, registry)


def test_a_reason_of_another_registered_scheme_is_allowed(registry):
    """One config sweeps machine.slat: shadow's reasons are allowed under intel-ept (they
    count 0 there), and each scheme's reasons are those its translator counts."""
    config, _ = build(tiny_config(machine={"slat": "intel-ept"}, cost={"model": "fixed", "exit_work": [
        {"reason": "pt_write", "cycles": 5}, {"reason": "npf", "cycles": 5}]}), registry)
    assert [w.reason for w in config.cost.options.exit_work] == ["pt_write", "npf"]
    schemes = registry.records["SLAT schemes"]
    assert schemes["intel-ept"].record.exit_reasons == ("ept_violation",)
    assert schemes["native"].record.exit_reasons == ()


def test_the_exit_reasons_a_scheme_declares_are_those_it_counts(registry):
    """Every vm_exits.<reason> counted by runs that exercise each scheme's exits (faults,
    page-table writes, CR3 loads, INVLPG, hypercalls) is one its record declares."""
    from slatframe.engine import run_experiment

    churn = {"source": "sessions", "accesses": 3000, "processes": 3, "working_set": "256K", "churn_rate": 0.05}
    for slat, options in (("shadow", {}), ("shadow", {"enlightened": True}), ("intel-ept", {}),
                          ("amd-npt", {}), ("native", {})):
        raw = tiny_config(machine={"slat": {"name": slat, **options}}, workload=churn)
        metrics = run_experiment(*build(raw, registry), engine="reference").metrics
        counted = {k[len("vm_exits."):] for k, v in metrics.items() if k.startswith("vm_exits.") and v}
        assert counted <= set(registry.get("SLAT schemes", slat).exit_reasons), (slat, counted)
        assert counted or slat == "native"


@pytest.mark.parametrize("size,ways,ok", [(64, 8, False), (256, 8, False), (512, 8, True), ("32K", 1000, False),
                                         ("1536", 2, True), ("1408K", 11, True)])
def test_a_cache_size_is_a_whole_number_of_sets(registry, size, ways, ok):
    """64, 256 and 512 bytes with 8 ways all became one 512-byte set; 32K with 1,000 ways
    became 62.5K. Only whole sets of ways x 64-byte lines are allowed."""
    raw = tiny_config(cost={"model": "cache-aware", "l1d_size": size, "l1d_ways": ways})
    if ok:
        config, _ = build(raw, registry)
        spec = config.cost.options.spec()
        assert spec.levels[0].sets * ways * 64 == config.cost.options.l1d_size
        return
    with pytest.raises(ConfigError, match=rf"cost\.l1d_size = .* is not allowed: a cache of {ways} ways "
                                          rf"\(cost\.l1d_ways\) of 64-byte lines holds a whole number of sets"):
        build(raw, registry)


def test_consolidation_recomputes_from_the_result(tmp_path):
    """Sessions by CPU and by memory recomputed by hand from the result file."""
    out = tmp_path / "r.json"
    example = Path(__file__).resolve().parents[1] / "examples" / "rds-consolidation.toml"
    assert main(["run", str(example), "--out", str(out), "--quiet", "--set", "machine.slat=shadow",
                 "--set", "experiment.warmup=20000", "--set", "workload.accesses=60000",
                 "--set", "workload.switch_every=1000", "--set", "consolidation.session_memory='2G'",
                 "--set", "consolidation.run_sessions=4"]) == 0
    result = json.loads(out.read_text())
    m, c = result["metrics"], result["config"]["consolidation"]
    per_access = m["cycles.total"] / m["accesses"] + c["work_per_access"]
    cores = c["session_accesses_per_s"] * per_access / (c["core_ghz"] * 1e9)
    by_cpu = int(c["cores"] * c["cpu_target"] // cores)
    tables = m["shadow.table_bytes.peak"] / 4  # the shadow tables' peak, shared by the run's 4 sessions
    assert tables > 0 and m["consolidation.table_bytes_per_session"] == tables
    by_memory = int((c["memory"] - c["reserved_memory"]) // (c["session_memory"] + tables))
    assert m["consolidation.cpu_per_session"] == pytest.approx(cores)
    assert (m["consolidation.cpu_limit"], m["consolidation.memory_limit"]) == (by_cpu, by_memory)
    assert m["consolidation.sessions"] == min(by_cpu, by_memory)
    assert m["consolidation.binding"] == ("cpu" if by_cpu <= by_memory else "memory")
    assert m["vm_exits.cr3_write"] > 0  # shadow paging's switches were counted


@pytest.mark.parametrize("engine", ["reference", "compiled"])
def test_warmup_counts_only_the_records_after_it(engine):
    """The counters of a run with a warmup equal the difference of the counters of one
    machine before and after the warmup's records; its gauges (the second-level tables'
    bytes) keep their level."""
    from slatframe.engine import make_engine, run_experiment

    raw = tiny_config(experiment={"name": "w", "seed": 3, "engine": engine, "chunk_size": 1000, "warmup": 2500},
                      machine={"slat": "intel-ept"},
                      workload={"source": "sessions", "processes": 4, "working_set": "512K", "accesses": 8000,
                                "switch_every": 700, "churn_rate": 0.01})
    config, registry = build(raw)
    result = run_experiment(config, registry)
    counters = Counters()
    runner = make_engine(engine, build_machine(config, registry, counters), registry)
    from slatframe.engine import workload_chunks
    trace = np.concatenate(list(workload_chunks(config, registry)))
    runner.run_chunk(trace[:2500])
    before = dict(counters.values)
    runner.run_chunk(trace[2500:])
    gauges = set(counters.levels) | {f"{name}.peak" for name in counters.levels}
    assert "slat.table_bytes" in gauges
    after = {k: v - before.get(k, 0) for k, v in counters.values.items() if k != "walk.refs_max" and k not in gauges}
    assert after["faults.guest"] < before["faults.guest"]  # the warmup took the first touches
    assert {k: v for k, v in after.items() if v} == \
        {k: result.metrics[k] for k in after if after[k]}
    for name in gauges:  # never freed: the level at the end is the peak
        assert result.metrics[name] == counters.values["slat.table_bytes"] > before["slat.table_bytes"]


def test_consolidation_and_warmup_inputs_are_checked_before_the_run():
    consolidation = {"cores": 4, "core_ghz": 2.0, "memory": "8G", "reserved_memory": "8G",
                     "session_accesses_per_s": 1e6, "work_per_access": 1.0, "session_memory": "1G"}
    with pytest.raises(ConfigError, match=r"consolidation.reserved_memory = '8G' is not allowed: it must be less"):
        build(tiny_config(consolidation=consolidation))
    with pytest.raises(ConfigError, match=r"experiment.warmup = 500 is not allowed: the workload has 500 accesses"):
        build(tiny_config(experiment={"name": "w", "warmup": 500},
                          workload={"source": "synthetic", "accesses": 500}))
