"""The plugin registry: entry points, plugin files, and the records they return."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import operator
import os
import sys
import traceback
import typing
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Mapping

import attrs
import pluggy

from . import PROJECT_NAME, hookspecs
from .errors import PluginError
from .records import (EntryCacheKernels, HostCacheKernels, PolicyKernels, Registration, StartCacheKernels,
                      WalkCacheRecord, WalkKernels, WalkRecord)

#: Hook name -> the key used in :attr:`Registry.records` and in messages.
HOOK_POINTS: dict[str, str] = {
    "slatframe_page_table_formats": "page-table formats",
    "slatframe_slat_schemes": "SLAT schemes",
    "slatframe_tlb_policies": "TLB policies",
    "slatframe_walk_caches": "walk caches",
    "slatframe_walks": "walks",
    "slatframe_dedup_strategies": "dedup strategies",
    "slatframe_cost_models": "cost models",
    "slatframe_workloads": "workloads",
    "slatframe_run_observers": "run observers",
    "slatframe_schedulers": "schedulers",
}


@attrs.frozen
class Provided:
    """A record together with the plugin that returned it."""

    record: Registration
    plugin: str
    source: str


PLUGIN_FILE_MODULE = "slatframe_plugin_file_"  #: prefix of the module names of plugin files

def _check_presets(record: Registration, plugin_name: str) -> None:
    """A record's presets may only set fields of its options class, which must have a
    ``preset`` field (so the preset chosen is stored with the resolved options)."""
    if not record.presets:
        return
    fields = {f.name for f in attrs.fields(record.options)}
    if "preset" not in fields:
        raise PluginError(f"plugin {plugin_name}: {record.kind} {record.name!r} has presets, so its options "
                          "class needs a 'preset' field.")
    for preset, values in record.presets.items():
        unknown = sorted(set(values) - fields)
        if unknown:
            raise PluginError(f"plugin {plugin_name}: preset {preset!r} of {record.kind} {record.name!r} sets "
                              f"{unknown[0]!r}, which is not one of its options.")


def load_plugin_file(path: Path) -> ModuleType:
    """Import a Python file as a module named after its path."""
    if not path.is_file():
        raise PluginError(f"{path}: plugin file does not exist.")
    # a name stable across processes, so compiled kernels that import it can be cached
    name = f"{PLUGIN_FILE_MODULE}{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}"
    source = path.read_bytes()
    content = hashlib.sha256(source).hexdigest()
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__slatframe_content__", None) == content:
        return loaded  # an edited file is imported again, so its new code runs
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{path}: cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    module.__slatframe_content__ = content
    sys.modules[name] = module
    bytecode = path.parent / "__pycache__"
    made = not os.path.lexists(bytecode)
    try:  # the text just hashed, not a .pyc: its check (mtime in seconds, size) misses quick edits
        exec(compile(source, str(path), "exec"), module.__dict__)
    except (Exception, SystemExit) as exc:  # a user's file: report, do not crash (nor exit 0)
        del sys.modules[name]
        raise PluginError(f"plugin file {path}: importing it failed: {exception_text(exc, path)}.") from None
    finally:
        if made:
            _remove_if_empty(bytecode)
    return module


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if it is an empty folder: numba makes ``__pycache__`` beside a file
    whose functions say ``@njit(cache=True)`` when they are defined, to check that it could
    cache them there; slatframe compiles plugin kernels apart and never caches them there
    (slatframe/engine/kernel_slots.py), so it would stay empty beside the researcher's file."""
    with contextlib.suppress(OSError):
        folder.rmdir()  # fails, as it should, on a folder that holds anything


def exception_text(exc: BaseException, file: str | Path | None = None) -> str:
    """An exception in a few words for a one-sentence message: its type, the first line of
    its text, and the line of ``file`` it was raised from (when ``file`` is in the traceback)."""
    if isinstance(exc, SystemExit):
        head = f"SystemExit({exc.code!r}) was raised"
    else:
        text = exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc)
        lines = text.strip().splitlines()
        head = f"{type(exc).__name__}: {lines[0].rstrip('.')}" if lines else type(exc).__name__
    line = None
    if isinstance(exc, SyntaxError) and exc.lineno:
        line = exc.lineno
    elif file is not None:
        wanted = str(Path(file).resolve())
        for frame in traceback.extract_tb(exc.__traceback__):
            if str(Path(frame.filename).resolve()) == wanted:
                line = frame.lineno
    return f"{head} (line {line})" if line else head


def plugin_file_raised(exc: BaseException) -> str | None:
    """When ``exc`` was raised in a plugin file named by a config (the innermost such
    frame of its traceback), a sentence naming the file, line and function; else None."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith(PLUGIN_FILE_MODULE):
            found = tb
        tb = tb.tb_next
    if found is None:
        return None
    code = found.tb_frame.f_code
    return (f"plugin file {code.co_filename} raised {exception_text(exc)} at line {found.tb_lineno} "
            f"(in {code.co_name}) during the run")


def _expected_record(hook_name: str) -> type:
    """The record class a hook returns, from its hookspec's ``Iterable[...]`` annotation."""
    hints = typing.get_type_hints(getattr(hookspecs, hook_name))
    args = typing.get_args(hints.get("return"))
    return args[0] if args and isinstance(args[0], type) else Registration


