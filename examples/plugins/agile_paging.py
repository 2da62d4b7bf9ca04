"""Agile paging (Gandhi, Hill and Swift, ISCA 2016) as an outside plugin: SLAT scheme
``agile`` and its walk ``agile``.

The hypervisor shadows the top ``shadow_levels`` levels of each guest address space:
hardware starts a walk at a shadow root in host memory and reads those levels with one
reference each (host-physical addresses, as under shadow paging). The last shadow entry
is a copy of the guest's own entry, marked with a switch bit, whose frame is a
guest-physical address: from there the walk goes on in nested mode, every guest table
read through the second-level tables, and the data's gPA last. With a 4-level guest and
a 4-level host and no walk caches a walk makes

    s + (4 - s) * 5 + 4   references:  20, 16, 12 for s = 1, 2, 3

(a full 2D walk makes 24, a shadow walk 4).

The software side is shadow paging's, confined to the shadowed levels:

- A shadow entry that is not present stops the walk (a hidden fault, VM exit
  ``agile_fill``); the hypervisor copies the guest's path into the shadow levels. If the
  guest itself has no entry there, the fault is injected into the guest, whose kernel maps
  the page, and the walk faults again to fill.
- Guest tables whose entries are shadowed are write-protected: a guest store to one
  exits (``agile_pt_write``) and zaps the shadow entry, which the next walk refills. Stores
  to the nested levels (the guest's lower tables) do not exit: that is what agile paging
  saves over shadow paging.
- An address-space switch loads a shadow root: a VM exit (``cr3_write``), as under shadow
  paging.

Second-level faults are handled as under nested paging (``ept_violation``). Limits of this
example: guest pages are 4K (a large guest page at a shadowed level would need shadow
leaves with emulated dirty bits), no walk caches, and the hypervisor does not set the
guest's accessed flags in the shadowed levels (hardware sets them in the nested ones).

Both engine tiers run the walk: :class:`AgileWalker` is the reference, built from the
radix walk's counted pieces, and :func:`walk_kernel` the same walk in numba
(``WalkKernels``), built from :mod:`slatframe.engine.walklib`'s (``walk_read`` for
the shadow levels, ``guest_levels`` and ``translated`` for the nested rest).
"""
from __future__ import annotations

import attrs
import numpy as np
from numba import njit

from slatframe import hookimpl
from slatframe.errors import ConfigError
from slatframe.guest import TABLE_SIZE
from slatframe.options import option
from slatframe.engine import walklib
from slatframe.engine.walklib import F_LEVELS, F_PRESENT, O_REFS_GUEST
from slatframe.records import SlatSchemeRecord, WalkKernels, WalkRecord
from slatframe.trace import CONTEXT_SWITCH, FLUSH, WRITE
from slatframe.walker import GUEST, NO_ROOT, Fault, HardwareView, Walker
from slatframe_plugins.nested import NestedOptions, NestedTranslator

#: An available bit of x86-64 entries (bits 52-58 are ignored by hardware): this shadow
#: entry is the guest's own, and the walk goes on in nested mode from its gPA.
SWITCH = 1 << 52
#: Fault kind of a walk that met a non-present shadow entry (core kinds are 1 to 5).
SHADOW_NOT_PRESENT = 16


@attrs.define
class AgileView(HardwareView):
    """The hardware view: ``guest_roots`` are the shadow roots (host-physical)."""

    shadow_levels: int = 1


class AgileWalker(Walker):
    """``shadow_levels`` 1D references through the shadow, then a nested walk."""

    def walk(self, vm: int, asid: int, va: int, op: int):
        self.refs = [0, 0, 0]
        table = self.hw.guest_roots.get(vm, asid)
        if table < 0:
            return Fault(NO_ROOT, va)
        fmt, write = self.hw.guest_format, op == WRITE
        level = fmt.levels
        for level in range(fmt.levels, fmt.levels - self.hw.shadow_levels, -1):
            entry, _ = self.read_entry(GUEST, vm, asid, level, fmt.entry_address(table, va, level))
            if not fmt.is_present(entry):
                return self.complete(vm, va, write, Fault(SHADOW_NOT_PRESENT, va))
            table = fmt.frame(entry, level)
            if entry & SWITCH:
                break
        got = self.walk_dimension(GUEST, fmt, vm, asid, table, va, True, write, write, self.resolver(vm),
                                  top=level - 1)
        return self.complete(vm, va, write, got)


