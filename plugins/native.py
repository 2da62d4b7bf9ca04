"""The ``native`` scheme: no hypervisor; one 1D walk of the guest format in host memory."""
from __future__ import annotations

from slatframe import hookimpl
from slatframe.guest import GuestOs
from slatframe.machine import Invalidation, MachineContext, Translation
from slatframe.paging import walk
from slatframe.records import SlatSchemeRecord
from slatframe.trace import FLUSH, INVLPG, MAP, PROTECT, UNMAP


class NativeTranslator:
    """Each ``[[vms]]`` entry is one OS on bare metal; all share the host's memory."""

    def __init__(self, ctx: MachineContext) -> None:
        self.fmt = ctx.guest_format
        self.counters = ctx.counters
        self.read = ctx.host.read
        self.kernels = [GuestOs(self.fmt, vm.guest_page_size, ctx.host) for vm in ctx.vms]

    def translate(self, vm: int, asid: int, va: int, op: int) -> Translation:
        kernel = self.kernels[vm]
        while True:
            step = walk(self.fmt, kernel.root(asid), va, self.read)
            if step.present:
                self.counters.walk_done(step.refs)
                size = self.fmt.page_size(step.level)
                return Translation(self.fmt.frame(step.entry, step.level), size,
                                   self.fmt.is_writable(step.entry))
            self.counters.walk_aborted(step.refs)
            self.counters.add("faults.guest")
            kernel.map(asid, va)

    def control(self, vm: int, asid: int, op: int, arg: int) -> list[Invalidation]:
        kernel = self.kernels[vm]
        if op == MAP:
            kernel.map(asid, arg)
        elif op in (UNMAP, PROTECT, INVLPG):
            if op == UNMAP:
                kernel.unmap(asid, arg)
            elif op == PROTECT:
                kernel.protect(asid, arg)
            return [Invalidation("page", vm, asid, arg)]
        elif op == FLUSH:
            return [Invalidation("asid", vm, asid)]
        return []


@hookimpl
def slatframe_slat_schemes():
    return [SlatSchemeRecord(name="native", summary="no virtualization: 1D walks of the guest format",
                             factory=lambda options, ctx: NativeTranslator(ctx), guest_format="x86-64")]
