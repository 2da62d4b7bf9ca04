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
    assert main(["run", str(path), "--out", str(out), "--quiet", "--set", "workload.accesses=2000"]) == 0
    assert json.loads(out.read_text())["metrics"]["accesses"] > 0
