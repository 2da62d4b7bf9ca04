"""Gathering a sweep's point results into one table (CSV, Parquet, terminal, JSON).

The sweep folder holds ``sweep.json`` (the points in sweep order: swept values and the
hash of each) and ``points/<hash>.json``; :func:`gather` reads only these files, so it can
be re-run on a folder at any time, for example while or after a sweep runs elsewhere.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import attrs

from .derived import with_derived
from .errors import SlatframeError
from .report import table
from .results import replacing, write_atomic

MANIFEST = "sweep.json"


@attrs.frozen(eq=False)
class Row:
    """One point of a gathered sweep; ``metrics`` is None when the point has no result."""

    index: int
    point: str  #: the config hash: points/<point>.json
    cells: dict[str, Any]  #: swept key -> value (or its label)
    metrics: dict[str, Any] | None
    error: str | None = None
    last_tlb: str | None = None  #: name of the point's last TLB level
    warnings: tuple[str, ...] = ()  #: the point's result warnings (e.g. dedup never woke up)


def write_manifest(out_dir: Path, plan: Any) -> None:
    """Write ``sweep.json``: the sweep file, its mode and axes, and each point's values and hash."""
    manifest = {
        "config": str(plan.path),
        "mode": plan.spec.mode,
        "axes": [a.key for a in plan.spec.axes],
        "points": [{"index": p.index, "point": p.hash, "values": dict(p.cells)} for p in plan.points],
    }
    write_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def gather(out_dir: str | Path) -> list[Row]:
    """The rows of a sweep folder, in sweep order, from its manifest and point files."""
    out_dir = Path(out_dir)
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
    except FileNotFoundError:
        raise SlatframeError(f"{out_dir}: has no {MANIFEST}, so it is not the output folder of a sweep.") from None
    except ValueError:
        raise SlatframeError(f"{out_dir / MANIFEST}: is not valid JSON; delete the folder and run the sweep again.") from None
    rows = []
    for entry in manifest["points"]:
        h = entry["point"]
        result_file = out_dir / "points" / f"{h}.json"
        error_file = out_dir / "points" / f"{h}.error.txt"
        if result_file.exists():
            try:
                result = json.loads(result_file.read_text())
            except ValueError:
                raise SlatframeError(f"{result_file}: is not valid JSON; delete it and run the sweep again "
                                     "to redo that point.") from None
            rows.append(result_row(entry, result))
        else:
            error = error_file.read_text().strip() if error_file.exists() else "not run"
            rows.append(Row(entry["index"], h, entry["values"], None, error=error or "failed"))
    return rows


def result_row(entry: dict[str, Any], result: dict[str, Any]) -> Row:
    """The row of the manifest's ``entry`` whose point has ``result`` (a result file's
    data), with the derived metrics (:mod:`slatframe.derived`) computed again."""
    levels = result["config"]["tlb"]["levels"]
    return Row(entry["index"], entry["point"], entry["values"], with_derived(result["metrics"], result["config"]),
               last_tlb=levels[-1]["name"] if levels else None, warnings=tuple(result.get("warnings", ())))


def columns(rows: list[Row]) -> tuple[list[str], list[str]]:
    """The swept keys (in axis order) and the union of metric names (sorted)."""
    keys = list(rows[0].cells) if rows else []
    metrics = sorted({name for r in rows if r.metrics for name in r.metrics})
    return keys, metrics


def cell(value: Any) -> str:
    """A value as CSV text: lists and tables as compact JSON, booleans as TOML writes them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def csv_text(rows: list[Row]) -> str:
    """The table as CSV: one column per swept key, then one per metric; one row per point."""
    keys, metrics = columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(keys + metrics)
    for r in rows:
        m = r.metrics or {}
        writer.writerow([cell(r.cells[k]) for k in keys] + [cell(m.get(name)) for name in metrics])
    return buf.getvalue()


def write_tables(out_dir: str | Path, rows: list[Row]) -> list[Path]:
    """Write ``results.csv`` (always) and ``results.parquet`` (when pyarrow is importable),
    each atomically; return the files written."""
    out_dir = Path(out_dir)
    written = [out_dir / "results.csv"]
    write_atomic(written[0], csv_text(rows))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return written
    written.append(out_dir / "results.parquet")
    _write_parquet(written[1], rows)
    return written


def _write_parquet(path: Path, rows: list[Row]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys, metrics = columns(rows)
    data = {}
    for k in keys:
        values = [r.cells[k] for r in rows]
        kinds = {type(v) for v in values}
        same = len(kinds) == 1 and kinds <= {int, float, str, bool}
        data[k] = pa.array(values if same else [cell(v) for v in values])
    for name in metrics:
        values = [(r.metrics or {}).get(name) for r in rows]
        if any(isinstance(v, float) for v in values):
            values = [float(v) if v is not None else None for v in values]
        data[name] = pa.array(values)
    with replacing(path) as tmp:
        pq.write_table(pa.table(data), tmp)


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    """The rows as plain data: the point's hash, swept values, metrics (and error)."""
    out = []
    for r in rows:
        row: dict[str, Any] = {"point": r.point, **r.cells, **(r.metrics or {})}
        if r.error is not None:
            row["error"] = r.error
        out.append(row)
    return out


def summary_table(rows: list[Row]) -> str:
    """A few key metrics per point, for the terminal."""
    keys, metrics = columns(rows)
    with_cycles = "cycles.total" in metrics
    header = keys + ["accesses", "refs/walk", "last TLB misses", "vm exits"] + (["cycles"] if with_cycles else [])
    lines = []
    for r in rows:
        shown = [r.cells[k] if isinstance(r.cells[k], (str, int, float)) else cell(r.cells[k]) for k in keys]
        m = r.metrics
        if m is None:
            lines.append(shown + ["failed"] + ["-"] * (len(header) - len(keys) - 1))
            continue
        figures = [m.get("accesses", 0), round(m.get("derived.refs_per_walk", 0.0), 3),
                   m.get(f"tlb.{r.last_tlb}.misses", 0), m.get("vm_exits", 0)]
        lines.append(shown + figures + ([m.get("cycles.total", 0)] if with_cycles else []))
    return table(lines, header)
