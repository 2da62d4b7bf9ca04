"""The Python API (slatframe.run, sweep, load_results): the same configs, overrides and
results as the CLI, checked against the CLI's own result files."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

import slatframe
from slatframe.cli import main
from slatframe.config import read_toml
from slatframe.errors import ConfigError, SlatframeError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QUICKSTART = EXAMPLES / "quickstart.toml"


def cli_metrics(tmp_path, config, *sets):
    out = tmp_path / "cli.json"
    args = ["run", str(config), "--out", str(out), "--quiet"]
    for text in sets:
        args += ["--set", text]
    assert main(args) == 0
    return json.loads(out.read_text())["metrics"]


def test_run_gives_the_cli_result(tmp_path):
    sets = {"workload.accesses": 3000, "machine.slat": "shadow", "tlb.levels[0].ways": "8"}
    result = slatframe.run(QUICKSTART, set=sets)
    assert result.metrics == cli_metrics(tmp_path, QUICKSTART, "workload.accesses=3000", "machine.slat=shadow",
                                         "tlb.levels[0].ways=8")
    assert result.to_dict()["metrics"] == result.metrics and result.to_dict()["config"]["tlb"]["levels"][0]["ways"] == 8
    assert result.config["machine"]["slat"]["name"] == "shadow"


def test_a_config_as_path_text_or_dict_runs_the_same(tmp_path, monkeypatch):
    monkeypatch.chdir(EXAMPLES)  # relative paths of text and dicts start from the working folder
    raw = read_toml(QUICKSTART)
    raw["workload"]["accesses"] = 2000
    text = QUICKSTART.read_text().replace("accesses = 200000", "accesses = 2000")
    assert "accesses = 2000\n" in text
    by_path = slatframe.run(str(QUICKSTART), set={"workload.accesses": 2000}).metrics
    assert slatframe.run(text).metrics == by_path
    assert slatframe.run(raw).metrics == by_path
    assert raw["workload"]["accesses"] == 2000  # the caller's dict is not changed
    odd = tmp_path / "a=b.toml"  # a file name with '=' is still a path
    odd.write_text(text)
    assert slatframe.run(str(odd)).metrics == by_path


@pytest.mark.parametrize("call,sentence", [
    (lambda: slatframe.run(QUICKSTART, set={"tlb.levels[9].ways": 4}), r"index \[9\] does not exist"),
    (lambda: slatframe.run(QUICKSTART, set={"no such key": 4}), r"is not a key path"),
    (lambda: slatframe.run("missing.toml"), r"missing.toml: config file does not exist"),
    (lambda: slatframe.run("[experiment\nname = 1"), r"<TOML text>: not valid TOML"),
    (lambda: slatframe.run({"workload": {"source": "nope"}}), r"<config dict>"),
    (lambda: slatframe.run(QUICKSTART, engine="fast"), r"engine = 'fast' is not allowed"),
    (lambda: slatframe.sweep(EXAMPLES / "forkwait.toml", "unused", engine="fast"), r"engine = 'fast' is not allowed"),
    (lambda: slatframe.run(42), r"not an object of type int"),
    (lambda: slatframe.run(QUICKSTART, set={3: 4}), r"the key 3 is not a key path"),
])
def test_bad_input_is_one_sentence(call, sentence):
    with pytest.raises(ConfigError, match=sentence) as info:
        call()
    assert "\n" not in str(info.value)


def without_pandas(monkeypatch):
    """``import pandas`` raises ImportError from here on, as where pandas is not installed."""
    monkeypatch.setitem(sys.modules, "pandas", None)


def records(rows):
    """load_results' rows as a list of dicts: a DataFrame's records without their NaN cells
    (a metric that a point does not report, which the list of dicts leaves out)."""
    if isinstance(rows, list):
        return rows
    return [{k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
            for row in rows.to_dict("records")]


@pytest.mark.parametrize("pandas", [True, False], ids=["pandas", "no-pandas"])
def test_sweep_and_load_results(tmp_path, monkeypatch, pandas):
    """A DataFrame with pandas, else a list of dicts: the same rows."""
    if pandas:
        frame_type = pytest.importorskip("pandas").DataFrame
    else:
        without_pandas(monkeypatch)
    rows = slatframe.sweep(EXAMPLES / "forkwait.toml", tmp_path / "sweep", set={"workload.forks": 3})
    assert isinstance(rows, frame_type if pandas else list)
    rows = records(rows)
    assert [row["machine.slat"] for row in rows][:4] == ["native", "intel-ept", "amd-npt", "shadow-emulate"]
    assert all(row["processes.created"] == 3 for row in rows)
    assert main(["sweep", str(EXAMPLES / "forkwait.toml"), "--out", str(tmp_path / "cli"), "--quiet",
                 "--set", "workload.forks=3"]) == 0
    cli = records(slatframe.load_results(tmp_path / "cli"))
    assert [{k: v for k, v in r.items() if k != "point"} for r in cli] == \
        [{k: v for k, v in r.items() if k != "point"} for r in rows]
    if pandas:  # the DataFrame holds the rows of the list of dicts
        with monkeypatch.context() as patch:
            without_pandas(patch)
            assert slatframe.load_results(tmp_path / "cli") == cli
    one = records(slatframe.load_results(next((tmp_path / "cli" / "points").glob("*.json"))))
    assert len(one) == 1 and one[0]["name"] == "forkwait"


def test_sweep_engine_applies_to_every_point(tmp_path):
    """``engine=`` gives every point that tier, as ``slatframe sweep --engine`` does."""
    rows = records(slatframe.sweep(EXAMPLES / "forkwait.toml", tmp_path / "api", set={"workload.forks": 2},
                                   engine="reference"))
    results = [json.loads(p.read_text()) for p in (tmp_path / "api" / "points").glob("*.json")]
    assert len(results) == len(rows) > 1
    assert all(r["engine"] == "reference" and r["config"]["experiment"]["engine"] == "reference" for r in results)
    assert main(["sweep", str(EXAMPLES / "forkwait.toml"), "--out", str(tmp_path / "cli"), "--quiet",
                 "--set", "workload.forks=2", "--engine", "reference"]) == 0
    assert [{k: v for k, v in r.items() if k != "point"} for r in records(slatframe.load_results(tmp_path / "cli"))] \
        == [{k: v for k, v in r.items() if k != "point"} for r in rows]


@pytest.mark.parametrize("pandas", [True, False], ids=["pandas", "no-pandas"])
def test_a_result_file_and_to_frame(tmp_path, monkeypatch, pandas):
    """One result file is one row; Result.to_frame is that row as a DataFrame, and says
    what to install without pandas."""
    result = slatframe.run(QUICKSTART, set={"workload.accesses": 2000}, engine="reference")
    (tmp_path / "r.json").write_text(result.to_json())
    row = {"name": result.name, "engine": result.engine, **result.metrics}
    if pandas:
        frame_type = pytest.importorskip("pandas").DataFrame
        loaded, frame = slatframe.load_results(tmp_path / "r.json"), result.to_frame()
        assert isinstance(loaded, frame_type) and isinstance(frame, frame_type)
        assert loaded.to_dict("records") == frame.to_dict("records") == [row]
    else:
        without_pandas(monkeypatch)
        assert slatframe.load_results(tmp_path / "r.json") == [row]
        with pytest.raises(SlatframeError, match=r"Result.to_frame needs pandas"):
            result.to_frame()


def test_load_results_refuses_what_is_not_a_result(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(SlatframeError, match=r"x.json: is not a slatframe result file"):
        slatframe.load_results(tmp_path / "x.json")
    with pytest.raises(SlatframeError, match=r"nothing.json: does not exist"):
        slatframe.load_results(tmp_path / "nothing.json")


_VALUES = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.booleans(), st.text(max_size=12),
                    st.lists(st.integers(0, 9), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
                    st.none(), st.binary(max_size=4))
_KEYS = st.one_of(st.sampled_from(["workload.accesses", "machine.slat", "tlb.levels[0].ways", "tlb.levels[3].name",
                                   "cost", "cost.preset", "experiment.engine", "vms[0].memory", "walk_caches[0].level"]),
                  st.text(max_size=15), st.integers(0, 3))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(sets=st.dictionaries(_KEYS, _VALUES, max_size=3))
@example(sets={"machine.slat": {"\n": 0}})  # a key with a newline: quoted in the key path
def test_any_set_mapping_resolves_or_is_one_sentence(sets):
    """Overrides of any key and any Python value: a config, or one SlatframeError."""
    from slatframe.api import load

    try:
        load(QUICKSTART, set=sets)
    except SlatframeError as exc:
        assert "\n" not in str(exc).strip()
