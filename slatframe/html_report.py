"""``slatframe report``: one self-contained HTML page (inline CSS and SVG, no scripts, no
network) of a run's result file or of a sweep's output folder (docs/report.md)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .calibration_report import calibration_page, calibration_problem, is_calibration
from .consolidation import TEXT_METRICS
from .derived import with_derived
from .errors import SlatframeError
from .footprint import memory_text
from .gather import MANIFEST, Row, cell, gather
from .plot import _number, xy_series
from .results import check_output_file, write_atomic
from .scope_metrics import split_scopes
from .svg_charts import CHART_CSS, bar_chart, esc, grouped_bar_chart, line_chart, number

ALLOWED = ("give a result JSON file (as slatframe run --out writes it), a sweep's output folder "
           "(as slatframe sweep --out writes it) or a calibration.json (as slatframe calibrate writes it)")
MIB = 1 << 20
#: The metrics a sweep page plots against each swept key (those the points report).
SWEEP_METRICS = ("cycles.per_access", "walk.refs", "walks", "derived.refs_per_walk", "tlb.{last}.misses",
                 "derived.mpka", "vm_exits", "translation_overhead", "dedup.bytes_saved")


class ReportError(SlatframeError):
    """The report's input is not a result file or a sweep folder; one sentence naming it."""


# -- input -----------------------------------------------------------------------------


def check_result(data: Any, where: str) -> dict[str, Any]:
    """``data`` if it is a slatframe result (a name, a config table, numeric metrics)."""
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict) \
            or not isinstance(data.get("config"), dict) or "name" not in data:
        raise ReportError(f"{where}: is JSON but not a slatframe result (it needs name, config and metrics); "
                          f"{ALLOWED}.")
    numbers = [(f"metrics[{json.dumps(k)}]", v) for k, v in data["metrics"].items()
               if not (k in TEXT_METRICS and isinstance(v, str))]  # consolidation.binding: "cpu" or "memory"
    numbers += [(k, data[k]) for k in ("seed", "wall_time_s", "compile_time_s") if k in data]
    for what, value in numbers:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ReportError(f"{where}: {what} is not a number, so this is not a slatframe result; {ALLOWED}.")
    for key, kind in (("series", dict), ("warnings", list)):
        if not isinstance(data.get(key, kind()), kind):
            raise ReportError(f"{where}: {key} is not a {'table' if kind is dict else 'list'}, so this is not a "
                              f"slatframe result; {ALLOWED}.")
    return data


def load_result(path: str | Path) -> dict[str, Any]:
    """The result file at ``path``, checked; a :class:`ReportError` sentence otherwise."""
    return check_result(read_json(path), str(path))