def make_walk(ctx) -> AgileWalker:
    if ctx.walk_caches:
        raise ConfigError("the agile walk of examples/plugins/agile_paging.py models no walk caches; "
                          "remove [[walk_caches]].")
    return AgileWalker(ctx.hw, ctx.memory, ctx.counters, [], ctx.data_caches)


# -- the compiled walk -----------------------------------------------------------------------
G, H, P = 0, 1, 2  #: rows of the kernel's state: guest format, host format, parameters
P_SHADOW_LEVELS, P_HOST_AD, P_TABLE_DIRTIES = 0, 1, 2
FIRST_VM = 3  #: row FIRST_VM + vm: the VM's second-level root, then the shadow root of each asid


def walk_state(walker: AgileWalker) -> np.ndarray:
    """The kernel's state, rebuilt after every software event (roots are set lazily)."""
    hw = walker.hw
    roots = hw.guest_roots.array
    n_vms, n_asids = roots.shape
    state = np.zeros((FIRST_VM + n_vms, max(walklib.F_COLUMNS, 1 + n_asids)), dtype=np.int64)
    state[G, :walklib.F_COLUMNS] = walklib.format_row(hw.guest_format)
    state[H, :walklib.F_COLUMNS] = walklib.format_row(hw.host_format)
    state[P, :3] = (hw.shadow_levels, hw.host_ad, hw.table_access_dirties)
    state[FIRST_VM:, 0] = np.asarray(hw.host_roots, dtype=np.int64)
    state[FIRST_VM:, 1:1 + n_asids] = roots
    return state


@njit(_nrt=False)
def walk_kernel(slot_of, words, state, dcfg, dctl, dtag, dage, cnt, vm, asid, va, op, out):
    """:meth:`AgileWalker.walk` without walk caches, reporting in ``out``."""
    walklib.begin(out)
    row = FIRST_VM + vm
    table = state[row, 1 + asid] if 1 + asid < state.shape[1] else -1
    if table < 0:
        walklib.fault(out, NO_ROOT, va)
        return
    write = op == WRITE
    host_ad, dirties, host_root = state[P, P_HOST_AD] != 0, state[P, P_TABLE_DIRTIES] != 0, state[row, 0]
    level = state[G, F_LEVELS]
    last_shadow = level - state[P, P_SHADOW_LEVELS] + 1
    while True:  # the shadow levels: tables in host memory, one reference each
        pa = walklib.entry_pa(state, G, table, va, level)
        entry = walklib.walk_read(slot_of, words, state, G, pa, dcfg, dctl, dtag, dage, cnt, out, O_REFS_GUEST)
        if (entry & state[G, F_PRESENT]) == 0:
            walklib.fault(out, SHADOW_NOT_PRESENT, va)
            return
        table = walklib.frame_of(state, G, entry, level)
        if (entry & SWITCH) != 0 or level == last_shadow:
            break
        level -= 1
    found, entry, level = walklib.guest_levels(slot_of, words, state, G, H, True, host_root, table, va, level - 1,
                                               write, host_ad, dirties, dcfg, dctl, dtag, dage, cnt, out)
    if found:  # the nested levels found the leaf: the data's gPA through the second level last
        walklib.translated(slot_of, words, state, G, H, True, host_root, entry, level, va, write, host_ad, dirties,
                           dcfg, dctl, dtag, dage, cnt, out)


@attrs.frozen
class AgileOptions:
    shadow_levels: int = option(1, "upper guest levels walked through a shadow table (the rest nested)",
                                min=1, max=3)
    ad_bits: bool = option(True, "hardware sets accessed/dirty flags in second-level entries")


