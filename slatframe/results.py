"""Run results: metrics with provenance, written atomically as JSON; output paths checked
before a run, and write errors reported as one sentence."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import attrs

from .errors import SlatframeError

#: Characters allowed in an ``experiment.name`` that names the result file.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")
NAME_MAX = 200  #: characters; with ".json" and a temporary file's affixes it stays under 255 bytes
NAME_RULE = (f"1 to {NAME_MAX} of the characters A-Z a-z 0-9 . _ - + "
             "(not starting with a dot, a dash or a plus)")


class OutputError(SlatframeError):
    """An output file or folder cannot be written; the message names it and why."""


@attrs.frozen
class Result:
    """Everything needed to interpret and reproduce one run."""

    name: str
    metrics: dict[str, Any]
    config: dict[str, Any]
    seed: int
    engine: str
    engine_reason: str
    version: str
    wall_time_s: float
    compile_time_s: float = 0.0  #: part of the wall time spent compiling (or loading) the engine
    series: dict[str, Any] = attrs.Factory(dict)  #: figures over time (e.g. dedup per scan interval)
    warnings: list[str] = attrs.Factory(list)  #: what a reader must know (e.g. dedup never woke up)
    #: every plugin and input file the run read: key, path (as ``config`` has it), bytes,
    #: sha256 (:mod:`slatframe.provenance`)
    inputs: list[dict[str, Any]] = attrs.Factory(list)
    #: ``estimate_bytes``: the memory estimate made before the run (slatframe/footprint.py);
    #: ``peak_rss_bytes``: the process's peak resident set when the run ended (its whole
    #: life: an in-process compile and earlier runs in the same process included)
    memory: dict[str, Any] = attrs.Factory(dict)
    #: what the workload said of its trace (its chunks' ``notes``: drmemtrace's thread order)
    workload_notes: dict[str, Any] = attrs.Factory(dict)
    #: what ``slatframe recost`` changed: its source file, overrides and version (None: as run)
    recosted: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data: what the result file holds (``recosted`` only when set)."""
        return attrs.asdict(self, filter=lambda field, value: field.name != "recosted" or value is not None)

    def to_frame(self) -> Any:
        """A one-row pandas DataFrame: the run's name, engine and metrics (pandas is an
        optional dependency)."""
        try:
            import pandas
        except ImportError:
            raise SlatframeError("Result.to_frame needs pandas; install it (pip install pandas) or use "
                                 "Result.to_dict().") from None
        return pandas.DataFrame([{"name": self.name, "engine": self.engine, **self.metrics}])


# -- names and paths -------------------------------------------------------------------


def file_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be used as a file name (None if it can)."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    if len(name) > NAME_MAX:
        return f"it is {len(name)} characters long"
    if not NAME_PATTERN.fullmatch(name):
        bad = next((c for c in name if not re.fullmatch(r"[A-Za-z0-9._+-]", c)), None)
        return f"it contains {bad!r}" if bad is not None else f"it starts with {name[0]!r}"
    return None


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to about ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _reason(exc: OSError) -> str:
    """The cause of an OSError in a few words, with the usual remedy."""
    code = exc.errno
    if code == errno.ENOSPC:
        return "the disk is full"
    if code == errno.EDQUOT:
        return "the disk quota is exceeded"
    if code == errno.EFBIG:
        return "the file-size limit (ulimit -f) is reached"
    if code == errno.EROFS:
        return "the file system is read-only"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if code == errno.ENOTDIR:
        return "a part of the path is a file, not a folder"
    if code == errno.EISDIR:
        return "it is a folder"
    if code == errno.ENAMETOOLONG:
        return "the name is too long"
    return (exc.strerror or type(exc).__name__).rstrip(".").lower()