def read_json(path: str | Path) -> Any:
    """The JSON data of the file at ``path``; a :class:`ReportError` sentence otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file or folder; {ALLOWED}.") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path}: is not JSON (not UTF-8 text); {ALLOWED}.") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ReportError(f"{path}: is not JSON ({getattr(exc, 'msg', exc)} at line "
                          f"{getattr(exc, 'lineno', '?')}); {ALLOWED}.") from None
    return data


# -- pieces of a result ----------------------------------------------------------------


def config_paths(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested config data as TOML-like key paths (``tlb.levels[0].ways``) and leaf values."""
    if isinstance(data, dict) and data:
        return [kv for k, v in data.items() for kv in config_paths(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(data, list) and data and any(isinstance(v, (dict, list)) for v in data):
        return [kv for i, v in enumerate(data) for kv in config_paths(v, f"{prefix}[{i}]")]
    return [(prefix, data)]


def toml_text(value: Any) -> str:
    """A config value as TOML writes it (``"x"``, ``true``, ``[1, 2]``); None as ``(none)``."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_text, value)) + "]"
    return "{}" if value == {} else json.dumps(value, ensure_ascii=False)


def split_vm_metrics(metrics: Mapping[str, Any], vm_names: Iterable[str]
                     ) -> tuple[dict[str, Any], dict[tuple[str | None, str], dict[str, Any]]]:
    """The metrics without scoped keys, and (VM, sub-scope or "") -> that scope's metrics
    from ``vm.<vm>.<metric>``, ``vm.<vm>.asid.<n>.<metric>`` and ``vm.<vm>.vcpu.<k>.<metric>``
    (VM names may hold dots; the sub-scope is ``asid.<n>`` or ``vcpu.<k>``), and
    (None, ``core.<n>``) from ``core.<n>.<metric>``; with these, ``between_records.<metric>``
    is the scope (None, "") (:func:`slatframe.scope_metrics.split_scopes`)."""
    main, scopes = split_scopes(metrics, list(vm_names))
    scoped = {(vm, sub or ""): values for (vm, sub), values in scopes.items() if (vm, sub) != (None, None)}
    between = scopes.get((None, None))
    if between is not None:
        if scoped:
            scoped[(None, "")] = between
        else:
            main.update({f"between_records.{k}": v for k, v in between.items()})
    return main, scoped


def hit_rates(metrics: Mapping[str, Any], level_order: Sequence[str] = ()) -> list[tuple[str, float]]:
    """(level, hits / (hits + misses)) per TLB level with lookups, in ``level_order`` first:
    the ``derived.tlb.<level>.hit_rate`` metrics."""
    head, tail = "derived.tlb.", ".hit_rate"
    levels = [k[len(head):-len(tail)] for k in metrics if k.startswith(head) and k.endswith(tail)]
    levels.sort(key=lambda n: (level_order.index(n) if n in level_order else len(level_order), n))
    return [(name, metrics[f"{head}{name}{tail}"]) for name in levels]


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e6 else f"{value:.6g}"
    return str(value)


def _figure(kind: str, svg: str, caption: str) -> str:
    return (f'<figure class="figure" data-figure="{esc(kind)}">{svg}'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def _omitted(kind: str, sentence: str) -> str:
    return f'<p class="omitted" data-figure-omitted="{esc(kind)}">{esc(sentence)}</p>'


def _metric_table(metrics: Mapping[str, Any]) -> str:
    rows = "".join(f'<tr data-metric="{esc(k)}"><td>{esc(k)}</td>' + (
        f'<td class="num" data-value="{number(v)}">' if _numeric(v) else f'<td data-text="{esc(v)}">')
        + f"{esc(_fmt(v))}</td></tr>" for k, v in sorted(metrics.items()))  # text: consolidation.binding
    return f'<table class="metrics" data-table="metrics"><tr><th>metric</th><th>value</th></tr>{rows}</table>'


def _scope_order(scope: tuple[str | None, str]) -> tuple:
    vm, sub = scope
    kind, _, n = sub.partition(".")
    return (vm is None, kind != "core", vm or "", kind, int(n or 0))


def _vm_table(scoped: Mapping[tuple[str | None, str], Mapping[str, Any]]) -> str:
    """One row per core, per VM, per vCPU and per address space, and for work between records."""
    columns = sorted({m for values in scoped.values() for m in values})
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for (vm, sub), values in sorted(scoped.items(), key=lambda kv: _scope_order(kv[0])):
        cells = "".join(f'<td class="num" data-metric="{esc(c)}" data-value="{number(values[c])}">'
                        f"{esc(_fmt(values[c]))}</td>" if c in values else "<td>-</td>" for c in columns)
        kind, _, n = sub.partition(".")
        if vm is None:
            scope = f'data-core="{esc(n)}"' if kind == "core" else 'data-scope="between_records"'
            label = (f"core {n}", "all") if kind == "core" else ("(between records)", "-")
        else:
            scope = f'data-vm="{esc(vm)}" ' + (f'data-vcpu="{esc(n)}"' if kind == "vcpu" else
                                               f'data-asid="{esc(n)}"')
            label = (vm, f"vCPU {n}" if kind == "vcpu" else f"asid {n}" if kind == "asid" else "all")
        body.append(f"<tr {scope}><td>{esc(label[0])}</td><td>{esc(label[1])}</td>{cells}</tr>")
    return (f'<div class="scroll"><table class="per-vm" data-table="per-vm"><tr><th>core or VM</th><th>scope</th>'
            f"{head}</tr>{''.join(body)}</table></div>")


def _config_table(config: Any) -> str:
    rows = "".join(f"<tr><td><code>{esc(k)}</code></td><td><code>{esc(toml_text(v))}</code></td></tr>"
                   for k, v in config_paths(config))
    return f'<table class="config" data-table="config"><tr><th>key</th><th>value</th></tr>{rows}</table>'


#: what the per-core figure shows of each core, per 1,000 of its accesses: (label, metric)
PER_CORE = (("TLB misses (last level)", None), ("walks", "walks"), ("VM exits", "vm_exits"),
            ("IPIs received", "ipi.received"))


def per_core_figure(scoped: Mapping[tuple[str | None, str], Mapping[str, Any]], levels: Sequence[str]) -> str | None:
    """Each core's walks, last-level TLB misses, VM exits and IPIs received per 1,000 of its
    accesses (a machine of several cores), or None."""
    cores = sorted((int(sub[5:]), counts) for (vm, sub), counts in scoped.items()
                   if vm is None and sub.startswith("core.") and sub[5:].isdigit())
    if len(cores) < 2:
        return None
    series: dict[str, list[float | None]] = {}
    for label, name in PER_CORE:
        name = name or (f"tlb.{levels[-1]}.misses" if levels else "")
        values = [1000 * counts.get(name, 0) / counts["accesses"] if _numeric(counts.get("accesses")) and
                  counts.get("accesses") and _numeric(counts.get(name, 0)) else None for _, counts in cores]
        if any(values):
            series[label] = values
    if not series:
        return None
    return _figure("per-core", grouped_bar_chart([f"core {n}" for n, _ in cores], series,
                                                 "Per core, per 1,000 of its accesses", "", "per 1,000 accesses"),
                   "core.<n>.walks, core.<n>.tlb.<last level>.misses, core.<n>.vm_exits and core.<n>.ipi.received, "
                   "each per 1,000 core.<n>.accesses")


def result_figures(result: Mapping[str, Any], metrics: Mapping[str, Any],
                   scoped: Mapping[tuple[str | None, str], Mapping[str, Any]] | None = None) -> list[str]:
    """The result's figures (or the sentence that replaces one): TLB hit rates, walk
    references per walk, VM exits by reason, each core's misses, walks, exits and IPIs
    (a machine of several cores), dedup over time."""
    m, out = metrics, []
    tlb = result["config"].get("tlb")
    levels = tlb.get("levels") if isinstance(tlb, dict) else None
    order = [lv.get("name") for lv in levels if isinstance(lv, dict)] if isinstance(levels, list) else []
    rates = hit_rates(m, order)
    out.append(_figure("tlb-hit-rates", bar_chart(rates, "TLB hit rate per level", "hit rate", 1.0),
                       "hits / (hits + misses) of each TLB level") if rates else
               _omitted("tlb-hit-rates", "No TLB lookups, so no hit rates."))
    walks = m.get("walks", 0)
    per_walk = [(label, m[f"derived.refs_per_walk{tail}"]) for label, tail in
                (("guest", "_guest"), ("host", "_host"), ("all", "")) if f"derived.refs_per_walk{tail}" in m]
    if per_walk:
        out.append(_figure("walk-refs", bar_chart(per_walk, "Walk references per walk", "references per walk"),
                           f"walk.refs_guest, walk.refs_host and walk.refs divided by walks ({walks:,}): "
                           "derived.refs_per_walk_guest, _host and derived.refs_per_walk; a 1D walk has no "
                           "host references"))
    else:
        out.append(_omitted("walk-refs", "No page walks, so no walk references per walk."))
    exits = sorted(((k[9:], v) for k, v in m.items() if k.startswith("vm_exits.") and v), key=lambda kv: -kv[1])
    out.append(_figure("vm-exits", bar_chart(exits, "VM exits by reason", "exits"),
                       "vm_exits.<reason> counts") if exits else _omitted("vm-exits", "No VM exits."))
    cores = per_core_figure(scoped or {}, [name for name in order if isinstance(name, str)])
    if cores is not None:
        out.append(cores)
    dedup = (result.get("series") or {}).get("dedup")
    points = [p for p in dedup if isinstance(p, dict) and _numeric(p.get("records"))] if isinstance(dedup, list) else []
    keys = [k for k in ("dedup.bytes_saved", "dedup.host_bytes_in_use") if any(_numeric(p.get(k)) for p in points)]
    if keys:
        lines = {k: ([p["records"] for p in points if _numeric(p.get(k))],
                     [p[k] / MIB for p in points if _numeric(p.get(k))]) for k in keys}
        out.append(_figure("dedup", line_chart(lines, "Dedup over time", "trace records", "MiB"),
                           "memory saved and host memory in use (MiB) at each dedup wake-up"))
    else:
        out.append(_omitted("dedup", "No dedup series (the run had no [dedup] table), so dedup over time is "
                                     "not shown."))
    return out


def result_sections(result: Mapping[str, Any], h: int = 2) -> str:
    """The body of one result: provenance, figures, metric tables, config."""
    config = result["config"]
    vms = config.get("vms") if isinstance(config.get("vms"), list) else []
    vm_names = [v["name"] for v in vms if isinstance(v, dict) and isinstance(v.get("name"), str)]
    metrics, scoped = split_vm_metrics(with_derived(result["metrics"], config), vm_names)
    facts = [("name", result.get("name")), ("seed", result.get("seed")),
             ("engine", f"{result.get('engine', '?')} ({result.get('engine_reason', 'no reason recorded')})"),
             ("version", result.get("version")),
             ("wall time", f"{result.get('wall_time_s', 0):.3g} s, of which {result.get('compile_time_s', 0):.2f} s "
                           "compiling or loading the engine")]
    notes = result.get("workload_notes")
    if isinstance(notes, dict) and notes:
        facts.append(("workload", ", ".join(f"{k} = {v}" for k, v in notes.items())))
    memory = memory_text(result.get("memory"))
    if memory:
        facts.append(("memory", memory))
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    warnings = result.get("warnings") or []
    warn = (f'<ul class="warnings">{"".join(f"<li>{esc(w)}</li>" for w in warnings)}</ul>' if warnings
            else "<p>No warnings.</p>")
    parts = [f'<dl class="facts">{dl}</dl>', f"<h{h}>Warnings</h{h}>{warn}", f"<h{h}>Figures</h{h}>",
             '<div class="figures">', *result_figures(result, metrics, scoped), "</div>",
             f"<h{h}>Metrics</h{h}>", _metric_table(metrics)]
    if scoped:
        between = "; work between trace records (dedup wake-ups) is a row of its own" if (None, "") in scoped else ""
        cores = "core, per " if any(vm is None and sub for vm, sub in scoped) else ""
        parts += [f"<h{h}>Per-VM metrics</h{h}>", f"<p>One row per {cores}VM (scope <em>all</em>), per vCPU and "
                  f"per address space{between}.</p>", _vm_table(scoped)]
    parts += [f"<h{h}>Config</h{h}>", f"<details><summary>resolved config ({len(config_paths(config))} keys)"
              f"</summary>{_config_table(config)}</details>"]
    return "".join(parts)


# -- pages -----------------------------------------------------------------------------


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1400px;
padding:16px 24px;color:#1d1d1d}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:24px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px}table{border-collapse:collapse;margin:6px 0}
th,td{border:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}.scroll{overflow-x:auto}
.per-vm td:first-child{white-space:nowrap}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px}dt{font-weight:600}dd{margin:0}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px}
figure{margin:0;border:1px solid #e3e3e3;padding:6px;background:#fff}svg.chart{width:100%;height:auto}
figcaption{font-size:12px;color:#555;max-width:640px}.omitted{color:#555;font-style:italic}
.warnings li{color:#8a4b00}details.point{border:1px solid #ddd;margin:6px 0;padding:4px 10px}
details.point>summary{cursor:pointer;font-weight:600}
""" + CHART_CSS


def page(title: str, body: str) -> str:
    """A whole HTML document: inline CSS, no scripts, nothing fetched."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
            f"<body>\n{body}\n</body></html>\n")


def result_page(result: Mapping[str, Any], where: str) -> str:
    """The report of one result."""
    title = f"slatframe result: {result.get('name')}"
    return page(title, f"<h1>{esc(title)}</h1><p>from <code>{esc(where)}</code></p>" + result_sections(result))


def _sweep_charts(rows: list[Row], axes: list[str], metrics: Sequence[str] | None, where: str) -> list[str]:
    """``slatframe plot DIR --x AXIS --y METRIC [--hue OTHER]`` for each axis and metric."""
    table = [{**{k: _number(cell(v)) for k, v in r.cells.items()}, **r.metrics} for r in rows if r.metrics]
    if not table:
        return [_omitted("sweep", "No point has a result yet, so there is nothing to plot.")]
    last = next((r.last_tlb for r in rows if r.last_tlb), "")
    wanted = list(metrics) if metrics else [m.format(last=last) for m in SWEEP_METRICS
                                             if any(m.format(last=last) in t for t in table)]
    out = []
    for x in axes:
        others = [a for a in axes if a != x]
        hue = others[0] if len(others) == 1 else ("other axes" if others else None)
        if len(others) > 1:
            for t in table:
                t["other axes"] = ", ".join(f"{a}={t.get(a)}" for a in others)
        for y in wanted:
            series = xy_series(table, x, y, hue, where)
            names = {str(k): v for k, v in series.items()}
            xs = list(dict.fromkeys(t[x] for t in table if x in t))
            xs.sort(key=lambda v: (isinstance(v, str), 0 if isinstance(v, str) else v))
            title = f"{y} against {x}"
            if all(isinstance(v, (int, float)) for v in xs):
                log = bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 100
                svg = line_chart(names, title, x, y, log_x=log, legend_title=hue)
            else:
                by = {k: dict(zip(*v)) for k, v in names.items()}
                svg = grouped_bar_chart(xs, {k: [d.get(c) for c in xs] for k, d in by.items()}, title, x, y,
                                        legend_title=hue)
            out.append(f'<figure class="figure" data-figure="sweep" data-x="{esc(x)}" data-y="{esc(y)}">{svg}'
                       f"<figcaption>slatframe plot {esc(where)} --x {esc(x)} --y {esc(y)}"
                       f"{' --hue ' + esc(hue) if hue in axes else ''}</figcaption></figure>")
    return out


def sweep_page(folder: Path, metrics: Sequence[str] | None = None) -> str:
    """The report of a sweep folder: its plots, a table of points, a section per point."""
    if not (folder / MANIFEST).is_file():
        raise ReportError(f"{folder}: is a folder without {MANIFEST}, so it is not a sweep's output folder; "
                          f"{ALLOWED}.")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        axes = [str(a) for a in manifest["axes"]]
        if not all(isinstance(e, dict) and {"index", "point", "values"} <= set(e) for e in manifest["points"]):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ReportError(f"{folder / MANIFEST}: is not a sweep manifest; {ALLOWED}.") from None
    rows = gather(folder)
    results = {r.point: check_result(json.loads((folder / "points" / f"{r.point}.json").read_text(encoding="utf-8")),
                                     str(folder / "points" / f"{r.point}.json")) for r in rows if r.metrics}
    failed = sum(1 for r in rows if r.metrics is None)
    title = f"slatframe sweep: {folder.name or folder}"
    intro = (f"<h1>{esc(title)}</h1><p>Folder <code>{esc(folder)}</code>, sweep file "
             f"<code>{esc(manifest.get('config', '?'))}</code>, mode {esc(manifest.get('mode', '?'))}, "
             f"axes {esc(', '.join(axes))}: {len(rows)} points, {len(results)} with a result, {failed} without.</p>")
    parts = [intro, "<h2>Plots</h2>", '<div class="figures">', *_sweep_charts(rows, axes, metrics, str(folder)),
             "</div>", "<h2>Points</h2>", _points_table(rows, axes), "<h2>Each point</h2>"]
    for r in rows:
        values = ", ".join(f"{k} = {cell(v)}" for k, v in r.cells.items())
        inner = result_sections(results[r.point], 3) if r.point in results else \
            f'<p class="omitted">No result: {esc(r.error)}</p>'
        parts.append(f'<details class="point" id="point-{r.index + 1}" data-point="{esc(r.point)}"><summary>'
                     f"point {r.index + 1}: {esc(values)}</summary>{inner}</details>")
    return page(title, "".join(parts))


def _points_table(rows: list[Row], axes: list[str]) -> str:
    head = "".join(f"<th>{esc(a)}</th>" for a in axes)
    out = []
    for r in rows:
        m = r.metrics
        cells = "".join(f"<td>{esc(cell(r.cells.get(a)))}</td>" for a in axes)
        if m is None:
            figures = f'<td colspan="5">failed: {esc((r.error or "").splitlines()[0] if r.error else "")}</td>'
        else:
            figures = "".join(f'<td class="num">{esc(_fmt(v))}</td>' for v in (
                m.get("accesses", 0), m.get("derived.refs_per_walk", "-"),
                m.get(f"tlb.{r.last_tlb}.misses", 0), m.get("vm_exits", 0), m.get("cycles.total", "-")))
        out.append(f'<tr data-point="{esc(r.point)}"><td><a href="#point-{r.index + 1}">{r.index + 1}</a></td>'
                   f"{cells}{figures}</tr>")
    return (f'<table class="points" data-table="points"><tr><th>#</th>{head}<th>accesses</th><th>refs/walk</th>'
            f"<th>last TLB misses</th><th>VM exits</th><th>cycles</th></tr>{''.join(out)}</table>")


# -- writing ---------------------------------------------------------------------------


def write_report(source: str | Path, out: str | Path, metrics: Sequence[str] | None = None) -> Path:
    """Write the report of the result file or sweep folder ``source`` to ``out``
    (atomically); ``metrics``: what a sweep page plots instead of the default."""
    src, out = Path(source), check_output_file(out, "--out")
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise ReportError(f"--out {out}: is the input itself; choose another file for the report.")
    if src.is_dir():
        text = sweep_page(src, metrics)
    else:
        if metrics:
            raise ReportError(f"{src}: --y chooses what a sweep folder's report plots; a result file's report "
                              "shows its figures without it.")
        data = read_json(src)
        if is_calibration(data):
            problem = calibration_problem(data)
            if problem:
                raise ReportError(f"{src}: is a damaged calibration.json ({problem}); run slatframe calibrate "
                                  "again to write a new one.")
            text = calibration_page(data, str(src))
        else:
            text = result_page(check_result(data, str(src)), str(src))
    write_atomic(out, text)
    return out


def report(result_or_path: Any, out: str | Path) -> Path:
    """Write the HTML report of a :class:`~slatframe.results.Result`, its dict, a result
    file or a sweep folder to ``out``; return ``out``."""
    if isinstance(result_or_path, (str, Path)):
        return write_report(result_or_path, out)
    data = result_or_path.to_dict() if hasattr(result_or_path, "to_dict") else result_or_path
    data = check_result(json.loads(json.dumps(data, default=str)), "the result")
    path = check_output_file(out, "out")
    write_atomic(path, result_page(data, f"result {data.get('name')}"))
    return path
