"""slatframe recost: a result (or a sweep folder) re-costed from its saved counters equals,
metric by metric, a run made with those costs: totals, per VM and per address space,
between records, consolidation and derived figures, for the fixed and cache-aware models,
presets and exit work. What would need another run is refused in one sentence."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import slatframe
from slatframe.gather import gather
from tiny_files import call, to_toml

#: Two VMs (one running three processes), a walk cache, KSM (work between records), exit
#: work, a consolidation table and per-address-space metrics: every kind of figure a
#: result holds. Reference engine, 5,000 accesses.
BASE: dict[str, Any] = {
    "experiment": {"name": "recost", "seed": 3, "engine": "reference", "per_asid": True},
    "machine": {"slat": "intel-ept", "host_memory": "4G"},
    "tlb": {"levels": [{"name": "l1d", "sets": 4, "ways": 4, "latency": 1},
                       {"name": "l2", "sets": 16, "ways": 8, "latency": 9}]},
    "walk_caches": [{"type": "psc", "level": 2}],
    "vms": [{"name": "web", "memory": "256M", "content": {"zero_fraction": 0.5}}, {"name": "db", "memory": "256M"}],
    "workload": {"source": "mix", "slice": 500, "parts": [
        {"workload": {"source": "sessions", "processes": 3, "working_set": "256K", "accesses": 3000,
                      "switch_every": 300}, "vm": 0},
        {"workload": {"source": "synthetic", "accesses": 2000, "footprint": "1M"}, "vm": 1}]},
    "dedup": {"strategy": "ksm", "sleep": 1000, "pages_to_scan": 2000},
    "cost": {"model": "fixed", "exit_work": [{"reason": "ept_violation", "cycles": 700}]},
    "consolidation": {"cores": 16, "core_ghz": 2.1, "memory": "128G", "session_accesses_per_s": 2.5e7,
                      "work_per_access": 3.0, "session_memory": "150M", "run_sessions": 4},
}

#: name -> (the run's [cost] table, the re-cost's overrides)
CASES = {
    "fixed": ({"model": "fixed", "exit_work": [{"reason": "ept_violation", "cycles": 700}]},
              {"cost.vm_exit": 2000, "cost.walk_ref": 30, "cost.guest_fault": 5000, "cost.scan_page": 1000,
               "cost.exit_work": [{"reason": "ept_violation", "cycles": 50}],
               "consolidation.work_per_access": 10.0, "consolidation.cores": 64, "tlb.levels[1].latency": 5}),
    # a preset switch keeps what was written apart from the preset (access_overlap, exit work)
    "fixed-preset": ({"model": "fixed", "preset": "intel-server", "access_overlap": 3.0,
                      "exit_work": [{"reason": "ept_violation", "cycles": 700}]},
                     {"cost.preset": "amd-server"}),
    "cache-aware": ({"model": "cache-aware", "preset": "intel-server", "exit_work": [{"reason": "ept_violation",
                                                                                      "cycles": 700}]},
                    {"cost.l2_latency": 20, "cost.memory_latency": 300, "cost.access_overlap": 2.5,
                     "cost.vm_exit": 1800, "consolidation.session_memory": "1G"}),
    # a model that reads no data-cache counters may take over; the run's dcache.* go with the old model
    "cache-aware-to-fixed": ({"model": "cache-aware", "access_overlap": 2.0},
                             {"cost.model": "fixed", "cost.walk_ref": 20}),
}


def config(cost: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["cost"] = copy.deepcopy(cost)
    return raw




def one_sentence(code: int, err: str) -> str:
    assert code == 2 and err.startswith("slatframe: error: ") and err.count("\n") == 1, (code, err)
    assert "Traceback" not in err
    return err


def set_args(sets: dict[str, Any]) -> list[str]:
    return [a for key, value in sets.items() for a in ("--set", f"{key}={slatframe.api.toml_value(value)}")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Each case's run, written as ``slatframe run --out`` writes it."""
    folder = tmp_path_factory.mktemp("runs")
    out = {}
    for name, (cost, _) in CASES.items():
        out[name] = folder / f"{name}.json"
        out[name].write_text(slatframe.run(config(cost)).to_json())
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_a_recost_equals_a_run_with_those_costs(runs, tmp_path, case):
    cost, sets = CASES[case]
    before = json.loads(runs[case].read_text())
    out = tmp_path / "recosted.json"
    code, _, err = call(["recost", str(runs[case]), *set_args(sets), "--out", str(out), "--quiet"])
    assert code == 0, err
    got = json.loads(out.read_text())
    fresh = slatframe.run(config(cost), set=sets).to_dict()  # the same costs, simulated again
    assert got["metrics"] == fresh["metrics"]
    assert list(got["metrics"]) == list(fresh["metrics"])  # in the run's order too
    assert got["config"] == fresh["config"]
    assert {k: got[k] for k in ("name", "seed", "engine", "version", "series", "warnings")} == \
        {k: before[k] for k in ("name", "seed", "engine", "version", "series", "warnings")}
    assert got["recosted"] == {"source": str(runs[case].resolve()),
                               "set": [f"{k}={slatframe.api.toml_value(v)}" for k, v in sets.items()],
                               "version": slatframe.__version__}
    # not vacuous: every kind of figure is there, and the costs moved the cycle figures of every scope
    m, old = got["metrics"], before["metrics"]
    for scope in ("", "vm.web.", "vm.db.", "vm.web.asid.0.", "vm.web.asid.2.", "vm.db.asid.0."):
        assert f"{scope}cycles.total" in m and f"{scope}derived.refs_per_walk" in m, scope
    assert m["between_records.dedup.pages_scanned"] > 0 and "between_records.cycles.total" in m
    for key in ("cycles.total", "vm.web.cycles.total", "vm.db.cycles.total", "vm.web.asid.1.cycles.total",
                "consolidation.cpu_per_session", "derived.translation_cycles_per_access",
                "vm.db.derived.translation_cycles_per_access"):
        assert m[key] != old[key], key
    if case == "fixed":  # the KSM scan's cost
        assert any(m[k] != old[k] for k in m if k.startswith("between_records.cycles."))
    if case == "cache-aware-to-fixed":
        assert not any(k.startswith("dcache.") or ".dcache." in k for k in m)
        assert old["dcache.walk.l1d"] > 0


