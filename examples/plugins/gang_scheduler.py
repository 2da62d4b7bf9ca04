"""Gang scheduling: a scheduler plugin (the worked example of docs/plugin-authors.md).

The VMs take turns on the whole machine. In its turn a VM runs ``quantum`` of its
records, in the trace's order, with its vCPU k on core ``k mod machine.cores``, so all
of its vCPUs run at once (co-scheduling, as VMware's ESXi does for SMP VMs so that a
vCPU spinning on a lock does not wait for a descheduled holder). A VM with no record
left in the window is skipped. The trace is reordered ``window`` records at a time; the
next window starts with the VM after the one that ran last (a turn cut by the window's
end is not resumed: a simplification of this example, stated here).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import attrs
import numpy as np

from slatframe import hookimpl
from slatframe.options import option
from slatframe.records import SchedulerRecord
from slatframe.smp import Placed, SmpContext, thread_vcpus, windows


@attrs.frozen
class GangOptions:
    quantum: int = option(10_000, "records of a VM's turn", min=1)
    window: int = option(1 << 20, "trace records reordered at a time", min=1, max=1 << 30)


class Gang:
    def __init__(self, options: GangOptions, ctx: SmpContext) -> None:
        self.options, self.ctx = options, ctx
        self.start = 0  # the VM whose turn comes first in the next window

    def schedule(self, chunks: Iterable[np.ndarray]) -> Iterator[Placed]:
        for records in windows(chunks, self.options.window):
            yield self._turns(records)

    def _turns(self, records: np.ndarray) -> Placed:
        vm = records["vm"].astype(np.int64)
        by_vm = np.argsort(vm, kind="stable")
        rank = np.empty(len(vm), dtype=np.int64)  # j: the VM's j-th record in the window
        rank[by_vm] = np.arange(len(vm)) - np.searchsorted(vm[by_vm], vm[by_vm])
        turn = (vm - self.start) % len(self.ctx.vcpus)  # 0: the VM that goes first
        order = np.lexsort((rank, turn, rank // self.options.quantum))
        if len(order):
            self.start = (int(vm[order[-1]]) + 1) % len(self.ctx.vcpus)
        vcpu = thread_vcpus(records, self.ctx)[order]
        return Placed(records[order], vcpu, vcpu % self.ctx.cores)


@hookimpl
def slatframe_schedulers():
    return [SchedulerRecord(name="gang", summary="the VMs take turns on the whole machine, all vCPUs at once",
                            options=GangOptions, factory=Gang)]
