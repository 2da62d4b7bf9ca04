"""Parameter sweeps: axes, executors, resume, failures, the gathered table, progress."""
from __future__ import annotations

import copy
import csv
import io
import json
import sys
from pathlib import Path

import pytest

from slatframe.cli import main
from slatframe.config import config_from_dict, tomllib
from slatframe.engine import run_experiment
from slatframe.errors import ConfigError
from slatframe.gather import csv_text, gather
from slatframe.progress import Progress, RunProgress, render
from slatframe.sweeps import config_hash, input_stamps, plan_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
[experiment]
name = "sweep-test"
seed = 1
engine = "reference"

[machine]
slat = "native"
host_memory = "8G"

[[tlb.levels]]
name = "l1"
sets = 4
ways = 2
page_sizes = ["4K", "2M", "1G"]

[[vms]]
name = "vm0"
memory = "4G"

[workload]
source = "synthetic"
distribution = "uniform"
accesses = 1500
footprint = "8M"
"""

# 2 schemes x 3 page sizes x 4 TLB sizes
AXES_24 = """
[sweep.axes]
"machine.slat" = ["native", "intel-ept"]
"vms[0].guest_page_size" = ["4K", "2M", "1G"]
"tlb.levels[0].sets" = [1, 2, 4, 8]
"""
AXES_6 = """
[sweep.axes]
"machine.slat" = ["native", "intel-ept"]
"vms[0].guest_page_size" = ["4K", "2M", "1G"]
"""


def sweep_file(tmp_path: Path, sweep: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(BASE + "\n[sweep]\n" + sweep)
    return path


def direct_metrics(edits: dict[tuple, object]) -> dict:
    """Run the base config with ``edits`` (key path tuple -> value) set by hand."""
    raw = tomllib.loads(BASE)
    for keys, value in edits.items():
        node = raw
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = copy.deepcopy(value)
    config, registry = config_from_dict(raw)
    return run_experiment(config, registry).metrics


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def assert_row_matches(row: dict[str, str], metrics: dict) -> None:
    for name, value in metrics.items():
        assert row[name] == str(value), name


# -- axes ----------------------------------------------------------------------------


def test_product_expands_every_combination_first_axis_slowest(tmp_path):
    path = sweep_file(tmp_path, 'mode = "product"\n' + AXES_24)
    plan = plan_sweep(path)
    slats, sizes, sets = ["native", "intel-ept"], ["4K", "2M", "1G"], [1, 2, 4, 8]
    assert len(plan.points) == len(slats) * len(sizes) * len(sets)
    expected = [(a, b, c) for a in slats for b in sizes for c in sets]
    for point, (slat, size, n) in zip(plan.points, expected):
        assert point.error is None
        assert dict(point.cells) == {"machine.slat": slat, "vms[0].guest_page_size": size,
                                     "tlb.levels[0].sets": n}
        assert point.raw["machine"]["slat"] == slat
        assert point.raw["vms"][0]["guest_page_size"] == size
        assert point.raw["tlb"]["levels"][0]["sets"] == n
        assert "sweep" not in point.raw
    assert len({p.hash for p in plan.points}) == len(plan.points)


def test_zip_pairs_values_and_identical_configs_share_a_hash(tmp_path):
    path = sweep_file(tmp_path, 'mode = "zip"\n[sweep.axes]\n"workload.footprint" = ["1M", 1048576, "2M"]\n'
                                '"tlb.levels[0].ways" = [2, 2, 4]\n')
    plan = plan_sweep(path)
    assert [dict(p.cells) for p in plan.points] == [
        {"workload.footprint": "1M", "tlb.levels[0].ways": 2},
        {"workload.footprint": 1048576, "tlb.levels[0].ways": 2},
        {"workload.footprint": "2M", "tlb.levels[0].ways": 4}]
    # "1M" and 1048576 resolve to the same config: one result file for both
    assert plan.points[0].hash == plan.points[1].hash != plan.points[2].hash
    config, _ = config_from_dict(plan.points[2].raw)
    assert plan.points[2].hash == config_hash({**config.to_dict(), "inputs": input_stamps([], config)})


def test_an_edited_plugin_file_changes_every_point_hash(tmp_path):
    """A resumed sweep must not reuse results computed with the plugin's old code."""
    plugin = tmp_path / "lfu.py"
    plugin.write_text((Path(__file__).resolve().parents[1] / "examples/plugins/lfu_policy.py").read_text())
    path = sweep_file(tmp_path, '[sweep.axes]\n"tlb.levels[0].ways" = [2, 4]\n')
    text = path.read_text().replace('[experiment]\n', '[experiment]\nplugins = ["lfu.py"]\n', 1)
    assert text != path.read_text()
    path.write_text(text)
    before = [p.hash for p in plan_sweep(path).points]
    plugin.write_text(plugin.read_text() + "\n# edited\n")
    after = [p.hash for p in plan_sweep(path).points]
    assert len(set(before)) == 2 and not set(before) & set(after)


