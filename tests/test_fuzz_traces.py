"""Fuzzing every trace format slatframe reads: lackey text and ChampSim binary (plain, gz,
xz) and npz. Each case builds a small trace, damages it (flipped, inserted, deleted bytes;
truncation; fields replaced by huge or negative numbers; garbage lines; bytes after a
compressed stream or after a zip; damaged .npy headers; gaps in a zip) and reads it the
way ``slatframe trace info`` does (format detected, :func:`slatframe.tracetools.read_trace`)
and the way ``slatframe run`` does (:func:`slatframe.engine.workload_chunks` of a config
naming the file). Either the records are exactly what the small parsers below compute
from the same bytes, or the error is a :class:`SlatframeError` -- never another exception.

The parsers here are written from docs/trace-format.md, not from the readers: lackey
lines are taken apart with ``bytes`` methods, ChampSim records with ``struct``, gzip and
xz files a whole stream at a time, npz files with ``numpy.load`` and a walk through the
zip from its first byte.
"""
from __future__ import annotations

import gzip
import io
import lzma
import struct
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from slatframe.errors import SlatframeError
from slatframe.testing import build, tiny_config
from slatframe.trace import TRACE_DTYPE

VA_BITS = 48  # the default guest format of tiny_config ('native': x86-64, 4 levels)
LINE_LIMIT = 1 << 16
CI = settings(max_examples=90, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))

# -- the independent parsers ---------------------------------------------------------------

HEX = set(b"0123456789abcdefABCDEF")
BLANK = b" \t"
LACKEY_KINDS = {ord("I"): (2,), ord("L"): (0,), ord("S"): (1,), ord("M"): (0, 1)}


def parse_lackey_line(line: bytes) -> list[tuple[int, int]] | None:
    """The records of one lackey line; None when the line is not valid."""
    if line.startswith(b"==") or all(c in b" \t\r\x0b\x0c" for c in line):
        return []
    i = 0
    while i < len(line) and line[i] in BLANK:
        i += 1
    if i >= len(line) or line[i] not in LACKEY_KINDS:
        return None
    kind = line[i]
    i += 1
    if i >= len(line) or line[i] not in BLANK:
        return None
    while i < len(line) and line[i] in BLANK:
        i += 1
    fields = line[i:].rstrip(b" \t\r").split(b",")
    if len(fields) != 2:
        return None
    address, size = fields
    if not address or not all(c in HEX for c in address) or not size or not size.isdigit():
        return None
    value = int(address.decode(), 16)
    if value >= 1 << 64:
        return None
    return [(op, value) for op in LACKEY_KINDS[kind]]


def parse_lackey(text: bytes) -> list[tuple[int, int]] | None:
    """The records of a whole lackey text, or None when it must be refused."""
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline ending the last line
    out: list[tuple[int, int]] = []
    for line in lines:
        if len(line) > LINE_LIMIT:
            return None
        got = parse_lackey_line(line)
        if got is None:
            return None
        out += got
    return out or None


def parse_champsim(data: bytes) -> list[tuple[int, int]] | None:
    """The records of a ChampSim file, or None when it must be refused."""
    if not data or len(data) % 64:
        return None
    out = []
    for start in range(0, len(data), 64):
        fields = struct.unpack_from("<QBB2B4B2Q4Q", data, start)
        ip, destinations, sources = fields[0], fields[9:11], fields[11:15]
        out.append((2, ip))
        out += [(0, a) for a in sources if a]
        out += [(1, a) for a in destinations if a]
    return out


GZIP_MAGIC, XZ_MAGIC = b"\x1f\x8b", b"\xfd7zXZ\x00"


def decompress(raw: bytes) -> bytes | None:
    """The bytes a trace file holds (gzip and xz recognized by their magic), None if damaged."""
    try:
        if raw.startswith(GZIP_MAGIC):
            return streams(raw, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), GZIP_MAGIC, None)
        if raw.startswith(XZ_MAGIC):
            return streams(raw, lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ), XZ_MAGIC, 4)
    except Exception:  # the oracle only needs to know that the stream is damaged
        return None
    return raw


