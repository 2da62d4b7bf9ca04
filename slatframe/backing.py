"""A hypervisor's backing of guest-physical memory: gPA -> hPA, filled on first touch.

Every scheme with a hypervisor backs each VM's guest-physical pages with host pages of
``vms[].host_page_size``, allocated from the one host pool when the page is first
touched (a host fault, counted in ``faults.host``). :class:`DictBacking` keeps the
mapping in a software structure (what a shadowing hypervisor has); :class:`RadixBacking`
keeps it in real second-level radix tables in host memory, which hardware walks under
nested paging.
"""
from __future__ import annotations

from typing import Callable

from .counters import Counters
from .memory import PhysicalMemory
from .paging import PAGE_SHIFT, PageTableFormat, map_page, walk

TABLE_SIZE = 1 << PAGE_SHIFT


class Backing:
    """gPA -> hPA of one VM. Subclasses store the mapping; ``on_fault(gpa)`` is called
    for every host fault (a scheme counts its VM exit there)."""

    def __init__(self, host: PhysicalMemory, page_size: int, counters: Counters,
                 on_fault: Callable[[int], None] | None = None) -> None:
        self.host = host
        self.page_size = page_size
        self.counters = counters
        self.on_fault = on_fault
        self.backed_pages = 0

    def lookup(self, gpa: int) -> int | None:
        """The hPA of ``gpa`` if backed (a software look-up, not a hardware reference)."""
        raise NotImplementedError

    def install(self, gpa_page: int, hpa_page: int) -> None:
        raise NotImplementedError

    def fault(self, gpa: int) -> int:
        """Handle a host fault at ``gpa``: allocate and map its host page; return the hPA."""
        self.counters.add("faults.host")
        if self.on_fault is not None:
            self.on_fault(gpa)
        mask = self.page_size - 1
        hpa_page = self.host.alloc(self.page_size)
        self.install(gpa & ~mask, hpa_page)
        self.backed_pages += 1
        return hpa_page | (gpa & mask)

    def backing(self, gpa: int) -> int:
        """The hPA of ``gpa``, backing it first if this is its first touch."""
        hpa = self.lookup(gpa)
        return self.fault(gpa) if hpa is None else hpa


class DictBacking(Backing):
    """The mapping in a dict of guest page number -> host page base."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shift = self.page_size.bit_length() - 1
        self.pages: dict[int, int] = {}

    def lookup(self, gpa: int) -> int | None:
        page = self.pages.get(gpa >> self.shift)
        return None if page is None else page | (gpa & (self.page_size - 1))

    def install(self, gpa_page: int, hpa_page: int) -> None:
        self.pages[gpa_page >> self.shift] = hpa_page


class RadixBacking(DictBacking):
    """The mapping in second-level radix tables of format ``fmt`` in host memory, which
    hardware walks; the hypervisor's own look-ups use a dict it keeps beside them (as
    KVM keeps memslots), so software never walks its tables."""

    def __init__(self, fmt: PageTableFormat, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fmt = fmt
        self.root = self.host.alloc(TABLE_SIZE)

    def install(self, gpa_page: int, hpa_page: int) -> None:
        map_page(self.fmt, self.root, gpa_page, hpa_page, self.page_size, self.host,
                 lambda: self.host.alloc(TABLE_SIZE))
        super().install(gpa_page, hpa_page)

    def table_lookup(self, gpa: int) -> int | None:
        """The hPA of ``gpa`` read from the second-level tables (to check the dict)."""
        step = walk(self.fmt, self.root, gpa, self.host)
        if not step.present:
            return None
        size = self.fmt.page_size(step.level)
        return self.fmt.frame(step.entry, step.level) | (gpa & (size - 1))
