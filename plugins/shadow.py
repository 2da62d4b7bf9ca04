"""Shadow paging: the hypervisor keeps gVA -> hPA tables; hardware walks them in 1D.

The guest kernel keeps its own tables, which the hypervisor write-protects. The shadow
tables (guest format, in host memory, one root per guest asid) are filled lazily, the
way KVM's shadow MMU does:

- a walk that meets a non-present shadow entry, or a write that meets a read-only one,
  exits (``page_fault``); the hypervisor walks the guest tables in software. If the guest
  has no mapping (or no write permission) the fault is injected into the guest
  (``faults.guest``), whose kernel fixes its tables (its stores: below). Otherwise the
  hypervisor fills the shadow entry (the "hidden" fault), setting the guest's accessed and dirty flags as hardware would. A
  shadow leaf is writable only once the guest leaf is dirty, so the first write to a
  page exits once more to set the guest's dirty flag.
- a context switch (MOV to CR3) exits (``cr3_write``); shadow roots are kept per asid.
- an unmap or protect writes a guest entry and is followed by the guest's INVLPG
  (``invlpg``), which drops the page's shadow leaf; a full flush reloads CR3.
- process lifecycle (:class:`slatframe.guest.GuestOs`): the stores a fork, exec or exit
  makes to write-protected guest tables are handled as any other (below; under
  ``"emulate"`` the write-protect of each shadowed private parent leaf is a ``pt_write``
  that zaps its shadow), and the TLB flush that follows each is a CR3 load
  (``cr3_write``); exec and exit drop the process's shadow root.

Deduplication: a shadow leaf maps a merged page read-only, so a write to it exits
(``page_fault``) and the hypervisor breaks the copy-on-write before filling a writable
leaf. The translator keeps a reverse map from gPA pages to the shadow leaves filled from
them (KVM's rmap); when dedup remaps a page it updates those leaves in place, as the
nested schemes' backing updates its second-level entries: a large shadow leaf is split,
then the 4K leaf points at the new frame, read-only when merged. Shadow leaves filled
inside a split host large page are one size down (as the split radix tables are).

Shadow pages (:mod:`slatframe_plugins.shadow_pages`) each shadow one guest table, which is
write-protected while it has one: a guest store to it traps, a store to a table without
one does not (the child's new tables during a fork, a table no walk has needed yet). The
options model what real hypervisors do beyond that, each with its source:

- ``writes = "emulate"`` (Xen's shadow 2): every store to a write-protected guest table
  exits (``pt_write``) and is emulated (``shadow.emulated_writes``), zapping the shadow
  entry it shadows. ``"unsync"`` (KVM's unsync shadow pages, Xen's out-of-sync pages):
  the first store to a shadowed leaf table exits once (``page_fault``) and leaves it out
  of sync and writable (``shadow.unsyncs``); later stores to it do not exit; an INVLPG
  brings the one entry back in sync and a CR3 load every out-of-sync table of the loaded
  address space (``shadow.resyncs``, write-protected again). ``unsync_limit`` caps the
  out-of-sync tables per VM (Xen: 3 per vCPU); going beyond resyncs the oldest.
- ``pool_pages`` / ``pool_permille``: a bounded pool of shadow pages per VM; a fault that
  finds fewer than 5 free first zaps the oldest pages (and their subtrees) until
  ``pool_refill`` are free (KVM's make_mmu_pages_available, KVM_MIN_FREE_MMU_PAGES = 5,
  KVM_REFILL_PAGES = 25). The tables a dedup remap splits off are taken without that
  check, so they may hold the pool past its bound until the next fault.
- ``cached_roots``: only the N most recently run address spaces keep their shadow
  tables (``shadow.roots_evicted``).
- ``enlightened``: the guest switches address spaces and flushes by hypercall (Hyper-V
  TLFS HvSwitchVirtualAddressSpace, HvFlushVirtualAddressSpace/List): those exits are
  ``hypercall`` instead of ``cr3_write`` and ``invlpg``.

Shadow tables are freed with their address space (exec, exit). ``shadow.table_bytes`` is
the host memory they hold now, ``shadow.table_bytes.peak`` its maximum,
``shadow.pages_built`` and ``shadow.pages_zapped`` the pages made and freed.
Simplifications: KVM's write-flooding heuristic (zap a shadow page written often
without being used) is not modelled, a zapped page's subtree is freed rather than kept
for reuse, and hypervisor work is counted as exits, not as memory references.
"""
from __future__ import annotations

