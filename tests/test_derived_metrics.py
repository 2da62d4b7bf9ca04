"""Derived metrics (slatframe/derived.py): each equals its ratio computed here by hand from
a real run's raw counters, and instructions and accesses from the trace itself; a result
or sweep folder written before derived metrics existed reads with them; ``slatframe
plot`` takes them by name, and an unknown name is one sentence of close matches."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import slatframe
from slatframe.cli import main
from slatframe.derived import with_derived
from slatframe.gather import gather
from slatframe.testing import tiny_config
from slatframe.trace import CONTEXT_SWITCH, IFETCH, READ, TRACE_DTYPE, WRITE
from tiny_files import call, to_toml

VMS = ("app", "db")
CODE, DATA = 0x40_0000, 1 << 30


def split_trace(seed: int, n: int = 4000) -> np.ndarray:
    """Two VMs in bursts, three address spaces each, 40% instruction fetches over 24 code
    pages and reads and writes over 200 data pages, with explicit context switches."""
    rng = np.random.default_rng(seed)
    t = np.zeros(n, dtype=TRACE_DTYPE)
    vm = asid = 0
    for i in range(n):
        if rng.random() < 0.02:
            vm = 1 - vm
        if rng.random() < 0.01:
            asid = int(rng.integers(0, 3))
            t[i] = (vm, asid, CONTEXT_SWITCH, asid, 0)
            continue
        if rng.random() < 0.4:
            t[i] = (vm, asid, IFETCH, CODE + (int(rng.integers(0, 24)) << 12) + 4 * int(rng.integers(0, 1024)), 0)
        else:
            op = WRITE if rng.random() < 0.3 else READ
            t[i] = (vm, asid, op, DATA + (asid << 24) + (int(rng.zipf(1.2)) % 200 << 12) + 8, 0)
    return t


def config(tmp_path: Path, trace: np.ndarray, levels: list[dict[str, Any]]) -> dict[str, Any]:
    np.savez(tmp_path / "t.npz", **{k: trace[k] for k in ("vm", "asid", "op", "vaddr")})
    return tiny_config(experiment={"name": "derived", "seed": 1, "engine": "reference", "per_asid": True},
                       machine={"slat": "intel-ept", "host_memory": "4G"}, tlb={"levels": levels},
                       walk_caches=[{"type": "psc", "level": 2}, {"type": "psc", "level": 3, "dimension": "host"}],
                       vms=[{"name": name, "memory": "1G"} for name in VMS],
                       workload={"source": "npz", "path": str(tmp_path / "t.npz")})


SPLIT = [{"name": "l1i", "sets": 4, "ways": 4, "side": "instruction"},
         {"name": "l1d", "sets": 4, "ways": 4, "side": "data", "latency": 2},
         {"name": "l2", "sets": 16, "ways": 8, "latency": 9}]
DATA_FIRST = [{"name": "l1d", "sets": 4, "ways": 4, "side": "data"}, {"name": "l2", "sets": 16, "ways": 8}]
UNIFIED = [{"name": "l1", "sets": 4, "ways": 4}, {"name": "l2", "sets": 16, "ways": 8}]


def by_hand(m: dict[str, Any], levels: list[str], accesses: int, instructions: int | None) -> dict[str, float]:
    """The derived metrics of one scope, from its raw counters (and the trace's counts)."""
    out = {}
    if m["walks"]:
        out["derived.refs_per_walk"] = m["walk.refs"] / m["walks"]
        out["derived.refs_per_walk_guest"] = m["walk.refs_guest"] / m["walks"]
        out["derived.refs_per_walk_host"] = m["walk.refs_host"] / m["walks"]
    if instructions:
        out["derived.instructions"] = instructions
    for name in levels:
        hits, misses = m[f"tlb.{name}.hits"], m[f"tlb.{name}.misses"]
        if hits + misses:
            out[f"derived.tlb.{name}.hit_rate"] = hits / (hits + misses)
        if accesses:
            out[f"derived.tlb.{name}.mpka"] = 1000 * misses / accesses
        if instructions:
            out[f"derived.tlb.{name}.mpki"] = 1000 * misses / instructions
    last = levels[-1]
    if accesses:
        out["derived.mpka"] = 1000 * m[f"tlb.{last}.misses"] / accesses
        out["derived.vm_exits_pka"] = 1000 * m["vm_exits"] / accesses
        for key in [k for k in m if k.startswith("vm_exits.")]:
            out[f"derived.vm_exits_pka.{key[9:]}"] = 1000 * m[key] / accesses
        out["derived.translation_cycles_per_access"] = m["cycles.translation"] / accesses
    if instructions:
        out["derived.mpki"] = 1000 * m[f"tlb.{last}.misses"] / instructions
        out["derived.cycles_per_instruction"] = m["cycles.total"] / instructions
    for cache in ("psc-guest-l2", "psc-host-l3"):
        hits, misses = m.get(f"walk_cache.{cache}.hits", 0), m.get(f"walk_cache.{cache}.misses", 0)
        if hits + misses:
            out[f"derived.walk_cache.{cache}.hit_rate"] = hits / (hits + misses)
    return out


def scope_of(m: dict[str, Any], head: str) -> dict[str, Any]:
    return {k[len(head):]: v for k, v in m.items() if k.startswith(head)} if head else \
        {k: v for k, v in m.items() if not k.startswith(("vm.", "between_records."))}


@pytest.mark.parametrize("levels, instructions_known", [(SPLIT, True), (DATA_FIRST, True), (UNIFIED, False)])
def test_derived_metrics_are_the_ratios_of_the_raw_counters(tmp_path, levels, instructions_known):
    trace = split_trace(seed=4)
    m = slatframe.run(config(tmp_path, trace, levels)).metrics
    names = [lv["name"] for lv in levels]
    access = trace["op"] < CONTEXT_SWITCH
    scopes = {"": np.ones(len(trace), bool)}
    for v, name in enumerate(VMS):
        scopes[f"vm.{name}."] = trace["vm"] == v
        for asid in range(3):
            scopes[f"vm.{name}.asid.{asid}."] = (trace["vm"] == v) & (trace["asid"] == asid)
    for head, mine in scopes.items():
        own = scope_of(m, head)
        if not own:
            continue  # an address space that never ran
        accesses = int(np.count_nonzero(access & mine))
        fetches = int(np.count_nonzero((trace["op"] == IFETCH) & mine)) if instructions_known else None
        assert own["accesses"] == accesses
        want = by_hand({k: v for k, v in own.items() if not k.startswith("derived.")}, names, accesses, fetches)
        got = {k: v for k, v in own.items() if k.startswith("derived.")}
        assert got == pytest.approx(want, rel=1e-12), head
        assert set(got) == set(want), head
    assert ("derived.mpki" in m) == instructions_known
    assert m["derived.refs_per_walk_host"] > 0 and m["derived.vm_exits_pka.ept_violation"] > 0
    assert m["derived.walk_cache.psc-guest-l2.hit_rate"] > 0


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep")
    raw = tiny_config(experiment={"name": "s", "seed": 1, "engine": "reference"},
                      machine={"slat": "intel-ept", "host_memory": "4G"},
                      workload={"source": "synthetic", "accesses": 2000, "footprint": "2M"})
    (folder / "s.toml").write_text(to_toml(raw) + '\n[sweep.axes]\n"tlb.levels[0].sets" = [1, 4, 16]\n')
    assert main(["sweep", str(folder / "s.toml"), "--out", str(folder / "out"), "--quiet"]) == 0
    return folder / "out"


def old_style(folder: Path, into: Path) -> Path:
    """A copy of a sweep folder as written before derived metrics: none in its point files,
    and its table rebuilt without them."""
    shutil.copytree(folder, into)
    for point in (into / "points").glob("*.json"):
        data = json.loads(point.read_text())
        data["metrics"] = {k: v for k, v in data["metrics"].items() if "derived." not in k}
        point.write_text(json.dumps(data))
    lines = (into / "results.csv").read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, name in enumerate(header) if "derived." not in name]
    (into / "results.csv").write_text("\n".join(",".join(line.split(",")[i] for i in keep) for line in lines) + "\n")
    (into / "results.parquet").unlink(missing_ok=True)
    return into


