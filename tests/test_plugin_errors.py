"""A broken plugin is one sentence naming its file (or module) and hook, and exit 2: never
a traceback, never exit 0 without a result, never a silently wrong registration."""
from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import pytest

from slatframe import hookimpl
from slatframe.cli import main
from slatframe.errors import PluginError
from slatframe.records import TlbPolicyRecord
from slatframe.registry import Registry
from tiny_files import write_config

HEAD = "from slatframe import hookimpl\nfrom slatframe.records import *\n"

POLICY = """
class Policy:
    def __init__(self, options, sets, ways, rng):
        self.ways = ways
    def hit(self, s, w):
        pass
    def fill(self, s, w):
        pass
    def victim(self, s):
        return VICTIM
"""

# plugin file body -> (hook named in the message, words the message must contain)
BROKEN = {
    "argument": ("@hookimpl\ndef slatframe_tlb_policies(registry):\n    return []\n",
                 "slatframe_tlb_policies", ["takes registry", "no arguments"]),
    "raises": ("@hookimpl\ndef slatframe_workloads():\n    raise RuntimeError('no luck')\n",
               "slatframe_workloads", ["RuntimeError: no luck", "line 5"]),
    "not-iterable": ("@hookimpl\ndef slatframe_cost_models():\n    return 42\n",
                     "slatframe_cost_models", ["returned 42", "not a list of records"]),
    "one-record": ("@hookimpl\ndef slatframe_tlb_policies():\n"
                   "    return TlbPolicyRecord(name='p', summary='s', factory=object)\n",
                   "slatframe_tlb_policies", ["not a list of records"]),
    "wrong-kind": ("@hookimpl\ndef slatframe_tlb_policies():\n"
                   "    return [WorkloadRecord(name='w', summary='s', factory=object)]\n",
                   "slatframe_tlb_policies", ["WorkloadRecord", "TlbPolicyRecord"]),
    "not-a-record": ("@hookimpl\ndef slatframe_walk_caches():\n    return ['psc']\n",
                     "slatframe_walk_caches", ["'psc'", "not a registration record"]),
    "name-not-str": ("@hookimpl\ndef slatframe_tlb_policies():\n"
                     "    return [TlbPolicyRecord(name=7, summary='s', factory=object)]\n",
                     "slatframe_tlb_policies", ["named 7", "non-empty string"]),
    "name-empty": ("@hookimpl\ndef slatframe_tlb_policies():\n"
                   "    return [TlbPolicyRecord(name='', summary='s', factory=object)]\n",
                   "slatframe_tlb_policies", ["named ''", "non-empty string"]),
    "options-not-attrs": ("class Opts:\n    size = 3\n@hookimpl\ndef slatframe_tlb_policies():\n"
                          "    return [TlbPolicyRecord(name='o', summary='s', factory=object, options=Opts)]\n",
                          "slatframe_tlb_policies", ["class Opts", "not an attrs class"]),
    "factory-not-callable": ("@hookimpl\ndef slatframe_tlb_policies():\n"
                             "    return [TlbPolicyRecord(name='f', summary='s', factory=3)]\n",
                             "slatframe_tlb_policies", ["factory 3 is not callable"]),
    "generator-raises": ("@hookimpl\ndef slatframe_tlb_policies():\n    yield 1 // 0\n",
                         "slatframe_tlb_policies", ["ZeroDivisionError"]),
    "typo": ("@hookimpl\ndef slatframe_tlb_policys():\n    return []\n",
             "slatframe_tlb_policys", ["not a slatframe hook", "did you mean slatframe_tlb_policies"]),
}

IMPORT_FAILS = {
    "exit-0": ("import sys\nsys.exit(0)\n", ["SystemExit(0)", "line 2"]),
    "exit-3": ("raise SystemExit(3)\n", ["SystemExit(3)", "line 1"]),
    "raises": ("x = 1\nimport no_such_module_anywhere\n", ["ModuleNotFoundError", "line 2"]),
    "syntax": ("def f(:\n", ["SyntaxError", "line 1"]),
}


def run_with_plugin(tmp_path: Path, body: str, capsys, *, policy: str | None = None) -> tuple[int, str, Path]:
    plugin = tmp_path / "broken_plugin.py"
    plugin.write_text(body)
    levels = [{"name": "l1", "sets": 2, "ways": 2, **({"policy": policy} if policy else {})}]
    cfg = write_config(tmp_path, experiment={"name": "t", "seed": 1, "plugins": ["broken_plugin.py"]},
                       tlb={"levels": levels})
    out = tmp_path / "r.json"
    code = main(["run", str(cfg), "--out", str(out), "--quiet", "--engine", "reference"])
    return code, capsys.readouterr().err, out


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_hook_is_one_sentence_naming_file_and_hook(tmp_path, capsys, case):
    body, hook, words = BROKEN[case]
    code, err, out = run_with_plugin(tmp_path, HEAD + body, capsys)
    assert code == 2 and not out.exists()
    assert err.count("\n") == 1 and err.startswith("slatframe: error: plugin file ") and "Traceback" not in err
    assert "broken_plugin.py" in err and hook in err, err
    for word in words:
        assert word in err, (word, err)
    # the listing command reports it the same way
    assert main(["plugins", "--config", str(tmp_path / "cfg.toml")]) == 2
    assert capsys.readouterr().err == err


