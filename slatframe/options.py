"""TOML tables -> frozen attrs objects, with errors that name the key path.

Core config classes and every plugin's ``Options`` class are plain attrs classes whose
fields are declared with :func:`option`. The builder checks types, units, allowed
values and unknown keys, and resolves plugin references against the registry.
"""
from __future__ import annotations

import math
import sys
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs

from .errors import ConfigError
from .units import SIZE_HELP, format_size, parse_size

_MISSING = attrs.NOTHING
INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    size: bool = False,
    choices: Sequence[str] | None = None,
    min: float | None = None,
    max: float | None = None,
    check: Callable[[Any], None] | None = None,
    check_all: Callable[[tuple], None] | None = None,
    plugin: str | None = None,
    name_key: str = "name",
    path: bool = False,
    folder: bool = False,
    output: bool = False,
    nonfinite: bool = False,
) -> Any:
    """Declare a config field.

    ``size`` accepts sizes with units; ``choices`` lists the allowed strings; ``min``/``max``
    bound numbers (integers and sizes are always within int64); ``check(value)`` raises
    ValueError with what is allowed (for a list field: for each item, and ``check_all``
    for the whole list); ``plugin`` names a hook point (``"TLB policies"``) whose
    registered name the value must be, given as a string or a table with ``name_key``
    plus the plugin's own options; ``path`` resolves a relative path against the config
    file's folder and requires an existing file (or, with ``folder``, a file or folder);
    ``output`` resolves it the same way, for a file the run writes (not a folder, and in a
    folder that takes a new file, or in folders the run can make). A float field takes
    finite numbers only, unless ``nonfinite``.
    """
    meta = {"help": help, "size": size, "choices": tuple(choices) if choices else None,
            "min": min, "max": max, "check": check, "check_all": check_all, "plugin": plugin,
            "name_key": name_key, "path": path, "folder": folder, "output": output, "nonfinite": nonfinite}
    if isinstance(default, (list, dict)):
        frozen = tuple(default) if isinstance(default, list) else dict(default)
        return attrs.field(factory=lambda: frozen, metadata=meta)
    return attrs.field(default=default, metadata=meta)


def nonempty_name(value: str) -> None:
    """A ``check`` for names used in metrics and messages: not empty, not only spaces, and
    without a dot (metric paths such as ``vm.<name>.asid.<n>.accesses`` join their parts
    with dots, so a dotted name could read as another name's metric)."""
    if not value.strip():
        raise ValueError("a name must not be empty")
    if "." in value:
        raise ValueError("a name is one part of a metric path (parts are joined with dots), so it holds no '.'")


@attrs.frozen
class PluginChoice:
    """A resolved plugin reference: its registered name and its built options."""

    name: str
    options: Any


@attrs.frozen
class ConfigFacts:
    """What an options class's ``problems(facts)`` may check its values against.

    ``problems`` (optional on any plugin's options class) yields ``(key, message)``
    pairs: a key path relative to the options' table and the rest of the sentence
    (``"= 5 is not allowed: ..."``). Config resolution reports the first one.
    """

    vms: int  #: number of configured VMs
    guest_format: Any  #: the guest side's PageTableFormat
    host_format: Any = None  #: the host side's PageTableFormat (None without a second level)
    #: The VM-exit reasons the registered SLAT schemes count, all of them (so that one
    #: config can sweep ``machine.slat``); None when the configured scheme does not declare
    #: its own (``SlatSchemeRecord.exit_reasons``), and nothing can be checked.
    exit_reasons: frozenset[str] | None = None
    cores: int = 1  #: machine.cores
    vcpus: tuple[int, ...] = ()  #: each VM's vCPUs (vms[].vcpus)

    @property
    def va_bits(self) -> int:
        """Width of a guest virtual address (the guest format's ``va_bits``)."""
        return self.guest_format.va_bits

    def levels(self, dimension: str) -> int:
        """Table levels of the ``guest`` or ``host`` dimension (0 if there is none)."""
        fmt = self.guest_format if dimension == "guest" else self.host_format
        return fmt.levels if fmt is not None else 0