def streams(raw: bytes, decoder, magic: bytes, padding: int | None) -> bytes | None:
    """The concatenated streams of a whole file, by docs/trace-format.md's "What may follow
    a stream": xz stream padding (a multiple of ``padding`` zero bytes) between and after
    streams; for gzip (``padding`` None) zero bytes only after the last member."""
    out = []
    while True:
        d = decoder()
        out.append(d.decompress(raw))
        if not d.eof:
            return None
        body = d.unused_data.lstrip(b"\0")
        zeros = len(d.unused_data) - len(body)
        if padding is not None and zeros % padding:
            return None
        if not body:
            return b"".join(out)
        if (padding is None and zeros) or not body.startswith(magic):
            return None
        raw = body


def detected(raw: bytes, data: bytes) -> str:
    """The format docs/trace-format.md says a file is read as."""
    if raw.startswith(b"PK"):
        return "npz"
    head = data[:4096]
    if head.lstrip(b"\n").startswith((b"==", b"I ", b" L ", b" S ", b" M ")) or b"\0" not in head:
        return "lackey"
    return "champsim"


# -- reading through the tools' paths ----------------------------------------------------------

_WORKDIR = Path(tempfile.mkdtemp(prefix="slatframe-fuzz-"))
_CONFIGS: dict[str, tuple] = {}


def trace_file(fmt: str, raw: bytes) -> Path:
    path = _WORKDIR / f"t.{fmt}"
    path.write_bytes(raw)
    return path


def run_path_records(fmt: str, path: Path, registry) -> np.ndarray:
    """What ``slatframe run`` feeds the engine for a config whose workload is ``path``."""
    from slatframe.engine import workload_chunks

    if fmt not in _CONFIGS:
        _CONFIGS[fmt] = build(tiny_config(workload={"source": fmt, "path": str(path)}), registry)
    config, reg = _CONFIGS[fmt]
    return concat(workload_chunks(config, reg))


def info_path_records(path: Path, registry) -> np.ndarray:
    """What ``slatframe trace info`` reads (format detected)."""
    from slatframe.tracetools import read_trace

    return concat(read_trace(path, None, registry, chunk_size=5))


def concat(chunks) -> np.ndarray:
    parts = list(chunks)
    for part in parts:
        assert part.dtype == TRACE_DTYPE and part.ndim == 1
    return np.concatenate(parts) if parts else np.zeros(0, TRACE_DTYPE)


def pairs(records: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(records["op"].tolist(), records["vaddr"].tolist()))


def outcome(read, *args):
    """The records read, or the SlatframeError raised (any other exception fails the test)."""
    try:
        return read(*args)
    except SlatframeError as exc:
        assert str(exc).strip() and "\n" not in str(exc)
        return exc


def check_text_or_binary(fmt: str, raw: bytes, registry) -> None:
    """Read ``raw`` as a file of ``fmt`` through both paths and compare with the parsers."""
    path = trace_file(fmt, raw)
    data = decompress(raw)
    parse = parse_lackey if fmt == "lackey" else parse_champsim
    expected = parse(data) if data is not None else None
    got = outcome(run_path_records, fmt, path, registry)
    if expected is None or any(va >> VA_BITS for _, va in expected):
        assert isinstance(got, SlatframeError), (expected, got)
    else:
        assert not isinstance(got, SlatframeError), got
        assert pairs(got) == expected
        assert (got["vm"] == 0).all() and (got["asid"] == 0).all()

    got = outcome(info_path_records, path, registry)
    if data is None or not data or raw.startswith(b"PK"):
        assert isinstance(got, SlatframeError)
        return
    as_read = detected(raw, data)
    expected = (parse_lackey if as_read == "lackey" else parse_champsim)(data)
    if expected is None:
        assert isinstance(got, SlatframeError), (as_read, got)
    else:
        assert not isinstance(got, SlatframeError), got
        assert pairs(got) == expected


