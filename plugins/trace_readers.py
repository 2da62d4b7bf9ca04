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

Both parse with compiled loops (numba, cached) that write the TRACE_DTYPE chunks in
place, a block of bytes at a time (issue 17; docs/performance.md, "Trace readers"); a
lackey line the compiled loop does not take is read by regular expressions, which accept
more and name a bad line. A record or line that cannot be read is a :class:`TraceError`
naming the file and the line or record number.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import attrs
import numpy as np
from numba import njit

from slatframe import hookimpl
from slatframe.errors import TraceError
from slatframe.lackey import ACCESS_LINE, DECLINED, LINE_LIMIT, access_records, fill_records
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
    vm: int = option(0, "VM index given to every record", min=0, max=65535)
    asid: int = option(0, "address space given to every record", min=0, max=65535)


class _Chunks:
    """TRACE_DTYPE chunks of exactly ``size`` records (the last one shorter), filled in
    place by the compiled parsers: ``buf`` holds ``size + spare`` records, so that the
    line or instruction that crosses ``size`` (up to ``spare + 1`` records) fits whole;
    what it puts beyond ``size`` starts the next chunk. Each chunk is a new array."""

    def __init__(self, size: int, spare: int, vm: int, asid: int) -> None:
        self.size, self.spare = size, spare
        self.vm, self.asid = int(np.uint16(vm)), int(np.uint16(asid))  # (OverflowError beyond uint16)
        self.buf = np.zeros(size + spare, dtype=TRACE_DTYPE)  # thread 0
        self.filled = 0  # records in ``buf``; below ``size`` between calls
        self.total = 0  # records in chunks handed out

    def take(self) -> np.ndarray:
        """The full chunk (``filled >= size``); the records beyond it start a new buffer."""
        chunk, over = self.buf[:self.size], self.buf[self.size:self.filled]
        self.buf = np.zeros(self.size + self.spare, dtype=TRACE_DTYPE)
        self.buf[:len(over)] = over
        self.filled = len(over)
        self.total += self.size
        return chunk

    def full(self) -> Iterator[np.ndarray]:
        while self.filled >= self.size:
            yield self.take()

    def add(self, ops: np.ndarray, vaddrs: np.ndarray, thread: int = 0) -> Iterator[np.ndarray]:
        """Append records given as columns (of guest thread ``thread``); yield every full chunk."""
        done = 0
        while done < len(ops):
            n = min(self.size - self.filled, len(ops) - done)
            part = self.buf[self.filled:self.filled + n]
            part["op"] = ops[done:done + n]
            part["vaddr"] = vaddrs[done:done + n]
            part["vm"] = self.vm
            part["asid"] = self.asid
            part["thread"] = thread
            self.filled += n
            done += n
            yield from self.full()

    def rest(self) -> Iterator[np.ndarray]:
        if self.filled:
            self.total += self.filled
            yield self.buf[:self.filled]
            self.filled = 0


#: Bytes the lackey reader reads at a time (1 MiB was the fastest of 256 KiB to 16 MiB).
_BLOCK = 1 << 20
#: Bytes (at least, to the end of a line) the regular expressions read after the compiled
#: parser declines a line, before the compiled parser takes over again.
_CAREFUL = 1 << 20
# A skipped line: valgrind's ``==pid==`` messages and blank lines.
_SKIP = re.compile(rb"^(?:==[^\n]*|[ \t\r\v\f]*)$", re.M)


def _bad_lackey_line(path: str | Path, number: int, raw: bytes) -> TraceError:
    shown = raw[:60].decode("ascii", "replace")
    return TraceError(f"{path}: line {number} is {shown!r}; expected a lackey line such as "
                      "'I  0401ab70,3', ' L 1fff000778,8', ' S ...' or ' M ...' "
                      "(hex address below 2**64, decimal size), a '==' line or a blank line.")


def _too_long(path: str | Path, number: int) -> TraceError:
    return TraceError(f"{path}: line {number} is longer than {LINE_LIMIT} bytes; lackey lines are "
                      "short ('I  0401ab70,3'): is this a lackey trace?")


class _LackeyLines:
    """Parses whole lines into chunks: the compiled parser (:func:`fill_records`) first,
    the regular expressions for a stretch of lines from one it declines. ``line`` is the
    number of the next line to parse."""

    def __init__(self, path: str | Path, out: _Chunks) -> None:
        self.path, self.out = path, out
        self.line = 1

    def lines(self, data: bytes, start: int, end: int) -> Iterator[np.ndarray]:
        """Yield the full chunks of lines ``data[start:end]`` (``data[end - 1]`` is a newline)."""
        buf = np.frombuffer(data, dtype=np.uint8)  # read-only (bytes): typed as always
        out = self.out
        pos = start
        while pos < end:
            pos, out.filled, lines, status = fill_records(buf, pos, end, out.buf, out.filled, out.size,
                                                          out.vm, out.asid)
            self.line += lines
            yield from out.full()
            if status == DECLINED:
                stop = data.find(b"\n", min(pos + _CAREFUL, end - 1), end) + 1
                yield from out.add(*self.careful(data[pos:stop - 1]))
                self.line += data.count(b"\n", pos, stop)
                pos = stop

    def careful(self, text: bytes) -> tuple[np.ndarray, np.ndarray]:
        """(ops, vaddrs) of whole lines ``text`` (without its last newline), the first
        numbered ``line``, by the regular expressions over the whole text; only text that
        holds a bad or too long line is looked at line by line (to name the first)."""
        found = ACCESS_LINE.findall(text)
        ends = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 10)
        longest = int(np.diff(ends, prepend=-1, append=len(text)).max()) - 1
        if len(found) + len(_SKIP.findall(text)) != len(ends) + 1 or longest > LINE_LIMIT:
            for i, row in enumerate(text.split(b"\n")):
                if len(row) > LINE_LIMIT:
                    raise _too_long(self.path, self.line + i)
                if not (ACCESS_LINE.fullmatch(row) or _SKIP.fullmatch(row)):
                    raise _bad_lackey_line(self.path, self.line + i, row)
        return access_records(found)