@attrs.frozen
class BuildContext:
    """Where the table came from and how to resolve plugin names."""

    where: str
    registry: Any = None
    base_dir: Path | None = None
    #: Where output files go instead (a sweep's points folder): an ``output`` option's
    #: file is then ``output_dir / (output_prefix + its file name)``, one per sweep point.
    output_dir: Path | None = None
    output_prefix: str = ""

    def fail(self, path: str, message: str) -> typing.NoReturn:
        raise ConfigError(f"{self.where}: {path} {message}")


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def build(cls: type, table: Any, path: str, ctx: BuildContext) -> Any:
    """Build an instance of attrs class ``cls`` from a TOML table at ``path``."""
    if not isinstance(table, dict):
        ctx.fail(path or "the top level", f"is {_describe(table)}, but a table is expected.")
    attrs.resolve_types(cls)
    fields = {f.name: f for f in attrs.fields(cls) if f.init}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        allowed = ", ".join(fields) if fields else "none"
        ctx.fail(_join(path, unknown[0]), f"is not a known key; allowed keys here: {allowed}.")
    kwargs = {}
    for name, field in fields.items():
        key_path = _join(path, name)
        if name not in table:
            if field.default is _MISSING:
                ctx.fail(key_path, f"is required: {field.metadata.get('help') or 'no default'}.")
            if attrs.has(type(field.default)):  # a section left out: its defaults, resolved
                kwargs[name] = build(type(field.default), {}, key_path, ctx)
            elif field.metadata.get("plugin") and isinstance(field.default, str):
                # a default plugin name gets its options' defaults like a written one
                kwargs[name] = convert(field.type, field.metadata, field.default, key_path, ctx)
            continue
        value = table[name]
        name_key = field.metadata.get("name_key", "name")
        if (field.metadata.get("plugin") and isinstance(field.default, str)
                and isinstance(value, dict) and name_key not in value and "preset_file" not in value):
            value = {name_key: field.default, **value}  # options of the default plugin
        kwargs[name] = convert(field.type, field.metadata, value, key_path, ctx)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        ctx.fail(path or "the top level", f"is not valid: {exc}.")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not str(key).isprintable():  # a newline or other control character: quoted, so the message stays one line
        return f"{path}[{str(key)!r}]"
    return f"{path}.{key}" if path else key


def convert(tp: Any, meta: Any, value: Any, path: str, ctx: BuildContext) -> Any:
    """Convert one TOML value to the field type ``tp``, checking ``meta`` constraints."""
    tp, optional = _unwrap_optional(tp)
    if value is None and optional:
        return None
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, list):
            ctx.fail(path, f"= {_describe(value)} is not allowed: expected a list.")
        items = tuple(convert(item_tp, meta, v, _join(path, i), ctx) for i, v in enumerate(value))
        if meta.get("check_all"):
            try:
                meta["check_all"](items)
            except ValueError as exc:
                ctx.fail(path, f"= {_describe_list(items, meta)} is not allowed: {exc}.")
        return items
    if meta.get("plugin"):
        return resolve_plugin(meta["plugin"], meta.get("name_key", "name"), value, path, ctx)
    if attrs.has(tp):
        return build(tp, value, path, ctx)
    if meta.get("size"):
        try:
            out = parse_size(value)
        except ValueError:
            ctx.fail(path, f"= {_describe(value)} is not allowed: expected {SIZE_HELP}.")
    elif tp is float:
        out = _to_float(value, meta, path, ctx)
    elif tp in (int, bool, str):
        if type(value) is not tp:
            ctx.fail(path, f"= {_describe(value)} is not allowed: expected {_type_name(tp)}.")
        out = value
    else:
        out = value
    if meta.get("output") and isinstance(out, str) and ctx.output_dir is not None:
        out = str(ctx.output_dir / f"{ctx.output_prefix}{Path(out).name}")
    elif (meta.get("path") or meta.get("output")) and isinstance(out, str) and ctx.base_dir is not None:
        p = Path(out)
        out = str(p if p.is_absolute() else (ctx.base_dir / p))
        # refused now, not after the run has started
        problem = (_input_file_problem(Path(out), bool(meta.get("folder"))) if meta.get("path")
                   else _output_file_problem(Path(out)))
        if problem:
            ctx.fail(path, f"= {_describe(value)} is not allowed: {problem} ({out}).")
    _check(meta, out, value, path, ctx)
    return out


