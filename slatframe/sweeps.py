"""Parameter sweeps: the ``[sweep]`` table, its points, and running them.

A sweep file is an experiment file plus::

    [sweep]
    mode = "product"            # or "zip": the i-th values of every axis together
    [sweep.axes]
    "machine.slat" = ["native", "intel-ept"]
    "tlb.levels[0].sets" = [4, 16]
    [sweep.labels]              # optional: names shown for an axis's values
    "machine.slat" = ["bare metal", "EPT"]

Each point is the file's config without ``[sweep]``, with the point's axis values set as
``--set`` would set them, then the command's ``--set`` overrides (so those win), resolved
by the normal loader. A point's result is ``points/<hash>.json``, where the hash is of
the resolved config: identical points share a file and a rerun skips finished points.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import os
import re
import stat
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import attrs

from .config import (apply_override, config_from_dict, key_path, load_config, parse_override, plugin_files,
                     read_toml)
from .errors import ConfigError, SlatframeError
from .executors import Task, check_executor, execute
from .gather import Row, gather, write_manifest, write_tables
from .progress import Progress
from .results import OutputError, check_output_dir, describe_os_error, make_dirs, write_atomic

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: folders are not locked
    fcntl = None  # type: ignore[assignment]

MODES = ("product", "zip")


@attrs.frozen
class Axis:
    """One swept key: its path (``--set`` syntax), its values and their display labels."""

    key: str
    path: tuple[str | int, ...]
    values: tuple[Any, ...]
    labels: tuple[Any, ...]


@attrs.frozen
class SweepSpec:
    """The parsed ``[sweep]`` table."""

    mode: str
    axes: tuple[Axis, ...]

    def combinations(self) -> list[tuple[int, ...]]:
        """Index of each axis's value, point by point, in sweep order (the first axis
        varies slowest in product mode)."""
        if self.mode == "zip":
            return [(i,) * len(self.axes) for i in range(len(self.axes[0].values))]
        return list(itertools.product(*(range(len(a.values)) for a in self.axes)))


@attrs.frozen(eq=False)
class Point:
    """One point of a sweep: its place, its swept values, its raw config and its hash."""

    index: int
    cells: tuple[tuple[str, Any], ...]  #: (axis key, label shown in tables)
    raw: dict[str, Any]
    hash: str
    error: str | None = None  #: why the point's config is invalid

    def describe(self) -> str:
        return _describe(self.cells)


@attrs.frozen(eq=False)
class SweepPlan:
    """Every point of a sweep file, resolved (or rejected) before anything runs."""

    path: Path
    spec: SweepSpec
    points: tuple[Point, ...]

    @property
    def base_dir(self) -> Path:
        return self.path.parent.resolve()


@attrs.frozen
class SweepOutcome:
    """What a sweep did: its gathered rows and how many configs ran, were skipped, failed."""

    rows: tuple[Row, ...]
    ran: int  #: distinct point configs run now
    skipped: int  #: distinct point configs whose result file existed already
    failed: int  #: points without a result (invalid config or a failed run)


# -- the [sweep] table ---------------------------------------------------------------


def parse_key_path(key: str, where: str) -> tuple[str | int, ...]:
    """``"tlb.levels[1].ways"`` -> ``("tlb", "levels", 1, "ways")``."""
    keys = key_path(key)
    if keys is None:
        raise ConfigError(f"{where}: sweep.axes key {key!r} is not a key path such as tlb.levels[0].ways.")
    return tuple(keys)


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Axes written as bare dotted TOML keys (``machine.slat = [...]``) come as nested tables."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flatten(value, full))
        else:
            out[full] = value
    return out


def parse_spec(table: Any, where: str) -> SweepSpec:
    """Check the ``[sweep]`` table and return its axes."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: sweep must be a table with 'mode' and 'axes'.")
    unknown = sorted(set(table) - {"mode", "axes", "labels"})
    if unknown:
        raise ConfigError(f"{where}: sweep.{unknown[0]} is not a known key; allowed keys here: mode, axes, labels.")
    mode = table.get("mode", "product")
    if mode not in MODES:
        raise ConfigError(f"{where}: sweep.mode = {mode!r} is not allowed: choose one of {', '.join(MODES)}.")
    axes_table = table.get("axes")
    if not isinstance(axes_table, dict) or not axes_table:
        raise ConfigError(f"{where}: sweep.axes is required: a table of key path = [values], "
                          "for example \"machine.slat\" = [\"native\", \"shadow\"].")
    labels = table.get("labels", {})
    if not isinstance(labels, dict):
        raise ConfigError(f"{where}: sweep.labels must be a table of key path = [names].")
    axes_raw, labels = _flatten(axes_table), _flatten(labels)
    for key in labels:
        if key not in axes_raw:
            raise ConfigError(f"{where}: sweep.labels names {key!r}, which is not an axis.")
    axes = []
    for key, values in axes_raw.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: sweep.axes.{key!r} must be a non-empty list of values.")
        names = labels.get(key, values)
        if not isinstance(names, list) or len(names) != len(values):
            raise ConfigError(f"{where}: sweep.labels.{key!r} must list one name per value "
                              f"({len(values)}).")
        axes.append(Axis(key, parse_key_path(key, where), tuple(values), tuple(names)))
    if mode == "zip":
        lengths = {a.key: len(a.values) for a in axes}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{k} ({n})" for k, n in lengths.items())
            raise ConfigError(f"{where}: sweep.mode = 'zip' needs axes of equal length, but the axes "
                              f"have these numbers of values: {listed}.")
    return SweepSpec(mode, tuple(axes))