def records(table: Any) -> list[dict[str, Any]]:
    return table.to_dict("records") if hasattr(table, "to_dict") else table


def test_results_written_before_derived_metrics_read_with_them(sweep_dir, tmp_path):
    old = old_style(sweep_dir, tmp_path / "old")
    assert "derived." not in (old / "results.csv").read_text()
    new_rows, old_rows = records(slatframe.load_results(sweep_dir)), records(slatframe.load_results(old))
    assert new_rows == old_rows and "derived.mpka" in new_rows[0]
    for row in gather(old):  # by hand, from the point file's counters
        point = json.loads((old / "points" / f"{row.point}.json").read_text())
        m = point["metrics"]
        assert row.metrics["derived.mpka"] == 1000 * m["tlb.l1.misses"] / m["accesses"]
        assert row.metrics["derived.refs_per_walk"] == m["walk.refs"] / m["walks"]
        assert row.metrics["vm.vm0.derived.tlb.l1.hit_rate"] == \
            m["vm.vm0.tlb.l1.hits"] / (m["vm.vm0.tlb.l1.hits"] + m["vm.vm0.tlb.l1.misses"])
    one = next((old / "points").glob("*.json"))
    new_one = json.loads((sweep_dir / "points" / one.name).read_text())
    assert records(slatframe.load_results(one)) == [{"name": new_one["name"], "engine": new_one["engine"],
                                                     **new_one["metrics"]}]
    # slatframe recost gives an old folder its derived metrics too, as a run writes them now
    assert main(["recost", str(old), "--out", str(tmp_path / "upgraded"), "--quiet"]) == 0
    assert (tmp_path / "upgraded" / "results.csv").read_text() == (sweep_dir / "results.csv").read_text()


