"""What a workload factory receives, and the checks every chunk passes before the engine."""
from __future__ import annotations

from collections import deque
from contextlib import closing
from typing import Any, Iterator

import attrs
import numpy as np

from .errors import PluginError, TraceError
from .prefetch import HELD
from .trace import (ACCESS_OPS, CONTEXT_SWITCH, FORK, INVLPG, MAP, MAP_SHARED, OP_NAMES, PROTECT, TRACE_DTYPE, UNMAP,
                    VALID_OPS)


@attrs.frozen
class WorkloadContext:
    """Run facts a workload needs: chunk size, seed, and the VMs records may name."""

    chunk_size: int
    seed: int
    vm_names: tuple[str, ...]
    registry: Any = None  #: for workloads made of other workloads (``mix``)


_VALID_OP_TABLE = np.zeros(256, dtype=bool)
_VALID_OP_TABLE[list(VALID_OPS)] = True
#: Ops whose ``vaddr`` is a guest virtual address (accesses, and the page of map,
#: unmap, protect, invlpg, map_shared). A context switch's and a fork's ``vaddr`` is an
#: asid (the new one, the child's); a flush's, an exec's and an exit's is unused.
ADDRESS_OPS = (*ACCESS_OPS, MAP, UNMAP, PROTECT, INVLPG, MAP_SHARED)
_ADDRESS_OP_TABLE = np.zeros(256, dtype=bool)
_ADDRESS_OP_TABLE[list(ADDRESS_OPS)] = True
ASID_LIMIT = 1 << 16  #: asids are uint16 (the record's ``asid`` field)


def check_chunk(chunk: Any, where: str, n_vms: int | None, first_record: int,
                va_bits: int | None = None) -> None:
    """Raise :class:`TraceError` naming the first bad record of ``chunk``.

    A chunk is a 1-D array of :data:`TRACE_DTYPE`; every record names a VM below
    ``n_vms`` (unchecked when None) and a known op; a context switch names an asid below
    2**16; with ``va_bits``, the address of every access, map, unmap, protect and invlpg
    is below ``2**va_bits`` (wider addresses are refused, not truncated or sign-extended).
    """
    if not isinstance(chunk, np.ndarray):
        raise PluginError(f"{where}: yielded a {type(chunk).__name__} after record {first_record}; "
                          f"a workload yields numpy arrays of dtype {TRACE_DTYPE}.")
    if chunk.dtype != TRACE_DTYPE:
        hint = ("; records gained a 'thread' field: build them with np.zeros(n, dtype=slatframe.trace.TRACE_DTYPE) "
                "or slatframe.trace.make_trace" if chunk.dtype.names == ("vm", "asid", "op", "vaddr") else "")
        raise TraceError(f"{where}: yielded records of dtype {chunk.dtype}, expected {TRACE_DTYPE}{hint}.")
    if chunk.ndim != 1:
        raise TraceError(f"{where}: yielded an array of shape {chunk.shape} after record {first_record}; "
                         "chunks are 1-D.")
    if not chunk.size:
        return
    # Each check first asks whether any record fails it (one reduction) and looks for the
    # first failing record only then: a good chunk costs about 2 ns a record.
    if n_vms is not None and int(chunk["vm"].max()) >= n_vms:
        bad_vm = np.flatnonzero(chunk["vm"] >= n_vms)
        if bad_vm.size:
            i = int(bad_vm[0])
            raise TraceError(f"{where}: record {first_record + i} names vm {int(chunk['vm'][i])}, "
                             f"but the config has {n_vms} VM(s) (indices 0..{n_vms - 1}).")
    ops = chunk["op"]
    accesses_only = int(ops.max()) <= max(ACCESS_OPS)
    vaddr = chunk["vaddr"]
    if accesses_only:  # valid ops, no switch or fork, and every record's address is a virtual address
        if va_bits is None or va_bits >= 64 or int(vaddr.max()) >> va_bits == 0:
            return
    bad_op = np.flatnonzero(~_VALID_OP_TABLE[ops])
    if bad_op.size:
        i = int(bad_op[0])
        raise TraceError(f"{where}: record {first_record + i} has op {int(ops[i])}; "
                         f"allowed ops are {sorted(VALID_OPS)}.")
    bad_asid = np.flatnonzero(((ops == CONTEXT_SWITCH) | (ops == FORK)) & (vaddr >= np.uint64(ASID_LIMIT)))
    if bad_asid.size:
        i = int(bad_asid[0])
        what = "a context switch to" if ops[i] == CONTEXT_SWITCH else "a fork with child"
        raise TraceError(f"{where}: record {first_record + i} is {what} asid {int(vaddr[i])}; "
                         f"asids are 0..{ASID_LIMIT - 1}.")
    if va_bits is not None and va_bits < 64:
        bad_va = np.flatnonzero(_ADDRESS_OP_TABLE[ops] & ((vaddr >> np.uint64(va_bits)) != 0))
        if bad_va.size:
            i = int(bad_va[0])
            raise TraceError(f"{where}: record {first_record + i} ({OP_NAMES[int(ops[i])]}) has address "
                             f"{int(vaddr[i]):#x}, wider than the {va_bits}-bit virtual addresses of the guest "
                             f"page-table format; allowed are 0..{(1 << va_bits) - 1:#x} "
                             "(higher addresses are refused, not sign-extended).")