from collections import OrderedDict

import attrs

from slatframe import hookimpl
from slatframe.backing import DictBacking, back_image
from slatframe.guest import DROPS_ROOT, GuestOs, VmPhysical, guest_control
from slatframe.machine import Invalidation, MachineContext
from slatframe.translation import HYPERVISOR
from slatframe.paging import PAGE_SHIFT, WalkStep, split_leaf, walk
from slatframe.options import option
from slatframe.records import SlatSchemeRecord
from slatframe.trace import CONTEXT_SWITCH, EXEC, EXIT, FLUSH, FORK, INVLPG, PROTECT, UNMAP, WRITE
from slatframe.walker import NO_ROOT, Fault, HardwareView, RootTable

from .shadow_pages import DIRECT, TABLE, ShadowPages

TABLE_SIZE = SMALL = 1 << PAGE_SHIFT
# arch/x86/include/asm/kvm_host.h (Linux 6.16)
KVM_MIN_ALLOC_MMU_PAGES = 64  #: the smallest default pool
KVM_MIN_FREE_MMU_PAGES = 5  #: a fault with fewer pages free first zaps the oldest
POOL_MIN = 2 * KVM_MIN_FREE_MMU_PAGES  #: the smallest bounded pool here


CR3_LOADS = (CONTEXT_SWITCH, FLUSH, FORK, EXEC, EXIT)  #: ops that load CR3 (a fork's, exec's, exit's flush)
INVALIDATES_PAGE = (UNMAP, PROTECT, INVLPG)  #: ops the guest follows with an INVLPG


