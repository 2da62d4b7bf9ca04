"""The ``native`` scheme: no hypervisor; hardware walks the guest format in host memory."""
from __future__ import annotations

from slatframe import hookimpl
from slatframe.contents import image_pages
from slatframe.guest import DROPS_ROOT, DemandPaging, GuestOs, guest_control
from slatframe.machine import Invalidation, MachineContext
from slatframe.paging import PAGE_SHIFT
from slatframe.records import SlatSchemeRecord
from slatframe.trace import WRITE
from slatframe.walker import NO_ROOT, Fault, HardwareView, RootTable


class NativeTranslator:
    """Each ``[[vms]]`` entry is one OS on bare metal; all share the host's memory. A VM's
    image is resident from the start (host frames reserved for it, counted in use); the
    kernel's own allocations come after it. Contents play no part without a hypervisor.

    A walk that meets a non-present entry, or a write that meets a read-only leaf, is a
    page fault: the kernel maps the page, breaks a copy-on-write or makes it writable
    again (:meth:`slatframe.guest.GuestOs.fault`), and the walk restarts.
    """

    process_events = True  #: handles fork, exec, exit and map_shared (slatframe.guest.GuestOs)

    def __init__(self, ctx: MachineContext) -> None:
        self.counters = ctx.counters
        for i, vm in enumerate(ctx.vms):  # an OS's image is resident; its kernel allocates elsewhere
            ctx.host.reserve(image_pages(vm.image, vm.memory, f"vms[{i}].image") << PAGE_SHIFT)
        self.kernels = [GuestOs(ctx.guest_format, vm.guest_page_size, ctx.host, ctx.counters, name=vm.name)
                        for vm in ctx.vms]
        self.hw = HardwareView(ctx.guest_format, RootTable(len(ctx.vms)))

    def handle_fault(self, vm: int, asid: int, va: int, op: int, fault: Fault) -> list[Invalidation]:
        kernel = self.kernels[vm]
        if fault.kind == NO_ROOT:
            self.hw.guest_roots.set(vm, asid, kernel.root(asid))
        else:
            self.counters.add("faults.guest")
            kernel.fault(asid, va, op == WRITE)
        return kernel.take_flushes(vm)

    def demand_paging(self) -> list[DemandPaging]:
        """A not-present fault is ``faults.guest`` and the kernel's demand fault (above)."""
        return [DemandPaging(kernel, "faults.guest") for kernel in self.kernels]

    def control(self, vm: int, asid: int, op: int, arg: int) -> list[Invalidation]:
        invalidations = guest_control(self.kernels[vm], vm, asid, op, arg)[1]
        if op in DROPS_ROOT:  # the next access loads the new root (exec) or starts afresh (exit)
            self.hw.guest_roots.set(vm, asid, -1)
        return invalidations


@hookimpl
def slatframe_slat_schemes():
    return [SlatSchemeRecord(name="native", summary="no virtualization: 1D walks of the guest format",
                             factory=lambda options, ctx: NativeTranslator(ctx), guest_format="x86-64",
                             backs_guest_memory=False, exit_reasons=())]
