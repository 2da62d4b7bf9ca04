"""slatframe plot: the plotted points are the table's values; the dedup plot is the
result's series."""
from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("matplotlib")

from slatframe.cli import main  # noqa: E402
from slatframe.plot import flatten, load_rows, plot_dedup, plot_xy  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def write_table(path):
    rows = [{"machine.slat": s, "tlb.levels[0].ways": w, "walk.refs": 10 * w + len(s)}
            for s in ("native", "shadow") for w in (2, 4, 8)]
    with path.open("w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)
    return rows


def test_lines_per_hue_are_the_table_values(tmp_path):
    rows = write_table(tmp_path / "results.csv")
    fig = plot_xy(load_rows([tmp_path]), "tlb.levels[0].ways", "walk.refs", "machine.slat", tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in fig.axes[0].lines}
    for slat in ("native", "shadow"):
        mine = [r for r in rows if r["machine.slat"] == slat]
        assert lines[slat] == ([r["tlb.levels[0].ways"] for r in mine], [r["walk.refs"] for r in mine])


def test_categorical_x_gives_bars_and_unknown_columns_are_one_sentence(tmp_path, capsys):
    rows = write_table(tmp_path / "results.csv")
    fig = plot_xy(load_rows([tmp_path / "results.csv"]), "machine.slat", "walk.refs", "tlb.levels[0].ways",
                  tmp_path / "b.png")
    heights = sorted(p.get_height() for p in fig.axes[0].patches)
    assert heights == sorted(r["walk.refs"] for r in rows)
    assert main(["plot", str(tmp_path), "--x", "machine.slatt", "--y", "walk.refs", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "no column 'machine.slatt'" in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_result_files_and_the_dedup_series(tmp_path):
    result = {"name": "r", "config": {"machine": {"slat": {"name": "shadow"}}, "tlb": {"levels": [{"ways": 4}]}},
              "metrics": {"walk.refs": 7},
              "series": {"dedup": [{"records": 1000 * i, "dedup.bytes_saved": i << 20,
                                    "dedup.host_bytes_in_use": (10 - i) << 20} for i in range(1, 5)]}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    assert flatten(result["config"])["machine.slat"] == "shadow"
    assert load_rows([path])[0]["tlb.levels[0].ways"] == 4
    fig = plot_dedup(path, tmp_path / "d.png")
    saved, in_use = fig.axes[0].lines
    assert list(saved.get_ydata()) == [1, 2, 3, 4] and list(in_use.get_ydata()) == [9, 8, 7, 6]
    assert main(["plot", str(path), "--dedup", "--out", str(tmp_path / "d2.png")]) == 0
    assert (tmp_path / "d2.png").read_bytes()[:8] == PNG
