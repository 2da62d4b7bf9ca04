"""Cores and vCPUs: what a scheduler receives (:class:`SmpContext`) and yields
(:class:`Placed`), and the checks the core applies to what it yields.

A machine has ``machine.cores`` cores; VM v has ``vms[v].vcpus`` vCPUs, numbered 0 to
K-1 within the VM and, machine-wide, VM by VM (:meth:`SmpContext.first_vcpu`). A
scheduler (``machine.scheduler``, the ``slatframe_schedulers`` hook) says for each trace
record which vCPU of its VM issued it and which core runs that vCPU then. A config of
one core and one vCPU per VM has no scheduler: every record runs on core 0, vCPU 0,
exactly as before cores existed.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import attrs
import numpy as np

from .errors import PluginError
from .trace import TRACE_DTYPE


@attrs.frozen
class SmpContext:
    """What a scheduler's factory receives."""

    cores: int  #: machine.cores
    vcpus: tuple[int, ...]  #: each VM's vCPUs (vms[].vcpus)
    vm_names: tuple[str, ...] = ()
    seed: int = 1  #: experiment.seed, for a scheduler that draws

    @property
    def total_vcpus(self) -> int:
        return sum(self.vcpus)

    def first_vcpu(self) -> np.ndarray:
        """The machine-wide number of each VM's vCPU 0 (vCPU k of VM v is
        ``first_vcpu()[v] + k``)."""
        return np.asarray(first_vcpus(self.vcpus)[:-1], dtype=np.int64)


def first_vcpus(vcpus: Sequence[int]) -> list[int]:
    """The machine-wide number of each VM's vCPU 0 given each VM's vCPUs, and then the
    number of vCPUs in all: VM v's vCPUs are ``first[v]`` to ``first[v + 1] - 1``."""
    first = [0]
    for n in vcpus:
        first.append(first[-1] + n)
    return first


@attrs.frozen(eq=False)
class Placed:
    """Records (:data:`slatframe.trace.TRACE_DTYPE`) in the order they run, with each
    one's vCPU (within its VM) and core: given record by record (``vcpu`` and ``core``),
    or by the default rule (``home`` alone, the core of each machine-wide vCPU): thread t
    of VM v runs on vCPU ``t mod vms[v].vcpus`` (:func:`thread_vcpus`), and machine-wide
    vCPU g on core ``home[g]``, in whatever order the records come. A scheduler that places
    by the rule says so with ``home``: the compiled loop then places each record itself
    from its thread field, instead of reading two arrays a record that Python computed."""

    records: np.ndarray
    vcpu: np.ndarray | None = None
    core: np.ndarray | None = None
    home: np.ndarray | None = None