def test_zip_with_unequal_lengths_is_one_sentence_naming_file_and_axes(tmp_path, capsys):
    path = sweep_file(tmp_path, 'mode = "zip"\n[sweep.axes]\n"machine.slat" = ["native", "shadow"]\n'
                                '"tlb.levels[0].sets" = [1, 2, 4]\n')
    with pytest.raises(ConfigError) as info:
        plan_sweep(path)
    message = str(info.value)
    assert str(path) in message and "machine.slat" in message and "tlb.levels[0].sets" in message
    assert message.endswith(".") and "\n" not in message
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_bare_dotted_keys_and_labels(tmp_path):
    path = sweep_file(tmp_path, '[sweep.axes]\nmachine.slat = ["native", "shadow"]\n'
                                '[sweep.labels]\nmachine.slat = ["bare metal", "shadow paging"]\n')
    plan = plan_sweep(path)
    assert [p.raw["machine"]["slat"] for p in plan.points] == ["native", "shadow"]
    assert [dict(p.cells)["machine.slat"] for p in plan.points] == ["bare metal", "shadow paging"]


# -- executors give one table ----------------------------------------------------------


def test_24_points_serial_and_two_processes_give_the_same_table(tmp_path):
    path = sweep_file(tmp_path, AXES_24)
    assert main(["sweep", str(path), "--out", str(tmp_path / "serial"), "--quiet"]) == 0
    assert main(["sweep", str(path), "--out", str(tmp_path / "jobs2"), "--jobs", "2", "--quiet"]) == 0
    serial = (tmp_path / "serial" / "results.csv").read_text()
    assert (tmp_path / "jobs2" / "results.csv").read_text() == serial
    rows = read_csv(tmp_path / "serial" / "results.csv")
    assert len(rows) == 24
    header = next(csv.reader(io.StringIO(serial)))
    assert header[:3] == ["machine.slat", "vms[0].guest_page_size", "tlb.levels[0].sets"]
    assert header[3:] == sorted(header[3:])
    for row in rows:
        metrics = direct_metrics({("machine", "slat"): row["machine.slat"],
                                  ("vms", 0, "guest_page_size"): row["vms[0].guest_page_size"],
                                  ("tlb", "levels", 0, "sets"): int(row["tlb.levels[0].sets"])})
        assert_row_matches(row, metrics)


def test_plugin_files_resolve_relative_to_the_config_in_the_workers(tmp_path, monkeypatch):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "lfu.py").write_text((ROOT / "examples/plugins/lfu_policy.py").read_text())
    path = tmp_path / "sweep.toml"
    path.write_text(BASE.replace('engine = "reference"', 'engine = "reference"\nplugins = ["plugins/lfu.py"]')
                    + '\n[sweep.axes]\n"tlb.levels[0].policy" = ["lru", "lfu"]\n')
    monkeypatch.chdir(ROOT)  # not the config's folder
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--jobs", "2", "--quiet"]) == 0
    rows = read_csv(tmp_path / "out" / "results.csv")
    raw = tomllib.loads(path.read_text())
    raw.pop("sweep")
    raw["tlb"]["levels"][0]["policy"] = "lfu"
    config, registry = config_from_dict(raw, base_dir=tmp_path)
    assert rows[1]["tlb.levels[0].policy"] == "lfu"
    assert_row_matches(rows[1], run_experiment(config, registry).metrics)