def _output_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written as a file, or None: it is a folder, or its nearest
    existing folder (the run makes the missing ones) is a file or takes no new file (an
    anonymous temporary file is made there and removed, so that a run is not refused
    only when it ends, its work lost)."""
    folder = path.parent
    if "\0" in str(path):
        return "it cannot be a file name (it holds a NUL character)"
    try:
        if path.is_dir():
            return "it is a folder"
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir():
            return f"{folder} is a file, not a folder"
        with tempfile.TemporaryFile(dir=folder):
            pass
        return None
    except OSError as exc:
        return f"no file can be created in {folder} (the system says: {exc.strerror or exc.__class__.__name__})"
    except ValueError as exc:
        return f"it cannot be a file name ({exc.__class__.__name__})"


def _input_file_problem(path: Path, folder: bool = False) -> str | None:
    """Why ``path`` cannot be read as an input file (or, with ``folder``, a folder), or None."""
    try:
        if path.is_file() or (folder and path.is_dir()):
            return None
        return "it is a folder" if path.is_dir() else "there is no such file" + (" or folder" if folder else "")
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        return f"it cannot be a file name ({exc.__class__.__name__})"


def _to_float(value: Any, meta: Any, path: str, ctx: BuildContext) -> float:
    """A TOML number as a float: ints and floats, not booleans; finite unless allowed."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        ctx.fail(path, f"= {_describe(value)} is not allowed: expected a number.")
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out) and not meta.get("nonfinite"):
        ctx.fail(path, f"= {_describe(value)} is not allowed: expected a finite number.")
    return out


def _describe_list(items: tuple, meta: Any) -> str:
    if meta.get("size"):
        return "[" + ", ".join(repr(format_size(v)) if isinstance(v, int) else repr(v) for v in items) + "]"
    return repr(list(items))


def _check(meta: Any, out: Any, raw: Any, path: str, ctx: BuildContext) -> None:
    shown = _describe(raw)
    choices = meta.get("choices")
    if choices and out not in choices:
        ctx.fail(path, f"= {shown} is not allowed: choose one of {', '.join(choices)}.")
    lo, hi = meta.get("min"), meta.get("max")
    fmt = format_size if meta.get("size") else str
    if isinstance(out, int) and not isinstance(out, bool):
        if lo is None or lo < INT64_MIN:
            lo = INT64_MIN
        if hi is None or hi > INT64_MAX:
            hi = INT64_MAX
    elif (lo is not None or hi is not None) and (isinstance(out, bool) or not isinstance(out, (int, float))):
        ctx.fail(path, f"= {shown} is not allowed: expected a number.")
    if lo is not None and out < lo:
        ctx.fail(path, f"= {shown} is not allowed: the minimum is {fmt(lo)}.")
    if hi is not None and out > hi:
        ctx.fail(path, f"= {shown} is not allowed: the maximum is {fmt(hi)}.")
    if meta.get("check"):
        try:
            meta["check"](out)
        except ValueError as exc:
            ctx.fail(path, f"= {shown} is not allowed: {exc}.")