@pytest.mark.parametrize("case", list(IMPORT_FAILS))
def test_plugin_file_failing_at_import_exits_2(tmp_path, capsys, case):
    body, words = IMPORT_FAILS[case]
    code, err, out = run_with_plugin(tmp_path, body, capsys)
    assert code == 2 and not out.exists()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "plugin file" in err and "broken_plugin.py" in err and "importing it failed" in err
    for word in words:
        assert word in err, (word, err)


@pytest.mark.parametrize("victim", ["7", "-1", "None", "1.0"])
def test_victim_out_of_range_is_a_plugin_error(tmp_path, capsys, victim):
    body = HEAD + POLICY.replace("VICTIM", victim) + (
        "@hookimpl\ndef slatframe_tlb_policies():\n"
        "    return [TlbPolicyRecord(name='bad', summary='s', factory=Policy)]\n")
    code, err, out = run_with_plugin(tmp_path, body, capsys, policy="bad")
    assert code == 2 and not out.exists()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "broken_plugin.py" in err and "slatframe_tlb_policies" in err
    assert "victim(" in err and f"returned {victim}" in err and "allowed 0 to 1" in err


def test_victim_as_numpy_int_is_accepted(tmp_path, capsys):
    """A valid way as a numpy integer runs exactly as the same way as a Python int."""
    metrics = []
    for victim in ("1", "numpy.int64(1)"):
        body = "import numpy\n" + HEAD + POLICY.replace("VICTIM", victim) + (
            "@hookimpl\ndef slatframe_tlb_policies():\n"
            "    return [TlbPolicyRecord(name='last', summary='s', factory=Policy)]\n")
        code, err, out = run_with_plugin(tmp_path, body, capsys, policy="last")
        assert code == 0, err
        metrics.append(json.loads(out.read_text())["metrics"])
    assert metrics[0] == metrics[1] and metrics[0]["tlb.l1.misses"] > 0


def test_a_plugin_object_that_raises_names_the_plugin_and_hook():
    class Flaky:
        @hookimpl
        def slatframe_dedup_strategies(self):
            raise KeyError("k")

    with pytest.raises(PluginError) as info:
        Registry(entry_points=False, plugins=[Flaky()])
    message = str(info.value)
    assert re.fullmatch(r"plugin \S*Flaky \(module test_plugin_errors\): hook slatframe_dedup_strategies "
                        r"raised KeyError: 'k' \(line \d+\)\.", message), message


def test_a_valid_record_still_registers():
    class Good:
        @hookimpl
        def slatframe_tlb_policies(self):
            return (TlbPolicyRecord(name=n, summary="s", factory=object) for n in ("b", "a"))

    assert Registry(entry_points=False, plugins=[Good()]).names("TLB policies") == ["a", "b"]


class _FakeDist:
    """A distribution with one ``slatframe`` entry point."""

    def __init__(self, module: str) -> None:
        self.entry_points = [metadata.EntryPoint(name="broken", value=module, group="slatframe")]
        self.metadata = {"name": "broken-dist", "version": "9.9"}


def test_an_entry_point_failing_at_import_names_it(tmp_path, monkeypatch):
    (tmp_path / "broken_ep_module.py").write_text("raise SystemExit('bye')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(metadata, "distributions", lambda: [_FakeDist("broken_ep_module")])
    with pytest.raises(PluginError) as info:
        Registry()
    message = str(info.value)
    assert "entry point broken of broken-dist 9.9" in message and "broken_ep_module" in message
    assert "SystemExit('bye')" in message and "\n" not in message


def test_an_entry_point_module_registers_with_its_distribution(tmp_path, monkeypatch):
    (tmp_path / "good_ep_module.py").write_text(
        HEAD + "@hookimpl\ndef slatframe_tlb_policies():\n"
        "    return [TlbPolicyRecord(name='ep-policy', summary='s', factory=object)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(metadata, "distributions", lambda: [_FakeDist("good_ep_module")])
    provided = Registry().records["TLB policies"]
    assert list(provided) == ["ep-policy"] and provided["ep-policy"].source == "broken-dist 9.9"


def test_an_exception_in_plugin_code_during_the_run_names_file_and_line(tmp_path, capsys, monkeypatch):
    """A policy method that raises mid-run: one sentence naming the plugin file, the line
    and the function, exit 2; SLATFRAME_TRACEBACK=1 lets the traceback through."""
    body = HEAD + POLICY.replace("VICTIM", "0").replace("    def fill(self, s, w):\n        pass",
                                                       "    def fill(self, s, w):\n        1 // 0") + (
        "@hookimpl\ndef slatframe_tlb_policies():\n"
        "    return [TlbPolicyRecord(name='crash', summary='s', factory=Policy)]\n")
    line = body.splitlines().index("        1 // 0") + 1
    code, err, out = run_with_plugin(tmp_path, body, capsys, policy="crash")
    assert code == 2 and not out.exists() and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(rf"plugin file \S*broken_plugin\.py raised ZeroDivisionError: integer division or modulo by "
                     rf"zero at line {line} \(in fill\) during the run", err), err
    monkeypatch.setenv("SLATFRAME_TRACEBACK", "1")
    with pytest.raises(ZeroDivisionError):
        run_with_plugin(tmp_path, body, capsys, policy="crash")
