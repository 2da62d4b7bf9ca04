"""Radix page tables: a format's geometry and entry codec, and the generic operations
(walk, map, unmap) that every SLAT scheme composes. No vendor is named here: formats
describe their bit layout through :class:`PageTableFormat`.
"""
from __future__ import annotations

from typing import Callable, Protocol

import attrs

ENTRY_SIZE = 8
PAGE_SHIFT = 12
INDEX_BITS = 9
ENTRIES_PER_TABLE = 1 << INDEX_BITS


@attrs.frozen(kw_only=True)
class PageTableFormat:
    """Geometry and entry codec of one radix page-table format.

    Levels are numbered from 1 (the last table, mapping 4K pages) to ``levels`` (the
    root). Every present entry of level 1 is a leaf; above it an entry is a leaf (a large
    page, or block) when ``entry & leaf_mask == leaf_flag``: a size bit set
    (``leaf_mask = leaf_flag = that bit``, the default), or a table bit clear
    (``leaf_mask = that bit``, ``leaf_flag = 0``). An entry is present when
    ``entry & present_mask`` is non-zero. ``table_bits`` / ``leaf_bits`` are set in every
    non-leaf / leaf entry the OS writes (for example present, user, memory type), and
    ``page_flag`` in leaves of level 1 only (where a format marks pages apart from larger
    leaves); ``write_flag`` grants writes; ``accessed_flag`` and ``dirty_flag`` are 0
    where the format has none.
    """

    name: str
    levels: int
    leaf_levels: tuple[int, ...]
    present_mask: int
    frame_mask: int = ((1 << 52) - 1) & ~((1 << PAGE_SHIFT) - 1)
    leaf_flag: int = 1 << 7
    write_flag: int = 1 << 1
    accessed_flag: int = 0
    dirty_flag: int = 0
    table_bits: int = 0
    leaf_bits: int = 0
    leaf_mask: int = attrs.field(default=attrs.Factory(lambda self: self.leaf_flag, takes_self=True))
    page_flag: int = 0

    def __attrs_post_init__(self) -> None:
        if not self.leaf_mask or self.leaf_flag & ~self.leaf_mask:
            raise ValueError(f"page-table format {self.name!r}: leaf_mask must be non-zero and hold leaf_flag's bits")

    @property
    def va_bits(self) -> int:
        """Width of the addresses a walk translates: 12 + 9 per level (48 for 4 levels, 57 for 5)."""
        return PAGE_SHIFT + INDEX_BITS * self.levels

    @property
    def leaf_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self.page_size(level) for level in self.leaf_levels))

    @staticmethod
    def page_size(level: int) -> int:
        return 1 << (PAGE_SHIFT + INDEX_BITS * (level - 1))

    def level_of_size(self, size: int) -> int:
        for level in self.leaf_levels:
            if self.page_size(level) == size:
                return level
        raise ValueError(f"format {self.name} has no {size}-byte leaf")

    @staticmethod
    def index(va: int, level: int) -> int:
        return (va >> (PAGE_SHIFT + INDEX_BITS * (level - 1))) & (ENTRIES_PER_TABLE - 1)

    def entry_address(self, table: int, va: int, level: int) -> int:
        return table + self.index(va, level) * ENTRY_SIZE

    # -- codec ------------------------------------------------------------------
    def is_present(self, entry: int) -> bool:
        return bool(entry & self.present_mask)

    def is_leaf(self, entry: int, level: int) -> bool:
        return level == 1 or (entry & self.leaf_mask) == self.leaf_flag

    def frame(self, entry: int, level: int) -> int:
        """Physical address the entry points at (table, or page base for a leaf)."""
        if level > 1 and (entry & self.leaf_mask) == self.leaf_flag:
            return entry & self.frame_mask & ~(self.page_size(level) - 1)
        return entry & self.frame_mask

    def table_entry(self, table: int) -> int:
        return (table & self.frame_mask) | self.table_bits | self.write_flag

    def leaf_entry(self, page: int, level: int, writable: bool = True) -> int:
        e = (page & self.frame_mask) | self.leaf_bits
        if writable:
            e |= self.write_flag
        e |= self.leaf_flag if level > 1 else self.page_flag
        return e

    def is_writable(self, entry: int) -> bool:
        return bool(entry & self.write_flag)

    def is_dirty(self, entry: int) -> bool:
        """True when the dirty flag is set, or the format has none."""
        return not self.dirty_flag or bool(entry & self.dirty_flag)