class ShadowTranslator:
    """Per VM: a guest kernel, the hypervisor's gPA backing, and shadow roots per asid."""

    process_events = True  #: handles fork, exec, exit and map_shared (slatframe.guest.GuestOs)

    def __init__(self, ctx: MachineContext, options: "ShadowOptions | None" = None) -> None:
        options = options if options is not None else ShadowOptions()
        self.options = options
        self.flush_hypercall = options.enlightened  #: shootdowns by hypercall (slatframe.coherence)
        self.fmt = ctx.guest_format
        self.host = ctx.host
        self.counters = ctx.counters
        self.pages = ShadowPages(self.fmt, ctx.host, ctx.counters, len(ctx.vms))
        self.pool = [pool_limit(options, vm.memory) for vm in ctx.vms]
        self.recent: list[OrderedDict[int, None]] = [OrderedDict() for _ in ctx.vms]  # least recently run first
        self.owner: dict[int, int] = {}  # shadow root -> its asid
        # per VM: out-of-sync guest leaf tables (oldest first) -> {entry offset: (asid, va)} stored since
        self.unsync: list[OrderedDict[int, dict[int, tuple[int, int]]]] = [OrderedDict() for _ in ctx.vms]
        self.stale: list[Invalidation] = []  # TLB and walk-cache entries zaps and resyncs made stale
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
                                self._guest_store(i, asid, va, address), name=vm.name)
                        for i, (vm, b) in enumerate(zip(ctx.vms, self.backings))]
        self.hw = HardwareView(self.fmt, RootTable(len(ctx.vms)))  # hardware walks the shadows
        # per VM: (leaf size, gPA base) -> shadow leaves filled from it: (root, va base, hPA base)
        self.rmaps: list[dict[tuple[int, int], set[tuple[int, int, int]]]] = [{} for _ in ctx.vms]
        self.leaf_sizes = self.fmt.leaf_sizes

    # -- shadow roots ------------------------------------------------------------------
    def _root(self, vm: int, asid: int) -> int:
        root = self.hw.guest_roots.get(vm, asid)
        if root < 0:
            fmt = self.fmt
            root = self.pages.new(vm, fmt.levels, -1, -1, self.kernels[vm].root(asid), fmt.table_alloc(fmt.levels))
            self.hw.guest_roots.set(vm, asid, root)
            self.owner[root] = asid
        return root

    def _drop_root(self, vm: int, asid: int) -> bool:
        """Free the shadow tables of ``asid`` (the next access builds them again through
        hidden faults); False when it has none."""
        root = self.hw.guest_roots.get(vm, asid)
        self.recent[vm].pop(asid, None)
        if root < 0:
            return False
        self.pages.drop_tree(root)
        del self.owner[root]
        self.hw.guest_roots.set(vm, asid, -1)
        self._forget_unprotected(vm)
        return True

    def _use(self, vm: int, asid: int) -> list[Invalidation]:
        """``asid`` runs: it becomes the most recently used address space; beyond
        ``cached_roots`` the least recently used one's shadow tables are dropped."""
        recent = self.recent[vm]
        recent[asid] = None
        recent.move_to_end(asid)
        dropped = []
        while self.options.cached_roots and len(recent) > self.options.cached_roots:
            victim = next(iter(recent))
            if self._drop_root(vm, victim):
                self.counters.add("shadow.roots_evicted")
                dropped.append(Invalidation("asid", vm, victim, by=HYPERVISOR, reason="root_dropped"))
        return dropped

    def _make_room(self, vm: int, asid: int) -> list[Invalidation]:
        """Before a fault, with a bounded pool: if fewer than ``KVM_MIN_FREE_MMU_PAGES`` (at
        least a path's worth) are free, zap the oldest shadow pages (the running root
        excepted) until ``pool_refill`` are (KVM's make_mmu_pages_available)."""
        limit = self.pool[vm]
        low = max(KVM_MIN_FREE_MMU_PAGES, self.fmt.levels)
        if not limit or limit - self.pages.count(vm) >= low:
            return []
        self.counters.add("shadow.pool_reclaims")
        target = limit - max(self.options.pool_refill, low)
        running = self.hw.guest_roots.get(vm, asid)
        owners: set[int] = set()
        for table in list(self.pages.age[vm]):
            if self.pages.count(vm) <= target:
                break
            page = self.pages.pages.get(table)
            if page is None or table == running:  # freed with a subtree already, or in use
                continue
            owners.add(self.owner[page.root])
            if page.parent < 0:
                self._drop_root(vm, self.owner[page.root])
                self.counters.add("shadow.roots_evicted")
            else:
                self.pages.zap(table)
        self._forget_unprotected(vm)
        return [Invalidation("asid", vm, owner, by=HYPERVISOR, reason="pool_reclaim") for owner in sorted(owners)]

    # -- faults ------------------------------------------------------------------------
    def _kernel_store(self, vm: int, gpa: int) -> None:
        """The guest kernel stores to its memory: a merged page (mapped read-only) is
        copied first, after the exit its write fault takes."""
        if self.dedup is not None and self.dedup.store(vm, gpa):
            self.counters.vm_exit("page_fault")

    def _pending(self) -> list[Invalidation]:
        stale, self.stale = self.stale, []
        return stale + (self.dedup.take_pending() if self.dedup is not None else [])

    def handle_fault(self, vm: int, asid: int, va: int, op: int, fault: Fault) -> list[Invalidation]:
        invalidations = self._use(vm, asid) if fault.kind == NO_ROOT else []
        invalidations += self._make_room(vm, asid)
        root = self._root(vm, asid)
        if fault.kind != NO_ROOT:
            self.counters.vm_exit("page_fault")
            invalidations += self._handle_fault(vm, asid, va, op == WRITE, root)
        return invalidations + self._pending()

    def _handle_fault(self, vm: int, asid: int, va: int, write: bool, root: int) -> list[Invalidation]:
        fmt, kernel = self.fmt, self.kernels[vm]
        guest = kernel.lookup(asid, va)
        if not guest.present or (write and not fmt.is_writable(guest.entry)):
            self.counters.add("faults.guest")  # injected: the guest kernel handles it (its stores trap)
            kernel.fault(asid, va, write)
            return kernel.take_flushes(vm)
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
        va_base, hpa_base = va & ~(size - 1), hpa & ~(size - 1)
        old = walk(fmt, root, va_base, self.host)
        if self._zap(root, va, size) and not (  # a permission upgrade of the same frame needs no flush
                old.level == fmt.level_of_size(size) and fmt.frame(old.entry, old.level) == hpa_base
                and (writable or not fmt.is_writable(old.entry))):
            self._zapped_leaf(vm, asid, va)
        tables = self._guest_tables(vm, asid, va)
        self._fill(vm, root, va_base, hpa_base, size, writable, tables)
        self._synced(vm, tables, va)
        self.rmaps[vm].setdefault((size, gpa & ~(size - 1)), set()).add((root, va_base, hpa_base))
        self.counters.add("shadow.fills")
        if size < gsize:
            self.counters.add("tlb.splintered_fills")
        return invalidations

    def _guest_tables(self, vm: int, asid: int, va: int) -> dict[int, int]:
        """The guest tables on ``va``'s path by level, down to its leaf or its first
        non-present entry (a software walk of the hypervisor's, no hardware reference)."""
        fmt, kernel = self.fmt, self.kernels[vm]
        table, tables = kernel.root(asid), {}
        for level in range(fmt.levels, 0, -1):
            tables[level] = table
            entry = fmt.load(kernel.phys, fmt.entry_address(table, va, level))
            if not fmt.is_present(entry) or fmt.is_leaf(entry, level):
                break
            table = fmt.frame(entry, level)
        return tables

    def _fill(self, vm: int, root: int, va: int, hpa: int, size: int, writable: bool,
              guest_tables: dict[int, int]) -> None:
        """Map ``va`` to ``hpa`` with a ``size`` shadow leaf, building the missing shadow
        pages: each shadows the guest table of its level on the path, or none below a
        guest large page."""
        fmt, host = self.fmt, self.host
        leaf_level = fmt.level_of_size(size)
        table = root
        for level in range(fmt.levels, leaf_level, -1):
            addr = fmt.entry_address(table, va, level)
            entry = fmt.load(host, addr)
            if fmt.is_present(entry) and not fmt.is_leaf(entry, level):
                table = fmt.frame(entry, level)
                continue
            child = self.pages.new(vm, level - 1, table, addr, guest_tables.get(level - 1, DIRECT),
                                   fmt.table_alloc(level - 1))
            fmt.store(host, addr, fmt.table_entry(child))
            table = child
        addr = fmt.entry_address(table, va, leaf_level)
        self._zap_entry(table, addr)  # a table where the leaf goes (a host page grew back)
        fmt.store(host, addr, fmt.leaf_entry(hpa, leaf_level, writable))

    def _zap_entry(self, table: int, entry: int) -> bool:
        """Clear a shadow entry (see :meth:`ShadowPages.zap_entry`); a table freed with it
        makes the walk caches of its address space stale, so they are flushed, as KVM
        flushes after zapping a non-leaf entry. False when it was not present."""
        cleared = self.pages.zap_entry(table, entry)
        if cleared == TABLE:
            page = self.pages.pages[table]
            self.stale.append(Invalidation("asid", page.vm, self.owner[page.root], by=HYPERVISOR, reason="table_zapped"))
        return bool(cleared)

    def _remapped(self, vm: int, gpa: int) -> None:
        """Dedup remapped the 4K page at ``gpa``: update the shadow leaves filled from it
        in place, as the backing updates second-level tables: a large leaf is split
        (down to 4K), then the 4K leaf points at the new frame, read-only if the page is."""
        rmap = self.rmaps[vm]
        for size in reversed(self.leaf_sizes[1:]):
            for root, va_base, hpa_base in rmap.pop((size, gpa & ~(size - 1)), ()):
                found = self._leaf(root, va_base, size, hpa_base)
                if found is None:
                    continue
                table, step = found
                piece = self.fmt.page_size(step.level - 1)
                split_leaf(self.fmt, self.host, step,
                           self.pages.new(vm, step.level - 1, table, step.entry_address, DIRECT, TABLE_SIZE))
                gpa_base = gpa & ~(size - 1)
                for i in range(size // piece):
                    rmap.setdefault((piece, gpa_base + i * piece), set()).add(
                        (root, va_base + i * piece, hpa_base + i * piece))
        hpa = self.backings[vm].lookup(gpa) & ~(SMALL - 1)
        writable = (gpa >> PAGE_SHIFT) not in self.backings[vm].read_only
        updated = set()
        for root, va_base, hpa_base in rmap.pop((SMALL, gpa & ~(SMALL - 1)), ()):
            found = self._leaf(root, va_base, SMALL, hpa_base)
            if found is not None:  # still filled from this page (not zapped or refilled since)
                step = found[1]
                self.fmt.store(self.host, step.entry_address, self.fmt.leaf_entry(
                    hpa, 1, writable and self.fmt.is_writable(step.entry)))
                updated.add((root, va_base, hpa))
        if updated:
            rmap[(SMALL, gpa & ~(SMALL - 1))] = updated

    def _leaf(self, root: int, va: int, size: int, hpa: int) -> tuple[int, WalkStep] | None:
        """The shadow page and leaf at ``va`` if it still maps ``hpa`` with a ``size``
        page (and ``root`` was not dropped since)."""
        if root not in self.owner:
            return None
        fmt, table = self.fmt, root
        for level in range(fmt.levels, 0, -1):
            addr = fmt.entry_address(table, va, level)
            entry = fmt.load(self.host, addr)
            if not fmt.is_present(entry):
                return None
            if fmt.is_leaf(entry, level):
                if fmt.page_size(level) == size and fmt.frame(entry, level) == hpa:
                    return table, WalkStep(level, addr, entry, True, 0)
                return None
            table = fmt.frame(entry, level)
        return None

    def _zap(self, root: int, va: int, size: int) -> bool:
        """Drop the shadow leaf entries that map ``va``'s page of ``size`` bytes; True if
        one was present."""
        addr = va & ~(size - 1)
        end = addr + size
        zapped = False
        while addr < end:
            step = walk(self.fmt, root, addr, self.host)
            if step.present:
                self.fmt.store(self.host, step.entry_address, 0)
                zapped = True
            span = self.fmt.page_size(step.level)
            addr = (addr & ~(span - 1)) + span
        return zapped

    def _zapped_leaf(self, vm: int, asid: int, va: int) -> None:
        """A present shadow leaf of ``va`` was dropped or overwritten with another frame or
        fewer rights: every vCPU of the VM may cache it, so KVM flushes them all
        (kvm_flush_remote_tlbs_gfn; a permission upgrade of the same frame needs none, as
        in KVM's mmu_spte_update). The vCPU at
        hand needs nothing more (its guest's INVLPG, or the walk in progress, follows):
        ``local = False``, so on one vCPU this changes nothing."""
        self.stale.append(Invalidation("page", vm, asid, va, HYPERVISOR, local=False, reason="leaf_zapped"))

    # -- guest page-table stores and their resynchronisation ---------------------------
    def _guest_store(self, vm: int, asid: int, va: int, address: int) -> None:
        """A guest page-table store. A table without shadow pages is not write-protected:
        nothing happens. A leaf table under ``writes = "unsync"`` goes out of sync at its
        first store (one exit) and takes later ones silently. Otherwise the store traps
        and is emulated, zapping the shadow entry it shadows."""
        shadows = self.pages.shadows_of(vm, address)
        if not shadows:
            return
        first = self.pages.pages[next(iter(shadows))]
        table_gpa, offset = first.shadows, address - first.shadows
        if self.options.writes == "unsync" and first.level == 1:
            written = self.unsync[vm].get(table_gpa)
            if written is None:
                self.counters.vm_exit("page_fault")
                self.counters.add("shadow.unsyncs")
                if self.options.unsync_limit and len(self.unsync[vm]) >= self.options.unsync_limit:
                    self.stale += self._resync(vm, next(iter(self.unsync[vm])))
                written = self.unsync[vm][table_gpa] = {}
            written[offset] = (asid, va)
            return
        self.counters.vm_exit("pt_write")
        self.counters.add("shadow.emulated_writes")
        zapped = False
        for table in list(shadows):
            if table in self.pages.pages:  # not freed with an earlier one's subtree
                zapped |= self._zap_entry(table, table + offset)
        if zapped:
            self._zapped_leaf(vm, asid, va)
        self._forget_unprotected(vm)

    def _synced(self, vm: int, guest_tables: dict[int, int], va: int) -> None:
        """The shadow entry of ``va``'s guest leaf entry was just rebuilt or dropped: if its
        table is out of sync, that entry no longer is."""
        level = min(guest_tables)
        table = guest_tables[level]
        written = self.unsync[vm].get(table)
        if written:
            written.pop(self.fmt.entry_address(table, va, level) - table, None)

    def _resync(self, vm: int, table_gpa: int) -> list[Invalidation]:
        """Bring the out-of-sync guest table at ``table_gpa`` back in sync: drop the shadow
        entries of the guest entries stored since (the next access refills them) and
        write-protect it again. Returns the TLB entries that became stale."""
        written = self.unsync[vm].pop(table_gpa)
        self.counters.add("shadow.resyncs")
        stale = []
        for table in list(self.pages.shadows_of(vm, table_gpa)):
            for offset, (asid, va) in written.items():
                if table in self.pages.pages and self._zap_entry(table, table + offset):
                    stale.append(Invalidation("page", vm, asid, va, HYPERVISOR, reason="resync"))
        return stale

    def _sync_root(self, vm: int, asid: int) -> list[Invalidation]:
        """A CR3 load of ``asid``: resync every out-of-sync table its shadow tree holds
        (KVM's kvm_mmu_sync_roots)."""
        root = self.hw.guest_roots.get(vm, asid)
        if root < 0 or not self.unsync[vm]:
            return []
        pages = self.pages.pages
        mine = [gpa for gpa in self.unsync[vm]
                if any(pages[t].root == root for t in self.pages.shadows_of(vm, gpa))]
        return [inv for gpa in mine for inv in self._resync(vm, gpa)]

    def _forget_unprotected(self, vm: int) -> None:
        """Out-of-sync tables whose shadow pages are all gone need no resync."""
        for gpa in [gpa for gpa in self.unsync[vm] if not self.pages.shadows_of(vm, gpa)]:
            del self.unsync[vm][gpa]

    def control(self, vm: int, asid: int, op: int, arg: int) -> list[Invalidation]:
        invalidations = guest_control(self.kernels[vm], vm, asid, op, arg)[1]
        hypercall = self.options.enlightened
        if op in CR3_LOADS:
            self.counters.vm_exit("hypercall" if hypercall else "cr3_write")
        elif op in INVALIDATES_PAGE:
            self.counters.vm_exit("hypercall" if hypercall else "invlpg")
            root = self.hw.guest_roots.get(vm, asid)
            if root >= 0:
                if self._zap(root, arg, self.kernels[vm].page_size):
                    self._zapped_leaf(vm, asid, arg)
                self._synced(vm, self._guest_tables(vm, asid, arg), arg)
        if op == CONTEXT_SWITCH:
            invalidations += self._use(vm, asid)
        if op in DROPS_ROOT:  # the process's shadow tables go with its address space
            self._drop_root(vm, asid)
        elif op in CR3_LOADS:
            invalidations += self._sync_root(vm, asid)
        return invalidations + self._pending()


def pool_limit(options: "ShadowOptions", memory: int) -> int:
    """Shadow pages a VM of ``memory`` bytes may hold (0: no bound)."""
    if options.pool_permille:
        return max(KVM_MIN_ALLOC_MMU_PAGES, memory // SMALL * options.pool_permille // 1000)
    return options.pool_pages


def _pool_pages_check(value: int) -> None:
    if value and value < POOL_MIN:
        raise ValueError(f"0 (no bound) or at least {POOL_MIN} (a path of shadow tables per fault plus room)")


@attrs.frozen
class ShadowOptions:
    writes: str = option(
        "emulate", "how stores to write-protected guest tables are handled: emulate (every one exits, Xen's shadow "
                   "2) or unsync (a leaf table goes out of sync at its first store and is resynced at INVLPG and "
                   "CR3 loads: KVM's unsync pages, Xen's out-of-sync pages)", choices=("emulate", "unsync"))
    unsync_limit: int = option(
        0, "out-of-sync leaf tables per VM (0: no limit, as KVM); one more resyncs the oldest. Xen keeps 3 per vCPU "
           "(SHADOW_OOS_PAGES)", min=0)
    cached_roots: int = option(
        0, "address spaces per VM whose shadow tables are kept (0: all); a switch to one more drops the least "
           "recently run one's, which its next run rebuilds through hidden faults. Assumption, no single source: "
           "KVM switches fast among the current root and KVM_MMU_NUM_PREV_ROOTS = 3 previous ones but keeps "
           "other roots' shadow pages until its page pool is short", min=0)
    pool_pages: int = option(
        0, "shadow pages (tables) per VM (0: no bound, else at least 10); a fault that finds fewer than 5 free "
           "(KVM_MIN_FREE_MMU_PAGES) first zaps the oldest pages until pool_refill are", min=0,
        check=_pool_pages_check)
    pool_permille: int = option(
        0, "the pool as per mille of the VM's 4 KiB pages, at least 64 (KVM's default is 20: memslot pages / "
           "KVM_MEMSLOT_PAGES_TO_MMU_PAGES_RATIO = 50, at least KVM_MIN_ALLOC_MMU_PAGES = 64; Linux 6.16); 0: "
           "pool_pages decides", min=0, max=1000)
    pool_refill: int = option(
        25, "free pages a full pool makes at once, zapping the oldest (KVM_REFILL_PAGES = 25)", min=1)
    enlightened: bool = option(
        False, "the guest switches address spaces and flushes its TLB by hypercall (Hyper-V TLFS "
               "HvSwitchVirtualAddressSpace, HvFlushVirtualAddressSpace/List): those exits count as hypercall")

    def __attrs_post_init__(self) -> None:
        if self.pool_pages and self.pool_permille:
            raise ValueError("set pool_pages or pool_permille, not both")


@hookimpl
def slatframe_slat_schemes():
    return [SlatSchemeRecord(name="shadow", summary="shadow page tables: 1D walks, VM exits on guest PT writes and CR3 loads",
                             factory=lambda options, ctx: ShadowTranslator(ctx, options), options=ShadowOptions,
                             guest_format="x86-64",
                             exit_reasons=("page_fault", "pt_write", "cr3_write", "invlpg", "hypercall"))]