# -- points --------------------------------------------------------------------------


def config_hash(config_dict: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of the canonical JSON of a resolved (or raw) config."""
    text = json.dumps(config_dict, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


ENGINES = ("auto", "reference", "compiled")


def engine_override(engine: str | None, what: str = "--engine") -> list[str]:
    """The ``--set`` that gives every point of a sweep ``experiment.engine = engine``
    (after the axes and the other overrides, so it wins; nothing for None); any value but
    auto, reference or compiled is a :class:`ConfigError` naming ``what``."""
    if engine is None:
        return []
    if engine not in ENGINES:
        raise ConfigError(f"{what} {engine!r} is not allowed: choose one of {', '.join(ENGINES)}.")
    return [f"experiment.engine={engine}"]


def _split_overrides(overrides: Iterable[str]) -> tuple[list[str], list[str]]:
    """``--set sweep.*`` changes the sweep itself; every other override applies per point."""
    sweep, other = [], []
    for text in overrides:
        (sweep if text.strip().startswith("sweep.") else other).append(text)
    return sweep, other


def _apply(raw: dict[str, Any], axis: Axis, value: Any, where: str) -> None:
    try:
        apply_override(raw, list(axis.path), copy.deepcopy(value), axis.key)
    except ConfigError as exc:
        raise ConfigError(f"{where}: sweep axis {str(exc).removeprefix('--set ')}") from None


def plan_sweep(path: str | Path, overrides: Iterable[str] = ()) -> SweepPlan:
    """Read a sweep file and resolve each of its points (an invalid point is kept, with
    its error, so the other points still run)."""
    path = Path(path)
    raw = read_toml(path)
    sweep_sets, point_sets = _split_overrides(overrides)
    for text in sweep_sets:
        apply_override(raw, *parse_override(text), text)
    if "sweep" not in raw:
        raise ConfigError(f"{path}: has no [sweep] table: add [sweep.axes] with key path = [values], "
                          "or use slatframe run for a single experiment.")
    table = raw.pop("sweep")
    spec = parse_spec(table, str(path))
    parsed_sets = [(parse_override(text), text) for text in point_sets]
    base_dir = path.parent.resolve()  # so the hash does not depend on how the path was spelled
    from .registry import Registry

    registries: dict[tuple[Path, ...], Registry] = {}  # one per list of plugin files
    points = []
    for index, combo in enumerate(spec.combinations()):
        cells = tuple((a.key, a.labels[i]) for a, i in zip(spec.axes, combo))
        where = f"{path} (sweep point {index + 1}: {_describe(cells)})"
        point_raw = copy.deepcopy(raw)
        try:
            for axis, i in zip(spec.axes, combo):
                _apply(point_raw, axis, axis.values[i], where)
            for (keys, value), text in parsed_sets:
                apply_override(point_raw, keys, copy.deepcopy(value), text)
            files = tuple(plugin_files(point_raw, base_dir, where))
            if files not in registries:
                registries[files] = Registry(files=files)
            config, _ = config_from_dict(point_raw, where=where, base_dir=base_dir,
                                         registry=registries[files])
        except SlatframeError as exc:
            points.append(Point(index, cells, point_raw, config_hash(point_raw), str(exc)))
            continue
        points.append(Point(index, cells, point_raw, config_hash({**config.to_dict(),
                                                                   "inputs": input_stamps(files, config)})))
    return SweepPlan(path, spec, tuple(points))


def input_stamps(plugin_paths: Iterable[Path], config: Any) -> dict[str, str]:
    """What a point's result depends on besides its config: the content of its plugin
    files, the size and modification time of its input files (traces, images), and the
    slatframe version, so a resumed sweep reruns a point whose inputs changed."""
    from . import __version__

    stamps = {"slatframe": __version__}
    for plugin in plugin_paths:
        stamps[str(plugin)] = hashlib.sha256(Path(plugin).read_bytes()).hexdigest()
    inputs = [getattr(config.workload.options, "path", None)] + [vm.image for vm in config.vms]
    for name in inputs:
        if isinstance(name, str) and Path(name).is_file():
            st = Path(name).stat()
            stamps[name] = f"{st.st_size}:{st.st_mtime_ns}"
    return stamps


def load_base(path: str | Path, overrides: Iterable[str] = ()) -> tuple[Any, Any]:
    """``load_config`` that accepts a sweep file: its ``[sweep]`` table is left out and the
    rest is the config (what ``slatframe run`` runs)."""
    path = Path(path)
    raw = read_toml(path)
    if "sweep" not in raw:
        return load_config(path, overrides)
    raw.pop("sweep")
    for text in _split_overrides(overrides)[1]:  # --set sweep.* changes only the sweep
        apply_override(raw, *parse_override(text), text)
    return config_from_dict(raw, where=str(path), base_dir=path.parent)


def has_sweep(path: str | Path) -> bool:
    """Whether a config file has a ``[sweep]`` table."""
    return "sweep" in read_toml(Path(path))


# -- running -------------------------------------------------------------------------


def points_dir(out_dir: Path) -> Path:
    return out_dir / "points"


LOCK_FILE = "sweep.lock"


class FolderBusy(SlatframeError):
    """Another sweep is writing to the output folder."""


@contextlib.contextmanager
def locked_folder(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``out_dir/sweep.lock`` (which records the holder's
    pid) for the duration; :class:`FolderBusy` at once if another process holds it. The
    kernel releases the lock when its holder exits, however it exits."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = out_dir / LOCK_FILE
    try:  # never through a link: truncating it would empty the file it points at
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if path.is_symlink():
            raise OutputError(f"{path}: is a symbolic link; the sweep's lock file is a plain file that the sweep "
                              "writes its pid to, so it is not opened through a link: remove the link.") from None
        raise OutputError(describe_os_error(exc, "cannot create the sweep's lock file")) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputError(f"{path}: is not a plain file; the sweep's lock file is one that the sweep writes its pid "
                          "to: remove it.")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            who = f"pid {holder}" if holder.isdigit() else "a process whose pid is not yet recorded"
            raise FolderBusy(f"{out_dir}: another sweep ({who}) is writing to this folder; wait for it to "
                             "finish, or give another --out.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


#: Temporary files of :func:`slatframe.results.replacing` for the files a sweep writes.
_STALE = re.compile(r"\.(sweep\.json|results\.csv|results\.parquet|[0-9a-f]{16}\..+)\.[A-Za-z0-9_]+\.tmp")


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files a killed writer left behind (``.<name>.<random>.tmp`` of the
    files a sweep writes, nothing else); only called under the folder's lock, so no
    writer is using them."""
    for tmp in folder.glob(".*.tmp"):
        if _STALE.fullmatch(tmp.name):
            with contextlib.suppress(OSError):
                tmp.unlink()


def run_sweep(plan: SweepPlan, out_dir: str | Path, *, executor: str = "local", jobs: int = 1,
              scheduler: str | None = None, progress: Progress | None = None,
              report: Callable[[str], None] | None = None) -> SweepOutcome:
    """Run every point without a result file yet, then gather the table.

    A point that fails (invalid config, or an error while it runs) is written to
    ``points/<hash>.error.txt`` and reported through ``report`` while the others go on.
    The folder is locked for the duration (:func:`locked_folder`): a second sweep into it
    fails at once with :class:`FolderBusy`.
    """
    check_executor(executor, jobs, scheduler)
    out_dir = check_output_dir(out_dir, "--out").resolve()
    make_dirs(out_dir)
    with locked_folder(out_dir):
        return _run_locked(plan, out_dir, executor, jobs, scheduler, progress, report)


def _run_locked(plan: SweepPlan, out_dir: Path, executor: str, jobs: int, scheduler: str | None,
                progress: Progress | None, report: Callable[[str], None] | None) -> SweepOutcome:
    pdir = points_dir(out_dir)
    make_dirs(pdir)
    _remove_stale_temporaries(out_dir)
    _remove_stale_temporaries(pdir)
    progress = progress or Progress("sweep", unit="points", enabled=False)
    say = report or progress.write
    write_manifest(out_dir, plan)
    first: dict[str, Point] = {}
    for p in plan.points:
        if p.error is not None:
            write_atomic(pdir / f"{p.hash}.error.txt", p.error + "\n")
            say(f"slatframe: error: {p.error}")
        else:
            first.setdefault(p.hash, p)
    todo = [p for h, p in first.items() if not (pdir / f"{h}.json").exists()]
    tasks = [Task(p.hash, p.raw, str(plan.base_dir), str(pdir / f"{p.hash}.json")) for p in todo]
    progress.total = len(tasks)
    progress.update(0, force=True)
    completions = execute(tasks, executor=executor, jobs=jobs, scheduler=scheduler)
    try:
        for task, exc in completions:
            error_file = pdir / f"{task.key}.error.txt"
            if exc is None:
                error_file.unlink(missing_ok=True)
            else:
                point = first[task.key]
                write_atomic(error_file, _error_text(exc))
                say(f"slatframe: error: sweep point {point.index + 1} ({point.describe()}) failed: "
                    f"{_first_line(exc)} (details in {error_file})")
            progress.advance()
    finally:
        close = getattr(completions, "close", None)
        if close is not None:
            close()  # stops the workers at once if the loop ends early (Ctrl-C, a write error)
        progress.close()
    rows = gather(out_dir)
    write_tables(out_dir, rows)
    return SweepOutcome(tuple(rows), ran=len(tasks), skipped=len(first) - len(tasks),
                        failed=sum(1 for r in rows if r.metrics is None))


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, SlatframeError):
        return f"{exc}\n"
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    if isinstance(exc, SlatframeError):
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _describe(cells: Iterable[tuple[str, Any]]) -> str:
    """``machine.slat=shadow, tlb.levels[0].sets=4`` (lists and tables as JSON)."""
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"
                     for k, v in cells)
