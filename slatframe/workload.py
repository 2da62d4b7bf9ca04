"""What a workload factory receives, and the checks every chunk passes before the engine."""
from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from .errors import TraceError
from .trace import TRACE_DTYPE, VALID_OPS


@attrs.frozen
class WorkloadContext:
    """Run facts a workload needs: chunk size, seed, and the VMs records may name."""

    chunk_size: int
    seed: int
    vm_names: tuple[str, ...]
    registry: Any = None  #: for workloads made of other workloads (``mix``)


_VALID_OP_TABLE = np.zeros(256, dtype=bool)
_VALID_OP_TABLE[list(VALID_OPS)] = True


def check_chunk(chunk: np.ndarray, where: str, n_vms: int, first_record: int) -> None:
    """Raise :class:`TraceError` naming the first bad record of ``chunk``."""
    if chunk.dtype != TRACE_DTYPE:
        raise TraceError(f"{where}: yielded records of dtype {chunk.dtype}, expected {TRACE_DTYPE}.")
    bad_vm = np.flatnonzero(chunk["vm"] >= n_vms)
    if bad_vm.size:
        i = int(bad_vm[0])
        raise TraceError(f"{where}: record {first_record + i} names vm {int(chunk['vm'][i])}, "
                         f"but the config has {n_vms} VM(s) (indices 0..{n_vms - 1}).")
    bad_op = np.flatnonzero(~_VALID_OP_TABLE[chunk["op"]])
    if bad_op.size:
        i = int(bad_op[0])
        raise TraceError(f"{where}: record {first_record + i} has op {int(chunk['op'][i])}; "
                         f"allowed ops are {sorted(VALID_OPS)}.")