def checked_chunks(chunks: Any, where: str, n_vms: int | None, va_bits: int | None = None,
                   fresh: bool = False) -> Iterator[np.ndarray]:
    """Yield the chunks a workload factory returned, each passed through :func:`check_chunk`;
    with ``fresh`` (the workload's ``fresh_chunks``), also check that no chunk shares
    memory with the :data:`slatframe.prefetch.HELD` chunks before it.

    A factory result that is not an iterable of arrays (None, a single array, a number)
    is a :class:`PluginError` naming ``where``."""
    if chunks is None or isinstance(chunks, (np.ndarray, str, bytes)) or not hasattr(chunks, "__iter__"):
        what = ("None" if chunks is None else "a single array" if isinstance(chunks, np.ndarray)
                else f"an object of type {type(chunks).__name__}")
        raise PluginError(f"{where}: the workload factory returned {what}; it must return an iterable "
                          f"(a list or a generator) of numpy arrays of dtype {TRACE_DTYPE}.")
    done = 0
    held: deque[np.ndarray] = deque(maxlen=HELD)
    for chunk in chunks:
        check_chunk(chunk, where, n_vms, done, va_bits)
        if fresh:
            if any(np.shares_memory(chunk, before) for before in held):
                raise PluginError(f"{where}: yielded, after record {done}, an array that shares memory with one "
                                  "it yielded before, but its record says fresh_chunks=True (every array new, so "
                                  "that the engine may read ahead); yield new arrays or set fresh_chunks=False.")
            held.append(chunk)
        done += len(chunk)
        yield chunk


def workload_where(name: str, options: Any) -> str:
    """How errors name a workload: ``workload 'lackey' (file t.lackey)``."""
    path = getattr(options, "path", None)
    return f"workload {name!r}" + (f" (file {path})" if isinstance(path, str) else "")


#: Records ``slatframe validate`` reads of a workload: its first chunk at most this long.
FIRST_RECORDS = 4096


def read_first_records(config: Any, registry: Any, count: int = FIRST_RECORDS) -> int:
    """Read the first records (at least ``count`` or all there are, in chunks of at most
    ``count``) of the configured workload as a run reads them: through the workload's
    factory and the run's chunk checks (:func:`slatframe.engine.workload_chunks`), so that
    a damaged file or a bad first record is the error the run would raise. Returns how
    many records were read; nothing is run or written."""
    from .engine import workload_chunks

    experiment = attrs.evolve(config.experiment, chunk_size=min(count, config.experiment.chunk_size))
    done = 0
    with closing(workload_chunks(attrs.evolve(config, experiment=experiment), registry)) as chunks:
        for chunk in chunks:
            done += len(chunk)
            if done >= count:
                break
    return done
