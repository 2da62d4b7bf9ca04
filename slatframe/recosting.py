"""``slatframe recost``: every cycle figure, the consolidation figures and the derived
metrics of a result (or of every point of a sweep folder) computed again from the
counters it saved, with other costs, without simulating again (docs/cost-models.md,
"Re-costing a result").

Only what enters after the run may change: keys under ``cost.`` and ``consolidation.``,
and ``tlb.levels[<i>].latency``. The data caches a ``cache-aware`` model counts are
simulated during the run, so their geometry may not change, and a model that reads
``dcache.*`` counters cannot take over a run that counted none. The result's own cycle
figures are first recomputed from its counters with its own config and must come out
as stored: a result written by another version of the cost formulas, or edited, is
refused rather than re-costed inexactly.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import attrs

from . import __version__
from .config import (Config, apply_override, check_consolidation, check_plugin_options, config_facts,
                     parse_override, plugin_files, shown)
from .consolidation import consolidation_metrics
from .cost_figures import cost_record, costed_metrics, data_cache_spec
from .derived import is_derived, vm_names_of
from .errors import ConfigError, SlatframeError
from .gather import MANIFEST, Row, gather, result_row, write_tables
from .options import BuildContext, build, resolve_plugin, to_plain
from .results import OutputError, Result, check_output_dir, check_output_file, make_dirs, write_atomic
from .scope_metrics import Scope, prefix, split_scopes
from .units import format_size

#: What ``--set`` may change in a re-cost.
ALLOWED = "keys under cost. or consolidation., or tlb.levels[<i>].latency"
#: The cost table keys that choose the values of the others.
CHOOSERS = ("model", "preset", "preset_file")

Override = tuple[list[Any], Any, str]  #: (key path, value, the text as given)


@attrs.frozen
class Recosted:
    """A re-costed result file: its data (what the file holds) and where it came from."""

    data: dict[str, Any]
    source: Path

    def result(self) -> Result:
        """As a :class:`~slatframe.results.Result` (fields a newer version added are only in ``data``)."""
        return Result(**{f.name: self.data[f.name] for f in attrs.fields(Result) if f.name in self.data})


def parse_sets(texts: Iterable[str]) -> list[Override]:
    """``KEY=VALUE`` texts as overrides, each checked to change a cost only."""
    out = []
    for text in texts:
        keys, value = parse_override(text)
        if not allowed(keys):
            key = text.split("=", 1)[0].strip()
            raise ConfigError(f"--set {shown(text)}: {shown(key)} is not allowed in a re-cost, which changes only "
                              f"what is computed after a run ({ALLOWED}); anything else changes what the run "
                              "counted, so run it again with slatframe run.")
        out.append((keys, value, text))
    return out


def allowed(keys: Sequence[Any]) -> bool:
    """Whether the key path ``keys`` names a cost: a key under ``cost`` or
    ``consolidation`` (or the table itself), or a TLB level's latency."""
    if keys[0] in ("cost", "consolidation"):
        return True
    return len(keys) == 4 and keys[:2] == ["tlb", "levels"] and isinstance(keys[2], int) and keys[3] == "latency"


# -- configs ---------------------------------------------------------------------------


class _Registries:
    """One registry per set of plugin files, made on first use."""

    def __init__(self) -> None:
        self.made: dict[tuple[Path, ...], Any] = {}

    def __call__(self, raw: dict[str, Any], where: str) -> Any:
        from .registry import Registry

        files = tuple(plugin_files(raw, Path.cwd(), where))  # a resolved config names them by absolute paths
        if files not in self.made:
            self.made[files] = Registry(files=list(files))
        return self.made[files]


def _config(raw: dict[str, Any], where: str, registry: Any) -> Config:
    """The config of a result's config data. Its paths are already resolved, and its input
    files need not exist any more (a re-cost reads none of them), so they are not checked;
    the cost and consolidation options are checked as a run checks them."""
    ctx = BuildContext(where=where, registry=registry)  # no base_dir: files are not looked at
    config = build(Config, raw, "", ctx)
    check_plugin_options("cost", config.cost, config_facts(config, registry), ctx)
    check_consolidation(config, ctx)
    return config