def test_resume_runs_only_the_missing_points(tmp_path):
    path = sweep_file(tmp_path, '[sweep.axes]\n"machine.slat" = ["native", "intel-ept", "shadow"]\n'
                                '"tlb.levels[0].ways" = [1, 2]\n')
    out = tmp_path / "out"
    first = run_sweep(plan_sweep(path), out)
    assert (first.ran, first.skipped, first.failed) == (6, 0, 0)
    table = (out / "results.csv").read_text()
    files = sorted((out / "points").glob("*.json"))
    removed = files[1], files[4]
    for f in removed:
        f.unlink()
    kept = {f: f.stat().st_mtime_ns for f in files if f not in removed}
    again = run_sweep(plan_sweep(path), out)
    assert (again.ran, again.skipped, again.failed) == (2, 4, 0)
    assert all(f.stat().st_mtime_ns == t for f, t in kept.items())
    assert all(f.exists() for f in removed)
    assert (out / "results.csv").read_text() == table
    assert csv_text(gather(out)) == table  # the gather alone gives the same table


def test_a_killed_sweep_resumes_with_only_the_missing_points(tmp_path):
    """Kill a real `slatframe sweep` process once some points are written, rerun it: the
    rerun runs exactly the points that had no result, and the table is the one an
    uninterrupted sweep gives."""
    import subprocess
    import time

    path = sweep_file(tmp_path, '[sweep.axes]\n"tlb.levels[0].sets" = [1, 2, 4, 8, 16, 32]\n'
                                '"workload.accesses" = [20000, 20001]\n')
    out = tmp_path / "out"
    command = [sys.executable, "-m", "slatframe.cli", "sweep", str(path), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(command)
    deadline = time.monotonic() + 300
    while len(list((out / "points").glob("*.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = {f.name for f in (out / "points").glob("*.json")}
    assert 3 <= len(done) < 12, "the sweep finished before it could be killed"
    again = run_sweep(plan_sweep(path), out)
    assert (again.ran, again.skipped, again.failed) == (12 - len(done), len(done), 0)
    assert run_sweep(plan_sweep(path), tmp_path / "whole").ran == 12
    assert (out / "results.csv").read_text() == (tmp_path / "whole" / "results.csv").read_text()


def test_failing_points_are_reported_and_the_others_finish(tmp_path, capsys):
    path = sweep_file(tmp_path, '[sweep.axes]\n"machine.host_memory" = ["4G", "64K"]\n'
                                '"tlb.levels[0].policy" = ["lru", "no-such-policy"]\n')
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--jobs", "2", "--quiet"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3  # two invalid configs, one run that runs out of host memory
    assert sum("tlb.levels[0].policy = 'no-such-policy' is not allowed" in line for line in err) == 2
    assert all(str(path) in line for line in err if "no-such-policy" in line)
    assert any("sweep point 3" in line and "host memory is exhausted" in line for line in err)
    assert len(list((out / "points").glob("*.error.txt"))) == 3
    rows = read_csv(out / "results.csv")
    assert [(r["machine.host_memory"], r["tlb.levels[0].policy"]) for r in rows] == [
        ("4G", "lru"), ("4G", "no-such-policy"), ("64K", "lru"), ("64K", "no-such-policy")]
    assert_row_matches(rows[0], direct_metrics({}))
    assert all(r["accesses"] == "" for r in rows[1:])


def test_json_output_and_parquet(tmp_path, capsys):
    path = sweep_file(tmp_path, '[sweep.axes]\n"tlb.levels[0].sets" = [1, 16]\n')
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    rows = read_csv(out / "results.csv")
    assert [r["tlb.levels[0].sets"] for r in printed] == [1, 16]
    for row, data in zip(rows, printed):
        assert (out / "points" / f"{data['point']}.json").exists()
        assert_row_matches(row, {k: v for k, v in data.items() if k not in ("point", "tlb.levels[0].sets")})
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert [{k: str(v) for k, v in r.items()} for r in table] == rows


def test_summary_shows_key_metrics(tmp_path, capsys):
    path = sweep_file(tmp_path, '[sweep.axes]\n"machine.slat" = ["native", "intel-ept"]\n')
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    header = text.splitlines()[0].split()
    assert header[:3] == ["machine.slat", "accesses", "refs/walk"]
    for line, slat in zip(text.splitlines()[2:4], ("native", "intel-ept")):
        m = direct_metrics({("machine", "slat"): slat})
        cells = line.split()
        assert cells[0] == slat and cells[1] == f"{m['accesses']:,}"
        assert float(cells[2]) == round(m["walk.refs"] / m["walks"], 3)
        assert cells[3] == f"{m['tlb.l1.misses']:,}" and cells[4] == f"{m['vm_exits']:,}"
    assert "2 points: 2 run, 0 already done, 0 failed" in text


def test_run_and_validate_accept_a_sweep_file(tmp_path, capsys):
    path = sweep_file(tmp_path, '[sweep.axes]\n"machine.slat" = ["native", "shadow"]\n')
    assert main(["validate", str(path)]) == 0
    assert "so are its 2 sweep points" in capsys.readouterr().out
    out = tmp_path / "r.json"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["metrics"] == direct_metrics({})
    bad = sweep_file(tmp_path, '[sweep.axes]\n"tlb.levels[0].ways" = [2, 0]\n', "bad.toml")
    assert main(["validate", str(bad)]) == 2
    assert "tlb.levels[0].ways" in capsys.readouterr().err


# -- dask ------------------------------------------------------------------------------


def test_dask_gives_the_same_table(tmp_path):
    """A 6-point sweep on a Dask LocalCluster (started by the command, and one started
    here and named by --scheduler) gives the table of two local processes (the 24-point
    sweep's equality of executors is test_24_points_serial_and_two_processes_give_the_same_table's)."""
    distributed = pytest.importorskip("distributed")
    path = sweep_file(tmp_path, AXES_6)
    assert main(["sweep", str(path), "--out", str(tmp_path / "processes"), "--jobs", "2", "--quiet"]) == 0
    processes = (tmp_path / "processes" / "results.csv").read_text()
    assert main(["sweep", str(path), "--out", str(tmp_path / "local"), "--executor", "dask",
                 "--jobs", "2", "--quiet"]) == 0
    assert (tmp_path / "local" / "results.csv").read_text() == processes
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert main(["sweep", str(path), "--out", str(tmp_path / "remote"),
                     "--scheduler", cluster.scheduler_address, "--quiet"]) == 0
    assert (tmp_path / "remote" / "results.csv").read_text() == processes


def test_missing_dask_is_one_sentence(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if not installed
    path = sweep_file(tmp_path, '[sweep.axes]\n"tlb.levels[0].sets" = [1, 2]\n')
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--executor", "dask"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[dask]"' in err


# -- the example -------------------------------------------------------------------------


def test_schemes_by_workload_example_at_small_scale(tmp_path):
    example = ROOT / "examples" / "schemes-by-workload.toml"
    out = tmp_path / "out"
    assert main(["sweep", str(example), "--out", str(out), "--quiet", "--set", "workload.accesses=2000",
                 "--set", "experiment.engine=reference"]) == 0
    sweep = tomllib.loads(example.read_text())["sweep"]
    slats, labels = sweep["axes"]["machine.slat"], sweep["labels"]["workload"]
    rows = read_csv(out / "results.csv")
    assert [(r["machine.slat"], r["workload"]) for r in rows] == [(s, w) for s in slats for w in labels]
    assert all(r["accesses"] == "2000" for r in rows)
    levels = {"native": 4, "shadow": 4, "intel-ept": 5 * 5 - 1, "amd-npt": 5 * 5 - 1}  # n, (n+1)(m+1)-1
    for r in rows:
        assert int(r["walk.refs"]) == levels[r["machine.slat"]] * int(r["walks"])
    # one point checked against a direct run of its config
    raw = tomllib.loads(example.read_text())
    raw.pop("sweep")
    raw["machine"]["slat"] = "shadow"
    raw["workload"] = dict(sweep["axes"]["workload"][labels.index("sessions")], accesses=2000)
    raw["experiment"]["engine"] = "reference"
    config, registry = config_from_dict(raw, base_dir=example.parent)
    shadow_sessions = next(r for r in rows if (r["machine.slat"], r["workload"]) == ("shadow", "sessions"))
    assert_row_matches(shadow_sessions, run_experiment(config, registry).metrics)
    assert int(shadow_sessions["vm_exits.cr3_write"]) > 0


# -- progress --------------------------------------------------------------------------


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_at_most_ten_times_a_second():
    now = [0.0]
    stream = FakeTty()
    bar = Progress("sweep", 1000, "points", stream=stream, clock=lambda: now[0])
    for i in range(1000):
        now[0] = i * 0.001  # one update per millisecond: 1 s in all
        bar.update(i + 1)
    draws = stream.getvalue().count("\r")
    assert 1 <= draws <= 11
    bar.close()
    assert stream.getvalue().endswith("\r")
    quiet = io.StringIO()  # not a terminal: nothing drawn
    Progress("sweep", 10, stream=quiet).update(5, force=True)
    assert quiet.getvalue() == ""


def test_render_shows_count_rate_and_eta():
    text = render("run", 250, 1000, 5.0, "records")
    assert "250/1,000 records" in text and "50/s" in text and "ETA 0:15" in text
    assert "[######" in text
    unknown = render("run", 2500, None, 5.0, "records")
    assert "2,500 records" in unknown and "500/s" in unknown and "ETA" not in unknown
    assert len(render("a-long-experiment-name", 1, 10**9, 1.0, "records", width=40)) <= 40


def test_run_draws_progress_on_a_terminal_only(tmp_path, monkeypatch, capsys):
    path = sweep_file(tmp_path, '[sweep.axes]\n"machine.slat" = ["native"]\n')
    tty = FakeTty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main(["run", str(path), "--out", str(tmp_path / "r.json"), "--set", "experiment.chunk_size=100"]) == 0
    assert "\r" in tty.getvalue() and "records" in tty.getvalue()
    tty.truncate(0)
    tty.seek(0)
    assert main(["run", str(path), "--out", str(tmp_path / "r.json"), "--quiet"]) == 0
    assert tty.getvalue() == ""
    observer = RunProgress(stream=io.StringIO())
    config, registry = config_from_dict(tomllib.loads(BASE))
    run_experiment(config, registry, observers=[observer])
    assert observer.bar is not None and observer.bar.done == config.workload.options.accesses


def test_sweep_points_warnings_reach_stderr_once_each(tmp_path, capsys):
    """A dedup strategy that never wakes up warns in each point's result and, once, on
    the sweep's stderr naming the points."""
    path = sweep_file(tmp_path, '[sweep.axes]\n"tlb.levels[0].sets" = [1, 2]\n')
    text = path.read_text().replace('slat = "native"', 'slat = "intel-ept"')
    path.write_text(text.replace("[sweep]", '[dedup]\nstrategy = "ksm"\nsleep = 100000\n\n[sweep]'))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("slatframe: warning:") == 1 and "sweep point(s) 1, 2:" in err and "never woke up" in err
    points = sorted((tmp_path / "out" / "points").glob("*.json"))
    assert len(points) == 2 and all("never woke up" in json.loads(p.read_text())["warnings"][0] for p in points)


def test_engine_option_gives_every_point_its_tier_and_records_it(tmp_path, capsys):
    """--engine wins over experiment.engine in the file (BASE says reference) and in an
    axis; each point's result records the tier, its config the request; both tiers give
    the same table."""
    path = sweep_file(tmp_path, '[sweep.axes]\n"machine.slat" = ["native", "intel-ept"]\n'
                                '"experiment.engine" = ["auto"]\n')
    tables = {}
    for engine in ("reference", "compiled"):
        out = tmp_path / engine
        assert main(["sweep", str(path), "--out", str(out), "--quiet", "--engine", engine]) == 0
        results = [json.loads(p.read_text()) for p in sorted((out / "points").glob("*.json"))]
        assert len(results) == 2
        for result in results:
            assert result["engine"] == engine and result["engine_reason"].startswith("requested")
            assert result["config"]["experiment"]["engine"] == engine
        tables[engine] = [{k: v for k, v in row.items() if k != "point"} for row in read_csv(out / "results.csv")]
    assert tables["reference"] == tables["compiled"] and len(tables["reference"]) == 2
    assert main(["sweep", str(path), "--out", str(tmp_path / "bad"), "--engine", "fast"]) == 2
    err = capsys.readouterr().err
    assert err == "slatframe: error: --engine 'fast' is not allowed: choose one of auto, reference, compiled.\n"
    assert not (tmp_path / "bad").exists()
