"""The command line: run, validate, plugins; results written atomically."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


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
    ratios = ("cycles.per_access", "translation_overhead")  # per VM too: vm.<name>.cycles.per_access
    assert all(isinstance(v, int) for k, v in m.items() if not k.endswith(ratios) and "derived." not in k)
    assert m["vm.vm0.accesses"] == m["accesses"] and m["vm.vm0.cycles.total"] == m["cycles.total"]  # one VM: all
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


def test_fixed_cost_recomputes_from_the_result(tmp_path):
    """Every cycle figure of the fixed model recomputed from the result file alone."""
    out = tmp_path / "r.json"
    example = Path(__file__).resolve().parents[1] / "examples" / "ksm-vs-large-pages.toml"
    assert main(["run", str(example), "--out", str(out), "--quiet", "--set", "workload.accesses=30000",
                 "--set", "dedup.sleep=3000"]) == 0
    result = json.loads(out.read_text())
    m, cfg = result["metrics"], result["config"]
    cost = cfg["cost"]
    tlb = sum((m[f"tlb.{lv['name']}.hits"] + m[f"tlb.{lv['name']}.misses"]) * lv["latency"]
              for lv in cfg["tlb"]["levels"])
    walk = (m["walk.refs"] + m["walk.refs_aborted"]) * cost["walk_ref"]
    exits = m["vm_exits"] * cost["vm_exit"]
    faults = m["faults.guest"] * cost["guest_fault"] + m["faults.host"] * cost["host_fault"]
    cow = m["dedup.cow_breaks"] * cost["cow_copy"]
    scan = m["dedup.pages_scanned"] * cost["scan_page"]
    assert m["dedup.pages_scanned"] > 0
    assert (m["cycles.tlb"], m["cycles.walk"], m["cycles.vm_exit"], m["cycles.fault"]) == (tlb, walk, exits, faults)
    assert (m["cycles.cow"], m["cycles.dedup_scan"]) == (cow, scan)
    assert m["cycles.translation"] == tlb + walk + exits + faults
    assert m["cycles.total"] == tlb + walk + exits + faults + cow + scan + m["accesses"] * cost["access"]