def test_recosting_again_and_from_python(runs, tmp_path):
    """A re-costed result re-costs again as the run would (it records the chain), and the
    Python API gives the same result, writing nothing without ``out``."""
    first, second = {"cost.vm_exit": 3000}, {"cost.walk_ref": 7, "consolidation.cpu_target": 0.5}
    once = slatframe.recost(runs["fixed"], set=first)
    assert not list(tmp_path.iterdir())
    assert isinstance(once, slatframe.results.Result) and once.recosted["set"] == ["cost.vm_exit=3000"]
    path = tmp_path / "once.json"
    slatframe.recost(runs["fixed"], set=first, out=path)
    assert json.loads(path.read_text()) == once.to_dict()
    twice = slatframe.recost(path, set=second)
    fresh = slatframe.run(config(CASES["fixed"][0]), set={**first, **second})
    assert twice.metrics == fresh.metrics and twice.config == fresh.to_dict()["config"]
    assert twice.recosted["previous"] == once.recosted and twice.recosted["source"] == str(path.resolve())
    # nothing changed: the same figures (a result written before derived metrics gets them)
    same = slatframe.recost(runs["fixed"])
    assert same.metrics == json.loads(runs["fixed"].read_text())["metrics"]
    old = json.loads(runs["fixed"].read_text())
    old["metrics"] = {k: v for k, v in old["metrics"].items() if "derived." not in k}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert slatframe.recost(tmp_path / "old.json").metrics == same.metrics


def test_a_consolidation_table_can_be_added(tmp_path):
    raw = config({"model": "fixed"})
    table = raw.pop("consolidation")
    path = tmp_path / "plain.json"
    path.write_text(slatframe.run(raw).to_json())
    got = slatframe.recost(path, set={"consolidation": table})
    assert got.metrics == slatframe.run(raw, set={"consolidation": table}).metrics
    assert got.metrics["consolidation.sessions"] > 0
    # a table needs its required keys, as in a config file
    err = one_sentence(*call(["recost", str(path), "--set", "consolidation.cores=4", "--out",
                              str(tmp_path / "r.json")])[::2])
    assert "consolidation.core_ghz is required" in err


