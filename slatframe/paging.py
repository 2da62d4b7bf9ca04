"""Radix page tables: a format's geometry and entry codec, and the generic operations
(walk, map, unmap) that every SLAT scheme composes. No vendor is named here: formats
describe their geometry and bit layout through :class:`PageTableFormat`.
"""
from __future__ import annotations

import functools
from typing import Callable, Protocol

import attrs

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
INDEX_BITS = 9  #: index bits of a level by default (512 8-byte entries: one 4K table)
ENTRY_SIZE = 8  #: bytes of an entry by default
WORD_BYTES = 8  #: simulated memory stores 8-byte words (slatframe.memory)
MAX_ROOT_TABLE = 16 * PAGE_SIZE  #: a root of up to 16 concatenated tables (Arm ARM D8.2.4, stage 2)
ENTRY_BYTES = (4, 8)


def _nine_bits(self: "PageTableFormat") -> tuple[int, ...]:
    return (INDEX_BITS,) * self.levels


@functools.lru_cache(maxsize=64)
def _shifts(index_bits: tuple[int, ...]) -> tuple[int, ...]:
    """The lowest address bit of each level's index, level 1 first."""
    return tuple(PAGE_SHIFT + sum(index_bits[:i]) for i in range(len(index_bits)))


@attrs.frozen(kw_only=True)
class PageTableFormat:
    """Geometry and entry codec of one radix page-table format.

    Geometry: levels are numbered from 1 (the last table, mapping 4K pages) to ``levels``
    (the root). ``index_bits[l - 1]`` address bits select an entry of level ``l``, so a
    level-``l`` leaf maps ``2 ** (12 + sum(index_bits[:l - 1]))`` bytes and the format
    translates ``12 + sum(index_bits)``-bit addresses. Entries are ``entry_bytes`` (8 or
    4) wide. Every table below the root fills one 4K page
    (``entry_bytes << index_bits[l - 1] == 4096``); the root may be smaller (x86 PAE's
    four entries) or up to 16 pages of concatenated tables (Arm stage 2), and is
    allocated rounded up to whole pages, aligned to its size.

    Codec: every present entry of level 1 is a leaf; above it an entry is a leaf (a large
    page, or block) when ``entry & leaf_mask == leaf_flag``: a size bit set
    (``leaf_mask = leaf_flag = that bit``, the default), or a table bit clear
    (``leaf_mask = that bit``, ``leaf_flag = 0``). An entry is present when
    ``entry & present_mask`` is non-zero. ``table_bits`` / ``leaf_bits`` are set in every
    non-leaf / leaf entry the OS writes (for example present, user, memory type), and
    ``page_flag`` in leaves of level 1 only (where a format marks pages apart from larger
    leaves); ``write_flag`` grants writes, and is set in every non-leaf entry the OS
    writes (:meth:`table_entry`: write protection is the leaves' business, as x86 and Arm
    kernels do it); ``accessed_flag`` and ``dirty_flag`` are 0 where the format has none.
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
    index_bits: tuple[int, ...] = attrs.field(default=attrs.Factory(_nine_bits, takes_self=True),
                                              converter=tuple)
    entry_bytes: int = ENTRY_SIZE

    def __attrs_post_init__(self) -> None:
        problem = self.geometry_problem()
        if problem:
            raise ValueError(f"page-table format {self.name!r}: {problem}")

    def geometry_problem(self) -> str | None:
        """Why this geometry or codec cannot be walked, or None."""
        if not self.leaf_mask or self.leaf_flag & ~self.leaf_mask:
            return "leaf_mask must be non-zero and hold leaf_flag's bits"
        if not isinstance(self.levels, int) or self.levels < 1:
            return f"levels = {self.levels!r}; a format has at least one level"
        if any(not isinstance(lv, int) or not 1 <= lv <= self.levels for lv in self.leaf_levels) \
                or 1 not in self.leaf_levels:
            return (f"leaf_levels = {self.leaf_levels!r}; allowed are levels 1 to {self.levels}, "
                    "and level 1 is always a leaf level")
        if self.entry_bytes not in ENTRY_BYTES:
            return f"entry_bytes = {self.entry_bytes!r}; allowed are 4 and 8"
        if len(self.index_bits) != self.levels or any(not isinstance(b, int) or b < 1 for b in self.index_bits):
            return (f"index_bits = {self.index_bits!r}; give one positive width per level, "
                    f"{self.levels} in all, from level 1 up to the root")
        for level, bits in enumerate(self.index_bits[:-1], start=1):
            if self.entry_bytes << bits != PAGE_SIZE:
                return (f"a level-{level} table holds {1 << bits} entries of {self.entry_bytes} bytes; every "
                        f"table below the root must fill one 4K page ({PAGE_SIZE // self.entry_bytes} entries)")
        if self.entry_bytes << self.index_bits[-1] > MAX_ROOT_TABLE:
            return (f"the root table holds {1 << self.index_bits[-1]} entries of {self.entry_bytes} bytes; a root "
                    f"is at most {MAX_ROOT_TABLE // PAGE_SIZE} concatenated 4K tables")
        if PAGE_SHIFT + sum(self.index_bits) > 64:
            return f"it translates {PAGE_SHIFT + sum(self.index_bits)}-bit addresses; at most 64 are allowed"
        if (self.accessed_flag | self.dirty_flag) & (self.present_mask | self.leaf_mask | self.frame_mask):
            return ("accessed_flag and dirty_flag must not share bits with present_mask, leaf_mask or frame_mask: "
                    "a walk sets them, which must not change whether an entry is present, a leaf, or where it leads")
        wide = [name for name in ("present_mask", "frame_mask", "leaf_flag", "leaf_mask", "write_flag",
                                  "accessed_flag", "dirty_flag", "table_bits", "leaf_bits", "page_flag")
                if getattr(self, name) >> (8 * self.entry_bytes)]
        if wide:
            return (f"its entries are {self.entry_bytes} bytes wide, so every flag and mask must lie in bits "
                    f"0-{8 * self.entry_bytes - 1}, and {', '.join(wide)} do not (give frame_mask for 4-byte entries)")
        return None

    @property
    def va_bits(self) -> int:
        """Width of the addresses a walk translates: 12 + the index bits of every level
        (48 for 4 levels of 9 bits, 57 for 5, 32 for x86's 2 levels of 10)."""
        return PAGE_SHIFT + sum(self.index_bits)

    @property
    def pa_bits(self) -> int:
        """Width of the physical addresses an entry can hold (its frame mask's top bit + 1)."""
        return self.frame_mask.bit_length()

    @property
    def leaf_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self.page_size(level) for level in self.leaf_levels))

    def shift(self, level: int) -> int:
        """The lowest address bit of ``level``'s index (12 for level 1)."""
        return _shifts(self.index_bits)[level - 1]

    def page_size(self, level: int) -> int:
        """Bytes a leaf of ``level`` maps."""
        return 1 << _shifts(self.index_bits)[level - 1]

    def table_bytes(self, level: int) -> int:
        """Bytes of a table of ``level`` (4K below the root)."""
        return self.entry_bytes << self.index_bits[level - 1]

    def table_alloc(self, level: int) -> int:
        """Bytes to allocate for a table of ``level``: whole 4K pages, at least one."""
        return max(PAGE_SIZE, self.table_bytes(level))

    def level_of_size(self, size: int) -> int:
        for level in self.leaf_levels:
            if self.page_size(level) == size:
                return level
        raise ValueError(f"format {self.name} has no {size}-byte leaf")

    def index(self, va: int, level: int) -> int:
        return (va >> _shifts(self.index_bits)[level - 1]) & ((1 << self.index_bits[level - 1]) - 1)

    def entry_address(self, table: int, va: int, level: int) -> int:
        return table + self.index(va, level) * self.entry_bytes

    def prefix(self, va: int, level: int) -> int:
        """The address bits that select ``va``'s entry of ``level`` and the tables above it
        (what a paging-structure cache of that level is keyed by)."""
        return va >> _shifts(self.index_bits)[level - 1]

    # -- entries in memory ---------------------------------------------------------
    def load(self, mem: "Memory", addr: int) -> int:
        """The entry at ``addr`` (a 4-byte entry is half of a stored 8-byte word, little-endian)."""
        if self.entry_bytes == WORD_BYTES:
            return mem.read(addr)
        return (mem.read(addr & ~7) >> ((addr & 4) * 8)) & 0xFFFFFFFF

    def store(self, mem: "Memory", addr: int, entry: int) -> None:
        """Write the entry ``entry`` at ``addr`` (a 4-byte entry keeps the other half of its word)."""
        if self.entry_bytes == WORD_BYTES:
            mem.write(addr, entry)
            return
        word, at = addr & ~7, (addr & 4) * 8
        mem.write(word, (mem.read(word) & ~(0xFFFFFFFF << at)) | ((entry & 0xFFFFFFFF) << at))

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
        """A non-leaf entry pointing at ``table``: its frame, ``table_bits`` and always
        ``write_flag`` (a walk then takes a page's writability from its leaf)."""
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
        entry = fmt.load(mem, at)
        refs += 1
        if not fmt.is_present(entry):
            return WalkStep(level, addr, entry, False, refs, writes)
        leaf = fmt.is_leaf(entry, level)
        if accessed:
            set_dirty = leaf and dirty and fmt.is_writable(entry)  # no D on a faulting write
            updated = entry | fmt.accessed_flag | (fmt.dirty_flag if set_dirty else 0)
            if updated != entry:
                fmt.store(mem, at, updated)
                writes += 1
                entry = updated
        if leaf:
            return WalkStep(level, addr, entry, True, refs, writes)
        table = fmt.frame(entry, level)
    raise AssertionError("unreachable: level 1 entries are leaves")