class AgileTranslator(NestedTranslator):
    """Nested paging's guest kernels and second level, plus shadows of the top levels."""

    process_events = False  #: fork, exec and exit would need the shadow levels rebuilt: not modelled

    def __init__(self, options: AgileOptions, ctx) -> None:
        super().__init__(NestedOptions(ad_bits=options.ad_bits), ctx, "ept_violation")
        fmt = ctx.guest_format
        if options.shadow_levels >= fmt.levels:
            raise ConfigError(f"machine.slat.shadow_levels = {options.shadow_levels} must be below the guest "
                              f"format's {fmt.levels} levels.")
        for i, vm in enumerate(ctx.vms):
            if vm.guest_page_size != TABLE_SIZE:
                raise ConfigError(f"vms[{i}].guest_page_size must be 4K under the agile example scheme.")
        nested = self.hw
        self.hw = AgileView(fmt, nested.guest_roots, nested.host_format, nested.host_roots, nested.host_ad,
                            nested.table_access_dirties, walk="agile", shadow_levels=options.shadow_levels)
        self.fmt = fmt
        self.host = ctx.host
        #: per VM: page of a shadowed guest table (gPA) -> the shadow table mirroring it (hPA)
        self.mirrors: list[dict[int, int]] = [{} for _ in ctx.vms]

    def handle_fault(self, vm: int, asid: int, va: int, op: int, fault: Fault):
        if fault.kind == NO_ROOT:
            root = self.host.alloc(TABLE_SIZE)
            self.hw.guest_roots.set(vm, asid, root)
            self.mirrors[vm][self.kernels[vm].root(asid)] = root
            return []
        if fault.kind == SHADOW_NOT_PRESENT:
            self.counters.vm_exit("agile_fill")
            self._fill(vm, asid, va)
            return self.dedup.take_pending() if self.dedup else []
        return super().handle_fault(vm, asid, va, op, fault)

    def _fill(self, vm: int, asid: int, va: int) -> None:
        """Copy the guest's path for ``va`` into the shadow levels, or inject the guest's
        page fault when the guest has no entry there."""
        fmt, kernel, host = self.fmt, self.kernels[vm], self.host
        guest_table, shadow_table = kernel.root(asid), self.hw.guest_roots.get(vm, asid)
        switch_level = fmt.levels - self.hw.shadow_levels + 1
        for level in range(fmt.levels, switch_level - 1, -1):
            offset = fmt.index(va, level) * fmt.entry_bytes
            entry = fmt.load(kernel.phys, guest_table + offset)
            if not fmt.is_present(entry):
                self.counters.add("faults.guest")
                kernel.map(asid, va)
                return
            self.mirrors[vm][guest_table] = shadow_table  # its entries are shadowed: write-protect it
            if level == switch_level:
                fmt.store(host, shadow_table + offset, entry | SWITCH)
                return
            shadow = fmt.load(host, shadow_table + offset)
            if not fmt.is_present(shadow):
                child = host.alloc(TABLE_SIZE)
                fmt.store(host, shadow_table + offset, fmt.table_entry(child))
                shadow = fmt.load(host, shadow_table + offset)
            guest_table, shadow_table = fmt.frame(entry, level), fmt.frame(shadow, level)

    def _kernel_store(self, vm: int, gpa: int) -> None:
        super()._kernel_store(vm, gpa)
        shadow_table = self.mirrors[vm].get(gpa & ~(TABLE_SIZE - 1))
        if shadow_table is not None:  # a write-protected, shadowed guest table
            self.counters.vm_exit("agile_pt_write")
            self.fmt.store(self.host, shadow_table + (gpa & (TABLE_SIZE - 1) & ~(self.fmt.entry_bytes - 1)), 0)

    def control(self, vm: int, asid: int, op: int, arg: int):
        if op in (CONTEXT_SWITCH, FLUSH):
            self.counters.vm_exit("cr3_write")
        return super().control(vm, asid, op, arg)


@hookimpl
def slatframe_walks():
    return [WalkRecord(name="agile", summary="agile paging: shadow upper levels, then a nested walk",
                       factory=make_walk, kernels=WalkKernels(walk=walk_kernel, state=walk_state))]


@hookimpl
def slatframe_slat_schemes():
    return [SlatSchemeRecord(name="agile", summary="agile paging (ISCA 2016): shadowed upper levels, nested below",
                             factory=AgileTranslator, options=AgileOptions, guest_format="x86-64",
                             host_format="ept",
                             exit_reasons=("ept_violation", "agile_fill", "agile_pt_write", "cr3_write"))]