REFUSED = [
    ({"machine.slat": "shadow"}, r"machine.slat is not allowed in a re-cost"),
    ({"tlb.levels[0].sets": 8}, r"tlb.levels\[0\].sets is not allowed in a re-cost"),
    ({"workload.accesses": 10}, r"workload.accesses is not allowed in a re-cost"),
    ({"cost.vm_exits": 10}, r"cost.vm_exits is not a known key; allowed keys here: preset, access, vm_exit"),
    ({"cost.vm_exit": -1}, r"cost.vm_exit = -1 is not allowed: the minimum is 0"),
    ({"cost.vm_exit": "fast"}, r"cost.vm_exit = 'fast' is not allowed: expected an integer"),
    ({"cost.preset": "arm-server"}, r"cost.preset = 'arm-server' is not allowed"),
    ({"consolidation.reserved_memory": "256G"}, r"consolidation.reserved_memory = '256G' is not allowed: it must "
                                                r"be less than consolidation.memory"),
    ({"tlb.levels[5].latency": 1}, r"index \[5\] does not exist in the config"),
    ({"cost.model": "cache-aware"}, r"cost.model = 'cache-aware' charges references at the data-cache level that "
                                    r"served them, .* this run had cost.model = 'fixed', which counts none; run it "
                                    r"again with --set cost.model=cache-aware"),
]


@pytest.mark.parametrize("sets, message", REFUSED)
def test_what_needs_another_run_is_one_sentence(runs, tmp_path, sets, message):
    out = tmp_path / "r.json"
    err = one_sentence(*call(["recost", str(runs["fixed"]), *set_args(sets), "--out", str(out)])[::2])
    assert re.search(message, err), err
    assert not out.exists()


def test_data_caches_keep_the_geometry_the_run_counted(runs, tmp_path):
    err = one_sentence(*call(["recost", str(runs["cache-aware"]), "--set", "cost.l2_size='512K'",
                              "--out", str(tmp_path / "r.json")])[::2])
    assert "the new costs change the data caches the run counted (it ran through l1d 32K 8-way, l2 1M 16-way, " \
           "llc 1408K 11-way, with data accesses; the new costs ask for l1d 32K 8-way, l2 512K 16-way," in err
    # a preset that moves the caches (amd-server's L2 and LLC) is refused; its latencies alone are not
    one_sentence(*call(["recost", str(runs["cache-aware"]), "--set", "cost.preset=amd-server",
                        "--out", str(tmp_path / "r.json")])[::2])
    assert call(["recost", str(runs["cache-aware"]), "--set", "cost.llc_latency=40", "--out",
                 str(tmp_path / "r.json"), "--quiet"])[0] == 0


def test_an_edited_or_foreign_result_is_refused(runs, tmp_path):
    data = json.loads(runs["fixed"].read_text())
    data["metrics"]["vm.web.asid.1.cycles.walk"] += 1
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    err = one_sentence(*call(["recost", str(edited), "--out", str(tmp_path / "r.json")])[::2])
    assert 'metrics["vm.web.asid.1.cycles.walk"] is' in err and "cannot be re-costed exactly" in err
    for text in ("not json", json.dumps({"rows": []})):
        edited.write_text(text)
        one_sentence(*call(["recost", str(edited), "--out", str(tmp_path / "r.json")])[::2])
    assert not (tmp_path / "r.json").exists()


def test_a_recosted_result_reads_as_a_result(runs, tmp_path):
    """The report and load_results take a re-costed result with its consolidation figures
    (a name among the numbers: consolidation.binding)."""
    out = tmp_path / "r.json"
    assert call(["recost", str(runs["fixed"]), "--set", "consolidation.cores=2", "--out", str(out), "--quiet"])[0] == 0
    data = json.loads(out.read_text())
    code, _, err = call(["report", str(out), "--out", str(tmp_path / "r.html")])
    assert code == 0, err
    binding = data["metrics"]["consolidation.binding"]
    assert binding in ("cpu", "memory")
    assert f'<td>consolidation.binding</td><td data-text="{binding}">{binding}</td>' in \
        (tmp_path / "r.html").read_text()
    row = slatframe.load_results(out)
    row = row.to_dict("records")[0] if hasattr(row, "to_dict") else row[0]
    assert {k: row[k] for k in data["metrics"]} == data["metrics"]