# -- strategies ----------------------------------------------------------------------------------

addresses = st.one_of(st.integers(0, 1 << 20), st.integers((1 << VA_BITS) - 2, (1 << VA_BITS) + 1),
                      st.integers(0, (1 << 64) - 1), st.sampled_from([0, (1 << 64) - 1, 1 << 64, 1 << 70]),
                      st.integers(-(1 << 20), -1))


small_addresses = st.integers(0, (1 << VA_BITS) - 1)


def rarely(n: int = 8) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws."""
    return st.sampled_from([False] * (n - 1) + [True])


@st.composite
def lackey_line(draw, clean: bool = False) -> bytes:
    kinds = ["valid"] * 6 + ["message", "blank"] + ([] if clean else ["garbage"])
    kind = draw(st.sampled_from(kinds))
    if kind == "message":
        return b"==" + draw(st.binary(max_size=20)).replace(b"\n", b"") + b"== note"
    if kind == "blank":
        return draw(st.sampled_from([b"", b" ", b"\t \r", b"\x0b"]))
    if kind == "garbage":
        return draw(st.one_of(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
                              st.sampled_from([b"I  0x401,3", b" L 401", b" X 401,8", b"I 401,3,9", b" L -10,8",
                                               b" S 401,-1", b"I  \xff\xfe,3", b" M 4_01,4", b" L ,8",
                                               b"I  " + b"a" * 17 + b",3", b" L 401,8 junk"])))
    address = draw(small_addresses if clean else addresses)
    digits = f"{address:x}" if address >= 0 else f"-{-address:x}"
    digits = "0" * draw(st.integers(0, 10)) + (digits.upper() if draw(st.booleans()) else digits)
    lead = draw(st.sampled_from(["", " ", "  ", "\t"]))
    gap = draw(st.sampled_from([" ", "  ", "\t"]))
    end = draw(st.sampled_from(["", "", " ", "\r"]))
    size = draw(st.integers(0, 4096))
    return f"{lead}{draw(st.sampled_from('ILSM'))}{gap}{digits},{size}{end}".encode()


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with a few bytes flipped, inserted or deleted, or cut short."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        what = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(out))))
        if what == "flip" and at < len(out):
            out[at] ^= draw(st.integers(1, 255))
        elif what == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif what == "delete":
            del out[at:at + draw(st.integers(1, 8))]
        elif what == "truncate":
            del out[at:]
    return bytes(out)


def compressed(data: bytes, how: str) -> bytes:
    return {"gz": gzip.compress, "xz": lzma.compress}.get(how, lambda b: b)(data)


@st.composite
def tailed(draw, data: bytes, how: str, clean: bool) -> bytes:
    """``data`` compressed as ``how``, sometimes followed by what may (or, unless ``clean``,
    may not) come after a stream: zero bytes (a multiple of 4 when ``clean``), another
    stream, garbage, part of a stream."""
    raw = compressed(data, how)
    if how == "plain" or not draw(rarely(3)):
        return raw
    zeros = st.integers(0, 3).map(lambda k: b"\0" * (4 * k))
    if not clean:
        zeros = st.integers(0, 13).map(lambda k: b"\0" * k)
    for _ in range(draw(st.integers(1, 2))):
        pad = draw(zeros)
        kinds = ["stream", "end"] + ([] if clean else ["garbage", "header"])
        kind = draw(st.sampled_from(kinds))
        if kind == "stream":  # (after zero bytes, refused for gzip)
            raw += pad + compressed(draw(st.sampled_from([data, b"", b"I  10,4\n"])), how)
        elif kind == "garbage":
            junk = st.sampled_from([b"garbage!", b"\x01", b"\0\0\0\x01"]) | st.binary(min_size=1, max_size=9)
            raw += pad + draw(junk)
        elif kind == "header":
            raw += pad + compressed(data, how)[:draw(st.integers(1, 12))]
        else:
            raw += pad
    return raw


@st.composite
def lackey_files(draw) -> bytes:
    clean = draw(st.booleans())  # half the files hold only valid lines, left intact
    lines = draw(st.lists(lackey_line(clean), max_size=12))
    text = b"\n".join(lines) + draw(st.sampled_from([b"\n", b""]))
    if not clean and draw(rarely(20)):  # a line longer than the limit
        text += b" L " + b"0" * LINE_LIMIT + b"1,8\n"
    if not clean and draw(st.booleans()):
        text = draw(mutated(text))
    raw = draw(tailed(text, draw(st.sampled_from(["plain", "gz", "xz"])), clean))
    if not clean and draw(rarely(4)):
        raw = draw(mutated(raw))
    return raw


def champsim_record(ip: int, sources: list[int], destinations: list[int]) -> bytes:
    src = (sources + [0] * 4)[:4]
    dst = (destinations + [0] * 2)[:2]
    return struct.pack("<QBB2B4B2Q4Q", ip, 0, 1, 2, 3, 4, 5, 6, 7, *dst, *src)


field = st.one_of(st.just(0), st.just(0), st.integers(1, 1 << 47), st.integers((1 << VA_BITS) - 1, 1 << VA_BITS),
                  st.integers(0, (1 << 64) - 1))


@st.composite
def champsim_files(draw) -> bytes:
    clean = draw(st.booleans())  # half the files hold only addresses the run accepts, intact
    value = st.one_of(st.just(0), small_addresses) if clean else field
    records = draw(st.lists(st.tuples(value, st.lists(value, max_size=4), st.lists(value, max_size=2)),
                            min_size=0, max_size=6))
    data = b"".join(champsim_record(*r) for r in records)
    if not clean and draw(st.booleans()):
        data = draw(mutated(data))
    raw = draw(tailed(data, draw(st.sampled_from(["plain", "gz", "xz"])), clean))
    if not clean and draw(rarely(4)):
        raw = draw(mutated(raw))
    return raw


# -- npz -----------------------------------------------------------------------------------------------

NPZ_COLUMNS = {"vaddr": np.uint64, "op": np.uint8, "vm": np.uint16, "asid": np.uint16}
VALID_OPS = {0, 1, 2, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25}
ADDRESS_OPS = {0, 1, 2, 17, 18, 19, 20, 25}

dtypes = st.sampled_from(["<u8", ">u8", "<i8", "<u4", "<i4", "u1", "i1", "<u2", "<f8", "?"])


@st.composite
def npz_files(draw) -> bytes:
    clean = draw(st.booleans())  # half the files are valid traces (the run path takes most of them)
    n = draw(st.integers(0 if not clean else 1, 6))
    arrays = {}
    extra = ["vm", "asid"] if clean else ["vm", "asid", "size"]
    names = ["vaddr", "op"] + draw(st.lists(st.sampled_from(extra), max_size=2, unique=True))
    if not clean and draw(rarely(4)):
        names.remove(draw(st.sampled_from(["vaddr", "op"])))
    for name in names:
        good = clean or not draw(rarely(3))
        dtype = np.dtype(NPZ_COLUMNS.get(name, np.uint8)) if good else np.dtype(draw(dtypes))
        length = n if clean or not draw(rarely(4)) else draw(st.integers(0, 7))
        if name == "op" and good:
            ops = sorted(VALID_OPS) + ([] if clean else [3, 99, 255])
            values = draw(st.lists(st.sampled_from(ops), min_size=length, max_size=length))
        elif name == "vaddr":
            wide = st.one_of(st.integers((1 << VA_BITS) - 1, 1 << VA_BITS), st.integers(0, (1 << 64) - 1),
                             st.integers(-5, -1))
            values = draw(st.lists(st.integers(0, 1 << 20) if clean else st.one_of(st.integers(0, 1 << 20), wide),
                                   min_size=length, max_size=length))
        elif clean:
            values = draw(st.lists(st.integers(0, 0 if name == "vm" else 9), min_size=length, max_size=length))
        else:
            values = draw(st.lists(st.one_of(st.just(0), st.integers(-3, 70000)), min_size=length, max_size=length))
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            values = [min(max(v, info.min), info.max) for v in values]
        array = np.array(values, dtype=dtype)
        if not clean and draw(rarely(10)):
            array = array.reshape(-1, 1) if draw(st.booleans()) else np.array(values[0] if values else 0, dtype=dtype)
        arrays[name] = array
    if not clean and draw(rarely(3)):  # .npy headers damaged, or bytes between or after the zip's parts
        raw = draw(damaged_npz(arrays))
    else:
        buf = io.BytesIO()
        (np.savez_compressed if draw(st.booleans()) else np.savez)(buf, **arrays)
        raw = buf.getvalue()
    if not clean and draw(rarely(3)):
        raw = draw(mutated(raw))
    return raw


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_with_header(text: str, data: bytes) -> bytes:
    """A version 1.0 .npy member of header ``text`` (padded as numpy pads it) and ``data``."""
    header = text.encode("latin1")
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


#: Headers that once ended a read in a traceback, or that numpy parses but the format refuses.
CRAFTED_HEADERS = [
    "{'descr': 'DT', 'fortran_order': False, 'shape': (1, }",  # issue 37 (tokenize.TokenError)
    "{'descr': 'DT', 'fortran_order': False, 'shape': (" + "'" * 3 + "N, }",  # an unclosed string (TokenError)
    "{'descr': 'DT', 'fortran_order': False, 'shape': (N,)} \\\n",  # a backslash at the end (TokenError)
    "{'descr': 'DT', 'fortran_order': False, 'shape': (" + "-" * 3000 + "N,)}",  # RecursionError
    "{'descr': 'DT', 'fortran_order': False, 'shape': (" + "-" * 9000 + "N,)}",  # MemoryError
    "{'descr': 'DT', 'fortran_order': False, 'shape': (-N,)}",
    "{'descr': 'DT', 'fortran_order': False, 'shape': (True,)}",
    "{'descr': 'DT', 'fortran_order': True, 'shape': (N,)}",
    "{'descr': [('', 'DT')], 'fortran_order': False, 'shape': (N,)}",
    "{'descr': 'DT', 'fortran_order': False, 'shape': (N,), 'shape': (N,)}",
]
HEADER_CHARS = "(){}[],:'\" \n\t\\#-+0123456789LjeTrueFalseNone<>|u8"


@st.composite
def damaged_npy(draw, array: np.ndarray) -> bytes:
    """The .npy bytes of ``array`` with its header damaged: characters replaced by ones
    that matter to Python's parser, bits flipped, its length field changed, or a crafted
    header (:data:`CRAFTED_HEADERS`)."""
    raw = bytearray(npy_bytes(array))
    end = 10 + int.from_bytes(raw[8:10], "little")
    how = draw(st.sampled_from(["chars", "bits", "length", "crafted"]))
    if how == "crafted":
        text = draw(st.sampled_from(CRAFTED_HEADERS)).replace("DT", array.dtype.str).replace("N", str(array.size))
        return npy_with_header(text, array.tobytes())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(10, end - 1))
        if how == "chars":
            raw[at] = ord(draw(st.sampled_from(HEADER_CHARS)))
        elif how == "bits":
            raw[at] ^= 1 << draw(st.integers(0, 7))
        else:
            raw[8:10] = (end - 10 + draw(st.integers(-4, 4))).to_bytes(2, "little")
    return bytes(raw)


def gap(out: io.BytesIO, zf: zipfile.ZipFile, data: bytes) -> None:
    """Bytes where ``zf`` would write its next part, which then goes after them."""
    out.seek(0, io.SEEK_END)
    out.write(data)
    zf.start_dir = out.tell()


@st.composite
def damaged_npz(draw, arrays: dict[str, np.ndarray]) -> bytes:
    """A zip of the arrays' .npy members (stored or deflated; a header damaged now and
    then; an array twice), sometimes with a comment, bytes between its parts (its central
    directory stepping over them) or bytes after its end."""
    members = [(f"{name}.npy", draw(damaged_npy(a)) if draw(rarely(2)) else npy_bytes(a))
               for name, a in arrays.items()]
    if members and draw(rarely(10)):
        members.append(draw(st.sampled_from(members)))
    gap_at = draw(st.sampled_from([None, None, *range(1, len(members) + 1)]))  # before member i or the directory
    filler = st.sampled_from([b"\0" * 4, b"junk", b"PK\x03\x04"]) | st.binary(min_size=1, max_size=6)
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name
        method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
        with zipfile.ZipFile(out, "w", compression=method) as zf:
            for i, (name, data) in enumerate(members):
                if gap_at == i:
                    gap(out, zf, draw(filler))
                zf.writestr(name, data)
            if gap_at == len(members):
                gap(out, zf, draw(filler))
            if draw(rarely(4)):
                zf.comment = draw(st.binary(max_size=10))
    raw = out.getvalue()
    if draw(rarely(3)):
        raw += draw(st.sampled_from([b"garbage!", b"\0" * 8]) | st.binary(min_size=1, max_size=9))
    return raw


def expected_npz(path: Path, n_vms: int | None, va_bits: int | None) -> np.ndarray | None:
    """The records of an npz trace as numpy.load reads it, or None when it must be refused."""
    raw = path.read_bytes()
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
            members = {name: z.zip.read(f"{name}.npy") for name in z.files}  # whole, CRC checked
            names = [info.filename for info in z.zip.infolist()]
    except Exception:  # any damage numpy notices
        return None
    if not set(arrays) <= set(NPZ_COLUMNS) or not {"vaddr", "op"} <= set(arrays) or len(set(names)) != len(names):
        return None
    if not zip_layout_ok(raw) or any(len(members[n]) != npy_data_offset(members[n]) + a.nbytes
                                     for n, a in arrays.items()):
        return None
    lengths = set()
    for a in arrays.values():
        if a.ndim != 1 or a.dtype.kind not in "iu":
            return None
        lengths.add(len(a))
    if len(lengths) != 1 or lengths == {0}:
        return None
    out = np.zeros(lengths.pop(), TRACE_DTYPE)
    for name, a in arrays.items():
        values = [int(v) for v in a]
        if any(v < 0 or v > np.iinfo(NPZ_COLUMNS[name]).max for v in values):
            return None
        out[name] = values
    for op, va, vm in zip(out["op"].tolist(), out["vaddr"].tolist(), out["vm"].tolist()):
        if op not in VALID_OPS or (op in (16, 22) and va >= 1 << 16):
            return None
        if n_vms is not None and vm >= n_vms:
            return None
        if va_bits is not None and op in ADDRESS_OPS and va >> va_bits:
            return None
    return out


def npy_data_offset(member: bytes) -> int:
    """Where a .npy member's data starts: after its magic, version, header length and header."""
    if member[6] == 1:
        return 10 + int.from_bytes(member[8:10], "little")
    return 12 + int.from_bytes(member[8:12], "little")