def read_lackey(path: str | Path, chunk_size: int, vm: int = 0, asid: int = 0) -> Iterator[np.ndarray]:
    """Yield TRACE_DTYPE chunks of a lackey trace, read a block of bytes at a time (the
    partial last line carried over to the next block)."""
    out = _Chunks(chunk_size, 1, vm, asid)
    parser = _LackeyLines(path, out)
    tail = b""  # the partial line at the end of the bytes read so far
    with open_trace(path) as fh:
        while True:
            try:
                data = fh.read(_BLOCK)
            except DECOMPRESS_ERRORS as exc:
                raise TraceError(f"{path}: the compressed file is damaged near line {parser.line}: {exc}.") from None
            if not data:
                break
            data = bytes(data)
            start = 0
            if tail:
                first = data.find(b"\n")
                if first < 0:
                    tail += data
                    if len(tail) > LINE_LIMIT:
                        raise _too_long(path, parser.line)
                    continue
                head, tail = tail + data[:first + 1], b""
                yield from parser.lines(head, 0, len(head))
                start = first + 1
            end = max(start, data.rfind(b"\n") + 1)
            if end > start:
                yield from parser.lines(data, start, end)
            tail = data[end:]
            if len(tail) > LINE_LIMIT:
                raise _too_long(path, parser.line)
    if tail:
        last = tail + b"\n"
        yield from parser.lines(last, 0, len(last))
    if not out.total and not out.filled:
        raise TraceError(f"{path}: holds no trace records (the file is empty or has only '==' and blank lines).")
    yield from out.rest()


#: Instructions the ChampSim reader reads at a time (1 MiB; the fastest of 256 KiB to 16 MiB).
_INSTRUCTIONS = 1 << 14


def read_champsim(path: str | Path, chunk_size: int, vm: int = 0, asid: int = 0) -> Iterator[np.ndarray]:
    """Yield TRACE_DTYPE chunks of a ChampSim binary trace."""
    size = CHAMPSIM_DTYPE.itemsize
    out = _Chunks(chunk_size, 6, vm, asid)  # an instruction yields at most 7 records
    first = 0
    rest = b""
    with open_trace(path) as fh:
        while True:
            try:
                raw = fh.read(_INSTRUCTIONS * size)
            except DECOMPRESS_ERRORS as exc:
                raise TraceError(f"{path}: the compressed file is damaged near record {first}: {exc}.") from None
            if not raw:
                break
            raw = rest + raw if rest else bytes(raw)
            whole = len(raw) // size
            rest = raw[whole * size:]
            if whole:
                words = np.frombuffer(raw, dtype="<u8", count=whole * 8).reshape(whole, 8)
                if not words.flags.aligned:  # (bytes objects' data are aligned)
                    words = words.copy()
                    words.flags.writeable = False  # typed as always
                done = 0
                while done < whole:
                    done, out.filled = _champsim_fill(words, done, out.buf, out.filled, out.size, out.vm, out.asid)
                    yield from out.full()
                first += whole
    if rest:
        raise TraceError(f"{path}: record {first} is truncated: {len(rest)} of its {size} bytes are present "
                         f"(a ChampSim input_instr record is {size} bytes; the file must be a multiple of {size} bytes).")
    if not first:
        raise TraceError(f"{path}: holds no trace records (the file is empty).")
    yield from out.rest()


@njit(cache=True, nogil=True, forceinline=True)
def _put(out, filled, vm, asid, op, vaddr):
    """Record ``filled`` of ``out``; returns the next one."""
    rec = out[filled]
    rec["vm"] = vm
    rec["asid"] = asid
    rec["op"] = op
    rec["vaddr"] = vaddr
    return filled + 1


@njit(cache=True, nogil=True)
def _champsim_fill(words, done, out, filled, limit, vm, asid):
    """Expand instructions ``done``.. of ``words`` (each one input_instr as 8 little-endian
    u64: ip, the register bytes, destination_memory[2], source_memory[4]) into records
    of ``out`` from ``filled`` on, until they end or ``filled`` reaches ``limit``
    (checked before each instruction; ``out`` holds ``limit + 6``): an instruction fetch
    at ip, a read per non-zero source address, a write per non-zero destination address.
    Returns (instructions done, records filled). Always called with whole arrays, so
    typed (and compiled) once."""
    n = words.shape[0]
    while done < n and filled < limit:
        filled = _put(out, filled, vm, asid, IFETCH, words[done, 0])
        for k in range(4, 8):  # source_memory: reads
            if words[done, k] != 0:
                filled = _put(out, filled, vm, asid, READ, words[done, k])
        for k in range(2, 4):  # destination_memory: writes
            if words[done, k] != 0:
                filled = _put(out, filled, vm, asid, WRITE, words[done, k])
        done += 1
    return done, filled


@hookimpl
def slatframe_workloads():
    return [
        WorkloadRecord(name="lackey", summary="valgrind lackey --trace-mem output (plain, gz, xz)",
                       factory=lambda o, ctx: read_lackey(o.path, ctx.chunk_size, o.vm, o.asid),
                       options=ReaderOptions, fresh_chunks=True),
        WorkloadRecord(name="champsim", summary="ChampSim binary traces, 64-byte input_instr (plain, gz, xz)",
                       factory=lambda o, ctx: read_champsim(o.path, ctx.chunk_size, o.vm, o.asid),
                       options=ReaderOptions, fresh_chunks=True),
    ]