def _cost_table(raw: dict[str, Any], overrides: list[Override], where: str, registry: Any) -> Any:
    """The ``[cost]`` table the overrides apply to. A result stores every resolved value,
    so when an override changes ``cost.model``, ``cost.preset`` or ``cost.preset_file``,
    the values the old model and preset gave by themselves are left out, for the new ones
    to give theirs; values written apart from them (they differ) are kept where the new
    model has them, and the old model and preset unless the override replaces them (a
    preset file names its model)."""
    table = raw.get("cost")
    chosen = {keys[1]: value for keys, value, _ in overrides if keys[0] == "cost" and len(keys) == 2
              and keys[1] in CHOOSERS}
    if not isinstance(table, dict) or not chosen or all(table.get(k) == v for k, v in chosen.items()):
        return table
    by_file = "preset_file" in chosen
    model = chosen.get("model", None if by_file else table.get("model"))
    known = isinstance(model, str) and model in registry.names("cost models")
    if not known and not by_file:
        return table  # the build names what is wrong
    ctx = BuildContext(where=where, registry=registry)
    own = {k: table[k] for k in ("model", "preset") if k in table}
    given = to_plain(resolve_plugin("cost models", "model", own, "cost", ctx), "model")
    fields = {f.name for f in attrs.fields(registry.get("cost models", model).options)} if known else None
    kept = {k: v for k, v in table.items() if k not in CHOOSERS and (fields is None or k in fields)
            and given.get(k, v) != v}
    head = {} if by_file else {k: v for k, v in own.items() if k == "model" or k in (fields or ())}
    return {**head, **kept}


def recosted_config(data: dict[str, Any], overrides: list[Override], where: str,
                    registries: _Registries) -> tuple[Config, Config, Any, dict[str, Any]]:
    """The result's config, the config with the overrides, their registry, and the new
    config's data as the re-costed result stores it."""
    raw = json.loads(json.dumps(data["config"]))
    registry = registries(raw, where)
    old = _config(raw, where, registry)
    new_raw = json.loads(json.dumps(raw))
    new_raw["cost"] = _cost_table(new_raw, overrides, where, registry)
    if new_raw.get("consolidation", {}) is None:
        del new_raw["consolidation"]  # none, as a config without the table: --set may add one
    for keys, value, text in overrides:
        try:
            apply_override(new_raw, keys, value, text)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    new = _config(new_raw, where, registry)
    _check_data_caches(old, new, registry, where)
    changed = new.to_dict()
    stored = {**data["config"], **{k: changed[k] for k in ("cost", "consolidation", "tlb")}}
    return old, new, registry, stored


def _caches_text(spec: Any) -> str:
    if spec is None:
        return "none"
    levels = ", ".join(f"{lv.name} {format_size(lv.size)} {lv.ways}-way" for lv in spec.levels)
    return f"{levels}, {'with' if spec.data_accesses else 'without'} data accesses"


def _check_data_caches(old: Config, new: Config, registry: Any, where: str) -> None:
    before, after = data_cache_spec(old, registry), data_cache_spec(new, registry)
    if after is None or after == before:
        return
    if before is None:
        raise ConfigError(f"{where}: cost.model = {new.cost.name!r} charges references at the data-cache level "
                          f"that served them, which only a run through those caches counts (dcache.* counters), "
                          f"and this run had cost.model = {old.cost.name!r}, which counts none; run it again with "
                          f"--set cost.model={new.cost.name}.")
    raise ConfigError(f"{where}: the new costs change the data caches the run counted (it ran through "
                      f"{_caches_text(before)}; the new costs ask for {_caches_text(after)}), and those are "
                      "simulated during the run: a re-cost may change their latencies only, so run it again "
                      "for other caches.")


# -- counts ------------------------------------------------------------------------------


