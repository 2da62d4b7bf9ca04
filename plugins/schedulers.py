"""The builtin schedulers: ``pinned`` and ``time-sliced`` (``machine.scheduler``).

Both run guest thread t of a VM on its vCPU ``t mod vms[].vcpus`` and give every vCPU a
home core: ``placement`` lists the core of each vCPU of the machine, VM by VM (vms[0]'s
vCPUs 0, 1, ..., then vms[1]'s), and without it vCPU n of the machine is on core
``n mod machine.cores``.

- ``pinned`` keeps the trace's order: each record runs on its vCPU's home core when the
  trace says. vCPUs that share a core take turns as the trace interleaves them.
- ``time-sliced`` reorders: each core runs its vCPUs in turn, ``quantum`` records of a
  vCPU at a time (a vCPU with no record left in the window is skipped), and the cores
  take turns a record at a time. A vCPU's own records keep their order. The trace is
  reordered ``window`` records at a time (a vCPU's turn and its used quantum carry from
  one window to the next), so the order does not depend on ``experiment.chunk_size``.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import attrs
import numpy as np

from slatframe import hookimpl
from slatframe.options import ConfigFacts, option
from slatframe.records import SchedulerRecord
from slatframe.smp import Placed, SmpContext, round_robin, thread_vcpus, windows

PLACEMENT_HELP = ("home core of each vCPU of the machine, VM by VM (vms[0]'s vCPUs 0, 1, ..., then vms[1]'s); "
                  "empty: vCPU n of the machine on core n mod machine.cores")


def _placement_problems(placement: tuple[int, ...], facts: ConfigFacts) -> Iterator[tuple[str, str]]:
    total = sum(facts.vcpus)
    if placement and len(placement) != total:
        yield "placement", (f"has {len(placement)} cores, which is not allowed: it lists the core of each vCPU "
                            f"of the machine, and the VMs have {total} vCPUs (vms[].vcpus).")
    for i, core in enumerate(placement):
        if core >= facts.cores:
            yield f"placement[{i}]", (f"= {core} is not allowed: cores go from 0 to {facts.cores - 1} "
                                      f"(machine.cores = {facts.cores}).")


def home_cores(placement: tuple[int, ...], ctx: SmpContext) -> np.ndarray:
    """The home core of each machine-wide vCPU."""
    return np.asarray(placement, dtype=np.int64) if placement else round_robin(ctx)


@attrs.frozen
class PinnedOptions:
    placement: tuple[int, ...] = option([], PLACEMENT_HELP, min=0)

    def problems(self, facts: ConfigFacts) -> Iterator[tuple[str, str]]:
        yield from _placement_problems(self.placement, facts)


class Pinned:
    """Each vCPU on its home core; the trace's order kept."""

    def __init__(self, options: PinnedOptions, ctx: SmpContext) -> None:
        self.ctx = ctx
        self.home = home_cores(options.placement, ctx)

    def schedule(self, chunks: Iterable[np.ndarray]) -> Iterator[Placed]:
        for chunk in chunks:  # the default rule: the engine places each record by its thread
            yield Placed(chunk, home=self.home)


#: bytes a window holds per record while it is reordered: the records twice (15 bytes each)
#: and about eight int64 index arrays
WINDOW_RECORD_BYTES = 2 * 15 + 8 * 8


@attrs.frozen
class TimeSlicedOptions:
    quantum: int = option(100_000, "records a vCPU runs before its core turns to its next vCPU (an assumption, "
                                   "no source: a scheduler's slice of a few milliseconds is millions of memory "
                                   "accesses; shorter, so that short traces switch)", min=1)
    window: int = option(1 << 20, "trace records reordered at a time", min=1, max=1 << 30)
    placement: tuple[int, ...] = option([], PLACEMENT_HELP, min=0)

    def problems(self, facts: ConfigFacts) -> Iterator[tuple[str, str]]:
        yield from _placement_problems(self.placement, facts)

    def memory_items(self, records: int | None = None) -> Iterator[tuple[str, int]]:
        """The memory a window holds (slatframe.footprint), given the workload's records
        when it says how many."""
        yield "window", min(self.window, records or self.window) * WINDOW_RECORD_BYTES


class TimeSliced:
    """Each core runs its vCPUs round robin, ``quantum`` records at a time."""

    def __init__(self, options: TimeSlicedOptions, ctx: SmpContext) -> None:
        self.ctx, self.quantum, self.window = ctx, options.quantum, options.window
        self.home = home_cores(options.placement, ctx)
        self.first = ctx.first_vcpu()
        # each core's vCPUs in turn order, and each vCPU's place in its core's turn
        self.turn = np.zeros(ctx.total_vcpus, dtype=np.int64)
        self.members = np.zeros(ctx.cores, dtype=np.int64)
        for g, core in enumerate(self.home):
            self.turn[g] = self.members[core]
            self.members[core] += 1
        self.current = np.zeros(ctx.cores, dtype=np.int64)  # turn position of each core's running vCPU
        self.used = np.zeros(ctx.cores, dtype=np.int64)  # records it has run of its quantum

    def schedule(self, chunks: Iterable[np.ndarray]) -> Iterator[Placed]:
        for records in windows(chunks, self.window):
            yield self._reorder(records)

    def _reorder(self, records: np.ndarray) -> Placed:
        n, q = len(records), self.quantum
        vcpu = thread_vcpus(records, self.ctx)
        g = self.first[records["vm"].astype(np.int64)] + vcpu
        core = self.home[g]
        by_vcpu = np.argsort(g, kind="stable")
        starts = np.searchsorted(g[by_vcpu], g[by_vcpu])  # first position of each record's vCPU
        rank = np.empty(n, dtype=np.int64)
        rank[by_vcpu] = np.arange(n) - starts  # j: this record is its vCPU's j-th in the window
        members = self.members[core]
        offset = (self.turn[g] - self.current[core]) % members  # 0: the core's running vCPU
        left = q - self.used[core]  # of the running vCPU's quantum
        rounds = np.where(offset == 0, np.where(rank < left, 0, 1 + (rank - left) // q), rank // q)
        per_core = np.lexsort((rank, offset, rounds, core))  # each core's records in the order it runs them
        sorted_core = core[per_core]
        seat = np.arange(n) - np.searchsorted(sorted_core, sorted_core)  # t: the core's t-th record
        order = per_core[np.lexsort((sorted_core, seat))]  # the cores take turns a record at a time
        for c in np.unique(core):
            last = per_core[np.searchsorted(sorted_core, c, side="right") - 1]
            same = (g == g[last]) & (rounds == rounds[last])
            used = int(np.count_nonzero(same)) + (int(self.used[c]) if offset[last] == 0 and rounds[last] == 0 else 0)
            position = int(self.turn[g[last]])
            if used >= q:
                self.current[c], self.used[c] = (position + 1) % self.members[c], 0
            else:
                self.current[c], self.used[c] = position, used
        return Placed(records[order], home=self.home)  # each record's vCPU and core by the default rule


@hookimpl
def slatframe_schedulers() -> list[Any]:
    return [
        SchedulerRecord(name="pinned", summary="each vCPU on a home core; the trace's order kept",
                        options=PinnedOptions, factory=Pinned),
        SchedulerRecord(name="time-sliced", summary="each core runs its vCPUs in turn, a quantum of records each",
                        options=TimeSlicedOptions, factory=TimeSliced),
    ]