def describe_os_error(exc: OSError, action: str | None = None) -> str:
    """``"PATH: cannot write: the disk is full."`` (one sentence; ``action`` optional)."""
    where = exc.filename if exc.filename is not None else "a file"
    return f"{where}: {action + ': ' if action else ''}{_reason(exc)}."


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _folder_problem(folder: Path) -> str | None:
    """Why ``folder`` can neither be used nor created as a writable folder (None if it can)."""
    existing = _first_existing(folder)
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "the file system is read-only" if _read_only_fs(existing) else "permission denied"
        return f"{existing} is not writable ({reason})"
    return None


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _check_characters(path: str | Path, what: str) -> None:
    """A path with a NUL, or with characters the file system's encoding cannot store
    (a lone surrogate), is an :class:`OutputError`."""
    if "\0" in str(path):
        raise OutputError(f"{what} {short_repr(str(path))}: a path cannot contain a NUL character.")
    try:
        os.fsencode(str(path))
    except UnicodeError:
        raise OutputError(f"{what} {short_repr(str(path))}: the path has characters this file system's "
                          "encoding cannot store.") from None


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """Check, before a run, that ``path`` can be written: it is not a folder and its folder
    exists (or can be created) and is writable. Raises :class:`OutputError`."""
    _check_characters(path, what)
    path = Path(path)
    if str(path) == "" or path.name in ("", ".", ".."):
        raise OutputError(f"{what} {str(path)!r}: is not a file name; give a path such as results/run.json.")
    if len(os.fsencode(path.name)) > 240:
        raise OutputError(f"{what} {short_repr(str(path))}: the file name is longer than 240 bytes.")
    if any(len(os.fsencode(part)) > 255 for part in path.parent.parts):
        raise OutputError(f"{what} {short_repr(str(path))}: a folder name is longer than 255 bytes.")
    try:
        if path.is_dir():
            raise OutputError(f"{what} {path}: is a folder; give a file path such as {path / 'result.json'}.")
        problem = _folder_problem(path.parent)
    except OSError as exc:
        raise OutputError(f"{what} {short_repr(str(path))}: {_reason(exc)}.") from None
    if problem:
        raise OutputError(f"{what} {path}: cannot be written, because {problem}; choose another path.")
    return path


def check_output_dir(path: str | Path, what: str = "--out") -> Path:
    """Check, before a run, that the folder ``path`` exists (or can be created) and is writable."""
    path = Path(path)
    if str(path) == "":
        raise OutputError(f"{what}: an empty path is not a folder; give a path such as results/my-sweep.")
    _check_characters(path, what)
    if any(len(os.fsencode(part)) > 255 for part in path.parts):
        raise OutputError(f"{what} {short_repr(str(path))}: a folder name is longer than 255 bytes.")
    try:
        problem = _folder_problem(path)
    except OSError as exc:
        raise OutputError(f"{what} {short_repr(str(path))}: {_reason(exc)}.") from None
    if problem:
        raise OutputError(f"{what} {path}: cannot be used as the output folder, because {problem}; "
                          "choose another path.")
    return path


def make_dirs(folder: Path) -> None:
    """``mkdir -p``; an OSError becomes one :class:`OutputError` sentence."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{folder}: cannot create the folder: a file of that name exists.") from None
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(folder)
        raise OutputError(describe_os_error(exc, "cannot create the folder")) from None


# -- writing ---------------------------------------------------------------------------


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no other way to read it; set it back at once
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success give it the mode a new
    file gets (``0o666`` less the umask) and rename it over ``path``. On any error the
    temporary file is removed, ``path`` is left as it was, and an OSError becomes one
    :class:`OutputError` sentence naming ``path``."""
    path = Path(path)
    make_dirs(path.parent)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        reason = _reason(exc)
        raise OutputError(f"{path}: cannot write the file: {reason}; "
                          "the file was left as it was before.") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and a
    rename, so a crash never leaves a half-written file and an existing file stays intact;
    the file gets the umask's mode. A write error raises :class:`OutputError`."""
    with replacing(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
