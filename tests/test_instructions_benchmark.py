"""The counts benchmark (benchmarks/instructions.py) reads cachegrind's summary lines and
takes a warm access's share of two more passes: checked here on files written by hand,
since the benchmark itself needs valgrind and minutes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package

from benchmarks.instructions import per_access, totals  # noqa: E402

EVENTS = "Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw Bc Bcm Bi Bim"


def write(path: Path, values: list[int]) -> Path:
    path.write_text(f"desc: I1 cache: 32768 B, 64 B, 8-way associative\ncmd: python\nevents: {EVENTS}\n"
                    "fl=???\nfn=0x0\n0 1 2\nsummary: " + " ".join(map(str, values)) + "\n")
    return path


def test_a_warm_access_is_two_passes_less_the_first_over_the_accesses(tmp_path):
    one = totals(write(tmp_path / "one", [1000, 1, 1, 400, 30, 3, 200, 10, 2, 150, 20, 7, 5]))
    three = totals(write(tmp_path / "three", [5000, 1, 1, 1200, 90, 3, 600, 50, 6, 550, 60, 17, 9]))
    assert one["Ir"] == 1000 and three["Bim"] == 9
    counts = per_access(one, three, 100)
    assert counts == {"Ir": 20.0, "mispredicted branches": (40 + 4) / 200, "D1 misses": (60 + 40) / 200,
                      "last-level misses": (0 + 4) / 200}


def test_a_file_without_a_summary_says_so(tmp_path):
    path = tmp_path / "cut"
    path.write_text(f"events: {EVENTS}\nfl=???\n")
    with pytest.raises(ValueError, match="no summary line"):
        totals(path)