def zip_layout_ok(raw: bytes) -> bool:
    """Whether a zip's parts follow each other from its first byte to its last, as
    docs/trace-format.md says: its members in order (local header, name, extra field,
    data; with flag bit 3 a data descriptor), the central directory, the zip64 end record
    and locator if any, the end record and its comment."""
    try:
        infos = zipfile.ZipFile(io.BytesIO(raw)).infolist()
    except Exception:
        return False
    pos = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset != pos or raw[pos:pos + 4] != b"PK\x03\x04":
            return False
        name, extra = struct.unpack_from("<HH", raw, pos + 26)
        zip64 = any(struct.unpack_from("<H", raw, pos + 30 + name + i)[0] == 1 for i in extra_fields(
            raw[pos + 30 + name:pos + 30 + name + extra]))
        pos += 30 + name + extra + info.compress_size
        if info.flag_bits & 8:
            pos += 4 * (raw[pos:pos + 4] == b"PK\x07\x08") + (20 if zip64 else 12)
    for _ in infos:
        if raw[pos:pos + 4] != b"PK\x01\x02":
            return False
        pos += 46 + sum(struct.unpack_from("<HHH", raw, pos + 28))
    if raw[pos:pos + 4] == b"PK\x06\x06":
        pos += 12 + struct.unpack_from("<Q", raw, pos + 4)[0]
        if raw[pos:pos + 4] != b"PK\x06\x07":
            return False
        pos += 20
    if raw[pos:pos + 4] != b"PK\x05\x06" or len(raw) < pos + 22:
        return False
    return pos + 22 + struct.unpack_from("<H", raw, pos + 20)[0] == len(raw)


