"""Trace readers for the tools researchers already use: valgrind ``lackey`` output and
ChampSim binary traces, plain or compressed (gzip, xz; detected by their magic bytes).
Both stream in bounded memory, one chunk at a time.

- ``lackey``: the text ``valgrind --tool=lackey --trace-mem=yes`` writes: ``I  addr,size``
  instruction fetches, `` L addr,size`` loads, `` S addr,size`` stores, `` M addr,size``
  modifies (a load then a store); ``==pid==`` lines are skipped. Addresses are hex.
- ``champsim``: 64-byte ``input_instr`` records (ChampSim's ``inc/trace_instruction.h``):
  ip u64, is_branch u8, branch_taken u8, destination_registers[2] u8,
  source_registers[4] u8, destination_memory[2] u64, source_memory[4] u64, little-endian.
  Each record is an instruction fetch at ip, then a read per non-zero source address,
  then a write per non-zero destination address.

A record or line that cannot be read is a :class:`TraceError` naming the file and the
line or record number.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import attrs
import numpy as np

from slatframe import hookimpl
from slatframe.errors import TraceError
from slatframe.lackey import ACCESS_LINE, access_records, parse_block
from slatframe.options import option
from slatframe.records import WorkloadRecord
from slatframe.trace import IFETCH, READ, TRACE_DTYPE, WRITE
from slatframe.tracefile import DECOMPRESS_ERRORS, open_trace

CHAMPSIM_DTYPE = np.dtype([
    ("ip", "<u8"), ("is_branch", "u1"), ("branch_taken", "u1"),
    ("destination_registers", "u1", (2,)), ("source_registers", "u1", (4,)),
    ("destination_memory", "<u8", (2,)), ("source_memory", "<u8", (4,)),
])
assert CHAMPSIM_DTYPE.itemsize == 64


@attrs.frozen
class ReaderOptions:
    path: str = option(help="the trace file (plain, .gz or .xz), relative to the config file", path=True)
    vm: int = option(0, "VM index given to every record", min=0)
    asid: int = option(0, "address space given to every record", min=0, max=65535)


class _Chunker:
    """Collects record arrays into TRACE_DTYPE chunks of exactly ``chunk_size`` (the last
    one shorter)."""

    def __init__(self, chunk_size: int, vm: int, asid: int) -> None:
        self.size = chunk_size
        self.vm, self.asid = vm, asid
        self.pending = np.zeros(0, dtype=TRACE_DTYPE)
        self.total = 0

    def add(self, ops: np.ndarray, vaddrs: np.ndarray) -> Iterator[np.ndarray]:
        """Append records; yield every full chunk."""
        new = np.empty(len(ops), dtype=TRACE_DTYPE)  # every field is written below
        new["op"] = ops
        new["vaddr"] = vaddrs
        new["vm"] = self.vm
        new["asid"] = self.asid
        self.total += len(new)
        joined = np.concatenate([self.pending, new]) if len(self.pending) else new
        whole = len(joined) - len(joined) % self.size
        for start in range(0, whole, self.size):
            yield joined[start:start + self.size]
        self.pending = joined[whole:]

    def rest(self) -> Iterator[np.ndarray]:
        if len(self.pending):
            yield self.pending
            self.pending = self.pending[:0]


#: Longest line the lackey reader takes (bytes, without the newline).
LINE_LIMIT = 1 << 16
_BLOCK = 1 << 20
# A skipped line: valgrind's ``==pid==`` messages and blank lines.
_SKIP = re.compile(rb"^(?:==[^\n]*|[ \t\r\v\f]*)$", re.M)


def _bad_lackey_line(path: str | Path, number: int, raw: bytes) -> TraceError:
    shown = raw[:60].decode("ascii", "replace")
    return TraceError(f"{path}: line {number} is {shown!r}; expected a lackey line such as "
                      "'I  0401ab70,3', ' L 1fff000778,8', ' S ...' or ' M ...' "
                      "(hex address below 2**64, decimal size), a '==' line or a blank line.")


def _lackey_block(path: str | Path, text: bytes, first_line: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse complete lines (``text`` without its last newline); return (ops, vaddrs).

    A block of lines exactly as lackey prints them is parsed vectorized
    (:func:`slatframe.lackey.parse_block`); any other goes through the regular
    expressions, over the whole block, and only a block that holds a bad line is looked
    at line by line (to name it)."""
    fast = parse_block(text)
    if fast is not None:
        return fast
    found = ACCESS_LINE.findall(text)
    lines = text.count(b"\n") + 1
    if len(found) + len(_SKIP.findall(text)) != lines:
        for i, line in enumerate(text.split(b"\n")):
            if not (ACCESS_LINE.fullmatch(line) or _SKIP.fullmatch(line)):
                raise _bad_lackey_line(path, first_line + i, line)
    return access_records(found)


