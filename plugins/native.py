"""The ``native`` scheme: no hypervisor; one 1D walk of the guest format in host memory."""
from __future__ import annotations

from slatframe import hookimpl
from slatframe.guest import GuestOs, guest_control
from slatframe.machine import Invalidation, MachineContext, Translation
from slatframe.paging import walk
from slatframe.records import SlatSchemeRecord
from slatframe.trace import WRITE


class NativeTranslator:
    """Each ``[[vms]]`` entry is one OS on bare metal; all share the host's memory.

    Walks set accessed flags in every entry used and the dirty flag of the leaf on a
    write, as x86 hardware does. A walk that meets a non-present entry, or a write that
    meets a read-only leaf, is a guest page fault: the kernel maps the page (or makes it
    writable again) and the walk restarts.
    """

    def __init__(self, ctx: MachineContext) -> None:
        self.fmt = ctx.guest_format
        self.counters = ctx.counters
        self.memory = ctx.host
        self.kernels = [GuestOs(self.fmt, vm.guest_page_size, ctx.host) for vm in ctx.vms]

    def translate(self, vm: int, asid: int, va: int, op: int) -> Translation:
        kernel, fmt, write = self.kernels[vm], self.fmt, op == WRITE
        while True:
            step = walk(fmt, kernel.root(asid), va, self.memory, accessed=True, dirty=write)
            if step.present and (not write or fmt.is_writable(step.entry)):
                self.counters.walk_done(step.refs, 0, step.ad_writes)
                return Translation(fmt.frame(step.entry, step.level), fmt.page_size(step.level),
                                   fmt.is_writable(step.entry), fmt.is_dirty(step.entry))
            self.counters.walk_aborted(step.refs, step.ad_writes)
            self.counters.add("faults.guest")
            if step.present:
                kernel.protect(asid, va, writable=True)
            else:
                kernel.map(asid, va)

    def control(self, vm: int, asid: int, op: int, arg: int) -> list[Invalidation]:
        return guest_control(self.kernels[vm], vm, asid, op, arg)[1]


@hookimpl
def slatframe_slat_schemes():
    return [SlatSchemeRecord(name="native", summary="no virtualization: 1D walks of the guest format",
                             factory=lambda options, ctx: NativeTranslator(ctx), guest_format="x86-64")]
