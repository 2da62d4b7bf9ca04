"""Trace files: opening compressed files, and slatframe's own ``.npz`` trace format.

The ``.npz`` format: equal-length 1-D integer arrays ``vaddr`` (uint64) and ``op``
(uint8: 0 read, 1 write, 2 ifetch, 16.. control events, see :mod:`slatframe.trace`) and
optionally ``vm`` and ``asid`` (uint16, default 0), as written by ``numpy.savez`` or
``savez_compressed``. :func:`read_npz` streams each member from the zip file chunk by
chunk; :class:`NpzWriter` writes one chunk by chunk. Both run in bounded memory.
"""
from __future__ import annotations

import io
import lzma
import os
import shutil
import struct
import tempfile
import tokenize
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

from .errors import TraceError
from .trace import TRACE_DTYPE

GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"


#: What reading a damaged compressed stream raises (truncated: EOFError; damaged: zlib.error, LZMAError).
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
    """Open a trace file for binary reading, decompressing gzip or xz by magic bytes
    (:class:`Decompressed`).

    Damage inside a compressed stream surfaces on read as one of :data:`DECOMPRESS_ERRORS`;
    bytes after the last stream that its format does not allow, as a :class:`TraceError`."""
    fh = open_raw(path)
    try:
        head = fh.read(6)
        fh.seek(0)
    except OSError as exc:
        fh.close()
        raise open_error(path, exc) from None
    if head.startswith(GZIP_MAGIC):
        return io.BufferedReader(Decompressed(path, fh, _GzipMember))  # type: ignore[return-value]
    if head.startswith(XZ_MAGIC):
        return io.BufferedReader(Decompressed(path, fh, _XzStream))  # type: ignore[return-value]
    return fh


class _Decoder:
    """What a stream decoder (``self._d``, an lzma or zlib decompressor) says when done."""

    _d: Any

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def rest(self) -> bytes:
        return self._d.unused_data


class _XzStream(_Decoder):
    """The decoder of one xz stream (its integrity check verified)."""

    name, magic = "xz stream", XZ_MAGIC
    padding = 4  #: after a stream: zero bytes, a multiple of 4 (.xz format, section 2.2)

    def __init__(self) -> None:
        self._d = lzma.LZMADecompressor(lzma.FORMAT_XZ)

    def decode(self, data: bytes, size: int) -> bytes:
        return self._d.decompress(data, size)

    @property
    def wants_input(self) -> bool:
        return self._d.needs_input


class _GzipMember(_Decoder):
    """The decoder of one gzip member (zlib checks its header, CRC-32 and length)."""

    name, magic = "gzip member", GZIP_MAGIC
    padding = 0  #: no padding between members; after the last, any number of zero bytes (as gzip -t accepts)

    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._tail = b""  # input given but not yet decoded (output was full)

    def decode(self, data: bytes, size: int) -> bytes:
        out = self._d.decompress(self._tail + data, size)
        self._tail = self._d.unconsumed_tail
        return out

    @property
    def wants_input(self) -> bool:
        return not self._tail


#: Compressed bytes read at a time.
_COMPRESSED_BLOCK = 1 << 17


