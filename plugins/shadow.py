"""Shadow paging: the hypervisor keeps gVA -> hPA tables; hardware walks them in 1D.

The guest kernel keeps its own tables, which the hypervisor write-protects. The shadow
tables (guest format, in host memory, one root per guest asid) are filled lazily, the
way KVM's shadow MMU does:

- a walk that meets a non-present shadow entry, or a write that meets a read-only one,
  exits (``page_fault``); the hypervisor walks the guest tables in software. If the guest
  has no mapping (or no write permission) the fault is injected into the guest
  (``faults.guest``), whose kernel fixes its tables; each guest page-table entry it
  writes traps (``pt_write``). Otherwise the hypervisor fills the shadow entry (the
  "hidden" fault), setting the guest's accessed and dirty flags as hardware would. A
  shadow leaf is writable only once the guest leaf is dirty, so the first write to a
  page exits once more to set the guest's dirty flag.
- a context switch (MOV to CR3) exits (``cr3_write``); shadow roots are kept per asid.
- an unmap or protect writes a guest entry (``pt_write``, which zaps the shadow entry)
  and is followed by the guest's INVLPG (``invlpg``); a full flush reloads CR3.
- process lifecycle (:class:`slatframe.guest.GuestOs`): every store a fork, exec or exit
  makes to the guest's tables traps (``pt_write``; the write-protect of each private
  parent leaf zaps its shadow), and the TLB flush that follows each is a CR3 load
  (``cr3_write``); exec and exit drop the process's shadow root.

Deduplication: a shadow leaf maps a merged page read-only, so a write to it exits
(``page_fault``) and the hypervisor breaks the copy-on-write before filling a writable
leaf. The translator keeps a reverse map from gPA pages to the shadow leaves filled from
them (KVM's rmap); when dedup remaps a page it updates those leaves in place, as the
nested schemes' backing updates its second-level entries: a large shadow leaf is split,
then the 4K leaf points at the new frame, read-only when merged. Shadow leaves filled
inside a split host large page are one size down (as the split radix tables are).

Shadow tables are freed with their address space (exec, exit) and, with the option
``cached_roots``, when more address spaces have run since than it keeps
(``shadow.roots_evicted``, ``shadow.pages_zapped``); ``shadow.table_bytes`` is the host
memory they hold now and ``shadow.table_bytes.peak`` its maximum. Simplifications: no
bounded pool of shadow pages (KVM zaps the oldest beyond 2% of guest memory,
KVM_PERMILLE_MMU_PAGES), and hypervisor work is counted as exits, not as memory
references.
"""
from __future__ import annotations

from collections import OrderedDict

import attrs

from slatframe import hookimpl
from slatframe.backing import DictBacking, back_image
from slatframe.guest import DROPS_ROOT, GuestOs, VmPhysical, guest_control
from slatframe.machine import Invalidation, MachineContext
from slatframe.paging import PAGE_SHIFT, map_page, split_leaf, walk
from slatframe.options import option
from slatframe.records import SlatSchemeRecord
from slatframe.trace import CONTEXT_SWITCH, FLUSH, FORK, INVLPG, PROTECT, UNMAP, WRITE
from slatframe.walker import NO_ROOT, Fault, HardwareView, RootTable

TABLE_SIZE = SMALL = 1 << PAGE_SHIFT


