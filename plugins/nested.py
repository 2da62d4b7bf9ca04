"""Nested paging (2D walks): ``intel-ept`` and ``amd-npt``.

The guest walks its own tables (guest format) with guest-physical addresses; hardware
translates every one of those gPAs, and the final gPA of the data, through the
hypervisor's second-level tables (host format). With n guest and m host levels a walk
makes n guest references and n+1 host walks: (n+1)(m+1)-1 references, 24 for 4x4.

A non-present second-level entry aborts the walk with a VM exit (Intel: EPT violation,
Intel SDM 29.3.3; AMD: #VMEXIT(NPF), AMD APM 15.25.6); the hypervisor backs the page
and the walk restarts. A non-present guest entry is a guest page fault handled by the
guest kernel without an exit. The two vendors differ here only in names and defaults;
their walk caches are walk-cache plugins.
"""
from __future__ import annotations

import attrs
import numpy as np

from slatframe import hookimpl
from slatframe.backing import RadixBacking, back_image
from slatframe.errors import SimulationError
from slatframe.guest import DROPS_ROOT, DemandPaging, GuestOs, VmPhysical, guest_control
from slatframe.machine import Invalidation, MachineContext
from slatframe.options import option
from slatframe.records import SlatSchemeRecord
from slatframe.trace import WRITE
from slatframe.walker import (GUEST_NOT_PRESENT, GUEST_PROTECTION, HOST_NOT_PRESENT, NO_ROOT, Fault,
                              HardwareView, RootTable)


@attrs.frozen
class NestedOptions:
    ad_bits: bool = option(True, "hardware sets accessed/dirty flags in second-level entries "
                                 "(Intel: EPTP bit 6, on by default in KVM where supported)")
    table_access_dirties: bool = option(
        True, "a guest page-table access counts as a write for second-level dirty flags "
              "(Intel SDM 29.3.5 with EPT A/D on; assumed the same on AMD)")
    enlightened: bool = option(
        False, "on several vCPUs, the guest sends a TLB shootdown as one flush hypercall with a processor mask "
               "(Hyper-V TLFS HvCallFlushVirtualAddressSpace/List) instead of IPIs")
    pv_tlb_flush: bool = option(
        False, "on several vCPUs, KVM's paravirtual TLB flush (KVM_FEATURE_PV_TLB_FLUSH, Linux's kvm_flush_tlb_multi): "
               "a shootdown sends no IPI to a preempted vCPU (one not running on its core); KVM flushes its TLB "
               "when it next runs")


class NestedTranslator:
    """Per VM: a guest kernel in guest-physical memory and the second-level tables. The
    guest's page-table stores are ordinary guest memory writes (no exit)."""

    process_events = True  #: handles fork, exec, exit and map_shared (slatframe.guest.GuestOs)

    def __init__(self, options: NestedOptions, ctx: MachineContext, exit_reason: str) -> None:
        self.flush_hypercall = options.enlightened  #: shootdowns by hypercall (slatframe.coherence)
        self.pv_tlb_flush = options.pv_tlb_flush  #: no IPI to preempted vCPUs (slatframe.coherence)
        self.counters = ctx.counters
        self.exit_reason = exit_reason
        self.dedup = None  # set by the machine when a dedup strategy runs
        self.backings: list[RadixBacking] = []
        self.kernels: list[GuestOs] = []
        for i, vm in enumerate(ctx.vms):
            backing = RadixBacking(ctx.host_format, ctx.host, vm.host_page_size, ctx.counters,
                                   on_fault=lambda gpa: ctx.counters.vm_exit(exit_reason),
                                   contents=ctx.contents[i] if ctx.contents else None)
            phys = VmPhysical(vm.memory, vm.name, backing.backing, ctx.host.read, ctx.host.write,
                              on_write=lambda gpa, i=i: self._kernel_store(i, gpa),
                              start=back_image(backing, vm, i))
            self.backings.append(backing)
            self.kernels.append(GuestOs(ctx.guest_format, vm.guest_page_size, phys, ctx.counters, name=vm.name))
        self.hw = HardwareView(ctx.guest_format, RootTable(len(ctx.vms)), ctx.host_format,
                               np.array([b.root for b in self.backings], dtype=np.int64),
                               options.ad_bits, options.ad_bits and options.table_access_dirties)

    def _kernel_store(self, vm: int, gpa: int) -> None:
        """The guest kernel stores to its memory (a page-table entry): the page's content
        changes, and a merged page is copied first, after its EPT write fault's exit."""
        if self.dedup is not None and self.dedup.store(vm, gpa):
            self.counters.vm_exit(self.exit_reason)

    def demand_paging(self) -> list[DemandPaging | None]:
        """A guest's not-present fault is ``faults.guest`` and its kernel's fault, a host's
        the backing's fault and this scheme's exit (below), unless a dedup strategy runs
        (its stores and copy-on-write breaks come into both)."""
        if self.dedup is not None:
            return [None] * len(self.kernels)
        return [DemandPaging(kernel, "faults.guest", backing, self.exit_reason)
                for kernel, backing in zip(self.kernels, self.backings)]

    def handle_fault(self, vm: int, asid: int, va: int, op: int, fault: Fault) -> list[Invalidation]:
        return self._handle(vm, asid, va, op, fault) + (self.dedup.take_pending() if self.dedup else [])

    def _handle(self, vm: int, asid: int, va: int, op: int, fault: Fault) -> list[Invalidation]:
        kernel = self.kernels[vm]
        if fault.kind == NO_ROOT:
            self.hw.guest_roots.set(vm, asid, kernel.root(asid))
        elif fault.kind in (GUEST_NOT_PRESENT, GUEST_PROTECTION):
            self.counters.add("faults.guest")
            kernel.fault(asid, va, op == WRITE)
            return kernel.take_flushes(vm)
        elif fault.kind == HOST_NOT_PRESENT:
            self.backings[vm].fault(fault.address)
        elif self.dedup is not None:  # a write to a merged page: copy-on-write
            self.counters.add("faults.host")
            self.counters.vm_exit(self.exit_reason)
            return self.dedup.cow_break(vm, fault.address)
        else:
            raise SimulationError(f"unexpected second-level write-protection fault at gPA {fault.address:#x}")
        return []

    def control(self, vm: int, asid: int, op: int, arg: int) -> list[Invalidation]:
        invalidations = guest_control(self.kernels[vm], vm, asid, op, arg)[1]
        if op in DROPS_ROOT:  # the next access loads the new root (exec) or starts afresh (exit)
            self.hw.guest_roots.set(vm, asid, -1)
        return invalidations + (self.dedup.take_pending() if self.dedup else [])


@hookimpl
def slatframe_slat_schemes():
    return [
        SlatSchemeRecord(
            name="intel-ept", summary="Intel EPT: 2D walks, EPT violations exit",
            factory=lambda o, ctx: NestedTranslator(o, ctx, "ept_violation"),
            options=NestedOptions, guest_format="x86-64", host_format="ept", exit_reasons=("ept_violation",)),
        SlatSchemeRecord(
            name="amd-npt", summary="AMD NPT/RVI: 2D walks, nested page faults exit",
            factory=lambda o, ctx: NestedTranslator(o, ctx, "npf"),
            options=NestedOptions, guest_format="x86-64", host_format="npt", exit_reasons=("npf",)),
    ]
