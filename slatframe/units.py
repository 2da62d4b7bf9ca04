"""Parsing and printing of sizes such as ``"4K"``, ``"2M"``, ``"1G"``, ``"64GiB"``."""
from __future__ import annotations

import re

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)

SIZE_HELP = 'a size such as 4096, "4K", "2M", "1G" or "64GiB" (binary units)'


def parse_size(value: object) -> int:
    """Return the byte count of ``value`` (an int or a string with a binary unit).

    Raises ValueError with a sentence fragment saying what is allowed.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_HELP}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected {SIZE_HELP}, not a negative number")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(m.group(1)) * _UNITS[m.group(2).upper()]
    raise ValueError(f"expected {SIZE_HELP}")


def format_size(nbytes: int) -> str:
    """Shortest exact binary-unit spelling: 4096 -> "4K", 2**21 -> "2M"."""
    for unit in ("T", "G", "M", "K"):
        scale = _UNITS[unit]
        if nbytes and nbytes % scale == 0:
            return f"{nbytes // scale}{unit}"
    return str(nbytes)