def extra_fields(extra: bytes) -> list[int]:
    """The offsets of the fields (2-byte id, 2-byte size, data) of a zip extra field."""
    out, i = [], 0
    while i + 4 <= len(extra):
        out.append(i)
        i += 4 + struct.unpack_from("<H", extra, i + 2)[0]
    return out


def check_npz(raw: bytes, registry) -> None:
    path = trace_file("npz", raw)
    for read, expected in ((lambda: run_path_records("npz", path, registry), expected_npz(path, 1, VA_BITS)),
                           (lambda: info_path_records(path, registry), expected_npz(path, None, None))):
        got = outcome(read)
        if expected is None:
            assert isinstance(got, SlatframeError), got
        else:
            assert not isinstance(got, SlatframeError), got
            assert np.array_equal(got, expected)


# -- the tests --------------------------------------------------------------------------------------


@CI
@given(raw=lackey_files())
def test_fuzz_lackey(registry, raw):
    check_text_or_binary("lackey", raw, registry)


@CI
@given(raw=champsim_files())
def test_fuzz_champsim(registry, raw):
    check_text_or_binary("champsim", raw, registry)


@CI
@given(raw=npz_files())
def test_fuzz_npz(registry, raw):
    check_npz(raw, registry)


@st.composite
def valid_arrays(draw) -> dict[str, np.ndarray]:
    """The arrays of a valid npz trace of 1 to 6 records."""
    n = draw(st.integers(1, 6))
    arrays = {"vaddr": np.array(draw(st.lists(st.integers(0, 1 << 20), min_size=n, max_size=n)), np.uint64),
              "op": np.array(draw(st.lists(st.sampled_from([0, 1, 2]), min_size=n, max_size=n)), np.uint8)}
    for name in draw(st.lists(st.sampled_from(["vm", "asid"]), max_size=2, unique=True)):
        arrays[name] = np.zeros(n, np.uint16)
    return arrays


