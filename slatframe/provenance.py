"""Provenance: the sha256 of every plugin file and input file a run reads, for its result.

Each is a row of the result's ``inputs``: the config key that names the file, its path as
the result's ``config`` records it, its size and its sha256. A plugin file's hash is of
the source the run executed (:attr:`slatframe.registry.Registry.file_sha256`). Input files
(every option declared with ``path=True``: ``workload.path``, each ``mix`` part's,
``vms[].image``) are hashed by a thread that streams each file once, in blocks, while the
run goes on (hashlib and file reads release the GIL), and joined when the run ends; a
file whose size, modification or change time differs at the end from what they were at
the start gets no hash and a warning, since its hash may not be of what the run read. An
input that is a folder (``drmemtrace``'s ``path``) is hashed as the sha256 of the lines
``<relative name>\0<sha256 of the file>`` of every file under it, in name order; its size
is theirs summed.
Hashes are kept per process by file identity and those times, so a sweep's points or a
notebook's runs over one trace hash it once.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Iterator

import attrs

from .options import PluginChoice

BLOCK = 1 << 20  #: bytes read and hashed at a time

#: (resolved path, device, inode, size, mtime_ns, ctime_ns) -> sha256 hex digest
_digests: dict[tuple[Any, ...], str] = {}
_digests_lock = threading.Lock()


def input_paths(obj: Any, key: str = "") -> Iterator[tuple[str, str, bool]]:
    """``(key path, path, is a plugin file)`` of every file option (``path=True``) set in a
    resolved config, in config order: ``experiment.plugins[0]``, ``workload.path``,
    ``workload.parts[1].workload.path``, ``vms[0].image``."""
    if isinstance(obj, PluginChoice):
        yield from input_paths(obj.options, key)
        return
    if isinstance(obj, (tuple, list)):
        for i, item in enumerate(obj):
            yield from input_paths(item, f"{key}[{i}]")
        return
    if not attrs.has(type(obj)):
        return
    for field in attrs.fields(type(obj)):
        value = getattr(obj, field.name)
        where = f"{key}.{field.name}" if key else field.name
        if field.metadata.get("path"):
            values = value if isinstance(value, (tuple, list)) else (value,)
            many = isinstance(value, (tuple, list))
            for i, item in enumerate(values):
                if isinstance(item, str):
                    yield (f"{where}[{i}]" if many else where), item, where == "experiment.plugins"
        else:
            yield from input_paths(value, where)


def _identity(path: str) -> tuple[Any, ...]:
    if os.path.isdir(path):
        return tuple((name, _identity(os.path.join(path, name))) for name in _folder_files(path))
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _folder_files(path: str) -> list[str]:
    """The files under a folder, as names relative to it, sorted."""
    return sorted(os.path.relpath(os.path.join(root, name), path)
                  for root, _, names in os.walk(path) for name in names
                  if os.path.isfile(os.path.join(root, name)))


def input_size(path: str) -> int:
    """A file's size, or the summed sizes of the files under a folder."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, name)) for name in _folder_files(path))
    return os.path.getsize(path)


def file_sha256(path: str | Path, cancelled: threading.Event | None = None) -> str | None:
    """The sha256 of a file, streamed in :data:`BLOCK`-byte reads into one buffer (None if
    ``cancelled`` is set meanwhile); kept per process by the file's identity and times.
    A folder's: of its files' names and hashes (module docstring)."""
    if os.path.isdir(path):
        digest = hashlib.sha256()
        for name in _folder_files(str(path)):
            inner = file_sha256(os.path.join(path, name), cancelled)
            if inner is None:
                return None
            digest.update(f"{name}\0{inner}\n".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()
    ident = _identity(str(path))
    with _digests_lock:
        known = _digests.get(ident)
    if known is not None:
        return known
    digest = hashlib.sha256()
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while True:
            if cancelled is not None and cancelled.is_set():
                return None
            n = fh.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
    value = digest.hexdigest()
    with _digests_lock:
        _digests[ident] = value
    return value


class InputHashes:
    """Hashes a run's plugin and input files: :meth:`finish` gives the result's ``inputs``
    rows and warnings. Input files are hashed in a background thread started here."""

    def __init__(self, config: Any, registry: Any) -> None:
        loaded = getattr(registry, "file_sha256", {})
        self.rows: list[dict[str, Any]] = []
        self.pending: list[tuple[dict[str, Any], tuple[Any, ...]]] = []
        for key, path, plugin in input_paths(config):
            row: dict[str, Any] = {"key": key, "path": path, "bytes": input_size(path), "sha256": None}
            self.rows.append(row)
            if plugin and Path(path).resolve() in loaded:
                row["sha256"] = loaded[Path(path).resolve()]  # the source the run executed
            else:
                self.pending.append((row, _identity(path)))
        self.errors: list[str] = []
        self.cancelled = threading.Event()
        self.thread = threading.Thread(target=self._hash, name="slatframe-input-hashes", daemon=True)
        if self.pending:
            self.thread.start()

    def _hash(self) -> None:
        for row, _ in self.pending:
            try:
                row["sha256"] = file_sha256(row["path"], self.cancelled)
            except OSError as exc:
                self.errors.append(f"{row['path']} ({row['key']}) could not be read to hash it: "
                                   f"{exc.strerror or exc}")

    def cancel(self) -> None:
        """Stop hashing (a run that ended early)."""
        self.cancelled.set()

    def finish(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Wait for the hashes; the ``inputs`` rows and what the result must warn of."""
        if self.thread.is_alive():
            self.thread.join()
        warnings = [f"the input file {error}, so the result's inputs give no sha256 for it." for error in self.errors]
        for row, before in self.pending:
            try:
                changed = _identity(row["path"]) != before
            except OSError:
                changed = True
            if changed:
                row["sha256"] = None
                warnings.append(f"the input file {row['path']} ({row['key']}) changed while the run read it (its size "
                                "or modification time differs from the run's start), so the result's inputs give no "
                                "sha256 for it; rerun with the file unchanged.")
        return self.rows, warnings
