"""The guest kernel's memory management, common to every SLAT scheme.

A :class:`GuestOs` keeps one radix table per address space (asid) in its physical
memory and maps pages on first touch (demand paging), on map events, and removes them
on unmap. Under ``native`` its physical memory is the host's; under a hypervisor it is
a VM's guest-physical space (:class:`VmPhysical`), whose words live in host frames.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import attrs

from .errors import SimulationError
from .paging import PAGE_SHIFT, PageTableFormat, WalkStep, map_page, walk
from .trace import EXEC, EXIT, FLUSH, FORK, INVLPG, MAP, MAP_SHARED, PROTECT, UNMAP
from .translation import CPU, GUEST, Invalidation
from .units import format_size

TABLE_SIZE = 1 << PAGE_SHIFT  #: a 4K page (a table below the root)


class Physical(Protocol):
    """What a kernel needs of its physical memory."""

    def alloc(self, size: int) -> int: ...
    def read(self, addr: int) -> int: ...
    def write(self, addr: int, value: int) -> None: ...


class VmPhysical:
    """A VM's guest-physical address space: a bump allocator over ``[start, size)`` whose
    words are stored at the host address ``backing(gpa)`` returns (the hypervisor's mapping,
    backing the page on first touch). ``start`` is the end of the VM's image: the guest
    kernel takes its page tables and the pages it maps from above the image, so the image's
    pages keep their contents until something writes them."""

    def __init__(self, size: int, name: str, backing: Callable[[int], int],
                 host_read: Callable[[int], int], host_write: Callable[[int, int], None],
                 on_write: Callable[[int], None] | None = None, start: int = 0) -> None:
        self.size = size
        self.name = name
        self.next_free = start
        self._backing = backing
        self._host_read = host_read
        self._host_write = host_write
        self._on_write = on_write  # the hypervisor's view of a guest store (content, COW)

    def alloc(self, size: int) -> int:
        base = (self.next_free + size - 1) & ~(size - 1)
        if base + size > self.size:
            raise SimulationError(
                f"guest memory of VM {self.name} is exhausted at {format_size(self.size)}; "
                "raise vms[].memory or lower the footprint.")
        self.next_free = base + size
        return base

    def backed_by(self, backing: Any, host: Any) -> bool:
        """Whether this memory is ``backing``'s, its words in ``host``'s memory."""
        return self._backing == backing.backing and self._host_read == host.read and self._host_write == host.write

    def read(self, addr: int) -> int:
        return self._host_read(self._backing(addr))

    def write(self, addr: int, value: int) -> None:
        if self._on_write is not None:
            self._on_write(addr)
        self._host_write(self._backing(addr), value)


#: Why the guest kernel stored a page-table entry (``guest.pt_writes.<cause>``).
CAUSES = ("fault", "map", "unmap", "protect", "fork", "exec", "exit")


class GuestOs:
    """Page tables of one (guest) kernel: a root per asid (process), demand paging of
    ``page_size`` pages, and the process lifecycle of Linux's mm (fork, exec, exit).

    - fork (``dup_mmap``/``copy_page_range``): the child gets tables of its own with a
      copy of every private parent leaf, which becomes copy-on-write, write-protected in
      both (a store to the parent's leaf, one to the child's). Shared mappings are
      inherited but their leaves are not copied (``vma_needs_copy``: "don't copy ptes
      where a page fault will fill them correctly"): the child faults them in. The
      parent's TLB entries are then flushed (``flush_tlb_mm``).
    - a write to a copy-on-write page (``do_wp_page``) is a guest page fault
      (``faults.guest.cow``): the last mapping of a page reuses it (made writable again),
      any other copies it to a new page (``guest.cow_copies``, ``guest.cow_copy_bytes``);
      one leaf store either way.
    - exec and exit (``exit_mmap``): every leaf is cleared, then every table below the
      root is freed, clearing the entry that pointed at it; exec then starts an empty
      address space. Pages whose last mapping goes, and the tables, are freed and reused.
    - map_shared: the VM's one page for that address (a shared library's or a file's),
      the same guest-physical page in every process that maps it; never freed. The
      mapping (the VMA) stays with the process, so a fault there maps that page again.

    Every entry store is counted as ``guest.pt_writes`` and ``guest.pt_writes.<cause>``
    (``counters``, optional; the cause one of :data:`CAUSES`) and reported to
    ``on_store(asid, va, address, cause)``, through which a shadowing hypervisor traps it.
    """

    def __init__(self, fmt: PageTableFormat, page_size: int, phys: Physical, counters: Any = None,
                 on_store: Callable[[int, int, int, str], None] | None = None, name: str = "") -> None:
        self.name = name  #: the VM's name, for messages
        self.fmt = fmt
        self.page_size = page_size
        self.phys = phys
        self.counters = counters
        self.on_store = on_store
        self.roots: dict[int, int] = {}
        self.shift = page_size.bit_length() - 1
        self.spaces: dict[int, dict[int, int]] = {}  # asid -> {page number: leaf entry address}
        # asid -> tables below the root: (address, bytes, the entry pointing at it)
        self.tables: dict[int, list[tuple[int, int, int]]] = {}
        self.mappings: dict[int, int] = {}  # a private page mapped more than once (COW) -> its mappings
        self.cow: set[tuple[int, int]] = set()  # (asid, page number) mapped copy-on-write
        self.replaced: list[tuple[int, int]] = []  # (asid, va) whose frame a fault replaced: take_flushes
        self.shared: dict[int, int] = {}  # page number -> the VM's shared page (map_shared)
        self.shared_vmas: dict[int, set[int]] = {}  # asid -> page numbers it maps shared (its VMAs)
        self.free: dict[int, list[int]] = {}  # bytes -> freed pages and tables, reused first

    # -- memory ------------------------------------------------------------------------
    def alloc(self, size: int) -> int:
        """A page or table of ``size`` bytes: a freed one, else fresh from physical memory."""
        pool = self.free.get(size)
        return pool.pop() if pool else self.phys.alloc(size)

    def _release(self, address: int, size: int) -> None:
        self.free.setdefault(size, []).append(address)

    def _stored(self, asid: int, va: int, addresses: list[int], cause: str) -> list[int]:
        if addresses:
            if self.counters is not None:
                self.counters.add("guest.pt_writes", len(addresses))
                self.counters.add(f"guest.pt_writes.{cause}", len(addresses))
            if self.on_store is not None:
                for address in addresses:
                    self.on_store(asid, va, address, cause)
        return addresses

    def _store(self, asid: int, va: int, address: int, entry: int, cause: str) -> list[int]:
        self.fmt.store(self.phys, address, entry)
        return self._stored(asid, va, [address], cause)

    # -- address spaces --------------------------------------------------------------------
    def root(self, asid: int) -> int:
        """Physical address of the root table of ``asid`` (created on first use)."""
        root = self.roots.get(asid)
        if root is None:
            root = self.roots[asid] = self.alloc(self.fmt.table_alloc(self.fmt.levels))
            self.spaces[asid], self.tables[asid] = {}, []
        return root

    def lookup(self, asid: int, va: int) -> WalkStep:
        """A software walk of the kernel's own tables (not a hardware reference)."""
        return walk(self.fmt, self.root(asid), va, self.phys)

    def _map(self, asid: int, va: int, page: int, writable: bool, cause: str) -> list[int]:
        tables: list[tuple[int, int]] = []

        def new_table(size: int) -> int:
            tables.append((self.alloc(size), size))
            return tables[-1][0]

        root = self.root(asid)
        written = map_page(self.fmt, root, va & ~(self.page_size - 1), page, self.page_size, self.phys, new_table,
                           writable)
        self.tables[asid].extend((table, size, entry) for (table, size), entry in zip(tables, written))
        self.spaces[asid][va >> self.shift] = written[-1]
        return self._stored(asid, va, written, cause)

    def map(self, asid: int, va: int, writable: bool = True, cause: str = "map") -> list[int]:
        """Map a fresh page at ``va`` unless mapped; returns the entry addresses written.
        (The kernel remembers its leaves, as Linux finds them through its VMAs, so its own
        bookkeeping needs no walk.)"""
        if va >> self.shift in self.spaces.get(asid, {}):
            return []
        return self._map(asid, va, self.alloc(self.page_size), writable, cause)

    def map_shared(self, asid: int, va: int) -> list[int]:
        """Map the VM's shared page for ``va`` (allocated on its first mapping)."""
        return self._map_shared(asid, va, "map")

    def _map_shared(self, asid: int, va: int, cause: str) -> list[int]:
        number = va >> self.shift
        self.shared_vmas.setdefault(asid, set()).add(number)
        if number in self.spaces.get(asid, {}):
            return []
        page = self.shared.get(number)
        if page is None:
            page = self.shared[number] = self.alloc(self.page_size)
        return self._map(asid, va, page, True, cause)

    def _forget(self, asid: int, number: int) -> None:
        """Drop one mapping of the private page at ``number`` of ``asid``; free the page
        with its last mapping."""
        self.cow.discard((asid, number))
        address = self.spaces[asid].pop(number)
        page = self.fmt.frame(self.fmt.load(self.phys, address), self.fmt.level_of_size(self.page_size))
        if self.shared.get(number) == page:
            return
        left = self.mappings.pop(page, 1) - 1
        if left > 1:
            self.mappings[page] = left
        elif left == 0:
            self._release(page, self.page_size)

    def unmap(self, asid: int, va: int) -> list[int]:
        """Clear the leaf mapping ``va``; returns the entry addresses written."""
        number = va >> self.shift
        self.shared_vmas.get(asid, set()).discard(number)
        address = self.spaces.get(asid, {}).get(number)
        if address is None:
            return []
        self._forget(asid, number)
        return self._store(asid, va, address, 0, "unmap")

    def protect(self, asid: int, va: int, writable: bool = False, cause: str = "protect") -> list[int]:
        """Make the leaf mapping ``va`` read-only (or writable again); returns the entry
        addresses written."""
        address = self.spaces.get(asid, {}).get(va >> self.shift)
        if address is None:
            return []
        entry = self.fmt.load(self.phys, address)
        if self.fmt.is_writable(entry) == writable:
            return []
        flag = self.fmt.write_flag
        return self._store(asid, va, address, entry | flag if writable else entry & ~flag, cause)

    def fault(self, asid: int, va: int, write: bool) -> list[int]:
        """The page-fault handler: map an unmapped page (demand paging), break a
        copy-on-write, or make a protected page writable again. A copy-on-write copy
        leaves a flush for :meth:`take_flushes`, which the scheme's ``handle_fault``
        returns."""
        number = va >> self.shift
        if number not in self.spaces.get(asid, {}):
            if number in self.shared_vmas.get(asid, ()):
                return self._map_shared(asid, va, "fault")
            return self.map(asid, va, cause="fault")
        if write and (asid, number) in self.cow:
            return self._break_cow(asid, va, number)
        return self.protect(asid, va, writable=True, cause="fault") if write else []

    def _break_cow(self, asid: int, va: int, number: int) -> list[int]:
        fmt, level = self.fmt, self.fmt.level_of_size(self.page_size)
        if self.counters is not None:
            self.counters.add("faults.guest.cow")
        self.cow.discard((asid, number))
        address = self.spaces[asid][number]
        entry = fmt.load(self.phys, address)
        page = fmt.frame(entry, level)
        left = self.mappings.pop(page, 1) - 1
        if left == 0:  # the last mapping: reuse the page
            return self._store(asid, va, address, entry | fmt.write_flag, "fault")
        if left > 1:
            self.mappings[page] = left
        if self.counters is not None:
            self.counters.add("guest.cow_copies")
            self.counters.add("guest.cow_copy_bytes", self.page_size)
        copy = self.alloc(self.page_size)
        self.replaced.append((asid, va))
        return self._store(asid, va, address, fmt.leaf_entry(copy, level, True), "fault")

    def take_flushes(self, vm: int) -> list[Invalidation]:
        """The flushes of the pages whose frame a fault replaced since the last call (a
        copy-on-write copy: Linux's ptep_clear_flush, a shootdown of the page), as
        invalidations of ``vm`` for the scheme's ``handle_fault`` to return. The
        faulting core's own entry is replaced by the walk that follows (``local = False``)."""
        replaced, self.replaced = self.replaced, []
        return [Invalidation("page", vm, asid, va, GUEST, local=False) for asid, va in replaced]

    def fork(self, parent: int, child: int) -> list[int]:
        """Give ``child`` a copy-on-write copy of ``parent``'s address space."""
        if child == parent or child in self.roots:
            raise SimulationError(f"{f'VM {self.name}: ' if self.name else ''}a fork of asid {parent} names "
                                  f"child asid {child}, which is "
                                  f"{'the parent itself' if child == parent else 'a live process'}; "
                                  "a fork's child is an asid with no address space (never used, or exited).")
        fmt, level = self.fmt, self.fmt.level_of_size(self.page_size)
        self.root(parent)
        self.root(child)
        self.shared_vmas[child] = set(self.shared_vmas.get(parent, ()))
        written: list[int] = []
        for number, address in sorted(self.spaces[parent].items()):
            va = number << self.shift
            entry = fmt.load(self.phys, address)
            page = fmt.frame(entry, level)
            if self.shared.get(number) == page:  # a shared page: the child faults it in
                continue
            self.mappings[page] = self.mappings.get(page, 1) + 1  # copy-on-write in both
            self.cow.add((parent, number))
            self.cow.add((child, number))
            if fmt.is_writable(entry):
                entry &= ~fmt.write_flag
                written += self._store(parent, va, address, entry, "fork")
            written += self._map(child, va, page, False, "fork")
        return written

    def teardown(self, asid: int, cause: str) -> list[int]:
        """Clear every leaf of ``asid``, then free every table below its root, clearing
        the entry that pointed at it, and the root (exit_mmap)."""
        if asid not in self.roots:
            return []
        written: list[int] = []
        for number, address in sorted(self.spaces[asid].items()):
            self._forget(asid, number)
            written += self._store(asid, number << self.shift, address, 0, cause)
        for table, size, entry in reversed(self.tables.pop(asid)):
            written += self._store(asid, 0, entry, 0, cause)
            self._release(table, size)
        self._release(self.roots.pop(asid), self.fmt.table_alloc(self.fmt.levels))
        del self.spaces[asid]
        self.shared_vmas.pop(asid, None)
        return written


@attrs.frozen
class DemandPaging:
    """What a SLAT scheme promises of one VM's not-present faults (its translator's
    optional ``demand_paging()``, asked when an engine is built): a guest's is ``counter``
    counted once and ``kernel.fault(asid, va, write)``; with a ``backing`` (a
    :class:`slatframe.backing.RadixBacking` whose tables the walk walks, and which backs
    ``kernel``'s memory), a host's is ``backing.fault(gpa)`` with an exit of
    ``exit_reason``; nothing else either way (no invalidation, no other work). Without a
    backing, ``kernel`` keeps its tables in the host memory a 1D walk reads. The compiled
    loop then serves such faults itself when the result is the same
    (:mod:`slatframe.engine.demand`)."""

    kernel: GuestOs
    counter: str
    backing: Any = None
    exit_reason: str | None = None


def guest_control(kernel: GuestOs, vm: int, asid: int, op: int, arg: int) -> tuple[list[int], list[Invalidation]]:
    """Carry out a trace control event in the guest kernel of ``vm``.

    Returns the guest page-table entries written (in the kernel's physical address
    space) and the TLB invalidations the guest performs: an unmap or protect is
    followed by the guest's INVLPG of the page, a flush drops the asid's entries, a fork
    flushes the parent's, exec and exit the process's. A context switch writes no entry
    and, with asid-tagged TLBs, invalidates nothing. After an exec or an exit the
    scheme's hardware view must drop the asid's root (:data:`DROPS_ROOT`).
    """
    if op == MAP:
        return kernel.map(asid, arg), []
    if op == UNMAP:
        return kernel.unmap(asid, arg), [Invalidation("page", vm, asid, arg)]
    if op == PROTECT:
        return kernel.protect(asid, arg), [Invalidation("page", vm, asid, arg)]
    if op == INVLPG:
        return [], [Invalidation("page", vm, asid, arg, CPU)]
    if op == FLUSH:
        return [], [Invalidation("asid", vm, asid, 0, CPU)]
    if op == MAP_SHARED:
        return kernel.map_shared(asid, arg), []
    if op == FORK:
        if kernel.counters is not None:
            kernel.counters.add("processes.created")
        return kernel.fork(asid, arg), [Invalidation("asid", vm, asid)]
    if op in DROPS_ROOT:
        if op == EXIT and kernel.counters is not None:
            kernel.counters.add("processes.exited")
        written = kernel.teardown(asid, "exit" if op == EXIT else "exec")
        if op == EXEC:
            kernel.root(asid)
        return written, [Invalidation("asid", vm, asid)]
    return [], []


#: Control ops after which the process's root table is a new one (exec) or none (exit).
DROPS_ROOT = (EXEC, EXIT)
