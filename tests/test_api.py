"""The Python API (slatframe.run, sweep, load_results): the same configs, overrides and
results as the CLI, checked against the CLI's own result files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

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
    (lambda: slatframe.run(42), r"not an object of type int"),
    (lambda: slatframe.run(QUICKSTART, set={3: 4}), r"the key 3 is not a key path"),
])
def test_bad_input_is_one_sentence(call, sentence):
    with pytest.raises(ConfigError, match=sentence) as info:
        call()
    assert "\n" not in str(info.value)


def test_sweep_and_load_results(tmp_path):
    rows = slatframe.sweep(EXAMPLES / "forkwait.toml", tmp_path / "sweep", set={"workload.forks": 3})
    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    assert [row["machine.slat"] for row in rows][:4] == ["native", "intel-ept", "amd-npt", "shadow-emulate"]
    assert all(row["processes.created"] == 3 for row in rows)
    assert main(["sweep", str(EXAMPLES / "forkwait.toml"), "--out", str(tmp_path / "cli"), "--quiet",
                 "--set", "workload.forks=3"]) == 0
    cli = slatframe.load_results(tmp_path / "cli")
    cli = cli.to_dict("records") if hasattr(cli, "to_dict") else cli
    assert [{k: v for k, v in r.items() if k != "point"} for r in cli] == \
        [{k: v for k, v in r.items() if k != "point"} for r in rows]
    one = slatframe.load_results(next((tmp_path / "cli" / "points").glob("*.json")))
    one = one.to_dict("records") if hasattr(one, "to_dict") else one
    assert len(one) == 1 and one[0]["name"] == "forkwait"


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
def test_any_set_mapping_resolves_or_is_one_sentence(sets):
    """Overrides of any key and any Python value: a config, or one SlatframeError."""
    from slatframe.api import load

    try:
        load(QUICKSTART, set=sets)
    except SlatframeError as exc:
        assert "\n" not in str(exc).strip()
