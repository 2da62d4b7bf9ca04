"""The Python API, for notebooks and scripts: :func:`run`, :func:`sweep`,
:func:`load_results` and :func:`recost` do what ``slatframe run``, ``slatframe sweep``,
the result files and ``slatframe recost`` do, with the same configs, overrides and
results (docs/python-api.md)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from .config import apply_override, config_from_dict, key_path, parse_override, read_toml, tomllib
from .errors import ConfigError, SlatframeError
from .results import Result
from .tomlwrite import value_text

Config = str | Path | Mapping[str, Any]  #: a TOML file's path, TOML text, or the same data as a dict


def _overrides(set: Mapping[str, Any] | None) -> list[tuple[list[str | int], Any, str]]:
    """``set`` as (key path, value, how to name it): a string value is read as ``--set``
    reads it (TOML, a bare word a string); any other value is taken as it is."""
    out = []
    for key, value in (set or {}).items():
        if not isinstance(key, str):
            raise ConfigError(f"set: the key {key!r} is not a key path such as tlb.levels[0].ways (a string).")
        if isinstance(value, str):
            keys, parsed = parse_override(f"{key}={value}")
        else:
            keys, parsed = key_path(key), value
            if keys is None:
                raise ConfigError(f"set[{key!r}]: {key!r} is not a key path such as tlb.levels[0].ways.")
        out.append((keys, parsed, f"{key}={value!r}"))
    return out


def _raw(config: Config) -> tuple[dict[str, Any], str, Path]:
    """The config's TOML data, how errors name it, and the folder relative paths start from."""
    if isinstance(config, Mapping):
        return json.loads(json.dumps(config)), "<config dict>", Path.cwd()
    if isinstance(config, Path) or (isinstance(config, str) and "\n" not in config
                                    and ("=" not in config or _is_file(config))):
        path = Path(config)
        return read_toml(path), str(path), path.parent
    if isinstance(config, str):
        try:
            return tomllib.loads(config), "<TOML text>", Path.cwd()
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"<TOML text>: not valid TOML: {exc}.") from None
    raise ConfigError(f"a config is a TOML file's path, TOML text or a dict, not an object of type "
                      f"{type(config).__name__}.")


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def load(config: Config, *, set: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
    """Resolve ``config`` with the overrides ``set`` (key path -> value) into a config and
    its registry; a sweep file's ``[sweep]`` table is left out, as ``slatframe run`` does."""
    try:
        raw, where, base = _raw(config)
    except TypeError as exc:  # a dict that JSON cannot hold
        raise ConfigError(f"<config dict>: holds a value TOML cannot: {exc}.") from None
    raw.pop("sweep", None)
    for keys, value, text in _overrides(set):
        apply_override(raw, keys, value, text)
    return config_from_dict(raw, where=where, base_dir=base)


def run(config: Config, *, set: Mapping[str, Any] | None = None, engine: str | None = None,
        observers: Iterable[Any] | None = None) -> Result:
    """Run one experiment and return its :class:`~slatframe.results.Result` (what
    ``slatframe run`` writes to its result file). ``engine``: ``auto``, ``reference`` or
    ``compiled`` instead of the config's; ``observers``: run observers, as plugins register."""
    from .engine import run_experiment

    if engine not in (None, "auto", "reference", "compiled"):
        raise ConfigError(f"engine = {engine!r} is not allowed: auto, reference or compiled.")
    resolved, registry = load(config, set=set)
    return run_experiment(resolved, registry, engine=engine, observers=list(observers or []))


def sweep(config: str | Path, out: str | Path, *, set: Mapping[str, Any] | None = None, jobs: int = 1,
          executor: str = "local", engine: str | None = None) -> Any:
    """Run the sweep file ``config`` into the folder ``out`` (resuming it, as the CLI does)
    and return its table (:func:`load_results` of ``out``). ``engine``: ``auto``,
    ``reference`` or ``compiled`` for every point, as ``--engine`` gives it."""
    from .sweeps import engine_override, plan_sweep, run_sweep

    _overrides(set)  # checked as run() checks them
    chosen = engine_override(engine, "engine =")
    plan = plan_sweep(config, [f"{key}={value if isinstance(value, str) else toml_value(value)}"
                               for key, value in (set or {}).items()] + chosen)
    run_sweep(plan, out, executor=executor, jobs=jobs)
    return load_results(out)


def toml_value(value: Any) -> str:
    """``value`` written as a TOML value (for a ``--set`` text)."""
    try:
        return value_text(value)
    except TypeError:
        raise ConfigError(f"{value!r} is not a value a config can hold (a number, string, boolean, list or "
                          "table).") from None


def load_results(path: str | Path) -> Any:
    """A result file (one row) or a sweep's output folder (one row per point, in sweep
    order: the point's hash, its swept values, its metrics, and ``error`` for a point
    without a result), as a pandas DataFrame when pandas is installed, else a list of dicts."""
    from .derived import with_derived
    from .gather import gather, rows_json

    path = Path(path)
    if path.is_dir():
        rows = rows_json(gather(path))
    else:
        try:
            result = json.loads(path.read_text())
            rows = [{"name": result["name"], "engine": result["engine"],
                     **with_derived(result["metrics"], result.get("config"))}]
        except FileNotFoundError:
            raise SlatframeError(f"{path}: does not exist.") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SlatframeError(f"{path}: is not a slatframe result file (JSON with name, engine and metrics).") \
                from None
    return _table(rows)


def _table(rows: list[dict[str, Any]]) -> Any:
    """``rows`` as a pandas DataFrame when pandas is installed, else as they are."""
    try:
        import pandas
    except ImportError:
        return rows
    return pandas.DataFrame(rows)


def recost(source: str | Path, *, set: Mapping[str, Any] | None = None, out: str | Path | None = None) -> Any:
    """Every cycle, consolidation and derived figure of a result file or a sweep folder
    computed again from its counters with the costs ``set`` changes (key path -> value, as
    :func:`run` takes them; keys under ``cost.`` or ``consolidation.``, or
    ``tlb.levels[i].latency``), as ``slatframe recost`` does. A result file gives its
    re-costed :class:`~slatframe.results.Result`, a sweep folder its table (as
    :func:`load_results`). Nothing is written without ``out``: a result file's path, or a
    new folder for a sweep's."""
    from .gather import rows_json
    from .recosting import recost as recost_path

    _overrides(set)  # checked as run() checks them
    texts = [f"{key}={value if isinstance(value, str) else toml_value(value)}" for key, value in (set or {}).items()]
    done = recost_path(source, texts, out)
    return _table(rows_json(done)) if isinstance(done, list) else done.result()
