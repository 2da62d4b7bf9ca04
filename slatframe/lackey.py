"""valgrind lackey's access lines (``--tool=lackey --trace-mem=yes``), read the same way by
the ``lackey`` trace reader and by ``slatframe trace record --processes``.

Two parsers agree on the lines lackey prints: :func:`fill_records`, a compiled loop over
the bytes that writes :data:`~slatframe.trace.TRACE_DTYPE` records in place and takes
only lines exactly as lackey prints them, and the regular expressions
(:data:`ACCESS_LINE`), which accept more (blanks, upper-case hex, a CR) and let a caller
name a bad line. A caller runs the first and hands what it declines to the second."""
from __future__ import annotations

import re

import numpy as np
from numba import njit

from .trace import IFETCH, READ, TRACE_DTYPE, WRITE

#: The records of each kind of access line: ``M`` (modify) is a read, then a write.
LACKEY_OPS = {"I": (IFETCH,), "L": (READ,), "S": (WRITE,), "M": (READ, WRITE)}
#: An access line: optional blanks, kind, blanks, hex address (leading zeros, then at most
#: 16 digits, so below 2**64), a comma, a decimal size, optional blanks (or a CR).
ACCESS_LINE = re.compile(rb"^[ \t]*([ILSM])[ \t]+0*([0-9a-fA-F]{1,16}),[0-9]+[ \t\r]*$", re.M)
#: Longest line (bytes, without its newline) the compiled parser takes; the lackey reader
#: refuses longer ones.
LINE_LIMIT = 1 << 16

_KIND_FIRST_OP = np.zeros(256, dtype=np.uint8)
_KIND_RECORDS = np.zeros(256, dtype=np.int64)
for _kind, _ops in LACKEY_OPS.items():
    _KIND_FIRST_OP[ord(_kind)] = _ops[0]
    _KIND_RECORDS[ord(_kind)] = len(_ops)

# The compiled parser's tables (numba bakes them into the compiled code): the value of a
# hex digit (255: not one), and the kind of an access line by its first two bytes
# (0: none; else 1 + the op of its first record, 4 for 'M').
_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i
_KIND = np.zeros((256, 256), dtype=np.uint8)
for _pair, _code in ((b"I ", 1 + IFETCH), (b" L", 1 + READ), (b" S", 1 + WRITE), (b" M", 4)):
    _KIND[_pair[0], _pair[1]] = _code
_MODIFY = 4

#: :func:`fill_records` statuses: every line read; the chunk is full; a line is declined.
DONE, FULL, DECLINED = 0, 1, 2


@njit(cache=True, nogil=True)
def fill_records(buf, pos, end, out, filled, limit, vm, asid):
    """Parse the lines of ``buf[pos:end]`` (a read-only uint8 array; ``buf[end - 1]`` is a
    newline) into the TRACE_DTYPE array ``out`` from record ``filled`` on, until the lines
    end, ``filled`` reaches ``limit`` (checked before each line; an ``M`` line writes two
    records, so ``out`` holds ``limit + 1``) or a line is not exactly as lackey prints it
    (``I  hex,size`` or `` L hex,size`` with ``L``, ``S`` or ``M``, at most 16 digits after
    leading zeros, decimal size, no CR; or a ``==`` line; at most :data:`LINE_LIMIT`
    bytes). Returns (position of the first line not read, records filled, lines read,
    :data:`DONE`, :data:`FULL` or :data:`DECLINED`).

    Always called with whole arrays (never views of one or a few records), so that it is
    typed, and compiled, once."""
    lines = 0
    while pos < end:
        if filled >= limit:
            return pos, filled, lines, FULL
        # Every loop below stops at a newline, and buf[end - 1] is one: no index passes it.
        i = pos
        c0 = buf[i]
        if c0 == 10:
            return pos, filled, lines, DECLINED
        c1 = buf[i + 1]
        if c0 == 61 and c1 == 61:  # "==": valgrind's messages
            i += 2
            while buf[i] != 10:
                i += 1
            if i - pos > LINE_LIMIT:
                return pos, filled, lines, DECLINED
            pos = i + 1
            lines += 1
            continue
        if c1 == 10:
            return pos, filled, lines, DECLINED
        kind = _KIND[c0, c1]
        if kind == 0 or buf[i + 2] != 32:
            return pos, filled, lines, DECLINED
        i += 3
        while buf[i] == 48:  # leading zeros
            i += 1
        start = i
        value = np.uint64(0)
        while True:
            d = _HEX[buf[i]]
            if d > 15:
                break
            value = (value << np.uint64(4)) | np.uint64(d)
            i += 1
        digits = i - start
        if buf[i] != 44 or digits > 16 or (digits == 0 and buf[i - 1] != 48):
            return pos, filled, lines, DECLINED
        i += 1  # the comma
        size_start = i
        c = buf[i]
        while 48 <= c and c <= 57:
            i += 1
            c = buf[i]
        if c != 10 or i == size_start or i - pos > LINE_LIMIT:
            return pos, filled, lines, DECLINED
        rec = out[filled]
        rec["vm"] = vm
        rec["asid"] = asid
        rec["op"] = kind - 1 if kind != _MODIFY else 0
        rec["vaddr"] = value
        filled += 1
        if kind == _MODIFY:  # a read, then a write
            rec = out[filled]
            rec["vm"] = vm
            rec["asid"] = asid
            rec["op"] = 1
            rec["vaddr"] = value
            filled += 1
        pos = i + 1
        lines += 1
    return pos, filled, lines, DONE


def access_records(found: list[tuple[bytes, bytes]]) -> tuple[np.ndarray, np.ndarray]:
    """(ops, vaddrs) of the access lines matched by :data:`ACCESS_LINE` (kind, hex
    address), in order; each access is at its first byte's address."""
    if not found:
        return np.zeros(0, np.uint8), np.zeros(0, np.uint64)
    kinds, addresses = zip(*found)
    codes = np.frombuffer(b"".join(kinds), dtype=np.uint8)
    vaddrs = np.fromiter((int(a, 16) for a in addresses), dtype=np.uint64, count=len(addresses))
    return _records(codes, vaddrs)


def parse_block(text: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """(ops, vaddrs) of whole lines ``text`` (without its last newline) when every line
    is either an access line exactly as lackey prints it (``I  hex,size`` or `` L hex,size``
    with ``L``, ``S`` or ``M``; the address below 2**64) or a ``==`` line; None otherwise
    (the caller then reads the block with :data:`ACCESS_LINE`, which accepts more and
    names a bad line). Compiled (:func:`fill_records`): no Python per line."""
    if not text:
        return np.zeros(0, np.uint8), np.zeros(0, np.uint64)
    data = bytes(text) + b"\n"
    lines = text.count(b"\n") + 1
    out = np.empty(2 * lines, dtype=TRACE_DTYPE)
    _, n, _, status = fill_records(np.frombuffer(data, dtype=np.uint8), 0, len(data), out, 0, 2 * lines, 0, 0)
    if status != DONE:
        return None
    return out["op"][:n].copy(), out["vaddr"][:n].copy()


def _records(codes: np.ndarray, vaddrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Records of access lines of kinds ``codes`` (ASCII) at ``vaddrs``."""
    per_line = _KIND_RECORDS[codes]
    ops = np.repeat(_KIND_FIRST_OP[codes], per_line)
    ops[np.cumsum(per_line)[per_line == 2] - 1] = WRITE  # 'M': a read, then a write
    return ops, np.repeat(vaddrs, per_line)