def map_page(fmt: PageTableFormat, root: int, va: int, page: int, size: int, mem: Memory,
             new_table: Callable[[int], int], writable: bool = True) -> list[int]:
    """Map the ``size`` page at ``va`` to ``page``, creating missing tables
    (``new_table(bytes)`` allocates one).

    Returns the addresses of the entries written, in write order (the page-table writes
    a shadowing hypervisor would trap).
    """
    leaf_level = fmt.level_of_size(size)
    written: list[int] = []
    table = root
    for level in range(fmt.levels, leaf_level, -1):
        addr = fmt.entry_address(table, va, level)
        entry = fmt.load(mem, addr)
        if fmt.is_present(entry):
            if fmt.is_leaf(entry, level):
                raise ValueError(f"{va:#x} is already mapped by a larger page")
            table = fmt.frame(entry, level)
            continue
        table = new_table(fmt.table_alloc(level - 1))
        fmt.store(mem, addr, fmt.table_entry(table))
        written.append(addr)
    addr = fmt.entry_address(table, va, leaf_level)
    fmt.store(mem, addr, fmt.leaf_entry(page, leaf_level, writable))
    written.append(addr)
    return written


def split_leaf(fmt: PageTableFormat, mem: Memory, step: WalkStep, new_table: int) -> None:
    """Replace the large leaf ``step`` (level > 1) by a full table of leaves one level
    down that map the same memory with the same permissions (a large-page split)."""
    level = step.level
    page = fmt.frame(step.entry, level)
    writable = fmt.is_writable(step.entry)
    small = fmt.page_size(level - 1)
    for i in range(1 << fmt.index_bits[level - 2]):
        fmt.store(mem, new_table + i * fmt.entry_bytes, fmt.leaf_entry(page + i * small, level - 1, writable))
    fmt.store(mem, step.entry_address, fmt.table_entry(new_table))