class Decompressed(io.RawIOBase):
    """The decompressed bytes of a gzip or xz file, read as the format's own tools read it:
    streams (gzip members) one after another; after the last, only zero bytes, and for xz
    only a multiple of 4 of them (stream padding, which may also separate streams).
    Anything else after a stream is a :class:`TraceError` naming its byte offset (Python's
    ``gzip`` and ``lzma`` modules skip some such bytes silently and refuse xz padding)."""

    def __init__(self, path: str | Path, raw: BinaryIO, kind: type) -> None:
        self.path, self._raw, self._kind = path, raw, kind
        self._decoder = kind()
        self._pending = b""  # bytes read from the file, not yet given to a decoder
        self._offset = 0  # bytes read from the file
        self._ended = False

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()

    def readinto(self, buf) -> int:  # type: ignore[override]
        size = len(buf)
        while size and not self._ended:
            decoder = self._decoder
            if decoder.eof:
                self._next_stream(decoder.rest)
                continue
            data = self._take(_COMPRESSED_BLOCK) if decoder.wants_input else b""
            out = decoder.decode(data, size)
            if out:
                buf[:len(out)] = out
                return len(out)
            if decoder.wants_input and not data and not decoder.eof:
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        return 0

    def _take(self, size: int) -> bytes:
        """The pending bytes, or the file's next ``size`` bytes (b"" at its end)."""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        data = self._raw.read(size)
        self._offset += len(data)
        return data

    def _next_stream(self, rest: bytes) -> None:
        """After a stream that ended before ``rest``: start the next stream, or end the
        file, or refuse what follows."""
        end = self._offset - len(self._pending) - len(rest)  # the stream's end in the file
        self._pending = rest + self._pending
        zeros = self._skip_zeros()
        padding = self._kind.padding
        padded = zeros % padding == 0 if padding else zeros == 0  # what may come before another stream
        if not self._pending and (padded or not padding):  # zero bytes to the end of the file
            self._ended = True
        elif self._pending and padded and self._starts_with(self._kind.magic):
            self._decoder = self._kind()
        else:
            raise self._trailing(end)

    def _skip_zeros(self) -> int:
        """Drop zero bytes from the pending bytes and the file on; how many were dropped."""
        zeros = 0
        while True:
            if not self._pending:
                self._pending = self._take(_COMPRESSED_BLOCK)
                if not self._pending:
                    return zeros
            kept = self._pending.lstrip(b"\0")
            zeros += len(self._pending) - len(kept)
            self._pending = kept
            if kept:
                return zeros

    def _starts_with(self, magic: bytes) -> bool:
        """Whether the pending bytes (read on as far as needed) start with ``magic``."""
        while len(self._pending) < len(magic):
            more = self._raw.read(len(magic) - len(self._pending))
            if not more:
                break
            self._offset += len(more)
            self._pending += more
        return self._pending.startswith(magic)

    def _trailing(self, end: int) -> TraceError:
        kind = self._kind
        size = os.fstat(self._raw.fileno()).st_size
        allowed = ("stream padding (zero bytes, a multiple of 4) nor another xz stream" if kind.padding else
                   "another gzip member nor zero bytes up to the end of the file")
        return TraceError(f"{self.path}: {size - end} byte(s) from byte offset {end} follow the end of the "
                          f"{kind.name} but are neither {allowed}.")


COLUMNS = {"vaddr": np.uint64, "op": np.uint8, "vm": np.uint16, "asid": np.uint16, "thread": np.uint16}
OMITTED_WHEN_ZERO = ("thread",)  #: columns the writers leave out when every record has 0 (the default)
REQUIRED = ("vaddr", "op")



#: zip compression methods Python reads: stored, deflate (numpy.savez, savez_compressed), bzip2, lzma.
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
               zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
_NPY_VERSIONS = ((1, 0), (2, 0), (3, 0))


#: What numpy's .npy header parser raises on a damaged header: ValueError (most damage),
#: SyntaxError and tokenize.TokenError (an unclosed bracket or string: numpy's fallback
#: parser for Python 2 headers tokenizes it), TypeError, and RecursionError or
#: MemoryError (Python's parser on deeply nested or long unary chains of the <= 10,000
#: characters numpy allows), OverflowError.
NPY_HEADER_ERRORS = (ValueError, SyntaxError, TypeError, tokenize.TokenError, RecursionError, MemoryError,
                     OverflowError)