def test_the_input_is_never_overwritten(runs, tmp_path):
    before = runs["fixed"].read_bytes()
    err = one_sentence(*call(["recost", str(runs["fixed"]), "--set", "cost.vm_exit=1", "--out",
                              str(runs["fixed"])])[::2])
    assert "is the input itself" in err and runs["fixed"].read_bytes() == before


SWEEP = """
[sweep]
mode = "zip"

[sweep.axes]
"machine.slat" = ["native", "intel-ept", "shadow"]
"tlb.levels[0].sets" = [2, 4, 8]
"""


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep")
    raw = config({"model": "fixed"})
    del raw["dedup"]  # not under native
    raw["workload"] = {"source": "sessions", "processes": 2, "working_set": "256K", "accesses": 2000,
                       "switch_every": 250}
    (folder / "s.toml").write_text(to_toml(raw) + SWEEP)
    assert call(["sweep", str(folder / "s.toml"), "--out", str(folder / "out"), "--quiet"])[0] == 0
    return folder


def test_a_sweep_folder_recosts_as_a_sweep_with_those_costs(sweep_dir, tmp_path):
    sets = {"cost.vm_exit": 5000, "consolidation.work_per_access": 1.5}
    out = tmp_path / "recosted"
    code, stdout, err = call(["recost", str(sweep_dir / "out"), *set_args(sets), "--out", str(out)])
    assert code == 0, err
    assert "3 points re-costed, 0 without a result" in stdout
    fresh = tmp_path / "fresh"
    assert call(["sweep", str(sweep_dir / "s.toml"), *set_args(sets), "--out", str(fresh), "--quiet"])[0] == 0
    assert (out / "results.csv").read_text() == (fresh / "results.csv").read_text()
    assert [r.metrics for r in gather(out)] == [r.metrics for r in gather(fresh)]
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["recosted"]["set"] == ["cost.vm_exit=5000", "consolidation.work_per_access=1.5"]
    assert manifest["points"] == json.loads((sweep_dir / "out" / "sweep.json").read_text())["points"]
    for entry in manifest["points"]:  # each point is the re-cost of its file
        point = sweep_dir / "out" / "points" / f"{entry['point']}.json"
        assert json.loads((out / "points" / point.name).read_text()) == slatframe.recost(point, set=sets).to_dict()
    # in memory: the table load_results gives of the sweep with those costs (but the points' hashes)
    table, want = slatframe.recost(sweep_dir / "out", set=sets), slatframe.load_results(fresh)
    if hasattr(table, "drop"):
        assert table.drop(columns="point").equals(want.drop(columns="point"))
    else:
        assert [{k: v for k, v in r.items() if k != "point"} for r in table] == \
            [{k: v for k, v in r.items() if k != "point"} for r in want]
    # a folder that holds files already, or the input itself, is refused
    for target in (out, sweep_dir / "out"):
        one_sentence(*call(["recost", str(sweep_dir / "out"), "--out", str(target)])[::2])
    with pytest.raises(slatframe.errors.SlatframeError, match="has no sweep.json"):
        slatframe.recost(tmp_path, set=sets)


def test_a_point_without_a_result_stays_one(sweep_dir, tmp_path):
    source = tmp_path / "partial"
    source.mkdir()
    (source / "points").mkdir()
    manifest = json.loads((sweep_dir / "out" / "sweep.json").read_text())
    (source / "sweep.json").write_text(json.dumps(manifest))
    first, second = (e["point"] for e in manifest["points"][:2])
    (source / "points" / f"{first}.json").write_bytes((sweep_dir / "out" / "points" / f"{first}.json").read_bytes())
    (source / "points" / f"{second}.error.txt").write_text("it failed\n")
    code, stdout, err = call(["recost", str(source), "--set", "cost.access=5", "--out", str(tmp_path / "o")])
    assert code == 0, err
    assert "1 points re-costed, 2 without a result" in stdout
    assert (tmp_path / "o" / "points" / f"{second}.error.txt").read_text() == "it failed\n"
    assert [r.error for r in gather(tmp_path / "o")] == [None, "it failed", "not run"]