def test_the_report_shows_derived_metrics_of_an_old_result(sweep_dir, tmp_path):
    old = old_style(sweep_dir, tmp_path / "old")
    point = next((old / "points").glob("*.json"))
    assert main(["report", str(point), "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    new = json.loads((sweep_dir / "points" / point.name).read_text())["metrics"]
    assert f'data-metric="derived.mpka"><td>derived.mpka</td><td class="num" data-value="{new["derived.mpka"]!r}"' \
        in html


def test_with_derived_replaces_what_a_file_holds():
    m = {"accesses": 10, "walks": 4, "walk.refs": 10, "derived.refs_per_walk": 99.0, "vm.a.accesses": 0,
         "vm.a.walks": 0, "vm.a.walk.refs": 0, "vm.a.derived.refs_per_walk": 1.0}
    got = with_derived(m, {"vms": [{"name": "a"}], "tlb": {"levels": "not a list"}})
    assert got["derived.refs_per_walk"] == 2.5 and "vm.a.derived.refs_per_walk" not in got  # 0 walks: none
    assert with_derived({"walks": "many", "walk.refs": 3}, None) == {"walks": "many", "walk.refs": 3}




def test_plot_takes_derived_metrics_and_names_close_matches(sweep_dir, tmp_path):
    pytest.importorskip("matplotlib")
    from slatframe.plot import load_rows, plot_xy

    old = old_style(sweep_dir, tmp_path / "old")
    for folder in (sweep_dir, old, old / "results.csv"):
        fig = plot_xy(load_rows([folder]), "tlb.levels[0].sets", "derived.mpka", None, tmp_path / "f.png")
        (xs, ys), = [(list(line.get_xdata()), list(line.get_ydata())) for line in fig.axes[0].lines]
        rows = sorted(gather(sweep_dir), key=lambda r: r.cells["tlb.levels[0].sets"])
        assert xs == [1, 4, 16] and ys == [r.metrics["derived.mpka"] for r in rows]
    # a table without its folder: what its columns give (the per-level figures, not the last level's)
    alone = tmp_path / "alone.csv"
    shutil.copyfile(old / "results.csv", alone)
    assert "derived.tlb.l1.mpka" in load_rows([alone])[0]
    code, _, err = call(["plot", str(sweep_dir), "--x", "derived.refs_per_walk", "--y", "derived.tlb.l1.mpka",
                         "--out", str(tmp_path / "x.png")])
    assert code == 0, err
    code, _, err = call(["plot", str(sweep_dir), "--x", "tlb.levels[0].sets", "--y", "derived.refs_per_wlak",
                         "--out", str(tmp_path / "y.png")])
    assert code == 2 and err.count("\n") == 1
    assert "no column 'derived.refs_per_wlak'; close matches: derived.refs_per_walk" in err
    assert "walk.ad_writes" not in err and not (tmp_path / "y.png").exists()
    code, _, err = call(["plot", str(sweep_dir), "--x", "tlb.levels[0].sets", "--y", "zzzz",
                         "--out", str(tmp_path / "z.png")])
    assert code == 2 and "no column has a close name" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def one_result(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("one") / "r.json"
    raw = tiny_config(experiment={"name": "r", "seed": 1, "engine": "reference"},
                      workload={"source": "synthetic", "accesses": 1000, "footprint": "1M"})
    path.write_text(slatframe.run(raw).to_json())
    return path


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.text(max_size=40), st.sampled_from(["derived.mpka", "derived.refs_per_walk", "derived.",
                                                        "derived.tlb.l1.hit_rate", "cycles.total", "derived.mpki",
                                                        "tlb.levels[0].sets", "-", "--out"])))
def test_fuzz_plot_y_names(one_result, tmp_path_factory, name):
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("plot") / "p.png"
    code, _, err = call(["plot", str(one_result), "--x", "tlb.levels[0].sets", f"--y={name}", "--out", str(out)])
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2 and not err.startswith("usage:"):
        assert err.count("\n") == 1 and err.startswith("slatframe: error: "), err
    columns = load_columns(one_result)
    assert (code == 0) == (name in columns), err


def load_columns(path: Path) -> set[str]:
    from slatframe.plot import load_rows

    return set(load_rows([path])[0])