def read_lackey(path: str | Path, chunk_size: int, vm: int = 0, asid: int = 0) -> Iterator[np.ndarray]:
    """Yield TRACE_DTYPE chunks of a lackey trace, read a block of lines at a time."""
    out = _Chunker(chunk_size, vm, asid)
    line = 1  # number of the first line of ``tail``
    tail = b""
    with open_trace(path) as fh:
        while True:
            try:
                data = fh.read(_BLOCK)
            except DECOMPRESS_ERRORS as exc:
                raise TraceError(f"{path}: the compressed file is damaged near line {line}: {exc}.") from None
            if not data:
                break
            data = tail + data
            end = data.rfind(b"\n")
            if end < 0:
                tail = data
            else:
                text, tail = data[:end], data[end + 1:]
                starts = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 10)
                edges = np.concatenate(([-1], starts, [len(text)]))
                longest = int(np.diff(edges).max()) - 1
                if longest > LINE_LIMIT:
                    at = int(np.argmax(np.diff(edges)))
                    raise _too_long(path, line + at)
                yield from out.add(*_lackey_block(path, text, line))
                line += len(starts) + 1
            if len(tail) > LINE_LIMIT:
                raise _too_long(path, line)
    if tail:
        yield from out.add(*_lackey_block(path, tail, line))
    if not out.total:
        raise TraceError(f"{path}: holds no trace records (the file is empty or has only '==' and blank lines).")
    yield from out.rest()


def _too_long(path: str | Path, number: int) -> TraceError:
    return TraceError(f"{path}: line {number} is longer than {LINE_LIMIT} bytes; lackey lines are "
                      "short ('I  0401ab70,3'): is this a lackey trace?")


def read_champsim(path: str | Path, chunk_size: int, vm: int = 0, asid: int = 0) -> Iterator[np.ndarray]:
    """Yield TRACE_DTYPE chunks of a ChampSim binary trace."""
    size = CHAMPSIM_DTYPE.itemsize
    block = max(1, chunk_size // 7)  # an instruction yields at most 7 records
    first = 0
    rest = b""
    with open_trace(path) as fh:
        while True:
            try:
                raw = fh.read(block * size)
            except DECOMPRESS_ERRORS as exc:
                raise TraceError(f"{path}: the compressed file is damaged near record {first}: {exc}.") from None
            if not raw:
                break
            raw = rest + raw
            whole = len(raw) // size
            rest = raw[whole * size:]
            if whole:
                recs = np.frombuffer(raw, dtype=CHAMPSIM_DTYPE, count=whole)
                yield from _champsim_chunks(recs, chunk_size, vm, asid)
                first += whole
    if rest:
        raise TraceError(f"{path}: record {first} is truncated: {len(rest)} of its {size} bytes are present "
                         f"(a ChampSim input_instr record is {size} bytes; the file must be a multiple of {size} bytes).")
    if not first:
        raise TraceError(f"{path}: holds no trace records (the file is empty).")


def _champsim_chunks(recs: np.ndarray, chunk_size: int, vm: int, asid: int) -> Iterator[np.ndarray]:
    """Expand instructions into records: ifetch, reads (sources), writes (destinations)."""
    n = len(recs)
    columns = np.concatenate([recs["ip"][:, None], recs["source_memory"], recs["destination_memory"]], axis=1)
    ops = np.array([IFETCH] + [READ] * 4 + [WRITE] * 2, dtype=np.uint8)
    keep = columns != 0
    keep[:, 0] = True  # every instruction is fetched, even at address 0
    out = np.zeros(int(keep.sum()), dtype=TRACE_DTYPE)
    out["vaddr"] = columns[keep]
    out["op"] = np.broadcast_to(ops, (n, 7))[keep]
    out["vm"] = vm
    out["asid"] = asid
    for start in range(0, len(out), chunk_size):
        yield out[start:start + chunk_size]



@hookimpl
def slatframe_workloads():
    return [
        WorkloadRecord(name="lackey", summary="valgrind lackey --trace-mem output (plain, gz, xz)",
                       factory=lambda o, ctx: read_lackey(o.path, ctx.chunk_size, o.vm, o.asid),
                       options=ReaderOptions),
        WorkloadRecord(name="champsim", summary="ChampSim binary traces, 64-byte input_instr (plain, gz, xz)",
                       factory=lambda o, ctx: read_champsim(o.path, ctx.chunk_size, o.vm, o.asid),
                       options=ReaderOptions),
    ]