# -- fuzz: whatever --set says, one sentence or a re-costed result -------------------------

COST_KEYS = ["cost.vm_exit", "cost.walk_ref", "cost.access_overlap", "cost.exit_work", "cost.preset", "cost.model",
             "cost.access", "cost.scan_page", "cost", "cost.l2_latency", "cost.nope", "consolidation.cores",
             "consolidation.core_ghz", "consolidation.memory", "consolidation.run_sessions", "consolidation",
             "consolidation.work_per_access", "tlb.levels[0].latency", "tlb.levels[9].latency", "tlb.levels[0].ways",
             "machine.slat", "cost.exit_work[0].cycles", "vms[0].memory", "cost..x", "[cost]", ""]
VALUES = st.one_of(
    st.integers(min_value=-(1 << 70), max_value=1 << 70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["fixed", "cache-aware", "intel-server", "amd-server", "'4G'", "true", "[]", "{}", "nan", "inf",
                     "[{reason='ept_violation', cycles=5}]", "[{reason='x', cycles=-1}]", "{model='fixed'}",
                     "{cores=1}", "1979-05-27", "'", "[1,", "\"\\u0000\""]),
    st.text(max_size=30))


#: overrides a re-cost takes: integer costs and consolidation values in range
GOOD = st.tuples(st.sampled_from(["cost.vm_exit", "cost.walk_ref", "cost.access", "cost.scan_page",
                                  "consolidation.run_sessions", "consolidation.cores", "tlb.levels[1].latency"]),
                 st.integers(min_value=1, max_value=1 << 20).map(str))
ANY = st.tuples(st.sampled_from(COST_KEYS) | st.text(max_size=20), VALUES)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(GOOD | ANY, min_size=1, max_size=3))
def test_fuzz_recost_set_values(runs, tmp_path_factory, pairs):
    out = tmp_path_factory.mktemp("fuzz") / "r.json"
    texts = [f"{key}={value}" for key, value in pairs]
    code, _, err = call(["recost", str(runs["fixed"]), *[a for t in texts for a in ("--set", t)], "--out", str(out),
                         "--quiet"])
    assert code in (0, 2), err
    assert "Traceback" not in err
    event(f"exit {code}")
    if code == 2:
        if not err.startswith("usage:"):  # argparse's own: usage and one error line
            assert err.count("\n") == 1 and err.startswith("slatframe: error: "), err
        assert not out.exists()
    else:
        data = json.loads(out.read_text())
        assert data["recosted"]["set"] == texts
        assert slatframe.recost(out).metrics == data["metrics"]  # and it re-costs again to itself


JUNK = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(1 << 70), max_value=1 << 70),
                 st.floats(allow_nan=False), st.text(max_size=8), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzz_recost_input_files(runs, tmp_path_factory, data):
    """A result file changed here and there (a metric or a config value dropped or of
    another type): one sentence or a re-cost, never a traceback."""
    result = json.loads(runs["fixed"].read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        node = result  # down to a table of the result, its metrics, its config or a config section
        for _ in range(data.draw(st.integers(0, 2))):
            tables = sorted(k for k, v in node.items() if isinstance(v, dict) and v)
            if not tables:
                break
            node = node[data.draw(st.sampled_from(tables))]
        key = data.draw(st.sampled_from(sorted(node)))
        if data.draw(st.booleans()):
            del node[key]
        else:
            node[key] = data.draw(JUNK)
    folder = tmp_path_factory.mktemp("mutated")
    (folder / "r.json").write_text(json.dumps(result))
    code, _, err = call(["recost", str(folder / "r.json"), "--set", "cost.vm_exit=1234", "--out",
                         str(folder / "o.json"), "--quiet"])
    event(f"exit {code}")
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("slatframe: error: "), err
