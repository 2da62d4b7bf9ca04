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

import lzma
import zlib
from pathlib import Path
from typing import Iterator

import attrs
import numpy as np

from slatframe import hookimpl
from slatframe.errors import TraceError
from slatframe.options import option
from slatframe.records import WorkloadRecord
from slatframe.trace import IFETCH, READ, TRACE_DTYPE, WRITE
from slatframe.tracefile import open_trace

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
    """Collects (op, vaddr) pairs into TRACE_DTYPE chunks."""

    def __init__(self, chunk_size: int, vm: int, asid: int) -> None:
        self.size = chunk_size
        self.vm, self.asid = vm, asid
        self.ops: list[int] = []
        self.vaddrs: list[int] = []

    def add(self, op: int, vaddr: int) -> bool:
        self.ops.append(op)
        self.vaddrs.append(vaddr)
        return len(self.ops) >= self.size

    def take(self) -> np.ndarray:
        n = min(len(self.ops), self.size)
        chunk = np.zeros(n, dtype=TRACE_DTYPE)
        chunk["op"] = self.ops[:n]
        chunk["vaddr"] = self.vaddrs[:n]
        chunk["vm"] = self.vm
        chunk["asid"] = self.asid
        del self.ops[:n], self.vaddrs[:n]
        return chunk


LACKEY_OPS = {"I": (IFETCH,), "L": (READ,), "S": (WRITE,), "M": (READ, WRITE)}


def read_lackey(path: str | Path, chunk_size: int, vm: int = 0, asid: int = 0) -> Iterator[np.ndarray]:
    """Yield TRACE_DTYPE chunks of a lackey trace."""
    out = _Chunker(chunk_size, vm, asid)
    with open_trace(path) as fh:
        lines = iter(fh)
        number = 0
        while True:
            number += 1
            try:
                raw = next(lines)
            except StopIteration:
                break
            except (EOFError, OSError, lzma.LZMAError, zlib.error) as exc:
                raise TraceError(f"{path}: the compressed file is damaged near line {number}: {exc}.") from None
            if raw.startswith(b"==") or not raw.strip():
                continue
            try:
                line = raw.decode("ascii")
                kind, rest = line.split(None, 1)
                address, size = rest.strip().split(",")
                ops = LACKEY_OPS[kind]
                vaddr = int(address, 16)
                int(size)
                if vaddr >= 1 << 64:
                    raise ValueError
            except (UnicodeDecodeError, ValueError, KeyError):
                shown = raw[:60].decode("ascii", "replace").rstrip("\n")
                raise TraceError(f"{path}: line {number} is {shown!r}; expected a lackey line such as "
                                 f"'I  0401ab70,3', ' L 1fff000778,8', ' S ...' or ' M ...' "
                                 "(hex address, decimal size).") from None
            for op in ops:
                if out.add(op, vaddr):
                    yield out.take()
    while out.ops:
        yield out.take()


def read_champsim(path: str | Path, chunk_size: int, vm: int = 0, asid: int = 0) -> Iterator[np.ndarray]:
    """Yield TRACE_DTYPE chunks of a ChampSim binary trace."""
    block = max(1, chunk_size // 7)  # an instruction yields at most 7 records
    first = 0
    with open_trace(path) as fh:
        while True:
            try:
                raw = fh.read(block * CHAMPSIM_DTYPE.itemsize)
            except (EOFError, OSError, lzma.LZMAError, zlib.error) as exc:
                raise TraceError(f"{path}: the compressed file is damaged near record {first}: {exc}.") from None
            if not raw:
                return
            whole = len(raw) // CHAMPSIM_DTYPE.itemsize
            if len(raw) % CHAMPSIM_DTYPE.itemsize:
                raise TraceError(f"{path}: record {first + whole} is truncated: {len(raw) % 64} of its 64 "
                                 "bytes are present (a ChampSim input_instr record is 64 bytes).")
            recs = np.frombuffer(raw, dtype=CHAMPSIM_DTYPE)
            yield from _champsim_chunks(recs, chunk_size, vm, asid)
            first += whole


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