def _npy_header(fh: BinaryIO, where: str, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype a member's .npy header gives; a damaged header is a :class:`TraceError`."""
    try:
        version = np.lib.format.read_magic(fh)
        if version not in _NPY_VERSIONS:
            raise ValueError(f"unknown .npy version {version[0]}.{version[1]}")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        with warnings.catch_warnings():  # a damaged header's "\o" is an invalid escape to Python's parser
            warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
            shape, _, dtype = read_header(fh)
        if any(type(n) is not int for n in shape):  # numpy checks isinstance(n, int): True passes
            raise ValueError(f"its shape {shape} is not a tuple of integers")
    except NPY_HEADER_ERRORS as exc:
        raise TraceError(f"{where}: array {name!r} is not a valid .npy member: {_header_problem(exc)}; "
                         "a .npy header is a Python dict literal with 'descr', 'fortran_order' and 'shape' "
                         "(as numpy.save writes it).") from None
    return shape, dtype


def _header_problem(exc: BaseException) -> str:
    """What is wrong with a .npy header, in a few words (numpy's messages quote the whole header)."""
    if isinstance(exc, tokenize.TokenError):
        return f"its header does not parse ({exc.args[0]}: an unclosed bracket or string)"
    if isinstance(exc, (RecursionError, MemoryError)):
        return "its header is nested too deeply to parse"
    text = " ".join(str(exc).split())
    if text.startswith("Cannot parse header"):
        return "its header does not parse"
    if text.startswith("malformed node or string"):  # ast.literal_eval: an expression such as 2**40
        return "its header holds an expression, not only literals"
    return text if len(text) <= 160 else text[:157] + "..."


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
        shape, dtype = _npy_header(self.fh, where, name)
        if len(shape) != 1 or dtype.kind not in "iu" or dtype.hasobject:
            raise TraceError(f"{where}: array {name!r} has shape {shape} and dtype {dtype}; "
                             f"expected a 1-D integer array ({np.dtype(COLUMNS[name]).name}).")
        if shape[0] < 0:
            raise TraceError(f"{where}: array {name!r} has a negative length ({shape[0]}) in its .npy header.")
        self.length = int(shape[0])
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


_EOCD, _EOCD_SIZE = b"PK\x05\x06", 22  # the zip's end of central directory record (APPNOTE 4.3.16)
_LOCAL, _LOCAL_SIZE = b"PK\x03\x04", 30  # a member's local file header (APPNOTE 4.3.7)


def _check_zip_end(fh: BinaryIO, where: str) -> None:
    """Nothing may follow the zip's end of central directory record and its comment. The
    record is found as :mod:`zipfile` finds it (the last signature in the last 64 KiB and
    22 bytes); without one, :mod:`zipfile` refuses the file."""
    size = fh.seek(0, os.SEEK_END)
    start = max(0, size - _EOCD_SIZE - 0xFFFF)
    fh.seek(start)
    tail = fh.read()
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < _EOCD_SIZE:
        return
    comment = struct.unpack_from("<H", tail, at + 20)[0]
    end = start + at + _EOCD_SIZE + comment
    if end < size:
        raise TraceError(f"{where}: {size - end} byte(s) from byte offset {end} follow the zip's end of central "
                         f"directory record{f' and its {comment}-byte comment' if comment else ''}; nothing may "
                         "follow them in a zip.")
    if end > size:
        raise TraceError(f"{where}: the zip's end of central directory record at byte offset {start + at} gives a "
                         f"{comment}-byte comment, but the file ends {end - size} byte(s) before its end.")


def _check_zip_members(fh: BinaryIO, zf: zipfile.ZipFile, where: str) -> None:
    """The members follow each other from byte 0, and the central directory follows the
    last, without gaps or overlaps (APPNOTE 4.3.6; :mod:`zipfile` reads members where the
    central directory places them, skipping bytes between them)."""
    at, before = 0, ""
    for info in sorted(zf.infolist(), key=lambda i: i.header_offset):
        what = f"member {info.filename!r}"
        if not before and info.header_offset != 0:
            raise TraceError(f"{where}: the zip's central directory places its first member at byte offset "
                             f"{info.header_offset}, not 0: bytes were inserted or removed before the central "
                             "directory (a zip's members and central directory follow each other without gaps).")
        if info.header_offset != at:
            raise _zip_gap(where, info.header_offset, at, what, before)
        at, before = _member_end(fh, info, where), what
    if zf.start_dir != at:
        raise _zip_gap(where, zf.start_dir, at, "the central directory", before or "the start of the file")


def _member_end(fh: BinaryIO, info: zipfile.ZipInfo, where: str) -> int:
    """Where a member ends: its local header, name, extra field, data, and its data
    descriptor if it has one (flag bit 3; 8-byte sizes with a zip64 extra field)."""
    fh.seek(info.header_offset)
    header = fh.read(_LOCAL_SIZE)
    if len(header) < _LOCAL_SIZE or not header.startswith(_LOCAL):
        raise TraceError(f"{where}: the zip's central directory places member {info.filename!r} at byte offset "
                         f"{info.header_offset}, where there is no member header (PK\\x03\\x04).")
    name_len, extra_len = struct.unpack_from("<HH", header, 26)
    extra = fh.read(name_len + extra_len)[name_len:]
    end = info.header_offset + _LOCAL_SIZE + name_len + extra_len + info.compress_size
    if info.flag_bits & 0x08:
        fh.seek(end)
        signed = fh.read(4) == b"PK\x07\x08"
        end += 4 * signed + (20 if _has_zip64_extra(extra) else 12)
    return end


def _has_zip64_extra(extra: bytes) -> bool:
    i = 0
    while i + 4 <= len(extra):
        kind, size = struct.unpack_from("<HH", extra, i)
        if kind == 0x0001:
            return True
        i += 4 + size
    return False


def _zip_gap(where: str, found: int, expected: int, what: str, before: str) -> TraceError:
    if found > expected:
        return TraceError(f"{where}: {found - expected} byte(s) from byte offset {expected} lie between {before} "
                          f"and {what}; a zip's members and central directory follow each other without gaps.")
    return TraceError(f"{where}: {what} starts at byte offset {found}, inside {before} (which ends at byte offset "
                      f"{expected}); a zip's members and central directory do not overlap.")


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
        _check_zip_end(fh, where)
        fh.seek(0)
        try:
            zf = zipfile.ZipFile(fh)
        except _DAMAGE as exc:
            raise TraceError(f"{where}: not an npz (zip) file: {exc}.") from None
        with zf:
            _check_zip_members(fh, zf, where)
            infos = {}
            for info in zf.infolist():
                name = info.filename[:-4]
                if not info.filename.endswith(".npy") or name not in COLUMNS:
                    what = f"array {name!r}" if info.filename.endswith(".npy") else f"member {info.filename!r}"
                    raise TraceError(f"{where}: {what} is not part of the format; "
                                     f"allowed arrays are {', '.join(COLUMNS)} (.npy members).")
                if name in infos:
                    raise TraceError(f"{where}: array {name!r} is in the zip twice; an npz holds each array once.")
                infos[name] = info
            for name in REQUIRED:
                if name not in infos:
                    raise TraceError(f"{where}: array {name!r} is missing; an npz trace needs "
                                     f"'vaddr' and 'op', and may have 'vm', 'asid' and 'thread'.")
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
        self._nonzero: set[str] = set()  #: the OMITTED_WHEN_ZERO columns written, for a record not 0

    def append(self, chunk: np.ndarray) -> None:
        for name, fh in self._tmp.items():
            column = np.ascontiguousarray(chunk[name], dtype=COLUMNS[name])
            if name in OMITTED_WHEN_ZERO and column.any():
                self._nonzero.add(name)
            fh.write(column.tobytes())
        self.count += len(chunk)

    def close(self) -> None:
        mode = zipfile.ZIP_DEFLATED if self.compressed else zipfile.ZIP_STORED
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", compression=mode, allowZip64=True) as zf:
                for name, fh in self._tmp.items():
                    if name in OMITTED_WHEN_ZERO and name not in self._nonzero:
                        fh.close()
                        continue
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
    save(path, **{name: np.ascontiguousarray(trace[name]) for name in COLUMNS
                  if name not in OMITTED_WHEN_ZERO or trace[name].any()})

