"""Every example in examples/ runs, at a small scale."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from slatframe.cli import main

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path, tmp_path):
    out = tmp_path / "r.json"
    scale = "workload.forks=20" if 'source = "forkwait"' in path.read_text() else "workload.accesses=2000"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--set", scale,
                 "--set", "experiment.warmup=0"]) == 0
    assert json.loads(out.read_text())["metrics"]["accesses"] > 0


def test_walk_lengths_script_matches_analytic(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("walk_lengths", EXAMPLES[0].parent / "walk_lengths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--accesses", "300"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert len(rows) == len(list(module.points()))
    for row in rows:
        refs_per_walk, refs_max, analytic = float(row[7]), int(row[8]), int(row[9])
        assert refs_per_walk == refs_max == analytic, row


def test_walk_caches_script_runs(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("walk_caches", EXAMPLES[0].parent / "walk_caches.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--accesses", "3000"])
    rows = {line[:22].strip(): line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == set(module.CONFIGS)
    refs = {label: float(row[-2]) for label, row in rows.items()}
    assert refs["none"] == 24.0
    assert all(value < 24 for label, value in refs.items() if label != "none")


def test_rds_consolidation_script_ratios_and_recomputed_costs(capsys):
    """The script's ratio is its sessions' ratio, and its post-run recomputation with another
    VM-exit cost gives what a run configured with that cost reports."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rds", EXAMPLES[0].parent / "rds_consolidation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.CHURN, module.SWITCH = (0.00002, 0.002), (2500,)
    assert module.main(["--scale", "0.01"]) == 0
    out = capsys.readouterr().out
    ratios = [line.split() for line in out.splitlines() if line.startswith(("intel-server ", "amd-server "))
              and len(line.split()) == 5]
    assert {r[0] for r in ratios} == {"intel-server", "amd-server"}
    for _, nested, shadow, ratio, _cpu in ratios:
        assert float(ratio) == pytest.approx(int(nested) / int(shadow), abs=5e-4)
    run = module.Runner(0.01)
    config, registry, result = run("machine.slat=shadow")
    direct = run("machine.slat=shadow", "cost.vm_exit=15000")[2].metrics["consolidation.sessions"]
    assert module.sessions(config, registry, result, vm_exit=15000) == direct


def test_ksm_vs_large_pages_script(capsys):
    """Every run of the script is printed; the ideal merger saves memory and splits large
    pages, the idle-KSM baselines save nothing, and KSM merges the same under both schemes
    (30,000 records are too few for KSM's two scans: that is the full run's business)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ksm", EXAMPLES[0].parent / "ksm_vs_large_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--accesses", "30000"])
    lines = capsys.readouterr().out.splitlines()[2:]
    rows = {line[:18].strip(): line[18:].split() for line in lines}
    assert set(rows) == set(module.RUNS)
    saved = {label: int(row[0]) for label, row in rows.items()}
    split = {label: int(row[3].replace(",", "")) for label, row in rows.items()}
    assert saved["no dedup"] == saved["no dedup, shadow"] == 0 == split["no dedup"]
    assert saved["ideal"] > 0 and split["ideal"] > 0 and saved["ksm, shadow"] == saved["ksm"]
