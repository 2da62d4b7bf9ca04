"""valgrind lackey's access lines (``--tool=lackey --trace-mem=yes``), read the same way by
the ``lackey`` trace reader and by ``slatframe trace record --processes``."""
from __future__ import annotations

import re

import numpy as np

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
    per_line = _KIND_RECORDS[codes]
    ops = np.repeat(_KIND_FIRST_OP[codes], per_line)
    ops[np.cumsum(per_line)[per_line == 2] - 1] = WRITE  # 'M': a read, then a write
    return ops, np.repeat(vaddrs, per_line)