def resolve_plugin(point: str, name_key: str, value: Any, path: str, ctx: BuildContext) -> PluginChoice:
    """Resolve ``"name"`` or ``{name_key = "name", ...options}`` against the registry."""
    if isinstance(value, dict) and "preset_file" in value:
        value = _with_preset_file(value, name_key, path, ctx)
    if isinstance(value, str):
        name, rest, name_path = value, {}, path
    elif isinstance(value, dict):
        if name_key not in value:
            ctx.fail(_join(path, name_key), f"is required: the name of one of the {point}.")
        rest = {k: v for k, v in value.items() if k != name_key}
        name, name_path = value[name_key], _join(path, name_key)
    else:
        ctx.fail(path, f"= {_describe(value)} is not allowed: expected the name of one of the "
                       f"{point}, or a table with '{name_key}' and its options.")
    if ctx.registry is None:
        return PluginChoice(name, rest)
    names = ctx.registry.names(point)
    if name not in names:
        ctx.fail(name_path, f"= {name!r} is not allowed: registered {point} are "
                            f"{', '.join(names) or 'none'}.")
    record = ctx.registry.get(point, name)
    where = path if isinstance(value, dict) else _join(path, "<options>")
    rest = _with_preset(record, rest, where, ctx)
    return PluginChoice(name, build(record.options, rest, where, ctx))


def _with_preset_file(table: dict[str, Any], name_key: str, path: str, ctx: BuildContext) -> dict[str, Any]:
    """``table`` over the TOML file its ``preset_file`` names (relative to the config file;
    ``slatframe calibrate`` writes one): the file names the plugin (``name_key``) and sets
    its options, and keys written beside ``preset_file`` override the file's, key by key."""
    where = _join(path, "preset_file")
    text = table["preset_file"]
    if not isinstance(text, str) or not text.strip():
        ctx.fail(where, f"= {_describe(text)} is not allowed: expected the path of a TOML preset file.")
    file = Path(text)
    if not file.is_absolute() and ctx.base_dir is not None:
        file = ctx.base_dir / file
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        ctx.fail(where, f"= {text!r} is not allowed: there is no such file ({file}).")
    except IsADirectoryError:
        ctx.fail(where, f"= {text!r} is not allowed: it is a folder ({file}).")
    except (OSError, UnicodeDecodeError) as exc:
        ctx.fail(where, f"= {text!r} is not allowed: the file cannot be read as UTF-8 text ({file}: {exc}).")
    except tomllib.TOMLDecodeError as exc:
        ctx.fail(where, f"= {text!r} is not allowed: the file is not valid TOML ({file}: {exc}).")
    named = data.get(name_key)
    if not isinstance(named, str):
        ctx.fail(where, f"= {text!r} is not allowed: the file ({file}) names no plugin: a preset file gives "
                        f"{name_key} = \"NAME\" and that plugin's option values.")
    if name_key in table and table[name_key] != named:
        ctx.fail(_join(path, name_key), f"= {_describe(table[name_key])} is not allowed: the preset file {file} is "
                                        f"for {name_key} {named!r}; remove one of them.")
    return {**data, **{k: v for k, v in table.items() if k != "preset_file"}}


def _with_preset(record: Any, table: dict[str, Any], path: str, ctx: BuildContext) -> dict[str, Any]:
    """``table`` over the values of the preset it names (``preset = "NAME"``), if any.
    (The registry checks that every preset's keys are fields of the record's options.)"""
    preset = table.get("preset")
    if not preset or not record.presets:
        return table
    if not isinstance(preset, str) or preset not in record.presets:
        ctx.fail(_join(path, "preset"), f"= {_describe(preset)} is not allowed: {record.kind} {record.name!r} "
                                        f"has presets {', '.join(record.presets)}.")
    return {**record.presets[preset], **table}


def to_plain(obj: Any, name_key: str = "name") -> Any:
    """Turn a built config back into TOML-like plain data (for results and reports)."""
    if isinstance(obj, PluginChoice):
        return {name_key: obj.name, **to_plain(obj.options)}
    if attrs.has(type(obj)):
        out = {}
        for f in attrs.fields(type(obj)):
            if not f.init:
                continue
            v = getattr(obj, f.name)
            out[f.name] = to_plain(v, f.metadata.get("name_key", "name"))
        return out
    if isinstance(obj, (tuple, list)):
        return [to_plain(v, name_key) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj
