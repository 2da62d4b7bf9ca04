"""``slatframe plot``: a metric against a config key from a sweep table or result files,
and the dedup memory-over-time plot of one run. Needs matplotlib (``pip install -e ".[plot]"``).
"""
from __future__ import annotations

import csv
import difflib
import json
from pathlib import Path
from typing import Any, Sequence

from .derived import derived_metrics, with_derived
from .errors import SlatframeError
from .gather import MANIFEST, cell, gather

MIB = 1 << 20


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config data as key paths: ``{"tlb": {"levels": [{"ways": 4}]}}`` ->
    ``{"tlb.levels[0].ways": 4}``; a plugin table also gives its name at its own path."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else key))
        for name_key in ("name", "model", "source", "strategy", "type"):
            if name_key in data and prefix:
                out.setdefault(prefix, data[name_key])
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}[{i}]"))
    else:
        out[prefix] = data
    return out


def load_rows(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Rows from a sweep folder or its results.csv, or from result JSON files (one row
    each: the config's key paths and the metrics), with the derived metrics
    (:mod:`slatframe.derived`): a sweep folder's rows are its point files' (as
    :func:`slatframe.gather.gather` reads them); a table without its folder gets those
    derived metrics its columns give that it lacks."""
    rows: list[dict[str, Any]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.name == "results.csv" and (path.parent / MANIFEST).is_file():
            path = path.parent
        if path.is_dir() and (path / MANIFEST).is_file():
            rows += [{**{k: _number(cell(v)) for k, v in r.cells.items()}, **(r.metrics or {})} for r in gather(path)]
            continue
        if path.is_dir():
            path = path / "results.csv"
        if not path.exists():
            raise SlatframeError(f"{path}: no such file (give a sweep folder, its results.csv or result JSON files).")
        if path.suffix == ".csv":
            with path.open(newline="") as fh:
                table = [{k: _number(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]
            rows += [{**derived_metrics(row, None), **row} for row in table]
        else:
            try:
                result = json.loads(path.read_text())
                rows.append({**flatten(result["config"]), **with_derived(result["metrics"], result["config"])})
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise SlatframeError(f"{path}: not a slatframe result file ({exc}).") from None
    return rows


def xy_series(rows: list[dict[str, Any]], x: str, y: str, hue: str | None = None,
              where: str = "results") -> dict[Any, tuple[list[Any], list[Any]]]:
    """hue value -> (x values, y values), rows sorted by x within each hue."""
    for key in (x, y) + ((hue,) if hue else ()):
        if not any(key in row for row in rows):
            raise SlatframeError(f"{where}: no column {key!r}; {close_columns(key, rows)}.")
    groups: dict[Any, list[tuple[Any, Any]]] = {}
    for row in rows:
        if x in row and y in row:
            groups.setdefault(row.get(hue) if hue else y, []).append((row[x], row[y]))
    out = {}
    order = {v: i for i, v in enumerate(dict.fromkeys(row[x] for row in rows if x in row))}
    for key, pairs in groups.items():  # numbers ascending, names in the order rows give them
        pairs.sort(key=lambda p: (isinstance(p[0], str), order[p[0]] if isinstance(p[0], str) else p[0]))
        out[key] = ([p[0] for p in pairs], [p[1] for p in pairs])
    return out


def close_columns(key: str, rows: list[dict[str, Any]]) -> str:
    """What an error says of the columns whose names are close to ``key`` (difflib)."""
    known = sorted({k for row in rows for k in row})
    close = difflib.get_close_matches(key, known, n=6, cutoff=0.6)
    if close:
        return f"close matches: {', '.join(close)}"
    return (f"no column has a close name (the {len(known)} columns are config key paths, metrics such as "
            "walk.refs and derived metrics such as derived.refs_per_walk)")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SlatframeError('slatframe plot needs matplotlib: pip install -e ".[plot]".') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_xy(rows: list[dict[str, Any]], x: str, y: str, hue: str | None, out: str | Path,
            where: str = "results"):
    """Lines of ``y`` against a numeric ``x`` (log scale when it spans 100x), or grouped
    bars against a categorical one; one line or bar group per ``hue`` value."""
    plt = _pyplot()
    series = xy_series(rows, x, y, hue, where)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = list(dict.fromkeys(v for row in rows if x in row for v in [row[x]]))
    xs.sort(key=lambda v: (isinstance(v, str), 0 if isinstance(v, str) else v))  # stable: names keep row order
    if all(isinstance(v, (int, float)) for v in xs):
        for key, (xv, yv) in series.items():
            ax.plot(xv, yv, marker="o", label=str(key))
        if xs and min(xs) > 0 and max(xs) / min(xs) >= 100:
            ax.set_xscale("log")
    else:
        width = 0.8 / max(1, len(series))
        for i, (key, (xv, yv)) in enumerate(series.items()):
            at = [xs.index(v) + (i - (len(series) - 1) / 2) * width for v in xv]
            ax.bar(at, yv, width=width, label=str(key))
        ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if hue:
        ax.legend(title=hue)
    ax.grid(alpha=0.3)
    _save(fig, out)
    return fig


def plot_dedup(result_path: str | Path, out: str | Path):
    """Memory saved and host memory in use (MiB), per dedup wake-up."""
    plt = _pyplot()
    try:
        result = json.loads(Path(result_path).read_text())
    except (OSError, ValueError) as exc:
        raise SlatframeError(f"{result_path}: not a readable slatframe result file ({exc}).") from None
    points = result.get("series", {}).get("dedup")
    if not points:
        raise SlatframeError(f"{result_path}: the result has no dedup series (run with a [dedup] table).")
    records = [p["records"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(records, [p["dedup.bytes_saved"] / MIB for p in points], label="saved (MiB)")
    ax.plot(records, [p["dedup.host_bytes_in_use"] / MIB for p in points], label="host memory in use (MiB)")
    ax.set_xlabel("trace records")
    ax.set_ylabel("MiB")
    ax.set_title(f"{result.get('name', '')}: dedup over time")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, out)
    return fig


def _save(fig, out: str | Path) -> None:
    """Write the figure through a temporary file and a rename."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    tmp.replace(out)
    import matplotlib.pyplot as plt
    plt.close(fig)  # the figure's data stay readable; pyplot forgets it
