"""The walk-trace observer: both tiers record the same walks, the recorded references
add up to the walk counters, and each reference is the entry a walk of the tables in
simulated memory reads."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import slatframe
from slatframe.engine import run_machine
from slatframe.errors import ConfigError, SlatframeError
from slatframe.testing import build, churn_trace, tiny_config
from slatframe.walk_record import load_walk_trace

ROOT = Path(__file__).resolve().parent.parent
ONE_ENTRY = {"levels": [{"name": "l1", "sets": 1, "ways": 1}]}
CACHES_2D = [{"type": "psc", "level": 3}, {"type": "psc", "level": 2, "dimension": "host"},
             {"type": "pwc", "ways": 16}, {"type": "nested-tlb", "ways": 16}]


def traced(tmp_path: Path, slat: str, engine: str, name: str = "w.npz", caches=(), limit=100_000, every=1,
           seed=3, n=2500):
    trace = churn_trace(seed, n=n)
    np.savez(tmp_path / "t.npz", **{k: trace[k] for k in ("vm", "asid", "op", "vaddr")})
    raw = tiny_config(experiment={"name": "wt", "engine": engine, "chunk_size": 333,
                                  "observers": [{"name": "walk-trace", "path": str(tmp_path / name),
                                                 "limit": limit, "every": every}]},
                      machine={"slat": slat, "host_memory": "4G"}, tlb=ONE_ENTRY, walk_caches=list(caches),
                      workload={"source": "npz", "path": str(tmp_path / "t.npz")})
    result, machine = run_machine(*build(raw))
    return result.metrics, load_walk_trace(tmp_path / name), machine


@pytest.mark.parametrize("slat,caches", [("native", []), ("native", [{"type": "psc", "level": 2}]),
                                         ("intel-ept", []), ("intel-ept", CACHES_2D), ("shadow", [])])
def test_every_walk_recorded_alike_in_both_tiers_and_adding_up_to_the_counters(tmp_path, slat, caches):
    m, ref, _ = traced(tmp_path, slat, "reference", "r.npz", caches)
    comp_m, comp, _ = traced(tmp_path, slat, "compiled", "c.npz", caches)
    for name in ref.walks.dtype.names:
        assert np.array_equal(ref.walks[name], comp.walks[name]), name
    for name in ref.refs.dtype.names:
        assert np.array_equal(ref.refs[name], comp.refs[name]), name
    assert ref.seen == comp.seen == len(ref.walks) == m["walks"] + m["walk.aborted"]
    done, aborted = ref.walks["fault"] == 0, ref.walks["fault"] != 0
    assert np.count_nonzero(done) == m["walks"] and np.count_nonzero(aborted) == m["walk.aborted"]
    memory = ~ref.refs["cached"]
    walk_of = ref.refs["walk"]
    assert np.count_nonzero(memory & done[walk_of]) == m["walk.refs"]
    assert np.count_nonzero(memory & aborted[walk_of]) == m["walk.refs_aborted"]
    assert np.count_nonzero(memory & done[walk_of] & (ref.refs["dim"] == 1)) == m["walk.refs_host"]
    hits = sum(v for k, v in m.items() if k.startswith("walk_cache.") and k.endswith(".hits"))
    assert int(ref.walks["cache_hits"].sum()) == hits
    if caches == CACHES_2D:
        assert ref.refs["cached"].any() and hits > 0
    assert np.array_equal(np.sort(ref.walks["record"]), ref.walks["record"])  # in trace order


def test_a_2d_walk_without_caches_reads_24_entries_in_order(tmp_path):
    m, t, _ = traced(tmp_path, "intel-ept", "compiled")
    done = np.flatnonzero(t.walks["fault"] == 0)
    assert len(done) == m["walks"] > 0
    for i in done[:50]:
        refs = t.references(i)
        # five host walks (levels 4..1), each but the last followed by a guest entry (levels 4..1)
        expected = [(level, 1) for level in (4, 3, 2, 1)]
        expected_all = []
        for guest_level in (4, 3, 2, 1):
            expected_all += expected + [(guest_level, 0)]
        expected_all += expected
        assert list(zip(refs["level"].tolist(), refs["dim"].tolist())) == expected_all


def test_native_references_are_the_entries_of_the_tables_in_memory(tmp_path):
    """Re-walk the final tables with the format: the recorded addresses are the entries
    read (the last walk of each page: the trace unmaps some pages, so earlier walks of a
    page may have read tables since freed)."""
    _, t, machine = traced(tmp_path, "native", "compiled")
    hw = machine.translator.hw
    fmt, memory = hw.guest_format, machine.context.host
    last = {}
    for i in np.flatnonzero(t.walks["fault"] == 0):
        last[(int(t.walks["asid"][i]), int(t.walks["va"][i]) >> 12)] = i
    checked = 0
    for (asid, _), i in last.items():
        va, table = int(t.walks["va"][i]), hw.guest_roots.get(0, asid)
        walked = []
        for level in range(fmt.levels, 0, -1):
            pa = fmt.entry_address(table, va, level)
            walked.append(pa)
            entry = fmt.load(memory, pa)
            if not fmt.is_present(entry) or fmt.is_leaf(entry, level):
                break
            table = fmt.frame(entry, level)
        if fmt.is_present(entry) and walked == t.references(i)["pa"].tolist():
            checked += 1
    assert checked >= 0.9 * len(last) > 0  # (a page unmapped and not touched again walks to nothing now)


def test_limit_and_every_sample_the_same_walks(tmp_path):
    _, whole, _ = traced(tmp_path, "intel-ept", "reference", "all.npz")
    _, some, _ = traced(tmp_path, "intel-ept", "compiled", "some.npz", limit=40, every=7)
    assert len(some.walks) == 40 and some.seen == whole.seen
    picked = whole.walks[::7][:40]
    for name in ("record", "va", "fault", "result", "refs", "cache_hits"):
        assert np.array_equal(some.walks[name], picked[name]), name
    assert np.array_equal(some.references(39)["pa"], whole.references(39 * 7)["pa"])


def test_parquet_holds_the_same_walks(tmp_path):
    pytest.importorskip("pyarrow")
    _, npz, _ = traced(tmp_path, "intel-ept", "compiled", "w.npz", CACHES_2D, limit=500)
    _, parquet, _ = traced(tmp_path, "intel-ept", "compiled", "w.parquet", CACHES_2D, limit=500)
    for name in npz.walks.dtype.names:
        assert np.array_equal(npz.walks[name], parquet.walks[name]), name
    for name in npz.refs.dtype.names:
        assert np.array_equal(npz.refs[name], parquet.refs[name]), name


@pytest.mark.parametrize("options,expected", [
    ({"path": "w.txt"}, "experiment.observers[0].path = 'w.txt' is not allowed: the file name ends in .npz or .parquet"),
    ({"path": "w.npz", "every": 0}, "experiment.observers[0].every = 0 is not allowed"),
    ({"path": "w.npz", "limit": 0}, "experiment.observers[0].limit = 0 is not allowed"),
    ({"path": "."}, "is not allowed: it is a folder"),
])
def test_bad_options_are_one_sentence(tmp_path, options, expected):
    raw = tiny_config(experiment={"name": "wt", "observers": [{"name": "walk-trace", **options}]})
    with pytest.raises(ConfigError) as err:
        build(raw, base_dir=tmp_path)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_path_no_file_can_be_written_at_is_refused_before_the_run(tmp_path):
    """Refused when the config is built, not when the run ends (its walks lost); a
    folder that does not exist yet is made by the run."""
    (tmp_path / "afile").write_text("x")
    for path, expected in ((tmp_path / "afile" / "w.npz", f"{tmp_path / 'afile'} is a file, not a folder"),
                           (Path("/proc/w.npz"), "no file can be created in /proc (the system says: ")):
        raw = tiny_config(experiment={"name": "wt", "observers": [{"name": "walk-trace", "path": str(path)}]})
        with pytest.raises(ConfigError) as err:
            build(raw, base_dir=tmp_path)
        assert expected in str(err.value) and "\n" not in str(err.value)
    raw = tiny_config(experiment={"name": "wt", "observers": [{"name": "walk-trace", "path": "new/dir/w.npz"}]})
    build(raw, base_dir=tmp_path)
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_walk_plugin_is_refused_in_one_sentence(tmp_path):
    raw = tiny_config(experiment={"name": "wt", "plugins": [str(ROOT / "examples/plugins/hashed_paging.py")],
                                  "observers": [{"name": "walk-trace", "path": str(tmp_path / "w.npz")}]},
                      machine={"slat": {"name": "hashed"}, "host_memory": "4G"})
    with pytest.raises(ConfigError, match="only the radix walk does: SLAT scheme 'hashed' walks with"):
        slatframe.run(raw, engine="reference")
    assert not (tmp_path / "w.npz").exists()


def test_two_samplings_are_refused(tmp_path):
    observers = [{"name": "walk-trace", "path": str(tmp_path / "a.npz")},
                 {"name": "walk-trace", "path": str(tmp_path / "b.npz"), "every": 2}]
    with pytest.raises(ConfigError, match="sampled in 2 different ways"):
        slatframe.run(tiny_config(experiment={"name": "wt", "observers": observers}), engine="reference")


def test_the_tutorial_draws_a_2d_walk(tmp_path):
    pytest.importorskip("matplotlib")
    import importlib.util

    spec = importlib.util.spec_from_file_location("draw_2d_walk", ROOT / "examples/draw_2d_walk.py")
    draw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(draw)
    _, t, _ = traced(tmp_path, "intel-ept", "reference", limit=200)
    index = draw.longest_walk(t)
    cells = draw.grid_cells(t.references(index), host_levels=4)
    # the 5 x 5 grid less its corner: guest entries in the last column, host walks before them
    assert sorted((row, column) for row, column, _, _ in cells) == \
        sorted({(r, c) for r in range(5) for c in range(5)} - {(4, 4)})
    assert draw.main([str(tmp_path / "w.npz"), "--out", str(tmp_path / "walk.png")]) == 0
    assert (tmp_path / "walk.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_api_observer_gets_the_walks_the_file_holds(tmp_path):
    from slatframe.walk_record import WalkSampling

    class Walks:
        walk_sampling = WalkSampling(limit=300, every=2)

        def walks(self, trace):
            self.trace = trace

    seen = Walks()
    raw = tiny_config(experiment={"name": "wt", "observers": [{"name": "walk-trace", "path": str(tmp_path / "w.npz"),
                                                               "limit": 300, "every": 2}]},
                      machine={"slat": "intel-ept"}, workload={"source": "synthetic", "accesses": 3000,
                                                               "footprint": "4M"})
    slatframe.run(raw, engine="compiled", observers=[seen])
    on_file = load_walk_trace(tmp_path / "w.npz")
    assert len(seen.trace.walks) == 300 and seen.trace.seen == on_file.seen
    assert np.array_equal(seen.trace.walks, on_file.walks) and np.array_equal(seen.trace.refs, on_file.refs)


VALID = st.sampled_from(["w.npz", "w.parquet"])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.one_of(VALID, VALID, VALID, st.text(max_size=12)),
       options=st.fixed_dictionaries({}, optional={
           "limit": st.one_of(st.integers(-2, 10**8), st.integers(1, 50), st.floats(), st.text(max_size=3)),
           "every": st.one_of(st.integers(-2, 50), st.integers(1, 5), st.booleans(), st.none()),
           "extra": st.integers()}))
def test_fuzz_walk_trace_options_run_or_stop_with_one_sentence(tmp_path_factory, path, options):
    """Any walk-trace table: the run writes its file, or one ConfigError sentence, never a traceback."""
    folder = tmp_path_factory.mktemp("wt")
    raw = tiny_config(experiment={"name": "wt", "observers": [{"name": "walk-trace", "path": str(folder / path),
                                                               **options}]},
                      workload={"source": "synthetic", "accesses": 200, "footprint": "64K"})
    try:
        slatframe.run(raw, engine="reference")
    except SlatframeError as exc:
        assert "\n" not in str(exc) and str(exc).endswith("."), str(exc)
        return
    trace = load_walk_trace(folder / path)
    assert 0 < len(trace.walks) <= options.get("limit", 10_000) and trace.seen > 0


def test_each_sweep_point_writes_its_own_walk_trace_under_the_sweep_folder(tmp_path):
    """Every point wrote the same file beside the config, the last one winning, and each
    result named it. Now each point's file is points/<hash>.<name>, holding that point's
    walks: as many as its own counters say, and the same walks as a run of that point alone."""
    import json

    from slatframe.cli import main

    trace = churn_trace(5, n=1500)
    np.savez(tmp_path / "t.npz", **{k: trace[k] for k in ("vm", "asid", "op", "vaddr")})
    (tmp_path / "s.toml").write_text("""
[experiment]
name = "wt"
engine = "reference"
observers = [{name = "walk-trace", path = "walks.npz"}]
[machine]
slat = "intel-ept"
[[tlb.levels]]
name = "l1"
sets = 1
ways = 1
[workload]
source = "npz"
path = "t.npz"
[sweep.axes]
"tlb.levels[0].ways" = [1, 4]
""")
    assert main(["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert not (tmp_path / "walks.npz").exists()
    seen = []
    for result_file in sorted((tmp_path / "out" / "points").glob("*.json")):
        result = json.loads(result_file.read_text())
        observer = result["config"]["experiment"]["observers"][0]
        assert observer["path"] == str(result_file.with_suffix(".walks.npz"))
        walks = load_walk_trace(observer["path"])
        m = result["metrics"]
        assert len(walks.walks) == m["walks"] + m["walk.aborted"]
        seen.append(len(walks.walks))
        observer["path"] = str(tmp_path / "alone.npz")
        run_machine(*build(result["config"], base_dir=tmp_path))
        alone = load_walk_trace(tmp_path / "alone.npz")
        assert all(np.array_equal(alone.walks[k], walks.walks[k]) for k in walks.walks.dtype.names)
    assert len(seen) == 2 and seen[0] != seen[1]