def _impl_file(function: Any) -> str | None:
    """The file that defines a hook implementation, if it has one."""
    try:
        return inspect.getsourcefile(function)
    except TypeError:
        return None


def check_victim(policy: object, s: int, way: object, ways: int) -> int:
    """The way a replacement policy's ``victim(s)`` returned, as an int; a
    :class:`PluginError` naming the policy and its file when it is not a way of the set."""
    try:
        index = operator.index(way)  # type: ignore[arg-type]
    except TypeError:
        index = None
    if index is not None and 0 <= index < ways:
        return index
    cls = type(policy)
    module = sys.modules.get(cls.__module__)
    origin = getattr(module, "__file__", None)
    where = f"plugin file {origin}" if origin and cls.__module__.startswith(PLUGIN_FILE_MODULE) \
        else f"module {cls.__module__}"
    raise PluginError(f"{where} (hook slatframe_tlb_policies): replacement policy {cls.__qualname__}'s "
                      f"victim({s}) returned {way!r}, which is not a way of the set: allowed 0 to {ways - 1}.")


class _NotAList(Exception):
    def __init__(self, value: object) -> None:
        self.value = value


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _record_problem(record: object, expected: type) -> str | None:
    """Why ``record`` is not a valid record of the class ``expected`` (None if it is)."""
    if not isinstance(record, Registration):
        return f"{_short(record)}, which is not a registration record from slatframe.records"
    if not isinstance(record, expected):
        return (f"a {type(record).__name__} ({record.kind} {_short(record.name)}), but this hook returns "
                f"{expected.__name__} records")
    what = f"a {record.kind}"
    if not isinstance(record.name, str) or not record.name.strip() or record.name != record.name.strip():
        return f"{what} named {_short(record.name)}: a name must be a non-empty string without surrounding spaces"
    what = f"{record.kind} {record.name!r}"
    if not isinstance(record.summary, str):
        return f"{what} whose summary is {_short(record.summary)}, not a string"
    if not callable(record.factory):
        return f"{what} whose factory {_short(record.factory)} is not callable"
    if not (isinstance(record.options, type) and attrs.has(record.options)):
        shown = f"class {record.options.__qualname__}" if isinstance(record.options, type) else _short(record.options)
        return (f"{what} whose options ({shown}) are not an attrs class "
                "(declare it with @attrs.frozen and slatframe.options.option fields)")
    if not isinstance(record.presets, Mapping) or not all(isinstance(v, Mapping) for v in record.presets.values()):
        return f"{what} whose presets {_short(record.presets)} are not a table of tables"
    kernels = getattr(record, "kernels", None)
    kinds = {WalkRecord: (WalkKernels,), WalkCacheRecord: (StartCacheKernels, EntryCacheKernels, HostCacheKernels)
             }.get(type(record), (PolicyKernels,))
    if kernels is not None and not isinstance(kernels, kinds):
        return (f"{what} whose kernels {_short(kernels)} are not a "
                f"{' or '.join(f'slatframe.records.{k.__name__}' for k in kinds)}")
    reasons = getattr(record, "exit_reasons", None)
    if reasons is not None and not (isinstance(reasons, tuple) and all(isinstance(r, str) for r in reasons)):
        return f"{what} whose exit_reasons {_short(reasons)} are not a tuple of strings (or None)"
    for field in ("data_caches",):
        value = getattr(record, field, None)
        if value is not None and not callable(value):
            return f"{what} whose {field} {_short(value)} is not callable"
    return None


