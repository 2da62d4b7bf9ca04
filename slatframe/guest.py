"""The guest kernel's memory management, common to every SLAT scheme.

A :class:`GuestOs` keeps one radix table per address space (asid) in its physical
memory and maps pages on first touch (demand paging), on map events, and removes them
on unmap. Under ``native`` its physical memory is the host's; under a hypervisor it is
a VM's guest-physical space (:class:`VmPhysical`), whose words live in host frames.
"""
from __future__ import annotations

from typing import Callable, Protocol

from .errors import SimulationError
from .paging import PAGE_SHIFT, PageTableFormat, WalkStep, map_page, walk
from .trace import FLUSH, INVLPG, MAP, PROTECT, UNMAP
from .translation import Invalidation
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

    def read(self, addr: int) -> int:
        return self._host_read(self._backing(addr))

    def write(self, addr: int, value: int) -> None:
        if self._on_write is not None:
            self._on_write(addr)
        self._host_write(self._backing(addr), value)


class GuestOs:
    """Page tables of one (guest) kernel: a root per asid, demand paging of ``page_size`` pages."""

    def __init__(self, fmt: PageTableFormat, page_size: int, phys: Physical) -> None:
        self.fmt = fmt
        self.page_size = page_size
        self.phys = phys
        self.roots: dict[int, int] = {}
        self.shift = page_size.bit_length() - 1
        self.leaves: dict[tuple[int, int], int] = {}  # (asid, page number) -> leaf entry address

    def root(self, asid: int) -> int:
        """Physical address of the root table of ``asid`` (created on first use)."""
        root = self.roots.get(asid)
        if root is None:
            root = self.roots[asid] = self.phys.alloc(self.fmt.table_alloc(self.fmt.levels))
        return root

    def lookup(self, asid: int, va: int) -> WalkStep:
        """A software walk of the kernel's own tables (not a hardware reference)."""
        return walk(self.fmt, self.root(asid), va, self.phys)

    def map(self, asid: int, va: int, writable: bool = True) -> list[int]:
        """Map a fresh page at ``va`` unless mapped; returns the entry addresses written.
        (The kernel remembers its leaves, as Linux finds them through its VMAs, so its own
        bookkeeping needs no walk.)"""
        key = (asid, va >> self.shift)
        if key in self.leaves:
            return []
        base = va & ~(self.page_size - 1)
        page = self.phys.alloc(self.page_size)
        written = map_page(self.fmt, self.root(asid), base, page, self.page_size, self.phys,
                           self.phys.alloc, writable)
        self.leaves[key] = written[-1]
        return written

    def unmap(self, asid: int, va: int) -> list[int]:
        """Clear the leaf mapping ``va``; returns the entry addresses written."""
        address = self.leaves.pop((asid, va >> self.shift), None)
        if address is None:
            return []
        self.fmt.store(self.phys, address, 0)
        return [address]

    def protect(self, asid: int, va: int, writable: bool = False) -> list[int]:
        """Make the leaf mapping ``va`` read-only (or writable again); returns the entry
        addresses written."""
        address = self.leaves.get((asid, va >> self.shift))
        if address is None:
            return []
        entry = self.fmt.load(self.phys, address)
        if self.fmt.is_writable(entry) == writable:
            return []
        flag = self.fmt.write_flag
        self.fmt.store(self.phys, address, entry | flag if writable else entry & ~flag)
        return [address]


def guest_control(kernel: GuestOs, vm: int, asid: int, op: int, arg: int) -> tuple[list[int], list[Invalidation]]:
    """Carry out a trace control event in the guest kernel of ``vm``.

    Returns the guest page-table entries written (in the kernel's physical address
    space) and the TLB invalidations the guest performs: an unmap or protect is
    followed by the guest's INVLPG of the page, a flush drops the asid's entries. A
    context switch writes no entry and, with asid-tagged TLBs, invalidates nothing.
    """
    if op == MAP:
        return kernel.map(asid, arg), []
    if op == UNMAP:
        return kernel.unmap(asid, arg), [Invalidation("page", vm, asid, arg)]
    if op == PROTECT:
        return kernel.protect(asid, arg), [Invalidation("page", vm, asid, arg)]
    if op == INVLPG:
        return [], [Invalidation("page", vm, asid, arg)]
    if op == FLUSH:
        return [], [Invalidation("asid", vm, asid)]
    return [], []