def saved_counts(metrics: dict[str, Any], config: Config, registry: Any, where: str
                 ) -> tuple[dict[str, Any], dict[Scope, dict[str, Any]]]:
    """The counters a result saved, for the totals and for each scope: its metrics without
    the cost model's, the consolidation and the derived figures, after checking that
    those come out from the counters as stored."""
    model = cost_record(config, registry).factory(config.cost.options)
    totals, scopes = split_scopes(metrics, vm_names_of(config))
    vm_names = set(vm_names_of(config))
    for scope in scopes:
        if scope[0] is not None and scope[0] not in vm_names:
            raise SlatframeError(f"{where}: metrics[{json.dumps(prefix(scope) + '.')}...] are of a VM its config "
                                 "does not have, so this is not a result as slatframe run writes it.")
    out_totals = _counts(totals, model, config, where, "", config.consolidation is not None)
    out_scopes = {scope: _counts(part, model, config, where, prefix(scope) + ".", False)
                  for scope, part in scopes.items()}
    return out_totals, out_scopes


def _counts(part: dict[str, Any], model: Any, config: Config, where: str, head: str,
            consolidation: bool) -> dict[str, Any]:
    """One scope's counters, its stored figures checked against the same code."""
    try:
        figures = set(model.cycles(part, config))
        counts = {k: v for k, v in part.items() if not (is_derived(k) or k in figures or
                                                         (consolidation and k.startswith("consolidation.")))}
        again = model.cycles(counts, config)
        if consolidation:
            again.update(consolidation_metrics({**counts, **again}, config.consolidation))
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise SlatframeError(f"{where}: its {head or 'total '}counters cannot be costed by its cost model "
                             f"({type(exc).__name__}: {exc}), so this is not a result as slatframe run writes "
                             "it.") from None
    for key, value in again.items():
        if key not in part or part[key] != value:
            stored = repr(part[key]) if key in part else "missing"
            raise SlatframeError(f"{where}: metrics[{json.dumps(head + key)}] is {stored}, but its cost model "
                                 f"gives {value!r} from its counters and config: it was written by another "
                                 "version of the cost formulas or changed since, so it cannot be re-costed "
                                 "exactly; run it again.")
    return counts


def recost_data(data: dict[str, Any], overrides: list[Override], where: str, texts: Sequence[str],
                registries: _Registries | None = None, source: str | None = None) -> dict[str, Any]:
    """A result's data re-costed with ``overrides``; ``where`` names it in errors, and the
    re-costed result records ``source`` (default ``where``) and ``texts`` (the overrides
    as given)."""
    registries = registries or _Registries()
    old, new, registry, config = recosted_config(data, overrides, where, registries)
    totals, scopes = saved_counts(data["metrics"], old, registry, where)
    before, after = data_cache_spec(old, registry), data_cache_spec(new, registry)
    if before is not None and after is None:  # the new model reads no dcache.* counters: a run of it has none
        dropped = set(before.counter_names())
        totals = {k: v for k, v in totals.items() if k not in dropped}
        scopes = {s: {k: v for k, v in part.items() if k not in dropped} for s, part in scopes.items()}
    metrics = costed_metrics(new, registry, totals, scopes)
    recosted = {"source": source or where, "set": list(texts), "version": __version__}
    if data.get("recosted") is not None:
        recosted["previous"] = data["recosted"]
    return {**data, "metrics": metrics, "config": config, "recosted": recosted}


# -- files and folders -----------------------------------------------------------------


def recost_file(source: str | Path, texts: Sequence[str], out: str | Path | None = None) -> Recosted:
    """Re-cost the result file ``source``; with ``out``, write the re-costed result there
    (never over ``source``)."""
    from .html_report import load_result

    overrides = parse_sets(texts)
    source = Path(source)
    target = _check_file_out(source, out) if out is not None else None
    data = load_result(source)
    done = Recosted(recost_data(data, overrides, str(source), texts, source=str(source.resolve())), source)
    if target is not None:
        write_atomic(target, json.dumps(done.data, indent=2) + "\n")
    return done


