"""Trace files: opening compressed files, and slatframe's own ``.npz`` trace format.

The ``.npz`` format: equal-length 1-D integer arrays ``vaddr`` (uint64) and ``op``
(uint8: 0 read, 1 write, 2 ifetch, 16.. control events, see :mod:`slatframe.trace`) and
optionally ``vm`` and ``asid`` (uint16, default 0), as written by ``numpy.savez`` or
``savez_compressed``. :func:`read_npz` streams each member from the zip file chunk by
chunk; :class:`NpzWriter` writes one chunk by chunk. Both run in bounded memory.
"""
from __future__ import annotations

import gzip
import lzma
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from .errors import TraceError
from .trace import TRACE_DTYPE

GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"


#: What reading a damaged compressed stream raises (gzip: EOFError, BadGzipFile, zlib.error).
DECOMPRESS_ERRORS = (EOFError, OSError, lzma.LZMAError, zlib.error)


def open_error(path: str | Path, exc: OSError) -> TraceError:
    """The one-sentence error for a trace file that cannot be opened or read."""
    if isinstance(exc, FileNotFoundError):
        return TraceError(f"{path}: trace file does not exist.")
    if isinstance(exc, IsADirectoryError):
        return TraceError(f"{path}: is a directory; a trace is a file.")
    if isinstance(exc, PermissionError):
        return TraceError(f"{path}: trace file cannot be read (permission denied).")
    return TraceError(f"{path}: trace file cannot be read: {exc.strerror or exc}.")