class Registry:
    """Every registered plugin record, by hook point and name.

    ``entry_points`` loads the ``slatframe`` entry-point group (the builtins and any
    installed third-party plugins); ``plugins`` are extra module objects; ``files`` are
    plugin files (as named in ``[experiment] plugins``).
    """

    def __init__(
        self,
        *,
        entry_points: bool = True,
        plugins: Iterable[object] = (),
        files: Iterable[Path] = (),
    ) -> None:
        files, plugins = [Path(f) for f in files], list(plugins)
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        #: how another process builds this registry again (a background build of the engine):
        #: its plugin files, resolved; None when it holds plugin objects, which no file names
        self.files: tuple[Path, ...] | None = (tuple(f.resolve() for f in files)
                                               if entry_points and not plugins else None)
        self._where: dict[int, str] = {}  # id(plugin) -> how messages name it
        self._source: dict[int, str] = {}  # id(plugin) -> "distribution version"
        if entry_points:
            self._load_entry_points()
        for plugin in plugins:
            label = getattr(plugin, "__name__", None) or type(plugin).__qualname__
            where = (f"plugin module {label}" if isinstance(plugin, ModuleType)
                     else f"plugin {label} (module {type(plugin).__module__})")
            self._register(plugin, f"{label}@{id(plugin):x}" if self.pm.has_plugin(label) else label, where)
        #: each plugin file (resolved) -> the sha256 of the source imported from it
        self.file_sha256: dict[Path, str] = {}
        for path in files:
            module = load_plugin_file(path)
            self.file_sha256[path.resolve()] = module.__slatframe_content__
            if not self.pm.is_registered(module):
                self._register(module, f"file:{path}", f"plugin file {path}")
        self._check_pending()
        self.records: dict[str, dict[str, Provided]] = {
            point: self._collect(hook) for hook, point in HOOK_POINTS.items()
        }

    def _load_entry_points(self) -> None:
        """Register the modules of the ``slatframe`` entry-point group (as pluggy's
        ``load_setuptools_entrypoints`` does), naming the entry point whose import fails."""
        for dist in list(metadata.distributions()):
            project = None
            for ep in dist.entry_points:
                if ep.group != PROJECT_NAME or self.pm.get_plugin(ep.name) is not None \
                        or self.pm.is_blocked(ep.name):
                    continue
                if project is None:  # read once per distribution: parsing its metadata is slow
                    meta = dist.metadata
                    project = f"{meta['name']} {meta['version']}"
                where = f"plugin module {ep.value} (entry point {ep.name} of {project})"
                try:
                    plugin = ep.load()
                except (Exception, SystemExit) as exc:
                    raise PluginError(f"{where}: importing it failed: {exception_text(exc)}.") from None
                self._register(plugin, ep.name, where)
                self._source[id(plugin)] = project

    def _register(self, plugin: object, name: str, where: str) -> None:
        """Register ``plugin``; a hook implementation that takes arguments (every hook takes
        none) or that pluggy rejects is a :class:`PluginError` naming ``where`` and the hook."""
        self._where[id(plugin)] = where
        for hook_name in HOOK_POINTS:
            function = getattr(plugin, hook_name, None)
            if function is None or not hasattr(function, f"{PROJECT_NAME}_impl"):
                continue
            try:
                params = list(inspect.signature(function).parameters)
            except (TypeError, ValueError):
                continue
            if params:
                raise PluginError(f"{where}: hook {hook_name} takes {', '.join(params)}, but slatframe hooks "
                                  f"take no arguments: define it as def {hook_name}().")
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{where}: {' '.join(str(exc).split()).rstrip('.')}.") from None
        except ValueError as exc:  # registered twice under another name
            raise PluginError(f"{where}: cannot be registered: {exc}.") from None

    def _check_pending(self) -> None:
        """A hook implementation whose name is no hook is an error naming it (pluggy's
        ``check_pending``, one sentence)."""
        import difflib

        for name in list(vars(self.pm.hook)):
            if name.startswith("_"):
                continue
            hook = getattr(self.pm.hook, name)
            if hook.has_spec():
                continue
            for impl in hook.get_hookimpls():
                if impl.optionalhook:
                    continue
                where = self._where.get(id(impl.plugin), f"plugin {self.pm.get_name(impl.plugin)}")
                near = difflib.get_close_matches(name, list(HOOK_POINTS), n=1)
                hint = f"did you mean {near[0]}?" if near else f"the hooks are {', '.join(HOOK_POINTS)}."
                raise PluginError(f"{where}: {name} is not a slatframe hook; {hint}")

    def _collect(self, hook_name: str) -> dict[str, Provided]:
        expected = _expected_record(hook_name)
        found: dict[str, Provided] = {}
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            plugin_name = self.pm.get_name(impl.plugin) or repr(impl.plugin)
            source = self._source.get(id(impl.plugin), plugin_name)
            where = f"{self._where.get(id(impl.plugin), f'plugin {plugin_name}')}: hook {hook_name}"
            for record in self._call(impl, where):
                problem = _record_problem(record, expected)
                if problem:
                    raise PluginError(f"{where} returned {problem}.")
                _check_presets(record, plugin_name)
                if record.name in found:
                    other = found[record.name]
                    raise PluginError(
                        f"{record.kind} name {record.name!r} is registered "
                        f"by both {other.plugin} ({other.source}) and {plugin_name} ({source})."
                    )
                found[record.name] = Provided(record, plugin_name, source)
        return dict(sorted(found.items()))

    @staticmethod
    def _call(impl: Any, where: str) -> list[Any]:
        """Call one hook implementation and return its records as a list; an exception, or
        a value that is not a list of records, is a :class:`PluginError` naming ``where``."""
        file = _impl_file(impl.function)
        try:
            returned = impl.function()
            if returned is None:
                return []
            if isinstance(returned, (str, bytes, Mapping, Registration)):
                raise _NotAList(returned)
            try:
                iterator = iter(returned)
            except TypeError:
                raise _NotAList(returned) from None
            return list(iterator)
        except _NotAList as bad:
            raise PluginError(f"{where} returned {_short(bad.value)}, which is not a list of records: "
                              "return a list such as [TlbPolicyRecord(...)].") from None
        except (Exception, SystemExit) as exc:
            raise PluginError(f"{where} raised {exception_text(exc, file)}.") from None

    def names(self, point: str) -> list[str]:
        """Registered names at one hook point, sorted."""
        return list(self.records[point])

    def get(self, point: str, name: str) -> Registration:
        """The record registered as ``name`` at ``point``; KeyError if there is none."""
        return self.records[point][name].record