@CI
@given(raw=valid_arrays().flatmap(damaged_npz))
def test_fuzz_npz_headers_and_zip_layout(registry, raw):
    """A valid trace's npz with .npy headers damaged (characters, bits, the length field,
    issue 37's unclosed parenthesis), bytes between or after the zip's parts, a comment, an
    array twice: the records numpy.load reads where the zip is laid out as the format says,
    or one sentence."""
    check_npz(raw, registry)


@pytest.mark.slow
@SLOW
@given(raw=valid_arrays().flatmap(damaged_npz))
def test_fuzz_npz_headers_and_zip_layout_many(registry, raw):
    check_npz(raw, registry)


@pytest.mark.slow
@SLOW
@given(raw=lackey_files())
def test_fuzz_lackey_many(registry, raw):
    check_text_or_binary("lackey", raw, registry)


@pytest.mark.slow
@SLOW
@given(raw=champsim_files())
def test_fuzz_champsim_many(registry, raw):
    check_text_or_binary("champsim", raw, registry)


@pytest.mark.slow
@SLOW
@given(raw=npz_files())
def test_fuzz_npz_many(registry, raw):
    check_npz(raw, registry)


@st.composite
def long_lackey_files(draw) -> bytes:
    """Like :func:`lackey_files`, with up to 80 lines (so that tiny blocks cut them anywhere)."""
    clean = draw(st.booleans())
    text = b"\n".join(draw(st.lists(lackey_line(clean), max_size=80))) + draw(st.sampled_from([b"\n", b""]))
    if not clean and draw(st.booleans()):
        text = draw(mutated(text))
    return draw(tailed(text, draw(st.sampled_from(["plain", "plain", "gz", "xz"])), clean))


