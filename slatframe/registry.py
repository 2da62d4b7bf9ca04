"""The plugin registry: entry points, plugin files, and the records they return."""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import operator
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
from .records import PolicyKernels, Registration

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
}


@attrs.frozen
class Provided:
    """A record together with the plugin that returned it."""

    record: Registration
    plugin: str
    source: str


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
    name = f"slatframe_plugin_file_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}"
    content = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__slatframe_content__", None) == content:
        return loaded  # an edited file is imported again, so its new code runs
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{path}: cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    module.__slatframe_content__ = content
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # a user's file: report, do not crash (nor exit 0)
        del sys.modules[name]
        raise PluginError(f"plugin file {path}: importing it failed: {exception_text(exc, path)}.") from None
    return module


def exception_text(exc: BaseException, file: str | Path | None = None) -> str:
    """An exception in a few words for a one-sentence message: its type, the first line of
    its text, and the line of ``file`` it was raised from (when ``file`` is in the traceback)."""
    if isinstance(exc, SystemExit):
        head = f"SystemExit({exc.code!r}) was raised"
    else:
        lines = str(exc).strip().splitlines()
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
    where = f"plugin file {origin}" if origin and cls.__module__.startswith("slatframe_plugin_file_") \
        else f"module {cls.__module__}"
    raise PluginError(f"{where} (hook slatframe_tlb_policies): replacement policy {cls.__qualname__}'s "
                      f"victim({s}) returned {way!r}, which is not a way of the set: allowed 0 to {ways - 1}.")


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
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        if entry_points:
            self.pm.load_setuptools_entrypoints(PROJECT_NAME)
        for plugin in plugins:
            label = getattr(plugin, "__name__", None) or type(plugin).__qualname__
            self.pm.register(plugin, name=f"{label}@{id(plugin):x}" if self.pm.has_plugin(label) else label)
        for path in files:
            module = load_plugin_file(Path(path))
            if not self.pm.is_registered(module):
                self.pm.register(module, name=f"file:{path}")
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{exc.plugin!r}: {exc}.") from exc
        self.records: dict[str, dict[str, Provided]] = {
            point: self._collect(hook) for hook, point in HOOK_POINTS.items()
        }

    def _sources(self) -> dict[int, str]:
        return {id(plugin): f"{dist.project_name} {dist.version}"
                for plugin, dist in self.pm.list_plugin_distinfo()}

    def _collect(self, hook_name: str) -> dict[str, Provided]:
        sources = self._sources()
        found: dict[str, Provided] = {}
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            plugin_name = self.pm.get_name(impl.plugin) or repr(impl.plugin)
            source = sources.get(id(impl.plugin), plugin_name)
            for record in impl.function() or ():
                if not isinstance(record, Registration):
                    raise PluginError(
                        f"plugin {plugin_name}: {hook_name} returned {record!r}, "
                        "which is not a registration record from slatframe.records."
                    )
                _check_presets(record, plugin_name)
                if record.name in found:
                    other = found[record.name]
                    raise PluginError(
                        f"{record.kind} name {record.name!r} is registered "
                        f"by both {other.plugin} ({other.source}) and {plugin_name} ({source})."
                    )
                found[record.name] = Provided(record, plugin_name, source)
        return dict(sorted(found.items()))

    def names(self, point: str) -> list[str]:
        """Registered names at one hook point, sorted."""
        return list(self.records[point])

    def get(self, point: str, name: str) -> Registration:
        """The record registered as ``name`` at ``point``; KeyError if there is none."""
        return self.records[point][name].record