def engine_args(placed: Placed | None, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
    """The placement arguments of an engine's ``run_chunk`` for records ``start:stop`` of
    ``placed`` (none for a machine of one core and one vCPU per VM: ``placed`` None)."""
    if placed is None:
        return {}
    if placed.home is not None:
        return {"home": placed.home}
    return {"vcpu": placed.vcpu[start:stop], "core": placed.core[start:stop]}


def is_smp(config: Any) -> bool:
    """Whether ``config`` has more than one core or a VM with more than one vCPU."""
    return config.machine.cores > 1 or any(vm.vcpus > 1 for vm in config.vms)


def smp_context(config: Any) -> SmpContext:
    return SmpContext(cores=config.machine.cores, vcpus=tuple(vm.vcpus for vm in config.vms),
                      vm_names=tuple(vm.name for vm in config.vms), seed=config.experiment.seed)


def thread_vcpus(records: np.ndarray, ctx: SmpContext | Sequence[int]) -> np.ndarray:
    """Each record's vCPU within its VM by the default rule: thread t of VM v runs on
    vCPU ``t mod vms[v].vcpus`` (``ctx``: the context, or each VM's vCPUs)."""
    vcpus = tuple(ctx.vcpus if isinstance(ctx, SmpContext) else ctx)
    threads = records["thread"].astype(np.int64)
    if len(set(vcpus)) == 1:  # (every VM has as many vCPUs: no per-record look-up)
        k = vcpus[0]
        return threads if not len(threads) or threads.max() < k else threads % k
    return threads % np.asarray(vcpus, dtype=np.int64)[records["vm"].astype(np.int64)]


def by_rule(records: np.ndarray, vcpus: Sequence[int], home: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each record's vCPU (within its VM) and core by the default rule (:class:`Placed`),
    ``vcpus`` each VM's vCPUs and ``home`` the core of each machine-wide vCPU."""
    vcpu = thread_vcpus(records, vcpus)
    first = np.asarray(first_vcpus(vcpus)[:-1], dtype=np.int64)
    return vcpu, home[vcpu if len(first) == 1 else first[records["vm"].astype(np.int64)] + vcpu]


def round_robin(ctx: SmpContext) -> np.ndarray:
    """The core of each machine-wide vCPU when a placement is not given: vCPU n on core
    ``n mod cores``."""
    return np.arange(ctx.total_vcpus, dtype=np.int64) % ctx.cores


def windows(chunks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The records of ``chunks`` again, ``size`` at a time (the last window shorter): what
    a reordering scheduler sorts, whatever ``experiment.chunk_size`` is."""
    pending: list[np.ndarray] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        while held >= size:
            records = np.concatenate(pending)
            pending, held = [records[size:]], held - size
            yield records[:size]
    if held:
        yield np.concatenate(pending)


def _checked_home(item: Placed, ctx: SmpContext, name: str) -> np.ndarray:
    """A placement's ``home``, checked: one core per machine-wide vCPU, each a core of the
    machine, and no per-record arrays beside it."""
    home = np.asarray(item.home)
    if item.vcpu is not None or item.core is not None:
        raise PluginError(f"scheduler {name!r} yielded a Placed with both home and per-record vcpu and core; it "
                          "gives one or the other.")
    if home.shape != (ctx.total_vcpus,) or home.dtype.kind not in "iu":
        raise PluginError(f"scheduler {name!r} yielded a home of shape {home.shape} ({home.dtype}); it is one "
                          f"integer per vCPU of the machine ({ctx.total_vcpus}).")
    home = np.ascontiguousarray(home, dtype=np.int64)
    if len(home) and not home.view(np.uint64).max() < ctx.cores:  # (as unsigned, a negative is above every limit)
        g = int(np.flatnonzero((home < 0) | (home >= ctx.cores))[0])
        raise PluginError(f"scheduler {name!r} placed vCPU {g} of the machine on core {int(home[g])}; cores go "
                          f"from 0 to {ctx.cores - 1}.")
    return home


def placed_chunks(scheduler: Any, chunks: Iterable[np.ndarray], ctx: SmpContext, name: str) -> Iterator[Placed]:
    """What ``scheduler`` (the registered scheduler ``name``) yields for ``chunks``,
    checked: each placement's arrays are as long as its records, vCPUs and cores are in
    range, and it places as many records in all as the workload gave."""
    given = [0]

    def counted() -> Iterator[np.ndarray]:
        for chunk in chunks:
            given[0] += len(chunk)
            yield chunk

    per_vm = np.asarray(ctx.vcpus, dtype=np.int64)
    fewest = int(per_vm.min()) if len(per_vm) else 0
    placed = 0
    source = counted()
    for item in scheduler.schedule(source):
        if not isinstance(item, Placed):
            raise PluginError(f"scheduler {name!r} yielded a {type(item).__name__}, not a slatframe.smp.Placed.")
        records = item.records
        if not isinstance(records, np.ndarray) or records.dtype != TRACE_DTYPE or records.ndim != 1:
            raise PluginError(f"scheduler {name!r} yielded records that are not a one-dimensional array of "
                              f"slatframe.trace.TRACE_DTYPE (got {type(records).__name__}"
                              f"{f' of {records.dtype}' if isinstance(records, np.ndarray) else ''}); "
                              "a scheduler yields the workload's records.")
        n = len(records)
        if item.home is not None:
            yield Placed(records, home=_checked_home(item, ctx, name))
            placed += n
            continue
        vcpu, core = np.asarray(item.vcpu), np.asarray(item.core)
        if vcpu.shape != (n,) or core.shape != (n,) or vcpu.dtype.kind not in "iu" or core.dtype.kind not in "iu":
            raise PluginError(f"scheduler {name!r} yielded {n} records with vcpu and core arrays of shapes "
                              f"{vcpu.shape} and {core.shape} ({vcpu.dtype}, {core.dtype}); each must be one "
                              "integer per record.")
        vcpu, core = vcpu.astype(np.int64, copy=False), core.astype(np.int64, copy=False)
        # (as unsigned, a negative is above every limit: one reduction an array, one for both
        # when they are one array, as a one-to-one placement gives)
        if n and not (vcpu.view(np.uint64).max() < min(fewest, ctx.cores) if core is vcpu else
                      vcpu.view(np.uint64).max() < fewest and core.view(np.uint64).max() < ctx.cores):
            vms = records["vm"].astype(np.int64)  # (the whole check only when the quick one fails)
            bad = np.flatnonzero((vcpu < 0) | (vcpu >= per_vm[vms]) | (core < 0) | (core >= ctx.cores))
            if len(bad):
                i = int(bad[0])
                raise PluginError(f"scheduler {name!r} placed record {placed + i} (vm {int(vms[i])}) on vCPU "
                                  f"{int(vcpu[i])} and core {int(core[i])}; vCPUs of that VM go from 0 to "
                                  f"{int(per_vm[vms[i]]) - 1} and cores from 0 to {ctx.cores - 1}.")
        placed += n
        yield Placed(records, vcpu, core)
    for _ in source:  # records the scheduler left unread count as given
        pass
    if placed != given[0]:
        raise PluginError(f"scheduler {name!r} placed {placed:,} records of the workload's {given[0]:,}; a "
                          "scheduler runs every record once.")
