"""A hypervisor's backing of guest-physical memory: gPA -> hPA, filled on first touch.

Every scheme with a hypervisor backs each VM's guest-physical pages with host pages of
``vms[].host_page_size``, allocated from the one host pool when the page is first
touched (a host fault, counted in ``faults.host``), or at the start for the pages of a
VM image (:meth:`Backing.populate`, no fault); the new frames get the VM's initial
contents. :class:`DictBacking` keeps the mapping in a software structure (what a
shadowing hypervisor has); :class:`RadixBacking` also keeps it in real second-level radix
tables in host memory, which hardware walks under nested paging, and supports what page
deduplication needs: remapping one 4K page (splitting a large page around it) and
copy-on-write breaks.
"""
from __future__ import annotations

from typing import Any, Callable

from .contents import image_pages
from .counters import Counters
from .memory import PhysicalMemory
from .paging import PAGE_SHIFT, PageTableFormat, map_page, split_leaf, walk

TABLE_SIZE = 1 << PAGE_SHIFT
SMALL = 1 << PAGE_SHIFT


class Backing:
    """gPA -> hPA of one VM. Subclasses store the mapping; ``on_fault(gpa)`` is called
    for every host fault (a scheme counts its VM exit there)."""

    def __init__(self, host: PhysicalMemory, page_size: int, counters: Counters,
                 on_fault: Callable[[int], None] | None = None, contents: Any = None) -> None:
        self.host = host
        self.page_size = page_size
        self.counters = counters
        self.on_fault = on_fault
        self.contents = contents  # slatframe.contents.VmContents, or None: zero-filled

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
        return self._back(gpa)

    def populate(self, pages: int) -> None:
        """Back guest pages [0, ``pages``) now, without host faults: a VM image resident
        from the start, as after restoring a snapshot. Whole host pages are backed, so the
        last one may reach past the image (those pages hold zeros, free guest memory)."""
        for gpa in range(0, pages << PAGE_SHIFT, self.page_size):
            self._back(gpa)

    def _back(self, gpa: int) -> int:
        """Allocate and map the host page of ``gpa``, with its initial contents; return the hPA."""
        mask = self.page_size - 1
        hpa_page = self.host.alloc(self.page_size)
        if self.contents is not None:
            n = self.page_size >> PAGE_SHIFT
            first = hpa_page >> PAGE_SHIFT
            self.host.content[first:first + n] = self.contents.initial((gpa & ~mask) >> PAGE_SHIFT, n)
        self.install(gpa & ~mask, hpa_page)
        return hpa_page | (gpa & mask)

    def backing(self, gpa: int) -> int:
        """The hPA of ``gpa``, backing it first if this is its first touch."""
        hpa = self.lookup(gpa)
        return self.fault(gpa) if hpa is None else hpa