class Memory(Protocol):
    """Word-addressed memory a walk reads (and writes A/D bits into)."""

    def read(self, addr: int) -> int: ...
    def write(self, addr: int, value: int) -> None: ...


def _same(addr: int) -> int:
    return addr


@attrs.frozen
class WalkStep:
    """Where a walk ended: at a leaf (``present``) or at a non-present entry.

    ``entry_address`` is in the table's own address space; ``refs`` counts the entries
    read; ``ad_writes`` the entries written to set accessed/dirty flags.
    """

    level: int
    entry_address: int
    entry: int
    present: bool
    refs: int
    ad_writes: int = 0


def walk(fmt: PageTableFormat, root: int, va: int, mem: Memory,
         resolve: Callable[[int], int] = _same, accessed: bool = False,
         dirty: bool = False) -> WalkStep:
    """Walk from ``root`` for ``va``: one memory reference per level.

    Entry addresses are in the tables' own address space; ``resolve`` turns each into
    the address ``mem`` is read at (a nested walk passes its host walk here, which may
    raise to abort the walk). With ``accessed``, the flag is set in every entry used
    (Intel SDM 4.8), and with ``dirty`` also the dirty flag of the leaf; each entry
    changed is one write.
    """
    table = root
    refs = writes = 0
    for level in range(fmt.levels, 0, -1):
        addr = fmt.entry_address(table, va, level)
        at = resolve(addr)
        entry = mem.read(at)
        refs += 1
        if not fmt.is_present(entry):
            return WalkStep(level, addr, entry, False, refs, writes)
        leaf = fmt.is_leaf(entry, level)
        if accessed:
            set_dirty = leaf and dirty and fmt.is_writable(entry)  # no D on a faulting write
            updated = entry | fmt.accessed_flag | (fmt.dirty_flag if set_dirty else 0)
            if updated != entry:
                mem.write(at, updated)
                writes += 1
                entry = updated
        if leaf:
            return WalkStep(level, addr, entry, True, refs, writes)
        table = fmt.frame(entry, level)
    raise AssertionError("unreachable: level 1 entries are leaves")


def map_page(fmt: PageTableFormat, root: int, va: int, page: int, size: int, mem: Memory,
             new_table: Callable[[], int], writable: bool = True) -> list[int]:
    """Map the ``size`` page at ``va`` to ``page``, creating missing tables.

    Returns the addresses of the entries written, in write order (the page-table writes
    a shadowing hypervisor would trap).
    """
    leaf_level = fmt.level_of_size(size)
    written: list[int] = []
    table = root
    for level in range(fmt.levels, leaf_level, -1):
        addr = fmt.entry_address(table, va, level)
        entry = mem.read(addr)
        if fmt.is_present(entry):
            if fmt.is_leaf(entry, level):
                raise ValueError(f"{va:#x} is already mapped by a larger page")
            table = fmt.frame(entry, level)
            continue
        table = new_table()
        mem.write(addr, fmt.table_entry(table))
        written.append(addr)
    addr = fmt.entry_address(table, va, leaf_level)
    mem.write(addr, fmt.leaf_entry(page, leaf_level, writable))
    written.append(addr)
    return written


def split_leaf(fmt: PageTableFormat, mem: Memory, step: WalkStep, new_table: int) -> None:
    """Replace the large leaf ``step`` (level > 1) by a table of 512 leaves one level down
    that map the same memory with the same permissions (a large-page split)."""
    level = step.level
    page = fmt.frame(step.entry, level)
    writable = fmt.is_writable(step.entry)
    small = fmt.page_size(level - 1)
    for i in range(ENTRIES_PER_TABLE):
        mem.write(new_table + i * ENTRY_SIZE, fmt.leaf_entry(page + i * small, level - 1, writable))
    mem.write(step.entry_address, fmt.table_entry(new_table))