def _check_file_out(source: Path, out: str | Path) -> Path:
    target = check_output_file(out, "--out")
    try:
        same = target.exists() and source.exists() and os.path.samefile(target, source)
    except OSError:
        same = False
    if same:
        raise OutputError(f"--out {target}: is the input itself; write the re-costed result to another file.")
    return target


def recost_folder(source: str | Path, texts: Sequence[str], out: str | Path | None = None) -> list[Row]:
    """Re-cost every point of the sweep folder ``source``; return the re-costed rows (as
    :func:`slatframe.gather.gather` gives them). With ``out``, a new folder, write there
    ``sweep.json`` (saying what was re-costed), ``points/<hash>.json`` (the re-costed
    results, under their points' names), the error files of the points without a result,
    and the tables."""
    from .html_report import check_result

    overrides = parse_sets(texts)
    source = Path(source)
    target = _check_folder_out(source, out) if out is not None else None
    manifest = _manifest(source)
    registries = _Registries()
    done: dict[str, dict[str, Any]] = {}
    rows = []
    for entry in manifest["points"]:
        h = entry["point"]
        path = source / "points" / f"{h}.json"
        if path.exists():
            if h not in done:
                try:
                    data = check_result(json.loads(path.read_text(encoding="utf-8")), str(path))
                except (ValueError, UnicodeDecodeError):
                    raise SlatframeError(f"{path}: is not valid JSON, so the sweep folder cannot be re-costed; "
                                         "run the sweep again to redo that point.") from None
                done[h] = recost_data(data, overrides, str(path), texts, registries, str(path.resolve()))
            rows.append(result_row(entry, done[h]))
        else:
            error = source / "points" / f"{h}.error.txt"
            text = error.read_text(errors="replace").strip() if error.exists() else "not run"
            rows.append(Row(entry["index"], h, entry["values"], None, error=text or "failed"))
    if target is None:
        return rows
    points = target / "points"
    make_dirs(points)
    for h, data in done.items():
        write_atomic(points / f"{h}.json", json.dumps(data, indent=2) + "\n")
    for row in rows:
        error = source / "points" / f"{row.point}.error.txt"
        if row.metrics is None and error.exists():
            write_atomic(points / error.name, error.read_text(errors="replace"))
    recosted = {"source": str(source.resolve()), "set": list(texts), "version": __version__}
    write_atomic(target / MANIFEST, json.dumps({**manifest, "recosted": recosted}, indent=2) + "\n")
    rows = gather(target)
    write_tables(target, rows)
    return rows


def _manifest(source: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(manifest.get("points"), list) or not all(
                isinstance(e, dict) and {"index", "point", "values"} <= set(e) for e in manifest["points"]):
            raise ValueError
        return manifest
    except FileNotFoundError:
        raise SlatframeError(f"{source}: has no {MANIFEST}, so it is not a sweep's output folder; give a result "
                             "JSON file or a sweep folder (as slatframe sweep --out writes it).") from None
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise SlatframeError(f"{source / MANIFEST}: is not a sweep manifest, so the folder cannot be "
                             "re-costed.") from None


def _check_folder_out(source: Path, out: str | Path) -> Path:
    target = check_output_dir(out, "--out")
    try:
        same = target.exists() and os.path.samefile(target, source)
        holds = target.is_dir() and any(target.iterdir())
    except OSError as exc:
        raise OutputError(f"--out {target}: cannot be read ({exc.strerror or type(exc).__name__}).") from None
    if same:
        raise OutputError(f"--out {target}: is the input itself; give a new folder for the re-costed sweep.")
    if holds:
        raise OutputError(f"--out {target}: is a folder that holds files already; a re-cost writes a whole new "
                          "sweep folder, so give a new or empty folder.")
    return target


def recost(source: str | Path, texts: Sequence[str], out: str | Path | None = None) -> Recosted | list[Row]:
    """Re-cost a result file (a :class:`Recosted`) or a sweep folder (its rows)."""
    path = Path(source)
    if path.is_dir():
        return recost_folder(path, texts, out)
    return recost_file(path, texts, out)