class DictBacking(Backing):
    """The mapping in a dict of guest page number -> host page base, with 4K exceptions
    (pages remapped one by one, as deduplication does) taking precedence.

    ``on_remap(gpa)`` is called after a 4K page is remapped, so a scheme that caches
    translations derived from this mapping (shadow tables) can drop them, as KVM's MMU
    notifiers do when KSM replaces a page."""

    def __init__(self, *args, on_remap: Callable[[int], None] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shift = self.page_size.bit_length() - 1
        self.pages: dict[int, int] = {}
        self.small: dict[int, int] = {}  # 4K guest frame number -> 4K host frame base
        self.read_only: set[int] = set()  # 4K guest frame numbers mapped read-only
        self.split: set[tuple[int, int]] = set()  # (size, gPA // size) of split host large pages
        self.on_remap = on_remap

    def lookup(self, gpa: int) -> int | None:
        if self.small:
            frame = self.small.get(gpa >> PAGE_SHIFT)
            if frame is not None:
                return frame | (gpa & (SMALL - 1))
        page = self.pages.get(gpa >> self.shift)
        return None if page is None else page | (gpa & (self.page_size - 1))

    def install(self, gpa_page: int, hpa_page: int) -> None:
        self.pages[gpa_page >> self.shift] = hpa_page

    def guest_frames(self) -> list[int]:
        """Every backed 4K guest frame number, ascending."""
        per = self.page_size >> PAGE_SHIFT
        return sorted(g * per + i for g in self.pages for i in range(per))

    def remap_small(self, gpa: int, hpa: int, writable: bool) -> int:
        """Map the 4K page at ``gpa`` to the 4K frame ``hpa``, splitting the large page
        around it first. Returns how many large pages were split."""
        splits = 0  # a large page splits into 512 pages one size down, as a radix table does
        size = self.page_size
        while size > SMALL:
            if (size, gpa // size) not in self.split:
                self.split.add((size, gpa // size))
                splits += 1
            size >>= 9
        table_splits = self._remap_entry(gpa, hpa, writable)
        if table_splits is not None and table_splits != splits:
            raise AssertionError(f"gPA {gpa:#x}: {table_splits} table splits, {splits} in the backing's record")
        self.small[gpa >> PAGE_SHIFT] = hpa & ~(SMALL - 1)
        if writable:
            self.read_only.discard(gpa >> PAGE_SHIFT)
        else:
            self.read_only.add(gpa >> PAGE_SHIFT)
        if self.on_remap is not None:
            self.on_remap(gpa)
        return splits

    def _remap_entry(self, gpa: int, hpa: int, writable: bool) -> int | None:
        """Change the mapping kept beyond the dicts (none here); return the large pages it split."""
        return None

    def mapping(self, gpa: int) -> tuple[int, int, bool]:
        """(hPA, size of the host mapping that holds ``gpa``, writable), backing the page
        first if this is its first touch: inside a split large page, the size one level
        down (down to 4K), as in split radix tables."""
        hpa = self.backing(gpa)
        size = self.page_size
        while size > SMALL and (size, gpa // size) in self.split:
            size >>= 9
        return hpa, size, (gpa >> PAGE_SHIFT) not in self.read_only


class RadixBacking(DictBacking):
    """The mapping also in second-level radix tables of format ``fmt`` in host memory,
    which hardware walks; the hypervisor's own look-ups use the dicts it keeps beside
    them (as KVM keeps memslots), so software never walks its tables. The host memory
    the tables take is the gauge ``slat.table_bytes`` (they are never freed, so its
    ``.peak`` is the same)."""

    def __init__(self, fmt: PageTableFormat, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fmt = fmt
        self.root = self._table(self.fmt.table_alloc(self.fmt.levels))

    def _table(self, size: int) -> int:
        self.counters.gauge_add("slat.table_bytes", size)
        return self.host.alloc(size)

    def install(self, gpa_page: int, hpa_page: int) -> None:
        map_page(self.fmt, self.root, gpa_page, hpa_page, self.page_size, self.host, self._table)
        super().install(gpa_page, hpa_page)

    def _remap_entry(self, gpa: int, hpa: int, writable: bool) -> int:
        """Rewrite the second-level leaf of ``gpa``, splitting the large pages above it."""
        splits = 0
        while True:
            step = walk(self.fmt, self.root, gpa, self.host)
            if step.level == 1 or not step.present:
                break
            split_leaf(self.fmt, self.host, step, self._table(TABLE_SIZE))
            splits += 1
        if not step.present:
            raise AssertionError(f"gPA {gpa:#x} is not backed")
        self.fmt.store(self.host, step.entry_address, self.fmt.leaf_entry(hpa, 1, writable))
        return splits

    def table_lookup(self, gpa: int) -> int | None:
        """The hPA of ``gpa`` read from the second-level tables (to check the dicts)."""
        step = walk(self.fmt, self.root, gpa, self.host)
        if not step.present:
            return None
        size = self.fmt.page_size(step.level)
        return self.fmt.frame(step.entry, step.level) | (gpa & (size - 1))


def back_image(backing: Backing, vm: Any, index: int) -> int:
    """Make the image of ``vms[index]`` resident in ``backing`` (no faults); return the
    first guest-physical address above it, where the guest kernel's allocations start."""
    pages = image_pages(vm.image, vm.memory, f"vms[{index}].image")
    backing.populate(pages)
    return pages << PAGE_SHIFT
