"""valgrind lackey's access lines (``--tool=lackey --trace-mem=yes``), read the same way by
the ``lackey`` trace reader and by ``slatframe trace record --processes``."""
from __future__ import annotations

import re

import numpy as np
from numba import njit

from .trace import IFETCH, READ, WRITE

#: The records of each kind of access line: ``M`` (modify) is a read, then a write.
LACKEY_OPS = {"I": (IFETCH,), "L": (READ,), "S": (WRITE,), "M": (READ, WRITE)}
#: An access line: optional blanks, kind, blanks, hex address (leading zeros, then at most
#: 16 digits, so below 2**64), a comma, a decimal size, optional blanks (or a CR).
ACCESS_LINE = re.compile(rb"^[ \t]*([ILSM])[ \t]+0*([0-9a-fA-F]{1,16}),[0-9]+[ \t\r]*$", re.M)

_KIND_FIRST_OP = np.zeros(256, dtype=np.uint8)
_KIND_RECORDS = np.zeros(256, dtype=np.int64)
for _kind, _ops in LACKEY_OPS.items():
    _KIND_FIRST_OP[ord(_kind)] = _ops[0]
    _KIND_RECORDS[ord(_kind)] = len(_ops)


def access_records(found: list[tuple[bytes, bytes]]) -> tuple[np.ndarray, np.ndarray]:
    """(ops, vaddrs) of the access lines matched by :data:`ACCESS_LINE` (kind, hex
    address), in order; each access is at its first byte's address."""
    if not found:
        return np.zeros(0, np.uint8), np.zeros(0, np.uint64)
    kinds, addresses = zip(*found)
    codes = np.frombuffer(b"".join(kinds), dtype=np.uint8)
    vaddrs = np.fromiter((int(a, 16) for a in addresses), dtype=np.uint64, count=len(addresses))
    return _records(codes, vaddrs)


@njit(cache=True, nogil=True)
def _parse(buf: np.ndarray, ops: np.ndarray, vaddrs: np.ndarray) -> int:
    """Parse lackey lines in ``buf`` into ``ops`` and ``vaddrs``; the number of records,
    or -1 when a line is not exactly as lackey prints it."""
    n = buf.size
    i = 0
    out = 0
    while i < n:
        if i + 1 < n and buf[i] == 61 and buf[i + 1] == 61:  # "==": valgrind's messages
            while i < n and buf[i] != 10:
                i += 1
            i += 1
            continue
        if i + 3 >= n or buf[i + 2] != 32:
            return -1
        c0, c1 = buf[i], buf[i + 1]
        if c0 == 73 and c1 == 32:
            kind = 73
        elif c0 == 32 and (c1 == 76 or c1 == 83 or c1 == 77):
            kind = c1
        else:
            return -1
        i += 3
        while i < n and buf[i] == 48:  # leading zeros
            i += 1
        value = np.uint64(0)
        digits = 0
        while i < n and buf[i] != 44:
            c = buf[i]
            if 48 <= c <= 57:
                d = c - 48
            elif 97 <= c <= 102:
                d = c - 87
            elif 65 <= c <= 70:
                d = c - 55
            else:
                return -1
            value = (value << np.uint64(4)) | np.uint64(d)
            digits += 1
            i += 1
        if i >= n or digits > 16 or (digits == 0 and buf[i - 1] != 48):
            return -1
        i += 1  # the comma
        size_digits = 0
        while i < n and buf[i] != 10:
            if not 48 <= buf[i] <= 57:
                return -1
            size_digits += 1
            i += 1
        if size_digits == 0:
            return -1
        i += 1  # the newline
        if kind == 73:
            ops[out] = 2
        elif kind == 76:
            ops[out] = 0
        elif kind == 83:
            ops[out] = 1
        else:  # M: a read, then a write
            ops[out] = 0
            vaddrs[out] = value
            out += 1
            ops[out] = 1
        vaddrs[out] = value
        out += 1
    return out


def parse_block(text: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """(ops, vaddrs) of whole lines ``text`` (without its last newline) when every line
    is either an access line exactly as lackey prints it (``I  hex,size`` or `` L hex,size``
    with ``L``, ``S`` or ``M``; the address below 2**64) or a ``==`` line; None otherwise
    (the caller then reads the block with :data:`ACCESS_LINE`, which accepts more and
    names a bad line). Compiled (numba, cached): no Python per line."""
    buf = np.frombuffer(text, dtype=np.uint8)
    lines = text.count(b"\n") + 1
    ops = np.empty(2 * lines, dtype=np.uint8)
    vaddrs = np.empty(2 * lines, dtype=np.uint64)
    n = _parse(buf, ops, vaddrs) if buf.size else 0
    if n < 0:
        return None
    return ops[:n], vaddrs[:n]


def _records(codes: np.ndarray, vaddrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Records of access lines of kinds ``codes`` (ASCII) at ``vaddrs``."""
    per_line = _KIND_RECORDS[codes]
    ops = np.repeat(_KIND_FIRST_OP[codes], per_line)
    ops[np.cumsum(per_line)[per_line == 2] - 1] = WRITE  # 'M': a read, then a write
    return ops, np.repeat(vaddrs, per_line)
