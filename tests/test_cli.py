"""The command line: run, validate, plugins; results written atomically."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slatframe.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.toml"
SMALL = ["--set", "workload.accesses=3000"]


def test_run_writes_result(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", str(QUICKSTART), "--out", str(out), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "tlb.l1d" in printed and "walk refs per walk" in printed
    result = json.loads(out.read_text())
    m = result["metrics"]
    assert m["accesses"] == 3000
    assert m["tlb.l1d.hits"] + m["tlb.l1d.misses"] == 3000
    assert m["tlb.l2.hits"] + m["tlb.l2.misses"] == m["tlb.l1d.misses"]
    assert m["walks"] == m["tlb.l2.misses"] + m["walk.on_hit"] and m["walk.refs"] == 4 * m["walks"]
    assert 0 < m["walk.on_hit"] <= m["tlb.l1d.hits"] + m["tlb.l2.hits"]  # writes through clean entries
    for key in ("walk.refs_max", "faults.guest", "faults.host", "vm_exits", "cycles.total",
                "cycles.translation", "cycles.per_access"):
        assert key in m
    assert all(isinstance(v, int) for k, v in m.items() if not k.startswith(("cycles.per", "translation_")))
    assert result["config"]["workload"]["accesses"] == 3000
    assert result["seed"] == 1 and result["engine"] == "compiled" and result["version"]
    assert result["engine_reason"].startswith("auto")
    assert result["wall_time_s"] > 0


def test_same_seed_same_metrics(tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        main(["run", str(QUICKSTART), "--out", str(out), "--quiet", *SMALL])
        outs.append(json.loads(out.read_text())["metrics"])
    assert outs[0] == outs[1]


def test_bad_config_exits_nonzero_and_keeps_old_result(tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("previous result\n")
    code = main(["run", str(QUICKSTART), "--out", str(out), "--set", "tlb.levels[0].ways=0"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tlb.levels[0].ways" in err and str(QUICKSTART) in err
    assert out.read_text() == "previous result\n"
    assert list(tmp_path.iterdir()) == [out]


def test_validate_and_plugins(capsys):
    assert main(["validate", str(QUICKSTART)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["plugins"]) == 0
    listing = capsys.readouterr().out
    for name in ("native", "lru", "fifo", "x86-64", "npz", "synthetic", "fixed"):
        assert name in listing


def test_console_script_runs(tmp_path):
    """The installed entry point, as a user calls it."""
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "slatframe.cli", "run", str(QUICKSTART),
                           "--out", str(out), "--json", *SMALL], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["metrics"]["accesses"] == 3000