class ShadowTranslator:
    """Per VM: a guest kernel, the hypervisor's gPA backing, and shadow roots per asid."""

    process_events = True  #: handles fork, exec, exit and map_shared (slatframe.guest.GuestOs)

    def __init__(self, ctx: MachineContext, options: "ShadowOptions | None" = None) -> None:
        self.cached_roots = options.cached_roots if options is not None else 0
        self.recent: list[OrderedDict[int, None]] = [OrderedDict() for _ in ctx.vms]  # least recently run first
        self.tables: dict[int, list[tuple[int, int]]] = {}  # shadow root -> every table of its tree
        self.table_bytes = 0
        self.fmt = ctx.guest_format
        self.host = ctx.host
        self.counters = ctx.counters
        self.host_page_sizes = [vm.host_page_size for vm in ctx.vms]
        self.dedup = None  # set by the machine when a dedup strategy runs
        self.backings = [DictBacking(ctx.host, vm.host_page_size, ctx.counters,
                                     contents=ctx.contents[i] if ctx.contents else None,
                                     on_remap=lambda gpa, i=i: self._remapped(i, gpa))
                         for i, vm in enumerate(ctx.vms)]
        self.kernels = [GuestOs(self.fmt, vm.guest_page_size,
                                VmPhysical(vm.memory, vm.name, b.backing, ctx.host.read, ctx.host.write,
                                           on_write=lambda gpa, i=i: self._kernel_store(i, gpa),
                                           start=back_image(b, vm, i)),
                                ctx.counters, on_store=lambda asid, va, address, cause, i=i:
                                self._guest_store(i, asid, va, cause), name=vm.name)
                        for i, (vm, b) in enumerate(zip(ctx.vms, self.backings))]
        self.hw = HardwareView(self.fmt, RootTable(len(ctx.vms)))  # hardware walks the shadows
        # per VM: (leaf size, gPA base) -> shadow leaves filled from it: (root, va base, hPA base)
        self.rmaps: list[dict[tuple[int, int], set[tuple[int, int, int]]]] = [{} for _ in ctx.vms]
        self.leaf_sizes = self.fmt.leaf_sizes

    def _root(self, vm: int, asid: int) -> int:
        root = self.hw.guest_roots.get(vm, asid)
        if root < 0:
            root = self._table(root, self.fmt.table_alloc(self.fmt.levels))
            self.hw.guest_roots.set(vm, asid, root)
            self.tables[root] = self.tables.pop(-1)
        return root

    def _table(self, root: int, size: int) -> int:
        """A shadow table for ``root``'s tree (-1: a root being made), counted in
        ``shadow.table_bytes`` (and its peak) until its root is dropped."""
        table = self.host.alloc(size)
        self.tables.setdefault(root, []).append((table, size))
        self.table_bytes += size
        values = self.counters.values
        values["shadow.table_bytes"] = self.table_bytes
        values["shadow.table_bytes.peak"] = max(values["shadow.table_bytes.peak"], self.table_bytes)
        return table

    def _drop_root(self, vm: int, asid: int) -> bool:
        """Free the shadow tables of ``asid`` (the next access builds them again through
        hidden faults); False when it has none."""
        root = self.hw.guest_roots.get(vm, asid)
        self.recent[vm].pop(asid, None)
        if root < 0:
            return False
        for table, size in self.tables.pop(root, ()):
            self.host.free(table, size)
            self.table_bytes -= size
            self.counters.add("shadow.pages_zapped")
        self.counters.values["shadow.table_bytes"] = self.table_bytes
        self.hw.guest_roots.set(vm, asid, -1)
        return True

    def _use(self, vm: int, asid: int) -> list[Invalidation]:
        """``asid`` runs: it becomes the most recently used address space; beyond
        ``cached_roots`` the least recently used one's shadow tables are dropped."""
        recent = self.recent[vm]
        recent[asid] = None
        recent.move_to_end(asid)
        dropped = []
        while self.cached_roots and len(recent) > self.cached_roots:
            victim = next(iter(recent))
            if self._drop_root(vm, victim):
                self.counters.add("shadow.roots_evicted")
                dropped.append(Invalidation("asid", vm, victim))
        return dropped

    def _kernel_store(self, vm: int, gpa: int) -> None:
        """The guest kernel stores to its memory: a merged page (mapped read-only) is
        copied first, after the exit its write fault takes."""
        if self.dedup is not None and self.dedup.store(vm, gpa):
            self.counters.vm_exit("page_fault")

    def _pending(self) -> list[Invalidation]:
        return self.dedup.take_pending() if self.dedup is not None else []

    def handle_fault(self, vm: int, asid: int, va: int, op: int, fault: Fault) -> list[Invalidation]:
        invalidations = self._use(vm, asid) if fault.kind == NO_ROOT else []
        root = self._root(vm, asid)
        if fault.kind != NO_ROOT:
            self.counters.vm_exit("page_fault")
            invalidations = self._handle_fault(vm, asid, va, op == WRITE, root)
        return invalidations + self._pending()

    def _handle_fault(self, vm: int, asid: int, va: int, write: bool, root: int) -> list[Invalidation]:
        fmt, kernel = self.fmt, self.kernels[vm]
        guest = kernel.lookup(asid, va)
        if not guest.present or (write and not fmt.is_writable(guest.entry)):
            self.counters.add("faults.guest")  # injected: the guest kernel handles it (its stores trap)
            kernel.fault(asid, va, write)
            return []
        # hidden fault: the guest maps it; set the guest's A/D flags and fill the shadow
        guest = walk(fmt, kernel.root(asid), va, kernel.phys, accessed=True, dirty=write)
        gsize = fmt.page_size(guest.level)
        gpa = fmt.frame(guest.entry, guest.level) | (va & (gsize - 1))
        backing = self.backings[vm]
        hpa, host_size, host_writable = backing.mapping(gpa)
        invalidations: list[Invalidation] = []
        if write and not host_writable:  # a write to a merged page: copy-on-write
            self.counters.add("faults.host")
            invalidations = self.dedup.cow_break(vm, gpa)
            hpa, host_size, host_writable = backing.mapping(gpa)
        size = min(gsize, host_size)
        writable = (fmt.is_writable(guest.entry) and host_writable
                    and bool(guest.entry & fmt.dirty_flag or not fmt.dirty_flag))
        self._zap(root, va, size)
        va_base, hpa_base = va & ~(size - 1), hpa & ~(size - 1)
        map_page(fmt, root, va_base, hpa_base, size, self.host, lambda n: self._table(root, n), writable)
        self.rmaps[vm].setdefault((size, gpa & ~(size - 1)), set()).add((root, va_base, hpa_base))
        self.counters.add("shadow.fills")
        if size < gsize:
            self.counters.add("tlb.splintered_fills")
        return invalidations

    def _remapped(self, vm: int, gpa: int) -> None:
        """Dedup remapped the 4K page at ``gpa``: update the shadow leaves filled from it
        in place, as the backing updates second-level tables: a large leaf is split
        (down to 4K), then the 4K leaf points at the new frame, read-only if the page is."""
        rmap = self.rmaps[vm]
        for size in reversed(self.leaf_sizes[1:]):
            for root, va_base, hpa_base in rmap.pop((size, gpa & ~(size - 1)), ()):
                step = self._leaf(root, va_base, size, hpa_base)
                if step is None:
                    continue
                piece = self.fmt.page_size(step.level - 1)
                split_leaf(self.fmt, self.host, step, self._table(root, TABLE_SIZE))
                gpa_base = gpa & ~(size - 1)
                for i in range(size // piece):
                    rmap.setdefault((piece, gpa_base + i * piece), set()).add(
                        (root, va_base + i * piece, hpa_base + i * piece))
        hpa = self.backings[vm].lookup(gpa) & ~(SMALL - 1)
        writable = (gpa >> PAGE_SHIFT) not in self.backings[vm].read_only
        updated = set()
        for root, va_base, hpa_base in rmap.pop((SMALL, gpa & ~(SMALL - 1)), ()):
            step = self._leaf(root, va_base, SMALL, hpa_base)
            if step is not None:  # still filled from this page (not zapped or refilled since)
                self.fmt.store(self.host, step.entry_address, self.fmt.leaf_entry(
                    hpa, 1, writable and self.fmt.is_writable(step.entry)))
                updated.add((root, va_base, hpa))
        if updated:
            rmap[(SMALL, gpa & ~(SMALL - 1))] = updated

    def _leaf(self, root: int, va: int, size: int, hpa: int):
        """The shadow leaf at ``va`` if it still maps ``hpa`` with a ``size`` page (and
        ``root`` was not dropped since)."""
        if root not in self.tables:
            return None
        step = walk(self.fmt, root, va, self.host)
        if step.present and self.fmt.page_size(step.level) == size and self.fmt.frame(step.entry, step.level) == hpa:
            return step
        return None

    def _zap(self, root: int, va: int, size: int) -> None:
        """Drop the shadow leaf entries that map ``va``'s page of ``size`` bytes."""
        addr = va & ~(size - 1)
        end = addr + size
        while addr < end:
            step = walk(self.fmt, root, addr, self.host)
            if step.present:
                self.fmt.store(self.host, step.entry_address, 0)
            span = self.fmt.page_size(step.level)
            addr = (addr & ~(span - 1)) + span

    def _guest_store(self, vm: int, asid: int, va: int, cause: str) -> None:
        """A guest page-table store traps (the tables are write-protected) and is
        emulated; a store on ``va``'s path zaps ``va``'s shadow leaf. (An exec's or exit's
        stores need no zap: the whole shadow root goes with them.)"""
        self.counters.vm_exit("pt_write")
        root = self.hw.guest_roots.get(vm, asid)
        if root >= 0 and cause not in ("exec", "exit"):
            self._zap(root, va, self.kernels[vm].page_size)

    def control(self, vm: int, asid: int, op: int, arg: int) -> list[Invalidation]:
        invalidations = guest_control(self.kernels[vm], vm, asid, op, arg)[1]
        if op in (CONTEXT_SWITCH, FLUSH, FORK) or op in DROPS_ROOT:  # a CR3 load (a fork, exec, exit's TLB flush)
            self.counters.vm_exit("cr3_write")
        elif op in (UNMAP, PROTECT, INVLPG):
            self.counters.vm_exit("invlpg")
            root = self.hw.guest_roots.get(vm, asid)
            if root >= 0:
                self._zap(root, arg, self.kernels[vm].page_size)
        if op == CONTEXT_SWITCH:
            invalidations += self._use(vm, asid)
        if op in DROPS_ROOT:  # the process's shadow tables go with its address space
            self._drop_root(vm, asid)
        return invalidations + self._pending()


@attrs.frozen
class ShadowOptions:
    cached_roots: int = option(
        0, "address spaces per VM whose shadow tables are kept (0: all); a switch to one more drops the least "
           "recently run one's, which its next run rebuilds through hidden faults. Assumption, no single source: "
           "KVM switches fast among the current root and KVM_MMU_NUM_PREV_ROOTS = 3 previous ones but keeps "
           "other roots' shadow pages until its page pool is short", min=0)


@hookimpl
def slatframe_slat_schemes():
    return [SlatSchemeRecord(name="shadow", summary="shadow page tables: 1D walks, VM exits on guest PT writes and CR3 loads",
                             factory=lambda options, ctx: ShadowTranslator(ctx, options), options=ShadowOptions,
                             guest_format="x86-64")]
