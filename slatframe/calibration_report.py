"""The report of a ``slatframe calibrate`` run (its calibration.json): the measured and the
modelled cycles per access against the footprint, log scale, per page size, and every
point's error (``slatframe report calibration.json --out page.html``)."""
from __future__ import annotations

import math
from typing import Any, Mapping

from .svg_charts import esc, line_chart

#: What a calibration.json holds, as the report reads it: key -> the kind of its value.
TOP = {"machine": dict, "ghz": "positive", "latencies": dict, "fits": list, "points": list, "seconds": "number",
       "access_overlap": "number"}
POINT = {"footprint": "bytes", "page": str, "huge_fraction": "number", "ns": "positive",
         "ns_independent": "number", "cycles": "positive", "modelled": "number", "error": "number", "role": str}
FIT = {"rms_error": "number", "choice_error": "number"}
LATENCIES = ("tlb2", *(f"{kind}.{level}" for kind in ("data", "walk") for level in ("l1d", "l2", "llc", "memory")))


def is_calibration(data: Any) -> bool:
    """Whether ``data`` (a JSON file's content) is meant as a calibration.json: it has the
    keys only calibrate writes (check it with :func:`calibration_problem`)."""
    return isinstance(data, dict) and {"machine", "latencies", "points", "ghz"} <= data.keys()


def _kind_problem(value: Any, kind: Any) -> str | None:
    if kind == "bytes":
        return None if isinstance(value, int) and not isinstance(value, bool) and value > 0 else \
            "is not a positive whole number of bytes"
    if kind in ("number", "positive"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return "is not a finite number"
        return "is not positive" if kind == "positive" and value <= 0 else None
    names = {dict: "an object", list: "an array", str: "a string"}
    return None if isinstance(value, kind) else f"is not {names[kind]}"


def calibration_problem(data: dict[str, Any]) -> str | None:
    """The first key path of ``data`` the report cannot read, with why; None if none."""
    checks: list[tuple[str, Any, Any]] = [(k, data.get(k), kind) for k, kind in TOP.items()]
    machine, latencies = data.get("machine"), data.get("latencies")
    if isinstance(machine, dict):
        checks.append(("machine.cpu", machine.get("cpu"), str))
    if isinstance(latencies, dict):
        checks += [(f"latencies[{k!r}]", latencies.get(k), "number") for k in LATENCIES]
    if data.get("host_page") is not None:
        checks.append(("host_page", data["host_page"], str))
    if "measure_seconds" in data:
        checks.append(("measure_seconds", data["measure_seconds"], "number"))
    for name, items, fields in (("points", data.get("points"), POINT), ("fits", data.get("fits"), FIT)):
        for i, item in enumerate(items if isinstance(items, list) else ()):
            if not isinstance(item, dict):
                return f"{name}[{i}] is not a JSON object"
            checks += [(f"{name}[{i}].{k}", item.get(k), kind) for k, kind in fields.items()]
            if name == "fits" and item.get("host_page") is not None:
                checks.append((f"fits[{i}].host_page", item["host_page"], str))
            if name == "points" and "spread" in item:  # written since the second pass
                checks.append((f"points[{i}].spread", item["spread"], "number"))
    for where, value, kind in checks:
        if value is None:
            return f"{where} is missing"
        problem = _kind_problem(value, kind)
        if problem:
            return f"{where} {problem}"
    return None if data["points"] else "points is empty"


def curve_svg(summary: Mapping[str, Any]) -> str:
    """Measured and modelled cycles per access against the footprint (KiB, log), per page size."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for p in summary["points"]:
        for what, value in (("measured", p["cycles"]), ("modelled", p["modelled"])):
            xs, ys = series.setdefault(f"{what}, {p['page']} pages", ([], []))
            xs.append(p["footprint"] / 1024)
            ys.append(value)
    return line_chart(series, f"{summary['machine']['cpu']}: a dependent chase, one line per page",
                      "footprint (KiB)", "cycles per access", log_x=True, legend_title="")


def calibration_page(summary: Mapping[str, Any], where: str) -> str:
    """The whole report page (``summary`` checked by :func:`calibration_problem`)."""
    from .calibrate import report_lines
    from .html_report import page

    text = "\n".join(report_lines(dict(summary)))
    body = (f"<h1>slatframe calibrate: {esc(summary['machine']['cpu'])}</h1><p>from <code>{esc(where)}</code></p>"
            f'<figure class="figure" data-figure="calibration">{curve_svg(summary)}<figcaption>measured (CPU time x '
            f"the dependent-add clock, {summary['ghz']:.3f} GHz) and modelled cycles per access</figcaption></figure>"
            f"<pre>{esc(text)}</pre>")
    return page(f"slatframe calibrate: {summary['machine']['cpu']}", body)
