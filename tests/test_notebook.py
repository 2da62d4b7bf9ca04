"""examples/notebooks/walk-caches.ipynb, executed by nbclient in a python3 kernel at a
small scale on the reference tier (its parameter cell reads SLATFRAME_NOTEBOOK_*), with
pandas and without: its table holds what slatframe.run gives for the same config, and its
plot cell draws a PNG. Its outputs go to the kernel's working folder, a temporary one."""
from __future__ import annotations

import base64
import json
import os
import runpy
from html.parser import HTMLParser
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

import slatframe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOK = EXAMPLES / "notebooks" / "walk-caches.ipynb"
ACCESSES = 2000
COLUMNS = ["walks", "guest refs/walk", "host refs/walk", "refs/walk", "max"]
# checked against a run of its own: the label's walk caches, written out here
CHECKED = "PSC, both dimensions"
PSC_BOTH = [{"type": "psc", "level": lv, **({"dimension": "host"} if host else {})}
            for host in (False, True) for lv in (4, 3, 2)]


class _HtmlTable(HTMLParser):
    """The rows of an HTML table, as lists of cell texts."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def html_table(text: str) -> dict[str, dict[str, str]]:
    """A DataFrame's HTML (index "walk caches"): label -> column -> cell."""
    parser = _HtmlTable()
    parser.feed(text)
    header, index_name, *body = parser.rows
    assert index_name[0] == "walk caches", parser.rows[:2]
    return {row[0]: dict(zip(header[1:], row[1:])) for row in body}


def plain_table(text: str) -> dict[str, dict[str, str]]:
    """slatframe.report.table's text (a header, a line of dashes per column, the rows)."""
    header, dashes, *body = text.rstrip("\n").splitlines()
    spans, start = [], 0
    for run in dashes.split("  "):
        spans.append((start, start + len(run)))
        start += len(run) + 2
    spans[-1] = (spans[-1][0], None)  # the last column: to the end of the line
    cells = [[line[a:b].strip() for a, b in spans] for line in [header, *body]]
    return {row[0]: dict(zip(cells[0][1:], row[1:])) for row in cells[1:]}


def tagged(nb, tag):
    (cell,) = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    return cell


def execute(tmp_path: Path, monkeypatch, *, pandas: bool):
    monkeypatch.setenv("SLATFRAME_NOTEBOOK_ACCESSES", str(ACCESSES))
    monkeypatch.setenv("SLATFRAME_NOTEBOOK_ENGINE", "reference")
    monkeypatch.setenv("SLATFRAME_NOTEBOOK_JOBS", "1")
    monkeypatch.setenv("SLATFRAME_NOTEBOOK_EXAMPLES", str(EXAMPLES))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # the kernel leaves no __pycache__ in the repo
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws the plot
    if not pandas:  # a package "pandas" first on the kernel's path that fails to import, as if absent
        blocker = tmp_path / "no-pandas" / "pandas"
        blocker.mkdir(parents=True)
        (blocker / "__init__.py").write_text('raise ImportError("pandas is blocked for this test")\n')
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(blocker.parent),
                                                                        os.environ.get("PYTHONPATH")])))
    work = tmp_path / "work"
    work.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}}).execute()
    return nb, work


@pytest.fixture(scope="module")
def expected():
    """The checked row, computed apart: slatframe.run on the config with its walk caches."""
    m = slatframe.run(EXAMPLES / "walk-caches.toml", engine="reference",
                      set={"walk_caches": PSC_BOTH, "workload.accesses": ACCESSES, "machine.slat": "intel-ept"}).metrics
    walks = m["walks"]
    return {"walks": walks, "guest refs/walk": m["walk.refs_guest"] / walks,
            "host refs/walk": m["walk.refs_host"] / walks, "refs/walk": m["walk.refs"] / walks,
            "max": m["walk.refs_max"]}


@pytest.mark.parametrize("pandas", [True, False], ids=["pandas", "no-pandas"])
def test_notebook_runs_small_and_shows_what_run_gives(tmp_path, monkeypatch, expected, pandas):
    if pandas:
        pytest.importorskip("pandas")
    nb, work = execute(tmp_path, monkeypatch, pandas=pandas)

    run_text = "".join(o.get("text", "") for o in tagged(nb, "run").outputs if o.output_type == "stream")
    assert f"7 runs of {ACCESSES:,} accesses" in run_text and "engine: reference" in run_text, run_text

    outputs = tagged(nb, "table").outputs
    if pandas:
        (shown,) = [o for o in outputs if o.output_type == "display_data"]
        rows = html_table(shown.data["text/html"])
    else:
        assert all(o.output_type == "stream" for o in outputs), outputs
        rows = plain_table("".join(o.text for o in outputs))
    labels = list(runpy.run_path(str(EXAMPLES / "walk_caches.py"))["CONFIGS"])
    assert list(rows) == labels
    assert all(list(row) == COLUMNS for row in rows.values())

    def number(text):
        return float(text.replace(",", ""))

    # no walk cache: every 2D walk of 4x4 levels is (4+1)(4+1)-1 references
    assert number(rows["none"]["refs/walk"]) == number(rows["none"]["max"]) == 24
    shown = {key: number(text) for key, text in rows[CHECKED].items()}
    assert shown["walks"] == expected["walks"] and shown["max"] == expected["max"]
    for key in ("guest refs/walk", "host refs/walk", "refs/walk"):
        # pandas shows the notebook's value rounded to 3 decimals; the plain table, that to 4 digits
        assert shown[key] == pytest.approx(round(expected[key], 3), abs=0 if pandas else 0.0051), key
    assert shown["refs/walk"] < 24

    (image,) = [o for o in tagged(nb, "plot").outputs if "image/png" in o.get("data", {})]
    assert base64.b64decode(image.data["image/png"]).startswith(b"\x89PNG")
    (out,) = (work / "results").iterdir()  # the sweep's folder, under the kernel's working folder
    assert (out / "results.csv").is_file() and (out / "refs-per-walk.png").is_file()
    assert len(json.loads((out / "sweep.json").read_text())["points"]) == len(labels)


def test_notebook_is_committed_clean_and_quotes_the_docs():
    """No outputs in the file; its full-size table is the one docs/experiments.md reports."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is None and cell.outputs == [], cell.id
    (reading,) = [c.source for c in nb.cells if "At the full size" in c.source]
    quoted = reading.split("```")[1]
    assert quoted.startswith("\nwalk caches ") and quoted in (ROOT / "docs/experiments.md").read_text()
    params = tagged(nb, "parameters").source
    assert '"SLATFRAME_NOTEBOOK_ACCESSES", "200000"' in params  # the experiment's full size by default
    assert "accesses = 200000" in (EXAMPLES / "walk-caches.toml").read_text()