def open_raw(path: str | Path) -> BinaryIO:
    """Open ``path`` for binary reading; an unreadable file is a :class:`TraceError`."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise open_error(path, exc) from None
    return fh


def open_trace(path: str | Path) -> BinaryIO:
    """Open a trace file for binary reading, decompressing gzip or xz by magic bytes.

    Damage inside a compressed stream surfaces on read as one of :data:`DECOMPRESS_ERRORS`."""
    fh = open_raw(path)
    try:
        head = fh.read(6)
        fh.seek(0)
    except OSError as exc:
        fh.close()
        raise open_error(path, exc) from None
    if not head.startswith((GZIP_MAGIC, XZ_MAGIC)):
        return fh
    fh.close()  # reopened by name, so that closing the decompressor closes the file
    try:
        if head.startswith(GZIP_MAGIC):
            return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
        return lzma.LZMAFile(path)  # type: ignore[return-value]
    except OSError as exc:
        raise open_error(path, exc) from None


COLUMNS = {"vaddr": np.uint64, "op": np.uint8, "vm": np.uint16, "asid": np.uint16}
REQUIRED = ("vaddr", "op")



#: zip compression methods Python reads: stored, deflate (numpy.savez, savez_compressed), bzip2, lzma.
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
               zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
_NPY_VERSIONS = ((1, 0), (2, 0), (3, 0))


class _Member:
    """A streaming reader of one ``.npy`` member of an npz."""

    def __init__(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> None:
        name = self.name = info.filename[:-4]
        self.where = where
        if info.flag_bits & 0x1:
            raise TraceError(f"{where}: array {name!r} is encrypted; an npz trace is an unencrypted zip "
                             "(as numpy.savez writes).")
        if info.compress_type not in ZIP_METHODS:
            method = zipfile.compressor_names.get(info.compress_type, "unknown")
            raise TraceError(f"{where}: array {name!r} uses zip compression method {info.compress_type} "
                             f"({method}); allowed are {', '.join(ZIP_METHODS.values())}.")
        self.fh = zf.open(info)
        try:
            version = np.lib.format.read_magic(self.fh)
            if version not in _NPY_VERSIONS:
                raise ValueError(f"unknown .npy version {version[0]}.{version[1]}")
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(self.fh)
        except (ValueError, SyntaxError, TypeError) as exc:
            raise TraceError(f"{where}: array {name!r} is not a valid .npy member ({exc}).") from None
        if len(shape) != 1 or dtype.kind not in "iu" or dtype.hasobject:
            raise TraceError(f"{where}: array {name!r} has shape {shape} and dtype {dtype}; "
                             f"expected a 1-D integer array ({np.dtype(COLUMNS[name]).name}).")
        self.length = shape[0]
        self.dtype = dtype
        target = self.target = np.dtype(COLUMNS[name])
        self.fits = dtype.kind == "u" and dtype.itemsize <= target.itemsize  # no value can be out of range

    def read(self, n: int, first: int) -> np.ndarray:
        raw = self.fh.read(n * self.dtype.itemsize)
        if len(raw) != n * self.dtype.itemsize:
            raise TraceError(f"{self.where}: array {self.name!r} ends early at record "
                             f"{first + len(raw) // self.dtype.itemsize}.")
        values = np.frombuffer(raw, dtype=self.dtype)
        target = self.target
        if not self.fits and values.size and (values.min() < 0 or (target.itemsize < 8 and
                                                                   values.max() > np.iinfo(target).max)):
            bad = int(np.flatnonzero((values < 0) | (values > np.iinfo(target).max))[0])
            raise TraceError(f"{self.where}: record {first + bad} of array {self.name!r} is "
                             f"{values[bad]}, outside the range of {target.name}.")
        return values

    def finish(self) -> None:
        """Check that the member ends where its header says (this also checks its CRC)."""
        if self.fh.read(1):
            raise TraceError(f"{self.where}: array {self.name!r} holds more data than its "
                             f"{self.length} records.")


_DAMAGE = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError, KeyError,
           RuntimeError, NotImplementedError)


def read_npz(path: str | Path, chunk_size: int) -> Iterator[np.ndarray]:
    """Yield :data:`TRACE_DTYPE` chunks of an npz trace."""
    where = str(path)
    done = 0
    try:
        for chunk in _read_npz(path, chunk_size, where):
            yield chunk
            done += len(chunk)
    except TraceError:
        raise
    except _DAMAGE as exc:
        raise TraceError(f"{where}: the npz file is damaged near record {done}: {exc}.") from None


def _read_npz(path: str | Path, chunk_size: int, where: str) -> Iterator[np.ndarray]:
    with open_raw(path) as fh:
        if fh.read(4) != b"PK\x03\x04":  # as numpy.load: a zip with bytes before it is not an npz
            raise TraceError(f"{where}: not an npz file: it does not start with a zip member header (PK\\x03\\x04).")
        fh.seek(0)
        try:
            zf = zipfile.ZipFile(fh)
        except _DAMAGE as exc:
            raise TraceError(f"{where}: not an npz (zip) file: {exc}.") from None
        with zf:
            infos = {}
            for info in zf.infolist():
                name = info.filename[:-4]
                if not info.filename.endswith(".npy") or name not in COLUMNS:
                    what = f"array {name!r}" if info.filename.endswith(".npy") else f"member {info.filename!r}"
                    raise TraceError(f"{where}: {what} is not part of the format; "
                                     f"allowed arrays are {', '.join(COLUMNS)} (.npy members).")
                infos[name] = info
            for name in REQUIRED:
                if name not in infos:
                    raise TraceError(f"{where}: array {name!r} is missing; an npz trace needs "
                                     f"'vaddr' and 'op', and may have 'vm' and 'asid'.")
            members = {n: _Member(zf, infos[n], where) for n in COLUMNS if n in infos}
            length = members["vaddr"].length
            for m in members.values():
                if m.length != length:
                    raise TraceError(f"{where}: array {m.name!r} has {m.length} records but 'vaddr' has {length}.")
            if length == 0:
                raise TraceError(f"{where}: holds no trace records (its arrays are empty).")
            for start in range(0, length, chunk_size):
                n = min(chunk_size, length - start)
                chunk = np.zeros(n, dtype=TRACE_DTYPE)
                for name, member in members.items():
                    chunk[name] = member.read(n, start)
                if start + n == length:
                    for member in members.values():
                        member.finish()
                yield chunk


class NpzWriter:
    """Writes an npz trace chunk by chunk in bounded memory: each column goes to a
    temporary file, and :meth:`close` assembles the zip (each ``.npy`` member streamed
    in) under a temporary name, then renames it into place."""

    def __init__(self, path: str | Path, compressed: bool = True) -> None:
        self.path = Path(path)
        self.compressed = compressed
        self.count = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = {name: tempfile.TemporaryFile(dir=self.path.parent) for name in COLUMNS}

    def append(self, chunk: np.ndarray) -> None:
        for name, fh in self._tmp.items():
            fh.write(np.ascontiguousarray(chunk[name], dtype=COLUMNS[name]).tobytes())
        self.count += len(chunk)

    def close(self) -> None:
        mode = zipfile.ZIP_DEFLATED if self.compressed else zipfile.ZIP_STORED
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", compression=mode, allowZip64=True) as zf:
                for name, fh in self._tmp.items():
                    fh.seek(0)
                    with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(COLUMNS[name])),
                                  "fortran_order": False, "shape": (self.count,)}
                        np.lib.format.write_array_header_2_0(member, header)
                        shutil.copyfileobj(fh, member, 1 << 20)
                    fh.close()
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def __enter__(self) -> "NpzWriter":
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            self.close()
        else:
            for fh in self._tmp.values():
                fh.close()


def write_npz(path: str | Path, trace: np.ndarray, compressed: bool = True) -> None:
    """Write a :data:`TRACE_DTYPE` array as an npz trace."""
    save = np.savez_compressed if compressed else np.savez
    save(path, **{name: np.ascontiguousarray(trace[name]) for name in COLUMNS})