@CI
@given(raw=long_lackey_files(), block=st.sampled_from([1, 7, 64, 4096]), careful=st.sampled_from([1, 50, 1 << 20]),
       chunk=st.sampled_from([1, 2, 3, 7, 64]))
def test_fuzz_lackey_in_small_blocks(raw, block, careful, chunk):
    """The lackey reader with its file read a few bytes at a time and its regular
    expressions taking over for a few bytes at a time: the records the parser above
    computes, in chunks of exactly ``chunk`` records (the last one shorter), or an error."""
    from slatframe_plugins import trace_readers

    path = trace_file("lackey", raw)
    data = decompress(raw)
    expected = parse_lackey(data) if data is not None else None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trace_readers, "_BLOCK", block)
        mp.setattr(trace_readers, "_CAREFUL", careful)
        got = outcome(lambda: list(trace_readers.read_lackey(path, chunk)))
    if expected is None:
        assert isinstance(got, SlatframeError), got
    else:
        assert not isinstance(got, SlatframeError), got
        assert all(len(c) == chunk for c in got[:-1]) and 0 < len(got[-1]) <= chunk
        assert pairs(concat(got)) == expected


@CI
@given(raw=champsim_files(), block=st.sampled_from([1, 2, 5, 1 << 14]), chunk=st.sampled_from([1, 2, 3, 7, 64]))
def test_fuzz_champsim_in_small_blocks(raw, block, chunk):
    """The ChampSim reader reading ``block`` instructions at a time: the records the parser
    above computes, in chunks of exactly ``chunk`` records (the last one shorter), or an error."""
    from slatframe_plugins import trace_readers

    path = trace_file("champsim", raw)
    data = decompress(raw)
    expected = parse_champsim(data) if data is not None else None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trace_readers, "_INSTRUCTIONS", block)
        got = outcome(lambda: list(trace_readers.read_champsim(path, chunk)))
    if expected is None:
        assert isinstance(got, SlatframeError), got
    else:
        assert not isinstance(got, SlatframeError), got
        assert all(len(c) == chunk for c in got[:-1]) and 0 < len(got[-1]) <= chunk
        assert pairs(concat(got)) == expected


def test_the_fuzz_parsers_agree_with_the_documented_examples():
    """The parsers above, on the examples docs/trace-format.md gives."""
    assert parse_lackey(b"==1== x\nI  0401ab70,3\n M 0421e8f0,4\n") == [(2, 0x0401ab70), (0, 0x0421e8f0),
                                                                       (1, 0x0421e8f0)]
    assert parse_lackey(b" L -10,8\n") is None and parse_lackey(b"") is None and parse_lackey(b"==\n") is None
    assert parse_lackey(b"I  " + b"0" * 20 + b"ffffffffffffffff,1") == [(2, (1 << 64) - 1)]
    assert parse_lackey(b"I  1" + b"0" * 16 + b",1") is None
    assert parse_champsim(champsim_record(5, [0, 6], [7])) == [(2, 5), (0, 6), (1, 7)]
    assert parse_champsim(champsim_record(5, [], [])[:63]) is None
