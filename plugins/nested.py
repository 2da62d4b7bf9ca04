"""Nested paging (2D walks): ``intel-ept`` and ``amd-npt``.

The guest walks its own tables (guest format) with guest-physical addresses; hardware
translates every one of those gPAs, and the final gPA of the data, through the
hypervisor's second-level tables (host format). With n guest and m host levels a walk
makes n guest references and n+1 host walks: (n+1)(m+1)-1 references, 24 for 4x4.

A non-present second-level entry aborts the walk with a VM exit (Intel: EPT violation,
Intel SDM 29.3.3; AMD: #VMEXIT(NPF), AMD APM 15.25.6); the hypervisor backs the page
and the walk restarts. A non-present guest entry is a guest page fault handled by the
guest kernel without an exit.
"""
from __future__ import annotations

import attrs

from slatframe import hookimpl
from slatframe.backing import RadixBacking
from slatframe.guest import GuestOs, VmPhysical, guest_control
from slatframe.machine import Invalidation, MachineContext, Translation
from slatframe.options import option
from slatframe.paging import walk
from slatframe.records import SlatSchemeRecord
from slatframe.trace import WRITE


@attrs.frozen
class NestedOptions:
    ad_bits: bool = option(True, "hardware sets accessed/dirty flags in second-level entries "
                                 "(Intel: EPTP bit 6, on by default in KVM where supported)")
    table_access_dirties: bool = option(
        True, "a guest page-table access counts as a write for second-level dirty flags "
              "(Intel SDM 29.3.5 with EPT A/D on; assumed the same on AMD)")


class HostFault(Exception):
    """A second-level walk met a non-present (or read-only, for a write) entry."""

    def __init__(self, gpa: int) -> None:
        self.gpa = gpa


class _CountingWrites:
    """Host memory as a guest walk sees it: A/D writes are counted as they happen, so a
    walk aborted by a second-level fault still counts the flags it set."""

    def __init__(self, host, refs: list[int]) -> None:
        self.read = host.read
        self._write = host.write
        self.refs = refs

    def write(self, addr: int, value: int) -> None:
        self.refs[2] += 1
        self._write(addr, value)


class NestedTranslator:
    """2D walks over each VM's guest tables and the hypervisor's second-level tables."""

    def __init__(self, options: NestedOptions, ctx: MachineContext, exit_reason: str) -> None:
        self.options = options
        self.gfmt = ctx.guest_format
        self.hfmt = ctx.host_format
        self.host = ctx.host
        self.counters = ctx.counters
        self.exit_reason = exit_reason
        self.host_page_sizes = [vm.host_page_size for vm in ctx.vms]
        self.backings: list[RadixBacking] = []
        self.kernels: list[GuestOs] = []
        for vm in ctx.vms:
            backing = RadixBacking(self.hfmt, ctx.host, vm.host_page_size, ctx.counters,
                                   on_fault=lambda gpa: ctx.counters.vm_exit(exit_reason))
            phys = VmPhysical(vm.memory, vm.name, backing.backing, ctx.host.read, ctx.host.write)
            self.backings.append(backing)
            self.kernels.append(GuestOs(self.gfmt, vm.guest_page_size, phys))
        self._refs = [0, 0, 0]  # guest refs, host refs, A/D writes of the walk in progress

    def _host_walk(self, vm: int, gpa: int, write: bool, table_access: bool) -> tuple[int, int, int]:
        """One hardware walk of the second-level tables: (hPA, host page size, leaf entry)."""
        hfmt = self.hfmt
        ad = self.options.ad_bits
        dirty = ad and (write or (table_access and self.options.table_access_dirties))
        step = walk(hfmt, self.backings[vm].root, gpa, self.host, accessed=ad, dirty=dirty)
        self._refs[1] += step.refs
        self._refs[2] += step.ad_writes
        if not step.present or (write and not hfmt.is_writable(step.entry)):
            raise HostFault(gpa)
        size = hfmt.page_size(step.level)
        return hfmt.frame(step.entry, step.level) | (gpa & (size - 1)), size, step.entry

    def _guest_entry(self, vm: int):
        def resolve(gpa: int) -> int:
            hpa = self._host_walk(vm, gpa, False, True)[0]
            self._refs[0] += 1
            return hpa
        return resolve

    def translate(self, vm: int, asid: int, va: int, op: int) -> Translation:
        gfmt, kernel, write = self.gfmt, self.kernels[vm], op == WRITE
        counters = self.counters
        while True:
            refs = self._refs = [0, 0, 0]
            try:
                step = walk(gfmt, kernel.root(asid), va, _CountingWrites(self.host, refs),
                            resolve=self._guest_entry(vm), accessed=True, dirty=write)
                if not step.present or (write and not gfmt.is_writable(step.entry)):
                    counters.walk_aborted(refs[0] + refs[1], refs[2])
                    counters.add("faults.guest")
                    if step.present:
                        kernel.protect(asid, va, writable=True)
                    else:
                        kernel.map(asid, va)
                    continue
                gsize = gfmt.page_size(step.level)
                gpa = gfmt.frame(step.entry, step.level) | (va & (gsize - 1))
                hpa, hsize, host_entry = self._host_walk(vm, gpa, write, False)
            except HostFault as fault:
                counters.walk_aborted(refs[0] + refs[1], refs[2])
                self.backings[vm].fault(fault.gpa)
                continue
            counters.walk_done(refs[0], refs[1], refs[2])
            size = min(gsize, hsize)
            if hsize < gsize:
                counters.add("tlb.splintered_fills")
            hfmt = self.hfmt
            return Translation(hpa & ~(size - 1), size,
                               hfmt.is_writable(host_entry) and gfmt.is_writable(step.entry),
                               gfmt.is_dirty(step.entry) and (not self.options.ad_bits or hfmt.is_dirty(host_entry)))

    def control(self, vm: int, asid: int, op: int, arg: int) -> list[Invalidation]:
        return guest_control(self.kernels[vm], vm, asid, op, arg)[1]


@hookimpl
def slatframe_slat_schemes():
    return [
        SlatSchemeRecord(
            name="intel-ept", summary="Intel EPT: 2D walks, EPT violations exit",
            factory=lambda o, ctx: NestedTranslator(o, ctx, "ept_violation"),
            options=NestedOptions, guest_format="x86-64", host_format="ept"),
        SlatSchemeRecord(
            name="amd-npt", summary="AMD NPT/RVI: 2D walks, nested page faults exit",
            factory=lambda o, ctx: NestedTranslator(o, ctx, "npf"),
            options=NestedOptions, guest_format="x86-64", host_format="npt"),
    ]
